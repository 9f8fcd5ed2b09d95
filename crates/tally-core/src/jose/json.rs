//! Strict JSON object parsing: RFC 8259 text whose top level is an object,
//! with duplicate member names refused at every nesting depth.
//!
//! RFC 7515 section 5.2 allows a parser to either reject duplicate header
//! members or keep the last one; "keep the last one" is how two parties end
//! up disagreeing about what a token says, so duplicates are always refused
//! here. Member names are compared after unescaping, so `"alg"` and
//! `"\u0061lg"` are duplicates.
//!
//! The parser is `serde_json`'s own, driven through a custom visitor; `serde_json`
//! bounds nesting depth (128), so hostile nesting is an error, not a stack
//! overflow.

use core::cell::Cell;
use core::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `bytes` as a JSON object, refusing invalid UTF-8, trailing data,
/// non-object top levels and duplicate members anywhere.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, &'static str> {
    let text = core::str::from_utf8(bytes).map_err(|_| "JSON is not valid UTF-8")?;
    let duplicate = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = StrictSeed {
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    match parsed {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("JSON is not an object"),
        Err(_) if duplicate.get() => Err("duplicate JSON member"),
        Err(_) => Err("invalid JSON"),
    }
}

/// Deserializes one JSON value of any kind, strictly.
#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    /// Set when the failure is a duplicate member, to report it precisely.
    duplicate: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(name) = access.next_key::<String>()? {
            if map.contains_key(&name) {
                self.duplicate.set(true);
                return Err(A::Error::custom("duplicate JSON member"));
            }
            let value = access.next_value_seed(self)?;
            map.insert(name, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_objects() {
        let m = parse_object(br#" {"a":1,"b":[{"c":null},{"c":true}],"d":{"e":-2.5,"f":"x"}} "#)
            .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m["b"][1]["c"], Value::Bool(true));
        assert_eq!(parse_object(b"{}").unwrap().len(), 0);
    }

    #[test]
    fn rejects_duplicates_at_any_depth() {
        for text in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"a":1,"\u0061":2}"#,
            br#"{"x":{"a":1,"a":1}}"#,
            br#"{"x":[1,{"y":{"a":1,"b":2,"a":3}}]}"#,
            br#"{"x":[[{"k":1,"k":1}]]}"#,
        ] {
            assert_eq!(
                parse_object(text),
                Err("duplicate JSON member"),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        // Same name in sibling objects is fine.
        assert!(parse_object(br#"{"x":{"a":1},"y":{"a":1}}"#).is_ok());
    }

    #[test]
    fn rejects_non_objects_and_garbage() {
        assert_eq!(parse_object(b"[]"), Err("JSON is not an object"));
        assert_eq!(parse_object(b"\"s\""), Err("JSON is not an object"));
        assert_eq!(parse_object(b"1"), Err("JSON is not an object"));
        assert_eq!(parse_object(b"null"), Err("JSON is not an object"));
        assert_eq!(parse_object(b"{} {}"), Err("invalid JSON"));
        assert_eq!(parse_object(b"{}x"), Err("invalid JSON"));
        assert_eq!(parse_object(b""), Err("invalid JSON"));
        assert_eq!(parse_object(b"{\"a\":1,}"), Err("invalid JSON"));
        assert_eq!(parse_object(b"{'a':1}"), Err("invalid JSON"));
        assert_eq!(parse_object(b"\xef\xbb\xbf{}"), Err("invalid JSON"));
        assert_eq!(
            parse_object(b"{\"a\":\"\xff\"}"),
            Err("JSON is not valid UTF-8")
        );
        assert_eq!(parse_object(br#"{"a":"\ud800"}"#), Err("invalid JSON"));
        assert_eq!(parse_object(b"{\"a\":NaN}"), Err("invalid JSON"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut text = String::from("{\"a\":");
        text.push_str(&"[".repeat(100_000));
        assert_eq!(parse_object(text.as_bytes()), Err("invalid JSON"));
        let mut objects = "{\"a\":".repeat(50_000);
        objects.push('1');
        objects.push_str(&"}".repeat(50_000));
        assert_eq!(parse_object(objects.as_bytes()), Err("invalid JSON"));
    }

    /// Found by the `jws` fuzz target: numbers are read correctly rounded
    /// (as Python's and JavaScript's JSON read them), so a claim written out
    /// again reads back as the same value.
    #[test]
    fn numbers_are_correctly_rounded() {
        // Rust's `str::parse::<f64>` is correctly rounded: it is the reference.
        for text in [
            "999999999999999775809",
            "9.999999999999996e20",
            "0.30000000000000004",
            "2.2250738585072011e-308",
            "-1.7976931348623157e308",
        ] {
            let map = parse_object(format!("{{\"n\":{text}}}").as_bytes()).unwrap();
            assert_eq!(map["n"].as_f64(), text.parse::<f64>().ok(), "{text}");
        }
    }
}
