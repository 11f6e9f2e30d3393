//! The one error type of the protocol module.
//!
//! Decoding a task message can fail at many layers (envelope JSON, base64,
//! content type, body shape, header types). A worker that meets a broken
//! message still wants to do the right thing with it: if it can tell which
//! task it was, it writes a FAILURE result so the client does not wait
//! forever. So every decoding variant carries a [`Partial`]: whatever task
//! id / name could be recovered before the failure.

use std::fmt;

use serde_json::Value;

/// What could be recovered about a task from a message that failed to decode.
///
/// `id` comes from `headers.id`, else from the body of a protocol-1 message,
/// else from `properties.correlation_id` (Celery always sets it to the task id).
/// `task` comes from `headers.task`, or the body of a protocol-1 message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partial {
    /// The task id, when known.
    pub id: Option<String>,
    /// The registered task name, when known.
    pub task: Option<String>,
}

impl Partial {
    /// Nothing is known.
    pub const fn none() -> Self {
        Partial { id: None, task: None }
    }

    /// True when neither id nor name is known.
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.task.is_none()
    }
}

impl fmt::Display for Partial {
    /// Renders as ` (task tasks.add, id 1234)`, ` (id 1234)` or nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.task, &self.id) {
            (Some(t), Some(i)) => write!(f, " (task {t}, id {i})"),
            (Some(t), None) => write!(f, " (task {t})"),
            (None, Some(i)) => write!(f, " (id {i})"),
            (None, None) => Ok(()),
        }
    }
}

/// Everything that can go wrong while reading or writing Celery wire data.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The kombu envelope (the LPUSHed bytes) is not JSON.
    #[error("message envelope is not valid JSON: {0}")]
    EnvelopeJson(#[source] serde_json::Error),

    /// The envelope is JSON but not an object.
    #[error("message envelope is not a JSON object (got {found})")]
    EnvelopeNotObject {
        /// Description of what was found instead.
        found: String,
    },

    /// An envelope field has the wrong JSON type or is missing.
    #[error("message envelope field `{field}` must be {expected}")]
    EnvelopeField {
        /// The envelope key, e.g. `body` or `headers`.
        field: &'static str,
        /// What it should have been.
        expected: &'static str,
    },

    /// `properties.body_encoding` names an encoding we do not implement.
    #[error("unsupported body encoding `{encoding}`{partial}")]
    UnsupportedBodyEncoding {
        /// The encoding named by the message.
        encoding: String,
        /// What is known about the task.
        partial: Partial,
    },

    /// The body claims base64 but is not.
    #[error("message body is not valid base64: {source}{partial}")]
    BadBase64 {
        /// The base64 decoder's complaint.
        #[source]
        source: base64::DecodeError,
        /// What is known about the task.
        partial: Partial,
    },

    /// The content type is not in `accept_content` (or is pickle, which is
    /// never accepted). The body was NOT deserialised.
    #[error("refusing to deserialize content of type `{content_type}`: not in accept_content{partial}")]
    ContentDisallowed {
        /// The content type of the message (`application/data` when absent).
        content_type: String,
        /// What is known about the task.
        partial: Partial,
    },

    /// A message for the `auth` serializer whose signature does not hold
    /// (unknown signer, bad signature, expired certificate, not signed at
    /// all). The body was NOT deserialised, and the task never runs.
    #[error("refusing a signed message: {reason}{partial}")]
    Signature {
        /// Why.
        #[source]
        reason: super::content::SignatureRefused,
        /// What is known about the task (from the headers, which are not signed).
        partial: Partial,
    },

    /// The message exceeds one of the worker's bounds (`[message_limits]`).
    /// Checked before the body is deserialised where it can be.
    #[error("message too large: {what} is {size}, the limit is {limit} (message_limits.{setting}){partial}")]
    TooLarge {
        /// What is too large (`the body`, `the header count`, ...).
        what: &'static str,
        /// Its size.
        size: usize,
        /// The bound.
        limit: usize,
        /// The setting that sets the bound.
        setting: &'static str,
        /// What is known about the task.
        partial: Partial,
    },

    /// The body bytes are not valid for their serializer.
    #[error("cannot decode {content_type} message body: {reason}{partial}")]
    BodyDecode {
        /// The content type that was tried.
        content_type: String,
        /// Why it failed.
        #[source]
        reason: super::content::DecodeError,
        /// What is known about the task.
        partial: Partial,
    },

    /// A protocol-2 body that is not `[args, kwargs, embed]`.
    #[error("task body must be a list [args, kwargs, embed], got {found}{partial}")]
    BodyShape {
        /// Description of what was found instead.
        found: String,
        /// What is known about the task.
        partial: Partial,
    },

    /// `args` is not a list.
    #[error("task args must be a list, got {found}{partial}")]
    ArgsNotList {
        /// Description of what was found instead.
        found: String,
        /// What is known about the task.
        partial: Partial,
    },

    /// `kwargs` is not an object.
    #[error("task kwargs must be an object, got {found}{partial}")]
    KwargsNotObject {
        /// Description of what was found instead.
        found: String,
        /// What is known about the task.
        partial: Partial,
    },

    /// A required field (`id` or `task`) is missing or empty.
    #[error("task message has no `{field}`{partial}")]
    MissingField {
        /// `id` or `task`.
        field: &'static str,
        /// What is known about the task.
        partial: Partial,
    },

    /// A header or body field has an unusable value (wrong type, bad date...).
    #[error("invalid task field `{field}`: {reason}{partial}")]
    InvalidField {
        /// Header / body key.
        field: String,
        /// Why it is unusable.
        reason: String,
        /// What is known about the task.
        partial: Partial,
    },

    /// A value could not be serialized (e.g. a float NaN into JSON is fine for
    /// Python but not representable in serde_json; msgpack write errors).
    #[error("cannot encode as {serializer}: {reason}")]
    Encode {
        /// `json` or `msgpack`.
        serializer: &'static str,
        /// Why.
        reason: String,
    },

    /// A stored result value (`celery-task-meta-*`) is unusable.
    #[error("invalid stored result: {0}")]
    InvalidResult(String),
}

impl ProtocolError {
    /// Whatever task id / name is known for a decoding error.
    pub fn partial(&self) -> Option<&Partial> {
        match self {
            ProtocolError::UnsupportedBodyEncoding { partial, .. }
            | ProtocolError::BadBase64 { partial, .. }
            | ProtocolError::ContentDisallowed { partial, .. }
            | ProtocolError::Signature { partial, .. }
            | ProtocolError::TooLarge { partial, .. }
            | ProtocolError::BodyDecode { partial, .. }
            | ProtocolError::BodyShape { partial, .. }
            | ProtocolError::ArgsNotList { partial, .. }
            | ProtocolError::KwargsNotObject { partial, .. }
            | ProtocolError::MissingField { partial, .. }
            | ProtocolError::InvalidField { partial, .. } => Some(partial),
            ProtocolError::EnvelopeJson(_)
            | ProtocolError::EnvelopeNotObject { .. }
            | ProtocolError::EnvelopeField { .. }
            | ProtocolError::Encode { .. }
            | ProtocolError::InvalidResult(_) => None,
        }
    }

    /// The task id, if the failing message revealed it.
    pub fn task_id(&self) -> Option<&str> {
        self.partial().and_then(|p| p.id.as_deref())
    }

    /// The task name, if the failing message revealed it.
    pub fn task_name(&self) -> Option<&str> {
        self.partial().and_then(|p| p.task.as_deref())
    }
}

/// A short human description of a JSON value's type, for error messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(_) => "a number".to_owned(),
        Value::String(_) => "a string".to_owned(),
        Value::Array(a) if a.len() == 1 => "a list of 1 element".to_owned(),
        Value::Array(a) => format!("a list of {} elements", a.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}
