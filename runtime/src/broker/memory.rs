//! An in-memory transport (kombu's `memory://`), for tests of the worker.
//!
//! Messages are kombu envelopes in per-queue lists inside the process; the
//! ack bookkeeping is kombu's virtual-transport QoS ([`super::qos`]), the same
//! code the Redis and SQLite transports run, so a test of the request
//! lifecycle or of the consumer exercises the real acks, give-backs and holds.
//! Everything the bookkeeping does is written to a [`journal`](MemoryTransport::journal)
//! that tests read back.
//! As on Redis, a message that arrives while the consumer waits on empty
//! queues is handed out marked `idle` (the worker was idle).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::qos::{Bookkeeping, Held, QosConsumer, Received};
use super::{BoxFuture, Broker, BrokerError, Capabilities, Consumer, Transport};
use crate::protocol::{EncodedTask, Envelope};

/// How long a fetch waits for a message on empty queues.
const FETCH_WAIT: Duration = Duration::from_millis(100);

/// What the bookkeeping did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// These tags were acknowledged, in one batch.
    Acked(Vec<String>),
    /// This tag was put back on its queue.
    Requeued(String),
}

#[derive(Default)]
struct State {
    queues: HashMap<String, VecDeque<Vec<u8>>>,
    /// tag → (queue, envelope) of recorded, unacknowledged messages.
    unacked: HashMap<String, (String, Vec<u8>)>,
    journal: Vec<Event>,
    next_tag: u64,
}

/// An in-process broker. Clones (and channels) share the same queues.
#[derive(Clone, Default)]
pub struct MemoryTransport {
    state: Arc<Mutex<State>>,
    wake: Arc<tokio::sync::Notify>,
    held: Held,
}

impl MemoryTransport {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Put raw bytes on `queue`, as a producer would (anything, even not an envelope).
    pub fn push_raw(&self, queue: &str, payload: Vec<u8>) {
        self.state().queues.entry(queue.to_string()).or_default().push_back(payload);
        self.wake.notify_waiters();
    }

    /// What the bookkeeping did so far.
    pub fn journal(&self) -> Vec<Event> {
        self.state().journal.clone()
    }

    /// Every tag acknowledged so far.
    pub fn acked(&self) -> Vec<String> {
        self.journal()
            .into_iter()
            .filter_map(|e| if let Event::Acked(t) = e { Some(t) } else { None })
            .flatten()
            .collect()
    }

    /// How many messages wait on `queue`.
    pub fn ready(&self, queue: &str) -> usize {
        self.state().queues.get(queue).map_or(0, VecDeque::len)
    }

    /// How many messages are recorded as unacknowledged.
    pub fn unacked(&self) -> usize {
        self.state().unacked.len()
    }

    /// The tags this process holds (received, not settled).
    pub fn held(&self) -> HashSet<String> {
        self.held.snapshot()
    }

    /// Take up to `max` messages at once (`idle`: after a wait on empty
    /// queues), or `None` when every queue is empty.
    fn take(&self, sources: &[String], max: usize, idle: bool) -> Option<Vec<Received>> {
        let mut st = self.state();
        let mut out = Vec::new();
        for q in sources {
            while out.len() < max {
                let Some(payload) = st.queues.get_mut(q).and_then(VecDeque::pop_front) else { break };
                st.next_tag += 1;
                let tag = format!("m{}", st.next_tag);
                st.unacked.insert(tag.clone(), (q.clone(), payload.clone()));
                out.push(Received { queue: q.clone(), payload, tag: Some(tag), idle });
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

impl Bookkeeping for MemoryTransport {
    async fn fetch(&self, sources: &[String], max: usize) -> Result<Vec<Received>, BrokerError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + FETCH_WAIT;
        let mut waited = false;
        loop {
            let woken = self.wake.notified();
            if let Some(got) = self.take(sources, max, waited) {
                return Ok(got);
            }
            waited = true;
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    fn ack(&self, tags: &[String]) -> impl Future<Output = Result<(), BrokerError>> + Send {
        let mut st = self.state();
        for t in tags {
            st.unacked.remove(t);
        }
        st.journal.push(Event::Acked(tags.to_vec()));
        async { Ok(()) }
    }

    fn restore(&self, tag: &str) -> impl Future<Output = Result<bool, BrokerError>> + Send {
        let mut st = self.state();
        let restored = match st.unacked.remove(tag) {
            Some((queue, payload)) => {
                let payload = match Envelope::parse(&payload) {
                    Ok(mut env) => {
                        env.mark_redelivered();
                        env.to_bytes()
                    }
                    Err(_) => payload,
                };
                // Served next, as a Redis restore (RPUSH onto a list popped from the right).
                st.queues.entry(queue).or_default().push_front(payload);
                st.journal.push(Event::Requeued(tag.to_string()));
                true
            }
            None => false,
        };
        drop(st);
        self.wake.notify_waiters();
        async move { Ok(restored) }
    }

    async fn touch(&self, _tags: &HashSet<String>) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn restore_visible(&self, _ours: &HashSet<String>) -> Result<usize, BrokerError> {
        Ok(0)
    }
}

impl Transport for MemoryTransport {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { fanout: false, priorities: false, per_queue_prefetch: false }
    }

    fn declare<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut st = self.state();
        for q in queues {
            st.queues.entry(q.clone()).or_default();
        }
        Box::pin(async { Ok(()) })
    }

    fn publish<'a>(&'a self, queue: &'a str, task: &'a EncodedTask) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.push_raw(queue, task.to_redis_bytes());
        Box::pin(async { Ok(()) })
    }

    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        let n = self.state().queues.get_mut(queue).map(|q| std::mem::take(q).len() as u64).unwrap_or(0);
        Box::pin(async move { Ok(n) })
    }

    fn open_channel(&self) -> BoxFuture<'_, Result<Broker, BrokerError>> {
        let channel = self.clone();
        Box::pin(async move { Ok(Broker::new(channel)) })
    }

    fn consume<'a>(
        &'a self,
        queues: &'a [String],
        _prefetch: usize,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BrokerError>> {
        let consumer = QosConsumer::new(self.clone(), queues.to_vec(), self.held.clone());
        Box::pin(async move { Ok(Box::new(consumer) as Box<dyn Consumer>) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::NewTask;

    fn add(x: i64) -> EncodedTask {
        NewTask::new("tasks.add", vec![x.into(), 1.into()], Default::default()).encode().unwrap()
    }

    #[tokio::test]
    async fn a_delivery_carries_the_decoded_message_and_its_ack_removes_the_record() {
        let t = MemoryTransport::new();
        t.publish("celery", &add(4)).await.unwrap();
        let mut c = t.consume(&["celery".into()], 10).await.unwrap();
        let mut got = c.fetch(10).await.unwrap();
        assert_eq!(got.len(), 1);
        let raw = got[0].message.as_ref().expect("a decodable message");
        assert_eq!(raw.headers["task"], "tasks.add");
        assert!(!got[0].idle);
        assert_eq!((t.unacked(), t.held().len()), (1, 1));
        got[0].acker.ack();
        got[0].acker.ack();
        c.flush().await;
        assert_eq!((t.unacked(), t.held().len()), (0, 0));
        assert_eq!(t.acked().len(), 1, "a second ack of the same delivery is not sent");
    }

    #[tokio::test]
    async fn a_purge_counts_and_removes_only_the_waiting_messages_of_its_queue() {
        let t = MemoryTransport::new();
        for x in 0..3 {
            t.publish("celery", &add(x)).await.unwrap();
        }
        t.publish("other", &add(9)).await.unwrap();
        let mut c = t.consume(&["celery".into()], 1).await.unwrap();
        let held = c.fetch(1).await.unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(t.purge("celery").await.unwrap(), 2, "the held message is not waiting");
        assert_eq!(t.purge("celery").await.unwrap(), 0);
        assert_eq!(t.purge("nowhere").await.unwrap(), 0);
        assert_eq!(t.purge("other").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_message_that_arrives_while_the_consumer_waits_is_recorded_and_marked_idle() {
        let t = MemoryTransport::new();
        let mut c = t.consume(&["celery".into()], 10).await.unwrap();
        let publisher = t.clone();
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            publisher.publish("celery", &add(1)).await.unwrap();
        });
        let mut got = c.fetch(10).await.unwrap();
        later.await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].idle);
        assert_eq!((t.unacked(), t.held().len()), (1, 1), "recorded as it was taken");
        got[0].acker.ack();
        c.flush().await;
        assert_eq!((t.unacked(), t.held().len()), (0, 0));
    }

    #[tokio::test]
    async fn a_requeued_message_is_served_again_marked_redelivered() {
        let t = MemoryTransport::new();
        t.publish("celery", &add(1)).await.unwrap();
        let mut c = t.consume(&["celery".into()], 10).await.unwrap();
        let mut got = c.fetch(1).await.unwrap();
        got[0].acker.requeue().await;
        assert!(matches!(&t.journal()[..], [Event::Requeued(_)]));
        let again = c.fetch(1).await.unwrap();
        assert!(again[0].message.as_ref().unwrap().delivery.redelivered);
        assert_eq!(t.ready("celery"), 0);
    }

    #[tokio::test]
    async fn bytes_that_are_not_an_envelope_are_handed_over_as_unreadable() {
        let t = MemoryTransport::new();
        t.push_raw("celery", b"not json".to_vec());
        let mut c = t.consume(&["celery".into()], 10).await.unwrap();
        let got = c.fetch(1).await.unwrap();
        match &got[0].message {
            Err(super::super::BadMessage::Unreadable { preview, .. }) => assert_eq!(preview, "\"not json\""),
            other => panic!("expected an unreadable message, got {other:?}"),
        }
    }
}
