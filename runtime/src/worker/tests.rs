//! Tests of the request lifecycle and the consumer, on the in-memory transport.
//!
//! The broker is [`MemoryTransport`] (kombu's virtual-transport bookkeeping,
//! journaled), the result backend is Celery's database backend on a temporary
//! SQLite file, and the tasks are the example component (`make tasks`): what
//! is asserted is what a client and the broker would see. Where a transport
//! behaviour the memory broker does not have is needed (a delivery going
//! stale, as an AMQP one does when its channel closes), a [`FakeAck`] stands
//! in for the delivery's acknowledgement handle.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Semaphore, watch};

use super::{Phase, Shared, consume, request};
use crate::backend::Backend;
use crate::broker::memory::{Event, MemoryTransport};
use crate::broker::{AckHandle, Acker, BoxFuture, Broker, Consumer, Delivery, Transport};
use crate::config::Settings;
use crate::protocol::{AcceptContent, Envelope, NewTask, Serializer, TaskState};
use crate::sandbox::{Sandbox, SandboxConfig};

/// The example components, built by `make tasks`.
fn tasks_dir() -> PathBuf {
    let dir = std::env::var_os("CELERIAC_TASKS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tasks"));
    assert!(dir.join("tasks.wasm").is_file(), "{}/tasks.wasm is missing: run `make tasks` first", dir.display());
    dir
}

/// A worker's pieces around a memory broker and an SQLite result backend.
struct Rig {
    memory: MemoryTransport,
    shared: Arc<Shared>,
    backend: Backend,
    phase: watch::Sender<Phase>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new(memory: MemoryTransport, settings: Settings, slots: u32) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SandboxConfig { cache_dir: Some(dir.path().join("cache")), max_concurrent: 4, ..Default::default() };
        let sandbox = Sandbox::new(cfg).unwrap();
        sandbox.load(&tasks_dir()).await;
        let url = format!("db+sqlite:///{}", dir.path().join("results.sqlite").display());
        let broker = Broker::new(memory.clone());
        let backend = Backend::connect(&url, None, Serializer::Json, Some(&broker)).await.unwrap();
        let (phase, rx) = watch::channel(Phase::Running);
        let accept = AcceptContent::new(settings.accept_content.iter().map(String::as_str));
        let shared = Arc::new(Shared::new(
            Arc::new(sandbox),
            broker,
            Some(backend.clone()),
            settings,
            accept,
            None,
            "celeriac@test".into(),
            Arc::new(tokio::sync::Semaphore::new(slots as usize)),
            Arc::default(),
            rx,
            Arc::new(super::state::WorkerState::new("celeriac@test", false)),
            watch::channel(vec!["celery".to_string()]).1,
        ));
        Rig { memory, shared, backend, phase, _dir: dir }
    }

    /// Publish `task(args)` to `celery`; returns the task id.
    async fn send(&self, task: NewTask) -> String {
        let encoded = task.encode().unwrap();
        self.memory.publish("celery", &encoded).await.unwrap();
        task.id
    }

    /// Receive one message and handle it to the end.
    async fn handle_one(&self, consumer: &mut Box<dyn Consumer>) {
        let d = consumer.fetch(1).await.unwrap().pop().expect("a message");
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        request::handle(&self.shared, d, permit).await;
        consumer.flush().await;
    }

    async fn state(&self, id: &str) -> Option<TaskState> {
        self.backend.get(id).await.unwrap().map(|m| m.status)
    }
}

fn call(name: &str, args: serde_json::Value) -> NewTask {
    let serde_json::Value::Array(args) = args else { panic!("args must be a list") };
    NewTask::new(name, args, Default::default())
}

fn settings(acks_late: bool) -> Settings {
    Settings { task_acks_late: acks_late, ..Settings::default() }
}

/// Poll `f` every few milliseconds until it holds (at most 10 s).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_early_ack_happens_as_the_task_starts() {
    let rig = Rig::new(MemoryTransport::new(), settings(false), 1).await;
    let id = rig.send(call("tasks.sleep", json!([0.5]))).await;
    let mut consumer = rig.memory.consume(&["celery".into()], 4).await.unwrap();
    let d = consumer.fetch(1).await.unwrap().pop().unwrap();
    let shared = rig.shared.clone();
    let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
    let running = tokio::spawn(async move { request::handle(&shared, d, permit).await });
    eventually("the message is acknowledged", async || !rig.memory.acked().is_empty()).await;
    assert_ne!(rig.state(&id).await, Some(TaskState::Success), "acknowledged only once the task had finished");
    running.await.unwrap();
    assert_eq!(rig.state(&id).await, Some(TaskState::Success));
    assert_eq!(rig.memory.acked().len(), 1);
}

#[tokio::test]
async fn a_late_ack_happens_after_the_result_is_stored() {
    let rig = Rig::new(MemoryTransport::new(), settings(true), 1).await;
    let id = rig.send(call("tasks.sleep", json!([0.2]))).await;
    let mut consumer = rig.memory.consume(&["celery".into()], 4).await.unwrap();
    let d = consumer.fetch(1).await.unwrap().pop().unwrap();
    let shared = rig.shared.clone();
    let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
    let running = tokio::spawn(async move { request::handle(&shared, d, permit).await });
    let mut stored_when_acked = None;
    eventually("the message is acknowledged", async || {
        // Ack first, then the result: an ack seen here was sent before this look at the result.
        let acked = !rig.memory.acked().is_empty();
        let stored = rig.state(&id).await == Some(TaskState::Success);
        if acked {
            stored_when_acked = Some(stored);
        }
        acked
    })
    .await;
    assert_eq!(stored_when_acked, Some(true), "the ack went out before the result was stored");
    running.await.unwrap();
    consumer.flush().await;
    assert_eq!((rig.memory.unacked(), rig.memory.held().len()), (0, 0));
}

#[tokio::test]
async fn a_message_waiting_for_its_eta_is_given_back_on_warm_shutdown() {
    let rig = Rig::new(MemoryTransport::new(), settings(false), 1).await;
    let mut task = call("tasks.add", json!([1, 2]));
    task.options.eta = Some(chrono::Utc::now() + chrono::Duration::seconds(60));
    let id = rig.send(task).await;
    let mut consumer = rig.memory.consume(&["celery".into()], 4).await.unwrap();
    let d = consumer.fetch(1).await.unwrap().pop().unwrap();
    let shared = rig.shared.clone();
    let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
    let waiting = tokio::spawn(async move { request::handle(&shared, d, permit).await });
    // Held for its ETA: recorded, not acknowledged.
    eventually("the task is scheduled", async || rig.shared.state.held_counts()[1].1 == 1).await;
    rig.phase.send(Phase::Warm).unwrap();
    waiting.await.unwrap();
    consumer.flush().await;
    let journal = rig.memory.journal();
    assert!(matches!(&journal[..], [Event::Requeued(_)]), "{journal:?}");
    assert_eq!(rig.memory.ready("celery"), 1);
    assert_eq!(rig.state(&id).await, None, "a task given back has no state");
    let back = consumer.fetch(1).await.unwrap().pop().unwrap();
    assert!(back.message.unwrap().delivery.redelivered);
}

#[tokio::test]
async fn a_malformed_message_fails_its_task_and_is_acknowledged() {
    let rig = Rig::new(MemoryTransport::new(), settings(false), 1).await;
    let mut headers = serde_json::Map::new();
    headers.insert("id".into(), json!("bad-1"));
    headers.insert("task".into(), json!("tasks.add"));
    let mut properties = serde_json::Map::new();
    properties.insert("delivery_tag".into(), json!("t-bad-1"));
    let env = Envelope::new(b"{not json", "application/json", "utf-8", headers, properties);
    rig.memory.push_raw("celery", env.to_bytes());
    let mut consumer = rig.memory.consume(&["celery".into()], 4).await.unwrap();
    rig.handle_one(&mut consumer).await;
    let meta = rig.backend.get("bad-1").await.unwrap().expect("a stored state");
    assert_eq!(meta.status, TaskState::Failure);
    assert_eq!(meta.exception().unwrap().exc_type, "InvalidTaskError");
    assert_eq!(rig.memory.acked().len(), 1);
    assert_eq!(rig.memory.unacked(), 0);
}

#[tokio::test]
async fn bytes_that_are_not_a_message_are_acknowledged_and_dropped() {
    let rig = Rig::new(MemoryTransport::new(), settings(false), 1).await;
    rig.memory.push_raw("celery", b"\x00garbage".to_vec());
    let mut consumer = rig.memory.consume(&["celery".into()], 4).await.unwrap();
    rig.handle_one(&mut consumer).await;
    assert_eq!((rig.memory.acked().len(), rig.memory.unacked(), rig.memory.ready("celery")), (1, 0, 0));
}

#[tokio::test]
async fn an_unknown_task_fails_with_not_registered_and_is_acknowledged() {
    let rig = Rig::new(MemoryTransport::new(), settings(true), 1).await;
    let id = rig.send(call("tasks.nope", json!([]))).await;
    let mut consumer = rig.memory.consume(&["celery".into()], 4).await.unwrap();
    rig.handle_one(&mut consumer).await;
    let meta = rig.backend.get(&id).await.unwrap().expect("a stored state");
    assert_eq!(meta.status, TaskState::Failure);
    let exc = meta.exception().unwrap();
    assert_eq!((exc.exc_type.as_str(), exc.exc_module.as_deref()), ("NotRegistered", Some("celery.exceptions")));
    assert_eq!(rig.memory.acked().len(), 1);
}

#[tokio::test]
async fn the_consumer_takes_no_more_than_the_prefetch_window() {
    // One run slot, prefetch multiplier 2, late acks: one task runs, one waits
    // for the slot, and the other three stay on the queue.
    let settings = Settings { worker_prefetch_multiplier: 2, ..settings(true) };
    let rig = Rig::new(MemoryTransport::new(), settings, 1).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(rig.send(call("tasks.sleep", json!([0.3]))).await);
    }
    let consumer = rig.memory.consume(&["celery".into()], 4).await.unwrap();
    let consuming = tokio::spawn(consume(rig.shared.clone(), consumer, 1));
    eventually("two messages are taken", async || rig.memory.unacked() == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((rig.memory.unacked(), rig.memory.ready("celery")), (2, 3));
    // Warm shutdown: the running task finishes, the waiting one goes back.
    rig.phase.send(Phase::Warm).unwrap();
    let (mut handlers, consumer) = consuming.await.unwrap();
    while handlers.join_next().await.is_some() {}
    consumer.flush().await;
    let done = {
        let mut n = 0;
        for id in &ids {
            n += usize::from(rig.state(id).await == Some(TaskState::Success));
        }
        n
    };
    assert_eq!(done, 1);
    assert_eq!((rig.memory.acked().len(), rig.memory.unacked(), rig.memory.ready("celery")), (1, 0, 4));
}

/// An acknowledgement handle that records what the worker asked of it and
/// goes stale when told to (an AMQP delivery whose channel closed: the broker
/// has requeued it and delivers it again elsewhere).
#[derive(Clone, Default)]
struct FakeAck {
    calls: Arc<Mutex<Vec<&'static str>>>,
    stale: Arc<AtomicBool>,
}

impl FakeAck {
    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }

    fn push(&self, call: &'static str) {
        self.calls.lock().unwrap().push(call);
    }
}

impl AckHandle for FakeAck {
    fn ack(&mut self) {
        self.push("ack");
    }

    fn requeue(&mut self) -> BoxFuture<'_, ()> {
        self.push("requeue");
        Box::pin(async {})
    }

    fn hold(&mut self) {
        self.push("hold");
    }

    fn clone_box(&self) -> Box<dyn AckHandle> {
        Box::new(self.clone())
    }

    fn is_stale(&self) -> bool {
        self.stale.load(Ordering::SeqCst)
    }
}

/// Send `task`, receive it, and hand it to a handler with a [`FakeAck`] instead of the memory broker's acker.
async fn handle_with_fake_ack(rig: &Rig, task: NewTask) -> (String, FakeAck, tokio::task::JoinHandle<()>) {
    let id = rig.send(task).await;
    let mut consumer = rig.memory.consume(&["celery".into()], 4).await.unwrap();
    let d = consumer.fetch(1).await.unwrap().pop().unwrap();
    let fake = FakeAck::default();
    let d = Delivery { message: d.message, acker: Acker::new(fake.clone()), idle: false };
    let shared = rig.shared.clone();
    let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
    (id, fake, tokio::spawn(async move { request::handle(&shared, d, permit).await }))
}

#[tokio::test]
async fn a_delivery_that_goes_stale_while_it_waits_for_a_run_slot_is_dropped_not_run() {
    // The only run slot is busy; the broker connection the message came on
    // closes meanwhile, so the broker redelivers it: this copy must not run.
    let rig = Rig::new(MemoryTransport::new(), settings(false), 1).await;
    let busy = rig.shared.run_slots.clone().acquire_owned().await.unwrap();
    let (id, fake, handler) = handle_with_fake_ack(&rig, call("tasks.add", json!([1, 2]))).await;
    eventually("the message is held for a run slot", async || fake.calls() == ["hold"]).await;
    fake.stale.store(true, Ordering::SeqCst);
    drop(busy);
    tokio::time::timeout(Duration::from_secs(10), handler).await.expect("the handler ended").unwrap();
    assert_eq!(rig.state(&id).await, None, "the stale copy ran");
    assert_eq!(fake.calls(), ["hold"], "a stale delivery is neither acknowledged nor given back");
    assert_eq!(rig.shared.run_slots.available_permits(), 1, "the run slot is free again");
}

#[tokio::test]
async fn a_delivery_held_for_a_near_eta_that_goes_stale_is_dropped_when_the_eta_comes() {
    let rig = Rig::new(MemoryTransport::new(), settings(false), 1).await;
    let mut task = call("tasks.add", json!([1, 2]));
    task.options.eta = Some(chrono::Utc::now() + chrono::Duration::milliseconds(500));
    let (id, fake, handler) = handle_with_fake_ack(&rig, task).await;
    eventually("the message is held for its ETA", async || fake.calls() == ["hold"]).await;
    fake.stale.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), handler).await.expect("the handler ended").unwrap();
    assert_eq!(rig.state(&id).await, None, "the stale copy ran");
    assert_eq!(fake.calls(), ["hold"]);
}

#[tokio::test]
async fn a_delivery_that_is_not_stale_runs_and_is_acknowledged_through_the_same_handle() {
    // The control for the two tests above: the fake handle itself changes nothing.
    let rig = Rig::new(MemoryTransport::new(), settings(false), 1).await;
    let busy = rig.shared.run_slots.clone().acquire_owned().await.unwrap();
    let (id, fake, handler) = handle_with_fake_ack(&rig, call("tasks.add", json!([1, 2]))).await;
    eventually("the message is held for a run slot", async || fake.calls() == ["hold"]).await;
    drop(busy);
    tokio::time::timeout(Duration::from_secs(10), handler).await.expect("the handler ended").unwrap();
    assert_eq!(rig.state(&id).await, Some(TaskState::Success));
    assert_eq!(fake.calls(), ["hold", "ack"]);
}
