//! Python ints wider than 64 bits in a JSON task body.
//!
//! Python ints are unbounded and `json.dumps` writes them digit for digit
//! (`2**70` is `1180591620717411303424`); serde_json reads such a literal as
//! an `f64`, so `args`/`kwargs` would hand the task a rounded float and the
//! int would silently stop being one. When a body's args or kwargs hold such
//! a literal, the worker hands the task their JSON text as it was sent: the
//! Rust SDK then raises Python's `OverflowError` (as CPython does converting
//! to a C long), and a guest with big-number support gets the exact digits.

/// The texts of a protocol-2 JSON body's args and kwargs (its first two
/// elements), if an integer literal in them fits neither `i64` nor `u64`.
pub fn wide_args(body: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let bytes = text.as_bytes();
    let (mut depth, mut element, mut start) = (0usize, 0usize, 0usize);
    let mut parts: Vec<&str> = Vec::new();
    let mut wide = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 {
                    start = i + 1;
                }
            }
            b']' | b'}' => {
                if depth == 1 {
                    parts.push(&text[start..i]);
                }
                depth = depth.saturating_sub(1);
            }
            b',' if depth == 1 => {
                parts.push(&text[start..i]);
                element += 1;
                start = i + 1;
            }
            b'-' | b'0'..=b'9' if depth >= 1 && element < 2 => {
                let from = i;
                while i + 1 < bytes.len() && matches!(bytes[i + 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                let token = &text[from..=i];
                let integral = !token.contains(['.', 'e', 'E']);
                if integral && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                    wide = true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    match (wide, parts.as_slice()) {
        (true, [args, kwargs, ..]) => Some((args.trim().to_string(), kwargs.trim().to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_int_wider_than_64_bits_in_args_or_kwargs_keeps_its_digits() {
        let body = br#"[[1180591620717411303424, 1], {"y": 2}, {"callbacks": null}]"#;
        let (args, kwargs) = wide_args(body).unwrap();
        assert_eq!((args.as_str(), kwargs.as_str()), ("[1180591620717411303424, 1]", r#"{"y": 2}"#));
        let body = br#"[[], {"x": [-99999999999999999999]}, {}]"#;
        assert_eq!(wide_args(body).unwrap().1, r#"{"x": [-99999999999999999999]}"#);
    }

    #[test]
    fn sixty_four_bit_ints_floats_strings_and_the_embed_part_are_left_alone() {
        let fits = br#"[[9223372036854775807, 18446744073709551615, -9223372036854775808, 1e300], {}, {}]"#;
        assert_eq!(wide_args(fits), None);
        assert_eq!(wide_args(br#"[["1180591620717411303424 \" 99999999999999999999"], {}, {}]"#), None);
        assert_eq!(wide_args(br#"[[1], {}, {"chain": [{"args": [1180591620717411303424]}]}]"#), None);
        assert_eq!(wide_args(b"\xff"), None);
    }
}
