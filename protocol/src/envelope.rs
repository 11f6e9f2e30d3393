//! kombu's Redis message envelope.
//!
//! On Redis (and every other kombu "virtual" transport) a message travels as
//! one JSON document that bundles what AMQP carries in frames:
//!
//! ```text
//! {"body": "<base64>", "content-encoding": "utf-8", "content-type": "application/json",
//!  "headers": {...task headers...},
//!  "properties": {"correlation_id", "reply_to", "delivery_mode",
//!                 "delivery_info": {"exchange", "routing_key"}, "priority",
//!                 "body_encoding": "base64", "delivery_tag": "<uuid4>"}}
//! ```
//!
//! Key order is exactly this (note `content-encoding` before `content-type`).
//! The worker must be able to put a message back unchanged except for the
//! redelivery marks, so headers and properties are kept as ordered maps and
//! re-serialised with Python's JSON formatting: a parsed Python-written
//! envelope round-trips byte for byte.
//!
//! The ack bookkeeping stores `[envelope, exchange, routing_key]` in the
//! `unacked` hash; [`Envelope::to_unacked_entry`] and
//! [`Envelope::parse_unacked_entry`] handle that form.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::error::{Partial, ProtocolError, describe};
use super::message::{DeliveryInfo, RawMessage};
use super::pyjson;

/// The base64 flavour kombu uses: standard alphabet, padded on output,
/// padding optional on input.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// A parsed kombu envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The body as transported: base64 text when `properties.body_encoding`
    /// is `base64`, else the serialised payload itself.
    pub body: String,
    /// `content-type` (e.g. `application/json`); `None` when null or absent.
    pub content_type: Option<String>,
    /// `content-encoding` (e.g. `utf-8`, `binary`); `None` when null or absent.
    pub content_encoding: Option<String>,
    /// Message headers (task headers for task messages), in wire order.
    pub headers: Map<String, Value>,
    /// All message properties, in wire order.
    pub properties: Map<String, Value>,
    /// Unknown top-level keys, kept so they survive a restore.
    pub extra: Map<String, Value>,
}

impl Envelope {
    /// Parse the bytes popped from a Redis list.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, ProtocolError> {
        let value: Value = serde_json::from_slice(bytes).map_err(ProtocolError::EnvelopeJson)?;
        Self::from_value(value)
    }

    /// Build from an already parsed JSON value.
    pub fn from_value(value: Value) -> Result<Envelope, ProtocolError> {
        let Value::Object(mut obj) = value else {
            return Err(ProtocolError::EnvelopeNotObject { found: describe(&value) });
        };
        let body = match obj.shift_remove("body") {
            Some(Value::String(s)) => s,
            _ => {
                return Err(ProtocolError::EnvelopeField { field: "body", expected: "a string" });
            }
        };
        let content_type = opt_string(obj.shift_remove("content-type"), "content-type")?;
        let content_encoding = opt_string(obj.shift_remove("content-encoding"), "content-encoding")?;
        let headers = opt_object(obj.shift_remove("headers"), "headers")?;
        let properties = opt_object(obj.shift_remove("properties"), "properties")?;
        Ok(Envelope { body, content_type, content_encoding, headers, properties, extra: obj })
    }

    /// Build an envelope for publishing: base64-encodes `body` and sets
    /// `properties.body_encoding = "base64"` (in place when the key is
    /// already there, so callers control the order; appended otherwise).
    pub fn new(
        body: &[u8],
        content_type: &str,
        content_encoding: &str,
        headers: Map<String, Value>,
        mut properties: Map<String, Value>,
    ) -> Envelope {
        properties.insert("body_encoding".to_owned(), Value::from("base64"));
        Envelope {
            body: B64.encode(body),
            content_type: Some(content_type.to_owned()),
            content_encoding: Some(content_encoding.to_owned()),
            headers,
            properties,
            extra: Map::new(),
        }
    }

    /// The envelope as a JSON value, keys in kombu's order.
    pub fn to_value(&self) -> Value {
        let mut m = Map::with_capacity(5 + self.extra.len());
        m.insert("body".to_owned(), Value::String(self.body.clone()));
        m.insert("content-encoding".to_owned(), opt_value(self.content_encoding.as_deref()));
        m.insert("content-type".to_owned(), opt_value(self.content_type.as_deref()));
        m.insert("headers".to_owned(), Value::Object(self.headers.clone()));
        m.insert("properties".to_owned(), Value::Object(self.properties.clone()));
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }

    /// Serialise exactly as kombu does (Python `json.dumps`).
    pub fn to_bytes(&self) -> Vec<u8> {
        pyjson::to_vec(&self.to_value())
    }

    /// The value kombu stores in the `unacked` hash:
    /// `[<envelope>, "<exchange>", "<routing_key>"]`.
    pub fn to_unacked_entry(&self) -> Vec<u8> {
        let entry = Value::Array(vec![
            self.to_value(),
            Value::from(self.exchange().unwrap_or("")),
            Value::from(self.routing_key().unwrap_or("")),
        ]);
        pyjson::to_vec(&entry)
    }

    /// Parse an `unacked` hash value into (envelope, exchange, routing_key).
    pub fn parse_unacked_entry(bytes: &[u8]) -> Result<(Envelope, String, String), ProtocolError> {
        let value: Value = serde_json::from_slice(bytes).map_err(ProtocolError::EnvelopeJson)?;
        let Value::Array(items) = value else {
            return Err(ProtocolError::EnvelopeNotObject { found: describe(&value) });
        };
        let mut it = items.into_iter();
        let (Some(env), Some(Value::String(ex)), Some(Value::String(rk)), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(ProtocolError::EnvelopeField {
                field: "unacked entry",
                expected: "a list [envelope, exchange, routing_key]",
            });
        };
        Ok((Envelope::from_value(env)?, ex, rk))
    }

    /// Mark the message as redelivered, as kombu's restore does:
    /// `headers.redelivered = true` and `properties.delivery_info.redelivered = true`.
    pub fn mark_redelivered(&mut self) {
        self.headers.insert("redelivered".to_owned(), Value::Bool(true));
        let info = self.properties.entry("delivery_info").or_insert_with(|| Value::Object(Map::new()));
        if !info.is_object() {
            *info = Value::Object(Map::new());
        }
        if let Value::Object(info) = info {
            info.insert("redelivered".to_owned(), Value::Bool(true));
        }
    }

    fn prop_str(&self, key: &str) -> Option<&str> {
        self.properties.get(key).and_then(Value::as_str)
    }

    fn delivery_info_field(&self, key: &str) -> Option<&Value> {
        self.properties.get("delivery_info").and_then(|d| d.get(key))
    }

    /// `properties.delivery_tag` (a uuid4 string on Redis).
    pub fn delivery_tag(&self) -> Option<&str> {
        self.prop_str("delivery_tag")
    }

    /// `properties.delivery_info.exchange`.
    pub fn exchange(&self) -> Option<&str> {
        self.delivery_info_field("exchange").and_then(Value::as_str)
    }

    /// `properties.delivery_info.routing_key` (the queue, for the default exchange).
    pub fn routing_key(&self) -> Option<&str> {
        self.delivery_info_field("routing_key").and_then(Value::as_str)
    }

    /// `properties.delivery_info.redelivered` (or `headers.redelivered`).
    pub fn redelivered(&self) -> bool {
        self.delivery_info_field("redelivered").and_then(Value::as_bool).unwrap_or(false)
            || self.headers.get("redelivered").and_then(Value::as_bool).unwrap_or(false)
    }

    /// `properties.priority` when it is an integer in 0..=255.
    pub fn priority(&self) -> Option<u8> {
        self.properties.get("priority").and_then(Value::as_u64).and_then(|p| u8::try_from(p).ok())
    }

    /// `properties.body_encoding` (`base64` for everything kombu writes).
    pub fn body_encoding(&self) -> Option<&str> {
        self.prop_str("body_encoding")
    }

    /// `properties.correlation_id` (the task id for task messages).
    pub fn correlation_id(&self) -> Option<&str> {
        self.prop_str("correlation_id")
    }

    /// `properties.reply_to`.
    pub fn reply_to(&self) -> Option<&str> {
        self.prop_str("reply_to")
    }

    /// Delivery details in the transport-neutral form used by [`RawMessage`].
    pub fn delivery_info(&self) -> DeliveryInfo {
        DeliveryInfo {
            delivery_tag: self.delivery_tag().map(str::to_owned),
            queue: None,
            exchange: self.exchange().unwrap_or("").to_owned(),
            routing_key: self.routing_key().unwrap_or("").to_owned(),
            priority: self.priority(),
            redelivered: self.redelivered(),
            reply_to: self.reply_to().map(str::to_owned),
            correlation_id: self.correlation_id().map(str::to_owned),
        }
    }

    /// What the headers / properties reveal about the task, for errors.
    fn partial(&self) -> Partial {
        let header = |k: &str| self.headers.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        Partial {
            id: header("id").or_else(|| self.correlation_id()).map(str::to_owned),
            task: header("task").map(str::to_owned),
        }
    }

    /// The body bytes after undoing `body_encoding` (base64, or none).
    pub fn decoded_body(&self) -> Result<Vec<u8>, ProtocolError> {
        match self.body_encoding() {
            Some(enc) if enc.eq_ignore_ascii_case("base64") => B64
                .decode(self.body.as_bytes())
                .map_err(|source| ProtocolError::BadBase64 { source, partial: self.partial() }),
            None => Ok(self.body.as_bytes().to_vec()),
            Some(other) => {
                Err(ProtocolError::UnsupportedBodyEncoding { encoding: other.to_owned(), partial: self.partial() })
            }
        }
    }

    /// [`Envelope::to_raw_message`], consuming the envelope (no copy of the headers).
    pub fn into_raw_message(self) -> Result<RawMessage, ProtocolError> {
        let body = self.decoded_body()?;
        let delivery = self.delivery_info();
        Ok(RawMessage {
            headers: self.headers,
            body,
            content_type: self.content_type,
            content_encoding: self.content_encoding,
            delivery,
        })
    }

    /// The transport-neutral message: decoded body bytes, headers, content
    /// type/encoding and delivery info.
    pub fn to_raw_message(&self) -> Result<RawMessage, ProtocolError> {
        Ok(RawMessage {
            headers: self.headers.clone(),
            body: self.decoded_body()?,
            content_type: self.content_type.clone(),
            content_encoding: self.content_encoding.clone(),
            delivery: self.delivery_info(),
        })
    }
}

fn opt_value(s: Option<&str>) -> Value {
    s.map_or(Value::Null, Value::from)
}

fn opt_string(v: Option<Value>, field: &'static str) -> Result<Option<String>, ProtocolError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ProtocolError::EnvelopeField { field, expected: "a string or null" }),
    }
}

fn opt_object(v: Option<Value>, field: &'static str) -> Result<Map<String, Value>, ProtocolError> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(ProtocolError::EnvelopeField { field, expected: "an object or null" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "body": "W1s0LCA0XSwge30sIHt9XQ==",
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"task": "tasks.add", "id": "abc"},
            "properties": {"correlation_id": "abc", "delivery_info": {"exchange": "", "routing_key": "celery"},
                           "priority": 5, "body_encoding": "base64", "delivery_tag": "t1"}
        })
    }

    #[test]
    fn accessors() {
        let env = Envelope::from_value(sample()).unwrap();
        assert_eq!(env.delivery_tag(), Some("t1"));
        assert_eq!(env.exchange(), Some(""));
        assert_eq!(env.routing_key(), Some("celery"));
        assert_eq!(env.priority(), Some(5));
        assert_eq!(env.body_encoding(), Some("base64"));
        assert_eq!(env.correlation_id(), Some("abc"));
        assert_eq!(env.reply_to(), None);
        assert!(!env.redelivered());
        assert_eq!(env.decoded_body().unwrap(), b"[[4, 4], {}, {}]");
    }

    #[test]
    fn malformed_envelopes() {
        assert!(matches!(Envelope::parse(b"{not json"), Err(ProtocolError::EnvelopeJson(_))));
        assert!(matches!(Envelope::parse(b"[1]"), Err(ProtocolError::EnvelopeNotObject { .. })));
        assert!(matches!(
            Envelope::parse(br#"{"headers": {}}"#),
            Err(ProtocolError::EnvelopeField { field: "body", .. })
        ));
        assert!(matches!(
            Envelope::parse(br#"{"body": "", "headers": []}"#),
            Err(ProtocolError::EnvelopeField { field: "headers", .. })
        ));
        assert!(matches!(
            Envelope::parse(br#"{"body": "", "content-type": 5}"#),
            Err(ProtocolError::EnvelopeField { field: "content-type", .. })
        ));
        // Minimal: only a body, nothing else.
        let env = Envelope::parse(br#"{"body": "[]"}"#).unwrap();
        assert_eq!(env.decoded_body().unwrap(), b"[]");
        assert_eq!(env.delivery_info(), DeliveryInfo::default());
    }

    #[test]
    fn bad_base64_keeps_partial() {
        let mut v = sample();
        v["body"] = json!("***not base64***");
        let env = Envelope::from_value(v).unwrap();
        let err = env.decoded_body().unwrap_err();
        assert!(matches!(err, ProtocolError::BadBase64 { .. }), "{err}");
        assert_eq!(err.task_id(), Some("abc"));
        assert_eq!(err.task_name(), Some("tasks.add"));
        assert!(err.to_string().contains("(task tasks.add, id abc)"), "{err}");
    }

    #[test]
    fn unknown_body_encoding() {
        let mut v = sample();
        v["properties"]["body_encoding"] = json!("rot13");
        let err = Envelope::from_value(v).unwrap().decoded_body().unwrap_err();
        assert!(matches!(err, ProtocolError::UnsupportedBodyEncoding { .. }));
    }

    #[test]
    fn missing_padding_is_tolerated() {
        let mut v = sample();
        v["body"] = json!("W1s0LCA0XSwge30sIHt9XQ");
        assert_eq!(Envelope::from_value(v).unwrap().decoded_body().unwrap(), b"[[4, 4], {}, {}]");
    }

    #[test]
    fn redelivered_marks_and_extra_keys() {
        let mut v = sample();
        v["zzz"] = json!(1);
        let mut env = Envelope::from_value(v).unwrap();
        env.mark_redelivered();
        assert!(env.redelivered());
        let out = env.to_value();
        assert_eq!(out["headers"]["redelivered"], json!(true));
        assert_eq!(out["properties"]["delivery_info"]["redelivered"], json!(true));
        assert_eq!(out["zzz"], json!(1));
        let keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["body", "content-encoding", "content-type", "headers", "properties", "zzz"]);
    }

    #[test]
    fn unacked_entry_roundtrip() {
        let env = Envelope::from_value(sample()).unwrap();
        let entry = env.to_unacked_entry();
        assert!(entry.ends_with(br#"}}, "", "celery"]"#));
        let (back, ex, rk) = Envelope::parse_unacked_entry(&entry).unwrap();
        assert_eq!((back, ex.as_str(), rk.as_str()), (env, "", "celery"));
        assert!(Envelope::parse_unacked_entry(b"[1, 2]").is_err());
        assert!(Envelope::parse_unacked_entry(b"{}").is_err());
    }

    #[test]
    fn new_envelope_base64_and_order() {
        let mut props = Map::new();
        props.insert("delivery_tag".into(), json!("t"));
        let env = Envelope::new(b"[[], {}, {}]", "application/json", "utf-8", Map::new(), props);
        assert_eq!(env.body, "W1tdLCB7fSwge31d");
        assert_eq!(env.body_encoding(), Some("base64"));
        assert_eq!(
            String::from_utf8(env.to_bytes()).unwrap(),
            r#"{"body": "W1tdLCB7fSwge31d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {}, "properties": {"delivery_tag": "t", "body_encoding": "base64"}}"#
        );
    }
}
