//! Host capability: `canvas.send` and `canvas.replace` — Celery's
//! `other.delay(...)` / `signature.apply_async()` and `self.replace(sig)` from
//! inside a task.
//!
//! Denied unless the worker grants it to the task (`send_tasks = true` in its
//! `task_annotations`). A granted call checks and freezes the signature (so
//! the guest gets its id at once) and only records it here: the worker sends
//! what a call recorded after the call returns, through its own broker
//! connection, with the calling task's lineage and routing. The guest never
//! touches the broker. Bounded per call: [`MAX_SENDS`] signatures of at most
//! [`MAX_SIGNATURE_BYTES`] each.

use serde_json::Value;

use super::TaskState;
use super::bindings::celeriac::task::types::TaskError;
use crate::protocol::signature;

/// Most signatures one call may send.
pub const MAX_SENDS: usize = 1000;

/// Largest signature (JSON text) accepted.
pub const MAX_SIGNATURE_BYTES: usize = 1024 * 1024;

/// What one call recorded for the worker to send.
#[derive(Debug, Default)]
pub struct Sends {
    /// Whether this task may send tasks at all.
    granted: bool,
    /// Frozen signatures, in the order sent.
    pub sent: Vec<Value>,
    /// The replacement asked for by `canvas.replace`, not frozen (the worker
    /// gives it the task's id and membership).
    pub replacement: Option<Value>,
    /// New members of the task's chord (`canvas.add-to-chord`), frozen.
    pub chord_additions: Vec<Value>,
}

impl Sends {
    /// An empty record; `granted` says whether the calls may succeed.
    pub fn new(granted: bool) -> Self {
        Sends { granted, ..Sends::default() }
    }
}

/// `canvas.send`.
pub fn send(state: &mut TaskState, json: String) -> Result<String, TaskError> {
    let mut sig = checked(state, &json, "send")?;
    if state.canvas.sent.len() >= MAX_SENDS {
        return Err(error("RuntimeError", format!("a task may send at most {MAX_SENDS} signatures per call")));
    }
    let id = signature::freeze(&mut sig, None).map_err(|e| error("ValueError", e.to_string()))?;
    state.canvas.sent.push(sig);
    Ok(id)
}

/// `canvas.replace`.
pub fn replace(state: &mut TaskState, json: String) -> Result<(), TaskError> {
    let sig = checked(state, &json, "replace")?;
    if state.canvas.replacement.is_some() {
        return Err(error("RuntimeError", "this task has already been replaced".into()));
    }
    // Freezing a copy finds what the worker would refuse, now, in the task.
    signature::freeze(&mut sig.clone(), Some(&state.request.id)).map_err(|e| error("ValueError", e.to_string()))?;
    state.canvas.replacement = Some(sig);
    Ok(())
}

/// `canvas.add-to-chord`.
pub fn add_to_chord(state: &mut TaskState, json: String) -> Result<String, TaskError> {
    let mut sig = checked(state, &json, "add to the chord of")?;
    if !state.request.in_chord {
        return Err(error("ValueError", "Current task is not member of any chord".into()));
    }
    if signature::kind(&sig).map_err(|e| error("ValueError", e.to_string()))? != signature::Kind::Task {
        return Err(error("ValueError", "add_to_chord takes the signature of one task".into()));
    }
    if state.canvas.sent.len() + state.canvas.chord_additions.len() >= MAX_SENDS {
        return Err(error("RuntimeError", format!("a task may send at most {MAX_SENDS} signatures per call")));
    }
    let id = signature::freeze(&mut sig, None).map_err(|e| error("ValueError", e.to_string()))?;
    state.canvas.chord_additions.push(sig);
    Ok(id)
}

/// The grant, the size and the JSON of one signature.
fn checked(state: &TaskState, json: &str, what: &str) -> Result<Value, TaskError> {
    let task = &state.request.name;
    if !state.canvas.granted {
        tracing::warn!(task_id = %state.request.id, "{task} tried to {what} a task without the send_tasks grant");
        return Err(error(
            "PermissionError",
            format!("{task} may not send tasks: the worker grants it with send_tasks = true in task_annotations"),
        ));
    }
    if json.len() > MAX_SIGNATURE_BYTES {
        return Err(error(
            "ValueError",
            format!("a signature of {} bytes is over the {MAX_SIGNATURE_BYTES}-byte limit", json.len()),
        ));
    }
    let sig: Value =
        serde_json::from_str(json).map_err(|e| error("ValueError", format!("signature is not JSON: {e}")))?;
    signature::kind(&sig).map_err(|e| error("ValueError", e.to_string()))?;
    Ok(sig)
}

fn error(exc_type: &str, message: String) -> TaskError {
    TaskError { exc_type: exc_type.into(), exc_module: None, message, args: None, traceback: None }
}
