//! Fuzz target: the JSON and msgpack body serializers (`Serializer::decode`)
//! on the same bytes, and re-encoding what they accept (a decoded value must
//! always encode again: results and retries are written from it).
#![no_main]

use celeriac_protocol::Serializer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for s in [Serializer::Json, Serializer::Msgpack] {
        if let Ok(value) = s.decode(data) {
            for out in [Serializer::Json, Serializer::Msgpack] {
                let bytes = out.encode(&value).expect("a decoded value encodes");
                let again = out.decode(&bytes).expect("an encoded value decodes");
                let _ = again;
            }
        }
    }
});
