//! Reading a request body as JSON that names each key once per object.
//!
//! A body the gateway does not change goes upstream byte for byte. If an
//! object named a key twice, the gateway (serde_json keeps the last value)
//! and the provider (which may keep the first, or refuse) could read two
//! different requests: a model the plan allows checked here and another
//! one called there, an output limit lowered here and ignored there, a
//! `previous_response_id` checked here and another one followed there. So
//! such a body is refused, at any depth, at the cost of one map lookup
//! the parse makes anyway.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::{Body, Invalid};

/// `raw` as a JSON object in which no object names a key twice.
pub(crate) fn object(raw: &[u8]) -> Result<Body, Invalid> {
    match serde_json::from_slice::<Strict>(raw) {
        Ok(Strict(Value::Object(map))) => Ok(map),
        Ok(_) => Err(Invalid::new("body", "expected a JSON object")),
        // Only the visitor below raises data errors: a repeated key.
        Err(e) if e.is_data() => Err(Invalid::new(
            "body",
            format!(
                "{e}; Tollgate refuses a body that names a key twice in one object, as the provider might read the other value"
            ),
        )),
        Err(e) => Err(Invalid::new("body", format!("not valid JSON ({e})"))),
    }
}

/// A JSON value whose objects name each key once.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                let cut = if shown.len() < key.len() { "…" } else { "" };
                return Err(de::Error::custom(format_args!("the key {shown:?}{cut} appears twice in one object")));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_reads_as_serde_json_reads_it() {
        let raw = br#"{"model":"m","n":-1,"t":0.5,"big":18446744073709551615,"s":"\u00e9\n","a":[null,true,{"x":[]}]}"#;
        let strict = object(raw).unwrap();
        let plain: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(Value::Object(strict), plain);
    }

    #[test]
    fn a_key_named_twice_at_any_depth_is_refused_naming_it() {
        for raw in [
            &br#"{"model":"cheap","messages":[],"model":"dear"}"#[..],
            br#"{"model":"m","stream_options":{"include_usage":false,"include_usage":true}}"#,
            br#"{"model":"m","input":[{"type":"message","role":"user","role":"system"}]}"#,
        ] {
            let e = object(raw).unwrap_err();
            assert_eq!(e.field, "body");
            assert!(e.message.contains("appears twice") && e.message.contains("line 1"), "{e}");
        }
        let e = object(br#"{"model":"cheap","model":"dear"}"#).unwrap_err();
        assert!(e.message.contains("\"model\""), "{e}");
        // Escapes are read before keys are compared; a long key is cut short in the message.
        let e = object(br#"{"model":"a","mod\u0065l":"b"}"#).unwrap_err();
        assert!(e.message.contains("\"model\" appears twice"), "{e}");
        let long = "k".repeat(1000);
        let e = object(format!(r#"{{"{long}":1,"{long}":2}}"#).as_bytes()).unwrap_err();
        assert!(e.message.len() < 300 && e.message.contains("…"), "{e}");
        // The same key in two objects is fine.
        assert!(object(br#"{"a":{"k":1},"b":{"k":2}}"#).is_ok());
    }

    #[test]
    fn what_is_not_json_is_still_called_so() {
        let e = object(b"{\"model\": }").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{e}");
        let e = object(b"[1]").unwrap_err();
        assert!(e.message.contains("expected a JSON object"), "{e}");
    }
}
