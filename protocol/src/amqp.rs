//! Celery messages as AMQP 0-9-1 carries them (RabbitMQ, kombu's pyamqp transport).
//!
//! On Redis a message is one JSON envelope; on AMQP the same pieces travel as
//! frame properties: a typed header *field table*, `content_type`,
//! `content_encoding`, `delivery_mode`, `priority`, `correlation_id`,
//! `reply_to`, `expiration`, and the raw body. This module converts between
//! those and the worker's transport-neutral types, as pure functions:
//!
//! - [`raw_message`]: a received message (properties + body + delivery
//!   details) → [`RawMessage`], which [`TaskMessage::decode`](super::TaskMessage::decode) reads;
//! - [`task_properties`]: an [`EncodedTask`] → the properties a Celery 5.7
//!   client sends (`add.delay(4, 4)`: flags 0xfe00);
//! - [`result_properties`]: the properties of an `rpc://` result message
//!   (flags 0xfc00: empty headers, `delivery_mode` 1 or 2, `priority` 0,
//!   `correlation_id` = task id);
//! - [`json_to_field`] / [`field_to_json`]: header values with py-amqp's
//!   encodings — `S` str, `I` int that fits 32 bits, `L` larger int, `d`
//!   float, `t` bool, `V` None, `A` list, `F` dict. Decoding accepts every
//!   AMQP field type (other clients send `l`, `s`, `x`, `T`, `D`, `f`...);
//! - [`queue_arguments`]: the `x-max-priority` / `x-queue-type` arguments a
//!   Celery 5.7 client declares, which the worker must repeat exactly
//!   (any difference is a 406 PRECONDITION_FAILED that closes the channel).
//!
//! The captures these are checked against are in `tests/fixtures/amqp/`
//! (copied from `shared/celery-wire/amqp/`), see `amqp_capture_tests` below.
//! lapin's field table is a sorted map, so header *order* on the wire is
//! lapin's, not py-amqp's; values and type tags are Celery's exactly.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Number, Value};

use super::content::Serializer;
use super::message::{DeliveryInfo, EncodedTask, RawMessage};
use super::pidbox::Outgoing;

/// AMQP `delivery_mode` for messages that survive a broker restart.
pub const PERSISTENT: u8 = 2;
/// AMQP `delivery_mode` for transient messages (Celery's default for rpc results).
pub const TRANSIENT: u8 = 1;

/// Why a value cannot be put in an AMQP frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AmqpEncodeError {
    /// Table keys and short-string properties are at most 255 bytes.
    #[error("{what} is longer than 255 bytes ({len} bytes)")]
    TooLong {
        /// Which field.
        what: String,
        /// Its length.
        len: usize,
    },
}

/// A short string (≤ 255 bytes), or an error naming the field.
pub fn short_string(what: &str, s: &str) -> Result<ShortString, AmqpEncodeError> {
    ShortString::try_new(s).map_err(|_| AmqpEncodeError::TooLong { what: what.to_string(), len: s.len() })
}

/// A JSON value as py-amqp encodes the Python value it stands for.
///
/// Integers that fit 32 bits are `I`, other 64-bit integers `L` (py-amqp's
/// choice); an integer beyond 64 bits cannot travel in a field table and is
/// sent as its decimal text (`S`), which is what a reader can still recover.
pub fn json_to_field(value: &Value) -> Result<AMQPValue, AmqpEncodeError> {
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                match i32::try_from(i) {
                    Ok(small) => AMQPValue::LongInt(small),
                    Err(_) => AMQPValue::LongLongInt(i),
                }
            } else if n.is_u64() {
                AMQPValue::LongString(LongString::from(n.to_string()))
            } else {
                AMQPValue::Double(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        Value::Array(items) => {
            let mut arr = FieldArray::default();
            for item in items {
                arr.push(json_to_field(item)?);
            }
            AMQPValue::FieldArray(arr)
        }
        Value::Object(map) => AMQPValue::FieldTable(json_to_table(map)?),
    })
}

/// A JSON object as a field table (keys must be ≤ 255 bytes).
pub fn json_to_table(map: &Map<String, Value>) -> Result<FieldTable, AmqpEncodeError> {
    let mut table = FieldTable::default();
    for (k, v) in map {
        table.insert(short_string(&format!("header key {k:?}"), k)?, json_to_field(v)?);
    }
    Ok(table)
}

/// A received field value as JSON (every AMQP type; never fails).
///
/// Strings that are not UTF-8 are decoded lossily; timestamps become integer
/// seconds; decimals and floats become JSON numbers (NaN/inf: null).
pub fn field_to_json(value: &AMQPValue) -> Value {
    let float = |f: f64| Number::from_f64(f).map_or(Value::Null, Value::Number);
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(field_to_json).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => Value::Object(table_to_json(t)),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into_owned()),
        AMQPValue::Void => Value::Null,
    }
}

/// A received field table as a JSON object.
pub fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table.inner().iter().map(|(k, v)| (k.as_str().to_string(), field_to_json(v))).collect()
}

/// The type tag of a field value, as AMQP 0-9-1 / RabbitMQ write it
/// (`S`, `I`, `L`, `d`, `t`, `V`, `A`, `F`, ...): for tests and diagnostics.
pub fn type_tag(value: &AMQPValue) -> char {
    match value {
        AMQPValue::Boolean(_) => 't',
        AMQPValue::ShortShortInt(_) => 'b',
        AMQPValue::ShortShortUInt(_) => 'B',
        AMQPValue::ShortInt(_) => 's',
        AMQPValue::ShortUInt(_) => 'u',
        AMQPValue::LongInt(_) => 'I',
        AMQPValue::LongUInt(_) => 'i',
        AMQPValue::LongLongInt(_) => 'L',
        AMQPValue::Float(_) => 'f',
        AMQPValue::Double(_) => 'd',
        AMQPValue::DecimalValue(_) => 'D',
        AMQPValue::ShortString(_) => 's',
        AMQPValue::LongString(_) => 'S',
        AMQPValue::FieldArray(_) => 'A',
        AMQPValue::Timestamp(_) => 'T',
        AMQPValue::FieldTable(_) => 'F',
        AMQPValue::ByteArray(_) => 'x',
        AMQPValue::Void => 'V',
    }
}

/// Where a message was delivered from (the `basic.deliver` arguments).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deliver {
    /// The channel's delivery tag.
    pub delivery_tag: u64,
    /// The exchange it was published to (`""` = default exchange).
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Whether the broker delivered it before.
    pub redelivered: bool,
}

/// A received AMQP message as the transport-neutral [`RawMessage`].
pub fn raw_message(deliver: &Deliver, properties: &BasicProperties, body: Vec<u8>) -> RawMessage {
    let short = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_string());
    let headers = properties.headers().as_ref().map(table_to_json).unwrap_or_default();
    RawMessage {
        headers,
        body,
        content_type: short(properties.content_type()),
        content_encoding: short(properties.content_encoding()),
        delivery: DeliveryInfo {
            delivery_tag: Some(deliver.delivery_tag.to_string()),
            queue: None,
            exchange: deliver.exchange.clone(),
            routing_key: deliver.routing_key.clone(),
            priority: *properties.priority(),
            redelivered: deliver.redelivered,
            reply_to: short(properties.reply_to()).filter(|r| !r.is_empty()),
            correlation_id: short(properties.correlation_id()),
        },
    }
}

/// The properties Celery 5.7 publishes a task with: `content_type`,
/// `content_encoding`, `headers`, `delivery_mode`, `priority` (when routed
/// with one), `correlation_id`, `reply_to`, `expiration` (when `expires` is set).
pub fn task_properties(task: &EncodedTask) -> Result<BasicProperties, AmqpEncodeError> {
    let p = &task.properties;
    let text = |k: &str| p.get(k).and_then(Value::as_str);
    let mut props = BasicProperties::default()
        .with_content_type(short_string("content_type", task.content_type())?)
        .with_content_encoding(short_string("content_encoding", task.content_encoding())?)
        .with_headers(json_to_table(&task.headers)?)
        .with_delivery_mode(p.get("delivery_mode").and_then(Value::as_u64).map_or(PERSISTENT, |m| m as u8));
    if let Some(priority) = task.priority {
        props = props.with_priority(priority);
    }
    props = props.with_correlation_id(short_string("correlation_id", text("correlation_id").unwrap_or(&task.id))?);
    if let Some(reply_to) = text("reply_to") {
        props = props.with_reply_to(short_string("reply_to", reply_to)?);
    }
    if let Some(expiration) = text("expiration") {
        props = props.with_expiration(short_string("expiration", expiration)?);
    }
    Ok(props)
}

/// The properties of an `rpc://` result message, as Celery's rpc backend
/// sends them: content type of the result serializer, empty headers,
/// `delivery_mode` 1 (2 with `result_persistent`), `priority` 0,
/// `correlation_id` = the task id.
pub fn result_properties(
    task_id: &str,
    (content_type, content_encoding): (&str, &str),
    persistent: bool,
) -> Result<BasicProperties, AmqpEncodeError> {
    Ok(BasicProperties::default()
        .with_content_type(short_string("content_type", content_type)?)
        .with_content_encoding(short_string("content_encoding", content_encoding)?)
        .with_headers(FieldTable::default())
        .with_delivery_mode(if persistent { PERSISTENT } else { TRANSIENT })
        .with_priority(0)
        .with_correlation_id(short_string("correlation_id", task_id)?))
}

/// The properties kombu publishes a control reply or an event with (see
/// `tests/fixtures/amqp/control_pidbox`, `events`): JSON, its headers,
/// `delivery_mode` 1, `priority` 0.
pub fn outgoing_properties(message: &Outgoing) -> Result<BasicProperties, AmqpEncodeError> {
    let json = Serializer::Json;
    Ok(BasicProperties::default()
        .with_content_type(short_string("content_type", json.content_type())?)
        .with_content_encoding(short_string("content_encoding", json.content_encoding())?)
        .with_headers(json_to_table(&message.headers)?)
        .with_delivery_mode(message.delivery_mode)
        .with_priority(0))
}

/// Celery's `task_default_queue_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueType {
    /// RabbitMQ's classic queue (no `x-queue-type` argument).
    #[default]
    Classic,
    /// A quorum queue (`x-queue-type: quorum`).
    Quorum,
}

/// The arguments of a task queue's `queue.declare`, exactly as a Celery 5.7
/// client declares them: `x-max-priority` (`I`) with
/// `task_queue_max_priority`, `x-queue-type` (`S`) for quorum queues, nothing
/// by default.
pub fn queue_arguments(max_priority: Option<u8>, queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(p) = max_priority {
        args.insert(ShortString::from("x-max-priority"), AMQPValue::LongInt(i32::from(p)));
    }
    if queue_type == QueueType::Quorum {
        args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString(LongString::from("quorum")));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_values_get_py_amqps_type_tags() {
        let tags: Vec<char> =
            [json!("s"), json!(5), json!(-7), json!(1_i64 << 40), json!(2.5), json!(true), json!(null)]
                .iter()
                .map(|v| type_tag(&json_to_field(v).unwrap()))
                .collect();
        assert_eq!(tags, ['S', 'I', 'I', 'L', 'd', 't', 'V']);
        assert_eq!(type_tag(&json_to_field(&json!([1, "a"])).unwrap()), 'A');
        assert_eq!(type_tag(&json_to_field(&json!({"a": 1})).unwrap()), 'F');
        assert_eq!(type_tag(&json_to_field(&json!(i32::MAX)).unwrap()), 'I');
        assert_eq!(type_tag(&json_to_field(&json!(i64::from(i32::MAX) + 1)).unwrap()), 'L');
    }

    #[test]
    fn every_amqp_field_type_decodes_to_json() {
        use lapin::types::{ByteArray, DecimalValue};
        let cases = vec![
            (AMQPValue::ShortShortInt(-1), json!(-1)),
            (AMQPValue::ShortShortUInt(1), json!(1)),
            (AMQPValue::ShortInt(-300), json!(-300)),
            (AMQPValue::ShortUInt(300), json!(300)),
            (AMQPValue::LongUInt(7), json!(7)),
            (AMQPValue::Float(0.5), json!(0.5)),
            (AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 125 }), json!(1.25)),
            (AMQPValue::ShortString("x".into()), json!("x")),
            (AMQPValue::Timestamp(1_700_000_000), json!(1_700_000_000)),
            (AMQPValue::ByteArray(ByteArray::from(b"ab".to_vec())), json!("ab")),
            (AMQPValue::LongString(LongString::from(vec![0xff, b'a'])), json!("\u{fffd}a")),
            (AMQPValue::Double(f64::NAN), Value::Null),
        ];
        for (v, want) in cases {
            assert_eq!(field_to_json(&v), want, "{v:?}");
        }
    }

    #[test]
    fn values_round_trip_through_a_field_table() {
        let headers = json!({"lang": "py", "retries": 0, "timelimit": [30, 20.5], "stamps": {},
                             "big": 4_294_967_296_i64, "ignore_result": false, "shadow": null});
        let table = json_to_table(headers.as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(table_to_json(&table)), headers);
    }

    #[test]
    fn integers_beyond_64_bits_travel_as_their_decimal_text() {
        let v = json!(u64::MAX);
        assert_eq!(field_to_json(&json_to_field(&v).unwrap()), json!(u64::MAX.to_string()));
    }

    #[test]
    fn keys_and_short_strings_longer_than_255_bytes_are_errors_not_panics() {
        let mut m = Map::new();
        m.insert("k".repeat(256), json!(1));
        assert!(matches!(json_to_table(&m), Err(AmqpEncodeError::TooLong { .. })));
        assert!(result_properties(&"x".repeat(300), ("application/json", "utf-8"), false).is_err());
    }

    #[test]
    fn queue_arguments_follow_the_clients_settings() {
        assert!(queue_arguments(None, QueueType::Classic).inner().is_empty());
        let a = queue_arguments(Some(10), QueueType::Quorum);
        assert_eq!(a.inner().get("x-max-priority"), Some(&AMQPValue::LongInt(10)));
        assert_eq!(a.inner().get("x-queue-type"), Some(&AMQPValue::LongString("quorum".into())));
    }

    #[test]
    fn a_delivery_without_reply_to_has_none_and_keeps_its_tag() {
        let d = Deliver { delivery_tag: 42, exchange: String::new(), routing_key: "celery".into(), redelivered: true };
        let raw = raw_message(&d, &BasicProperties::default().with_reply_to("".into()), b"[]".to_vec());
        assert_eq!(raw.delivery.reply_to, None);
        assert_eq!(raw.delivery.delivery_tag.as_deref(), Some("42"));
        assert!(raw.delivery.redelivered);
        assert_eq!(raw.content_type, None);
        assert!(raw.headers.is_empty());
    }
}
