//! Sending tasks from a task, as Celery's `add.delay(2, 2)`, `chain(...)`,
//! `group(...)`, `chord(...)(body)` and `self.replace(sig)` do: [`signature`]
//! builds a [`Signature`] (Celery's signature dict), [`Signature::delay`]
//! sends it, [`replace`] replaces the running task with it.
//!
//! The worker grants this per task (`send_tasks = true` in the task's
//! `task_annotations`); without the grant every call returns a
//! `PermissionError`. Sent tasks carry the running task as their `parent_id`
//! and its workflow's root as their `root_id`, and follow the worker's
//! `task_routes`. They are sent when the task returns (also when it fails).

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::__private::bindings::celeriac::task::canvas as host;
use crate::TaskError;

/// A Celery signature: a task with its arguments and options, or a canvas
/// (chain, group, chord) of them. Serialises to the dict Celery sends.
///
/// ```no_run
/// use celeriac_sdk::{chain, signature};
///
/// // add.delay(2, 2)
/// let id = signature("tasks.add").args((2, 2)).delay()?;
/// // (add.s(2, 2) | mul.s(10)).apply_async(countdown=5)
/// let id = chain([signature("tasks.add").args((2, 2)), signature("tasks.mul").args((10,))]).delay()?;
/// // add.s(1, 1).set(queue="fast").delay()
/// let id = signature("tasks.add").args((1, 1)).option("queue", "fast").delay()?;
/// # Ok::<(), celeriac_sdk::TaskError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signature(Value);

/// A signature of the task `name` with no arguments (Celery's `app.signature(name)`).
pub fn signature(name: &str) -> Signature {
    Signature(json!({"task": name, "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}))
}

/// Celery's `chain(a, b, c)`: each step's result is prepended to the next
/// step's arguments. A group followed by a step becomes a chord.
pub fn chain(steps: impl IntoIterator<Item = Signature>) -> Signature {
    canvas("celery.chain", "chain", json!({"tasks": steps.into_iter().map(|s| s.0).collect::<Vec<_>>()}))
}

/// Celery's `group(a, b, c)`: run in parallel; its id is the group's.
pub fn group(members: impl IntoIterator<Item = Signature>) -> Signature {
    canvas("celery.group", "group", json!({"tasks": members.into_iter().map(|s| s.0).collect::<Vec<_>>()}))
}

/// Celery's `chord(header)(body)`: `body` runs with the list of the header's
/// results, in order; the chord's id is the body's.
pub fn chord(header: impl IntoIterator<Item = Signature>, body: Signature) -> Signature {
    let header = group(header);
    canvas("celery.chord", "chord", json!({"header": header.0, "body": body.0, "kwargs": {}}))
}

fn canvas(task: &str, kind: &str, kwargs: Value) -> Signature {
    Signature(json!({"task": task, "args": [], "kwargs": kwargs, "options": {}, "subtask_type": kind,
        "immutable": false}))
}

impl Signature {
    /// The positional arguments: a tuple, array or `Vec` (`(2, 2)`,
    /// `[1, 2, 3]`); any other value is the one argument.
    ///
    /// # Panics
    ///
    /// If `args` cannot be serialised to JSON.
    pub fn args<A: Serialize>(mut self, args: A) -> Self {
        let args = match serde_json::to_value(args) {
            Ok(Value::Array(a)) => a,
            Ok(one) => vec![one],
            Err(e) => panic!("signature args are not JSON-serialisable: {e}"),
        };
        self.0["args"] = Value::Array(args);
        self
    }

    /// A keyword argument.
    ///
    /// # Panics
    ///
    /// If `value` cannot be serialised to JSON.
    pub fn kwarg<V: Serialize>(mut self, name: &str, value: V) -> Self {
        let value =
            serde_json::to_value(value).unwrap_or_else(|e| panic!("kwarg {name} is not JSON-serialisable: {e}"));
        if let Some(kwargs) = self.0.get_mut("kwargs").and_then(Value::as_object_mut) {
            kwargs.insert(name.to_string(), value);
        }
        self
    }

    /// An option of `apply_async`: `countdown`, `queue`, `priority`,
    /// `time_limit`, `soft_time_limit`, `ignore_result`, `task_id`, `link`, ...
    ///
    /// # Panics
    ///
    /// If `value` cannot be serialised to JSON.
    pub fn option<V: Serialize>(mut self, name: &str, value: V) -> Self {
        let value =
            serde_json::to_value(value).unwrap_or_else(|e| panic!("option {name} is not JSON-serialisable: {e}"));
        if !self.0["options"].is_object() {
            self.0["options"] = Value::Object(Map::new());
        }
        if let Some(options) = self.0["options"].as_object_mut() {
            options.insert(name.to_string(), value);
        }
        self
    }

    /// Run `seconds` from now (Celery's `countdown`).
    pub fn countdown(self, seconds: f64) -> Self {
        self.option("countdown", seconds)
    }

    /// Celery's `.si()`: a parent's result is not prepended to the arguments.
    pub fn immutable(mut self) -> Self {
        self.0["immutable"] = Value::Bool(true);
        self
    }

    /// Send it (Celery's `.delay()` / `.apply_async()`). Returns the id a
    /// client waits on: the task's, a chain's last step's, a group's, a chord
    /// body's.
    pub fn delay(&self) -> Result<String, TaskError> {
        host::send(&self.0.to_string()).map_err(TaskError::from)
    }

    /// The signature as Celery's dict.
    pub fn to_value(&self) -> &Value {
        &self.0
    }
}

/// Celery's `self.replace(sig)`: when this task returns successfully, `sig`
/// is sent in its place, with its id, callbacks, chain and chord — a client
/// waiting on this task gets `sig`'s result — and this task's own return
/// value is dropped. Return right after calling it.
///
/// ```no_run
/// use celeriac_sdk::{chain, replace, signature, task, TaskError};
///
/// #[task]
/// fn total(x: i64) -> Result<(), TaskError> {
///     replace(&chain([signature("tasks.add").args((x, 1)), signature("tasks.mul").args((10,))]))
/// }
/// # fn main() {}
/// ```
pub fn replace(sig: &Signature) -> Result<(), TaskError> {
    host::replace(&sig.0.to_string()).map_err(TaskError::from)
}

impl From<crate::__private::WitTaskError> for TaskError {
    fn from(e: crate::__private::WitTaskError) -> Self {
        TaskError {
            exc_type: e.exc_type,
            exc_module: e.exc_module,
            message: e.message,
            args: e.args.map(|args| args.iter().filter_map(|a| serde_json::from_str(a).ok()).collect()),
            traceback: e.traceback,
        }
    }
}

/// Celery's `self.add_to_chord(sig)`: `sig` (one task) becomes one more
/// member of the chord the running task belongs to; the body gets its result
/// too. Returns its id.
pub fn add_to_chord(sig: &Signature) -> Result<String, TaskError> {
    host::add_to_chord(&sig.0.to_string()).map_err(TaskError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_serialise_as_celerys_dicts() {
        let s = signature("tasks.add").args((2, 3)).kwarg("z", 1).countdown(5.0).immutable();
        assert_eq!(
            s.to_value(),
            &json!({"task": "tasks.add", "args": [2, 3], "kwargs": {"z": 1}, "options": {"countdown": 5.0},
                "subtask_type": null, "immutable": true})
        );
        assert_eq!(signature("tasks.xsum").args(vec![1, 2]).to_value()["args"], json!([1, 2]));
        assert_eq!(signature("tasks.log").args("x").to_value()["args"], json!(["x"]));
        let c = chord([signature("a"), signature("b")], signature("sum"));
        assert_eq!(c.to_value()["subtask_type"], json!("chord"));
        assert_eq!(c.to_value()["kwargs"]["header"]["kwargs"]["tasks"][1]["task"], json!("b"));
        assert_eq!(chain([signature("a")]).to_value()["kwargs"]["tasks"][0]["task"], json!("a"));
    }
}
