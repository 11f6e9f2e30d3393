//! Fuzz target: a remote-control request body (`ControlRequest::decode`) as
//! the worker reads it from its pidbox queue; the first byte picks JSON or
//! msgpack, the rest is the body.
#![no_main]

mod common;

use celeriac_protocol::RawMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&ct, body)) = data.split_first() else { return };
    let ct = if ct & 1 == 0 { "application/json" } else { "application/x-msgpack" };
    let mut headers = serde_json::Map::new();
    headers.insert("clock".into(), 7.into());
    headers.insert("expires".into(), serde_json::json!(1_795_756_310.8));
    let raw = RawMessage { headers, body: body.to_vec(), content_type: Some(ct.into()), ..RawMessage::default() };
    common::drive_control(&raw);
});
