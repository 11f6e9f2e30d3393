//! Procedural macros of [`celeriac-sdk`](https://docs.rs/celeriac-sdk):
//! `#[task]` and `export_tasks!`. Use them through `celeriac_sdk`, which
//! re-exports both; the expansions refer to `::celeriac_sdk`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, LitStr, Pat, Path, PathArguments, ReturnType, Token, Type};

/// Marks a function as a Celery task.
///
/// ```ignore
/// #[celeriac_sdk::task]
/// fn add(x: i64, y: i64) -> i64 { x + y }
///
/// #[celeriac_sdk::task(name = "multiply")]   // served as `<component>.multiply`
/// fn mul(x: i64, y: i64) -> i64 { x * y }
/// ```
///
/// The function stays an ordinary Rust function (marked `#[inline(never)]`
/// unless it has an `#[inline]` attribute, so that wasm tracebacks show its
/// frame). Next to it the macro adds two
/// hidden items with the function's visibility, which `export_tasks!` uses:
/// `__celeriac_task_<fn>` (the wrapper: binds the JSON `args`/`kwargs`, calls
/// the function, encodes its result) and `__celeriac_task_def_<fn>` (the task
/// name and the wrapper).
///
/// Parameters must be plain `name: Type` with `Type: Deserialize`; the
/// function must not be `async`, generic, or a method.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut name: Option<LitStr> = None;
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            options.parse(&meta)
        }
    });
    syn::parse_macro_input!(attr with parser);
    let func = syn::parse_macro_input!(item as ItemFn);
    match expand_task(name, options, func) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The task options `#[task(...)]` accepts (Celery's `@app.task(...)`), as
/// the tokens of `Option<..>` expressions for `TaskOptions`.
#[derive(Default)]
struct Options {
    fields: Vec<(syn::Ident, TokenStream2)>,
}

impl Options {
    fn parse(&mut self, meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
        let Some(ident) = meta.path.get_ident().cloned() else {
            return Err(meta.error("unsupported #[task] option"));
        };
        let key = ident.to_string();
        let value = meta.value()?;
        let tokens = match key.as_str() {
            "rate_limit" | "queue" => {
                let s: LitStr = value.parse()?;
                quote!(::core::option::Option::Some(#s))
            }
            "time_limit" | "soft_time_limit" | "default_retry_delay" => {
                let n = number(value.parse()?)?;
                quote!(::core::option::Option::Some(#n))
            }
            "max_retries" | "retry_backoff_max" => {
                let n: syn::LitInt = value.parse()?;
                let n = n.base10_parse::<u32>()?;
                quote!(::core::option::Option::Some(#n))
            }
            "retry_backoff" => match value.parse::<syn::Lit>()? {
                syn::Lit::Bool(b) if b.value => quote!(::core::option::Option::Some(1u32)),
                syn::Lit::Bool(_) => quote!(::core::option::Option::None),
                syn::Lit::Int(n) => {
                    let n = n.base10_parse::<u32>()?;
                    quote!(::core::option::Option::Some(#n))
                }
                other => return Err(syn::Error::new(other.span(), "retry_backoff is `true` or a factor in seconds")),
            },
            "retry_jitter" | "acks_late" | "ignore_result" => {
                let b: syn::LitBool = value.parse()?;
                quote!(::core::option::Option::Some(#b))
            }
            "autoretry_for" => {
                let list: syn::ExprArray = value.parse()?;
                let mut names = Vec::new();
                for e in &list.elems {
                    match e {
                        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => names.push(s.clone()),
                        other => {
                            return Err(syn::Error::new(
                                other.span(),
                                "autoretry_for lists exception class names as strings, e.g. [\"ValueError\"]",
                            ));
                        }
                    }
                }
                quote!(&[#(#names),*])
            }
            _ => {
                return Err(syn::Error::new(
                    ident.span(),
                    "unsupported #[task] option; expected one of name, rate_limit, time_limit, soft_time_limit, \
                     max_retries, default_retry_delay, autoretry_for, retry_backoff, retry_backoff_max, \
                     retry_jitter, acks_late, ignore_result, queue",
                ));
            }
        };
        if self.fields.iter().any(|(i, _)| *i == ident) {
            return Err(syn::Error::new(ident.span(), format!("#[task] option `{key}` given twice")));
        }
        self.fields.push((ident, tokens));
        Ok(())
    }

    fn to_tokens(&self) -> TokenStream2 {
        let fields = self.fields.iter().map(|(i, t)| quote!(#i: #t));
        // `..NONE` does nothing when every option is given: allowed, in the user's crate.
        quote! {
            {
                #[allow(clippy::needless_update)]
                let options = ::celeriac_sdk::__private::TaskOptions {
                    #(#fields,)*
                    ..::celeriac_sdk::__private::TaskOptions::NONE
                };
                options
            }
        }
    }
}

/// A number of seconds written as an integer or float literal, as an `f64`.
fn number(lit: syn::Lit) -> syn::Result<f64> {
    match &lit {
        syn::Lit::Int(n) => Ok(n.base10_parse::<u64>()? as f64),
        syn::Lit::Float(f) => f.base10_parse::<f64>(),
        other => Err(syn::Error::new(other.span(), "expected a number of seconds")),
    }
}

fn expand_task(name: Option<LitStr>, options: Options, mut func: ItemFn) -> syn::Result<TokenStream2> {
    // Keep the task's own frame in wasm tracebacks (unless the author chose).
    if !func.attrs.iter().any(|a| a.path().is_ident("inline")) {
        func.attrs.push(syn::parse_quote!(#[inline(never)]));
    }
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(a.span(), "#[task] functions cannot be async"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(sig.generics.span(), "#[task] functions cannot be generic"));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new(v.span(), "#[task] functions cannot be variadic"));
    }
    let fn_ident = &sig.ident;
    let fn_name = fn_ident.to_string();
    let fn_name = fn_name.strip_prefix("r#").unwrap_or(&fn_name);
    let task_name = name.map(|n| n.value()).unwrap_or_else(|| fn_name.to_string());
    if task_name.is_empty() {
        return Err(syn::Error::new(Span::call_site(), "#[task] name must not be empty"));
    }

    let mut params = Vec::new();
    let mut bindings = Vec::new();
    let mut call_args = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(typed) = input else {
            return Err(syn::Error::new(input.span(), "#[task] functions cannot take `self`"));
        };
        let Pat::Ident(pat) = &*typed.pat else {
            return Err(syn::Error::new(
                typed.pat.span(),
                "#[task] parameters must be plain names (`x: i64`): the name is the keyword argument",
            ));
        };
        if pat.by_ref.is_some() || pat.subpat.is_some() {
            return Err(syn::Error::new(pat.span(), "#[task] parameters must be plain names"));
        }
        let pname = pat.ident.to_string();
        let pname = pname.strip_prefix("r#").unwrap_or(&pname).to_string();
        let ty = &*typed.ty;
        let (optional, shown) = match option_inner(ty) {
            Some(inner) => (true, format!("{} or None", python_type(inner))),
            None => (false, python_type(ty)),
        };
        params.push(quote! {
            ::celeriac_sdk::__private::Param { name: #pname, ty: #shown, optional: #optional }
        });
        let var = format_ident!("__celeriac_arg{}", index);
        let span = ty.span();
        bindings.push(quote_spanned! {span=>
            let #var: #ty = __celeriac_bound.get(#index)?;
        });
        call_args.push(var);
    }

    let options_tokens = options.to_tokens();
    let wrapper = format_ident!("__celeriac_task_{}", fn_name);
    let def = format_ident!("__celeriac_task_def_{}", fn_name);
    let vis = &func.vis;
    let returns_result = match &sig.output {
        ReturnType::Type(_, ty) => is_result(ty),
        ReturnType::Default => false,
    };
    let finish = if returns_result {
        quote! {
            match __celeriac_ret {
                ::core::result::Result::Ok(__celeriac_value) => {
                    ::celeriac_sdk::__private::encode(#task_name, &__celeriac_value)
                        .map_err(::core::convert::Into::into)
                }
                ::core::result::Result::Err(__celeriac_err) => ::core::result::Result::Err(
                    ::core::convert::Into::<::celeriac_sdk::Raise>::into(__celeriac_err),
                ),
            }
        }
    } else {
        quote! { ::celeriac_sdk::__private::encode(#task_name, &__celeriac_ret).map_err(::core::convert::Into::into) }
    };

    Ok(quote! {
        #func

        #[doc(hidden)]
        #[inline(never)]
        #vis fn #wrapper(
            __celeriac_args: &[::celeriac_sdk::__private::serde_json::Value],
            __celeriac_kwargs: &::celeriac_sdk::__private::serde_json::Map<
                ::std::string::String,
                ::celeriac_sdk::__private::serde_json::Value,
            >,
        ) -> ::core::result::Result<::std::string::String, ::celeriac_sdk::Raise> {
            const __CELERIAC_PARAMS: &[::celeriac_sdk::__private::Param] = &[#(#params),*];
            let __celeriac_bound = ::celeriac_sdk::__private::Bound::bind(
                #task_name,
                __CELERIAC_PARAMS,
                __celeriac_args,
                __celeriac_kwargs,
            )?;
            #(#bindings)*
            let __celeriac_ret = #fn_ident(#(#call_args),*);
            #finish
        }

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #vis const #def: ::celeriac_sdk::__private::TaskDef = ::celeriac_sdk::__private::TaskDef {
            name: #task_name,
            options: #options_tokens,
            call: #wrapper,
        };
    })
}

/// `Option<T>` (any path ending in `Option` with one type argument) -> `T`.
fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(tp) = ty else { return None };
    let last = tp.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    match args.args.iter().collect::<Vec<_>>().as_slice() {
        [GenericArgument::Type(inner)] => Some(inner),
        _ => None,
    }
}

/// The Python type a client must send for a Rust parameter type, as a
/// `TypeError` names it: `i64` → `int`, `Vec<f64>` → `list[float]`,
/// `HashMap<String, i64>` → `dict[str, int]`, `&str` → `str`. A type of the
/// task's own (a serde struct) keeps its name, as Python names a class.
fn python_type(ty: &Type) -> String {
    match ty {
        Type::Reference(r) => python_type(&r.elem),
        Type::Paren(p) => python_type(&p.elem),
        Type::Group(g) => python_type(&g.elem),
        Type::Slice(s) => format!("list[{}]", python_type(&s.elem)),
        Type::Array(a) => format!("list[{}]", python_type(&a.elem)),
        Type::Tuple(t) if t.elems.is_empty() => "None".to_string(),
        Type::Tuple(t) => {
            let items: Vec<String> = t.elems.iter().map(python_type).collect();
            format!("tuple[{}]", items.join(", "))
        }
        Type::Path(tp) => {
            let Some(last) = tp.path.segments.last() else { return type_to_string(ty) };
            let args: Vec<&Type> = match &last.arguments {
                PathArguments::AngleBracketed(a) => a
                    .args
                    .iter()
                    .filter_map(|g| match g {
                        GenericArgument::Type(t) => Some(t),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let name = last.ident.to_string();
            match (name.as_str(), args.as_slice()) {
                (
                    "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize",
                    [],
                ) => "int".to_string(),
                (n, _) if n.starts_with("NonZero") => "int".to_string(),
                ("f32" | "f64", []) => "float".to_string(),
                ("bool", []) => "bool".to_string(),
                ("String" | "str" | "char" | "PathBuf" | "Path" | "OsString" | "Cow", _) => "str".to_string(),
                ("Number", []) => "int or float".to_string(),
                ("Value", []) => "object".to_string(),
                ("Option", [inner]) => format!("{} or None", python_type(inner)),
                ("Box" | "Rc" | "Arc", [inner]) => python_type(inner),
                ("Vec" | "VecDeque" | "LinkedList" | "HashSet" | "BTreeSet" | "BinaryHeap" | "IndexSet", [inner]) => {
                    format!("list[{}]", python_type(inner))
                }
                ("HashMap" | "BTreeMap" | "IndexMap", [k, v]) => {
                    format!("dict[{}, {}]", python_type(k), python_type(v))
                }
                ("Map", _) => "dict".to_string(),
                _ => type_to_string(ty),
            }
        }
        _ => type_to_string(ty),
    }
}

/// A return type written `Result<..>` / `std::io::Result<..>` etc.
fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(tp) => tp.path.segments.last().is_some_and(|s| s.ident == "Result"),
        Type::Paren(p) => is_result(&p.elem),
        Type::Group(g) => is_result(&g.elem),
        _ => false,
    }
}

/// Renders a type the way one writes it: `Vec<f64>`, `HashMap<String, i64>`,
/// `&'a str` (token streams print as `Vec < f64 >`).
fn type_to_string(ty: &Type) -> String {
    let mut out = String::new();
    write_tokens(quote!(#ty), &mut out);
    out
}

fn write_tokens(tokens: TokenStream2, out: &mut String) {
    let mut prev_word = false;
    for tt in tokens {
        match tt {
            TokenTree::Ident(i) => {
                if prev_word {
                    out.push(' ');
                }
                out.push_str(&i.to_string());
                prev_word = true;
            }
            TokenTree::Literal(l) => {
                if prev_word {
                    out.push(' ');
                }
                out.push_str(&l.to_string());
                prev_word = true;
            }
            TokenTree::Punct(p) => {
                let c = p.as_char();
                if c == '=' {
                    out.push_str(" = ");
                } else {
                    out.push(c);
                }
                if c == ',' {
                    out.push(' ');
                }
                prev_word = false;
            }
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                    proc_macro2::Delimiter::Bracket => ("[", "]"),
                    proc_macro2::Delimiter::Brace => ("{", "}"),
                    proc_macro2::Delimiter::None => ("", ""),
                };
                out.push_str(open);
                write_tokens(g.stream(), out);
                out.push_str(close);
                prev_word = false;
            }
        }
    }
    // `[u8; 4]` prints as `[u8;4]`: fine, and rare in task signatures.
}

struct TaskList(Punctuated<Path, Token![,]>);

impl Parse for TaskList {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Ok(TaskList(Punctuated::parse_terminated(input)?))
    }
}

/// Exports the listed `#[task]` functions as this crate's task component.
///
/// ```ignore
/// celeriac_sdk::export_tasks!(add, div, reports::monthly);
/// ```
///
/// Use it exactly once per component crate, at module level. It implements the
/// WIT `task` interface: `tasks()` returns the listed tasks' names (in this
/// order) and `invoke` dispatches to them by name. Two tasks with the same
/// name are a compile-time error.
#[proc_macro]
pub fn export_tasks(input: TokenStream) -> TokenStream {
    let TaskList(paths) = syn::parse_macro_input!(input as TaskList);
    let defs: Vec<Path> = paths
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if let Some(last) = p.segments.last_mut() {
                let name = last.ident.to_string();
                let name = name.strip_prefix("r#").unwrap_or(&name).to_string();
                last.ident = syn::Ident::new(&format!("__celeriac_task_def_{name}"), last.ident.span());
            }
            p
        })
        .collect();
    quote! {
        #[doc(hidden)]
        const __CELERIAC_TASKS: &[::celeriac_sdk::__private::TaskDef] = &[#(#defs),*];
        const _: () = ::celeriac_sdk::__private::assert_unique_names(__CELERIAC_TASKS);

        #[doc(hidden)]
        struct __CeleriacComponent;

        impl ::celeriac_sdk::__private::Guest for __CeleriacComponent {
            fn tasks() -> ::std::vec::Vec<::celeriac_sdk::__private::TaskInfo> {
                ::celeriac_sdk::__private::task_infos(__CELERIAC_TASKS)
            }

            fn invoke(
                name: ::std::string::String,
                args: ::std::string::String,
                kwargs: ::std::string::String,
            ) -> ::core::result::Result<::std::string::String, ::celeriac_sdk::__private::Raised> {
                ::celeriac_sdk::__private::invoke_wit(__CELERIAC_TASKS, &name, &args, &kwargs)
            }
        }

        ::celeriac_sdk::__private::bindings::__export_task_component!(
            __CeleriacComponent with_types_in ::celeriac_sdk::__private::bindings
        );
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::python_type;

    fn py(ty: &str) -> String {
        python_type(&syn::parse_str(ty).unwrap())
    }

    #[test]
    fn rust_parameter_types_are_shown_as_the_python_types_a_client_sends() {
        assert_eq!(py("i64"), "int");
        assert_eq!(py("u8"), "int");
        assert_eq!(py("f64"), "float");
        assert_eq!(py("&str"), "str");
        assert_eq!(py("&'a str"), "str");
        assert_eq!(py("String"), "str");
        assert_eq!(py("bool"), "bool");
        assert_eq!(py("Vec<f64>"), "list[float]");
        assert_eq!(py("Vec<Line>"), "list[Line]");
        assert_eq!(py("std::collections::HashMap<String, Vec<i64>>"), "dict[str, list[int]]");
        assert_eq!(py("Option<i32>"), "int or None");
        assert_eq!(py("serde_json::Value"), "object");
        assert_eq!(py("(i64, String)"), "tuple[int, str]");
        assert_eq!(py("()"), "None");
        assert_eq!(py("Line"), "Line");
    }
}
