//! Canvas continuations: what a worker publishes after a task finishes.
//!
//! Celery's client sends only the first task of a workflow; the rest travels in
//! the message's `embed`. On success the worker publishes each `link` callback
//! and the next `chain` step with the result prepended to its args (unless the
//! signature is immutable, `.si()`), with `parent_id` = the finished task and
//! `root_id` = the workflow's root; the remaining chain steps travel on in the
//! new message. On failure it publishes each `link_error` errback with the failed
//! task's id as its argument (the old-style errback; a Python errback with the
//! `(request, exc, traceback)` signature runs inside a Python worker and cannot
//! be honoured here).

use chrono::Utc;
use serde_json::{Map, Value};

use crate::config::Settings;
use crate::protocol::{NewTask, TaskMessage};

/// Why a signature could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum CanvasError {
    /// Not an object with a `task` name.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// A nested group/chain/chord inside a continuation.
    #[error("nested canvas of type {0:?} in a continuation is not supported yet")]
    Nested(String),
}

/// The messages to publish after `msg` succeeded with `value`.
pub fn on_success(msg: &TaskMessage, value: &Value, settings: &Settings) -> Vec<Result<NewTask, CanvasError>> {
    let mut out: Vec<Result<NewTask, CanvasError>> =
        msg.embed.callbacks.iter().flatten().map(|sig| from_signature(sig, Some(value), msg, settings)).collect();
    if let Some(chain) = msg.embed.chain.as_ref().filter(|c| !c.is_empty()) {
        let mut rest = chain.clone();
        // The next step is the LAST element: Celery stores the chain reversed.
        if let Some(next) = rest.pop() {
            out.push(from_signature(&next, Some(value), msg, settings).map(|mut t| {
                if !rest.is_empty() {
                    t.options.embed.chain = Some(rest);
                }
                t
            }));
        }
    }
    out
}

/// The messages to publish after `msg` failed: its errbacks, called with the task id.
pub fn on_failure(msg: &TaskMessage, settings: &Settings) -> Vec<Result<NewTask, CanvasError>> {
    let id = Value::String(msg.id.clone());
    msg.embed.errbacks.iter().flatten().map(|sig| from_signature(sig, Some(&id), msg, settings)).collect()
}

/// What completing a chord leads to (one per completed chord, short-lived:
/// the size difference between the variants does not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum ChordOutcome {
    /// Every member succeeded: send the body with the list of results.
    Publish(NewTask),
    /// A member failed: the body fails with `ChordError` without running.
    Fail {
        /// The body's task id.
        body_id: String,
        /// Why.
        message: String,
    },
}

/// The chord body to run (or fail) once every header member of `msg`'s chord
/// has finished; `entries` are the members' `[1, id, state, result]` in order.
pub fn chord_body(msg: &TaskMessage, entries: &[Value], settings: &Settings) -> Result<ChordOutcome, CanvasError> {
    let body = msg.embed.chord.as_ref().ok_or_else(|| CanvasError::Malformed("no chord body".into()))?;
    let body_id = body
        .pointer("/options/task_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut results = Vec::with_capacity(entries.len());
    for e in entries {
        let (id, state, result) = (e.get(1), e.get(2).and_then(Value::as_str), e.get(3));
        if state != Some("SUCCESS") {
            let id = id.and_then(Value::as_str).unwrap_or("?");
            let exc = result.and_then(|r| r.get("exc_type")).and_then(Value::as_str).unwrap_or("an error");
            return Ok(ChordOutcome::Fail { body_id, message: format!("Dependency {id} raised {exc}") });
        }
        results.push(result.cloned().unwrap_or(Value::Null));
    }
    let mut task = from_signature(body, Some(&Value::Array(results)), msg, settings)?;
    task.id = body_id;
    Ok(ChordOutcome::Publish(task))
}

/// Turn a signature (`{"task", "args", "kwargs", "options", "subtask_type",
/// "immutable"}`) into a message, the way `Signature.apply_async` would.
fn from_signature(
    sig: &Value,
    prepend: Option<&Value>,
    parent: &TaskMessage,
    settings: &Settings,
) -> Result<NewTask, CanvasError> {
    let obj = sig.as_object().ok_or_else(|| CanvasError::Malformed(sig.to_string()))?;
    if let Some(kind) = obj.get("subtask_type").and_then(Value::as_str) {
        return Err(CanvasError::Nested(kind.to_string()));
    }
    let name = obj.get("task").and_then(Value::as_str).ok_or_else(|| CanvasError::Malformed(sig.to_string()))?;
    let immutable = obj.get("immutable").and_then(Value::as_bool).unwrap_or(false);
    let mut args: Vec<Value> = obj.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
    if let (Some(v), false) = (prepend, immutable) {
        args.insert(0, v.clone());
    }
    let kwargs: Map<String, Value> = obj.get("kwargs").and_then(Value::as_object).cloned().unwrap_or_default();
    let empty = Map::new();
    let opts = obj.get("options").and_then(Value::as_object).unwrap_or(&empty);
    let mut task = NewTask::new(name, args, kwargs);
    if let Some(id) = opts.get("task_id").and_then(Value::as_str) {
        task.id = id.to_string();
    }
    let route = settings.route(name);
    let o = &mut task.options;
    // A queue in the signature's options wins over task_routes, as in Celery.
    (o.exchange, o.queue) = match opts.get("queue").and_then(Value::as_str) {
        Some(q) => (String::new(), q.to_string()),
        None => route.publish_target(&settings.task_default_queue, settings.exchange_routing()),
    };
    o.priority = opts.get("priority").and_then(Value::as_u64).map(|p| p.min(255) as u8).or(route.priority);
    o.parent_id = Some(parent.id.clone());
    o.root_id = Some(parent.root_id.clone().unwrap_or_else(|| parent.id.clone()));
    o.reply_to = opts.get("reply_to").and_then(Value::as_str).map(str::to_string);
    o.group = opts.get("group_id").and_then(Value::as_str).map(str::to_string);
    o.group_index = opts.get("group_index").and_then(Value::as_u64);
    o.ignore_result = opts.get("ignore_result").and_then(Value::as_bool).unwrap_or(false);
    o.timelimit.hard = opts.get("time_limit").and_then(Value::as_f64);
    o.timelimit.soft = opts.get("soft_time_limit").and_then(Value::as_f64);
    if let Some(c) = opts.get("countdown").and_then(Value::as_f64) {
        o.eta = crate::protocol::time::after_seconds(Utc::now(), c)
            .ok_or_else(|| CanvasError::Malformed(format!("countdown {c} is out of range")))
            .map(Some)?;
    }
    o.serializer = parent.serializer;
    let list = |key: &str| opts.get(key).and_then(Value::as_array).cloned();
    o.embed.callbacks = list("link");
    o.embed.errbacks = list("link_error");
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AcceptContent, NewTask};
    use serde_json::json;

    fn message_with_embed(embed: Value) -> TaskMessage {
        let mut t = NewTask::new("tasks.add", vec![json!(2), json!(2)], Map::new());
        t.options.embed = crate::protocol::Embed::from_value(&embed).unwrap();
        let envelope = t.encode().unwrap().to_envelope(Some("tag".into()));
        TaskMessage::from_envelope(&envelope, &AcceptContent::default()).unwrap()
    }

    fn sig(task: &str, args: Value, options: Value) -> Value {
        json!({"task": task, "args": args, "kwargs": {}, "options": options, "subtask_type": null, "immutable": false})
    }

    #[test]
    fn callbacks_get_the_result_prepended_and_the_lineage() {
        let msg = message_with_embed(json!({"callbacks": [sig("tasks.add", json!([10]), json!({}))]}));
        let out = on_success(&msg, &json!(4), &Settings::default());
        let t = out.into_iter().next().unwrap().unwrap();
        assert_eq!((t.name.as_str(), t.args.clone()), ("tasks.add", vec![json!(4), json!(10)]));
        assert_eq!(t.options.parent_id.as_deref(), Some(msg.id.as_str()));
        assert_eq!(t.options.root_id.as_deref(), Some(msg.id.as_str()));
        assert_eq!(t.options.queue, "celery");
    }

    #[test]
    fn the_next_chain_step_is_the_last_element_and_carries_the_rest() {
        let step3 = sig("tasks.add", json!([4]), json!({"task_id": "id-3"}));
        let step2 = sig("tasks.mul", json!([8]), json!({"task_id": "id-2"}));
        let msg = message_with_embed(json!({"chain": [step3.clone(), step2]}));
        let out = on_success(&msg, &json!(4), &Settings::default());
        let t = out.into_iter().next().unwrap().unwrap();
        assert_eq!((t.id.as_str(), t.name.as_str()), ("id-2", "tasks.mul"));
        assert_eq!(t.args, vec![json!(4), json!(8)]);
        assert_eq!(t.options.embed.chain, Some(vec![step3]));
    }

    #[test]
    fn immutable_signatures_keep_their_args_and_errbacks_get_the_task_id() {
        let mut s = sig("tasks.add", json!([1, 2]), json!({}));
        s["immutable"] = json!(true);
        let msg =
            message_with_embed(json!({"callbacks": [s.clone()], "errbacks": [sig("tasks.log", json!([]), json!({}))]}));
        let t = on_success(&msg, &json!(99), &Settings::default()).remove(0).unwrap();
        assert_eq!(t.args, vec![json!(1), json!(2)]);
        let e = on_failure(&msg, &Settings::default()).remove(0).unwrap();
        assert_eq!(e.args, vec![json!(msg.id)]);
    }

    #[test]
    fn a_complete_chord_sends_its_body_with_every_result_in_order() {
        let body = sig("tasks.xsum", json!([]), json!({"task_id": "body-id"}));
        let msg = message_with_embed(json!({"chord": body}));
        let entries = vec![json!([1, "a", "SUCCESS", 0]), json!([1, "b", "SUCCESS", 2])];
        match chord_body(&msg, &entries, &Settings::default()).unwrap() {
            ChordOutcome::Publish(t) => {
                assert_eq!((t.id.as_str(), t.name.as_str()), ("body-id", "tasks.xsum"));
                assert_eq!(t.args, vec![json!([0, 2])]);
            }
            other => panic!("{other:?}"),
        }
        let failed = vec![json!([1, "a", "FAILURE", {"exc_type": "ValueError"}])];
        assert!(matches!(chord_body(&msg, &failed, &Settings::default()).unwrap(), ChordOutcome::Fail { .. }));
    }

    #[test]
    fn an_absurd_countdown_is_an_error_not_a_panic() {
        let msg = message_with_embed(json!({"callbacks": [sig("tasks.add", json!([1]), json!({"countdown": 1e300}))]}));
        assert!(matches!(on_success(&msg, &json!(1), &Settings::default())[0], Err(CanvasError::Malformed(_))));
    }

    #[test]
    fn nested_canvases_are_reported() {
        let mut s = sig("celery.group", json!([]), json!({}));
        s["subtask_type"] = json!("group");
        let msg = message_with_embed(json!({"callbacks": [s]}));
        let out = on_success(&msg, &json!(1), &Settings::default());
        assert!(matches!(out[0], Err(CanvasError::Nested(_))));
    }
}
