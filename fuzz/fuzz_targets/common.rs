//! Helpers shared by the fuzz targets: one place that drives a decoded
//! [`RawMessage`] through every consumer of broker messages (task decode,
//! remote control, events), so each transport's target reaches them all.
#![allow(dead_code)]

use celeriac_protocol::pidbox::{ControlRequest, decode_reply};
use celeriac_protocol::{AcceptContent, RawMessage, TaskMessage};
use std::collections::HashMap;

/// Decode `raw` as a task (both protocol versions, every serializer the
/// worker knows), and when that succeeds exercise what the worker does next
/// with it: names, custom headers, re-encoding for retries and restores.
pub fn drive_task(raw: RawMessage) {
    if let Ok(msg) = TaskMessage::decode(raw, &AcceptContent::all()) {
        let _ = msg.display_name();
        let _ = msg.custom_headers();
        let _ = msg.is_expired(chrono_now());
        let _ = msg.to_new_task().encode();
    }
}

/// Decode `raw` as a remote-control request and as a reply, as the worker
/// and `celeriac inspect` do, and answer the request.
pub fn drive_control(raw: &RawMessage) {
    if let Ok(req) = ControlRequest::decode(raw) {
        let _ = req.is_for("celery@fuzz");
        let _ = req.is_expired(1.0e9);
        if let Some(out) = req.reply("celery@fuzz", serde_json::json!({"ok": "pong"}), 1) {
            let _ = out.to_envelope();
        }
    }
    let _ = decode_reply(raw);
}

/// Split `raw` into events and print each as `celeriac events --dump` does.
pub fn drive_events(raw: &RawMessage) {
    let mut names = HashMap::new();
    for ev in celeriac_protocol::render::split_events(raw) {
        let _ = celeriac_protocol::render::dump_line(ev, &mut names);
    }
}

/// A fixed "now" so runs are reproducible.
pub fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_795_756_278, 0).unwrap()
}
