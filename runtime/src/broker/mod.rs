//! Brokers: where task messages come from and where acknowledgements go.
//!
//! Celery talks to a broker through kombu; Celeriac implements kombu's
//! transports natively, each behind the [`Transport`] trait, and the worker
//! sees only what kombu's `Consumer` callback sees: a decoded message and a
//! way to acknowledge it.
//!
//! - [`Broker`] is a connected transport, whatever its URL names: the one
//!   type the worker and the CLI use. [`Broker::connect`] picks the transport
//!   by scheme; adding one is a module and a line there.
//! - [`Consumer`] receives [`Delivery`] values from a set of queues.
//! - A [`Delivery`] holds the message, decoded once by the transport
//!   ([`RawMessage`], or why it could not be), and an [`Acker`]: `ack`,
//!   `requeue` (give back) and `hold` (the worker keeps the message a while:
//!   make it safe). How a transport keeps its promises — kombu's virtual
//!   transport QoS on Redis and SQLite (`unacked` records, the visibility
//!   timeout, its refresh and restore sweep), delivery tags on AMQP — stays
//!   inside the transport; the worker never sees tags or sweeps.
//! - [`Capabilities`] say what a transport can carry (fanout for remote
//!   control and events, priorities); the start-up warning about the rest is
//!   derived from them. A transport with fanout (Redis: pub/sub; AMQP:
//!   exchanges) also implements [`Fanout`]: a node's pidbox [`Mailbox`],
//!   control replies, broadcasts and events, and the client side of a
//!   control call.
//!
//! [`amqp`] is kombu's pyamqp transport (RabbitMQ), with real
//! acknowledgements and two capabilities of its own: [`DelayedDelivery`] and
//! [`ReplyPublisher`] (for the `rpc://` result backend).
//! [`redis`] is kombu's Redis transport; [`sqlite`] is kombu's SQLAlchemy
//! transport on an SQLite file, the embedded default; [`memory`] keeps
//! messages in the process, for tests of the worker. All three are kombu
//! "virtual" transports and share [`qos`].
//!
//! A transport with real acknowledgements (AMQP) implements [`Transport`],
//! [`Consumer`] and [`AckHandle`] directly and uses none of [`qos`]: its
//! deliveries carry the channel and the delivery tag (`ack` → `basic.ack`,
//! possibly batched; `requeue` → `basic.nack(requeue=true)`; `hold` → nothing,
//! the server keeps an unacknowledged message for as long as the channel
//! lives), its consumer sets `basic.qos` from the prefetch window it is
//! given, it builds the [`RawMessage`] from the frame's properties and
//! headers, and it needs no housekeeping. When that channel closes, the
//! server requeues what was unacknowledged on it and delivers it again on
//! the next one: the deliveries the worker still holds from the old channel
//! are then stale ([`AckHandle::is_stale`]) and are dropped, not run.

pub mod amqp;
pub mod memory;
pub mod qos;
pub mod redis;
pub mod sqlite;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Settings, TransportOptions};
use crate::connection::UrlError;
use crate::connection::sqlite::DbError;
use crate::connection::url;
use crate::protocol::pidbox::Outgoing;
use crate::protocol::{EncodedTask, Envelope, ProtocolError, RawMessage};

/// A boxed future, so that transports can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One of kombu's transports, connected.
///
/// A transport object is one connection of this process to the broker. The
/// worker connects once ([`Broker::connect`]) for declarations, publishing and
/// the transport's housekeeping, and opens one more per event loop
/// ([`Transport::open_channel`], bound to that loop's runtime), which shares
/// the process's bookkeeping (the messages it holds).
pub trait Transport: Send + Sync + 'static {
    /// kombu's name of the transport (`redis`, `sqlalchemy`), for logs.
    fn name(&self) -> &'static str;

    /// What this transport can carry.
    fn capabilities(&self) -> Capabilities;

    /// The database file, for a transport that lives in one.
    fn file(&self) -> Option<&Path> {
        None
    }

    /// Declare the queues the worker consumes.
    fn declare<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Publish an encoded task message to `queue`.
    fn publish<'a>(&'a self, queue: &'a str, task: &'a EncodedTask) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Remove every message waiting in `queue` and say how many there were
    /// (kombu's `queue_purge`, what `celery purge` calls). Messages a worker
    /// holds unacknowledged are not waiting and stay. A queue that does not
    /// exist holds none.
    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>>;

    /// The queues a message published to `exchange` with `routing_key`
    /// reaches, as kombu's virtual transports look them up in the exchange's
    /// bindings (for `celeriac call --exchange`). Default: the queue the
    /// routing key names. AMQP routes on the server and never asks.
    fn route<'a>(&'a self, exchange: &'a str, routing_key: &'a str) -> BoxFuture<'a, Result<Vec<String>, BrokerError>> {
        let _ = exchange;
        Box::pin(async move { Ok(vec![routing_key.to_string()]) })
    }

    /// Another connection to the same broker, bound to the current runtime
    /// and sharing this one's bookkeeping (AMQP: a channel).
    fn open_channel(&self) -> BoxFuture<'_, Result<Broker, BrokerError>>;

    /// Start consuming `queues` on this connection, with at most `prefetch`
    /// unacknowledged messages (the worker also keeps to it; AMQP tells the
    /// server with `basic.qos`). Acknowledgements of the deliveries it hands
    /// out are written in batches by a task spawned on the current runtime.
    fn consume<'a>(
        &'a self,
        queues: &'a [String],
        prefetch: usize,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BrokerError>>;

    /// Start the transport's own chores for this process (kombu's QoS
    /// housekeeping: refreshing held messages, restoring abandoned ones),
    /// after one first pass. They run until the returned guard is dropped.
    fn start_housekeeping(&self) -> BoxFuture<'_, Housekeeping> {
        Box::pin(async { Housekeeping::none() })
    }

    /// Keeping far-future ETA tasks outside the worker (AMQP's delay queues).
    fn delayed_delivery(&self) -> Option<&dyn DelayedDelivery> {
        None
    }

    /// Publishing result messages to a client's reply queue (AMQP, for `rpc://`).
    fn replies(&self) -> Option<&dyn ReplyPublisher> {
        None
    }

    /// Fanout: kombu's pidbox (remote control) and Celery's events.
    fn fanout(&self) -> Option<&dyn Fanout> {
        None
    }

    /// Rate limits shared by every worker on this broker (`cluster_rate_limit`).
    fn shared_rate_limits(&self) -> Option<&dyn SharedRateLimits> {
        None
    }

    /// Close this transport's connections cleanly (AMQP: `connection.close`
    /// with 200, so the broker does not log a dropped socket), once everything
    /// they carry (acknowledgements, results) has been flushed. Nothing is
    /// sent through it afterwards. Default: nothing to close.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A transport that can keep a task message until its ETA instead of the
/// worker holding it unacknowledged (which would occupy a prefetch slot and,
/// on RabbitMQ, run into `consumer_timeout`).
pub trait DelayedDelivery: Send + Sync {
    /// ETAs nearer than this are better held by the worker.
    fn horizon(&self) -> std::time::Duration;

    /// Keep `task` for about `delay` and deliver it again on its queue
    /// (`task.routing_key`); returns once the broker has it, after which the
    /// caller acknowledges the original delivery.
    fn park<'a>(&'a self, task: &'a EncodedTask, delay: std::time::Duration) -> BoxFuture<'a, Result<(), BrokerError>>;
}

/// A broker that can hold one token bucket per task name for every worker
/// connected to it: cluster-wide rate limits (`cluster_rate_limit` in
/// `task_annotations`), which Celery lacks — its `rate_limit` is per worker.
pub trait SharedRateLimits: Send + Sync {
    /// Reserve the next start of `task` under `per_second` starts a second
    /// (GCRA, no burst: Celery's token bucket of capacity 1) and return how
    /// long to wait before starting it (zero: start now).
    fn reserve<'a>(&'a self, task: &'a str, per_second: f64)
    -> BoxFuture<'a, Result<std::time::Duration, BrokerError>>;
}

/// A transport that can publish result messages to a client's reply queue,
/// as Celery's `rpc://` backend does (default exchange, routing key =
/// `reply_to`, `correlation_id` = the task id), confirmed by the broker.
pub trait ReplyPublisher: Send + Sync {
    /// Publish one serialised result meta, of `content` = (content type, content encoding).
    fn publish_reply<'a>(
        &'a self,
        reply_to: &'a str,
        correlation_id: &'a str,
        body: &'a [u8],
        content: (&'static str, &'static str),
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
}

/// A transport with fanout exchanges, which kombu's pidbox (remote control:
/// `celery inspect`, `celery control`) and Celery's events travel over.
pub trait Fanout: Send + Sync {
    /// Bind the node `hostname`'s pidbox queue to `celery.pidbox` as kombu
    /// does, and receive what control clients broadcast there.
    fn listen<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, Result<Box<dyn Mailbox>, BrokerError>>;

    /// Publish to a fanout or topic exchange (`celeryev` events, a
    /// `celery.pidbox` broadcast). Nobody listening is not an error.
    fn broadcast<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Publish a control reply to the direct exchange `reply.celery.pidbox`
    /// under the client's id. Dropped when that client no longer listens.
    fn reply<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Receive every event published to `celeryev` (`celeriac events`), as
    /// Celery's `EventReceiver` does: a `#` binding of a queue of our own.
    fn events(&self) -> BoxFuture<'_, Result<Box<dyn Mailbox>, BrokerError>>;

    /// The client side (`celeriac inspect`): bind the reply queue of client
    /// `oid`, broadcast `request`, and collect what arrives there for up to
    /// `timeout`, or until `limit` messages came; the reply queue is removed
    /// afterwards, as kombu's `Mailbox._collect` does.
    fn call<'a>(
        &'a self,
        request: &'a Outgoing,
        oid: &'a str,
        timeout: std::time::Duration,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<RawMessage>, BrokerError>>;
}

/// A node's pidbox subscription.
pub trait Mailbox: Send {
    /// The next control message. Reconnects by itself when the connection
    /// drops (requests broadcast meanwhile are missed, as with kombu); an
    /// error only when the transport was closed.
    fn next(&mut self) -> BoxFuture<'_, Result<RawMessage, BrokerError>>;

    /// Remove the node's binding (at shutdown), as kombu does.
    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Receives messages from the queues it was opened on.
pub trait Consumer: Send {
    /// Receive up to `max` messages, waiting up to about a second for the
    /// first. Not cancel-safe: a fetch dropped mid-flight could lose a message.
    fn fetch(&mut self, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>>;

    /// Wait until every acknowledgement handed to this consumer's ackers so
    /// far has been written.
    fn flush(&self) -> BoxFuture<'_, ()>;

    /// Another consumer replaces this one (the consumed queues changed): take
    /// no new deliveries; what was already received is still handed out by
    /// `fetch` until [`Consumer::drained`], and acknowledged as usual. A
    /// transport whose broker pushes messages (AMQP) must do this, or the
    /// broker keeps sending this consumer messages no one fetches.
    fn retire(&mut self) {}

    /// Whether a retired consumer has handed out everything it received
    /// (a pulling transport holds nothing back: always).
    fn drained(&self) -> bool {
        true
    }
}

/// What a transport can carry beyond plain task messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fanout (broadcast) exchanges: remote control (`celery inspect`) and
    /// task events travel over them.
    pub fanout: bool,
    /// Message priorities.
    pub priorities: bool,
    /// The broker bounds each queue's unacknowledged deliveries itself
    /// (AMQP's per-consumer `basic.qos`): one flooded queue cannot fill the
    /// worker with messages that wait, so no queue needs pausing for that.
    pub per_queue_prefetch: bool,
}

impl Capabilities {
    /// Celery features this transport cannot carry, to report at start-up.
    pub fn unsupported_features(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.fanout {
            out.push("remote control (celery inspect/control: no fanout)");
            out.push("task events (-E, Flower)");
        }
        if !self.priorities {
            out.push("message priorities");
        }
        out
    }
}

/// The transport's housekeeping, running until this guard is dropped.
pub struct Housekeeping(Option<tokio::task::JoinHandle<()>>);

impl Housekeeping {
    /// Chores running in `task`.
    pub fn spawned(task: tokio::task::JoinHandle<()>) -> Self {
        Housekeeping(Some(task))
    }

    /// No chores (a transport that needs none).
    pub fn none() -> Self {
        Housekeeping(None)
    }
}

impl Drop for Housekeeping {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

/// A connected broker, whichever transport its URL names.
#[derive(Clone)]
pub struct Broker(Arc<dyn Transport>);

impl Broker {
    /// Connect to the broker at `url` with the settings that shape an AMQP
    /// broker's declarations and messages (`task_queue_max_priority`,
    /// `task_default_queue_type`, `task_create_missing_queue_type`,
    /// `broker_use_ssl`, `result_persistent`); `name` labels its connections.
    pub async fn connect_with_settings(url: &str, settings: &Settings, name: &str) -> Result<Broker, BrokerError> {
        if amqp::url::is_amqp_url(url) {
            return connect_amqp(url, settings, name).await;
        }
        Self::connect(url, &settings.broker_transport_options).await
    }

    /// Connect to the broker at `url` (an AMQP broker with default settings).
    pub async fn connect(url: &str, opts: &TransportOptions) -> Result<Broker, BrokerError> {
        if amqp::url::is_amqp_url(url) {
            return connect_amqp(url, &Settings::default(), "celeriac").await;
        }
        if url::is_redis_url(url) {
            return Ok(Broker::new(redis::RedisTransport::connect(url, opts.clone()).await?));
        }
        if url::is_sqlite_transport_url(url) {
            return Ok(Broker::new(sqlite::SqliteTransport::connect(url, opts.clone()).await?));
        }
        if url::is_other_sqlalchemy_url(url) {
            return Err(BrokerError::Url(UrlError(format!(
                "{url}: only SQLite is supported by the SQLAlchemy transport (sqla+sqlite:///file)"
            ))));
        }
        Err(BrokerError::Url(UrlError(format!(
            "{url}: unsupported transport; use redis://host:port/db, amqp://host// or sqla+sqlite:///file"
        ))))
    }

    /// A broker over `transport`.
    pub fn new(transport: impl Transport) -> Broker {
        Broker(Arc::new(transport))
    }
}

/// An AMQP broker as `settings` shape it.
async fn connect_amqp(url: &str, settings: &Settings, name: &str) -> Result<Broker, BrokerError> {
    let config = amqp::AmqpConfig {
        url: url.to_string(),
        ssl: settings.amqp_ssl(),
        topology: settings.amqp_topology(),
        name: name.to_string(),
        result_persistent: settings.result_persistent,
    };
    Ok(Broker::new(amqp::transport::AmqpTransport::connect(config).await?))
}

impl std::ops::Deref for Broker {
    type Target = dyn Transport;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Errors talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker URL cannot be used.
    #[error("invalid broker URL {0}")]
    Url(#[from] UrlError),
    /// Redis refused a command or could not be reached.
    #[error("broker connection error: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The SQLite file could not be used.
    #[error("broker connection error: {0}")]
    Database(#[from] DbError),
    /// The broker held data we could not understand.
    #[error("broker protocol error: {0}")]
    Protocol(String),
    /// The AMQP transport failed.
    #[error(transparent)]
    Amqp(#[from] amqp::AmqpError),
}

impl BrokerError {
    /// Whether the broker could not be reached or refused a command: trying
    /// again later may succeed. A bad URL or bad data will not get better.
    pub fn is_connection_error(&self) -> bool {
        match self {
            BrokerError::Redis(_) | BrokerError::Database(_) => true,
            BrokerError::Amqp(e) => e.is_connection_error(),
            BrokerError::Url(_) | BrokerError::Protocol(_) => false,
        }
    }
}

/// One received message, not yet acknowledged.
pub struct Delivery {
    /// The message, decoded by the transport; or why it could not be.
    pub message: Result<RawMessage, BadMessage>,
    /// How to acknowledge it, give it back or hold on to it.
    pub acker: Acker,
    /// Whether it came while the consumer was waiting on empty queues: the
    /// worker was idle, and a client is probably waiting for this task.
    pub idle: bool,
}

/// A message the transport could not turn into a [`RawMessage`].
#[derive(Debug)]
pub enum BadMessage {
    /// Not a message at all (not a kombu envelope): logged and discarded.
    Unreadable {
        /// What is wrong with it.
        error: ProtocolError,
        /// The start of the raw bytes, for the log.
        preview: String,
    },
    /// An envelope whose body cannot be decoded; the task it names (if any)
    /// is failed.
    Undecodable(ProtocolError),
}

/// How much of an unreadable message to show in the log.
const RAW_PREVIEW: usize = 200;

/// Decode a kombu envelope (the JSON document the virtual transports carry)
/// into the message the worker reads. Done once per delivery, by the
/// transport; `inspect` sees the envelope first (for what the transport's own
/// bookkeeping reads from it).
pub fn decode_envelope<T>(
    payload: &[u8],
    inspect: impl FnOnce(&Envelope) -> T,
) -> (Option<T>, Result<RawMessage, BadMessage>) {
    match Envelope::parse(payload) {
        Ok(env) => {
            let seen = inspect(&env);
            (Some(seen), env.into_raw_message().map_err(BadMessage::Undecodable))
        }
        Err(error) => (None, Err(BadMessage::Unreadable { error, preview: preview(payload) })),
    }
}

/// The start of a raw message, for log lines about bad input.
pub fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(RAW_PREVIEW)]).into_owned();
    if bytes.len() > RAW_PREVIEW { format!("{text:?}...") } else { format!("{text:?}") }
}

/// A transport's handle on one delivery, behind an [`Acker`].
pub trait AckHandle: Send + Sync {
    /// Acknowledge the message: queued and written with the next batch
    /// (retried through broker outages; nothing waits for it).
    fn ack(&mut self);

    /// Acknowledge the message as its task starts (an early ack), and wait
    /// until it is written where the transport can make sure of it: a worker
    /// killed while the task runs must not have it delivered again (Celery's
    /// at-most-once for early acks). Default: [`AckHandle::ack`] (AMQP's
    /// `basic.ack` goes out on the channel at once).
    fn ack_before_start(&mut self) -> BoxFuture<'_, ()> {
        self.ack();
        Box::pin(async {})
    }

    /// Give the message back to its queue (marked redelivered), and wait
    /// until the broker has it.
    fn requeue(&mut self) -> BoxFuture<'_, ()>;

    /// The worker is going to keep this message a while (an ETA, no free run
    /// slot, a late ack, a result to write first): make it safe, e.g. record it
    /// in the ack bookkeeping if it is not yet. Does not wait.
    fn hold(&mut self);

    /// Drop a message that can never run (unknown task, invalid message), as
    /// Celery's `reject_log_error` does: `basic.reject(requeue=false)` on AMQP,
    /// so a queue with a dead-letter exchange keeps it there. kombu's virtual
    /// transports have no dead-lettering: there it is an acknowledgement.
    fn reject(&mut self) -> BoxFuture<'_, ()> {
        self.ack();
        Box::pin(async {})
    }

    /// A second handle on the same delivery.
    fn clone_box(&self) -> Box<dyn AckHandle>;

    /// Whether the broker has already taken this delivery back, so that it
    /// can no longer be settled and another copy of it is (or will be)
    /// delivered again (AMQP: the channel it came on closed, and the broker
    /// requeued everything unacknowledged on it). The worker drops a stale
    /// delivery instead of running it, or the task would run twice. Default:
    /// never (the virtual transports' records outlive any connection).
    fn is_stale(&self) -> bool {
        false
    }
}

/// Acknowledges one delivery: exactly once, or gives it back.
pub struct Acker {
    handle: Box<dyn AckHandle>,
    settled: bool,
}

impl Acker {
    /// An acker over a transport's handle.
    pub fn new(handle: impl AckHandle + 'static) -> Self {
        Acker { handle: Box::new(handle), settled: false }
    }

    /// Acknowledge (early: as the task starts; late: after its result is
    /// stored). A second ack or an ack after a requeue does nothing.
    pub fn ack(&mut self) {
        if !std::mem::replace(&mut self.settled, true) {
            self.handle.ack();
        }
    }

    /// Acknowledge as the task starts (early ack), once the ack is written
    /// (see [`AckHandle::ack_before_start`]).
    pub async fn ack_before_start(&mut self) {
        if !std::mem::replace(&mut self.settled, true) {
            self.handle.ack_before_start().await;
        }
    }

    /// Put the message back on its queue (warm shutdown, not started yet).
    pub async fn requeue(&mut self) {
        if !std::mem::replace(&mut self.settled, true) {
            self.handle.requeue().await;
        }
    }

    /// Drop the message for good (dead-lettered where the queue says so).
    pub async fn reject(&mut self) {
        if !std::mem::replace(&mut self.settled, true) {
            self.handle.reject().await;
        }
    }

    /// The worker keeps this message a while: let the transport make it safe.
    pub fn hold(&mut self) {
        if !self.settled {
            self.handle.hold();
        }
    }

    /// Whether the delivery, not settled yet, can no longer be settled: the
    /// broker took it back and delivers it again (see [`AckHandle::is_stale`]).
    /// Such a delivery must not be run; dropping it is all there is to do.
    pub fn is_stale(&self) -> bool {
        !self.settled && self.handle.is_stale()
    }

    /// A second acker for the same delivery, to settle it if the first one's
    /// owner fails (a bug in a handler).
    pub fn duplicate(&self) -> Acker {
        Acker { handle: self.handle.clone_box(), settled: self.settled }
    }
}
