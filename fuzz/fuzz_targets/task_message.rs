//! Fuzz target: a task message as the Redis transport delivers it — envelope
//! → `RawMessage` → `TaskMessage::decode` (protocol v2 and v1, JSON and
//! msgpack bodies, `AcceptContent::all()`), plus control and event decoding of
//! the same message, since a pidbox or `celeryev` queue holds the same bytes.
#![no_main]

mod common;

use celeriac_protocol::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::parse(data) else { return };
    let Ok(raw) = env.into_raw_message() else { return };
    common::drive_control(&raw);
    common::drive_events(&raw);
    common::drive_task(raw);
});
