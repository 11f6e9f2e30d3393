//! Hot deploy: the worker watches its task directory (inotify, through the
//! `notify` crate) and, a moment after the last change, brings what it
//! serves in line with the files there ([`Sandbox::sync`]): new and changed
//! components are validated and compiled off the hot path and swapped in,
//! removed ones stop being served, and a broken new file leaves the old
//! version serving. Copy a component in under a temporary or dot name and
//! rename it into place: a file is only read once writes to it have been
//! quiet for [`SETTLE`], and a half-written one that fails to load is simply
//! tried again at its next change.
//!
//! A tenant's `tenant.toml` is read at start only: a change to one is logged
//! (what differs from what the worker runs with, and that a restart applies
//! it), and the components of a tenant whose file appeared after the start
//! are refused until a restart (see `SandboxConfig::tenant_files`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::config::{TENANT_FILE, Tenants};
use crate::sandbox::Sandbox;

/// How long the directory must be quiet before it is read.
const SETTLE: Duration = Duration::from_millis(300);

/// Watching a task directory until dropped.
pub(crate) struct HotDeploy {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HotDeploy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether an event concerns a component file or a directory that may hold
/// some (not a dotfile or a temporary name: those are ignored, as by the loader).
fn relevant(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy()) else { return false };
    name == TENANT_FILE
        || !name.starts_with('.') && (path.extension().is_none() || path.extension().is_some_and(|e| e == "wasm"))
}

/// What differs between the tenants' files read at start and those there
/// now, one line per tenant (empty when nothing does).
fn tenant_changes(started: &Tenants, now: &Tenants) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, t) in &now.0 {
        match started.get(name) {
            None => lines.push(format!(
                "{name}/{TENANT_FILE} appeared after the worker started: {name}'s new components are refused \
                 until a restart applies it"
            )),
            Some(old) if old != t => lines.push(format!(
                "{name}/{TENANT_FILE} changed ({}); the worker keeps the one it read at start ({}) until a restart",
                t.summary(),
                old.summary()
            )),
            Some(_) => {}
        }
    }
    for name in started.0.keys().filter(|n| now.get(n).is_none()) {
        lines.push(format!(
            "{name}/{TENANT_FILE} was removed; the worker keeps the one it read at start until a restart"
        ));
    }
    lines
}

/// Start watching `root` (a directory) for `sandbox`; `tenants` are the
/// tenants' files as the worker read them at start.
pub(crate) fn watch(sandbox: Arc<Sandbox>, root: PathBuf, tenants: Tenants) -> Result<HotDeploy, notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(e) if e.kind.is_access() => {}
        Ok(e) if e.paths.iter().any(|p| relevant(p)) => {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("hot deploy: watching the task directory failed: {e}"),
    })?;
    watcher.watch(&root, RecursiveMode::Recursive)?;
    let shown = root.clone();
    let task = tokio::spawn(async move {
        // The last state of the tenants' files reported, so each change is logged once.
        let mut reported: Option<Result<Tenants, String>> = None;
        while rx.recv().await.is_some() {
            // Let a copy or a burst of changes finish first.
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let now = Tenants::load(&root).map_err(|e| e.to_string());
            if reported.as_ref() != Some(&now) {
                match &now {
                    Ok(now) => tenant_changes(&tenants, now).iter().for_each(|l| tracing::warn!("{l}")),
                    Err(e) => tracing::error!("{e}; the worker keeps the tenant files it read at start"),
                }
                reported = Some(now);
            }
            let report = sandbox.sync(&root).await;
            tracing::debug!(
                "hot deploy: {} loaded, {} failed, {} removed",
                report.loaded.len(),
                report.failed.len(),
                report.removed.len()
            );
        }
    });
    tracing::info!("hot deploy: watching {} for component changes", shown.display());
    Ok(HotDeploy { _watcher: watcher, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_component_files_tenant_files_and_directories_trigger_a_reload() {
        assert!(relevant(Path::new("/t/tasks.wasm")));
        assert!(relevant(Path::new("/t/acme")));
        assert!(relevant(Path::new("/t/acme/tenant.toml")));
        assert!(!relevant(Path::new("/t/.tasks.wasm.swp")));
        assert!(!relevant(Path::new("/t/tasks.wasm.tmp")));
        assert!(!relevant(Path::new("/t/notes.txt")));
    }

    #[test]
    fn a_changed_added_or_removed_tenant_file_is_reported_against_the_one_read_at_start() {
        let t = |toml: &str| crate::config::TenantConfig::from_toml(toml, "t").unwrap();
        let started = Tenants([("acme".to_string(), t("concurrency = 2")), ("b".into(), t(""))].into());
        assert!(tenant_changes(&started, &started.clone()).is_empty());
        let now = Tenants([("acme".to_string(), t("concurrency = 3")), ("newco".into(), t(""))].into());
        let lines = tenant_changes(&started, &now);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("acme/tenant.toml changed (concurrency 3"), "{}", lines[0]);
        assert!(lines[0].contains("read at start (concurrency 2"), "{}", lines[0]);
        assert!(lines[1].starts_with("newco/tenant.toml appeared"), "{}", lines[1]);
        assert!(lines[2].starts_with("b/tenant.toml was removed"), "{}", lines[2]);
    }
}
