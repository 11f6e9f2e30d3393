//! Python-style text renderings of JSON values.
//!
//! Two different Python functions show up on the wire and in logs:
//! - `repr()` (here [`py_repr`]): exception reprs such as
//!   `TypeError('unsupported operand')` in the worker's "raised unexpected"
//!   log line and in events.
//! - Celery's `saferepr()` (here [`saferepr`], [`args_repr`],
//!   [`kwargs_repr`]): the `argsrepr` / `kwargsrepr` task headers. It is NOT
//!   `repr`: strings are always single-quoted with only `'` escaped, output
//!   is cut at 1024 characters and nesting at 3 levels.
//!
//! JSON maps onto Python as: null → `None`, booleans → `True`/`False`,
//! arrays → lists, objects → dicts, numbers → int or float (float `repr`).

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::pyjson::py_float_repr;

/// Celery's `argsrepr_maxsize` / `kwargsrepr_maxsize`.
pub const REPR_MAXSIZE: usize = 1024;
/// Celery's default `task_repr_maxlevels`.
pub const REPR_MAXLEVELS: usize = 3;

/// Python `repr()` of a JSON value.
pub fn py_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(value, &mut out);
    out
}

/// Python `repr()` of a tuple of values: `()`, `(1,)`, `(1, 'a')`.
pub fn py_tuple_repr(items: &[Value]) -> String {
    let mut out = String::from("(");
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(v, &mut out);
    }
    if items.len() == 1 {
        out.push(',');
    }
    out.push(')');
    out
}

/// Python `str()` of a JSON value: strings are bare, everything else is `repr`.
pub fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

fn write_repr(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&number_str(n)),
        Value::String(s) => out.push_str(&py_str_repr(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(v, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&py_str_repr(k));
                out.push_str(": ");
                write_repr(v, out);
            }
            out.push('}');
        }
    }
}

/// Python `str(int)` / `repr(float)` of a JSON number.
fn number_str(n: &serde_json::Number) -> String {
    if n.is_f64() { n.as_f64().map(py_float_repr).unwrap_or_else(|| n.to_string()) } else { n.to_string() }
}

/// Python `repr()` of a `str`.
///
/// Quote choice and escapes follow CPython: single quotes unless the text
/// contains `'` and no `"`; `\\`, `\n`, `\r`, `\t` and the quote are
/// backslashed; other non-printable characters become `\xNN`, `\uNNNN` or
/// `\UNNNNNNNN`. "Non-printable" is approximated (C0/C1 controls, DEL, the
/// Unicode separators, format characters and private-use areas); unassigned
/// code points are shown as-is, where CPython would escape them.
pub fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c => {
                let cp = u32::from(c);
                // Writing into a String cannot fail.
                let _ = if cp <= 0xff {
                    write!(out, "\\x{cp:02x}")
                } else if cp <= 0xffff {
                    write!(out, "\\u{cp:04x}")
                } else {
                    write!(out, "\\U{cp:08x}")
                };
            }
        }
    }
    out.push(quote);
    out
}

/// Approximation of Python's `str.isprintable()` for a single character.
fn is_printable(c: char) -> bool {
    let cp = u32::from(c);
    if cp == 0x20 {
        return true;
    }
    !matches!(cp,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad
        | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e
        | 0x1680 | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f
        | 0x3000 | 0xd800..=0xf8ff | 0xfeff | 0xfff9..=0xfffb
        | 0x110bd | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
        | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff)
}

/// Celery's `saferepr(args)` of a task's positional arguments (a tuple), as
/// written into the `argsrepr` header: `(4, 4)`, `(7,)`, `()`.
pub fn args_repr(args: &[Value]) -> String {
    let mut toks = Vec::new();
    push_seq(&mut toks, args.iter(), "(", if args.len() == 1 { ",)" } else { ")" }, 0, REPR_MAXLEVELS);
    render(&toks, Some(REPR_MAXSIZE))
}

/// Celery's `saferepr(kwargs)`, as written into the `kwargsrepr` header:
/// `{}`, `{'x': 1, 'y': 2}`.
pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    let mut toks = Vec::new();
    push_map(&mut toks, kwargs, 0, REPR_MAXLEVELS);
    render(&toks, Some(REPR_MAXSIZE))
}

/// Celery's `saferepr(value, maxlen, maxlevels)` (celery/utils/saferepr.py).
///
/// `maxlen` bounds the output length (roughly: a piece in progress is cut with
/// `...` and closing brackets are always kept); `maxlevels` replaces
/// containers nested that deep with `[...]` / `{...}` (0 means unlimited).
pub fn saferepr(value: &Value, maxlen: Option<usize>, maxlevels: usize) -> String {
    let mut toks = Vec::new();
    push_value(&mut toks, value, 0, maxlevels);
    render(&toks, maxlen)
}

/// One token of Celery's streaming repr.
#[derive(Debug)]
enum Tok {
    /// Literal text. `truncate == false` marks brackets that are kept when
    /// the output is cut; `dir` is +1 for an opening, -1 for a closing one.
    Lit { text: String, truncate: bool, dir: i8 },
    /// A string (value or dict key), rendered quoted.
    Quoted(String),
    /// Any other scalar, already rendered.
    Text(String),
}

fn lit(text: &str, truncate: bool, dir: i8) -> Tok {
    Tok::Lit { text: text.to_owned(), truncate, dir }
}

fn push_value(toks: &mut Vec<Tok>, value: &Value, level: usize, maxlevels: usize) {
    match value {
        Value::Null => toks.push(Tok::Text("None".to_owned())),
        Value::Bool(b) => toks.push(Tok::Text(if *b { "True" } else { "False" }.to_owned())),
        Value::Number(n) => toks.push(Tok::Text(number_str(n))),
        Value::String(s) => toks.push(Tok::Quoted(s.clone())),
        Value::Array(items) => push_seq(toks, items.iter(), "[", "]", level, maxlevels),
        Value::Object(map) => push_map(toks, map, level, maxlevels),
    }
}

fn push_seq<'a>(
    toks: &mut Vec<Tok>,
    items: impl ExactSizeIterator<Item = &'a Value>,
    start: &str,
    end: &str,
    level: usize,
    maxlevels: usize,
) {
    if maxlevels > 0 && level >= maxlevels {
        toks.push(lit(&format!("{start}...{end}"), false, 0));
        return;
    }
    let n = items.len();
    toks.push(lit(start, false, 1));
    for (i, v) in items.enumerate() {
        push_value(toks, v, level + 1, maxlevels);
        if i + 1 < n {
            toks.push(lit(", ", true, 0));
        }
    }
    toks.push(lit(end, false, -1));
}

fn push_map(toks: &mut Vec<Tok>, map: &Map<String, Value>, level: usize, maxlevels: usize) {
    if maxlevels > 0 && level >= maxlevels {
        toks.push(lit("{...}", false, 0));
        return;
    }
    let n = map.len();
    toks.push(lit("{", false, 1));
    for (i, (k, v)) in map.iter().enumerate() {
        toks.push(Tok::Quoted(k.clone()));
        toks.push(lit(": ", true, 0));
        push_value(toks, v, level + 1, maxlevels);
        if i + 1 < n {
            toks.push(lit(", ", true, 0));
        }
    }
    toks.push(lit("}", false, -1));
}

/// Celery's `text.truncate`: when `s` has at least `maxlen` characters, keep
/// the first `maxlen`, drop the last partial word, append `...`.
fn truncate(s: &str, maxlen: Option<i64>) -> String {
    match maxlen {
        Some(m) if m > 0 && i64::try_from(s.chars().count()).unwrap_or(i64::MAX) >= m => {
            let head: String = s.chars().take(usize::try_from(m).unwrap_or(0)).collect();
            let kept = match head.rfind(' ') {
                Some(pos) => &head[..pos],
                None => head.as_str(),
            };
            format!("{kept}...")
        }
        _ => s.to_owned(),
    }
}

/// The output loop of Celery's `_saferepr`, over a pre-expanded token list.
fn render(toks: &[Tok], maxlen: Option<usize>) -> String {
    let mut left: Option<i64> = maxlen.map(|m| i64::try_from(m).unwrap_or(i64::MAX));
    let mut out = String::new();
    for (i, tok) in toks.iter().enumerate() {
        if left.is_some_and(|m| m <= 0) {
            if let Tok::Lit { text, dir, .. } = tok
                && *dir < 0
            {
                out.push_str(text);
                continue;
            }
            out.push_str(", ...");
            // Close the containers that were opened before the cut.
            let mut depth: i64 = 0;
            for rest in &toks[i..] {
                if let Tok::Lit { text, truncate: false, dir } = rest {
                    depth += i64::from(*dir);
                    if depth < 0 {
                        depth = 0;
                        out.push_str(text);
                    }
                }
            }
            return out;
        }
        let val = match tok {
            Tok::Lit { text, .. } => text.clone(),
            Tok::Quoted(s) => format!("'{}'", truncate(s, left).replace('\'', "\\'")),
            Tok::Text(s) => truncate(s, left),
        };
        if let Some(m) = left.as_mut() {
            *m -= i64::try_from(val.chars().count()).unwrap_or(i64::MAX);
        }
        out.push_str(&val);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repr_scalars_and_containers() {
        assert_eq!(py_repr(&json!(null)), "None");
        assert_eq!(py_repr(&json!(true)), "True");
        assert_eq!(py_repr(&json!(42)), "42");
        assert_eq!(py_repr(&json!(-7)), "-7");
        assert_eq!(py_repr(&json!(1.0)), "1.0");
        assert_eq!(py_repr(&json!(18446744073709551615u64)), "18446744073709551615");
        assert_eq!(py_repr(&json!({"a": [1, "b", null], "c": {}})), "{'a': [1, 'b', None], 'c': {}}");
        assert_eq!(py_tuple_repr(&[]), "()");
        assert_eq!(py_tuple_repr(&[json!(7)]), "(7,)");
        assert_eq!(py_tuple_repr(&[json!("custom boom"), json!(42)]), "('custom boom', 42)");
    }

    #[test]
    fn repr_strings_like_cpython() {
        // Expected values from CPython 3.11 repr().
        assert_eq!(py_str_repr("plain"), "'plain'");
        assert_eq!(py_str_repr("it's"), "\"it's\"");
        assert_eq!(py_str_repr("both ' and \""), "'both \\' and \"'");
        assert_eq!(py_str_repr("say \"hi\""), "'say \"hi\"'");
        assert_eq!(py_str_repr("a\\b\nc\td\re"), "'a\\\\b\\nc\\td\\re'");
        assert_eq!(py_str_repr("\u{0}\u{1b}\u{7f}\u{85}\u{a0}"), "'\\x00\\x1b\\x7f\\x85\\xa0'");
        assert_eq!(py_str_repr("é日本😀"), "'é日本😀'");
        assert_eq!(py_str_repr("\u{2028}\u{feff}"), "'\\u2028\\ufeff'");
        assert_eq!(py_str_repr("\u{f0000}"), "'\\U000f0000'");
    }

    #[test]
    fn py_str_is_bare_for_strings() {
        assert_eq!(py_str(&json!("boom")), "boom");
        assert_eq!(py_str(&json!(30)), "30");
        assert_eq!(py_str(&json!(["a"])), "['a']");
    }

    #[test]
    fn args_and_kwargs_repr_match_captures() {
        assert_eq!(args_repr(&[json!(4), json!(4)]), "(4, 4)");
        assert_eq!(args_repr(&[json!(7)]), "(7,)");
        assert_eq!(args_repr(&[]), "()");
        assert_eq!(
            args_repr(&[json!("3f28e8cb-bc59-4797-8f3c-87bd899306a2")]),
            "('3f28e8cb-bc59-4797-8f3c-87bd899306a2',)"
        );
        assert_eq!(
            args_repr(&[json!(4611686018427387904u64), json!(4611686018427387904u64)]),
            "(4611686018427387904, 4611686018427387904)"
        );
        let kw = json!({"x": 1, "y": 2});
        assert_eq!(kwargs_repr(kw.as_object().unwrap()), "{'x': 1, 'y': 2}");
        assert_eq!(kwargs_repr(&Map::new()), "{}");
    }

    /// Vectors generated with celery 5.7.0's `saferepr(x, 1024, maxlevels=3)`
    /// (and other maxlen values where noted).
    #[test]
    fn saferepr_matches_celery() {
        // Not Python repr: always single quotes, only ' escaped, newlines raw.
        assert_eq!(args_repr(&[json!("it's"), json!("a\nb"), json!("x\"y")]), "('it\\'s', 'a\nb', 'x\"y')");
        assert_eq!(args_repr(&[json!(null), json!(true), json!(1.5)]), "(None, True, 1.5)");
        // maxlevels=3: the 4th level is elided.
        assert_eq!(args_repr(&[json!([[[1]]])]), "([[[...]]],)");
        assert_eq!(args_repr(&[json!({"a": {"b": {"c": 1}}})]), "({'a': {'b': {...}}},)");
        let long = "x".repeat(2000);
        assert_eq!(args_repr(&[json!(long)]), format!("('{}...',)", "x".repeat(1023)));
        // Celery's truncation quirks, reproduced on purpose: a separator already
        // written is followed by ", ...".
        let words = json!("hello world this is a long text");
        assert_eq!(saferepr(&words, Some(12), 3), "'hello world...'");
        let many: Vec<Value> = (0..10).map(|i| json!(i)).collect();
        assert_eq!(saferepr(&Value::Array(many), Some(10), 3), "[0, 1, 2, , ...]");
        let nested = json!([[1, 2, 3], [4, 5, 6], 7]);
        assert_eq!(saferepr(&nested, Some(8), 3), "[[1, 2, , ...]]");
        assert_eq!(saferepr(&nested, Some(4), 3), "[[1, , ...]]");
        assert_eq!(saferepr(&json!({"k": "v", "k2": "v2"}), Some(6), 3), "{'k': , ...}");
    }
}
