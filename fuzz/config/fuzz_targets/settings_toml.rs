//! Fuzz target: the TOML config file (`Settings::from_toml`) and what the
//! worker derives from it at start (limits, sandbox config, routes, warnings).
#![no_main]

use celeriac::config::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(s) = Settings::from_toml(text, "fuzz.toml") {
        common_settings(&s);
    }
});

fn common_settings(s: &Settings) {
    let _ = s.annotation("tasks.add").limits();
    let _ = s.sandbox_config();
    let _ = s.warnings();
    let _ = s.concurrency();
    let _ = s.effective_broker_url();
    let _ = s.effective_result_backend();
    let _ = s.route("tasks.add");
    let _ = s.annotation("tasks.add");
}
