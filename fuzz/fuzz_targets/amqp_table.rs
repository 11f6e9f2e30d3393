//! Fuzz target: an AMQP 0-9-1 field table (RabbitMQ message headers) as
//! bytes → amq-protocol's parser → `table_to_json`, and the JSON back to a
//! table (`json_to_table`) as the worker does when it republishes headers.
#![no_main]

use celeriac_protocol::amqp::{json_to_table, table_to_json};
use lapin::types::parsing::parse_field_table;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, table)) = parse_field_table(data) {
        let json = table_to_json(&table);
        let _ = json_to_table(&json);
    }
});
