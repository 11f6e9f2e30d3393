//! Fuzz target: kombu's Redis JSON envelope (`Envelope::parse`), its base64
//! body, its unacked-hash entry form, and the byte-for-byte re-serialisation
//! used to restore messages: bytes straight from a Redis list.
#![no_main]

use celeriac_protocol::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut env) = Envelope::parse(data) {
        let _ = env.decoded_body();
        let _ = env.delivery_info();
        let _ = (env.delivery_tag(), env.exchange(), env.routing_key(), env.priority(), env.redelivered());
        let _ = (env.body_encoding(), env.correlation_id(), env.reply_to());
        let _ = env.to_raw_message();
        // What the worker writes back must parse again.
        let bytes = env.to_bytes();
        assert!(Envelope::parse(&bytes).is_ok(), "a re-serialised envelope does not parse");
        let _ = Envelope::parse(&env.to_unacked_entry());
        env.mark_redelivered();
        let _ = env.to_bytes();
    }
    let _ = Envelope::parse_unacked_entry(data);
});
