//! The AMQP conversions checked against what Celery 5.7 / py-amqp really sent
//! to RabbitMQ (`tests/fixtures/amqp/`, copied from `shared/celery-wire/amqp/`):
//! every captured task message decodes, re-encodes to the same header values
//! *with the same type tags* and the same properties, and the worker's `rpc://`
//! result messages match the captured ones byte for byte (body) and value for
//! value (properties). A missing fixture fails the test.

use std::path::PathBuf;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Value};

use super::amqp::{
    Deliver, QueueType, field_to_json, queue_arguments, raw_message, result_properties, task_properties, type_tag,
};
use super::content::{AcceptContent, Serializer};
use super::message::TaskMessage;
use super::result::ResultMeta;

fn fixture(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/amqp").join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {} is missing: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {} is not JSON: {e}", path.display()))
}

fn fixtures_in(dir: &str) -> Vec<(String, Value)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/amqp").join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("fixture dir {} is missing: {e}", path.display()))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), fixture(&format!("{dir}/{n}")))).collect()
}

/// `{"type": "S", "value": ...}` as the AMQP value it was on the wire.
fn typed(v: &Value) -> AMQPValue {
    let value = &v["value"];
    match v["type"].as_str().expect("type tag") {
        "S" => AMQPValue::LongString(LongString::from(value.as_str().expect("S").as_bytes())),
        "I" => AMQPValue::LongInt(value.as_i64().expect("I") as i32),
        "L" => AMQPValue::LongLongInt(value.as_i64().expect("L")),
        "d" => AMQPValue::Double(value.as_f64().expect("d")),
        "t" => AMQPValue::Boolean(value.as_bool().expect("t")),
        "V" => AMQPValue::Void,
        "A" => {
            AMQPValue::FieldArray(FieldArray::from(value.as_array().expect("A").iter().map(typed).collect::<Vec<_>>()))
        }
        "F" => AMQPValue::FieldTable(typed_table(value)),
        other => panic!("type tag {other} not in the captures' vocabulary"),
    }
}

fn typed_table(v: &Value) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in v.as_object().expect("table") {
        t.insert(ShortString::from(k.as_str()), typed(v));
    }
    t
}

/// Every (path, tag) pair of a field table, nested values included.
fn tags(prefix: &str, v: &AMQPValue, out: &mut Vec<(String, char)>) {
    out.push((prefix.to_string(), type_tag(v)));
    match v {
        AMQPValue::FieldArray(a) => {
            for (i, x) in a.as_slice().iter().enumerate() {
                tags(&format!("{prefix}[{i}]"), x, out);
            }
        }
        AMQPValue::FieldTable(t) => {
            for (k, x) in t.inner() {
                tags(&format!("{prefix}.{k}"), x, out);
            }
        }
        _ => {}
    }
}

fn table_tags(t: &FieldTable) -> Vec<(String, char)> {
    let mut out = Vec::new();
    for (k, v) in t.inner() {
        tags(k.as_str(), v, &mut out);
    }
    out
}

/// The captured properties as lapin's.
fn captured_properties(doc: &Value) -> BasicProperties {
    let p = &doc["properties_typed"];
    let mut props = BasicProperties::default();
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(ShortString::from);
    if let Some(v) = s("content_type") {
        props = props.with_content_type(v);
    }
    if let Some(v) = s("content_encoding") {
        props = props.with_content_encoding(v);
    }
    if let Some(h) = p.get("headers") {
        props = props.with_headers(typed_table(h));
    }
    if let Some(m) = p.get("delivery_mode").and_then(Value::as_u64) {
        props = props.with_delivery_mode(m as u8);
    }
    if let Some(m) = p.get("priority").and_then(Value::as_u64) {
        props = props.with_priority(m as u8);
    }
    if let Some(v) = s("correlation_id") {
        props = props.with_correlation_id(v);
    }
    if let Some(v) = s("reply_to") {
        props = props.with_reply_to(v);
    }
    if let Some(v) = s("expiration") {
        props = props.with_expiration(v);
    }
    props
}

fn deliver(doc: &Value) -> Deliver {
    Deliver {
        delivery_tag: 1,
        exchange: doc["method_args"]["exchange"].as_str().unwrap_or("").to_string(),
        routing_key: doc["method_args"]["routing_key"].as_str().unwrap_or("").to_string(),
        redelivered: false,
    }
}

fn task_captures() -> Vec<(String, Value)> {
    let mut all = vec![("task_add_4_4.json".to_string(), fixture("task_add_4_4.json"))];
    all.extend(fixtures_in("task_messages"));
    all
}

#[test]
fn every_captured_task_message_decodes_to_its_headers_and_body() {
    for (name, doc) in task_captures() {
        let props = captured_properties(&doc);
        let raw = raw_message(&deliver(&doc), &props, doc["body_raw"].as_str().unwrap().as_bytes().to_vec());
        let msg = TaskMessage::decode(raw, &AcceptContent::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let plain = &doc["properties"];
        assert_eq!(Value::Object(msg.headers.clone()), plain["headers"], "{name}: headers");
        assert_eq!(msg.id, plain["headers"]["id"].as_str().unwrap(), "{name}");
        assert_eq!(msg.task, plain["headers"]["task"].as_str().unwrap(), "{name}");
        assert_eq!(Value::Array(msg.args.clone()), doc["body"][0], "{name}: args");
        assert_eq!(Value::Object(msg.kwargs.clone()), doc["body"][1], "{name}: kwargs");
        assert_eq!(msg.delivery.reply_to.as_deref(), plain["reply_to"].as_str(), "{name}: reply_to");
        assert_eq!(msg.delivery.priority.map(u64::from), plain["priority"].as_u64(), "{name}: priority");
        assert_eq!(msg.delivery.routing_key, doc["method_args"]["routing_key"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn a_decoded_task_message_re_encodes_with_celerys_values_type_tags_and_properties() {
    for (name, doc) in task_captures() {
        let props = captured_properties(&doc);
        let raw = raw_message(&deliver(&doc), &props, doc["body_raw"].as_str().unwrap().as_bytes().to_vec());
        let msg = TaskMessage::decode(raw, &AcceptContent::default()).unwrap();
        let mut task = msg.to_new_task();
        if let Some(ms) = doc["properties"]["expiration"].as_str() {
            // Celery computes it from `expires - now` when publishing; pin it.
            task.options.expiration_ms = ms.parse().ok();
        }
        let encoded = task.encode().unwrap();
        let ours = task_properties(&encoded).unwrap();
        // Headers: same values and the same py-amqp type tag at every depth.
        let want = props.headers().clone().unwrap();
        let got = ours.headers().clone().unwrap();
        assert_eq!(table_tags(&got), table_tags(&want), "{name}: header type tags");
        let as_json =
            |t: &FieldTable| Value::Object(t.inner().iter().map(|(k, v)| (k.to_string(), field_to_json(v))).collect());
        assert_eq!(as_json(&got), as_json(&want), "{name}: header values");
        // Properties.
        assert_eq!(ours.content_type(), props.content_type(), "{name}: content_type");
        assert_eq!(ours.content_encoding(), props.content_encoding(), "{name}: content_encoding");
        assert_eq!(ours.delivery_mode(), props.delivery_mode(), "{name}: delivery_mode");
        assert_eq!(ours.priority(), props.priority(), "{name}: priority");
        assert_eq!(ours.correlation_id(), props.correlation_id(), "{name}: correlation_id");
        assert_eq!(ours.reply_to(), props.reply_to(), "{name}: reply_to");
        assert_eq!(ours.expiration(), props.expiration(), "{name}: expiration");
        // Body, byte for byte.
        assert_eq!(String::from_utf8(encoded.body).unwrap(), doc["body_raw"].as_str().unwrap(), "{name}: body");
    }
}

#[test]
fn rpc_result_messages_match_the_captured_ones_byte_for_byte() {
    let results: Vec<_> =
        fixtures_in("results_rpc").into_iter().filter(|(n, _)| !n.starts_with("client_acceptance")).collect();
    assert!(results.len() >= 5, "expected the rpc result captures");
    for (name, doc) in results {
        let body = doc["body_raw"].as_str().unwrap();
        let value: Value = serde_json::from_str(body).unwrap();
        let meta = ResultMeta::from_value(&value).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = meta.encode(Serializer::Json).unwrap();
        assert_eq!(String::from_utf8(ours).unwrap(), body, "{name}: body");
        let props = result_properties(&meta.task_id, ("application/json", "utf-8"), false).unwrap();
        let want = captured_properties(&doc);
        assert_eq!(props, want, "{name}: properties");
        assert_eq!(doc["method_args"]["exchange"], "", "{name}: results go to the default exchange");
        assert_eq!(doc["property_flags"], "0xfc00", "{name}");
    }
}

#[test]
fn result_persistent_makes_rpc_results_delivery_mode_2() {
    let p = result_properties("id", ("application/json", "utf-8"), true).unwrap();
    assert_eq!(*p.delivery_mode(), Some(2));
}

#[test]
fn queue_arguments_are_the_ones_a_celery_client_declares() {
    let doc = fixture("declarations_priority_and_quorum.json");
    let declared = |queue: &str| -> FieldTable {
        let d = doc["declarations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["method"] == "queue.declare" && d["args"]["queue"] == queue)
            .unwrap_or_else(|| panic!("no queue.declare of {queue}"));
        assert_eq!(d["args"]["durable"], true);
        assert_eq!(d["args"]["auto_delete"], false);
        assert_eq!(d["args"]["exclusive"], false);
        typed_table(&d["args"]["arguments"])
    };
    assert_eq!(queue_arguments(Some(10), QueueType::Classic), declared("prio_q"));
    assert_eq!(queue_arguments(None, QueueType::Quorum), declared("qq"));
    let topology = fixture("topology_declared.json");
    assert_eq!(topology["queues"]["celery"]["arguments"], Value::Object(Map::new()));
    assert!(queue_arguments(None, QueueType::Classic).inner().is_empty());
    // Each queue's exchange is named after it: direct and durable.
    for q in ["celery", "other"] {
        assert_eq!(topology["exchanges"][q]["type"], "direct");
        assert_eq!(topology["exchanges"][q]["durable"], true);
    }
}
