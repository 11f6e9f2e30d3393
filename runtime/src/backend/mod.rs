//! Result backends: where task states and results are stored for clients.
//!
//! [`redis`] is Celery's Redis backend: `celery-task-meta-<id>` keys written
//! with `SETEX` and announced with `PUBLISH` in one transaction, because a
//! waiting Python client never polls — it reads once and then listens.
//! With no backend configured, results are disabled, as in Celery.

pub mod redis;

/// Errors talking to a result backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend URL cannot be used.
    #[error("invalid result backend URL {0}")]
    Url(String),
    /// The connection failed or a command was refused.
    #[error("result backend error: {0}")]
    Connection(String),
    /// Waiting for a result timed out.
    #[error("timed out waiting for the result of {0}")]
    Timeout(String),
}

impl BackendError {
    pub(crate) fn redis(e: ::redis::RedisError) -> Self {
        BackendError::Connection(e.to_string())
    }
}

/// The key prefix of task results, as Celery writes it.
pub const TASK_KEY_PREFIX: &str = "celery-task-meta-";
