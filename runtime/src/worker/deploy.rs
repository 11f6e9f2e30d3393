//! Hot deploy: the worker watches its task directory (inotify, through the
//! `notify` crate) and, a moment after the last change, brings what it
//! serves in line with the files there ([`Sandbox::sync`]): new and changed
//! components are validated and compiled off the hot path and swapped in,
//! removed ones stop being served, and a broken new file leaves the old
//! version serving. Copy a component in under a temporary or dot name and
//! rename it into place: a file is only read once writes to it have been
//! quiet for [`SETTLE`], and a half-written one that fails to load is simply
//! tried again at its next change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

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
    !name.starts_with('.') && (path.extension().is_none() || path.extension().is_some_and(|e| e == "wasm"))
}

/// Start watching `root` (a directory) for `sandbox`.
pub(crate) fn watch(sandbox: Arc<Sandbox>, root: PathBuf) -> Result<HotDeploy, notify::Error> {
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
        while rx.recv().await.is_some() {
            // Let a copy or a burst of changes finish first.
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
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
    fn only_component_files_and_directories_trigger_a_reload() {
        assert!(relevant(Path::new("/t/tasks.wasm")));
        assert!(relevant(Path::new("/t/acme")));
        assert!(!relevant(Path::new("/t/.tasks.wasm.swp")));
        assert!(!relevant(Path::new("/t/tasks.wasm.tmp")));
        assert!(!relevant(Path::new("/t/notes.txt")));
    }
}
