//! Fuzz target: a remote-control reply (`pidbox::decode_reply`) and its
//! rendering by `celeriac inspect` (`render::format_reply`): replies come
//! from any node on the broker. First byte: JSON or msgpack; rest: the body.
#![no_main]

use celeriac_protocol::RawMessage;
use celeriac_protocol::pidbox::decode_reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&ct, body)) = data.split_first() else { return };
    let ct = if ct & 1 == 0 { "application/json" } else { "application/x-msgpack" };
    let raw = RawMessage { body: body.to_vec(), content_type: Some(ct.into()), ..RawMessage::default() };
    if let Ok((_ticket, replies)) = decode_reply(&raw) {
        for (node, reply) in &replies {
            let _ = celeriac_protocol::render::format_reply(node, reply, true);
            let _ = celeriac_protocol::render::format_reply(node, reply, false);
        }
    }
});
