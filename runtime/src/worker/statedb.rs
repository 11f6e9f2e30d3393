//! The worker's state database (`-S/--statedb FILE`, Celery's
//! `worker_state_db`): the revoked task ids and the Lamport clock, kept across
//! restarts, so a task revoked before a restart is still not run after it.
//!
//! Celery keeps this in a Python `shelve` file; Celeriac writes its own small
//! JSON document (`{"revoked": {"<id>": <epoch seconds revoked>}, "clock": N}`),
//! replaced atomically (written beside, then renamed) after every revoke and
//! at shutdown. A file that is not such a document is refused at start-up
//! rather than overwritten (it may be a Python worker's).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::state::WorkerState;

/// Why the state database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDbError {
    /// It could not be read or written.
    #[error("state database {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// It is not a Celeriac state database.
    #[error(
        "state database {path} is not one Celeriac wrote ({reason}); a Python worker's -S file cannot be read: \
         give another path"
    )]
    Foreign { path: PathBuf, reason: String },
}

/// Load `path` into `state` (a missing file is an empty database); returns
/// how many revoked ids were restored.
pub fn load(path: &Path, state: &WorkerState) -> Result<usize, StateDbError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(StateDbError::Io { path: path.to_path_buf(), source }),
    };
    let foreign = |reason: &str| StateDbError::Foreign { path: path.to_path_buf(), reason: reason.to_string() };
    let doc: Value = serde_json::from_slice(&text).map_err(|e| foreign(&format!("not JSON: {e}")))?;
    let revoked = doc.get("revoked").and_then(Value::as_object).ok_or_else(|| foreign("no \"revoked\" table"))?;
    let entries: Vec<(String, f64)> = revoked.iter().filter_map(|(id, t)| Some((id.clone(), t.as_f64()?))).collect();
    state.restore_revoked(&entries);
    if let Some(clock) = doc.get("clock").and_then(Value::as_u64) {
        state.adjust(clock);
    }
    Ok(entries.len())
}

/// Write `state`'s revoked ids and clock to `path`, atomically.
pub fn save(path: &Path, state: &WorkerState) -> Result<(), StateDbError> {
    let revoked: Map<String, Value> = state.revoked_since().into_iter().map(|(id, at)| (id, Value::from(at))).collect();
    let doc = json!({ "revoked": revoked, "clock": state.clock() });
    let io = |source| StateDbError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(&doc).unwrap_or_default()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_ids_and_the_clock_survive_a_save_and_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.state");
        let before = WorkerState::new("w@h", false);
        before.revoke(&["a".into(), "b".into()], false);
        before.adjust(41);
        save(&path, &before).unwrap();
        let after = WorkerState::new("w@h", false);
        assert_eq!(load(&path, &after).unwrap(), 2);
        assert!(after.is_revoked("a") && after.is_revoked("b"));
        assert!(after.clock() >= 42);
    }

    #[test]
    fn a_missing_file_is_empty_and_a_foreign_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = WorkerState::new("w@h", false);
        assert_eq!(load(&dir.path().join("none"), &state).unwrap(), 0);
        let shelve = dir.path().join("celery.db");
        std::fs::write(&shelve, b"\x00\x06\x15\x61 not json").unwrap();
        assert!(matches!(load(&shelve, &state), Err(StateDbError::Foreign { .. })));
    }
}
