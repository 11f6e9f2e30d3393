//! Brokers: where task messages come from and where acknowledgements go.
//!
//! Celery talks to a broker through kombu; Celeriac implements kombu's
//! transports natively. [`redis`] is kombu's Redis transport (lists plus
//! `unacked` bookkeeping); [`sqlite`] is kombu's SQLAlchemy transport on an
//! SQLite file, the embedded default; [`amqp`] is kombu's pyamqp transport
//! (RabbitMQ), reached through [`amqp::bridge`] for now. [`Broker`] is the one type the worker and the CLI
//! use, whatever the transport; a [`Delivery`] is one received, not yet
//! acknowledged message, acknowledged by tag or put back with `restore`.

pub mod amqp;
pub mod redis;
pub mod sqlite;

use std::collections::HashSet;

use crate::config::{Settings, TransportOptions};
use crate::protocol::{EncodedTask, RawMessage};

/// A connected broker, whichever transport its URL names.
#[derive(Clone)]
pub enum Broker {
    /// kombu's Redis transport.
    Redis(redis::RedisBroker),
    /// kombu's SQLAlchemy transport on SQLite (`sqla+sqlite:///file`).
    Sqlite(sqlite::SqliteBroker),
    /// kombu's pyamqp transport (RabbitMQ).
    Amqp(amqp::bridge::AmqpBridge),
}

/// Whether a URL names a Redis server (`redis://`, `rediss://`, `unix://`, `socket://`).
pub fn is_redis_url(url: &str) -> bool {
    ["redis://", "rediss://", "unix://", "socket://", "redis+socket://"].iter().any(|p| url.starts_with(p))
}

impl Broker {
    /// Connect to the broker at `url` with the settings that shape its
    /// declarations (`task_queue_max_priority`, `task_default_queue_type`,
    /// `broker_use_ssl`); `name` labels the connections (the node name).
    pub async fn connect_with_settings(url: &str, settings: &Settings, name: &str) -> Result<Broker, BrokerError> {
        if amqp::url::is_amqp_url(url) {
            let b = amqp::AmqpBroker::connect(url, settings.amqp_ssl(), settings.amqp_topology(), name).await?;
            return Ok(Broker::Amqp(amqp::bridge::AmqpBridge::new(b)));
        }
        Self::connect(url, &settings.broker_transport_options).await
    }

    /// Connect to the broker at `url`.
    pub async fn connect(url: &str, opts: &TransportOptions) -> Result<Broker, BrokerError> {
        if amqp::url::is_amqp_url(url) {
            let topology = amqp::Topology { default_queue: "celery".into(), ..amqp::Topology::default() };
            let b = amqp::AmqpBroker::connect(url, None, topology, "celeriac").await?;
            return Ok(Broker::Amqp(amqp::bridge::AmqpBridge::new(b)));
        }
        if is_redis_url(url) {
            return Ok(Broker::Redis(redis::RedisBroker::connect(url, opts.clone()).await?));
        }
        if sqlite::is_broker_url(url) {
            return Ok(Broker::Sqlite(sqlite::SqliteBroker::connect(url, opts.clone()).await?));
        }
        if url.starts_with("sqla+") || url.starts_with("sqlalchemy+") {
            return Err(BrokerError::Url(format!(
                "{url}: only SQLite is supported by the SQLAlchemy transport (sqla+sqlite:///file)"
            )));
        }
        Err(BrokerError::Url(format!(
            "{url}: unsupported transport; use redis://host:port/db, amqp://host// or sqla+sqlite:///file"
        )))
    }

    /// The transport's name, for the banner.
    pub fn transport(&self) -> &'static str {
        match self {
            Broker::Redis(_) => "redis",
            Broker::Sqlite(_) => "sqlalchemy",
            Broker::Amqp(_) => "amqp",
        }
    }

    /// The database file of the SQLite transport.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            Broker::Redis(_) | Broker::Amqp(_) => None,
            Broker::Sqlite(b) => Some(b.path()),
        }
    }

    /// Celery features this transport cannot carry, to report at start-up.
    pub fn unsupported_features(&self) -> &'static [&'static str] {
        match self {
            Broker::Redis(_) | Broker::Amqp(_) => &[],
            Broker::Sqlite(_) => sqlite::UNSUPPORTED,
        }
    }

    /// Declare the queues the worker consumes.
    pub async fn declare(&self, queues: &[String]) -> Result<(), BrokerError> {
        match self {
            Broker::Redis(b) => b.declare(queues).await,
            Broker::Sqlite(b) => b.declare(queues).await,
            Broker::Amqp(b) => Ok(b.broker.declare(queues).await?),
        }
    }

    /// What [`Broker::fetch`] reads for `queues`: on Redis the lists, in
    /// kombu's polling order (one per queue and priority step); on SQLite the
    /// queue names. A consumer works this out once.
    pub fn sources(&self, queues: &[String]) -> Vec<String> {
        match self {
            Broker::Redis(b) => b.consume_lists(queues),
            Broker::Sqlite(_) | Broker::Amqp(_) => queues.to_vec(),
        }
    }

    /// Start a push consumer for `queues` with `prefetch` unacknowledged
    /// messages (AMQP's `basic.qos`); a no-op on the polling transports.
    pub async fn start_consuming(&self, queues: &[String], prefetch: usize) {
        if let Broker::Amqp(b) = self {
            b.start(queues, u16::try_from(prefetch).unwrap_or(u16::MAX)).await;
        }
    }

    /// Stop the push consumer (warm shutdown) and give back what it received
    /// but the worker did not take; a no-op on the polling transports.
    pub async fn stop_consuming(&self) {
        if let Broker::Amqp(b) = self {
            b.stop().await;
        }
    }

    /// Park a task message whose ETA is `delay` away outside the worker
    /// (AMQP's delay queues), acknowledging delivery `tag` once the copy is
    /// confirmed. `Ok(false)`: this transport holds ETA tasks in the worker.
    pub async fn park(&self, tag: &str, task: &EncodedTask, delay: std::time::Duration) -> Result<bool, BrokerError> {
        match self {
            Broker::Amqp(b) if delay > amqp::HOLD_HORIZON => Ok(b.park(tag, task, delay).await.map(|()| true)?),
            _ => Ok(false),
        }
    }

    /// Receive up to `max` messages from `sources` ([`Broker::sources`]),
    /// waiting up to about a second.
    pub async fn fetch(&self, sources: &[String], max: usize) -> Result<Vec<Delivery>, BrokerError> {
        match self {
            Broker::Redis(b) => b.fetch(sources, max).await,
            Broker::Sqlite(b) => b.fetch(sources, max).await,
            Broker::Amqp(b) => Ok(b.fetch(max).await),
        }
    }

    /// Record a delivery in the ack bookkeeping if it is not yet (see
    /// [`Delivery::recorded`]). Does not wait for the broker's reply.
    pub fn record(&self, d: &mut Delivery) {
        if d.recorded {
            return;
        }
        d.recorded = true;
        if let (Broker::Redis(b), Some(tag)) = (self, &d.tag) {
            b.record(tag, &d.payload);
        }
    }

    /// Record a delivery that is not recorded yet and wait for the broker to
    /// confirm it (the caller marks it recorded once this succeeds).
    pub async fn record_confirmed(&self, d: &Delivery) -> Result<(), BrokerError> {
        match (self, &d.tag, d.recorded) {
            (Broker::Redis(b), Some(tag), false) => b.record_confirmed(tag, &d.payload).await,
            _ => Ok(()),
        }
    }

    /// Acknowledge messages by tag.
    pub async fn ack(&self, tags: &[String]) -> Result<(), BrokerError> {
        match self {
            Broker::Redis(b) => b.ack(tags).await,
            Broker::Sqlite(b) => b.ack(tags).await,
            Broker::Amqp(b) => Ok(b.ack(tags).await?),
        }
    }

    /// Put an unacknowledged message back on its queue; false if it was gone.
    pub async fn restore(&self, tag: &str) -> Result<bool, BrokerError> {
        match self {
            Broker::Redis(b) => b.restore(tag).await,
            Broker::Sqlite(b) => b.restore(tag).await,
            Broker::Amqp(b) => Ok(b.restore(tag).await?),
        }
    }

    /// Mark messages this worker still holds as alive.
    pub async fn touch(&self, tags: &HashSet<String>) -> Result<(), BrokerError> {
        match self {
            Broker::Redis(b) => b.touch(tags).await,
            Broker::Sqlite(b) => b.touch(tags).await,
            // The broker knows which deliveries are unacknowledged, and by whom.
            Broker::Amqp(_) => Ok(()),
        }
    }

    /// Restore other consumers' messages past the visibility timeout.
    pub async fn restore_visible(&self, ours: &HashSet<String>) -> Result<usize, BrokerError> {
        match self {
            Broker::Redis(b) => b.restore_visible(ours).await,
            Broker::Sqlite(b) => b.restore_visible(ours).await,
            Broker::Amqp(_) => Ok(0),
        }
    }

    /// Publish an encoded task message to `queue`.
    pub async fn publish(&self, queue: &str, task: &EncodedTask) -> Result<(), BrokerError> {
        match self {
            Broker::Redis(b) => b.publish(queue, task.priority.unwrap_or(0), &task.to_redis_bytes()).await,
            Broker::Sqlite(b) => b.publish(queue, task).await,
            Broker::Amqp(b) => {
                let mut task = task.clone();
                task.routing_key = queue.to_string();
                Ok(b.broker.publish_task(&task).await?)
            }
        }
    }
}

/// Errors talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker URL cannot be used.
    #[error("invalid broker URL {0}")]
    Url(String),
    /// The connection failed or a command was refused.
    #[error("broker connection error: {0}")]
    Connection(String),
    /// The broker held data we could not understand.
    #[error("broker protocol error: {0}")]
    Protocol(String),
    /// The AMQP transport failed.
    #[error(transparent)]
    Amqp(#[from] amqp::AmqpError),
}

impl BrokerError {
    pub(crate) fn redis(e: ::redis::RedisError) -> Self {
        BrokerError::Connection(e.to_string())
    }
}

/// One received message, not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue (list) it came from.
    pub queue: String,
    /// The raw message: a kombu JSON envelope on Redis.
    pub payload: Vec<u8>,
    /// The delivery tag, if the envelope carried a readable one. A message
    /// without one was not recorded as unacknowledged and needs no ack.
    pub tag: Option<String>,
    /// Whether it is in the broker's ack bookkeeping. On Redis, a message
    /// taken by the blocking wait on empty queues (the worker was idle) is
    /// not yet: the worker records it
    /// ([`Broker::record`]) before it holds on to it, and a message
    /// acknowledged as it starts, at once, needs neither record nor ack.
    pub recorded: bool,
    /// The message already decoded by the transport (AMQP carries headers and
    /// properties in frames, not in an envelope); `payload` is then empty.
    pub message: Option<RawMessage>,
}

impl Delivery {
    /// A delivery popped and recorded by the receiving script, with the tag it
    /// recorded in `unacked` (empty: not recorded, nothing to acknowledge).
    pub(crate) fn recorded(list: &[u8], payload: Vec<u8>, tag: &[u8]) -> Self {
        let tag = (!tag.is_empty()).then(|| String::from_utf8_lossy(tag).into_owned());
        Delivery { queue: String::from_utf8_lossy(list).into_owned(), payload, tag, recorded: true, message: None }
    }

    /// A delivery the blocking wait popped, not recorded yet, with the tag its
    /// envelope carries (`None`: not an envelope we can read).
    pub(crate) fn waited(list: &[u8], payload: Vec<u8>, tag: Option<String>) -> Self {
        Delivery { queue: String::from_utf8_lossy(list).into_owned(), payload, tag, recorded: false, message: None }
    }
}
