//! Fuzz target: `celeryev` event messages (`render::split_events`: one event
//! or a `task.multi` list) and their `celeriac events --dump` lines. First
//! byte: JSON or msgpack; rest: the body.
#![no_main]

mod common;

use celeriac_protocol::RawMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&ct, body)) = data.split_first() else { return };
    let ct = if ct & 1 == 0 { "application/json" } else { "application/x-msgpack" };
    let raw = RawMessage { body: body.to_vec(), content_type: Some(ct.into()), ..RawMessage::default() };
    common::drive_events(&raw);
});
