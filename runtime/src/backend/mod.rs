//! Result backends: where task states and results are stored for clients.
//!
//! [`redis`] is Celery's Redis backend: `celery-task-meta-<id>` keys written
//! with `SETEX` and announced with `PUBLISH` in one transaction, because a
//! waiting Python client never polls — it reads once and then listens.
//! [`database`] is Celery's database backend on SQLite (`db+sqlite:///file`),
//! polled by clients. [`rpc`] is Celery's `rpc://` backend: states published
//! to the client's reply queue over the AMQP broker connection. With no backend configured, results are disabled, as
//! in Celery (except on the embedded SQLite broker, see
//! `Settings::effective_result_backend`).

pub mod database;
pub mod redis;
pub mod rpc;

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
    /// Celery's rpc backend (AMQP reply queues).
    Rpc(rpc::RpcBackend),
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
        if rpc::is_url(url) {
            return Err(BackendError::Unsupported(RPC_READ));
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

    /// Connect to the backend at `url`, with the broker connection for the
    /// backends that publish through it (`rpc://` needs an AMQP broker).
    pub async fn connect_with_broker(
        url: &str,
        expires: Option<u64>,
        serializer: Serializer,
        persistent: bool,
        broker: &crate::broker::Broker,
    ) -> Result<Backend, BackendError> {
        if rpc::is_url(url) {
            return match broker {
                crate::broker::Broker::Amqp(b) => {
                    Ok(Backend::Rpc(rpc::RpcBackend::new(b.broker.clone(), serializer, persistent)))
                }
                _ => Err(BackendError::Url(format!("{url}: the rpc backend needs an AMQP broker (amqp://)"))),
            };
        }
        Self::connect(url, expires, serializer).await
    }

    /// The rpc backend, if this is it (it must learn each task's `reply_to`).
    pub fn as_rpc(&self) -> Option<&rpc::RpcBackend> {
        match self {
            Backend::Rpc(b) => Some(b),
            _ => None,
        }
    }

    /// Store several task states at once (one round trip where the backend allows).
    pub async fn store_many(&self, metas: &[ResultMeta]) -> Result<(), BackendError> {
        match self {
            Backend::Redis(b) => b.store_many(metas).await,
            Backend::Database(b) => b.store_many(metas).await,
            Backend::Rpc(b) => b.store_many(metas).await,
        }
    }

    /// The stored state of `task_id`, if any.
    pub async fn get(&self, task_id: &str) -> Result<Option<ResultMeta>, BackendError> {
        match self {
            Backend::Redis(b) => b.get(task_id).await,
            Backend::Database(b) => b.get(task_id).await,
            Backend::Rpc(_) => Err(BackendError::Unsupported(RPC_READ)),
        }
    }

    /// Delete the stored state of `task_id`.
    pub async fn forget(&self, task_id: &str) -> Result<(), BackendError> {
        match self {
            Backend::Redis(b) => b.forget(task_id).await,
            Backend::Database(b) => b.forget(task_id).await,
            Backend::Rpc(_) => Err(BackendError::Unsupported(RPC_READ)),
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
            Backend::Rpc(_) => Err(BackendError::Unsupported(RPC_READ)),
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
    /// The backend cannot do this.
    #[error("{0}")]
    Unsupported(&'static str),
    /// Publishing a result over AMQP failed.
    #[error("rpc result backend: {0}")]
    Amqp(#[from] crate::broker::amqp::AmqpError),
    /// Waiting for a result timed out.
    #[error("timed out waiting for the result of {0}")]
    Timeout(String),
}

impl BackendError {
    pub(crate) fn redis(e: ::redis::RedisError) -> Self {
        BackendError::Connection(e.to_string())
    }
}

/// Why the rpc backend cannot read results.
const RPC_READ: &str =
    "rpc:// results go to the reply queue of the client that sent the task; only that client can read them";

/// The key prefix of task results, as Celery writes it.
pub const TASK_KEY_PREFIX: &str = "celery-task-meta-";
