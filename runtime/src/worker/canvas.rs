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
//!
//! Every one of those is a signature applied as Celery's `apply_async` would
//! ([`apply`]): a task, or a canvas nested as Celery's client builds them — a
//! chain (a group followed by a step becomes a chord, as in `prepare_steps`), a
//! group (of tasks or chains), a chord (its size recorded, or a
//! `celery.chord_unlock` task on a backend that does not count chords). The
//! same code sends what a task sends (`canvas.send`), its replacement
//! ([`replace`]) and a completed chord's body. A form it cannot send is never
//! dropped: the id its client waits on gets a FAILURE naming it ([`NotSent`]).

use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::config::Settings;
use crate::protocol::signature::{self, Kind, SignatureError};
use crate::protocol::{NewTask, TaskMessage};
use crate::sandbox::Sandbox;

/// How the tasks a worker sends are routed: a queue in the signature's
/// options; else the `queue` the component serving the task declares (Celery's
/// task `queue` option, which wins over `task_routes` in Celery's router);
/// else `task_routes`; else `task_default_queue`.
pub struct Router<'a> {
    settings: &'a Settings,
    sandbox: Option<&'a Sandbox>,
}

impl<'a> Router<'a> {
    /// Routes from `settings`, and declared queues from the components `sandbox` serves.
    pub fn new(settings: &'a Settings, sandbox: Option<&'a Sandbox>) -> Self {
        Router { settings, sandbox }
    }

    /// The queue the component serving `task` declares, if this worker serves it.
    fn declared_queue(&self, task: &str) -> Option<String> {
        self.sandbox?.task(task)?.options.queue.clone()
    }

    /// The own queue (`queue` in its tenant.toml) of the tenant serving `task`.
    fn tenant_queue(&self, task: &str) -> Option<String> {
        self.settings.tenants.get(self.sandbox?.task(task)?.tenant()?)?.queue.clone()
    }
}

impl std::ops::Deref for Router<'_> {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        self.settings
    }
}

/// Why a signature could not be turned into messages.
#[derive(Debug, thiserror::Error)]
pub enum CanvasError {
    /// Not a signature Celeriac can read.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A form of canvas not handled yet, named.
    #[error("{0} is not supported yet")]
    Nested(String),
    /// An option that cannot be honoured (e.g. an absurd countdown).
    #[error("malformed signature: {0}")]
    Malformed(String),
}

/// A signature that could not be sent, with the id its sender would wait on
/// (so the worker can store a FAILURE there instead of leaving it PENDING).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct NotSent {
    /// The task id (chain's last, group's, chord body's) a client waits on, when known.
    pub id: Option<String>,
    /// Why.
    #[source]
    pub error: CanvasError,
}

impl NotSent {
    /// The exception stored for [`NotSent::id`]: `NotImplementedError` for a form
    /// not handled yet, `ValueError` for a malformed signature.
    pub fn exception(&self) -> crate::protocol::ExceptionInfo {
        let kind = match &self.error {
            CanvasError::Nested(_) | CanvasError::Signature(SignatureError::Unsupported(_)) => "NotImplementedError",
            _ => "ValueError",
        };
        crate::protocol::ExceptionInfo::new(kind, vec![Value::String(self.error.to_string())], "builtins")
    }
}

/// The messages applying one signature sends, as Celery's `apply_async` would.
#[derive(Debug, Default)]
pub struct Applied {
    /// The id a client waits on: the task's, a chain's last step's, a group's, a chord body's.
    pub id: String,
    /// The task messages, in sending order.
    pub tasks: Vec<NewTask>,
    /// Chords started by these messages, to record before the header is sent:
    /// their size for a backend that counts chords (Celery's `set_chord_size`,
    /// which a Python worker completing the chord reads), else a
    /// `celery.chord_unlock` task that polls the members (Celery's fallback).
    pub chords: Vec<ChordStart>,
}

/// Seconds between two polls of `celery.chord_unlock` (Celery's default
/// `result_chord_retry_interval`).
pub const CHORD_UNLOCK_INTERVAL: f64 = 1.0;

/// A chord a signature starts.
#[derive(Debug, Clone)]
pub struct ChordStart {
    /// The chord's group id.
    pub group_id: String,
    /// Its header members' task ids, in order.
    pub members: Vec<String>,
    /// Its body, as sent to the members (with `chord_size`).
    pub body: Value,
    /// What polls it on a backend that does not count chords.
    pub unlock: NewTask,
}

/// Celery's `fallback_chord_unlock`: `celery.chord_unlock(group_id, body,
/// result=[member tuples])`, one second from now, polling until every member
/// is ready, then sending the body with their results.
fn unlock_task(
    group_id: &str,
    members: &[String],
    body: &Value,
    parent: &TaskMessage,
    settings: &Router<'_>,
) -> Result<NewTask, CanvasError> {
    let result: Vec<Value> = members.iter().map(|id| json!([[id, null], null])).collect();
    let sig = json!({"task": "celery.chord_unlock", "args": [group_id, body], "kwargs": {"result": result},
        "options": {"countdown": CHORD_UNLOCK_INTERVAL}, "subtask_type": null, "immutable": true});
    from_signature(&sig, None, parent, settings)
}

impl From<NewTask> for Applied {
    fn from(task: NewTask) -> Self {
        Applied { id: task.id.clone(), tasks: vec![task], chords: Vec::new() }
    }
}

/// Apply `sig` — a task, chain, group or chord, nested as Celery allows — with
/// `prepend` (a parent's result) put before the args of the tasks that start
/// it, sent by `parent` (`parent_id`, `root_id`). Every task is frozen first
/// (its id decided), so applying the same signature twice sends the same ids.
pub fn apply(
    sig: &Value,
    prepend: Option<&Value>,
    parent: &TaskMessage,
    settings: &Router<'_>,
) -> Result<Applied, NotSent> {
    let mut sig = sig.clone();
    let id = signature::freeze(&mut sig, None).map_err(|e| NotSent { id: None, error: e.into() })?;
    let mut out = Applied { id: id.clone(), ..Applied::default() };
    apply_into(sig, prepend, parent, settings, &mut out).map_err(|error| NotSent { id: Some(id), error })?;
    Ok(out)
}

fn apply_into(
    mut sig: Value,
    prepend: Option<&Value>,
    parent: &TaskMessage,
    settings: &Router<'_>,
    out: &mut Applied,
) -> Result<(), CanvasError> {
    match signature::kind(&sig)? {
        Kind::Task => out.tasks.push(from_signature(&sig, prepend, parent, settings)?),
        Kind::Chain => {
            let link = signature::options_mut(&mut sig)?.remove("link");
            let link_error = signature::options_mut(&mut sig)?.remove("link_error");
            let mut steps = prepare_steps(std::mem::take(signature::tasks_mut(&mut sig)?))?;
            // A chain's callbacks run after its last step; its errbacks on any step's failure.
            if let (Some(Value::Array(links)), Some(last)) = (link, steps.last_mut()) {
                extend_list(signature::options_mut(last)?, "link", links);
            }
            if let Some(Value::Array(errbacks)) = link_error {
                for step in steps.iter_mut() {
                    extend_list(signature::options_mut(step)?, "link_error", errbacks.clone());
                }
            }
            let first = steps.remove(0);
            match signature::kind(&first)? {
                Kind::Task => {
                    let mut task = from_signature(&first, prepend, parent, settings)?;
                    if !steps.is_empty() {
                        // Celery carries the rest reversed: the next step is the last element.
                        steps.reverse();
                        task.options.embed.chain = Some(steps);
                    }
                    out.tasks.push(task);
                }
                _ if steps.is_empty() => apply_into(first, prepend, parent, settings, out)?,
                Kind::Chord => {
                    // chord(h, body) | rest: the chord's body becomes chain(body, rest...).
                    let mut chord = first;
                    let body = signature::body_mut(&mut chord)?.clone();
                    steps.insert(0, body);
                    *signature::body_mut(&mut chord)? = chain_of(steps);
                    apply_into(chord, prepend, parent, settings, out)?;
                }
                other => return Err(CanvasError::Nested(format!("a {other:?} step followed by more steps"))),
            }
        }
        Kind::Group => {
            let gid = sig.pointer("/options/task_id").and_then(Value::as_str).unwrap_or_default().to_string();
            for (index, member) in std::mem::take(signature::tasks_mut(&mut sig)?).into_iter().enumerate() {
                apply_member(member, &gid, index, None, prepend, parent, settings, out)?;
            }
        }
        Kind::Chord => {
            let gid = sig.pointer("/options/group_id").and_then(Value::as_str).unwrap_or_default().to_string();
            let mut body = std::mem::take(signature::body_mut(&mut sig)?);
            let header = std::mem::take(signature::header_mut(&mut sig)?);
            if header.is_empty() {
                // Celery runs the body at once with an empty list of results.
                return apply_into(body, Some(&json!([])), parent, settings, out);
            }
            if let Some(b) = body.as_object_mut() {
                b.insert("chord_size".into(), Value::from(header.len()));
            }
            let members = header.iter().map(member_id).collect::<Result<Vec<_>, _>>()?;
            let unlock = unlock_task(&gid, &members, &body, parent, settings)?;
            out.chords.push(ChordStart { group_id: gid.clone(), members, body: body.clone(), unlock });
            for (index, member) in header.into_iter().enumerate() {
                apply_member(member, &gid, index, Some(&body), prepend, parent, settings, out)?;
            }
        }
    }
    Ok(())
}

/// `value` put before the args of the tasks that start `sig` (a task's own
/// args; a chain's first step's; every member of a group or chord header), except
/// where a task is immutable (`.si()`), as Celery's `clone(args)`.
pub fn prepend_args(sig: &mut Value, value: Value) -> Result<(), CanvasError> {
    match signature::kind(sig)? {
        // Celery's `clone(args)`: an immutable signature (`.si()`) keeps its own.
        Kind::Task if sig.get("immutable").and_then(Value::as_bool).unwrap_or(false) => Ok(()),
        Kind::Task => {
            let obj = sig.as_object_mut().ok_or_else(|| CanvasError::Malformed("not an object".into()))?;
            match obj.get_mut("args") {
                Some(Value::Array(args)) => args.insert(0, value),
                _ => {
                    obj.insert("args".into(), Value::Array(vec![value]));
                }
            }
            Ok(())
        }
        Kind::Chain => match signature::tasks_mut(sig)?.first_mut() {
            Some(first) => prepend_args(first, value),
            None => Err(SignatureError::Malformed("an empty chain".into()).into()),
        },
        Kind::Group => {
            for member in signature::tasks_mut(sig)? {
                prepend_args(member, value.clone())?;
            }
            Ok(())
        }
        Kind::Chord => {
            for member in signature::header_mut(sig)? {
                prepend_args(member, value.clone())?;
            }
            Ok(())
        }
    }
}

/// The id a chord member's result is stored under (a chain member's last step's).
fn member_id(member: &Value) -> Result<String, CanvasError> {
    let id = match signature::kind(member)? {
        Kind::Chain => member.pointer("/kwargs/tasks").and_then(Value::as_array).and_then(|t| t.last()),
        _ => Some(member),
    };
    id.and_then(|m| m.pointer("/options/task_id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| CanvasError::Malformed("a chord member without a task id".into()))
}

/// One member of a group or chord header: a task, or a chain whose last step
/// carries the group (and the chord).
#[allow(clippy::too_many_arguments)]
fn apply_member(
    mut member: Value,
    gid: &str,
    index: usize,
    chord: Option<&Value>,
    prepend: Option<&Value>,
    parent: &TaskMessage,
    settings: &Router<'_>,
    out: &mut Applied,
) -> Result<(), CanvasError> {
    let in_group = |opts: &mut Map<String, Value>| {
        opts.insert("group_id".into(), Value::String(gid.to_string()));
        opts.insert("group_index".into(), Value::from(index));
    };
    match signature::kind(&member)? {
        Kind::Task => {
            in_group(signature::options_mut(&mut member)?);
            let mut task = from_signature(&member, prepend, parent, settings)?;
            task.options.embed.chord = chord.cloned();
            out.tasks.push(task);
        }
        Kind::Chain => {
            let steps = signature::tasks_mut(&mut member)?;
            let Some(last) = steps.last_mut() else { return Err(SignatureError::Malformed("an empty chain".into()))? };
            if signature::kind(last)? != Kind::Task {
                return Err(CanvasError::Nested("a chain ending in a canvas inside a group".into()));
            }
            let opts = signature::options_mut(last)?;
            in_group(opts);
            if let Some(body) = chord {
                opts.insert("chord".into(), body.clone());
            }
            apply_into(member, prepend, parent, settings, out)?;
        }
        other => return Err(CanvasError::Nested(format!("a {other:?} inside a group"))),
    }
    Ok(())
}

/// Celery's `chain.prepare_steps` upgrades: a nested chain is flattened into
/// its parent, and a group followed by another step becomes a chord whose body
/// is that step (its results are what the step receives).
fn prepare_steps(steps: Vec<Value>) -> Result<Vec<Value>, CanvasError> {
    let mut flat = Vec::with_capacity(steps.len());
    for mut step in steps {
        if signature::kind(&step)? == Kind::Chain {
            flat.extend(prepare_steps(std::mem::take(signature::tasks_mut(&mut step)?))?);
        } else {
            flat.push(step);
        }
    }
    let mut out: Vec<Value> = Vec::with_capacity(flat.len());
    let mut iter = flat.into_iter();
    while let Some(step) = iter.next() {
        if signature::kind(&step)? == Kind::Group
            && let Some(next) = iter.next()
        {
            let gid = step.pointer("/options/task_id").cloned().unwrap_or(Value::Null);
            let mut chord = json!({"task": "celery.chord", "args": [], "kwargs": {"header": step, "body": next},
                "options": {"group_id": gid}, "subtask_type": "chord", "immutable": false});
            signature::freeze(&mut chord, None)?;
            out.push(chord);
            continue;
        }
        out.push(step);
    }
    if out.is_empty() {
        return Err(SignatureError::Malformed("an empty chain".into()).into());
    }
    Ok(out)
}

/// A chain signature of `steps` (or the one step itself).
fn chain_of(mut steps: Vec<Value>) -> Value {
    if steps.len() == 1 {
        return steps.remove(0);
    }
    json!({"task": "celery.chain", "args": [], "kwargs": {"tasks": steps}, "options": {}, "subtask_type": "chain",
        "immutable": false})
}

fn extend_list(opts: &mut Map<String, Value>, key: &str, items: Vec<Value>) {
    match opts.get_mut(key) {
        Some(Value::Array(existing)) => existing.extend(items),
        _ => {
            opts.insert(key.into(), Value::Array(items));
        }
    }
}

/// The messages to publish after `msg` succeeded with `value`: its callbacks
/// and the next step of its chain (with the steps after it), each a task or a
/// canvas.
pub fn on_success(msg: &TaskMessage, value: &Value, settings: &Router<'_>) -> Vec<Result<Applied, NotSent>> {
    let mut out: Vec<Result<Applied, NotSent>> =
        msg.embed.callbacks.iter().flatten().map(|sig| apply(sig, Some(value), msg, settings)).collect();
    if let Some(chain) = msg.embed.chain.as_ref().filter(|c| !c.is_empty()) {
        let mut rest = chain.clone();
        // The next step is the LAST element: Celery stores the chain reversed.
        if let Some(next) = rest.pop() {
            rest.reverse();
            rest.insert(0, next);
            out.push(apply(&chain_of(rest), Some(value), msg, settings));
        }
    }
    out
}

/// The messages to publish after `msg` failed: its errbacks, called with the task id.
pub fn on_failure(msg: &TaskMessage, settings: &Router<'_>) -> Vec<Result<Applied, NotSent>> {
    let id = Value::String(msg.id.clone());
    msg.embed.errbacks.iter().flatten().map(|sig| apply(sig, Some(&id), msg, settings)).collect()
}

/// Celery's `Task.replace(sig)`: `sig` sent in place of `msg`'s task, frozen
/// with its id (a chain's last step, a chord's body take it), with its
/// callbacks and errbacks, its group and chord membership, and the rest of its
/// chain after it (keeping their ids). A group is uplifted to a chord whose
/// body (`celery.accumulate`) hands the list of results to the replaced id.
pub fn replace(msg: &TaskMessage, sig: &Value, settings: &Router<'_>) -> Result<Applied, NotSent> {
    let not_sent = |error: CanvasError| NotSent { id: Some(msg.id.clone()), error };
    let mut sig = sig.clone();
    if signature::kind(&sig).map_err(|e| not_sent(e.into()))? == Kind::Group {
        let accumulate = json!({"task": "celery.accumulate", "args": [], "kwargs": {"index": 0}, "options": {},
            "subtask_type": null, "immutable": false});
        sig = json!({"task": "celery.chord", "args": [], "kwargs": {"header": sig, "body": accumulate},
            "options": {}, "subtask_type": "chord", "immutable": false});
    }
    signature::freeze(&mut sig, Some(&msg.id)).map_err(|e| not_sent(e.into()))?;
    {
        let last = waited_on_mut(&mut sig, 0).map_err(not_sent)?;
        let opts = signature::options_mut(last).map_err(|e| not_sent(e.into()))?;
        extend_list(opts, "link", msg.embed.callbacks.clone().unwrap_or_default());
        extend_list(opts, "link_error", msg.embed.errbacks.clone().unwrap_or_default());
        if let Some(group) = &msg.group {
            opts.insert("group_id".into(), Value::String(group.clone()));
            opts.insert("group_index".into(), msg.group_index.map(Value::from).unwrap_or(Value::Null));
        }
        if let Some(chord) = &msg.embed.chord {
            opts.insert("chord".into(), chord.clone());
        }
    }
    if let Some(rest) = msg.embed.chain.as_ref().filter(|c| !c.is_empty()) {
        let mut steps = vec![sig];
        steps.extend(rest.iter().rev().cloned());
        sig = chain_of(steps);
    }
    apply(&sig, None, msg, settings)
}

/// The task in `sig` that carries the id a client waits on.
fn waited_on_mut(sig: &mut Value, depth: usize) -> Result<&mut Value, CanvasError> {
    if depth > signature::MAX_DEPTH {
        return Err(SignatureError::TooDeep.into());
    }
    match signature::kind(sig)? {
        Kind::Task => Ok(sig),
        Kind::Chain => {
            let last = signature::tasks_mut(sig)?
                .last_mut()
                .ok_or_else(|| SignatureError::Malformed("an empty chain".into()))?;
            waited_on_mut(last, depth + 1)
        }
        Kind::Chord => waited_on_mut(signature::body_mut(sig)?, depth + 1),
        Kind::Group => Err(CanvasError::Nested("a group as the last step of a replacement".into())),
    }
}

/// `tasks.add`, `chain(tasks.add, tasks.mul)`, ... for log lines.
pub fn describe(sig: &Value) -> String {
    let name = |v: &Value| v.get("task").and_then(Value::as_str).unwrap_or("?").to_string();
    let list = |v: Option<&Value>| {
        v.and_then(Value::as_array).map(|a| a.iter().map(describe).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    };
    match signature::kind(sig) {
        Ok(Kind::Task) => name(sig),
        Ok(Kind::Chain) => format!("chain({})", list(sig.pointer("/kwargs/tasks"))),
        Ok(Kind::Group) => format!("group({})", list(sig.pointer("/kwargs/tasks"))),
        Ok(Kind::Chord) => {
            let header = sig.pointer("/kwargs/header").map(|h| if h.is_array() { list(Some(h)) } else { describe(h) });
            let body = sig.pointer("/kwargs/body").map(describe).unwrap_or_default();
            format!("chord({}, {body})", header.unwrap_or_default())
        }
        Err(e) => e.to_string(),
    }
}

/// What completing a chord leads to (one per completed chord, short-lived:
/// the size difference between the variants does not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum ChordOutcome {
    /// Every member succeeded: send the body with the list of results.
    Publish(Applied),
    /// A member failed: the body fails with `ChordError` without running.
    Fail {
        /// The body's task id.
        body_id: String,
        /// Why.
        message: String,
        /// The body's errbacks (`link_error`), called with its id as Celery's
        /// `chord_error_from_stack` calls them.
        errbacks: Vec<Result<Applied, NotSent>>,
    },
}

/// The errbacks of a chord body that will not run, each with the body's id
/// put before its args (Celery's `chord_error_from_stack`, old-style errbacks).
pub fn errback_signatures(body: &Value, body_id: &str) -> Vec<Value> {
    let errbacks = body.pointer("/options/link_error").and_then(Value::as_array).into_iter().flatten();
    errbacks
        .filter_map(|e| {
            let mut e = e.clone();
            prepend_args(&mut e, Value::String(body_id.to_string())).ok().map(|()| e)
        })
        .collect()
}

/// [`errback_signatures`], applied as `parent` sends them.
pub fn body_errbacks(
    body: &Value,
    body_id: &str,
    parent: &TaskMessage,
    settings: &Router<'_>,
) -> Vec<Result<Applied, NotSent>> {
    errback_signatures(body, body_id).iter().map(|sig| apply(sig, None, parent, settings)).collect()
}

/// The chord body to run (or fail) once every header member of `msg`'s chord
/// has finished; `entries` are the members' `[1, id, state, result]` in order.
pub fn chord_body(msg: &TaskMessage, entries: &[Value], settings: &Router<'_>) -> Result<ChordOutcome, NotSent> {
    let not_sent = |error: CanvasError| NotSent { id: None, error };
    let body = msg.embed.chord.as_ref().ok_or_else(|| not_sent(CanvasError::Malformed("no chord body".into())))?;
    let mut body = body.clone();
    // Frozen already by whoever sent the chord; a new id only for a body without one.
    let body_id = signature::freeze(&mut body, None).map_err(|e| not_sent(e.into()))?;
    let mut results = Vec::with_capacity(entries.len());
    for e in entries {
        let (id, state, result) = (e.get(1), e.get(2).and_then(Value::as_str), e.get(3));
        if state != Some("SUCCESS") {
            let id = id.and_then(Value::as_str).unwrap_or("?");
            let exc = result.and_then(|r| r.get("exc_type")).and_then(Value::as_str).unwrap_or("an error");
            let errbacks = body_errbacks(&body, &body_id, msg, settings);
            return Ok(ChordOutcome::Fail { body_id, message: format!("Dependency {id} raised {exc}"), errbacks });
        }
        results.push(result.cloned().unwrap_or(Value::Null));
    }
    Ok(ChordOutcome::Publish(apply(&body, Some(&Value::Array(results)), msg, settings)?))
}

/// Turn one task's signature into a message, the way `Signature.apply_async`
/// would.
fn from_signature(
    sig: &Value,
    prepend: Option<&Value>,
    parent: &TaskMessage,
    settings: &Router<'_>,
) -> Result<NewTask, CanvasError> {
    let obj = sig.as_object().ok_or_else(|| CanvasError::Malformed(sig.to_string()))?;
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
    // A queue in the signature's options, else the one the task declares, wins over
    // task_routes, as in Celery; the task's tenant's own queue is the fallback when
    // no route names the task.
    let queue = opts
        .get("queue")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| settings.declared_queue(name))
        .or_else(|| settings.task_routes.route(name).is_none().then(|| settings.tenant_queue(name)).flatten());
    (o.exchange, o.queue) = match queue {
        Some(q) => (String::new(), q),
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
    o.embed.chain = list("chain").filter(|c| !c.is_empty());
    o.embed.chord = opts.get("chord").filter(|c| c.is_object()).cloned();
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
        let out = on_success(&msg, &json!(4), &Router::new(&Settings::default(), None));
        let t = out.into_iter().next().unwrap().unwrap().tasks.remove(0);
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
        let out = on_success(&msg, &json!(4), &Router::new(&Settings::default(), None));
        let t = out.into_iter().next().unwrap().unwrap().tasks.remove(0);
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
        let t =
            on_success(&msg, &json!(99), &Router::new(&Settings::default(), None)).remove(0).unwrap().tasks.remove(0);
        assert_eq!(t.args, vec![json!(1), json!(2)]);
        let e = on_failure(&msg, &Router::new(&Settings::default(), None)).remove(0).unwrap().tasks.remove(0);
        assert_eq!(e.args, vec![json!(msg.id)]);
    }

    #[test]
    fn a_complete_chord_sends_its_body_with_every_result_in_order() {
        let body = sig("tasks.xsum", json!([]), json!({"task_id": "body-id"}));
        let msg = message_with_embed(json!({"chord": body}));
        let entries = vec![json!([1, "a", "SUCCESS", 0]), json!([1, "b", "SUCCESS", 2])];
        match chord_body(&msg, &entries, &Router::new(&Settings::default(), None)).unwrap() {
            ChordOutcome::Publish(mut applied) => {
                let t = applied.tasks.remove(0);
                assert_eq!((t.id.as_str(), t.name.as_str()), ("body-id", "tasks.xsum"));
                assert_eq!(t.args, vec![json!([0, 2])]);
            }
            other => panic!("{other:?}"),
        }
        let failed = vec![json!([1, "a", "FAILURE", {"exc_type": "ValueError"}])];
        assert!(matches!(
            chord_body(&msg, &failed, &Router::new(&Settings::default(), None)).unwrap(),
            ChordOutcome::Fail { .. }
        ));
    }

    #[test]
    fn an_absurd_countdown_is_an_error_not_a_panic() {
        let msg = message_with_embed(json!({"callbacks": [sig("tasks.add", json!([1]), json!({"countdown": 1e300}))]}));
        assert!(matches!(
            &on_success(&msg, &json!(1), &Router::new(&Settings::default(), None))[0],
            Err(NotSent { error: CanvasError::Malformed(_), .. })
        ));
    }

    fn chain(steps: Vec<Value>) -> Value {
        json!({"task": "celery.chain", "args": [], "kwargs": {"tasks": steps}, "options": {}, "subtask_type": "chain",
            "immutable": false})
    }

    fn group(members: Vec<Value>) -> Value {
        json!({"task": "celery.group", "args": [], "kwargs": {"tasks": members}, "options": {}, "subtask_type": "group",
            "immutable": false})
    }

    #[test]
    fn a_group_as_a_chain_step_becomes_a_chord_whose_body_is_the_next_step() {
        // chain(add(1, 1), group(add(1), add(2)), xsum()): Celery's prepare_steps makes group | xsum a chord.
        let msg = message_with_embed(json!({}));
        let c = chain(vec![
            sig("tasks.add", json!([1, 1]), json!({})),
            group(vec![sig("tasks.add", json!([1]), json!({})), sig("tasks.add", json!([2]), json!({}))]),
            sig("tasks.xsum", json!([]), json!({})),
        ]);
        let applied = apply(&c, None, &msg, &Router::new(&Settings::default(), None)).unwrap();
        let first = &applied.tasks[0];
        assert_eq!(first.args, vec![json!(1), json!(1)]);
        let rest = first.options.embed.chain.clone().unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0]["subtask_type"], json!("chord"));
        // The chain's id is the body's (what the client waits on).
        assert_eq!(rest[0]["kwargs"]["body"]["options"]["task_id"], json!(applied.id));

        // When add(1, 1) returns 2, the chord's header gets 2 prepended and carries the body.
        let mut step = NewTask::new("tasks.add", vec![json!(1), json!(1)], Map::new());
        step.options.embed.chain = Some(rest);
        let envelope = step.encode().unwrap().to_envelope(Some("tag".into()));
        let done = TaskMessage::from_envelope(&envelope, &AcceptContent::default()).unwrap();
        let next = on_success(&done, &json!(2), &Router::new(&Settings::default(), None)).remove(0).unwrap();
        assert_eq!(next.tasks.len(), 2);
        assert_eq!(next.tasks[1].args, vec![json!(2), json!(2)]);
        assert_eq!(next.chords.len(), 1);
        let body = next.tasks[0].options.embed.chord.clone().unwrap();
        assert_eq!((body["task"].clone(), body["chord_size"].clone()), (json!("tasks.xsum"), json!(2)));
        assert_eq!(next.tasks[0].options.group, Some(next.chords[0].group_id.clone()));
    }

    #[test]
    fn a_chain_inside_a_group_carries_the_group_on_its_last_step() {
        let msg = message_with_embed(json!({}));
        let g = group(vec![
            chain(vec![sig("tasks.add", json!([1, 1]), json!({})), sig("tasks.mul", json!([3]), json!({}))]),
            sig("tasks.add", json!([5, 5]), json!({})),
        ]);
        let applied = apply(&g, None, &msg, &Router::new(&Settings::default(), None)).unwrap();
        assert_eq!(applied.tasks.len(), 2);
        let first = &applied.tasks[0];
        assert_eq!(first.options.group, None);
        let last_step = &first.options.embed.chain.as_ref().unwrap()[0];
        assert_eq!(last_step["options"]["group_id"], json!(applied.id));
        assert_eq!(applied.tasks[1].options.group.as_deref(), Some(applied.id.as_str()));
        assert_eq!(applied.tasks[1].options.group_index, Some(1));
    }

    #[test]
    fn a_chord_with_a_chain_body_sends_the_chain_when_the_header_completes() {
        let msg = message_with_embed(json!({}));
        let mut body = chain(vec![sig("tasks.xsum", json!([]), json!({})), sig("tasks.mul", json!([10]), json!({}))]);
        signature::freeze(&mut body, None).unwrap();
        let last_id = body["kwargs"]["tasks"][1]["options"]["task_id"].clone();
        let mut member = message_with_embed(json!({"chord": body}));
        member.group = Some("g".into());
        let entries = vec![json!([1, "a", "SUCCESS", 1]), json!([1, "b", "SUCCESS", 2])];
        let ChordOutcome::Publish(applied) =
            chord_body(&member, &entries, &Router::new(&Settings::default(), None)).unwrap()
        else {
            panic!("the body is sent")
        };
        assert_eq!(applied.id, last_id.as_str().unwrap());
        assert_eq!(applied.tasks[0].name, "tasks.xsum");
        assert_eq!(applied.tasks[0].args, vec![json!([1, 2])]);
        assert_eq!(applied.tasks[0].options.embed.chain.as_ref().unwrap()[0]["task"], json!("tasks.mul"));
        let _ = msg;
    }

    #[test]
    fn an_unsupported_form_names_itself_and_the_id_a_client_waits_on() {
        let msg = message_with_embed(json!({}));
        let g = group(vec![group(vec![sig("tasks.add", json!([1, 1]), json!({}))])]);
        let err = apply(&g, None, &msg, &Router::new(&Settings::default(), None)).unwrap_err();
        assert!(err.id.is_some());
        assert!(err.to_string().contains("inside a group"), "{err}");
        assert_eq!(err.exception().exc_type, "NotImplementedError");
    }

    #[test]
    fn a_replacement_takes_the_replaced_tasks_id_callbacks_and_rest_of_chain() {
        let callback = sig("tasks.log", json!([]), json!({"task_id": "cb"}));
        let later = sig("tasks.mul", json!([2]), json!({"task_id": "later"}));
        let msg = message_with_embed(json!({"callbacks": [callback], "chain": [later]}));
        let replacement =
            chain(vec![sig("tasks.add", json!([1, 1]), json!({})), sig("tasks.mul", json!([10]), json!({}))]);
        let applied = replace(&msg, &replacement, &Router::new(&Settings::default(), None)).unwrap();
        // What runs last is still the replaced task's own next step, `later`.
        assert_eq!(applied.id, "later");
        let first = &applied.tasks[0];
        assert_eq!((first.name.as_str(), first.options.parent_id.as_deref()), ("tasks.add", Some(msg.id.as_str())));
        let rest = first.options.embed.chain.as_ref().unwrap();
        // Reversed: `later` runs last, after the replacement's own mul, which took the replaced id.
        assert_eq!(rest[0]["options"]["task_id"], json!("later"));
        assert_eq!(rest[1]["options"]["task_id"], json!(msg.id));
        assert_eq!(rest[1]["options"]["link"][0]["task"], json!("tasks.log"));

        let g = group(vec![sig("tasks.add", json!([1, 1]), json!({})), sig("tasks.add", json!([2, 2]), json!({}))]);
        let applied = replace(&message_with_embed(json!({})), &g, &Router::new(&Settings::default(), None)).unwrap();
        let body = applied.tasks[0].options.embed.chord.clone().unwrap();
        assert_eq!(body["task"], json!("celery.accumulate"));
        assert_eq!(applied.chords[0].members.len(), 2);
    }
}
