//! Calls into the worker: [`update_state`], [`request`], [`soft_time_left`] and [`config`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::__private::bindings::celeriac::task::{config as config_values, host, types};

/// A configuration value the operator set for this task's tenant (the
/// `[config]` table of its `tenant.toml`), e.g. an API key; `None` if unset.
/// The worker never logs these values.
///
/// ```no_run
/// let key = celeriac_sdk::config("api_key").unwrap_or_default();
/// ```
pub fn config(key: &str) -> Option<String> {
    config_values::get(key)
}

/// Reports a custom task state, like Celery's
/// `self.update_state(state=..., meta=...)`.
///
/// A client polling the result sees `result.state == state` and
/// `result.info == meta` while the task runs. The final state (`SUCCESS` or
/// `FAILURE`) is always set by the worker.
///
/// ```no_run
/// for i in 0..10 {
///     celeriac_sdk::update_state("PROGRESS", &serde_json::json!({"current": i, "total": 10}));
/// }
/// ```
///
/// # Panics
///
/// If `meta` cannot be serialised to JSON (e.g. a map with non-string keys),
/// or when called outside a component.
pub fn update_state<M: Serialize + ?Sized>(state: &str, meta: &M) {
    let meta = match serde_json::to_string(meta) {
        Ok(json) => json,
        Err(e) => panic!("update_state({state:?}): meta is not JSON-serialisable: {e}"),
    };
    update_state_json(state, &meta);
}

/// [`update_state`] with `meta` given as JSON text, passed on unchanged.
pub fn update_state_json(state: &str, meta_json: &str) {
    host::update_state(state, meta_json);
}

/// The context of the task call being run: Celery's `self.request`.
///
/// Serialises to a JSON object with the same field names, so a task can
/// return it as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The task id (a UUID string).
    pub id: String,
    /// The full Celery task name, e.g. `tasks.add`.
    pub name: String,
    /// How many times this task has been retried so far.
    pub retries: u32,
    /// When the task was scheduled to run (ISO-8601), if it had an ETA.
    pub eta: Option<String>,
    /// When the task expires (ISO-8601), if it has an expiry.
    pub expires: Option<String>,
    /// The id of the first task of the workflow.
    pub root_id: Option<String>,
    /// The id of the task that sent this one.
    pub parent_id: Option<String>,
    /// The id of the group this task is a member of.
    pub group_id: Option<String>,
    /// The hostname of the worker, e.g. `celeriac@host`.
    pub hostname: String,
    /// Every message header (custom headers included). Empty if the worker
    /// sent something that is not a JSON object.
    pub headers: Map<String, Value>,
}

impl From<types::RequestContext> for Request {
    fn from(r: types::RequestContext) -> Self {
        let headers = match serde_json::from_str(&r.headers) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        Request {
            id: r.id,
            name: r.name,
            retries: r.retries,
            eta: r.eta,
            expires: r.expires,
            root_id: r.root_id,
            parent_id: r.parent_id,
            group_id: r.group_id,
            hostname: r.hostname,
            headers,
        }
    }
}

/// Seconds left until the call's soft time limit (Celery's `soft_time_limit`),
/// negative once it has passed; `None` when the call has none.
///
/// A Python task gets `SoftTimeLimitExceeded` raised inside it; a wasm task is
/// not interrupted: it asks, stops and returns what it has (or returns
/// [`TaskError::soft_time_limit_exceeded`](crate::TaskError::soft_time_limit_exceeded),
/// which the client sees as Celery's exception). The hard limit still stops it.
///
/// ```no_run
/// let mut done = Vec::new();
/// for item in 0..1_000_000 {
///     if celeriac_sdk::soft_time_left().is_some_and(|left| left <= 0.0) {
///         break; // a partial result
///     }
///     done.push(item);
/// }
/// ```
pub fn soft_time_left() -> Option<f64> {
    host::soft_time_left()
}

/// Celery's `self.request.delivery_info` with the message's properties:
/// `exchange`, `routing_key`, `priority`, `redelivered`, `reply_to`,
/// `correlation_id`, `content_type`.
pub fn delivery_info() -> Map<String, Value> {
    match serde_json::from_str(&host::delivery_info()) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Celery's `raise Ignore()`: when the task returns (successfully), nothing is
/// stored for it and no callback runs. Return right after calling it.
pub fn ignore() {
    host::ignore();
}

/// Celery's `raise Reject(requeue=...)`: when the task returns (successfully),
/// nothing is stored and its message is given back to the queue (`requeue`)
/// or dropped. Needs late acks (`acks_late`), as in Celery. Return right after.
pub fn reject(requeue: bool) {
    host::reject(requeue);
}

/// The [`Request`] context of the call being run (Celery's `self.request`).
///
/// ```no_run
/// let req = celeriac_sdk::request();
/// celeriac_sdk::log::info(format!("running {} (retry {})", req.id, req.retries));
/// ```
///
/// # Panics
///
/// When called outside a component.
pub fn request() -> Request {
    host::request().into()
}
