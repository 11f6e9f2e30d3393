//! JSON text exactly as Python's `json.dumps` writes it.
//!
//! kombu serialises envelopes, task bodies and result values with
//! `json.dumps(obj)` and default arguments. That output differs from
//! serde_json's compact form in three ways, and byte-for-byte equality with a
//! Python peer (and with the captures) needs all three:
//! - separators are `", "` and `": "`;
//! - `ensure_ascii=True`: every character outside `0x20..=0x7e` is written as
//!   a lowercase `\uXXXX` escape (UTF-16 surrogate pairs above U+FFFF);
//! - floats use Python's `repr` (`1e+16`, `1e-05`, `20.5`, `1.0`).
//!
//! Key order is whatever the `serde_json::Map` holds (the crate enables
//! `preserve_order`, so that is insertion order).

use std::io;

use serde::Serialize;
use serde_json::Value;

/// Serialise a value the way Python's `json.dumps` does.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    // Serialising a `Value` into a Vec cannot fail: keys are strings and
    // non-finite floats cannot exist inside a `Value`.
    if value.serialize(&mut ser).is_err() {
        out.clear();
        out.extend_from_slice(b"null");
    }
    out
}

/// Same as [`to_vec`], as a `String` (the output is pure ASCII).
pub fn to_string(value: &Value) -> String {
    // ensure_ascii output is ASCII, hence valid UTF-8.
    String::from_utf8(to_vec(value)).unwrap_or_default()
}

/// A serde_json formatter that reproduces Python's default `json.dumps`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(json_float(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(json_float(f64::from(value)).as_bytes())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        // serde_json already escaped `"`, `\` and control characters; what is
        // left to do is ensure_ascii for DEL and everything non-ASCII.
        let bytes = fragment.as_bytes();
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch.is_ascii() && ch != '\x7f' {
                continue;
            }
            w.write_all(&bytes[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + ch.len_utf8();
        }
        w.write_all(&bytes[start..])
    }
}

/// Python's JSON spelling of a float (`NaN`/`Infinity` for non-finite values).
fn json_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity".to_owned() } else { "-Infinity".to_owned() }
    } else {
        py_float_repr(value)
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation when the
/// decimal exponent is in `-4..16`, else `d.ddde+XX`. Non-finite values give
/// `nan`, `inf`, `-inf`.
pub fn py_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf".to_owned() } else { "-inf".to_owned() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "1.5e-7", "1e16", "0e0".
    let sci = format!("{:e}", value.abs());
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let point = usize::try_from(exp).unwrap_or(0) + 1;
            if digits.len() <= point {
                format!("{digits}{}.0", "0".repeat(point - digits.len()))
            } else {
                format!("{}.{}", &digits[..point], &digits[point..])
            }
        } else {
            let zeros = usize::try_from(-exp - 1).unwrap_or(0);
            format!("0.{}{digits}", "0".repeat(zeros))
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let frac = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn separators_and_order() {
        let v = json!({"b": [1, 2, {"x": null}], "a": {}, "c": []});
        assert_eq!(to_string(&v), r#"{"b": [1, 2, {"x": null}], "a": {}, "c": []}"#);
    }

    #[test]
    fn ensure_ascii_escapes() {
        // Expected strings produced by CPython 3.11 json.dumps.
        let v = json!(["é", "日本", "😀", "\u{7f}", "a\"b\\c\n\t\r\u{1}\u{8}\u{c}", "/"]);
        assert_eq!(
            to_string(&v),
            r#"["\u00e9", "\u65e5\u672c", "\ud83d\ude00", "\u007f", "a\"b\\c\n\t\r\u0001\b\f", "/"]"#
        );
    }

    #[test]
    fn floats_like_python_repr() {
        // (value, repr) pairs checked against CPython 3.11.
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (20.5, "20.5"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.5e-300, "-2.5e-300"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (2.71, "2.71"),
            (1795756470.0420449, "1795756470.0420449"),
            (12345.678, "12345.678"),
        ];
        for (v, want) in cases {
            assert_eq!(py_float_repr(*v), *want, "repr of {v:e}");
        }
        assert_eq!(py_float_repr(f64::NAN), "nan");
        assert_eq!(py_float_repr(f64::NEG_INFINITY), "-inf");
        assert_eq!(to_string(&json!([1.0, 2.5e20])), "[1.0, 2.5e+20]");
    }
}
