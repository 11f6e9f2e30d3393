//! Fuzz target: stored `celery-task-meta-*` values (`ResultMeta::decode`,
//! JSON and msgpack), as `celeriac result` and chord bookkeeping read them
//! from a backend any client may have written.
#![no_main]

use celeriac_protocol::{ResultMeta, Serializer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let metas = [ResultMeta::decode(data), ResultMeta::decode_with(data, Serializer::Msgpack)];
    for meta in metas.into_iter().flatten() {
        let _ = meta.exception();
        let _ = meta.status.is_ready();
        let _ = meta.to_value();
        let _ = meta.encode(Serializer::Json);
        let _ = meta.encode(Serializer::Msgpack);
    }
});
