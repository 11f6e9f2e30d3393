//! Celery's event dispatcher: `worker-online`, a `worker-heartbeat` every
//! 2 seconds and `worker-offline` (sent with or without `-E`, as Celery's
//! heart does), and, with task events on, the task events the handlers
//! emit, batched into `task.multi` messages as Celery 5's buffered
//! dispatcher sends them (`tests/fixtures/redis/06-events`).
//!
//! Events are fire-and-forget: they go through the transport's
//! [`Fanout`](crate::broker::Fanout) from one task on the main runtime, so a
//! slow or unreachable broker delays events, never tasks; a failed publish is
//! logged and the events of that batch are dropped, as Celery drops events
//! while its connection is down.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};

use super::state::WorkerState;
use crate::broker::Broker;
use crate::protocol::pidbox::{Outgoing, TASK_MULTI, event_routing_key};

/// Celery's heartbeat interval (`freq`).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Most task events in one `task.multi` message.
const BATCH: usize = 100;

/// The running dispatcher: [`Dispatcher::stop`] sends `worker-offline`.
pub(crate) struct Dispatcher {
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Dispatcher {
    /// Send `worker-online` and start the heartbeat and the task events'
    /// delivery over `broker` (which must have fanout). With
    /// `--without-heartbeat` no worker event is sent (Celery's heart is off).
    pub async fn start(
        broker: Broker,
        state: Arc<WorkerState>,
        heartbeat: Arc<Notify>,
        features: &super::Features,
    ) -> Dispatcher {
        let (tx, rx) = mpsc::unbounded_channel();
        state.connect_events(tx);
        let heart = features.heartbeat.then(|| {
            features.heartbeat_interval.filter(|s| *s > 0).map_or(HEARTBEAT, |s| Duration::from_secs(s.into()))
        });
        if let Some(freq) = heart {
            send(&broker, &state, &state.worker_event("worker-online", freq.as_secs_f64())).await;
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(broker, state, rx, heartbeat, heart, stopped));
        Dispatcher { task, stop }
    }

    /// Flush the task events and send `worker-offline`.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn run(
    broker: Broker,
    state: Arc<WorkerState>,
    mut events: mpsc::UnboundedReceiver<Value>,
    heartbeat: Arc<Notify>,
    heart: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let freq = heart.unwrap_or(HEARTBEAT);
    let mut tick = tokio::time::interval(freq);
    tick.tick().await;
    loop {
        tokio::select! {
            Some(first) = events.recv() => {
                let mut batch = vec![first];
                while batch.len() < BATCH && let Ok(e) = events.try_recv() {
                    batch.push(e);
                }
                send_batch(&broker, &state, batch).await;
            }
            _ = tick.tick(), if heart.is_some() => {
                send(&broker, &state, &state.worker_event("worker-heartbeat", freq.as_secs_f64())).await;
            }
            _ = heartbeat.notified() => {
                // Celery's `heartbeat` control command sends `freq=5`.
                send(&broker, &state, &state.worker_event("worker-heartbeat", 5.0)).await;
            }
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => break,
        }
    }
    let mut rest = Vec::new();
    while let Ok(e) = events.try_recv() {
        rest.push(e);
    }
    if !rest.is_empty() {
        send_batch(&broker, &state, rest).await;
    }
    if heart.is_some() {
        send(&broker, &state, &state.worker_event("worker-offline", freq.as_secs_f64())).await;
    }
}

/// One task event alone goes as itself (Celery flushes a single buffered
/// event as a list too: `task.multi` either way).
async fn send_batch(broker: &Broker, state: &WorkerState, batch: Vec<Value>) {
    let message = Outgoing::event(state.hostname(), TASK_MULTI, &Value::Array(batch));
    publish(broker, &message).await;
}

async fn send(broker: &Broker, state: &WorkerState, event: &Value) {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("worker-heartbeat");
    let message = Outgoing::event(state.hostname(), &event_routing_key(kind), event);
    publish(broker, &message).await;
}

async fn publish(broker: &Broker, message: &Outgoing) {
    let Some(fanout) = broker.fanout() else { return };
    if let Err(e) = fanout.broadcast(message).await {
        tracing::debug!("events: cannot send {}: {e}", message.routing_key);
    }
}
