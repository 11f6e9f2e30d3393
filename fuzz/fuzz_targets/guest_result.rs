//! Fuzz target: a guest's JSON result text as the sandbox accepts it
//! (`Sandbox::accept_result`): the streaming cost estimate
//! (`parsed_json_cost`) first, then the parse. The estimate must
//! agree with the parser on what is JSON (the sandbox relies on it).
#![no_main]

use celeriac_protocol::parsed_json_cost;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let cost = parsed_json_cost(text);
    let parsed = serde_json::from_str::<serde_json::Value>(text);
    assert_eq!(cost.is_ok(), parsed.is_ok(), "cost estimate and parser disagree: {cost:?} / {parsed:?}");
    if let Ok(value) = parsed {
        let _ = celeriac_protocol::py_repr(&value);
        let _ = celeriac_protocol::saferepr(&value, Some(1024), 8);
    }
});
