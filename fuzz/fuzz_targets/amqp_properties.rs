//! Fuzz target: a RabbitMQ delivery — `basic` content-header properties
//! (flags, content type, typed header table, reply-to, ...) parsed by
//! amq-protocol, then `amqp::raw_message` and every consumer of the result:
//! task decode, remote control, events. Input: properties, then the body.
#![no_main]

mod common;

use celeriac_protocol::amqp::{Deliver, raw_message};
use lapin::protocol::basic::parse_properties;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((body, properties)) = parse_properties(data) else { return };
    let deliver =
        Deliver { delivery_tag: 1, exchange: String::new(), routing_key: "celery".into(), redelivered: false };
    let raw = raw_message(&deliver, &properties, body.to_vec());
    common::drive_control(&raw);
    common::drive_events(&raw);
    common::drive_task(raw);
});
