//! Binding Celery's `args` / `kwargs` to a task's parameters, with Python's
//! rules and Python's `TypeError` messages.
//!
//! This is what the `#[task]` wrapper calls; it is public only for the macro
//! and is not part of the stable API.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::TaskError;

/// One parameter of a task function, as the `#[task]` macro describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// The parameter name, which is also its keyword-argument name.
    pub name: &'static str,
    /// The expected type as shown in a `TypeError`, e.g. `i64`, `Vec<f64>`,
    /// `i64 or None`.
    pub ty: &'static str,
    /// `true` for an `Option<T>` parameter: it may be left out (`None`).
    pub optional: bool,
}

/// The JSON values bound to each parameter of one call.
#[derive(Debug)]
pub struct Bound<'a> {
    task: &'static str,
    params: &'static [Param],
    values: Vec<Option<&'a Value>>,
}

static NULL: Value = Value::Null;

impl<'a> Bound<'a> {
    /// Binds positional `args` then keyword `kwargs` to `params`, the way
    /// Python binds a call to `def task(p0, p1, ...)` (with `None` defaults for
    /// optional parameters). Errors are `TypeError`s worded like CPython's.
    pub fn bind(
        task: &'static str,
        params: &'static [Param],
        args: &'a [Value],
        kwargs: &'a Map<String, Value>,
    ) -> Result<Self, TaskError> {
        let mut values: Vec<Option<&'a Value>> = vec![None; params.len()];
        for (slot, value) in values.iter_mut().zip(args) {
            *slot = Some(value);
        }
        // Same order of checks as CPython: keywords, too many positionals,
        // then missing arguments.
        for (key, value) in kwargs {
            match params.iter().position(|p| p.name == key) {
                None => {
                    return Err(TaskError::type_error(format!("{task}() got an unexpected keyword argument '{key}'")));
                }
                Some(i) if values[i].is_some() => {
                    return Err(TaskError::type_error(format!("{task}() got multiple values for argument '{key}'")));
                }
                Some(i) => values[i] = Some(value),
            }
        }
        if args.len() > params.len() {
            return Err(TaskError::type_error(too_many_positional(task, params, args.len())));
        }
        let missing: Vec<&str> =
            params.iter().zip(&values).filter(|(p, v)| v.is_none() && !p.optional).map(|(p, _)| p.name).collect();
        if !missing.is_empty() {
            return Err(TaskError::type_error(format!(
                "{task}() missing {} required positional argument{}: {}",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                quoted_list(&missing),
            )));
        }
        Ok(Bound { task, params, values })
    }

    /// Deserialises the value bound to parameter `index`; a left-out optional
    /// parameter deserialises from `null`. A value of the wrong shape gives
    /// CPython's `TypeError: task() argument 'name' must be int, not str`
    /// (Python type names, and serde's detail for containers, in Python's
    /// terms); an integer out of the parameter's range gives `OverflowError`,
    /// as CPython does converting a Python int to a C integer.
    pub fn get<T: Deserialize<'a>>(&self, index: usize) -> Result<T, TaskError> {
        let value: &'a Value = self.values[index].unwrap_or(&NULL);
        T::deserialize(value).map_err(|e| {
            let param = &self.params[index];
            let detail = e.to_string();
            if let Some(overflow) = integer_overflow(&detail) {
                return TaskError::new(
                    "OverflowError",
                    format!("{}() argument '{}': {overflow}", self.task, param.name),
                );
            }
            let mut msg =
                format!("{}() argument '{}' must be {}, not {}", self.task, param.name, param.ty, python_type(value));
            let redundant = matches!(value, Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_))
                && (detail.starts_with("invalid type") || detail.starts_with("invalid value"));
            if !redundant {
                msg.push_str(": ");
                msg.push_str(&pythonize_detail(&detail));
            }
            TaskError::type_error(msg)
        })
    }
}

/// CPython's message for a Python int that does not fit the C integer it is
/// converted to, if serde's `detail` says that is what happened (`invalid
/// value: integer `-1`, expected u64`).
fn integer_overflow(detail: &str) -> Option<&'static str> {
    let rest = detail.strip_prefix("invalid value: integer `")?;
    let (number, expected) = rest.split_once("`, expected ")?;
    let unsigned = expected.starts_with('u') || expected.starts_with("NonZeroU");
    Some(if number.starts_with('-') && unsigned {
        "can't convert negative int to unsigned"
    } else if number.starts_with('-') {
        "Python int too small to convert to C long"
    } else {
        "Python int too large to convert to C long"
    })
}

/// Python's name for the type of a JSON value: `int`, `float`, `str`,
/// `bool`, `list`, `dict`, `NoneType`.
pub fn python_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// serde's "invalid type: string \"a\", expected f64" in Python's terms:
/// "invalid type: str 'a', expected float". Other details are kept, with
/// serde's backquotes turned into Python's quotes.
fn pythonize_detail(detail: &str) -> String {
    let Some(rest) = detail.strip_prefix("invalid type: ") else { return detail.replace('`', "'") };
    let Some((unexpected, expected)) = rest.rsplit_once(", expected ") else { return detail.replace('`', "'") };
    let unexpected = if let Some(s) = unexpected.strip_prefix("string ") {
        format!("str {}", python_str_repr(s))
    } else if let Some(n) = unexpected.strip_prefix("integer ") {
        format!("int {}", n.trim_matches('`'))
    } else if let Some(n) = unexpected.strip_prefix("floating point ") {
        format!("float {}", n.trim_matches('`'))
    } else if let Some(b) = unexpected.strip_prefix("boolean ") {
        format!("bool {}", if b.contains("true") { "True" } else { "False" })
    } else {
        match unexpected {
            "null" | "unit value" => "None".to_string(),
            "sequence" => "list".to_string(),
            "map" => "dict".to_string(),
            other => other.replace('`', "'"),
        }
    };
    format!("invalid type: {unexpected}, expected {}", python_expected(expected))
}

/// serde's description of an expected type, as a Python type name.
fn python_expected(expected: &str) -> String {
    const INTS: &[&str] =
        &["i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize", "an integer"];
    if INTS.contains(&expected) {
        return "int".into();
    }
    match expected {
        "f32" | "f64" | "a float" => "float".into(),
        "a string" | "a borrowed string" | "a character" | "path string" => "str".into(),
        "a boolean" => "bool".into(),
        "a sequence" => "list".into(),
        "a map" => "dict".into(),
        "unit" => "None".into(),
        "any valid JSON value" | "a JSON number" => "int or float".into(),
        other => match other.strip_prefix("struct ") {
            Some(name) => format!("{name} (a dict)"),
            None => other.replace('`', "'"),
        },
    }
}

/// A string as Python's `repr` shows it, from serde's JSON-quoted form.
fn python_str_repr(quoted: &str) -> String {
    let inner = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).unwrap_or(quoted);
    format!("'{}'", inner.replace('\'', "\\'"))
}

/// CPython: `f() takes 2 positional arguments but 3 were given`, or
/// `takes from 1 to 2 positional arguments` when some have defaults.
fn too_many_positional(task: &str, params: &[Param], given: usize) -> String {
    let total = params.len();
    let required = params.iter().filter(|p| !p.optional).count();
    let takes = if required == total {
        format!("{total} positional argument{}", if total == 1 { "" } else { "s" })
    } else {
        format!("from {required} to {total} positional arguments")
    };
    let were = if given == 1 { "was" } else { "were" };
    format!("{task}() takes {takes} but {given} {were} given")
}

/// CPython: `'x'`, `'x' and 'y'`, `'x', 'y', and 'z'`.
fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
    }
}

/// The Python type of a JSON value and a short JSON rendering of it:
/// `str "a"`, `int 5`, `float 1.5`, `bool true`, `list [1,2]`, `dict {..}`,
/// `None`.
pub fn describe(value: &Value) -> String {
    const MAX: usize = 40;
    if value.is_null() {
        return "None".to_string();
    }
    let kind = python_type(value);
    let mut text = value.to_string();
    if text.chars().count() > MAX {
        text = text.chars().take(MAX).collect::<String>() + "...";
    }
    format!("{kind} {text}")
}

/// Parses Celery's `args` JSON text: an array; `null` or empty means `[]`.
pub fn parse_args(task: &str, args: &str) -> Result<Vec<Value>, TaskError> {
    match parse_json(args)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => Ok(items),
        other => Err(TaskError::type_error(format!(
            "{task}() positional arguments must be a JSON array, not {}",
            describe(&other)
        ))),
    }
}

/// Parses Celery's `kwargs` JSON text: an object; `null` or empty means `{}`.
pub fn parse_kwargs(task: &str, kwargs: &str) -> Result<Map<String, Value>, TaskError> {
    match parse_json(kwargs)? {
        Value::Null => Ok(Map::new()),
        Value::Object(map) => Ok(map),
        other => Err(TaskError::type_error(format!(
            "{task}() keyword arguments must be a JSON object, not {}",
            describe(&other)
        ))),
    }
}

fn parse_json(text: &str) -> Result<Value, TaskError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    if let Some(big) = oversized_integer(text) {
        // serde_json would read it as a float and lose digits; the SDK's integers are 64-bit.
        return Err(TaskError::new(
            "OverflowError",
            format!("Python int too large to convert to C long: {} (tasks take 64-bit integers)", shorten(big)),
        ));
    }
    serde_json::from_str(text).map_err(|e| TaskError::value_error(format!("invalid JSON arguments: {e}")))
}

/// The first integer literal in the JSON `text` (outside strings) that fits
/// neither `i64` nor `u64`, if any. Python ints are unbounded; JSON carries
/// them as written, and serde_json would silently turn such a one into an
/// approximate float.
fn oversized_integer(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                let token = &text[start..i];
                let integral = !token.contains(['.', 'e', 'E']);
                if integral && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                    return Some(token);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// At most 40 characters of `text`, with `...` when cut.
fn shorten(text: &str) -> String {
    if text.len() > 40 { format!("{}...", &text[..40]) } else { text.to_string() }
}

/// Serialises a task's return value to JSON text. A value that JSON cannot
/// represent raises kombu's `EncodeError`, as Celery does.
pub fn encode<T: Serialize + ?Sized>(task: &str, value: &T) -> Result<String, TaskError> {
    serde_json::to_string(value).map_err(|e| {
        TaskError::new("EncodeError", format!("{task}() returned a value that is not JSON-serialisable: {e}"))
            .with_module("kombu.exceptions")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ADD: &[Param] =
        &[Param { name: "x", ty: "int", optional: false }, Param { name: "y", ty: "int", optional: false }];
    const OPT: &[Param] =
        &[Param { name: "a", ty: "str", optional: false }, Param { name: "b", ty: "int or None", optional: true }];
    const NONE: &[Param] = &[];
    const XS: &[Param] = &[Param { name: "numbers", ty: "list[float]", optional: false }];
    const UNSIGNED: &[Param] = &[Param { name: "n", ty: "int", optional: false }];
    const THREE: &[Param] = &[
        Param { name: "x", ty: "int", optional: false },
        Param { name: "y", ty: "int", optional: false },
        Param { name: "z", ty: "int", optional: false },
    ];

    fn call<'a>(params: &'static [Param], args: &'a Value, kwargs: &'a Value) -> Result<Bound<'a>, TaskError> {
        Bound::bind("add", params, args.as_array().unwrap(), kwargs.as_object().unwrap())
    }

    fn err(params: &'static [Param], args: Value, kwargs: Value) -> String {
        let e = call(params, &args, &kwargs).unwrap_err();
        assert_eq!(e.exc_type, "TypeError");
        assert_eq!(e.exc_module, None);
        e.message
    }

    fn get_err<T: for<'de> Deserialize<'de> + std::fmt::Debug>(
        params: &'static [Param],
        args: Value,
        index: usize,
    ) -> String {
        let kwargs = json!({});
        let bound = call(params, &args, &kwargs).unwrap();
        let e = bound.get::<T>(index).unwrap_err();
        assert_eq!(e.exc_type, "TypeError");
        e.message
    }

    #[test]
    fn positional() {
        let (a, k) = (json!([1, 2]), json!({}));
        let b = call(ADD, &a, &k).unwrap();
        assert_eq!((b.get::<i64>(0).unwrap(), b.get::<i64>(1).unwrap()), (1, 2));
    }

    #[test]
    fn keywords_and_mixed() {
        let (a, k) = (json!([]), json!({"y": 2, "x": 1}));
        let b = call(ADD, &a, &k).unwrap();
        assert_eq!((b.get::<i64>(0).unwrap(), b.get::<i64>(1).unwrap()), (1, 2));
        let (a, k) = (json!([1]), json!({"y": 5}));
        let b = call(ADD, &a, &k).unwrap();
        assert_eq!((b.get::<i64>(0).unwrap(), b.get::<i64>(1).unwrap()), (1, 5));
    }

    #[test]
    fn too_many() {
        assert_eq!(err(ADD, json!([1, 2, 3]), json!({})), "add() takes 2 positional arguments but 3 were given");
        assert_eq!(err(NONE, json!([1]), json!({})), "add() takes 0 positional arguments but 1 was given");
        assert_eq!(err(&ADD[..1], json!([1, 2]), json!({})), "add() takes 1 positional argument but 2 were given");
        assert_eq!(
            err(OPT, json!(["s", 1, 2]), json!({})),
            "add() takes from 1 to 2 positional arguments but 3 were given"
        );
    }

    #[test]
    fn missing() {
        assert_eq!(err(ADD, json!([1]), json!({})), "add() missing 1 required positional argument: 'y'");
        assert_eq!(err(ADD, json!([]), json!({})), "add() missing 2 required positional arguments: 'x' and 'y'");
        assert_eq!(
            err(THREE, json!([]), json!({})),
            "add() missing 3 required positional arguments: 'x', 'y', and 'z'"
        );
        assert_eq!(err(ADD, json!([]), json!({"y": 1})), "add() missing 1 required positional argument: 'x'");
    }

    #[test]
    fn unexpected_and_multiple() {
        assert_eq!(err(ADD, json!([1, 2]), json!({"z": 3})), "add() got an unexpected keyword argument 'z'");
        assert_eq!(err(ADD, json!([1, 2]), json!({"x": 3})), "add() got multiple values for argument 'x'");
        // CPython checks keywords before the positional count.
        assert_eq!(err(ADD, json!([1, 2, 3]), json!({"z": 3})), "add() got an unexpected keyword argument 'z'");
    }

    #[test]
    fn optional_params() {
        let (a, k) = (json!(["s"]), json!({}));
        let b = call(OPT, &a, &k).unwrap();
        assert_eq!(b.get::<String>(0).unwrap(), "s");
        assert_eq!(b.get::<Option<i64>>(1).unwrap(), None);
        let (a, k) = (json!(["s", null]), json!({}));
        assert_eq!(call(OPT, &a, &k).unwrap().get::<Option<i64>>(1).unwrap(), None);
        let (a, k) = (json!(["s"]), json!({"b": 7}));
        assert_eq!(call(OPT, &a, &k).unwrap().get::<Option<i64>>(1).unwrap(), Some(7));
        assert_eq!(err(OPT, json!([]), json!({"b": 1})), "add() missing 1 required positional argument: 'a'");
    }

    #[test]
    fn a_wrong_type_is_named_with_python_type_names_as_cpython_does() {
        assert_eq!(get_err::<i64>(ADD, json!([1, "a"]), 1), "add() argument 'y' must be int, not str");
        assert_eq!(get_err::<i64>(ADD, json!([1.5, 2]), 0), "add() argument 'x' must be int, not float");
        assert_eq!(get_err::<i64>(ADD, json!([null, 2]), 0), "add() argument 'x' must be int, not NoneType");
        assert_eq!(get_err::<i64>(ADD, json!([true, 2]), 0), "add() argument 'x' must be int, not bool");
        assert_eq!(
            get_err::<Option<i64>>(OPT, json!(["s", "x"]), 1),
            "add() argument 'b' must be int or None, not str"
        );
        // Containers carry serde's detail, in Python's terms.
        assert_eq!(
            get_err::<Vec<f64>>(XS, json!([[1, "a"]]), 0),
            "add() argument 'numbers' must be list[float], not list: invalid type: str 'a', expected float"
        );
        assert_eq!(
            get_err::<Vec<f64>>(XS, json!([{"a": 1}]), 0),
            "add() argument 'numbers' must be list[float], not dict: invalid type: dict, expected list"
        );
        for rust in ["i64", "f64", "Vec", "String"] {
            let msg = get_err::<Vec<String>>(XS, json!([[1]]), 0);
            assert!(!msg.contains(rust), "{msg}");
        }
    }

    #[test]
    fn an_integer_out_of_range_is_an_overflow_error_as_in_cpython() {
        let kwargs = json!({});
        let args = json!([9223372036854775808u64, 1]);
        let e = call(ADD, &args, &kwargs).unwrap().get::<i64>(0).unwrap_err();
        assert_eq!(
            (e.exc_type.as_str(), e.message.as_str()),
            ("OverflowError", "add() argument 'x': Python int too large to convert to C long")
        );
        let args = json!([-1]);
        let e = call(UNSIGNED, &args, &kwargs).unwrap().get::<u64>(0).unwrap_err();
        assert_eq!(
            (e.exc_type.as_str(), e.message.as_str()),
            ("OverflowError", "add() argument 'n': can't convert negative int to unsigned")
        );
        let args = json!([300]);
        assert_eq!(call(UNSIGNED, &args, &kwargs).unwrap().get::<u8>(0).unwrap_err().exc_type, "OverflowError");
    }

    #[test]
    fn an_integer_wider_than_64_bits_in_the_arguments_is_an_overflow_error_not_a_rounded_float() {
        let e = parse_args("add", "[1180591620717411303424, 1]").unwrap_err();
        assert_eq!(e.exc_type, "OverflowError");
        assert!(e.message.starts_with("Python int too large to convert to C long: 1180591620717411303424"), "{e}");
        assert_eq!(parse_kwargs("t", r#"{"x": -99999999999999999999}"#).unwrap_err().exc_type, "OverflowError");
        // Limits themselves, floats, and digits inside strings are fine.
        let ok = r#"[9223372036854775807, -9223372036854775808, 18446744073709551615, 1e300, 1.5, "123456789012345678901234"]"#;
        assert_eq!(parse_args("t", ok).unwrap().len(), 6);
        assert!(parse_args("t", r#"["a\"99999999999999999999999"]"#).is_ok());
    }

    #[test]
    fn values_convert() {
        let (a, k) = (json!([[1, 2.5, 3]]), json!({}));
        let b = call(XS, &a, &k).unwrap();
        assert_eq!(b.get::<Vec<f64>>(0).unwrap(), vec![1.0, 2.5, 3.0]);
        // Borrowed strings work: the values outlive the call.
        let (a, k) = (json!(["hello", 1]), json!({}));
        let b = call(ADD, &a, &k).unwrap();
        let s: &str = b.get(0).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_args("t", "[1, 2]").unwrap(), vec![json!(1), json!(2)]);
        assert!(parse_args("t", "").unwrap().is_empty());
        assert!(parse_args("t", "null").unwrap().is_empty());
        assert_eq!(
            parse_args("t", "{}").unwrap_err().message,
            "t() positional arguments must be a JSON array, not dict {}"
        );
        assert_eq!(parse_args("t", "[").unwrap_err().exc_type, "ValueError");
        assert_eq!(parse_kwargs("t", "{\"a\": 1}").unwrap()["a"], json!(1));
        assert!(parse_kwargs("t", " ").unwrap().is_empty());
        assert_eq!(parse_kwargs("t", "[]").unwrap_err().exc_type, "TypeError");
        // kwargs keep the order the client sent.
        let k = parse_kwargs("t", r#"{"z": 1, "a": 2}"#).unwrap();
        assert_eq!(k.keys().collect::<Vec<_>>(), ["z", "a"]);
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("t", &3).unwrap(), "3");
        assert_eq!(encode("t", &()).unwrap(), "null");
        assert_eq!(encode("t", &f64::NAN).unwrap(), "null");
        let mut bad = std::collections::BTreeMap::new();
        bad.insert(vec![1u8], 1);
        let e = encode("t", &bad).unwrap_err();
        assert_eq!((e.exc_type.as_str(), e.exc_module.as_deref()), ("EncodeError", Some("kombu.exceptions")));
    }
}
