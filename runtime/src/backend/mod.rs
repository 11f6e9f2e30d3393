//! Result backends: where task states and results are stored for clients.
//!
//! [`redis`] is Celery's Redis backend: `celery-task-meta-<id>` keys written
//! with `SETEX` and announced with `PUBLISH` in one transaction, because a
//! waiting Python client never polls — it reads once and then listens.
//! [`database`] is Celery's database backend on SQLite (`db+sqlite:///file`),
//! polled by clients. [`rpc`] is Celery's `rpc://` backend: states published
//! to the client's reply queue through the AMQP broker connection. With no backend configured, results are disabled, as
//! in Celery (except on the embedded SQLite broker, see
//! `Settings::effective_result_backend`).
//!
//! [`Backend`] is a connected [`ResultBackend`], whatever its URL names;
//! adding one is a module and a line in [`Backend::connect`]. A backend
//! connects with access to the broker's connection (Celery's
//! `rpc://` backend publishes results through it) and stores each state with
//! its [`Routing`] (`reply_to`, `correlation_id`, taken from the task
//! message; unused by Redis and the database). What only some backends can do
//! is a capability: [`ResultBackend::chords`] returns a [`ChordCounter`] on a
//! backend that counts chord members (Redis).

pub mod database;
pub mod redis;
pub mod rpc;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::broker::{BoxFuture, Broker};
use crate::connection::UrlError;
use crate::connection::sqlite::DbError;
use crate::connection::url;
use crate::protocol::auth::Signer;
use crate::protocol::result::ResultMeta;
use crate::protocol::{DeliveryInfo, Serializer};

/// One of Celery's result backends, connected.
pub trait ResultBackend: Send + Sync + 'static {
    /// Celery's name of the backend (`redis`, `database`), for logs.
    fn name(&self) -> &'static str;

    /// Store several task states at once (one round trip where the backend
    /// allows), in order.
    fn store_many<'a>(&'a self, replies: &'a [Reply]) -> BoxFuture<'a, Result<(), BackendError>>;

    /// The stored state of `task_id`, if any.
    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>, BackendError>>;

    /// Delete the stored state of `task_id` (Celery's `forget`).
    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Start waiting for `task_id` (before sending it, so nothing is missed).
    fn waiter<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Box<dyn Waiter>, BackendError>>;

    /// The chord counter of a backend that can count chord members (Redis).
    fn chords(&self) -> Option<&dyn ChordCounter> {
        None
    }
}

/// Waits for one task's result; created before the task is sent.
pub trait Waiter: Send {
    /// Wait until the task is ready (SUCCESS, FAILURE, REVOKED) or `timeout` passes.
    fn wait(self: Box<Self>, timeout: Duration) -> BoxFuture<'static, Result<ResultMeta, BackendError>>;
}

/// A connected result backend, whichever kind its URL names.
#[derive(Clone)]
pub struct Backend(Arc<dyn ResultBackend>);

impl std::ops::Deref for Backend {
    type Target = dyn ResultBackend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// How results are written: `result_serializer`, and signed with the
/// worker's key when it is `auth` (Celery's message signing: the JSON bytes
/// signed and framed as the `auth` serializer does, content type
/// `application/data`).
#[derive(Clone)]
pub struct ResultEncoding {
    /// The serializer of the result itself (JSON under `auth`).
    pub serializer: Serializer,
    /// Signs the serialized result (`result_serializer = "auth"`).
    pub signer: Option<Arc<dyn Signer>>,
}

impl From<Serializer> for ResultEncoding {
    fn from(serializer: Serializer) -> Self {
        ResultEncoding { serializer, signer: None }
    }
}

impl ResultEncoding {
    /// A result meta as stored or sent.
    pub fn encode_meta(&self, meta: &ResultMeta) -> Result<Vec<u8>, crate::protocol::ProtocolError> {
        let bytes = meta.encode(self.serializer)?;
        Ok(match &self.signer {
            Some(s) => s.sign(self.serializer.content_type(), self.serializer.content_encoding(), &bytes).pack(),
            None => bytes,
        })
    }

    /// The content type and encoding of what [`ResultEncoding::encode_meta`] writes.
    pub fn content(&self) -> (&'static str, &'static str) {
        match self.signer {
            Some(_) => (crate::protocol::auth::CONTENT_TYPE_AUTH, "utf-8"),
            None => (self.serializer.content_type(), self.serializer.content_encoding()),
        }
    }
}

impl Backend {
    /// Connect to the backend at `url`; results live `expires` seconds
    /// (`None`: forever) and are written with `encoding`. `broker` is the
    /// worker's (or client's) broker connection, for a backend that sends
    /// results through it; `None` where there is none (`celeriac result`).
    pub async fn connect(
        url: &str,
        expires: Option<u64>,
        encoding: impl Into<ResultEncoding>,
        broker: Option<&Broker>,
    ) -> Result<Backend, BackendError> {
        let encoding = encoding.into();
        if rpc::is_url(url) {
            return match broker {
                Some(b) => Ok(Backend::new(rpc::RpcBackend::new(b, encoding)?)),
                // `celeriac result`: no broker, and nothing to read anyway.
                None => Err(BackendError::Unsupported(rpc::CANNOT_READ)),
            };
        }
        if url::is_redis_url(url) {
            return Ok(Backend::new(redis::RedisBackend::connect(url, expires, encoding).await?));
        }
        if url::is_sqlite_backend_url(url) {
            if encoding.signer.is_some() {
                return Err(BackendError::Unsupported(
                    "signed results (result_serializer = \"auth\") are implemented for the Redis and rpc:// \
                     backends, not the database backend yet",
                ));
            }
            return Ok(Backend::new(database::DatabaseBackend::connect(url, expires, encoding.serializer).await?));
        }
        if url::is_other_database_url(url) {
            return Err(BackendError::Url(UrlError(format!(
                "{url}: only SQLite is supported by the database backend (db+sqlite:///file)"
            ))));
        }
        Err(BackendError::Url(UrlError(format!(
            "{url}: unsupported result backend; use redis://host:port/db, rpc:// or db+sqlite:///file"
        ))))
    }

    /// A backend over `backend`.
    pub fn new(backend: impl ResultBackend) -> Backend {
        Backend(Arc::new(backend))
    }
}

/// Where a result goes besides its key: the task message's `reply_to` and
/// `correlation_id`, which Celery's `rpc://` backend publishes the result to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// The client's reply queue (`properties.reply_to`).
    pub reply_to: Option<String>,
    /// The id the client matches replies with (`properties.correlation_id`: the task id).
    pub correlation_id: Option<String>,
}

impl Routing {
    /// The routing a task message asks for.
    pub fn of(delivery: &DeliveryInfo) -> Self {
        Routing { reply_to: delivery.reply_to.clone(), correlation_id: delivery.correlation_id.clone() }
    }
}

/// A task state to store, with its routing.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The state.
    pub meta: ResultMeta,
    /// Where it goes besides its key.
    pub routing: Routing,
}

/// A backend that counts chord header members (Celery's
/// `on_chord_part_return`): the worker that completes a chord sends its body.
pub trait ChordCounter: Send + Sync {
    /// Record a finished header member. Returns the `[1, id, state, result]`
    /// entries of all members, in group order, when this call completed the
    /// chord and won its claim.
    fn chord_part_return<'a>(
        &'a self,
        member: ChordMember<'a>,
    ) -> BoxFuture<'a, Result<Option<Vec<Value>>, BackendError>>;

    /// Record how many header members a chord has, before they are sent
    /// (Celery's `set_chord_size`: a Python worker completing the chord reads it).
    fn set_chord_size<'a>(&'a self, group_id: &'a str, size: u64) -> BoxFuture<'a, Result<(), BackendError>>;

    /// One more member for the chord (Celery's `add_to_chord`: the `.t` correction).
    fn add_to_chord<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Mark a chord as done and drop its bookkeeping.
    fn chord_done<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<(), BackendError>>;
}

/// One finished chord header member, as [`ChordCounter::chord_part_return`] records it.
#[derive(Debug, Clone, Copy)]
pub struct ChordMember<'a> {
    /// The chord's group id.
    pub group_id: &'a str,
    /// The member's task id.
    pub task_id: &'a str,
    /// Its position in the group.
    pub index: u64,
    /// `SUCCESS` or `FAILURE`.
    pub state: &'a str,
    /// Its result (or exception).
    pub result: &'a Value,
    /// The body's `chord_size`, when the message carries it.
    pub chord_size: Option<u64>,
}

/// Errors talking to a result backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend URL cannot be used.
    #[error("invalid result backend URL {0}")]
    Url(#[from] UrlError),
    /// Redis refused a command or could not be reached.
    #[error("result backend error: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The SQLite file could not be used.
    #[error("result backend error: {0}")]
    Database(#[from] DbError),
    /// A result subscription ended before the result came.
    #[error("result backend error: result subscription closed")]
    SubscriptionClosed,
    /// A value could not be encoded or decoded.
    #[error("result encoding error: {0}")]
    Encode(String),
    /// The backend cannot do this.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A result message could not be published through the broker (rpc://).
    #[error("result backend error: {0}")]
    Publish(#[from] crate::broker::BrokerError),
    /// Waiting for a result timed out.
    #[error("timed out waiting for the result of {0}")]
    Timeout(String),
}

impl BackendError {
    /// Whether the backend could not be reached or refused a command: trying
    /// again later may succeed.
    pub fn is_connection_error(&self) -> bool {
        match self {
            BackendError::Redis(_) | BackendError::Database(_) | BackendError::SubscriptionClosed => true,
            BackendError::Publish(e) => e.is_connection_error(),
            _ => false,
        }
    }
}

/// The key prefix of task results, as Celery writes it.
pub const TASK_KEY_PREFIX: &str = "celery-task-meta-";
