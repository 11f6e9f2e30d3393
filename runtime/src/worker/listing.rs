//! What `celeriac tasks` prints, and the `[tasks]` section of the worker
//! banner: the tasks a directory of components serves, as `celery worker`
//! lists an app's registered tasks, plus the files that failed to load and those still compiling.

use crate::sandbox::bounds::escape_controls;
use crate::sandbox::{ByteSize, Sandbox};

/// The task list shown by `celeriac tasks` (and the worker banner).
pub fn task_listing(sandbox: &Sandbox) -> String {
    let mut out = String::new();
    let tasks = sandbox.tasks();
    if tasks.is_empty() {
        out.push_str("(no tasks)\n");
    }
    for t in &tasks {
        let l = &t.limits;
        // Shown only when an instance serves more than one call (1, a fresh instance each, is the rule).
        let kept = match l.max_calls_per_instance {
            0 | 1 => String::new(),
            n => format!(" max_calls_per_instance={n}"),
        };
        out.push_str(&format!(
            "  . {:<24} {:<20} fuel={} memory={} time_limit={}s{kept}\n",
            t.name,
            t.component.display,
            l.fuel,
            ByteSize(l.max_memory),
            l.time_limit.as_secs_f64()
        ));
    }
    for e in sandbox.load_errors() {
        let (path, reason) = (e.path.display().to_string(), &e.reason);
        out.push_str(&format!("  ! {} — failed to load: {}\n", escape_controls(&path), escape_controls(reason)));
    }
    for c in sandbox.loading() {
        out.push_str(&format!(
            "  ~ {} — still compiling; its tasks are served once it is ready\n",
            escape_controls(&c)
        ));
    }
    out
}
