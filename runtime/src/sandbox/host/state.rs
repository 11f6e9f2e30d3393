//! Host capability: `host.update-state` — Celery's `self.update_state(...)`.
//!
//! A guest reports a custom state (e.g. `PROGRESS`) with JSON meta. Updates go
//! into a `tokio::sync::watch` channel: the latest one wins, so a guest calling
//! this in a tight loop costs the worker one slot of memory, not a queue, and the
//! result backend sees at most one write in flight per task. The worker drains
//! the channel before it writes the final state, so a late `PROGRESS` can never
//! overwrite `SUCCESS`.

use serde_json::Value;
use tokio::sync::watch;

use super::TaskState;

/// States the worker alone may set: a guest reporting one is ignored.
const RESERVED: &[&str] = &["PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED"];

/// Longest state name accepted.
const MAX_STATE_LEN: usize = 64;

/// Largest meta (JSON text) accepted; larger updates are dropped.
const MAX_META_BYTES: usize = 256 * 1024;

/// One custom state reported by a running task.
#[derive(Debug, Clone, PartialEq)]
pub struct StateUpdate {
    /// The state name, e.g. `PROGRESS`.
    pub state: String,
    /// The meta, stored as the state's `result`.
    pub meta: Value,
}

/// The sending half a call's state updates go to; `None` in the channel means
/// "no update yet".
pub type StateSink = watch::Sender<Option<StateUpdate>>;

/// Record a state update from the guest.
pub fn update_state(state: &TaskState, name: String, meta: String) {
    let id = &state.request.id;
    if name.is_empty() || name.len() > MAX_STATE_LEN || RESERVED.contains(&name.as_str()) {
        tracing::warn!(task_id = %id, "ignoring update_state to reserved or invalid state {name:?}");
        return;
    }
    if meta.len() > MAX_META_BYTES {
        tracing::warn!(task_id = %id, "ignoring update_state with {} bytes of meta (limit {MAX_META_BYTES})", meta.len());
        return;
    }
    let meta = serde_json::from_str(&meta).unwrap_or_else(|_| {
        tracing::warn!(task_id = %id, "update_state meta is not JSON; storing it as a string");
        Value::String(meta)
    });
    match &state.state_sink {
        Some(sink) => {
            sink.send_replace(Some(StateUpdate { state: name, meta }));
        }
        None => tracing::debug!(task_id = %id, "state {name}: {meta}"),
    }
}
