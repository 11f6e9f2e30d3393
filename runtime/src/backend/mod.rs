//! Result backends: where task states and results are stored for clients.
//!
//! [`redis`] is Celery's Redis backend: `celery-task-meta-<id>` keys written
//! with `SETEX` and announced with `PUBLISH` in one transaction, because a
//! waiting Python client never polls — it reads once and then listens.
//! [`database`] is Celery's database backend on SQLite (`db+sqlite:///file`),
//! polled by clients. With no backend configured, results are disabled, as
//! in Celery (except on the embedded SQLite broker, see
//! `Settings::effective_result_backend`).

pub mod database;
pub mod redis;

use std::time::Duration;

use crate::protocol::Serializer;
use crate::protocol::result::ResultMeta;

/// A connected result backend, whichever kind its URL names.
#[derive(Clone)]
pub enum Backend {
    /// Celery's Redis backend.
    Redis(redis::RedisBackend),
    /// Celery's database backend on SQLite.
    Database(database::DatabaseBackend),
}

/// Waits for one task's result; created before the task is sent.
pub enum Waiter {
    /// Redis pub/sub subscription.
    Redis(redis::ResultSubscription),
    /// Polling of a database row.
    Database(database::PollWaiter),
}

impl Backend {
    /// Connect to the backend at `url`; results live `expires` seconds
    /// (`None`: forever) and are written with `serializer`.
    pub async fn connect(url: &str, expires: Option<u64>, serializer: Serializer) -> Result<Backend, BackendError> {
        if crate::broker::is_redis_url(url) {
            return Ok(Backend::Redis(redis::RedisBackend::connect(url, expires, serializer).await?));
        }
        if database::is_url(url) {
            return Ok(Backend::Database(database::DatabaseBackend::connect(url, expires, serializer).await?));
        }
        if database::is_other_database_url(url) {
            return Err(BackendError::Url(format!(
                "{url}: only SQLite is supported by the database backend (db+sqlite:///file)"
            )));
        }
        Err(BackendError::Url(format!(
            "{url}: unsupported result backend; use redis://host:port/db or db+sqlite:///file"
        )))
    }

    /// Store several task states at once (one round trip where the backend allows).
    pub async fn store_many(&self, metas: &[ResultMeta]) -> Result<(), BackendError> {
        match self {
            Backend::Redis(b) => b.store_many(metas).await,
            Backend::Database(b) => b.store_many(metas).await,
        }
    }

    /// The stored state of `task_id`, if any.
    pub async fn get(&self, task_id: &str) -> Result<Option<ResultMeta>, BackendError> {
        match self {
            Backend::Redis(b) => b.get(task_id).await,
            Backend::Database(b) => b.get(task_id).await,
        }
    }

    /// Delete the stored state of `task_id`.
    pub async fn forget(&self, task_id: &str) -> Result<(), BackendError> {
        match self {
            Backend::Redis(b) => b.forget(task_id).await,
            Backend::Database(b) => b.forget(task_id).await,
        }
    }

    /// The chord-capable backend, if this one is (chords need Redis).
    pub fn as_redis(&self) -> Option<&redis::RedisBackend> {
        match self {
            Backend::Redis(b) => Some(b),
            _ => None,
        }
    }

    /// Start waiting for `task_id` (before sending it, so nothing is missed).
    pub async fn waiter(&self, task_id: &str) -> Result<Waiter, BackendError> {
        match self {
            Backend::Redis(b) => Ok(Waiter::Redis(b.subscribe(task_id).await?)),
            Backend::Database(b) => Ok(Waiter::Database(b.waiter(task_id))),
        }
    }
}

impl Waiter {
    /// Wait until the task is ready (SUCCESS, FAILURE, REVOKED) or `timeout` passes.
    pub async fn wait(self, timeout: Duration) -> Result<ResultMeta, BackendError> {
        match self {
            Waiter::Redis(w) => w.wait(timeout).await,
            Waiter::Database(w) => w.wait(timeout).await,
        }
    }
}

/// Errors talking to a result backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend URL cannot be used.
    #[error("invalid result backend URL {0}")]
    Url(String),
    /// The connection failed or a command was refused.
    #[error("result backend error: {0}")]
    Connection(String),
    /// A value could not be encoded or decoded.
    #[error("result encoding error: {0}")]
    Encode(String),
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
