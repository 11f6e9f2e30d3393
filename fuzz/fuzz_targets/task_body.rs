//! Fuzz target: a task message's headers and body without the envelope, so
//! the fuzzer mutates body bytes directly instead of through base64. Input:
//! one byte choosing the content type, the headers as JSON, a NUL, the body
//! (no NUL: no headers, all of it is the body — a protocol v1 message).
#![no_main]

mod common;

use celeriac_protocol::RawMessage;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("application/x-msgpack"),
    None,
    Some("application/x-python-serialize"),
    Some("application/x-yaml"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&ct, rest)) = data.split_first() else { return };
    let (headers, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&b""[..], rest),
    };
    let headers = match serde_json::from_slice::<Value>(headers) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let raw = RawMessage {
        headers,
        body: body.to_vec(),
        content_type: CONTENT_TYPES[usize::from(ct) % CONTENT_TYPES.len()].map(str::to_owned),
        content_encoding: Some("utf-8".to_owned()),
        ..RawMessage::default()
    };
    common::drive_control(&raw);
    common::drive_events(&raw);
    common::drive_task(raw);
});
