//! The AMQP transport behind the worker's current broker interface.
//!
//! The worker's consumer loop was written for kombu's virtual transports: it
//! *fetches* batches of [`Delivery`]s and later acknowledges or restores them
//! *by tag string*. AMQP pushes deliveries, each with its own
//! [`AckHandle`]. This bridge turns one into the other: a consumer task feeds
//! a channel; [`AmqpBridge::fetch`] drains it and files each handle under a
//! tag of its own; `ack` / `restore` / `reject` / `park` settle by tag. It
//! holds no message state beyond the handles of unsettled deliveries, and
//! goes away when the transport boundary hands the worker decoded messages
//! with their ack handles directly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{AckHandle, AmqpBroker, AmqpDelivery, AmqpError};
use crate::broker::Delivery;
use crate::protocol::EncodedTask;

/// How long one fetch waits for a first delivery.
const FETCH_WAIT: Duration = Duration::from_secs(1);

/// An [`AmqpBroker`] with the fetch / settle-by-tag interface.
#[derive(Clone)]
pub struct AmqpBridge {
    /// The transport.
    pub broker: AmqpBroker,
    pending: Arc<Mutex<HashMap<String, AckHandle>>>,
    deliveries: Arc<tokio::sync::Mutex<Option<mpsc::Receiver<AmqpDelivery>>>>,
    stop: Arc<watch::Sender<bool>>,
    next_tag: Arc<AtomicU64>,
}

impl AmqpBridge {
    /// Wrap a connected broker.
    pub fn new(broker: AmqpBroker) -> Self {
        AmqpBridge {
            broker,
            pending: Arc::default(),
            deliveries: Arc::default(),
            stop: Arc::new(watch::channel(false).0),
            next_tag: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Start consuming `queues` (once), `prefetch` unacknowledged messages per consumer.
    pub async fn start(&self, queues: &[String], prefetch: u16) {
        let mut rx = self.deliveries.lock().await;
        if rx.is_none() {
            *rx = Some(self.broker.consume(queues.to_vec(), prefetch, self.stop.subscribe()));
        }
    }

    /// Stop consuming (warm shutdown) and give back what was received but not fetched.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let mut guard = self.deliveries.lock().await;
        if let Some(rx) = guard.as_mut() {
            rx.close();
            while let Some(d) = rx.recv().await {
                if let Err(e) = d.ack.requeue().await {
                    tracing::debug!("could not give back a prefetched message: {e} (the broker requeues it)");
                }
            }
        }
    }

    /// Take up to `max` deliveries, waiting up to about a second for the first.
    pub async fn fetch(&self, max: usize) -> Vec<Delivery> {
        let mut guard = self.deliveries.lock().await;
        let Some(rx) = guard.as_mut() else {
            drop(guard);
            tokio::time::sleep(FETCH_WAIT).await;
            return Vec::new();
        };
        let mut out = Vec::new();
        match tokio::time::timeout(FETCH_WAIT, rx.recv()).await {
            Ok(Some(d)) => out.push(self.file(d)),
            Ok(None) => {
                drop(guard);
                tokio::time::sleep(FETCH_WAIT).await;
                return out;
            }
            Err(_) => return out,
        }
        while out.len() < max {
            match rx.try_recv() {
                Ok(d) => out.push(self.file(d)),
                Err(_) => break,
            }
        }
        out
    }

    /// Keep the handle under a new tag and make the worker's delivery.
    fn file(&self, d: AmqpDelivery) -> Delivery {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed).to_string();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(tag.clone(), d.ack);
        Delivery { queue: d.queue, payload: Vec::new(), tag: Some(tag), recorded: true, message: Some(d.message) }
    }

    fn take(&self, tag: &str) -> Option<AckHandle> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(tag)
    }

    /// Acknowledge by tag. A handle whose channel is gone cannot be acked: the
    /// broker has already requeued that message (at-least-once), so it is not retried.
    pub async fn ack(&self, tags: &[String]) -> Result<(), AmqpError> {
        // Sent together: each ack waits only for its frame to be written.
        let handles: Vec<AckHandle> = tags.iter().filter_map(|t| self.take(t)).collect();
        let acks = handles.iter().map(AckHandle::ack);
        for r in futures_util::future::join_all(acks).await {
            if let Err(e) = r {
                tracing::warn!("could not acknowledge a message ({e}); the broker will deliver it again");
            }
        }
        Ok(())
    }

    /// Give a message back to its queue (`basic.reject(requeue=true)`).
    pub async fn restore(&self, tag: &str) -> Result<bool, AmqpError> {
        match self.take(tag) {
            Some(h) => h.requeue().await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Park a task whose ETA is `delay` away (see [`AmqpBroker::park`]), then
    /// acknowledge the delivery it came in: the copy is confirmed first.
    pub async fn park(&self, tag: &str, task: &EncodedTask, delay: Duration) -> Result<(), AmqpError> {
        self.broker.park(task, delay).await?;
        self.ack(&[tag.to_string()]).await
    }
}
