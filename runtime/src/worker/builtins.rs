//! Celery's builtin tasks that Python clients send to workers, served natively
//! (`celery/app/builtins.py`).
//!
//! A Celery worker registers a few tasks of its own, and stock clients send
//! them: `add.map(items)` and `add.starmap(items)` (and `add.chunks(items, n)`,
//! which a client expands into a group of `celery.starmap`) are messages for
//! `celery.map` / `celery.starmap` with the task's signature and the items as
//! keyword arguments. No component serves those names, so the worker runs them
//! itself, as Celery does: the named task is called once per item, inline
//! (each call in a fresh sandbox, with that task's limits), and the list of
//! results is the builtin's result; the first item that fails fails the whole
//! call with its exception. `celery.accumulate` and `celery.backend_cleanup`
//! are served too, and `celery.chord_unlock`, which completes chords on a
//! result backend that does not count them (the database backend): it polls
//! the members every second (a retry of itself) until all are ready, then
//! sends the body with their results, or fails it with `ChordError`.

use serde_json::{Map, Value};

use super::Shared;
use crate::protocol::{ExceptionInfo, TaskMessage};
use crate::sandbox::{CallError, CallReport, CallResult, FailureKind, Invocation, Limits, Outcome, TaskFailure};

/// A builtin task the worker serves without a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `celery.map(task, it)`: `[task(item) for item in it]`.
    Map,
    /// `celery.starmap(task, it)`: `[task(*item) for item in it]`.
    Starmap,
    /// `celery.accumulate(*args, index=None)`: `args[index]`, or `args`.
    Accumulate,
    /// `celery.backend_cleanup()`: result expiry is the backend's own here
    /// (Redis `SETEX`; the database backend deletes expired rows as it writes).
    BackendCleanup,
    /// `celery.chord_unlock(group_id, callback, interval=None, max_retries=None, result=[...])`.
    ChordUnlock,
    /// `celery.group(tasks, result, group_id, partial_args)`: sends the tasks as one group.
    Group,
    /// `celery.chord(header, body, partial_args=())`: sends the chord.
    Chord,
    /// `celery.chunks(task, it, n)`: a group of `celery.starmap` over chunks of `n` items.
    Chunks,
    /// `celery.chain(...)`: "chain is not a real task" (`NotImplementedError`), as in Celery.
    Chain,
}

impl Builtin {
    /// The builtin named `task`, if it is one.
    pub fn named(task: &str) -> Option<Builtin> {
        match task {
            "celery.map" => Some(Builtin::Map),
            "celery.starmap" => Some(Builtin::Starmap),
            "celery.accumulate" => Some(Builtin::Accumulate),
            "celery.backend_cleanup" => Some(Builtin::BackendCleanup),
            "celery.chord_unlock" => Some(Builtin::ChordUnlock),
            "celery.group" => Some(Builtin::Group),
            "celery.chord" => Some(Builtin::Chord),
            "celery.chunks" => Some(Builtin::Chunks),
            "celery.chain" => Some(Builtin::Chain),
            _ => None,
        }
    }
}

/// A failure raised by the builtin itself (bad arguments), as Celery's would be.
fn raised(exc_type: &str, message: String) -> TaskFailure {
    TaskFailure {
        kind: FailureKind::Raised,
        exc_type: exc_type.to_string(),
        exc_module: "builtins".to_string(),
        traceback: format!("Traceback (most recent call last):\n  (celeriac builtin task)\n{exc_type}: {message}\n"),
        args: None,
        message,
    }
}

/// A result with nothing run in a sandbox.
fn host_result(outcome: Outcome) -> CallResult {
    CallResult {
        outcome,
        report: CallReport::default(),
        limits: Limits::default(),
        version: "builtin".into(),
        host_memory: None,
        sent: Vec::new(),
        replacement: None,
        chord_additions: Vec::new(),
        disposition: None,
    }
}

/// Argument `index`/`name` of a Python call `f(task, it)`: positional or keyword.
fn argument<'a>(msg: &'a TaskMessage, index: usize, name: &str) -> Option<&'a Value> {
    msg.args.get(index).or_else(|| msg.kwargs.get(name))
}

/// Run `builtin` for `msg`; `inv` is what the call would have been given.
pub async fn call(s: &Shared, builtin: Builtin, msg: &TaskMessage, inv: Invocation) -> Result<CallResult, CallError> {
    match builtin {
        Builtin::Accumulate => Ok(host_result(accumulate(&msg.args, &msg.kwargs))),
        Builtin::BackendCleanup => Ok(host_result(Outcome::Success(Value::Null))),
        Builtin::Map | Builtin::Starmap => each(s, builtin, msg, inv).await,
        Builtin::ChordUnlock => Ok(chord_unlock(s, msg).await),
        Builtin::Group | Builtin::Chord | Builtin::Chunks => Ok(canvas_builtin(builtin, msg)),
        Builtin::Chain => {
            Ok(host_result(Outcome::Failure(raised("NotImplementedError", "chain is not a real task".into()))))
        }
    }
}

/// `celery.group`, `celery.chord`, `celery.chunks` (Celery keeps them "for
/// backwards compatibility"): the canvas they describe, sent as this call's
/// signature; the result is the group's result tuple (`celery.group`), the
/// chunks' group tuple, or the chord body's id.
fn canvas_builtin(builtin: Builtin, msg: &TaskMessage) -> CallResult {
    use serde_json::json;
    let fail = |message: &str| host_result(Outcome::Failure(raised("TypeError", message.to_string())));
    let sig = |task: &str, kind: &str, kwargs: Value, options: Value| json!({"task": task, "args": [], "kwargs": kwargs, "options": options, "subtask_type": kind, "immutable": false});
    let partial = |index: usize| match argument(msg, index, "partial_args") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let (mut canvas, value) = match builtin {
        Builtin::Group => {
            let (Some(Value::Array(tasks)), Some(result)) = (argument(msg, 0, "tasks"), argument(msg, 1, "result"))
            else {
                return fail("group() needs tasks and result");
            };
            let group_id = argument(msg, 2, "group_id").cloned().unwrap_or(Value::Null);
            (sig("celery.group", "group", json!({"tasks": tasks}), json!({"task_id": group_id})), result.clone())
        }
        Builtin::Chord => {
            let (Some(header), Some(body)) = (argument(msg, 0, "header"), argument(msg, 1, "body")) else {
                return fail("chord() needs header and body");
            };
            let header = if header.is_array() {
                json!({"task": "celery.group", "args": [], "kwargs": {"tasks": header},
                "options": {}, "subtask_type": "group", "immutable": false})
            } else {
                header.clone()
            };
            let mut c = sig("celery.chord", "chord", json!({"header": header, "body": body, "kwargs": {}}), json!({}));
            let id = match crate::protocol::signature::freeze(&mut c, None) {
                Ok(id) => id,
                Err(e) => return host_result(Outcome::Failure(raised("ValueError", e.to_string()))),
            };
            (c, Value::String(id))
        }
        _ => {
            let (Some(task), Some(Value::Array(items)), Some(n)) =
                (argument(msg, 0, "task"), argument(msg, 1, "it"), argument(msg, 2, "n").and_then(Value::as_u64))
            else {
                return fail("chunks() needs task, it and n");
            };
            let parts: Vec<Value> = items
                .chunks(n.max(1) as usize)
                .map(|part| {
                    json!({"task": "celery.starmap", "args": [], "kwargs": {"task": task, "it": part},
                    "options": {}, "subtask_type": null, "immutable": true})
                })
                .collect();
            let mut g = sig("celery.group", "group", json!({"tasks": parts}), json!({}));
            let gid = match crate::protocol::signature::freeze(&mut g, None) {
                Ok(id) => id,
                Err(e) => return host_result(Outcome::Failure(raised("ValueError", e.to_string()))),
            };
            let members: Vec<&str> = g["kwargs"]["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["options"]["task_id"].as_str())
                .collect();
            let tuple = crate::protocol::group_tuple(&gid, &members);
            (g, tuple)
        }
    };
    // Celery's `clone(partial_args)`: put before each starting task's own arguments.
    for arg in partial(if builtin == Builtin::Chord { 2 } else { 3 }).into_iter().rev() {
        if let Err(e) = super::canvas::prepend_args(&mut canvas, arg) {
            return host_result(Outcome::Failure(raised("ValueError", e.to_string())));
        }
    }
    let mut r = host_result(Outcome::Success(value));
    r.sent.push(canvas);
    r
}

/// `celery.chord_unlock`: every member ready → the body is sent (its args
/// prepended with the members' results in order) or, when one failed, stored
/// as failed with `ChordError`; otherwise a retry in `interval` seconds.
async fn chord_unlock(s: &Shared, msg: &TaskMessage) -> CallResult {
    let fail = |exc_type: &str, message: String| host_result(Outcome::Failure(raised(exc_type, message)));
    let (Some(Value::String(group_id)), Some(callback)) = (argument(msg, 0, "group_id"), argument(msg, 1, "callback"))
    else {
        return fail("TypeError", "unlock_chord() needs group_id and callback".into());
    };
    let ids: Vec<String> = match msg.kwargs.get("result") {
        Some(Value::Array(tuples)) => {
            tuples.iter().filter_map(|t| t.pointer("/0/0").and_then(Value::as_str)).map(str::to_string).collect()
        }
        _ => return fail("TypeError", "unlock_chord() needs result=[member result tuples]".into()),
    };
    let interval = msg.kwargs.get("interval").and_then(Value::as_f64).unwrap_or(super::canvas::CHORD_UNLOCK_INTERVAL);
    let max_retries = msg.kwargs.get("max_retries").and_then(Value::as_u64).map(|n| n.min(u32::MAX as u64) as u32);
    let again = |why: Option<String>| {
        let exc = why.map(|m| raised("RuntimeError", m));
        host_result(Outcome::Retry(crate::sandbox::RetryRequest {
            countdown: Some(interval),
            eta: None,
            exc,
            max_retries: Some(max_retries.unwrap_or(u32::MAX)),
        }))
    };
    let Some(backend) = &s.backend else { return fail("RuntimeError", "chord_unlock needs a result backend".into()) };
    let mut results = Vec::with_capacity(ids.len());
    for id in &ids {
        match backend.get(id).await {
            Ok(Some(meta)) if meta.status.is_ready() => results.push(meta),
            Ok(_) => return again(None),
            Err(e) => return again(Some(format!("cannot read the result of {id}: {e}"))),
        }
    }
    let mut body = callback.clone();
    let body_id = match crate::protocol::signature::freeze(&mut body, None) {
        Ok(id) => id,
        Err(e) => return fail("ValueError", format!("chord {group_id}: its body is {e}")),
    };
    if let Some(failed) = results.iter().find(|m| m.status != crate::protocol::TaskState::Success) {
        let exc = failed.result.get("exc_type").and_then(Value::as_str).unwrap_or("an error");
        let message = format!("Dependency {} raised {exc}", failed.task_id);
        tracing::error!("Chord {group_id} raised: {message}");
        let error = ExceptionInfo::new("ChordError", vec![Value::String(message)], "celery.exceptions");
        super::request::store_failure_of(s, &body_id, &error).await;
        // The body's errbacks, called with its id (sent as this call's signatures).
        let mut r = host_result(Outcome::Success(Value::Null));
        r.sent = super::canvas::errback_signatures(&body, &body_id);
        return r;
    }
    // The body with the results prepended, sent as a signature of this call (parent: the unlock task).
    let values = Value::Array(results.into_iter().map(|m| m.result).collect());
    if super::canvas::prepend_args(&mut body, values).is_err() {
        return fail("ValueError", format!("chord {group_id}: its body is no signature"));
    }
    let mut r = host_result(Outcome::Success(Value::Null));
    r.sent.push(body);
    r
}

/// `celery.accumulate`.
fn accumulate(args: &[Value], kwargs: &Map<String, Value>) -> Outcome {
    match kwargs.get("index") {
        None | Some(Value::Null) => Outcome::Success(Value::Array(args.to_vec())),
        Some(i) => {
            let len = args.len() as i64;
            let at = i.as_i64().map(|i| if i < 0 { i + len } else { i });
            match at.filter(|i| (0..len).contains(i)) {
                Some(i) => Outcome::Success(args[i as usize].clone()),
                None if i.is_i64() => Outcome::Failure(raised("IndexError", "tuple index out of range".into())),
                None => Outcome::Failure(raised("TypeError", "tuple indices must be integers or slices".into())),
            }
        }
    }
}

/// `celery.map` / `celery.starmap`: the named task once per item, inline.
async fn each(s: &Shared, builtin: Builtin, msg: &TaskMessage, inv: Invocation) -> Result<CallResult, CallError> {
    let fail = |exc_type: &str, message: String| Ok(host_result(Outcome::Failure(raised(exc_type, message))));
    let what = if builtin == Builtin::Map { "xmap" } else { "xstarmap" };
    let task = match argument(msg, 0, "task") {
        Some(Value::Object(sig)) => sig.get("task").and_then(Value::as_str),
        Some(Value::String(name)) => Some(name.as_str()),
        _ => None,
    };
    let Some(task) = task else {
        return fail("TypeError", format!("{what}() needs a task signature as its 'task' argument"));
    };
    let Some(Value::Array(items)) = argument(msg, 1, "it") else {
        return fail("TypeError", format!("{what}() needs a list of items as its 'it' argument"));
    };
    if Builtin::named(task).is_some() || s.sandbox.task(task).is_none() {
        let exc = ExceptionInfo::not_registered(task);
        let message = format!("Task of kind '{task}' never registered, please make sure it's imported.");
        return Ok(host_result(Outcome::Failure(TaskFailure {
            kind: FailureKind::Raised,
            exc_type: exc.exc_type.clone(),
            exc_module: exc.exc_module.clone().unwrap_or_default(),
            traceback: format!(
                "Traceback (most recent call last):\n  (celeriac builtin task {what})\nNotRegistered: {message}\n"
            ),
            args: Some(exc.exc_message.clone()),
            message,
        })));
    }
    // A tenant's task runs only as a message of its own, where the tenant's
    // quotas, grants and accounting apply (a map over it would run it under the
    // builtin's instead).
    if let Some(tenant) = s.tenant_of(task) {
        return fail(
            "PermissionError",
            format!(
                "{what}() over {task}, a task of tenant {tenant:?}, is not allowed: send its calls as tasks (a group)"
            ),
        );
    }
    let mut results = Vec::with_capacity(items.len());
    let mut sent = Vec::new();
    let mut total = CallReport::default();
    let (mut limits, mut version) = (Limits::default(), String::new());
    for item in items {
        let args = match (builtin, item) {
            (Builtin::Starmap, Value::Array(a)) => Value::Array(a.clone()),
            (Builtin::Starmap, other) => {
                return fail("TypeError", format!("{task}() argument after * must be an iterable, not {other}"));
            }
            (_, other) => Value::Array(vec![other.clone()]),
        };
        let one = Invocation {
            args: args.to_string(),
            kwargs: "{}".into(),
            request: inv.request.clone(),
            message_time_limit: inv.message_time_limit,
            state_sink: None,
            may_send: inv.may_send,
            send_namespace: inv.send_namespace.clone(),
            soft_time_limit: inv.soft_time_limit,
            http_allow: inv.http_allow.clone(),
            config: inv.config.clone(),
        };
        let r = s.sandbox.call(task, one).await?;
        total.wall += r.report.wall;
        total.fuel_consumed += r.report.fuel_consumed;
        total.peak_memory = total.peak_memory.max(r.report.peak_memory);
        (limits, version) = (r.limits, r.version);
        sent.extend(r.sent);
        if r.replacement.is_some() {
            tracing::warn!("{task} replaced itself inside {what}: one item cannot be replaced; ignored");
        }
        match r.outcome {
            Outcome::Success(v) => results.push(v),
            Outcome::Failure(f) => {
                return Ok(CallResult {
                    outcome: Outcome::Failure(f),
                    report: total,
                    limits,
                    version,
                    host_memory: None,
                    sent,
                    replacement: None,
                    chord_additions: Vec::new(),
                    disposition: None,
                });
            }
            Outcome::Retry(_) => {
                return fail(
                    "RuntimeError",
                    format!("{task} asked to be retried inside {what}, which cannot retry one item"),
                );
            }
        }
    }
    Ok(CallResult {
        outcome: Outcome::Success(Value::Array(results)),
        report: total,
        limits,
        version,
        host_memory: None,
        sent,
        replacement: None,
        chord_additions: Vec::new(),
        disposition: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accumulate_returns_all_its_arguments_or_the_one_at_index() {
        let args = [json!(1), json!("b"), json!([3])];
        let ok = |o: Outcome| match o {
            Outcome::Success(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(ok(accumulate(&args, &Map::new())), json!([1, "b", [3]]));
        let at = |i: Value| accumulate(&args, json!({"index": i}).as_object().unwrap());
        assert_eq!(ok(at(json!(1))), json!("b"));
        assert_eq!(ok(at(json!(-1))), json!([3]));
        assert!(matches!(at(json!(3)), Outcome::Failure(f) if f.exc_type == "IndexError"));
        assert!(matches!(at(json!("x")), Outcome::Failure(f) if f.exc_type == "TypeError"));
    }

    #[test]
    fn only_celerys_builtin_names_are_builtins() {
        assert_eq!(Builtin::named("celery.map"), Some(Builtin::Map));
        assert_eq!(Builtin::named("celery.starmap"), Some(Builtin::Starmap));
        assert_eq!(Builtin::named("tasks.add"), None);
        assert_eq!(Builtin::named("celery.chord_unlock"), Some(Builtin::ChordUnlock));
        assert_eq!(Builtin::named("celery.chain"), Some(Builtin::Chain));
        assert_eq!(Builtin::named("celery.xmap"), None);
    }
}
