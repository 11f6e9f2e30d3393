//! What parsing a JSON text into a `serde_json::Value` will cost the host, known
//! before the parse: the sandbox refuses a guest's result or exception text
//! whose parsed form would exceed its memory bound (`[{},{},...]` takes ~3 bytes
//! of text per value and hundreds of bytes per value once parsed), and the
//! fuzz target `guest_result` checks that the estimate and the parser agree on
//! what is JSON.

/// Estimated host memory, in bytes, that parsing `json` into a
/// `serde_json::Value` would take, computed without building it (a streaming
/// pass that allocates nothing), or why `json` is not valid JSON.
///
/// Each value costs a `Value` slot plus, for objects, an index-map entry; the
/// figures are deliberately generous so the estimate errs on the side of
/// refusing (`[{},{},...]` — 3 bytes of text per value — costs hundreds of
/// bytes per value once parsed).
pub fn parsed_json_cost(json: &str) -> Result<usize, serde_json::Error> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::cell::Cell;

    /// Per value: the `Value` itself (32 bytes) plus allocator overhead.
    const VALUE: usize = 48;
    /// Per object: an empty `IndexMap` allocates its table on first insert;
    /// an object costs its map header even when empty.
    const OBJECT: usize = 96;
    /// Per object entry: the key `String` and the map's bucket and index.
    const ENTRY: usize = 64;

    struct Cost<'a>(&'a Cell<usize>);

    impl<'de> Visitor<'de> for Cost<'_> {
        type Value = IgnoredAny;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<IgnoredAny, E> {
            Ok(IgnoredAny)
        }
        fn visit_i64<E>(self, _: i64) -> Result<IgnoredAny, E> {
            Ok(IgnoredAny)
        }
        fn visit_u64<E>(self, _: u64) -> Result<IgnoredAny, E> {
            Ok(IgnoredAny)
        }
        fn visit_f64<E>(self, _: f64) -> Result<IgnoredAny, E> {
            Ok(IgnoredAny)
        }
        fn visit_str<E>(self, s: &str) -> Result<IgnoredAny, E> {
            self.0.set(self.0.get() + s.len());
            Ok(IgnoredAny)
        }
        fn visit_unit<E>(self) -> Result<IgnoredAny, E> {
            Ok(IgnoredAny)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IgnoredAny, A::Error> {
            while seq.next_element_seed(Seed(self.0))?.is_some() {}
            Ok(IgnoredAny)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IgnoredAny, A::Error> {
            self.0.set(self.0.get() + OBJECT);
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                self.0.set(self.0.get() + ENTRY + key.len());
                map.next_value_seed(Seed(self.0))?;
            }
            Ok(IgnoredAny)
        }
    }

    struct Seed<'a>(&'a Cell<usize>);

    impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
        type Value = IgnoredAny;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<IgnoredAny, D::Error> {
            self.0.set(self.0.get() + VALUE);
            d.deserialize_any(Cost(self.0))
        }
    }

    let total = Cell::new(0usize);
    let mut de = serde_json::Deserializer::from_str(json);
    serde::de::DeserializeSeed::deserialize(Seed(&total), &mut de)?;
    de.end()?;
    Ok(total.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_cost_grows_with_values_not_text() {
        let small_values = format!("[{}{{}}]", "{},".repeat(100_000));
        let one_string = format!("\"{}\"", "x".repeat(300_000));
        let many = parsed_json_cost(&small_values).unwrap();
        let one = parsed_json_cost(&one_string).unwrap();
        assert!(many > 10 * small_values.len(), "{many} for {} bytes", small_values.len());
        assert!(one < 2 * one_string.len(), "{one}");
        assert!(parsed_json_cost("[1, 2").is_err());
        assert!(parsed_json_cost("1 2").is_err());
        assert!(parsed_json_cost("{\"a\": [1, {\"b\": null}]}").is_ok());
    }
}
