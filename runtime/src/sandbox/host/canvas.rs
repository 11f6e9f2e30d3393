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
//! [`MAX_SIGNATURE_BYTES`] each. A tenant's task may send only its own
//! tenant's tasks (every task a signature names, callbacks and chord bodies
//! included, starts with `<tenant>.`): another tenant's tasks would run under
//! that tenant's grants and quotas.

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
    /// The tenant whose tasks alone it may send (`None`: any task).
    namespace: Option<String>,
    /// Frozen signatures, in the order sent.
    pub sent: Vec<Value>,
    /// The replacement asked for by `canvas.replace`, not frozen (the worker
    /// gives it the task's id and membership).
    pub replacement: Option<Value>,
    /// New members of the task's chord (`canvas.add-to-chord`), frozen.
    pub chord_additions: Vec<Value>,
}

impl Sends {
    /// An empty record; `granted` says whether the calls may succeed, and
    /// `namespace` (a tenant) limits them to that tenant's tasks.
    pub fn new(granted: bool, namespace: Option<String>) -> Self {
        Sends { granted, namespace, ..Sends::default() }
    }
}

/// Every task name a signature names: its own, its canvas members' (`kwargs`
/// `tasks`, `header`, `body`) and its options' callbacks, errbacks, chain and
/// chord, however deep (bounded by the signature's size).
fn task_names(sig: &Value, out: &mut Vec<String>) {
    match sig {
        Value::Array(items) => items.iter().for_each(|i| task_names(i, out)),
        Value::Object(obj) => {
            if let Some(name) = obj.get("task").and_then(Value::as_str) {
                out.push(name.to_string());
            }
            if let Some(kwargs) = obj.get("kwargs").and_then(Value::as_object) {
                for key in ["tasks", "header", "body"] {
                    kwargs.get(key).into_iter().for_each(|v| task_names(v, out));
                }
            }
            if let Some(options) = obj.get("options").and_then(Value::as_object) {
                for key in ["link", "link_error", "chain", "chord"] {
                    options.get(key).into_iter().for_each(|v| task_names(v, out));
                }
            }
        }
        _ => {}
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
    if let Some(tenant) = &state.canvas.namespace {
        let mut names = Vec::new();
        task_names(&sig, &mut names);
        if let Some(other) = names.iter().find(|n| !n.strip_prefix(tenant.as_str()).is_some_and(|r| r.starts_with('.')))
        {
            return Err(error(
                "PermissionError",
                format!("{task} may send only tasks of its tenant {tenant:?} ({tenant}.*), not {other:?}"),
            ));
        }
    }
    Ok(sig)
}

fn error(exc_type: &str, message: String) -> TaskError {
    TaskError { exc_type: exc_type.into(), exc_module: None, message, args: None, traceback: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_a_signature_names_is_found_callbacks_and_chord_bodies_included() {
        let sig = serde_json::json!({
            "task": "celery.chord", "subtask_type": "chord",
            "kwargs": {
                "header": {"task": "celery.group", "kwargs": {"tasks": [{"task": "a.x"}, {"task": "a.y"}]}},
                "body": {"task": "a.z", "options": {"link": [{"task": "b.steal"}], "link_error": {"task": "a.e"}}}
            },
            "args": [{"task": "not.a.signature"}],
            "options": {"chain": [{"task": "a.last"}]}
        });
        let mut names = Vec::new();
        task_names(&sig, &mut names);
        names.sort();
        assert_eq!(names, ["a.e", "a.last", "a.x", "a.y", "a.z", "b.steal", "celery.chord", "celery.group"]);
    }
}
