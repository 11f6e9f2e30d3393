//! kombu's virtual-transport QoS, shared by the Redis, SQLite and in-memory transports.
//!
//! kombu's "virtual" transports (Redis, SQLAlchemy, ...) emulate AMQP's
//! acknowledgements on a server that has none: a received message is recorded
//! as unacknowledged under a delivery tag, an ack deletes the record, and a
//! sweep puts back records older than the visibility timeout
//! (`kombu.transport.virtual.base.QoS`, `restore_visible`). This module is that
//! machinery, once, over a transport's [`Bookkeeping`]:
//!
//! - [`QosConsumer`] turns what the transport fetched into [`Delivery`] values
//!   (the envelope decoded once) and remembers which tags this process holds;
//! - [`QosAck`] is each delivery's ack handle: acks go out in batches (one
//!   round trip per millisecond at most; an early ack, which must be written
//!   before its task starts, without the wait), and a give-back restores the
//!   record;
//! - [`start_housekeeping`] refreshes the records of held messages and restores
//!   other consumers' abandoned ones, for the whole process.
//!
//! A transport with real acknowledgements (AMQP) needs none of this.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{AckHandle, Acker, BoxFuture, BrokerError, Consumer, Delivery, Housekeeping, decode_envelope};
use crate::batch::Batcher;
use crate::connection::retry;

/// How long acknowledgements nobody waits on (late acks, discarded messages)
/// wait to be sent together. An early ack is written before its task starts
/// ([`AckHandle::ack_before_start`]), so a crash never runs that task twice.
pub const ACK_LINGER: Duration = Duration::from_millis(1);

/// One message as a virtual transport fetched it, recorded as unacknowledged.
#[derive(Debug, Clone)]
pub struct Received {
    /// The queue (list) it came from.
    pub queue: String,
    /// The raw message: a kombu JSON envelope.
    pub payload: Vec<u8>,
    /// The delivery tag it is recorded under as unacknowledged (`None`: it
    /// could not be recorded, e.g. not an envelope: nothing to acknowledge).
    pub tag: Option<String>,
    /// Whether it arrived while the consumer waited on empty queues: the
    /// worker was idle, and a client is probably waiting for this task.
    pub idle: bool,
}

/// A virtual transport's unacknowledged-message bookkeeping.
pub trait Bookkeeping: Clone + Send + Sync + 'static {
    /// Receive up to `max` messages from `sources`, waiting up to about a second.
    fn fetch(&self, sources: &[String], max: usize) -> impl Future<Output = Result<Vec<Received>, BrokerError>> + Send;

    /// Delete the records of acknowledged messages.
    fn ack(&self, tags: &[String]) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Put a recorded message back on its queue; false if it was gone.
    fn restore(&self, tag: &str) -> impl Future<Output = Result<bool, BrokerError>> + Send;

    /// Refresh the records of messages this process holds.
    fn touch(&self, tags: &HashSet<String>) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Restore records older than the visibility timeout, except `ours`.
    fn restore_visible(&self, ours: &HashSet<String>) -> impl Future<Output = Result<usize, BrokerError>> + Send;
}

/// Tags of the messages this process holds (received, not yet acknowledged
/// or given back), shared by all its connections and its housekeeping.
#[derive(Clone, Default)]
pub struct Held(Arc<Mutex<HashSet<String>>>);

impl Held {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, tag: &str) {
        self.set().insert(tag.to_string());
    }

    fn remove(&self, tag: &str) {
        self.set().remove(tag);
    }

    /// The tags held right now.
    pub fn snapshot(&self) -> HashSet<String> {
        self.set().clone()
    }
}

/// What every delivery of one consumer shares.
struct Context<B> {
    books: B,
    /// Acks nobody waits on, sent after [`ACK_LINGER`].
    acks: Batcher<String>,
    /// Early acks, each awaited before its task starts: sent at once, those
    /// of tasks starting together in one round trip.
    starting: Batcher<String>,
    held: Held,
}

/// A consumer of a virtual transport: fetches, decodes, hands out ack handles.
pub struct QosConsumer<B: Bookkeeping> {
    ctx: Arc<Context<B>>,
    sources: Vec<String>,
}

impl<B: Bookkeeping> QosConsumer<B> {
    /// A consumer fetching from `sources` (worked out once: on Redis, the
    /// lists of every queue and priority step, in kombu's polling order).
    /// Spawns its ack batcher on the current runtime.
    pub fn new(books: B, sources: Vec<String>, held: Held) -> Self {
        let batcher = |linger| {
            let books = books.clone();
            Batcher::spawn(linger, move |tags: Vec<String>| {
                let books = books.clone();
                async move {
                    retry("acknowledge messages", || books.ack(&tags)).await;
                }
            })
        };
        let (acks, starting) = (batcher(Some(ACK_LINGER)), batcher(None));
        QosConsumer { ctx: Arc::new(Context { books, acks, starting, held }), sources }
    }

    /// A delivery for a fetched message: its envelope decoded once.
    fn delivery(&self, r: Received) -> Delivery {
        let (_, message) = decode_envelope(&r.payload, |_| ());
        if let Some(t) = &r.tag {
            self.ctx.held.insert(t);
        }
        Delivery { message, acker: Acker::new(QosAck { ctx: self.ctx.clone(), tag: r.tag }), idle: r.idle }
    }
}

impl<B: Bookkeeping> Consumer for QosConsumer<B> {
    fn fetch(&mut self, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        Box::pin(async move {
            let got = self.ctx.books.fetch(&self.sources, max).await?;
            Ok(got.into_iter().map(|r| self.delivery(r)).collect())
        })
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.ctx.acks.barrier().await;
            self.ctx.starting.barrier().await;
        })
    }
}

/// The ack handle of one delivery of a virtual transport.
pub struct QosAck<B: Bookkeeping> {
    ctx: Arc<Context<B>>,
    /// The tag it is recorded under; `None`: nothing to acknowledge.
    tag: Option<String>,
}

impl<B: Bookkeeping> AckHandle for QosAck<B> {
    fn ack(&mut self) {
        let Some(tag) = &self.tag else { return };
        self.ctx.acks.submit(tag.clone());
        self.ctx.held.remove(tag);
    }

    fn ack_before_start(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(tag) = &self.tag else { return };
            self.ctx.starting.write(tag.clone()).await;
            self.ctx.held.remove(tag);
        })
    }

    fn requeue(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(tag) = &self.tag else { return };
            retry("restore a message", || self.ctx.books.restore(tag)).await;
            self.ctx.held.remove(tag);
        })
    }

    /// Nothing to do: the message was recorded as it was taken.
    fn hold(&mut self) {}

    fn clone_box(&self) -> Box<dyn AckHandle> {
        Box::new(QosAck { ctx: self.ctx.clone(), tag: self.tag.clone() })
    }
}

/// Start the QoS housekeeping of a process: one restore sweep now (messages
/// of workers that died), then every `interval` a refresh of the records of
/// the messages it holds (so no sweep, ours or a Python worker's, restores a
/// message still being worked on) and a sweep of the others' records past the
/// visibility timeout.
pub async fn start_housekeeping<B: Bookkeeping>(books: B, held: Held, interval: Duration) -> Housekeeping {
    match books.restore_visible(&HashSet::new()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("Restored {n} unacknowledged message(s) older than the visibility timeout"),
        Err(e) => tracing::warn!("restore sweep failed: {e}"),
    }
    Housekeeping::spawned(tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let held = held.snapshot();
            if let Err(e) = books.touch(&held).await {
                tracing::warn!("could not refresh held messages: {e}");
            }
            match books.restore_visible(&held).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!("Restored {n} unacknowledged message(s) past the visibility timeout"),
                Err(e) => tracing::warn!("restore sweep failed: {e}"),
            }
        }
    }))
}
