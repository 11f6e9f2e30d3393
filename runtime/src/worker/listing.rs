//! What `celeriac tasks` prints, and the `[tasks]` section of the worker
//! banner: the tasks a directory of components serves, as `celery worker`
//! lists an app's registered tasks, plus the files that failed to load and those still compiling.

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
        out.push_str(&format!(
            "  . {:<24} {:<20} fuel={} memory={} time_limit={}s\n",
            t.name,
            t.component.display,
            l.fuel,
            ByteSize(l.max_memory),
            l.time_limit.as_secs_f64()
        ));
    }
    for e in sandbox.load_errors() {
        out.push_str(&format!("  ! {} — failed to load: {}\n", e.path.display(), e.reason));
    }
    for c in sandbox.loading() {
        out.push_str(&format!("  ~ {c} — still compiling; its tasks are served once it is ready\n"));
    }
    out
}
