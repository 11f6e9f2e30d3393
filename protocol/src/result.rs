//! Task result values (`celery-task-meta-<id>`).
//!
//! The result backend stores one value per task and publishes the same bytes
//! on a channel of the same name. Python clients read it with `AsyncResult`;
//! what they need is in `03-result-backend/client-handwritten-tests.json`:
//! `status`, `result` and `task_id` at least, `exc_module` right for
//! failures. Celery writes the keys in this order:
//!
//! ```text
//! status, result, traceback, children, date_done, [group_id], [parent_id],
//! [name, args, kwargs, worker, retries, queue  (result_extended only)],
//! [component_version  (Celeriac's own)], task_id
//! ```
//!
//! `component_version` is Celeriac's addition: the content hash of the
//! component that produced the result, so an operator can tell which upload
//! of a hot-deployed task answered. Celery's client keeps the stored dict as
//! it is and reads only the keys it knows, so the extra key changes nothing
//! for it (`AsyncResult.get`, `.state`, `.traceback`, `.date_done`).
//!
//! `date_done` is set for the ready states (SUCCESS, FAILURE, REVOKED) and
//! null otherwise (STARTED, RETRY, custom states). The value is serialised
//! with the result serializer: JSON text, or raw msgpack bytes when
//! `result_serializer = "msgpack"` (Celery's backend `encode` is plain
//! `kombu.serialization.dumps`, no envelope, no base64).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::content::Serializer;
use super::error::{ProtocolError, describe};
use super::exception::ExceptionInfo;
use super::time::{isoformat, parse_datetime};

/// Key prefix of task results.
pub const TASK_META_PREFIX: &str = "celery-task-meta-";
/// Key prefix of saved group results.
pub const TASKSET_META_PREFIX: &str = "celery-taskset-meta-";

/// The result key (and pub/sub channel) of a task: `celery-task-meta-<id>`.
pub fn result_key(task_id: &str) -> String {
    format!("{TASK_META_PREFIX}{task_id}")
}

/// A Celery task state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Unknown / not yet run (never stored by workers).
    Pending,
    /// Received by a worker (events only).
    Received,
    /// Running (stored only with `task_track_started`).
    Started,
    /// Finished with a return value.
    Success,
    /// Raised an exception.
    Failure,
    /// Will be retried.
    Retry,
    /// Revoked, terminated or expired.
    Revoked,
    /// Rejected by the task (`Reject`).
    Rejected,
    /// Ignored (`Ignore`).
    Ignored,
    /// A state set by the task itself, e.g. `PROGRESS`.
    Custom(String),
}

impl TaskState {
    /// The wire spelling, e.g. `SUCCESS`.
    pub fn as_str(&self) -> &str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Received => "RECEIVED",
            TaskState::Started => "STARTED",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Retry => "RETRY",
            TaskState::Revoked => "REVOKED",
            TaskState::Rejected => "REJECTED",
            TaskState::Ignored => "IGNORED",
            TaskState::Custom(s) => s,
        }
    }

    /// Parse a wire state; unknown names become [`TaskState::Custom`].
    pub fn parse(s: &str) -> TaskState {
        match s {
            "PENDING" => TaskState::Pending,
            "RECEIVED" => TaskState::Received,
            "STARTED" => TaskState::Started,
            "SUCCESS" => TaskState::Success,
            "FAILURE" => TaskState::Failure,
            "RETRY" => TaskState::Retry,
            "REVOKED" => TaskState::Revoked,
            "REJECTED" => TaskState::Rejected,
            "IGNORED" => TaskState::Ignored,
            other => TaskState::Custom(other.to_owned()),
        }
    }

    /// Celery's `READY_STATES`: SUCCESS, FAILURE, REVOKED (`date_done` is set).
    pub fn is_ready(&self) -> bool {
        matches!(self, TaskState::Success | TaskState::Failure | TaskState::Revoked)
    }

    /// Celery's `EXCEPTION_STATES`: RETRY, FAILURE, REVOKED (`result` is an
    /// exception).
    pub fn is_exception(&self) -> bool {
        matches!(self, TaskState::Retry | TaskState::Failure | TaskState::Revoked)
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `result_extended` fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtendedMeta {
    /// Task name.
    pub name: Option<String>,
    /// Positional arguments.
    pub args: Value,
    /// Keyword arguments.
    pub kwargs: Value,
    /// Worker hostname.
    pub worker: Option<String>,
    /// Retry count.
    pub retries: Option<u64>,
    /// Queue (delivery routing key).
    pub queue: Option<String>,
}

/// One stored task result.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultMeta {
    /// The task id (written last). Empty when a stored value lacked it (a
    /// Python client fails on such a value too).
    pub task_id: String,
    /// The state.
    pub status: TaskState,
    /// Return value, exception dict, `{pid, hostname}` for STARTED, or the
    /// meta of a custom state.
    pub result: Value,
    /// Formatted traceback for failures and retries.
    pub traceback: Option<String>,
    /// Child result tuples (see [`child_tuple`]); `None` writes `null`.
    pub children: Option<Vec<Value>>,
    /// When the task reached a ready state.
    pub date_done: Option<DateTime<Utc>>,
    /// Group id, written only when set.
    pub group_id: Option<String>,
    /// Parent task id, written only when set.
    pub parent_id: Option<String>,
    /// `result_extended` fields, written only when set.
    pub extended: Option<ExtendedMeta>,
    /// The version of the component that ran the task (Celeriac's own key),
    /// written only when set.
    pub component_version: Option<String>,
}

impl ResultMeta {
    /// A result in `status` with `children: []`, no traceback, and
    /// `date_done` = now for ready states (null otherwise).
    pub fn new(task_id: impl Into<String>, status: TaskState, result: Value) -> ResultMeta {
        let date_done = status.is_ready().then(Utc::now);
        ResultMeta {
            task_id: task_id.into(),
            status,
            result,
            traceback: None,
            children: Some(Vec::new()),
            date_done,
            group_id: None,
            parent_id: None,
            extended: None,
            component_version: None,
        }
    }

    /// STARTED with `{"pid", "hostname"}`.
    pub fn started(task_id: impl Into<String>, pid: u32, hostname: &str) -> ResultMeta {
        let mut r = Map::new();
        r.insert("pid".to_owned(), Value::from(pid));
        r.insert("hostname".to_owned(), Value::from(hostname));
        Self::new(task_id, TaskState::Started, Value::Object(r))
    }

    /// SUCCESS with the return value.
    pub fn success(task_id: impl Into<String>, value: Value) -> ResultMeta {
        Self::new(task_id, TaskState::Success, value)
    }

    /// FAILURE with the exception and its traceback text.
    pub fn failure(task_id: impl Into<String>, exc: &ExceptionInfo, traceback: Option<String>) -> ResultMeta {
        Self::new(task_id, TaskState::Failure, exc.to_value()).with_traceback(traceback)
    }

    /// RETRY with the exception that caused it.
    pub fn retry(task_id: impl Into<String>, exc: &ExceptionInfo, traceback: Option<String>) -> ResultMeta {
        Self::new(task_id, TaskState::Retry, exc.to_value()).with_traceback(traceback)
    }

    /// REVOKED with `TaskRevokedError(reason)`; `reason` is `revoked`,
    /// `terminated` or `expired`.
    pub fn revoked(task_id: impl Into<String>, reason: &str) -> ResultMeta {
        Self::new(task_id, TaskState::Revoked, ExceptionInfo::task_revoked(reason).to_value())
    }

    /// A custom state (`update_state(state="PROGRESS", meta={...})`).
    pub fn custom(task_id: impl Into<String>, state: &str, meta: Value) -> ResultMeta {
        Self::new(task_id, TaskState::parse(state), meta)
    }

    /// Set the traceback.
    pub fn with_traceback(mut self, traceback: Option<String>) -> Self {
        self.traceback = traceback;
        self
    }

    /// Set the children (`None` writes `null`, as for a revoke without request).
    pub fn with_children(mut self, children: Option<Vec<Value>>) -> Self {
        self.children = children;
        self
    }

    /// Set `date_done` (overrides the automatic value).
    pub fn with_date_done(mut self, date_done: Option<DateTime<Utc>>) -> Self {
        self.date_done = date_done;
        self
    }

    /// Set the group id (empty strings are treated as unset).
    pub fn with_group_id(mut self, group_id: Option<String>) -> Self {
        self.group_id = group_id.filter(|g| !g.is_empty());
        self
    }

    /// Set the parent id (empty strings are treated as unset).
    pub fn with_parent_id(mut self, parent_id: Option<String>) -> Self {
        self.parent_id = parent_id.filter(|p| !p.is_empty());
        self
    }

    /// Set the `result_extended` fields.
    pub fn with_extended(mut self, extended: Option<ExtendedMeta>) -> Self {
        self.extended = extended;
        self
    }

    /// Name the component version that produced it (empty strings are
    /// treated as unset: builtins have none).
    pub fn with_component_version(mut self, version: Option<&str>) -> Self {
        self.component_version = version.filter(|v| !v.is_empty()).map(str::to_owned);
        self
    }

    /// The stored object, keys in Celery's order.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("status".to_owned(), Value::from(self.status.as_str()));
        m.insert("result".to_owned(), self.result.clone());
        m.insert("traceback".to_owned(), self.traceback.clone().map_or(Value::Null, Value::String));
        m.insert("children".to_owned(), self.children.clone().map_or(Value::Null, Value::Array));
        m.insert("date_done".to_owned(), self.date_done.map_or(Value::Null, |d| Value::String(isoformat(&d))));
        if let Some(g) = &self.group_id {
            m.insert("group_id".to_owned(), Value::String(g.clone()));
        }
        if let Some(p) = &self.parent_id {
            m.insert("parent_id".to_owned(), Value::String(p.clone()));
        }
        if let Some(x) = &self.extended {
            let s = |o: &Option<String>| o.clone().map_or(Value::Null, Value::String);
            m.insert("name".to_owned(), s(&x.name));
            m.insert("args".to_owned(), x.args.clone());
            m.insert("kwargs".to_owned(), x.kwargs.clone());
            m.insert("worker".to_owned(), s(&x.worker));
            m.insert("retries".to_owned(), x.retries.map_or(Value::Null, Value::from));
            m.insert("queue".to_owned(), s(&x.queue));
        }
        if let Some(v) = &self.component_version {
            m.insert("component_version".to_owned(), Value::String(v.clone()));
        }
        m.insert("task_id".to_owned(), Value::String(self.task_id.clone()));
        Value::Object(m)
    }

    /// The bytes to SET and PUBLISH: JSON exactly as Python writes it, or
    /// raw msgpack.
    pub fn encode(&self, serializer: Serializer) -> Result<Vec<u8>, ProtocolError> {
        serializer.encode(&self.to_value())
    }

    /// Parse a stored value, detecting JSON (starts with `{`) or msgpack
    /// (starts with a map marker).
    pub fn decode(bytes: &[u8]) -> Result<ResultMeta, ProtocolError> {
        let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
        let serializer = match first {
            Some(b'{') => Serializer::Json,
            Some(0x80..=0x8f | 0xde | 0xdf) => Serializer::Msgpack,
            // `result_serializer = "auth"`: the signed frame (base64 text) around the
            // serialized meta. Read here without checking the signature: reading a
            // result is the client's business (Celery's client verifies it).
            Some(b) if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' => {
                let signed = super::auth::SignedBody::unpack(bytes)
                    .map_err(|e| ProtocolError::InvalidResult(format!("a signed result: {e}")))?;
                let inner = Serializer::from_name(&signed.content_type).ok_or_else(|| {
                    ProtocolError::InvalidResult(format!("a signed result of type {}", signed.content_type))
                })?;
                return Self::decode_with(&signed.body, inner);
            }
            _ => {
                return Err(ProtocolError::InvalidResult("neither a JSON object nor a msgpack map".to_owned()));
            }
        };
        Self::decode_with(bytes, serializer)
    }

    /// Parse a stored value with a known serializer.
    pub fn decode_with(bytes: &[u8], serializer: Serializer) -> Result<ResultMeta, ProtocolError> {
        let value = serializer.decode(bytes).map_err(|e| ProtocolError::InvalidResult(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Read a stored object as leniently as Celery's client: only `status`
    /// is required; `date_done` that is not a recognisable timestamp reads
    /// as `None`.
    pub fn from_value(value: &Value) -> Result<ResultMeta, ProtocolError> {
        let obj = value
            .as_object()
            .ok_or_else(|| ProtocolError::InvalidResult(format!("expected an object, got {}", describe(value))))?;
        let status = obj
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| ProtocolError::InvalidResult("no string `status`".to_owned()))?;
        let string = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
        let extended_keys = ["name", "args", "kwargs", "worker", "retries", "queue"];
        let extended = extended_keys.iter().any(|k| obj.contains_key(*k)).then(|| ExtendedMeta {
            name: string("name"),
            args: obj.get("args").cloned().unwrap_or(Value::Null),
            kwargs: obj.get("kwargs").cloned().unwrap_or(Value::Null),
            worker: string("worker"),
            retries: obj.get("retries").and_then(Value::as_u64),
            queue: string("queue"),
        });
        Ok(ResultMeta {
            task_id: string("task_id").unwrap_or_default(),
            status: TaskState::parse(status),
            result: obj.get("result").cloned().unwrap_or(Value::Null),
            traceback: string("traceback"),
            children: obj.get("children").and_then(Value::as_array).cloned(),
            date_done: obj.get("date_done").and_then(Value::as_str).and_then(parse_datetime),
            group_id: string("group_id"),
            parent_id: string("parent_id"),
            extended,
            component_version: string("component_version"),
        })
    }

    /// The exception of a FAILURE / RETRY / REVOKED result, if `result`
    /// holds one.
    pub fn exception(&self) -> Option<ExceptionInfo> {
        if self.status.is_exception() { ExceptionInfo::from_value(&self.result).ok() } else { None }
    }
}

/// `AsyncResult(id).as_tuple()`: `[[id, null], null]`, the form stored in a
/// parent's `children`.
pub fn child_tuple(task_id: &str) -> Value {
    Value::Array(vec![Value::Array(vec![Value::from(task_id), Value::Null]), Value::Null])
}

/// `GroupResult(id, members).as_tuple()`:
/// `[[group_id, null], [[[member, null], null], ...]]`.
pub fn group_tuple(group_id: &str, member_ids: &[&str]) -> Value {
    Value::Array(vec![
        Value::Array(vec![Value::from(group_id), Value::Null]),
        Value::Array(member_ids.iter().map(|id| child_tuple(id)).collect()),
    ])
}

/// The value `GroupResult.save()` writes to `celery-taskset-meta-<gid>`:
/// `{"result": <group tuple>}`.
pub fn taskset_meta_value(group_id: &str, member_ids: &[&str]) -> Value {
    let mut m = Map::new();
    m.insert("result".to_owned(), group_tuple(group_id, member_ids));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states() {
        for s in [
            "PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED", "IGNORED",
            "PROGRESS",
        ] {
            assert_eq!(TaskState::parse(s).as_str(), s);
        }
        assert!(TaskState::Success.is_ready() && TaskState::Revoked.is_ready() && TaskState::Failure.is_ready());
        assert!(!TaskState::Retry.is_ready() && !TaskState::Started.is_ready());
        assert!(!TaskState::Custom("PROGRESS".into()).is_ready());
        assert!(TaskState::Retry.is_exception() && !TaskState::Success.is_exception());
    }

    #[test]
    fn date_done_only_for_ready_states() {
        assert!(ResultMeta::success("i", json!(1)).date_done.is_some());
        assert!(ResultMeta::revoked("i", "expired").date_done.is_some());
        assert!(ResultMeta::started("i", 1, "h").date_done.is_none());
        let exc = ExceptionInfo::with_message("ValueError", "x", "m");
        assert!(ResultMeta::retry("i", &exc, None).date_done.is_none());
        assert!(ResultMeta::custom("i", "PROGRESS", json!({"done": 3})).date_done.is_none());
    }

    #[test]
    fn custom_state_value() {
        let m = ResultMeta::custom("tid", "PROGRESS", json!({"current": 3, "total": 10}));
        assert_eq!(
            m.encode(Serializer::Json).unwrap(),
            br#"{"status": "PROGRESS", "result": {"current": 3, "total": 10}, "traceback": null, "children": [], "date_done": null, "task_id": "tid"}"#
        );
    }

    #[test]
    fn extended_fields_order() {
        let m = ResultMeta::success("tid", json!(8))
            .with_date_done(None)
            .with_parent_id(Some("p".into()))
            .with_extended(Some(ExtendedMeta {
                name: Some("tasks.add".into()),
                args: json!([4, 4]),
                kwargs: json!({}),
                worker: Some("w1@vm".into()),
                retries: Some(0),
                queue: Some("celery".into()),
            }));
        let v = m.to_value();
        let keys: Vec<_> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "status",
                "result",
                "traceback",
                "children",
                "date_done",
                "parent_id",
                "name",
                "args",
                "kwargs",
                "worker",
                "retries",
                "queue",
                "task_id"
            ]
        );
        assert_eq!(ResultMeta::from_value(&v).unwrap(), m);
    }

    #[test]
    fn the_component_version_is_written_before_task_id_and_only_when_known() {
        let plain = ResultMeta::success("tid", json!(8)).with_component_version(Some(""));
        assert!(!plain.to_value().as_object().unwrap().contains_key("component_version"));
        let m = ResultMeta::success("tid", json!(8)).with_date_done(None).with_component_version(Some("0123456789ab"));
        let v = m.to_value();
        let keys: Vec<_> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys[keys.len() - 2..], ["component_version", "task_id"]);
        assert_eq!(v["component_version"], "0123456789ab");
        assert_eq!(ResultMeta::from_value(&v).unwrap(), m);
    }

    #[test]
    fn lenient_parsing() {
        let m = ResultMeta::decode(br#"{"status": "SUCCESS", "result": 8}"#).unwrap();
        assert_eq!((m.task_id.as_str(), m.result.clone()), ("", json!(8)));
        assert_eq!(m.children, None);
        let m =
            ResultMeta::decode(br#"{"status": "SUCCESS", "result": 8, "date_done": 12345, "task_id": "x"}"#).unwrap();
        assert_eq!(m.date_done, None);
        let m = ResultMeta::decode(
            br#"{"status": "SUCCESS", "result": 8, "date_done": "2026-01-01T00:00:00Z", "task_id": "x"}"#,
        )
        .unwrap();
        assert_eq!(m.date_done.map(|d| isoformat(&d)).as_deref(), Some("2026-01-01T00:00:00+00:00"));
        assert!(ResultMeta::decode(b"").is_err());
        assert!(ResultMeta::decode(b"[1]").is_err());
        assert!(ResultMeta::decode(br#"{"result": 1}"#).is_err());
        assert!(ResultMeta::decode(br#"{"status": 1}"#).is_err());
        assert!(ResultMeta::decode(b"{broken").is_err());
        // A FAILURE whose result is not an exception dict: no exception, no panic.
        let m = ResultMeta::decode(br#"{"status": "FAILURE", "result": "just a string", "task_id": "x"}"#).unwrap();
        assert_eq!(m.exception(), None);
    }

    #[test]
    fn tuples() {
        assert_eq!(child_tuple("c"), json!([["c", null], null]));
        assert_eq!(group_tuple("g", &["a", "b"]), json!([["g", null], [[["a", null], null], [["b", null], null]]]));
        assert_eq!(taskset_meta_value("g", &["a"]), json!({"result": [["g", null], [[["a", null], null]]]}));
        assert_eq!(result_key("abc"), "celery-task-meta-abc");
    }
}
