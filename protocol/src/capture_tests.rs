//! Tests against the real bytes captured from Celery 5.7 / kombu 5.7,
//! vendored in `tests/fixtures/` (copied from the workplace's
//! `shared/celery-wire/`, same layout, so the repository stands alone). A
//! missing capture file fails the test: the captures are the specification.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::content::{AcceptContent, Serializer};
use super::envelope::Envelope;
use super::error::{Partial, ProtocolError};
use super::exception::ExceptionInfo;
use super::message::{DeliveryInfo, Embed, NewTask, ProtocolVersion, RawMessage, TaskMessage, TimeLimit};
use super::pyjson;
use super::result::{ResultMeta, TaskState, child_tuple, taskset_meta_value};
use super::time::parse_datetime;

fn wire_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel)
}

fn load(rel: &str) -> Value {
    let path = wire_path(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("capture {} is missing or unreadable: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("capture {} is not JSON: {e}", path.display()))
}

/// One captured list item: the LPUSHed bytes plus the capture's own decoding.
struct Item {
    file: String,
    queue: String,
    raw: String,
    decoded_body: Value,
}

fn variant_items(rel: &str) -> Vec<Item> {
    let doc = load(rel);
    let mut out = Vec::new();
    let keys = doc["db0_keys"].as_object().expect("db0_keys");
    for (queue, entry) in keys {
        if entry["type"] != "list" {
            continue;
        }
        for item in entry["items"].as_array().expect("items") {
            out.push(Item {
                file: rel.to_owned(),
                queue: queue.clone(),
                raw: item["raw_bytes"].as_str().expect("raw_bytes").to_owned(),
                decoded_body: item["decoded_body"].clone(),
            });
        }
    }
    assert!(!out.is_empty(), "{rel} has no list items");
    out
}

const VARIANTS: &[&str] = &[
    "chain",
    "chain3",
    "chord",
    "countdown",
    "eta",
    "expires",
    "group",
    "kwargs-shadow",
    "link",
    "msgpack",
    "priority",
    "protocol1",
    "queue-lowpriority",
];

fn all_variant_items() -> Vec<Item> {
    let mut items = Vec::new();
    for v in VARIANTS {
        items.extend(variant_items(&format!("redis/02-message-variants/{v}.json")));
    }
    items
}

fn decode(raw: &str) -> (Envelope, TaskMessage) {
    let env = Envelope::parse(raw.as_bytes()).expect("envelope");
    let msg = TaskMessage::from_envelope(&env, &AcceptContent::all()).expect("task message");
    (env, msg)
}

fn dt(s: &str) -> DateTime<Utc> {
    parse_datetime(s).expect("timestamp")
}

// The 01 capture has a different layout (a single `item`); give it the same shape.
fn add_delay() -> Item {
    let doc = load("redis/01-task-message/add-delay-4-4.json");
    Item {
        file: "add-delay-4-4".into(),
        queue: doc["redis_key"].as_str().expect("redis_key").into(),
        raw: doc["item"]["raw_bytes"].as_str().expect("raw_bytes").into(),
        decoded_body: doc["item"]["decoded_body"].clone(),
    }
}

#[test]
fn add_delay_4_4_decodes() {
    let item = add_delay();
    let (env, m) = decode(&item.raw);
    assert_eq!(m.id, "588ccb57-48d8-4922-aae9-4f1fe979a189");
    assert_eq!(m.task, "tasks.add");
    assert_eq!(m.args, vec![json!(4), json!(4)]);
    assert!(m.kwargs.is_empty());
    assert_eq!(m.embed, Embed::default());
    assert_eq!((m.eta, m.expires, m.retries), (None, None, 0));
    assert_eq!(m.timelimit, TimeLimit::default());
    assert_eq!(m.root_id.as_deref(), Some(m.id.as_str()));
    assert_eq!((m.parent_id.as_deref(), m.group.as_deref(), m.group_index), (None, None, None));
    assert!(!m.ignore_result);
    assert_eq!(m.shadow, None);
    assert_eq!(m.argsrepr.as_deref(), Some("(4, 4)"));
    assert_eq!(m.kwargsrepr.as_deref(), Some("{}"));
    assert_eq!(m.origin.as_deref(), Some("gen4978@vm"));
    assert_eq!(m.content_type, "application/json");
    assert_eq!(m.serializer, Serializer::Json);
    assert_eq!(m.protocol, ProtocolVersion::V2);
    assert_eq!(m.headers.len(), 19);
    assert_eq!(m.headers["stamps"], json!({}));
    assert_eq!(
        m.delivery,
        DeliveryInfo {
            delivery_tag: Some("97145b7e-cd6b-49a8-96bd-0277cbb019a8".into()),
            queue: None,
            exchange: String::new(),
            routing_key: "celery".into(),
            priority: Some(0),
            redelivered: false,
            reply_to: Some("86e990b6-8f1a-3ec0-ae70-8b39a3144ac4".into()),
            correlation_id: Some(m.id.clone()),
        }
    );
    assert_eq!(item.queue, "celery");
    assert_eq!(env.delivery_tag(), Some("97145b7e-cd6b-49a8-96bd-0277cbb019a8"));
    assert_eq!(env.body_encoding(), Some("base64"));
    // The body the capture decoded with Python.
    assert_eq!(Value::Array(m.args.clone()), item.decoded_body[0]);
    assert_eq!(m.embed.to_value(), item.decoded_body[2]);
}

#[test]
fn add_delay_4_4_encodes_byte_for_byte() {
    let item = add_delay();
    let mut t = NewTask::new("tasks.add", vec![json!(4), json!(4)], Map::new());
    t.id = "588ccb57-48d8-4922-aae9-4f1fe979a189".into();
    t.options.origin = Some("gen4978@vm".into());
    t.options.reply_to = Some("86e990b6-8f1a-3ec0-ae70-8b39a3144ac4".into());
    let enc = t.encode().expect("encode");
    let env = enc.to_envelope(Some("97145b7e-cd6b-49a8-96bd-0277cbb019a8".into()));
    assert_eq!(String::from_utf8(env.to_bytes()).expect("utf8"), item.raw);

    // The pieces an AMQP publisher uses, compared with the AMQP capture of the same call.
    let amqp = load("amqp/task_add_4_4.json");
    let amqp_headers = amqp["properties"]["headers"].as_object().expect("headers");
    let ours: Vec<&String> = enc.headers.keys().collect();
    let theirs: Vec<&String> = amqp_headers.keys().collect();
    assert_eq!(ours, theirs, "header key order");
    assert_eq!(enc.body, amqp["body_raw"].as_str().expect("body_raw").as_bytes());
    assert_eq!(enc.content_type(), "application/json");
    assert_eq!(enc.content_encoding(), "utf-8");
}

#[test]
fn header_key_order_matches_captures() {
    let item = add_delay();
    let (_, m) = decode(&item.raw);
    let t = m.to_new_task();
    let ours: Vec<String> = t.headers().keys().cloned().collect();
    let theirs: Vec<String> = m.headers.keys().cloned().collect();
    assert_eq!(ours, theirs);
    assert_eq!(ours, super::message::STANDARD_HEADERS);
}

/// Every captured envelope survives parse → serialise unchanged, decodes, and
/// agrees with the Python-decoded body in the capture.
#[test]
fn every_variant_roundtrips_and_decodes() {
    let mut items = all_variant_items();
    items.push(add_delay());
    assert!(items.len() >= 20, "expected all captured messages, got {}", items.len());
    for item in &items {
        let (env, m) = decode(&item.raw);
        let ctx = format!("{} / {}", item.file, item.queue);
        assert_eq!(String::from_utf8(env.to_bytes()).expect("utf8"), item.raw, "envelope bytes {ctx}");
        match m.protocol {
            ProtocolVersion::V2 => {
                let body = item.decoded_body.as_array().expect("v2 body");
                assert_eq!(Value::Array(m.args.clone()), body[0], "{ctx}");
                assert_eq!(Value::Object(m.kwargs.clone()), body[1], "{ctx}");
                assert_eq!(m.embed.to_value(), body[2], "{ctx}");
                assert_eq!(m.headers, env.headers, "{ctx}");
            }
            ProtocolVersion::V1 => {
                assert_eq!(Value::Array(m.args.clone()), item.decoded_body["args"], "{ctx}");
                assert_eq!(m.id, item.decoded_body["id"], "{ctx}");
            }
        }
    }
}

/// Decode → `to_new_task` → encode gives the captured bytes back (v2 only;
/// v1 is read but never written).
#[test]
fn every_v2_variant_reencodes_byte_for_byte() {
    let mut items = all_variant_items();
    items.push(add_delay());
    let mut checked = 0;
    for item in &items {
        let (env, m) = decode(&item.raw);
        if m.protocol != ProtocolVersion::V2 {
            continue;
        }
        let mut t = m.to_new_task();
        t.options.expiration_ms = env.properties.get("expiration").and_then(Value::as_str).and_then(|s| s.parse().ok());
        let out = t.encode().expect("encode").to_envelope(env.delivery_tag().map(str::to_owned));
        assert_eq!(
            String::from_utf8(out.to_bytes()).expect("utf8"),
            item.raw,
            "re-encoded {} / {}",
            item.file,
            item.queue
        );
        checked += 1;
    }
    assert!(checked >= 19, "{checked}");
}

#[test]
fn countdown_and_eta() {
    let (_, m) = decode(&variant_items("redis/02-message-variants/countdown.json")[0].raw);
    assert_eq!(m.eta, Some(dt("2026-11-27T05:10:57.996222+00:00")));
    let (_, m) = decode(&variant_items("redis/02-message-variants/eta.json")[0].raw);
    assert_eq!(m.eta, Some(dt("2030-01-02T03:04:05+00:00")));
    assert_eq!(m.headers["eta"], json!("2030-01-02T03:04:05+00:00"));
}

#[test]
fn expires_and_expiration() {
    let item = &variant_items("redis/02-message-variants/expires.json")[0];
    let (env, m) = decode(&item.raw);
    let expires = dt("2026-11-27T05:12:03.307704+00:00");
    assert_eq!(m.expires, Some(expires));
    assert!(m.is_expired(expires));
    assert_eq!(env.properties["expiration"], json!("120000"));
    // Built from scratch: `expiration` sits between delivery_mode and delivery_info.
    let mut t = NewTask::new("tasks.add", vec![json!(4), json!(4)], Map::new());
    t.id = m.id.clone();
    t.options.origin = m.origin.clone();
    t.options.reply_to = m.delivery.reply_to.clone();
    t.options.expires = Some(expires);
    t.options.expiration_ms = Some(120_000);
    let out = t.encode().expect("encode").to_envelope(env.delivery_tag().map(str::to_owned));
    assert_eq!(String::from_utf8(out.to_bytes()).expect("utf8"), item.raw);
}

#[test]
fn priority_queue_and_routes() {
    let items = variant_items("redis/02-message-variants/priority.json");
    let mut seen: Vec<(String, Option<u8>)> =
        items.iter().map(|i| (i.queue.clone(), decode(&i.raw).1.delivery.priority)).collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("celery".into(), Some(0)),
            ("celery\u{6}\u{16}3".into(), Some(5)),
            ("celery\u{6}\u{16}9".into(), Some(9))
        ]
    );
    for item in variant_items("redis/02-message-variants/queue-lowpriority.json") {
        let (_, m) = decode(&item.raw);
        assert_eq!((m.delivery.exchange.as_str(), m.delivery.routing_key.as_str()), ("", "low-priority"));
    }
}

#[test]
fn link_chain_group_chord() {
    let (_, m) = decode(&variant_items("redis/02-message-variants/link.json")[0].raw);
    let cb = m.embed.callbacks.as_ref().expect("callbacks");
    assert_eq!(cb[0]["task"], "tasks.add");
    assert_eq!(cb[0]["args"], json!([10]));
    assert_eq!(m.embed.errbacks.as_ref().expect("errbacks")[0]["task"], "tasks.on_error");

    let (_, m) = decode(&variant_items("redis/02-message-variants/chain3.json")[0].raw);
    let chain = m.embed.chain.as_ref().expect("chain");
    assert_eq!(chain.len(), 2);
    // Reversed: the next step is the last element.
    assert_eq!(chain[1]["args"], json!([2]));
    assert_eq!(chain[0]["immutable"], json!(true));
    assert_eq!(chain[0]["options"]["task_id"], "7d7d7fb3-8e2b-4fe3-a2aa-3f6af3fbfebc");

    let items = variant_items("redis/02-message-variants/group.json");
    let mut idx: Vec<u64> = items.iter().map(|i| decode(&i.raw).1.group_index.expect("group_index")).collect();
    idx.sort_unstable();
    assert_eq!(idx, [0, 1, 2]);
    for i in &items {
        assert_eq!(decode(&i.raw).1.group.as_deref(), Some("a15099f1-ae92-4c6a-9738-60bb66195047"));
    }

    for i in variant_items("redis/02-message-variants/chord.json") {
        let (_, m) = decode(&i.raw);
        let chord = m.embed.chord.as_ref().expect("chord");
        assert_eq!(chord["task"], "tasks.tsum");
        assert_eq!(chord["options"]["group_id"], json!(m.group));
    }
}

#[test]
fn msgpack_body() {
    let item = &variant_items("redis/02-message-variants/msgpack.json")[0];
    let (env, m) = decode(&item.raw);
    assert_eq!(env.content_encoding.as_deref(), Some("binary"));
    assert_eq!(m.serializer, Serializer::Msgpack);
    assert_eq!(m.content_type, "application/x-msgpack");
    assert_eq!(m.args, vec![json!(4), json!(4)]);
    assert_eq!(m.embed.to_value(), item.decoded_body[2]);
    // Our msgpack encoding of the same body is byte-identical to Python's.
    let body = Serializer::Msgpack.encode(&item.decoded_body).expect("encode");
    assert_eq!(body, env.decoded_body().expect("body"));
    // A JSON-only worker refuses it before decoding, but knows which task it was.
    let err = TaskMessage::from_envelope(&env, &AcceptContent::default()).expect_err("refused");
    assert!(matches!(err, ProtocolError::ContentDisallowed { .. }), "{err}");
    assert_eq!(err.task_id(), Some("99e84ad9-713f-4652-ae78-cfea2c064f03"));
    assert_eq!(err.task_name(), Some("tasks.add"));
}

#[test]
fn protocol1_body() {
    let (env, m) = decode(&variant_items("redis/02-message-variants/protocol1.json")[0].raw);
    assert!(env.headers.is_empty());
    assert_eq!(m.protocol, ProtocolVersion::V1);
    assert_eq!(m.id, "c31203f7-a18a-4d2c-a87a-7528a04f6e89");
    assert_eq!(m.task, "tasks.add");
    assert_eq!(m.args, vec![json!(4), json!(4)]);
    assert_eq!(m.retries, 0);
    assert_eq!(m.timelimit, TimeLimit::default());
    assert_eq!(m.embed, Embed::default());
    // Synthesised headers follow Celery's hybrid_to_proto2.
    assert_eq!(m.headers["task"], "tasks.add");
    assert_eq!(m.headers["id"], json!(m.id));
    assert!(m.custom_headers().is_empty());
    // It re-encodes as protocol 2.
    let enc = m.to_new_task().encode().expect("encode");
    assert_eq!(enc.headers["task"], "tasks.add");
    assert_eq!(enc.headers["root_id"], json!(m.id));
}

#[test]
fn kwargs_shadow_timelimits_custom_header() {
    let item = &variant_items("redis/02-message-variants/kwargs-shadow.json")[0];
    let (env, m) = decode(&item.raw);
    assert_eq!(m.kwargs, json!({"x": 1, "y": 2}).as_object().cloned().expect("obj"));
    assert!(m.args.is_empty());
    assert_eq!(m.shadow.as_deref(), Some("myname"));
    assert_eq!(m.display_name(), "myname");
    assert_eq!(m.timelimit, TimeLimit { hard: Some(30.0), soft: Some(20.0) });
    assert_eq!(m.kwargsrepr.as_deref(), Some("{'x': 1, 'y': 2}"));
    assert_eq!(m.custom_headers(), json!({"custom": "hdr"}).as_object().cloned().expect("obj"));

    let mut t = NewTask::new("tasks.add", vec![], m.kwargs.clone());
    t.id = m.id.clone();
    t.options.origin = m.origin.clone();
    t.options.reply_to = m.delivery.reply_to.clone();
    t.options.shadow = Some("myname".into());
    t.options.timelimit = TimeLimit { hard: Some(30.0), soft: Some(20.0) };
    t.options.headers.insert("custom".into(), json!("hdr"));
    let out = t.encode().expect("encode").to_envelope(env.delivery_tag().map(str::to_owned));
    assert_eq!(String::from_utf8(out.to_bytes()).expect("utf8"), item.raw);
}

#[test]
fn retry_republish_with_property_origin() {
    // The retry publish in 03-result-backend/retry.monitor.txt: same id,
    // retries+1, eta, parent_id = own id, and `origin` in the properties.
    let decoded = load("redis/raw/03-retry.decoded.json");
    let pushes: Vec<String> = decoded
        .as_array()
        .expect("list")
        .iter()
        .filter(|e| e["cmd"][0] == "LPUSH" && e["cmd"][1] == "celery")
        .map(|e| e["cmd"][2].as_str().expect("str").to_owned())
        .collect();
    let (_, first) = decode(&pushes[0]);
    let (env2, second) = decode(&pushes[1]);
    assert_eq!(second.id, first.id);
    assert_eq!(second.retries, 1);
    assert_eq!(second.parent_id.as_deref(), Some(first.id.as_str()));
    assert_eq!(env2.properties["origin"], json!("gen8908@vm"));

    let mut t = first.to_new_task();
    t.options.retries = 1;
    t.options.eta = second.eta;
    t.options.parent_id = Some(first.id.clone());
    t.options.property_origin = Some("gen8908@vm".into());
    let out = t.encode().expect("encode").to_envelope(env2.delivery_tag().map(str::to_owned));
    assert_eq!(String::from_utf8(out.to_bytes()).expect("utf8"), pushes[1]);
}

#[test]
fn restore_unacked_like_kombu() {
    // Warm shutdown: HSET unacked <tag> [envelope, "", "celery"], then RPUSH of
    // the envelope with the redelivered marks.
    let decoded = load("redis/raw/07-worker-warm-shutdown-with-reserved.decoded.json");
    let cmds: Vec<&Value> = decoded.as_array().expect("list").iter().map(|e| &e["cmd"]).collect();
    let tag = "282b9e51-9ccf-428f-9f16-c04817f147aa";
    let lpush =
        cmds.iter().filter(|c| c[0] == "LPUSH").filter_map(|c| c[2].as_str()).find(|s| s.contains(tag)).expect("LPUSH");
    let hset = cmds
        .iter()
        .find(|c| c[0] == "HSET" && c[1] == "unacked" && c[2] == tag)
        .and_then(|c| c[3].as_str())
        .expect("HSET");
    let rpush = cmds.iter().find(|c| c[0] == "RPUSH").and_then(|c| c[2].as_str()).expect("RPUSH");

    let env = Envelope::parse(lpush.as_bytes()).expect("envelope");
    assert_eq!(String::from_utf8(env.to_unacked_entry()).expect("utf8"), hset);

    let (mut back, exchange, routing_key) = Envelope::parse_unacked_entry(hset.as_bytes()).expect("entry");
    assert_eq!((exchange.as_str(), routing_key.as_str()), ("", "celery"));
    back.mark_redelivered();
    assert_eq!(String::from_utf8(back.to_bytes()).expect("utf8"), rpush);
    let m = TaskMessage::from_envelope(&back, &AcceptContent::default()).expect("decode");
    assert!(m.delivery.redelivered);
    assert!(m.custom_headers().is_empty(), "redelivered is not a custom header");
}

#[test]
fn worker_published_callbacks_and_chain_steps() {
    // Messages the Python worker itself published (link callback, chain
    // steps, old-style errback in a one-element group).
    for file in ["redis/raw/10-link-run.decoded.json", "redis/raw/12-errback-oldstyle-noexpire.decoded.json"] {
        let decoded = load(file);
        for e in decoded.as_array().expect("list") {
            if e["cmd"][0] != "LPUSH" || e["cmd"][1] != "celery" {
                continue;
            }
            let raw = e["cmd"][2].as_str().expect("str");
            let (env, m) = decode(raw);
            let out = m.to_new_task().encode().expect("encode").to_envelope(env.delivery_tag().map(str::to_owned));
            assert_eq!(String::from_utf8(out.to_bytes()).expect("utf8"), raw, "{file}");
        }
    }
}

#[test]
fn foreign_producer_minimal_messages() {
    // The hand-made messages of 07-foreign-worker-tests/16 (tools/minimal_task_msg_test.py).
    let emb = json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null});
    let props = json!({"body_encoding": "base64", "delivery_tag": "t", "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0});
    let envelope = |headers: Value, body: Value, props: Value| -> Envelope {
        let body = pyjson::to_vec(&body);
        Envelope::new(
            &body,
            "application/json",
            "utf-8",
            headers.as_object().cloned().expect("obj"),
            props.as_object().cloned().expect("obj"),
        )
    };
    let accept = AcceptContent::default();
    let h = json!({"task": "tasks.add", "id": "tid"});
    // A: full minimal message.
    let m =
        TaskMessage::from_envelope(&envelope(h.clone(), json!([[2, 3], {}, emb]), props.clone()), &accept).expect("A");
    assert_eq!(m.args, vec![json!(2), json!(3)]);
    // B: 2-element body (kills a Python worker): an error that names the task.
    let err =
        TaskMessage::from_envelope(&envelope(h.clone(), json!([[2, 3], {}]), props.clone()), &accept).expect_err("B");
    assert!(matches!(err, ProtocolError::BodyShape { .. }));
    assert_eq!(err.partial(), Some(&Partial { id: Some("tid".into()), task: Some("tasks.add".into()) }));
    // C: embed {}.
    assert!(TaskMessage::from_envelope(&envelope(h.clone(), json!([[2, 3], {}, {}]), props.clone()), &accept).is_ok());
    // D/E: no delivery_tag / delivery_info: decodable, the broker decides what to do.
    let mut p = props.clone();
    p.as_object_mut().expect("obj").shift_remove("delivery_tag");
    let m = TaskMessage::from_envelope(&envelope(h.clone(), json!([[2, 3], {}, emb]), p), &accept).expect("D");
    assert_eq!(m.delivery.delivery_tag, None);
    let mut p = props.clone();
    p.as_object_mut().expect("obj").shift_remove("delivery_info");
    let m = TaskMessage::from_envelope(&envelope(h.clone(), json!([[2, 3], {}, emb]), p), &accept).expect("E");
    assert_eq!(m.delivery.routing_key, "");
    // F: foreign callbacks.
    let f = json!([[2, 3], {}, {"callbacks": [{"task": "tasks.add", "args": [100], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}], "errbacks": null, "chain": null, "chord": null}]);
    let m = TaskMessage::from_envelope(&envelope(h.clone(), f, props.clone()), &accept).expect("F");
    assert_eq!(m.embed.callbacks.as_ref().map(Vec::len), Some(1));
    // G: no id at all.
    let err = TaskMessage::from_envelope(
        &envelope(json!({"task": "tasks.add"}), json!([[2, 3], {}, emb]), props.clone()),
        &accept,
    )
    .expect_err("G");
    assert!(matches!(err, ProtocolError::MissingField { field: "id", .. }));
    assert_eq!(err.task_name(), Some("tasks.add"));
    // H: protocol-1 dict with empty headers.
    let m = TaskMessage::from_envelope(
        &envelope(json!({}), json!({"task": "tasks.add", "id": "tid", "args": [2, 3], "kwargs": {}}), props),
        &accept,
    )
    .expect("H");
    assert_eq!((m.protocol, m.id.as_str()), (ProtocolVersion::V1, "tid"));
}

#[test]
fn malformed_redis_inputs() {
    let item = add_delay();
    let accept = AcceptContent::default();
    // Bad JSON envelope.
    assert!(matches!(Envelope::parse(&item.raw.as_bytes()[..40]), Err(ProtocolError::EnvelopeJson(_))));
    // Bad base64: the id and name survive.
    let mut env = Envelope::parse(item.raw.as_bytes()).expect("env");
    env.body = "%%%".into();
    let err = TaskMessage::from_envelope(&env, &accept).expect_err("base64");
    assert!(matches!(err, ProtocolError::BadBase64 { .. }));
    assert_eq!(err.task_id(), Some("588ccb57-48d8-4922-aae9-4f1fe979a189"));
    // Pickle is refused even when configured; id and name are kept.
    let mut env = Envelope::parse(item.raw.as_bytes()).expect("env");
    env.content_type = Some("application/x-python-serialize".into());
    env.content_encoding = Some("binary".into());
    let err = TaskMessage::from_envelope(&env, &AcceptContent::new(["json", "pickle"])).expect_err("pickle");
    assert!(
        matches!(&err, ProtocolError::ContentDisallowed { content_type, .. } if content_type == "application/x-python-serialize")
    );
    assert_eq!(err.task_id(), Some("588ccb57-48d8-4922-aae9-4f1fe979a189"));
    assert_eq!(err.task_name(), Some("tasks.add"));
    // Missing headers entirely with a v2 body: no task name, id from correlation_id.
    let mut env = Envelope::parse(item.raw.as_bytes()).expect("env");
    env.headers = Map::new();
    let err = TaskMessage::from_envelope(&env, &accept).expect_err("no headers");
    assert!(matches!(err, ProtocolError::MissingField { field: "task", .. }), "{err}");
    assert_eq!(err.task_id(), Some("588ccb57-48d8-4922-aae9-4f1fe979a189"));
    // Body that is valid base64 but not JSON.
    let mut env = Envelope::parse(item.raw.as_bytes()).expect("env");
    env.body = "bm90IGpzb24=".into();
    assert!(matches!(TaskMessage::from_envelope(&env, &accept), Err(ProtocolError::BodyDecode { .. })));
}

#[test]
fn amqp_messages_decode_from_properties() {
    // AMQP carries the same headers and body as frame properties: build a
    // RawMessage without any kombu envelope.
    let dir = wire_path("amqp/task_messages");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    assert!(names.len() >= 10);
    for path in names {
        let rel = format!("amqp/task_messages/{}", path.file_name().and_then(|n| n.to_str()).expect("name"));
        let doc = load(&rel);
        let props = &doc["properties"];
        let raw = RawMessage {
            headers: props["headers"].as_object().cloned().expect("headers"),
            body: doc["body_raw"].as_str().expect("body_raw").as_bytes().to_vec(),
            content_type: props["content_type"].as_str().map(str::to_owned),
            content_encoding: props["content_encoding"].as_str().map(str::to_owned),
            delivery: DeliveryInfo {
                delivery_tag: Some("1".into()),
                queue: None,
                exchange: doc["method_args"]["exchange"].as_str().unwrap_or("").to_owned(),
                routing_key: doc["method_args"]["routing_key"].as_str().unwrap_or("").to_owned(),
                priority: props["priority"].as_u64().and_then(|p| u8::try_from(p).ok()),
                redelivered: false,
                reply_to: props["reply_to"].as_str().map(str::to_owned),
                correlation_id: props["correlation_id"].as_str().map(str::to_owned),
            },
        };
        let m = TaskMessage::decode(raw, &AcceptContent::default()).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(m.id, props["correlation_id"], "{rel}");
        // Re-encoding gives the same header map and body bytes.
        let enc = m.to_new_task().encode().expect("encode");
        assert_eq!(Value::Object(enc.headers.clone()), props["headers"], "{rel}");
        assert_eq!(enc.body, doc["body_raw"].as_str().expect("body").as_bytes(), "{rel}");
        // `expiration` is recomputed from `expires`, so only its presence can match.
        assert_eq!(enc.properties.contains_key("expiration"), props.get("expiration").is_some(), "{rel}");
        if rel.ends_with("timelimit_30_soft20.5.json") {
            assert_eq!(m.timelimit, TimeLimit { hard: Some(30.0), soft: Some(20.5) });
        }
        if rel.ends_with("bigint_args.json") {
            assert_eq!(m.args, vec![json!(4611686018427387904u64), json!(4611686018427387904u64)]);
        }
        if rel.ends_with("chain_step2_published_by_worker.json") {
            assert_eq!(m.embed.chain, Some(vec![]));
            assert_eq!(m.parent_id, m.root_id);
        }
        if rel.ends_with("priority_queue_and_custom_header_types.json") {
            assert_eq!(m.delivery.priority, Some(5));
            assert_eq!(m.custom_headers()["big"], json!(1099511627776u64));
        }
    }
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

fn worker_values() -> Vec<(String, String)> {
    let doc = load("redis/03-result-backend/worker-written-values.json");
    let values = doc["values"].as_object().expect("values");
    assert!(values.len() >= 15);
    values.iter().map(|(k, v)| (k.clone(), v["raw_value"].as_str().expect("raw_value").to_owned())).collect()
}

#[test]
fn worker_written_values_roundtrip_byte_for_byte() {
    for (name, raw) in worker_values() {
        let meta = ResultMeta::decode(raw.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = meta.encode(Serializer::Json).expect("encode");
        assert_eq!(String::from_utf8(out).expect("utf8"), raw, "{name}");
        if meta.status.is_ready() {
            assert!(meta.date_done.is_some(), "{name}");
        } else {
            assert!(meta.date_done.is_none(), "{name}");
        }
    }
}

/// Build each captured shape with the constructors (taking only ids, the
/// payload and date_done from the capture) and compare bytes.
#[test]
fn result_builders_match_worker_values() {
    let values: std::collections::HashMap<String, String> = worker_values().into_iter().collect();
    let parsed = |k: &str| ResultMeta::decode(values[k].as_bytes()).expect("parse");
    let bytes = |m: &ResultMeta| String::from_utf8(m.encode(Serializer::Json).expect("encode")).expect("utf8");

    let p = parsed("STARTED");
    let m = ResultMeta::started(&p.task_id, 6994, "w1@vm");
    assert_eq!(bytes(&m), values["STARTED"]);

    let p = parsed("SUCCESS");
    let m = ResultMeta::success(&p.task_id, json!(8)).with_date_done(p.date_done);
    assert_eq!(bytes(&m), values["SUCCESS"]);

    let p = parsed("FAILURE:TypeError");
    let exc = ExceptionInfo::with_message(
        "TypeError",
        "unsupported operand type(s) for +: 'int' and 'str'",
        "celeriac.exceptions",
    );
    let m = ResultMeta::failure(&p.task_id, &exc, p.traceback.clone()).with_date_done(p.date_done);
    assert_eq!(bytes(&m), values["FAILURE:TypeError"]);
    assert_eq!(p.exception(), Some(exc));

    let p = parsed("FAILURE:MyCustomError");
    let exc = ExceptionInfo::new("MyCustomError", vec![json!("custom boom"), json!(42)], "tasks");
    assert!(p.traceback.as_deref().expect("tb").ends_with(&format!("{}\n", exc.format_exception_only())));
    let m = ResultMeta::failure(&p.task_id, &exc, p.traceback.clone()).with_date_done(p.date_done);
    assert_eq!(bytes(&m), values["FAILURE:MyCustomError"]);

    let p = parsed("RETRY:extra=parent_id:with-children");
    let exc = ExceptionInfo::with_message("ValueError", "transient 1", "x");
    let m = ResultMeta::retry(&p.task_id, &exc, p.traceback.clone())
        .with_children(Some(vec![child_tuple(&p.task_id)]))
        .with_parent_id(Some(p.task_id.clone()));
    assert_eq!(bytes(&m), values["RETRY:extra=parent_id:with-children"]);

    let p = parsed("REVOKED:['revoked']");
    let m = ResultMeta::revoked(&p.task_id, "revoked").with_children(None).with_date_done(p.date_done);
    assert_eq!(bytes(&m), values["REVOKED:['revoked']"]);
    let p = parsed("REVOKED:['terminated']");
    let m = ResultMeta::revoked(&p.task_id, "terminated").with_date_done(p.date_done);
    assert_eq!(bytes(&m), values["REVOKED:['terminated']"]);

    let k = "SUCCESS:extra=group_id,parent_id";
    let p = parsed(k);
    let m = ResultMeta::success(&p.task_id, json!(6))
        .with_date_done(p.date_done)
        .with_group_id(p.group_id.clone())
        .with_parent_id(p.parent_id.clone());
    assert_eq!(bytes(&m), values[k]);
    assert_eq!(p.status, TaskState::Success);

    let k = "SUCCESS:with-children";
    let p = parsed(k);
    let m = ResultMeta::success(&p.task_id, json!(8))
        .with_date_done(p.date_done)
        .with_children(Some(vec![child_tuple("312a8c2f-d938-418c-84b9-e56c91d57dd1")]));
    assert_eq!(bytes(&m), values[k]);
}

#[test]
fn client_handwritten_payloads_parse() {
    let doc = load("redis/03-result-backend/client-handwritten-tests.json");
    let cases = doc.as_array().expect("list");
    assert!(cases.len() >= 15);
    for case in cases {
        let name = case["case"].as_str().expect("case");
        let payload = case["payload"].as_str().expect("payload");
        let meta = ResultMeta::decode(payload.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // What the Python client raised tells which results carry an exception.
        let raised = case["outcome"]["get"][0] == "raised";
        if meta.status == TaskState::Failure && meta.result.is_object() {
            let exc = meta.exception().expect("exception");
            assert!(raised, "{name}");
            let repr_seen = case["outcome"]["get"][2].as_str().expect("repr");
            if exc.exc_module.as_deref() != Some("os") {
                assert_eq!(exc.repr(), repr_seen, "{name}");
            }
        }
    }
}

#[test]
fn chord_db_values_and_group_save() {
    let doc = load("redis/03-result-backend/chord-and-group-save.db1-after.json");
    for (key, entry) in doc.as_object().expect("obj") {
        let raw = entry["raw"].as_str().expect("raw");
        if key.starts_with("celery-task-meta-") {
            let meta = ResultMeta::decode(raw.as_bytes()).expect("meta");
            assert_eq!(String::from_utf8(meta.encode(Serializer::Json).expect("enc")).expect("utf8"), raw, "{key}");
            assert_eq!(format!("celery-task-meta-{}", meta.task_id), *key);
        } else if let Some(gid) = key.strip_prefix("celery-taskset-meta-").filter(|g| !g.contains('.')) {
            let members: Vec<String> = entry["json"]["result"][1]
                .as_array()
                .expect("members")
                .iter()
                .map(|m| m[0][0].as_str().expect("id").to_owned())
                .collect();
            let refs: Vec<&str> = members.iter().map(String::as_str).collect();
            assert_eq!(pyjson::to_string(&taskset_meta_value(gid, &refs)), raw);
        }
    }
}

#[test]
fn rpc_result_bodies_parse() {
    for name in [
        "success_add_4_4",
        "success_bigint",
        "failure_valueerror",
        "retry_state",
        "success_chain_parent_with_children",
        "success_chain_child_with_parent_id",
        "success_group_member_with_group_id",
    ] {
        let doc = load(&format!("amqp/results_rpc/{name}.json"));
        let raw = doc["body_raw"].as_str().expect("body_raw");
        let meta = ResultMeta::decode(raw.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(String::from_utf8(meta.encode(Serializer::Json).expect("enc")).expect("utf8"), raw, "{name}");
        if name == "success_bigint" {
            assert_eq!(meta.result, json!(9223372036854775808u64));
        }
        if name == "failure_valueerror" {
            assert_eq!(meta.exception().and_then(|e| e.exc_module), Some("builtins".to_owned()));
        }
    }
}

#[test]
fn msgpack_result_value() {
    // Bytes produced by Python: msgpack.packb(meta, use_bin_type=True) for
    // celery's SUCCESS meta (what the redis backend stores with
    // result_serializer='msgpack').
    let meta = ResultMeta::success("642cad79-14ce-4f51-9a6b-d51ccaa0fe3f", json!(8))
        .with_date_done(parse_datetime("2026-11-27T05:11:00.770297+00:00"));
    let bytes = meta.encode(Serializer::Msgpack).expect("encode");
    let expected = "86a6737461747573a753554343455353a6726573756c7408a974726163656261636bc0a86368696c6472656e90a9646174655f646f6e65d920323032362d31312d32375430353a31313a30302e3737303239372b30303a3030a77461736b5f6964d92436343263616437392d313463652d346635312d396136622d643531636361613066653366";
    assert_eq!(hex(&bytes), expected);
    assert_eq!(ResultMeta::decode(&bytes).expect("decode"), meta);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
