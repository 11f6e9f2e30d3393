//! Fuzz target: `celeryconfig.py` read by the Python-literal loader
//! (`Settings::from_python`: tree-sitter grammar, then the same settings tree
//! as TOML) and what the worker derives from it at start.
#![no_main]

use celeriac::config::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(s) = Settings::from_python(text, "celeryconfig.py") {
        let _ = s.annotation("tasks.add").limits();
        let _ = s.sandbox_config();
        let _ = s.warnings();
        let _ = s.concurrency();
        let _ = s.effective_broker_url();
        let _ = s.route("tasks.add");
        let _ = s.annotation("tasks.add");
    }
});
