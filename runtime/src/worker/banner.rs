//! The start-up banner, laid out like `celery worker`'s, so an operator sees
//! at a glance what this worker serves and where it connects.

use super::WorkerOptions;
use crate::config::Settings;
use crate::connection::url::{mask_password, sqlite_path};
use crate::sandbox::Sandbox;

/// A URL for display: password masked, and an SQLite URL followed by the
/// absolute path of its file.
fn with_file(url: &str) -> String {
    let shown = mask_password(url);
    if url.contains("sqlite://")
        && let Ok(p) = sqlite_path(url)
    {
        return format!("{shown} ({})", p.display());
    }
    shown
}

/// The banner text.
pub fn banner(
    opts: &WorkerOptions,
    sandbox: &Sandbox,
    settings: &Settings,
    queues: &[String],
    concurrency: u32,
) -> String {
    let broker = with_file(&settings.effective_broker_url());
    let results = settings.effective_result_backend().map(|u| with_file(&u)).unwrap_or_else(|| "disabled://".into());
    let ntasks = sandbox.tasks().len();
    let ncomp = sandbox.components().len();
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
    let sys = format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH);
    let mut b = String::new();
    b.push('\n');
    b.push_str(&format!(" -------------- {} v{} (celeriac)\n", opts.hostname, env!("CARGO_PKG_VERSION")));
    b.push_str("--- ***** ----- \n");
    b.push_str(&format!("-- ******* ---- {sys} {now}\n"));
    b.push_str("- *** --- * --- \n");
    b.push_str("- ** ---------- [config]\n");
    b.push_str(&format!(
        "- ** ---------- .> app:         {} ({ntasks} tasks in {ncomp} components)\n",
        opts.app.display()
    ));
    b.push_str(&format!("- ** ---------- .> transport:   {broker}\n"));
    b.push_str(&format!("- ** ---------- .> results:     {results}\n"));
    let loops = super::event_loops(concurrency);
    b.push_str(&format!("- *** --- * --- .> concurrency: {concurrency} (wasm sandbox, {loops} event loops)\n"));
    // Celery's wording.
    b.push_str(if settings.worker_send_task_events {
        "-- ******* ---- .> task events: ON\n"
    } else {
        "-- ******* ---- .> task events: OFF (enable -E to monitor tasks in this worker)\n"
    });
    b.push_str("--- ***** ----- \n");
    b.push_str(" -------------- [queues]\n");
    for q in queues {
        b.push_str(&format!("                .> {q:<16} exchange={q}(direct) key={q}\n"));
    }
    b.push_str("\n[tasks]\n");
    b.push_str(&super::task_listing(sandbox));
    b.push('\n');
    b
}
