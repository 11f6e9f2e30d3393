//! kombu's pyamqp transport (RabbitMQ, AMQP 0-9-1), natively, on `lapin`.
//!
//! Celery's First Steps uses `broker_url = "pyamqp://"`. This module is what a
//! Celery 5.7 worker does on that transport, seen from the wire
//! (`tests/fixtures/amqp/`):
//!
//! - **Declarations** exactly as a Celery client makes them: exchange named
//!   after the queue (direct, durable), the queue durable with the arguments of
//!   [`protocol::amqp::queue_arguments`] (`x-max-priority`, `x-queue-type`),
//!   bound with key = queue name. Anything else would be a 406
//!   PRECONDITION_FAILED that closes the channel of every Python client
//!   declaring the same queue.
//! - **Consuming**: one channel per consumer set, `basic.qos(prefetch,
//!   global=false)` (per consumer; quorum queues accept nothing else), manual
//!   acks. Each delivery reaches the worker as an [`AmqpDelivery`]: the
//!   decoded [`RawMessage`] plus a [`DeliveryAck`] (ack / requeue / reject) on
//!   the channel it came from. A consumer the broker cancels (queue deleted)
//!   is declared and consumed again; a lost connection is re-established with
//!   back-off, through the failover list, and consuming resumes (the broker
//!   has already requeued what was unacknowledged, and delivers it again on
//!   the new channel: the deliveries the worker still holds from the old one
//!   are stale, [`DeliveryAck::is_stale`], and are dropped rather than run a
//!   second time). The back-off starts again from its first step once
//!   consuming has resumed.
//! - **Publishing** with publisher confirms on a separate connection (as
//!   Celery's worker has a separate publisher connection, so a
//!   `connection.blocked` never stalls acknowledgements): [`AmqpBroker::publish`]
//!   returns once the broker confirmed the message, so callers acknowledge
//!   what produced it only afterwards. While the broker blocks publishers
//!   (`connection.blocked`, a memory or disk alarm), publishing waits; nothing
//!   is dropped. The blocked flag belongs to one connection: when that
//!   connection ends, the flag clears and a waiting publish reconnects
//!   instead of waiting for a `connection.unblocked` that cannot come.
//! - **Closing** ([`AmqpBroker::close`]): at exit, once acknowledgements and
//!   results are flushed, each connection is closed with `connection.close`
//!   (200), not dropped.
//! - **Far-future ETAs** ([`AmqpBroker::park`]): a message is held in memory
//!   only while its ETA is near ([`HOLD_HORIZON`]); farther ones are
//!   re-published (with confirms) into delay queues and the original is
//!   acknowledged, so no unacknowledged message occupies a prefetch slot or
//!   nears RabbitMQ's `consumer_timeout` (30 min by default). Delay level `n`
//!   is a fanout exchange and a durable queue `celeriac.delayed.<n>` whose
//!   messages all live 2ⁿ seconds (`x-message-ttl`, so they expire in FIFO
//!   order) and are then dead-lettered to the default exchange with their
//!   original routing key — back to their queue. A message waiting `d`
//!   seconds is parked in the largest level ≤ `d`, and again when it comes back,
//!   so it makes at most one hop per level (log₂ d hops). Python workers on
//!   the same queue see an ordinary (redelivered-looking) task message.

pub mod acks;
mod fanout;
pub mod transport;
pub mod url;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Event, ExchangeKind};
use tokio::sync::{mpsc, watch};

use crate::protocol::amqp::{self as wire, AmqpEncodeError, Deliver, QueueType, short_string};
use crate::protocol::{EncodedTask, RawMessage};
use acks::AckWindow;
use url::{AmqpUrl, SslOptions, UrlError};

/// ETAs nearer than this are held in memory (unacknowledged); farther ones are parked.
pub const HOLD_HORIZON: Duration = Duration::from_secs(2);
/// Delay levels: 2⁰ … 2²⁷ seconds (about 4 years), as Celery's native delayed delivery.
const DELAY_LEVELS: u32 = 28;
/// Headers RabbitMQ adds when it dead-letters a message; dropped when parking again.
const DEATH_HEADERS: &[&str] = &[
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];
/// The largest frame we accept (`connection.tune`; the broker offers 128 KiB).
/// lapin keeps 32 frames of read and of write buffer per connection, zeroed:
/// at 128 KiB that is 8 MiB resident per connection (40 MiB for a worker's
/// five); at 16 KiB, 1 MiB. Larger bodies are simply split into more frames.
const FRAME_MAX: u32 = 16 * 1024;
/// Deliveries buffered between the consumer task and the worker.
const DELIVERY_BUFFER: usize = 64;
/// How often the watcher of a publisher connection looks whether it still
/// lives (it also looks at every event the connection reports).
const LIVENESS_TICK: Duration = Duration::from_secs(1);
/// How long closing a connection at exit waits for the broker's `close-ok`.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Errors of the AMQP transport.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The URL cannot be used.
    #[error("invalid broker URL: {0}")]
    Url(#[from] UrlError),
    /// The connection, a channel or a method failed (lapin).
    #[error("AMQP error: {0}")]
    Lapin(#[from] lapin::Error),
    /// A value does not fit an AMQP frame.
    #[error("cannot encode AMQP message: {0}")]
    Encode(#[from] AmqpEncodeError),
    /// The broker refused a published message (`basic.nack` under publisher confirms).
    #[error("the broker did not accept a published message (basic.nack)")]
    Nacked,
    /// TLS files could not be read.
    #[error("invalid broker TLS setting: {0}")]
    Tls(String),
    /// The connection or channel went away under a consumer or publisher.
    #[error("broker connection lost: {0}")]
    Lost(String),
    /// No broker of the failover list answered in time.
    #[error("timed out connecting to {0}")]
    Timeout(String),
    /// lapin would not settle a delivery (its `Acker` answered `false`): its
    /// channel closed, so the broker has put the message back already.
    #[error("the delivery can no longer be settled (its channel closed; the broker delivers it again)")]
    Unsettled,
    /// [`AmqpBroker::close`] was called: nothing more goes out.
    #[error("the broker connection was closed")]
    Closed,
}

impl AmqpError {
    /// Whether the error means the connection (or its channel) is gone and a
    /// reconnect / retry can succeed, as opposed to a configuration mistake.
    pub fn is_connection_error(&self) -> bool {
        match self {
            AmqpError::Lapin(e) => !matches!(e.kind(), lapin::ErrorKind::AuthProviderError(_)),
            AmqpError::Timeout(_) | AmqpError::Nacked | AmqpError::Lost(_) | AmqpError::Unsettled => true,
            AmqpError::Url(_) | AmqpError::Encode(_) | AmqpError::Tls(_) | AmqpError::Closed => false,
        }
    }
}

/// The worker's settings that shape declarations, read as Celery 5.7's
/// `Queues` reads them: the default queue gets `task_default_queue_type`, any
/// other queue (created by name, `-Q name`) `task_create_missing_queue_type`;
/// `task_queue_max_priority` applies to all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    /// `task_queue_max_priority`.
    pub max_priority: Option<u8>,
    /// `task_default_queue`.
    pub default_queue: String,
    /// `task_default_queue_type`.
    pub default_queue_type: QueueType,
    /// `task_create_missing_queue_type`.
    pub missing_queue_type: QueueType,
}

impl Topology {
    /// The queue type `queue` is declared with.
    pub fn queue_type(&self, queue: &str) -> QueueType {
        if queue == self.default_queue { self.default_queue_type } else { self.missing_queue_type }
    }
}

/// One live connection and what was opened on it.
#[derive(Clone)]
struct Live {
    conn: Arc<Connection>,
    /// Publisher-confirm channel (publisher role only).
    publisher: Option<Channel>,
    generation: u64,
    /// True while the broker blocks this connection (`connection.blocked`;
    /// publisher role only, always false for the consumer). Cleared, and
    /// its sender gone, once the connection has ended.
    blocked: watch::Receiver<bool>,
}

/// Which of the two connections.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Consumer,
    Publisher,
}

struct Inner {
    urls: Vec<AmqpUrl>,
    tls: OwnedTLSConfig,
    topology: Topology,
    name: String,
    /// The runtime of the thread that connected (the worker's main thread,
    /// idle while the event loops work): every connection's socket is
    /// registered with it, so a loop busy running a task never delays another
    /// loop's deliveries, or heartbeats.
    io: tokio::runtime::Handle,
    consumer: tokio::sync::Mutex<Option<Live>>,
    publisher: tokio::sync::Mutex<Option<Live>>,
    generation: AtomicU64,
    /// Set by [`AmqpBroker::close`]: no more connections are opened.
    closed: AtomicBool,
    /// Delay levels already declared on the current publisher connection.
    delay_levels: Mutex<HashMap<u32, u64>>,
    /// Exchanges (pidbox, events) declared, with the publisher connection's generation.
    declared: Mutex<HashMap<String, u64>>,
}

/// A connection to an AMQP broker (cheap to clone).
#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<Inner>,
}

/// What an [`AmqpBroker`] was connected with, to open more connections alike.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// The broker URL (a failover list is allowed).
    pub url: String,
    /// `broker_use_ssl` (overrides the URL's TLS options).
    pub ssl: Option<SslOptions>,
    /// Declarations.
    pub topology: Topology,
    /// Connection label (the node name).
    pub name: String,
    /// `result_persistent`: rpc replies with `delivery_mode` 2.
    pub result_persistent: bool,
}

/// One received message and the handle that settles it.
pub struct AmqpDelivery {
    /// The queue it was consumed from (the routing key may differ).
    pub queue: String,
    /// The message, transport-neutral.
    pub message: RawMessage,
    /// Ack / requeue / reject on the channel it arrived on.
    pub ack: DeliveryAck,
}

/// Settles one delivery on the channel it came from. If that channel or its
/// connection is gone, the broker has already put the message back (and
/// delivers it again on the next channel); settling it then reports an error
/// and changes nothing, and [`DeliveryAck::is_stale`] says so beforehand.
#[derive(Clone, Debug)]
pub struct DeliveryAck {
    acker: lapin::Acker,
    tag: u64,
    /// The unsettled deliveries of the channel (for `multiple` acks).
    window: Arc<Mutex<AckWindow>>,
    /// Keeps the channel open until the delivery is settled (lapin closes a
    /// channel when its last handle goes, and the broker would requeue).
    channel: Channel,
}

impl DeliveryAck {
    /// `basic.ack` each of `acks`, with one `basic.ack(multiple=true)` per
    /// channel for the run of them that no held delivery interrupts
    /// ([`AckWindow`]). Returns the errors (a gone channel: the broker has
    /// put those messages back already).
    pub async fn ack_all(acks: Vec<DeliveryAck>) -> Vec<AmqpError> {
        let mut by_channel: Vec<(Arc<Mutex<AckWindow>>, Vec<DeliveryAck>)> = Vec::new();
        for a in acks {
            match by_channel.iter_mut().find(|(w, _)| Arc::ptr_eq(w, &a.window)) {
                Some((_, v)) => v.push(a),
                None => by_channel.push((a.window.clone(), vec![a])),
            }
        }
        let mut sends = Vec::new();
        for (window, acks) in by_channel {
            let plan = window.lock().unwrap_or_else(|p| p.into_inner()).settle(acks.iter().map(|a| a.tag));
            for a in acks {
                if plan.multiple == Some(a.tag) {
                    sends.push((a, true));
                } else if plan.single.contains(&a.tag) {
                    sends.push((a, false));
                }
            }
        }
        let results = futures_util::future::join_all(
            sends.iter().map(|(a, multiple)| a.acker.ack(BasicAckOptions { multiple: *multiple })),
        )
        .await;
        results.into_iter().filter_map(|r| r.map_err(AmqpError::from).and_then(settled).err()).collect()
    }

    /// `basic.reject(requeue=true)`: give the message back (warm shutdown), as Celery does.
    pub async fn requeue(&self) -> Result<(), AmqpError> {
        self.window.lock().unwrap_or_else(|p| p.into_inner()).forget(self.tag);
        settled(self.acker.reject(BasicRejectOptions { requeue: true }).await?)
    }

    /// `basic.reject(requeue=false)`: drop a message that can never be processed
    /// (or dead-letter it, if the queue has a dead-letter exchange).
    pub async fn reject(&self) -> Result<(), AmqpError> {
        self.window.lock().unwrap_or_else(|p| p.into_inner()).forget(self.tag);
        settled(self.acker.reject(BasicRejectOptions { requeue: false }).await?)
    }

    /// Whether the channel this delivery came on has ended (lapin poisons its
    /// ackers then): the broker has requeued the message and delivers it again
    /// on the consumer's next channel, so this copy must not be run.
    pub fn is_stale(&self) -> bool {
        self.acker.poisoned() || !self.channel.status().connected()
    }
}

/// lapin's answer to a settle: `false` when its `Acker` was poisoned (the
/// channel closed) or used already, in which case nothing went out.
fn settled(sent: bool) -> Result<(), AmqpError> {
    if sent { Ok(()) } else { Err(AmqpError::Unsettled) }
}

impl AmqpBroker {
    /// Parse `url` (a failover list is allowed) and connect to the first
    /// broker that answers. `ssl` is `broker_use_ssl` (it overrides URL options).
    pub async fn connect(
        url: &str,
        ssl: Option<SslOptions>,
        topology: Topology,
        name: &str,
    ) -> Result<AmqpBroker, AmqpError> {
        let mut urls = url::parse_failover(url)?;
        if let Some(ssl) = ssl {
            for u in &mut urls {
                u.tls = true;
                u.ssl = ssl.clone();
            }
        }
        let tls = tls_config(urls.iter().find(|u| u.tls).map(|u| &u.ssl))?;
        let broker = AmqpBroker {
            inner: Arc::new(Inner {
                urls,
                tls,
                topology,
                name: name.to_string(),
                io: tokio::runtime::Handle::current(),
                consumer: tokio::sync::Mutex::new(None),
                publisher: tokio::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                delay_levels: Mutex::new(HashMap::new()),
                declared: Mutex::new(HashMap::new()),
            }),
        };
        broker.live(Role::Publisher).await?;
        Ok(broker)
    }

    /// The broker URL in use (password masked), for logs.
    pub fn display_url(&self) -> String {
        self.inner.urls.first().map(AmqpUrl::display).unwrap_or_default()
    }

    /// The live connection of `role`, reconnecting (through the failover list) if needed.
    async fn live(&self, role: Role) -> Result<Live, AmqpError> {
        let slot = match role {
            Role::Consumer => &self.inner.consumer,
            Role::Publisher => &self.inner.publisher,
        };
        let mut guard = slot.lock().await;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(AmqpError::Closed);
        }
        if let Some(live) = guard.as_mut()
            && live.conn.status().connected()
        {
            if role == Role::Publisher && !live.publisher.as_ref().is_some_and(|c| c.status().connected()) {
                // The channel was closed (e.g. a publish to a missing exchange): a new one.
                live.publisher = Some(confirm_channel(&live.conn).await?);
            }
            return Ok(live.clone());
        }
        let mut last = None;
        for u in &self.inner.urls {
            match self.open(u, role).await {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    let (publisher, blocked) = match role {
                        Role::Publisher => {
                            let channel = confirm_channel(&conn).await?;
                            self.inner.delay_levels.lock().unwrap_or_else(|p| p.into_inner()).clear();
                            (Some(channel), watch_blocked(&conn, &self.inner.io))
                        }
                        // A consumer connection publishes nothing: never blocked.
                        Role::Consumer => (None, watch::channel(false).1),
                    };
                    let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
                    let live = Live { conn, publisher, generation, blocked };
                    *guard = Some(live.clone());
                    return Ok(live);
                }
                Err(e) => {
                    tracing::debug!("cannot connect to {}: {e}", u.display());
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(AmqpError::Url(UrlError::Empty)))
    }

    /// Open one connection to `u`.
    async fn open(&self, u: &AmqpUrl, role: Role) -> Result<Connection, AmqpError> {
        let uri = AMQPUri {
            scheme: if u.tls { AMQPScheme::AMQPS } else { AMQPScheme::AMQP },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo { username: u.user.clone(), password: u.password.clone() },
                host: u.host.clone(),
                port: u.port,
            },
            vhost: u.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: Some(u.heartbeat),
                connection_timeout: Some(u.connect_timeout.as_millis() as u64),
                frame_max: Some(FRAME_MAX),
                ..AMQPQueryString::default()
            },
        };
        let kind = match role {
            Role::Consumer => "consumer",
            Role::Publisher => "publisher",
        };
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("{} ({kind})", self.inner.name)))
            .with_client_property("product".into(), LongString::from("celeriac"));
        let tls = self.inner.tls.clone();
        // Connected on the main runtime (lapin registers the socket with the
        // runtime it connects on), whichever loop asks.
        let mut connecting = self.inner.io.spawn(async move {
            let runtime = lapin::runtime::default_runtime()?;
            Connection::connect_uri_with_config(uri, props, tls, runtime).await
        });
        // connect_timeout bounds the TCP connect; the handshake gets a little more.
        match tokio::time::timeout(u.connect_timeout + Duration::from_secs(10), &mut connecting).await {
            Ok(Ok(conn)) => Ok(conn?),
            Ok(Err(e)) => Err(AmqpError::Lost(format!("the connecting task ended: {e}"))),
            Err(_) => {
                connecting.abort();
                Err(AmqpError::Timeout(u.display()))
            }
        }
    }

    /// Close the connections with `connection.close` (200), each waited for
    /// at most [`CLOSE_WAIT`], and open no new ones: call once what went
    /// through them (acknowledgements, results) has been flushed. A consumer
    /// must have been stopped first, or it would see its connection end.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        for (slot, kind) in [(&self.inner.consumer, "consumer"), (&self.inner.publisher, "publisher")] {
            let Some(live) = slot.lock().await.take() else { continue };
            if !live.conn.status().connected() {
                continue;
            }
            match tokio::time::timeout(CLOSE_WAIT, live.conn.close(200, "OK".into())).await {
                Ok(Ok(())) => tracing::debug!("closed the {kind} connection"),
                Ok(Err(e)) => tracing::debug!("could not close the {kind} connection cleanly: {e}"),
                Err(_) => tracing::debug!("the broker did not confirm closing the {kind} connection in {CLOSE_WAIT:?}"),
            }
        }
    }

    /// Declare the task queues the worker consumes, as a Celery client does.
    pub async fn declare(&self, queues: &[String]) -> Result<(), AmqpError> {
        let channel = self.live(Role::Publisher).await?.conn.create_channel().await?;
        for q in queues {
            declare_queue(&channel, q, &self.inner.topology).await?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// `queue.purge` on a channel of its own: how many messages were waiting.
    /// A queue that does not exist (the broker closes the channel with 404)
    /// holds none, as `celery purge` counts it.
    pub async fn purge(&self, queue: &str) -> Result<u64, AmqpError> {
        let name = short_string("queue", queue)?;
        let conn = self.live(Role::Publisher).await?.conn;
        let channel = conn.create_channel().await?;
        match channel.queue_purge(name, QueuePurgeOptions::default()).await {
            Ok(n) => {
                let _ = channel.close(200, "purged".into()).await;
                Ok(u64::from(n))
            }
            // A channel error (no such queue); the connection itself is fine.
            Err(_) if conn.status().connected() => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Publish a message and wait for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), AmqpError> {
        let exchange = short_string("exchange", exchange)?;
        let routing_key = short_string("routing_key", routing_key)?;
        // Never publish into a blocked connection: wait until the broker
        // resumes, or until that connection ends (its flag then clears and its
        // sender goes), and look for a live connection again.
        let channel = loop {
            let Live { publisher, mut blocked, .. } = self.live(Role::Publisher).await?;
            if !*blocked.borrow_and_update() {
                break publisher;
            }
            if blocked.changed().await.is_err() && *blocked.borrow() {
                // Its watcher went without clearing it (its runtime is
                // shutting down): publish rather than spin on a stale flag.
                break publisher;
            }
        };
        let Some(channel) = channel else { return Err(AmqpError::Lost("no publisher channel".into())) };
        let confirm = channel
            .basic_publish(exchange, routing_key, BasicPublishOptions::default(), body, properties)
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(AmqpError::Nacked);
        }
        Ok(())
    }

    /// Publish a task message (canvas continuations, parked ETAs), confirmed.
    pub async fn publish_task(&self, task: &EncodedTask) -> Result<(), AmqpError> {
        let props = wire::task_properties(task)?;
        self.publish(&task.exchange, &task.routing_key, &task.body, props).await
    }

    /// Park a task whose ETA is `delay` away in the delay queues (see the
    /// module docs); returns once the broker confirmed the copy, after which
    /// the caller acknowledges the original.
    pub async fn park(&self, task: &EncodedTask, delay: Duration) -> Result<(), AmqpError> {
        let level = delay_level(delay);
        self.declare_delay_level(level).await?;
        let mut task = task.clone();
        task.headers.retain(|k, _| !DEATH_HEADERS.contains(&k.as_str()));
        let props = wire::task_properties(&task)?;
        self.publish(&delay_name(level), &task.routing_key, &task.body, props).await
    }

    /// Declare delay level `level` once per publisher connection.
    async fn declare_delay_level(&self, level: u32) -> Result<(), AmqpError> {
        let Live { conn, generation, .. } = self.live(Role::Publisher).await?;
        if self.inner.delay_levels.lock().unwrap_or_else(|p| p.into_inner()).get(&level) == Some(&generation) {
            return Ok(());
        }
        let name = delay_name(level);
        let channel = conn.create_channel().await?;
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel.exchange_declare(name.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default()).await?;
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(1000_i64 << level));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("")));
        let q = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(name.as_str().into(), q, args).await?;
        channel
            .queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "declared".into()).await;
        self.inner.delay_levels.lock().unwrap_or_else(|p| p.into_inner()).insert(level, generation);
        Ok(())
    }

    /// Start consuming `queues` with `prefetch` unacknowledged messages per
    /// consumer. Deliveries arrive on the returned receiver until `stop` turns
    /// true (warm shutdown: the consumers are cancelled, the channel stays open
    /// so running tasks can still be acknowledged). Connection losses and
    /// consumer cancellations are handled inside, with back-off.
    pub fn consume(
        &self,
        queues: Vec<String>,
        prefetch: u16,
        stop: watch::Receiver<bool>,
    ) -> mpsc::Receiver<AmqpDelivery> {
        let (tx, rx) = mpsc::channel(DELIVERY_BUFFER);
        let this = self.clone();
        tokio::spawn(async move { this.consumer_loop(queues, prefetch, stop, tx).await });
        rx
    }

    async fn consumer_loop(
        &self,
        queues: Vec<String>,
        prefetch: u16,
        mut stop: watch::Receiver<bool>,
        tx: mpsc::Sender<AmqpDelivery>,
    ) {
        let mut backoff = Backoff::default();
        let mut reconnecting = false;
        loop {
            if *stop.borrow() {
                return;
            }
            match self.consume_once(&queues, prefetch, &mut stop, &tx, &mut reconnecting, &mut backoff).await {
                Ok(()) => return,
                // Closed at exit, or stopping anyway: nothing to reconnect for.
                Err(AmqpError::Closed) => return,
                Err(_) if *stop.borrow() => return,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::error!(
                        "consumer: Cannot connect to {}: {e}. Trying again in {:.2} seconds...",
                        self.display_url(),
                        delay.as_secs_f64()
                    );
                    reconnecting = true;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    /// One consuming session on one channel; `Ok` when stopped or the worker is gone.
    async fn consume_once(
        &self,
        queues: &[String],
        prefetch: u16,
        stop: &mut watch::Receiver<bool>,
        tx: &mpsc::Sender<AmqpDelivery>,
        reconnecting: &mut bool,
        backoff: &mut Backoff,
    ) -> Result<(), AmqpError> {
        let Live { conn, .. } = self.live(Role::Consumer).await?;
        let channel = conn.create_channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions { global: false }).await?;
        let window = Arc::new(Mutex::new(AckWindow::default()));
        let mut streams = futures_util::stream::SelectAll::new();
        let mut tags = Vec::new();
        for q in queues {
            let (tag, s) = self.start_consumer(&channel, q).await?;
            tags.push(tag);
            streams.push(s);
        }
        if std::mem::take(reconnecting) {
            tracing::info!("consumer: Connected to {}", self.display_url());
        }
        // Consuming again: the next loss starts the back-off from its first step.
        backoff.reset();
        loop {
            let item = tokio::select! {
                biased;
                _ = stop.changed() => {
                    // Warm shutdown: no new deliveries. Anything already sent
                    // to us and not yet taken is given back by the broker when
                    // the connection closes, or requeued below.
                    for tag in &tags {
                        let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    }
                    loop {
                        match tokio::time::timeout(Duration::from_millis(50), streams.next()).await {
                            Ok(Some((_, Some(Ok(d))))) => {
                                let _ = d.acker.reject(BasicRejectOptions { requeue: true }).await;
                            }
                            Ok(Some(_)) => {}
                            Ok(None) | Err(_) => break,
                        }
                    }
                    // The channel stays open while the worker holds deliveries
                    // from it (each DeliveryAck keeps it): running tasks still acknowledge.
                    return Ok(());
                }
                item = streams.next() => item,
            };
            match item {
                Some((queue, Some(Ok(d)))) => {
                    let deliver = Deliver {
                        delivery_tag: d.delivery_tag,
                        exchange: d.exchange.as_str().to_string(),
                        routing_key: d.routing_key.as_str().to_string(),
                        redelivered: d.redelivered,
                    };
                    let message = wire::raw_message(&deliver, &d.properties, d.data);
                    window.lock().unwrap_or_else(|p| p.into_inner()).received(d.delivery_tag);
                    if tx
                        .send(AmqpDelivery {
                            queue,
                            message,
                            ack: DeliveryAck {
                                acker: d.acker,
                                tag: d.delivery_tag,
                                window: window.clone(),
                                channel: channel.clone(),
                            },
                        })
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Some((_, Some(Err(e)))) => return Err(e.into()),
                Some((queue, None)) => {
                    if !conn.status().connected() || !channel.status().connected() {
                        return Err(AmqpError::Lost("the consumer channel closed".into()));
                    }
                    // The broker cancelled the consumer (the queue was deleted):
                    // declare the queue again and resume, as Celery does.
                    tracing::warn!(
                        "consumer: the broker cancelled the consumer of queue {queue:?}; declaring it again"
                    );
                    let (tag, s) = self.start_consumer(&channel, &queue).await?;
                    tags.push(tag);
                    streams.push(s);
                }
                None => return Err(AmqpError::Lost("every consumer ended".into())),
            }
        }
    }

    /// Declare `queue` and start a consumer on it: a stream of
    /// `(queue, Some(delivery))` ending with `(queue, None)` when cancelled.
    async fn start_consumer(&self, channel: &Channel, queue: &str) -> Result<(String, ConsumerStream), AmqpError> {
        declare_queue(channel, queue, &self.inner.topology).await?;
        let tag = format!("celeriac-{}", uuid::Uuid::new_v4());
        let consumer = channel
            .basic_consume(
                short_string("queue", queue)?,
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let q = queue.to_string();
        let q_end = q.clone();
        let stream =
            consumer.map(move |r| (q.clone(), Some(r))).chain(futures_util::stream::once(async move { (q_end, None) }));
        Ok((tag, Box::pin(stream)))
    }
}

type ConsumerStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = (String, Option<lapin::Result<lapin::message::Delivery>>)> + Send>,
>;

/// The waits between a consumer's reconnection attempts: 0.2 s, doubling up
/// to 8 s; back to 0.2 s once consuming has resumed ([`Backoff::reset`]), so a
/// connection lost after hours of service is retried as fast as the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(8);

    /// How long to wait before the next attempt (and double the one after).
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        delay
    }

    /// An attempt succeeded: start over.
    fn reset(&mut self) {
        *self = Self::default();
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

/// Follow `connection.blocked` / `connection.unblocked` on one publisher
/// connection. The flag returned is that connection's own: when the
/// connection ends (closed by either side, or failed), it goes back to false
/// and its sender goes, so a publish waiting on it looks for a live
/// connection again instead of waiting for an unblock that cannot come.
/// The watcher runs on `io`, the runtime the connection's socket lives on.
fn watch_blocked(conn: &Arc<Connection>, io: &tokio::runtime::Handle) -> watch::Receiver<bool> {
    let (flag, blocked) = watch::channel(false);
    let weak = Arc::downgrade(conn);
    let alive = move || weak.upgrade().is_some_and(|c| c.status().connected());
    io.spawn(follow_blocked(conn.events_listener(), alive, flag, LIVENESS_TICK));
    blocked
}

/// [`watch_blocked`]'s task: mirror the connection's events into `flag` while
/// `alive()` holds (looked at on every event and every `tick`), then clear the
/// flag and drop it.
async fn follow_blocked(
    events: impl futures_util::Stream<Item = Event>,
    alive: impl Fn() -> bool,
    flag: watch::Sender<bool>,
    tick: Duration,
) {
    let mut events = std::pin::pin!(events);
    while alive() {
        let event = tokio::select! {
            e = events.next() => e,
            _ = tokio::time::sleep(tick) => continue,
            // Nobody can wait on it any more (the connection was replaced).
            _ = flag.closed() => break,
        };
        match event {
            Some(Event::ConnectionBlocked(reason)) => {
                tracing::warn!("the broker blocked publishing ({reason}); waiting for it to resume");
                flag.send_replace(true);
            }
            Some(Event::ConnectionUnblocked) => {
                tracing::info!("the broker resumed publishing");
                flag.send_replace(false);
            }
            // An error ends the connection: `alive()` now says so.
            Some(Event::Error(e)) => tracing::debug!("publisher connection event: {e}"),
            Some(_) => {}
            None => break,
        }
    }
    if flag.send_replace(false) {
        tracing::info!("the blocked publisher connection is gone; publishing goes on over a new one");
    }
}

/// A channel in publisher-confirm mode.
async fn confirm_channel(conn: &Connection) -> Result<Channel, AmqpError> {
    let channel = conn.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Exchange `queue` (direct, durable), queue `queue` (durable, Celery's
/// arguments), binding with key `queue`: what a Celery 5.7 client declares.
async fn declare_queue(channel: &Channel, queue: &str, topology: &Topology) -> Result<(), AmqpError> {
    let name: ShortString = short_string("queue", queue)?;
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(name.clone(), ExchangeKind::Direct, durable, FieldTable::default()).await?;
    let q = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let args = wire::queue_arguments(topology.max_priority, topology.queue_type(queue));
    channel.queue_declare(name.clone(), q, args).await?;
    channel.queue_bind(name.clone(), name.clone(), name, QueueBindOptions::default(), FieldTable::default()).await?;
    Ok(())
}

/// The delay level for a wait of `delay`: the largest n with 2ⁿ s ≤ delay.
pub fn delay_level(delay: Duration) -> u32 {
    let secs = delay.as_secs().max(1);
    (63 - secs.leading_zeros()).min(DELAY_LEVELS - 1)
}

/// Exchange and queue name of a delay level.
pub fn delay_name(level: u32) -> String {
    format!("celeriac.delayed.{level}")
}

/// kombu's ssl options as lapin's TLS configuration.
fn tls_config(ssl: Option<&SslOptions>) -> Result<OwnedTLSConfig, AmqpError> {
    let Some(ssl) = ssl else { return Ok(OwnedTLSConfig::default()) };
    if matches!(ssl.cert_reqs.as_deref(), Some(r) if r.eq_ignore_ascii_case("CERT_NONE") || r == "0") {
        return Err(AmqpError::Tls(
            "cert_reqs=CERT_NONE (no certificate verification) is not supported; give ca_certs instead".into(),
        ));
    }
    let read = |path: &str| std::fs::read(path).map_err(|e| AmqpError::Tls(format!("{path}: {e}")));
    let cert_chain = match &ssl.ca_certs {
        Some(p) => Some(String::from_utf8_lossy(&read(p)?).into_owned()),
        None => None,
    };
    let identity = match (&ssl.certfile, &ssl.keyfile) {
        (Some(c), Some(k)) => Some(OwnedIdentity::PKCS8 { pem: read(c)?, key: read(k)? }),
        (None, None) => None,
        _ => return Err(AmqpError::Tls("certfile and keyfile go together".into())),
    };
    Ok(OwnedTLSConfig { identity, cert_chain })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_parked_in_the_largest_level_that_fits() {
        assert_eq!(delay_level(Duration::from_millis(500)), 0);
        assert_eq!(delay_level(Duration::from_secs(1)), 0);
        assert_eq!(delay_level(Duration::from_secs(3)), 1);
        assert_eq!(delay_level(Duration::from_secs(30)), 4);
        assert_eq!(delay_level(Duration::from_secs(3600)), 11);
        assert_eq!(delay_level(Duration::from_secs(u64::MAX / 2)), DELAY_LEVELS - 1);
        assert_eq!(delay_name(4), "celeriac.delayed.4");
    }

    #[test]
    fn configuration_errors_are_not_connection_errors() {
        assert!(!AmqpError::Url(UrlError::Empty).is_connection_error());
        assert!(AmqpError::Timeout("h".into()).is_connection_error());
        assert!(AmqpError::Nacked.is_connection_error());
    }

    /// A connection's events, fed by the test, and whether it is still up.
    struct FakeConnection {
        events: tokio::sync::mpsc::UnboundedSender<Event>,
        up: Arc<AtomicBool>,
        blocked: watch::Receiver<bool>,
        watcher: tokio::task::JoinHandle<()>,
    }

    /// [`follow_blocked`] on a fake connection; `tick` is how often it looks whether the connection is up.
    fn watch_fake(tick: Duration) -> FakeConnection {
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let up = Arc::new(AtomicBool::new(true));
        let (flag, blocked) = watch::channel(false);
        let alive = {
            let up = up.clone();
            move || up.load(Ordering::SeqCst)
        };
        let watcher = tokio::spawn(follow_blocked(stream, alive, flag, tick));
        FakeConnection { events, up, blocked, watcher }
    }

    async fn flag_becomes(blocked: &mut watch::Receiver<bool>, value: bool) {
        tokio::time::timeout(Duration::from_secs(5), blocked.wait_for(|b| *b == value))
            .await
            .unwrap_or_else(|_| panic!("the blocked flag never became {value}"))
            .expect("the flag is still watched");
    }

    #[tokio::test]
    async fn the_blocked_flag_follows_the_broker_while_the_connection_lives() {
        let mut c = watch_fake(Duration::from_secs(60));
        c.events.send(Event::ConnectionBlocked("low on memory".into())).unwrap();
        flag_becomes(&mut c.blocked, true).await;
        c.events.send(Event::ConnectionUnblocked).unwrap();
        flag_becomes(&mut c.blocked, false).await;
        assert!(!c.watcher.is_finished());
    }

    #[tokio::test]
    async fn a_blocked_flag_clears_when_its_connection_fails_without_an_unblock() {
        // The broker closes a blocked connection (`rabbitmqctl close_connection`,
        // a restart): lapin marks it errored and reports an error event, and no
        // `connection.unblocked` ever comes on it.
        let mut c = watch_fake(Duration::from_secs(60));
        c.events.send(Event::ConnectionBlocked("low on memory".into())).unwrap();
        flag_becomes(&mut c.blocked, true).await;
        c.up.store(false, Ordering::SeqCst);
        let error = lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Error));
        c.events.send(Event::Error(error)).unwrap();
        flag_becomes(&mut c.blocked, false).await;
        // And the flag's sender is gone: a publish waiting on it wakes and reconnects.
        tokio::time::timeout(Duration::from_secs(5), c.watcher).await.expect("the watcher ended").unwrap();
        assert!(c.blocked.changed().await.is_err());
    }

    #[tokio::test]
    async fn a_blocked_flag_clears_when_its_connection_ends_silently() {
        // Closed with no event at all (a `close-ok` to our own close): the tick finds it.
        let mut c = watch_fake(Duration::from_millis(20));
        c.events.send(Event::ConnectionBlocked("low on disk".into())).unwrap();
        flag_becomes(&mut c.blocked, true).await;
        c.up.store(false, Ordering::SeqCst);
        flag_becomes(&mut c.blocked, false).await;
        tokio::time::timeout(Duration::from_secs(5), c.watcher).await.expect("the watcher ended").unwrap();
    }

    #[test]
    fn the_consumer_back_off_doubles_to_its_cap_and_starts_over_once_consuming_resumed() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 8000, 8000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }

    #[test]
    fn a_settle_lapin_refuses_is_an_error_the_broker_recovers_from() {
        assert!(settled(true).is_ok());
        let refused = settled(false).unwrap_err();
        assert!(matches!(refused, AmqpError::Unsettled));
        assert!(refused.is_connection_error());
        assert!(!AmqpError::Closed.is_connection_error());
    }

    #[test]
    fn tls_without_verification_is_refused_rather_than_silently_verified() {
        let ssl = SslOptions { cert_reqs: Some("CERT_NONE".into()), ..SslOptions::default() };
        assert!(matches!(tls_config(Some(&ssl)), Err(AmqpError::Tls(_))));
        assert_eq!(tls_config(None).unwrap(), OwnedTLSConfig::default());
    }
}
