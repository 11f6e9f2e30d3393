//! What the worker holds and has done, as Celery's `celery.worker.state`
//! keeps it for remote control and events: the requests it holds (reserved,
//! scheduled for an ETA, active), the revoked ids, totals per task, the
//! Lamport clock, and what remote control changed at run time (task events
//! on or off, rate and time limits).
//!
//! Shared by every event loop (a few mutexes held for microseconds, never
//! across an await). A request is tracked by a [`Tracked`] guard that its
//! handler owns, so every way a handler ends — run, revoked, expired, given
//! back, dropped — also ends the tracking.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};

use super::metrics::Metrics;
use crate::config::RateLimit;
use crate::protocol::pidbox::EventSource;
use crate::protocol::{TaskMessage, args_repr, kwargs_repr};
use crate::sandbox::CallReport;

/// Celery's `REVOKES_MAX` and `REVOKE_EXPIRES`: at most 50,000 revoked ids, each kept 3 hours.
const REVOKES_MAX: usize = 50_000;
const REVOKE_EXPIRES: Duration = Duration::from_secs(3 * 3600);

/// `(soft, hard)` seconds.
type TimeLimits = (Option<f64>, Option<f64>);

/// Where a tracked request is.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    /// Received, waiting for a token, a run slot or its component.
    Reserved,
    /// Waiting for its ETA.
    Scheduled { eta: String, priority: u8 },
    /// Running since `time_start` (epoch seconds).
    Active { time_start: f64, acknowledged: bool },
}

/// One request the worker holds.
struct Entry {
    seq: u64,
    name: String,
    args: Value,
    kwargs: Value,
    delivery_info: Value,
    status: Status,
    /// Woken by `revoke` (and `terminate`): a waiting request stops waiting,
    /// a running one is stopped if `terminate` was asked.
    revoke: Arc<Notify>,
    terminate: Arc<AtomicBool>,
}

/// The revoked ids, oldest first (Celery's `LimitedSet`).
#[derive(Default)]
struct Revoked {
    order: VecDeque<(String, Instant)>,
    ids: HashSet<String>,
}

impl Revoked {
    fn purge(&mut self, now: Instant) {
        while let Some((id, at)) = self.order.front() {
            if self.ids.len() <= REVOKES_MAX && now.duration_since(*at) < REVOKE_EXPIRES {
                break;
            }
            self.ids.remove(id);
            self.order.pop_front();
        }
    }

    fn add(&mut self, id: &str, now: Instant) {
        if self.ids.insert(id.to_string()) {
            self.order.push_back((id.to_string(), now));
        }
        self.purge(now);
    }
}

/// The worker's state, shared by the event loops, the pidbox and the events.
pub(crate) struct WorkerState {
    /// Who sends events (hostname, pid, utcoffset).
    pub source: EventSource,
    started: Instant,
    clock: AtomicU64,
    seq: AtomicU64,
    requests: Mutex<HashMap<String, Entry>>,
    revoked: Mutex<Revoked>,
    totals: Mutex<BTreeMap<String, u64>>,
    processed: AtomicU64,
    /// Task events (`-E`, `enable_events`/`disable_events`).
    task_events: AtomicBool,
    /// Rate limits set by `control rate_limit` (`None`: disabled).
    rate_limits: Mutex<HashMap<String, Option<RateLimit>>>,
    /// Time limits set by `control time_limit`: (soft, hard).
    time_limits: Mutex<HashMap<String, TimeLimits>>,
    /// Where task events go (the event dispatcher), once it runs.
    events: Mutex<Option<mpsc::UnboundedSender<Value>>>,
    /// The Prometheus metrics (`--metrics`).
    pub metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Now as epoch seconds.
pub(crate) fn now_epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl WorkerState {
    /// A fresh state for node `hostname`, task events on or off.
    pub fn new(hostname: &str, task_events: bool) -> WorkerState {
        WorkerState {
            source: EventSource::this_process(hostname),
            started: Instant::now(),
            clock: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            requests: Mutex::default(),
            revoked: Mutex::default(),
            totals: Mutex::default(),
            processed: AtomicU64::new(0),
            task_events: AtomicBool::new(task_events),
            rate_limits: Mutex::default(),
            time_limits: Mutex::default(),
            events: Mutex::default(),
            metrics: Metrics::default(),
        }
    }

    /// The node name.
    pub fn hostname(&self) -> &str {
        &self.source.hostname
    }

    /// The Lamport clock's value.
    pub fn clock(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// Advance the clock (an event or reply is sent): the new value.
    pub fn forward(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Merge another node's clock (a message arrived): `max(ours, theirs) + 1`.
    pub fn adjust(&self, other: u64) -> u64 {
        let mut cur = self.clock.load(Ordering::Relaxed);
        loop {
            let next = cur.max(other) + 1;
            match self.clock.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Seconds since the worker started.
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Tasks finished since start.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Finished tasks per name (`stats.total`).
    pub fn totals(&self) -> BTreeMap<String, u64> {
        lock(&self.totals).clone()
    }

    /// How many tracked requests are reserved, scheduled and active.
    pub fn held_counts(&self) -> [(&'static str, usize); 3] {
        let requests = lock(&self.requests);
        let mut n = [0; 3];
        for e in requests.values() {
            n[match e.status {
                Status::Reserved => 0,
                Status::Scheduled { .. } => 1,
                Status::Active { .. } => 2,
            }] += 1;
        }
        [("reserved", n[0]), ("scheduled", n[1]), ("active", n[2])]
    }

    /// Requests running now.
    pub fn active_count(&self) -> usize {
        lock(&self.requests).values().filter(|e| matches!(e.status, Status::Active { .. })).count()
    }

    /// Whether task events are sent.
    pub fn task_events(&self) -> bool {
        self.task_events.load(Ordering::Relaxed)
    }

    /// Turn task events on or off; false when that was already so.
    pub fn set_task_events(&self, on: bool) -> bool {
        self.task_events.swap(on, Ordering::Relaxed) != on
    }

    /// Where task events go from now on.
    pub fn connect_events(&self, tx: mpsc::UnboundedSender<Value>) {
        *lock(&self.events) = Some(tx);
    }

    /// Send a task event (when task events are on): `fields` after the
    /// common ones, with the clock advanced.
    pub fn task_event(&self, event_type: &str, fields: Map<String, Value>) {
        if !self.task_events() {
            return;
        }
        let Some(tx) = lock(&self.events).clone() else { return };
        let event = self.source.event(event_type, self.forward(), now_epoch(), fields);
        let _ = tx.send(event);
    }

    /// A worker event's body (`worker-online`, `-heartbeat`, `-offline`).
    pub fn worker_event(&self, event_type: &str, freq: f64) -> Value {
        let fields = json!({
            "freq": freq,
            "active": self.active_count(),
            "processed": self.processed(),
            "loadavg": loadavg(),
            "sw_ident": "celeriac",
            "sw_ver": env!("CARGO_PKG_VERSION"),
            "sw_sys": std::env::consts::OS.replace("linux", "Linux"),
        });
        let Value::Object(fields) = fields else { unreachable!("a json! object") };
        self.source.event(event_type, self.forward(), now_epoch(), fields)
    }

    /// Start tracking a received request (reserved until told otherwise).
    pub fn track(self: &Arc<Self>, msg: &TaskMessage, tenant: Option<&str>) -> Tracked {
        let entry = Entry {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            name: msg.task.clone(),
            args: Value::Array(msg.args.clone()),
            kwargs: Value::Object(msg.kwargs.clone()),
            delivery_info: json!({
                "exchange": msg.delivery.exchange,
                "routing_key": msg.delivery.routing_key,
                "priority": msg.delivery.priority.unwrap_or(0),
                "redelivered": msg.delivery.redelivered,
            }),
            status: Status::Reserved,
            revoke: Arc::new(Notify::new()),
            terminate: Arc::new(AtomicBool::new(false)),
        };
        let (revoke, terminate) = (entry.revoke.clone(), entry.terminate.clone());
        lock(&self.requests).insert(msg.id.clone(), entry);
        let tenant = tenant.unwrap_or_default().to_string();
        let tracked = Tracked { state: self.clone(), id: msg.id.clone(), tenant, revoke, terminate };
        if !self.task_events() {
            return tracked;
        }
        let mut fields = Map::new();
        fields.insert("uuid".into(), Value::from(msg.id.as_str()));
        fields.insert("name".into(), Value::from(msg.task.as_str()));
        fields.insert("args".into(), Value::from(msg.argsrepr.clone().unwrap_or_else(|| args_repr(&msg.args))));
        fields.insert("kwargs".into(), Value::from(msg.kwargsrepr.clone().unwrap_or_else(|| kwargs_repr(&msg.kwargs))));
        fields.insert("root_id".into(), msg.root_id.clone().map_or(Value::Null, Value::from));
        fields.insert("parent_id".into(), msg.parent_id.clone().map_or(Value::Null, Value::from));
        fields.insert("retries".into(), Value::from(msg.retries));
        fields.insert("eta".into(), msg.eta.map_or(Value::Null, |t| Value::from(crate::protocol::time::isoformat(&t))));
        fields.insert(
            "expires".into(),
            msg.expires.map_or(Value::Null, |t| Value::from(crate::protocol::time::isoformat(&t))),
        );
        self.task_event("task-received", fields);
        tracked
    }

    fn set_status(&self, id: &str, status: Status) {
        if let Some(e) = lock(&self.requests).get_mut(id) {
            e.status = status;
        }
    }

    /// Count a finished task (ran to `SUCCESS`/`FAILURE`, or `REVOKED`).
    fn finished(&self, name: &str, tenant: &str, state: &str, report: Option<&CallReport>, runtime: Option<Duration>) {
        if report.is_some() {
            *lock(&self.totals).entry(name.to_string()).or_default() += 1;
            self.processed.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.finished(name, tenant, state, report, runtime);
    }

    /// Whether `id` was revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        lock(&self.revoked).ids.contains(id)
    }

    /// Revoke `ids`; with `terminate`, running ones are stopped too. Returns
    /// the ids this worker holds, and of those the ones running.
    pub fn revoke(&self, ids: &[String], terminate: bool) -> (Vec<String>, Vec<String>) {
        let now = Instant::now();
        {
            let mut revoked = lock(&self.revoked);
            for id in ids {
                revoked.add(id, now);
            }
        }
        let requests = lock(&self.requests);
        let (mut held, mut running) = (Vec::new(), Vec::new());
        for id in ids {
            let Some(e) = requests.get(id) else { continue };
            held.push(id.clone());
            let active = matches!(e.status, Status::Active { .. });
            if active {
                running.push(id.clone());
                if !terminate {
                    // Celery lets a running task finish unless asked to terminate it.
                    continue;
                }
                e.terminate.store(true, Ordering::Relaxed);
            }
            e.revoke.notify_one();
        }
        (held, running)
    }

    /// Revoked ids, oldest first.
    pub fn revoked_ids(&self) -> Vec<String> {
        let mut r = lock(&self.revoked);
        r.purge(Instant::now());
        r.order.iter().map(|(id, _)| id.clone()).collect()
    }

    /// The revoked ids with when each was revoked (epoch seconds), oldest first.
    pub fn revoked_since(&self) -> Vec<(String, f64)> {
        let now = (Instant::now(), now_epoch());
        let mut r = lock(&self.revoked);
        r.purge(now.0);
        r.order.iter().map(|(id, at)| (id.clone(), now.1 - now.0.duration_since(*at).as_secs_f64())).collect()
    }

    /// Restore revoked ids saved with [`WorkerState::revoked_since`]; those
    /// past Celery's 3 hours are dropped.
    pub fn restore_revoked(&self, entries: &[(String, f64)]) {
        let (now, epoch) = (Instant::now(), now_epoch());
        let mut sorted: Vec<&(String, f64)> = entries.iter().collect();
        sorted.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut r = lock(&self.revoked);
        for (id, at) in sorted {
            // A time from a damaged file (far past, far future) is skipped or taken as now.
            let Ok(age) = Duration::try_from_secs_f64((epoch - at).max(0.0)) else { continue };
            if age < REVOKE_EXPIRES
                && let Some(when) = now.checked_sub(age)
                && r.ids.insert(id.clone())
            {
                r.order.push_back((id.clone(), when));
            }
        }
        r.purge(now);
    }

    /// Merge another worker's revoked ids (`hello`).
    pub fn merge_revoked(&self, ids: &[String]) {
        let now = Instant::now();
        let mut r = lock(&self.revoked);
        for id in ids {
            r.add(id, now);
        }
    }

    /// Celery's `Request.info()` of every tracked request in `which` state,
    /// in the order received: `active`, `reserved` or `scheduled` (whose
    /// items are `{eta, priority, request}`).
    pub fn requests(&self, which: &str) -> Vec<Value> {
        let requests = lock(&self.requests);
        let mut entries: Vec<(&String, &Entry)> = requests.iter().collect();
        entries.sort_by_key(|(_, e)| e.seq);
        entries
            .into_iter()
            .filter_map(|(id, e)| match (&e.status, which) {
                (Status::Active { .. }, "active") | (Status::Reserved, "reserved") => Some(self.info(id, e)),
                (Status::Scheduled { eta, priority }, "scheduled") => {
                    Some(json!({"eta": eta, "priority": priority, "request": self.info(id, e)}))
                }
                _ => None,
            })
            .collect()
    }

    /// `query_task`: `{id: [state, info]}` for the ids this worker holds.
    pub fn query(&self, ids: &[String]) -> Map<String, Value> {
        let requests = lock(&self.requests);
        ids.iter()
            .filter_map(|id| {
                let e = requests.get(id)?;
                let state = match e.status {
                    Status::Active { .. } => "active",
                    Status::Reserved => "reserved",
                    Status::Scheduled { .. } => "scheduled",
                };
                Some((id.clone(), json!([state, self.info(id, e)])))
            })
            .collect()
    }

    fn info(&self, id: &str, e: &Entry) -> Value {
        let (time_start, acknowledged, pid) = match e.status {
            Status::Active { time_start, acknowledged } => {
                (Value::from(time_start), acknowledged, Value::from(self.source.pid))
            }
            _ => (Value::Null, false, Value::Null),
        };
        json!({
            "id": id,
            "name": e.name,
            "args": e.args,
            "kwargs": e.kwargs,
            "type": e.name,
            "hostname": self.hostname(),
            "time_start": time_start,
            "acknowledged": acknowledged,
            "delivery_info": e.delivery_info,
            "worker_pid": pid,
        })
    }

    /// Set (`Some(limit)`) or disable (`None`) a task's rate limit at run time.
    pub fn set_rate_limit(&self, task: &str, limit: Option<RateLimit>) {
        lock(&self.rate_limits).insert(task.to_string(), limit);
    }

    /// The run-time rate limit of `task`: `None` when remote control never set one.
    pub fn rate_limit(&self, task: &str) -> Option<Option<RateLimit>> {
        lock(&self.rate_limits).get(task).cloned()
    }

    /// Set a task's time limits at run time.
    pub fn set_time_limit(&self, task: &str, soft: Option<f64>, hard: Option<f64>) {
        lock(&self.time_limits).insert(task.to_string(), (soft, hard));
    }

    /// The run-time soft time limit of `task`, if remote control set one.
    pub fn soft_time_limit(&self, task: &str) -> Option<f64> {
        lock(&self.time_limits).get(task).and_then(|(soft, _)| *soft)
    }

    /// The run-time hard time limit of `task`, if remote control set one.
    pub fn hard_time_limit(&self, task: &str) -> Option<f64> {
        lock(&self.time_limits).get(task).and_then(|(_, hard)| *hard)
    }
}

/// The system load averages, rounded to two places, as Celery reports them.
fn loadavg() -> Vec<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).filter_map(|s| s.parse::<f64>().ok()).map(|v| (v * 100.0).round() / 100.0).collect()
}

/// A request's tracking, ended when dropped.
pub(crate) struct Tracked {
    state: Arc<WorkerState>,
    id: String,
    /// The tenant of its task (`""`: none), a label of its metrics.
    tenant: String,
    revoke: Arc<Notify>,
    terminate: Arc<AtomicBool>,
}

impl Tracked {
    /// The tenant of its task (`""`: none).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Waiting for its ETA.
    pub fn scheduled(&self, eta: String, priority: u8) {
        self.state.set_status(&self.id, Status::Scheduled { eta, priority });
    }

    /// Waiting again (a token, a run slot).
    pub fn reserved(&self) {
        self.state.set_status(&self.id, Status::Reserved);
    }

    /// Running; `acknowledged` when acks are early. Sends `task-started`.
    pub fn started(&self, acknowledged: bool) {
        self.state.set_status(&self.id, Status::Active { time_start: now_epoch(), acknowledged });
        let mut fields = Map::new();
        fields.insert("uuid".into(), Value::from(self.id.as_str()));
        self.state.task_event("task-started", fields);
    }

    /// Whether it has been revoked.
    pub fn is_revoked(&self) -> bool {
        self.state.is_revoked(&self.id)
    }

    /// Whether `terminate` was asked for it while it ran.
    pub fn is_terminated(&self) -> bool {
        self.terminate.load(Ordering::Relaxed)
    }

    /// Resolves when it is revoked (waiting) or terminated (running).
    pub async fn revoked(&self) {
        self.revoke.notified().await
    }

    /// Whether task events are sent (so that building one is worth it).
    pub fn events_on(&self) -> bool {
        self.state.task_events()
    }

    /// A task event about this request (`uuid` first, then `fields`).
    pub fn event(&self, event_type: &str, fields: Map<String, Value>) {
        let mut all = Map::with_capacity(fields.len() + 1);
        all.insert("uuid".into(), Value::from(self.id.as_str()));
        all.extend(fields);
        self.state.task_event(event_type, all);
    }

    /// It reached its final `state`: counted in the metrics and, when it ran
    /// (`report`), in `stats.total`. `runtime` is from its start to now.
    pub fn finished(&self, name: &str, state: &str, report: Option<&CallReport>) {
        let runtime = match lock(&self.state.requests).get(&self.id).map(|e| e.status.clone()) {
            Some(Status::Active { time_start, .. }) => {
                Some(Duration::from_secs_f64((now_epoch() - time_start).max(0.0)))
            }
            _ => None,
        };
        self.state.finished(name, &self.tenant, state, report, runtime);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        lock(&self.state.requests).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> TaskMessage {
        let mut task = crate::protocol::NewTask::new("tasks.add", vec![json!(4), json!(4)], Map::new());
        task.id = id.to_string();
        let raw = task.encode().unwrap().to_envelope(None).to_raw_message().unwrap();
        TaskMessage::decode(raw, &crate::protocol::AcceptContent::all()).unwrap()
    }

    #[test]
    fn the_lamport_clock_moves_past_what_it_is_told() {
        let s = WorkerState::new("w@h", false);
        assert_eq!(s.forward(), 1);
        assert_eq!(s.adjust(10), 11);
        assert_eq!(s.adjust(3), 12);
        assert_eq!(s.clock(), 12);
    }

    #[test]
    fn a_request_is_listed_by_where_it_is_and_forgotten_when_its_guard_drops() {
        let s = Arc::new(WorkerState::new("w@h", false));
        let a = s.track(&message("a"), None);
        let b = s.track(&message("b"), None);
        b.scheduled("2030-01-01T00:00:00+00:00".into(), 0);
        assert_eq!(s.requests("reserved").len(), 1);
        assert_eq!(s.requests("scheduled")[0]["request"]["id"], "b");
        a.started(true);
        let active = s.requests("active");
        assert_eq!(active[0]["id"], "a");
        assert_eq!(active[0]["acknowledged"], true);
        assert_eq!(active[0]["worker_pid"], std::process::id());
        assert_eq!(s.query(&["a".into(), "zz".into()]).len(), 1);
        let report = CallReport { wall: Duration::from_millis(1), fuel_consumed: 10, peak_memory: 1, reused: 0 };
        a.finished("tasks.add", "SUCCESS", Some(&report));
        drop(a);
        drop(b);
        assert!(s.requests("active").is_empty() && s.requests("scheduled").is_empty());
        assert_eq!(s.totals()["tasks.add"], 1);
    }

    #[test]
    fn revoking_wakes_a_waiting_request_and_only_terminate_stops_a_running_one() {
        let s = Arc::new(WorkerState::new("w@h", false));
        let waiting = s.track(&message("w"), None);
        let running = s.track(&message("r"), None);
        running.started(false);
        let (held, active) = s.revoke(&["w".into(), "r".into(), "elsewhere".into()], false);
        assert_eq!(held, vec!["w".to_string(), "r".to_string()]);
        assert_eq!(active, vec!["r".to_string()]);
        assert!(waiting.is_revoked() && s.is_revoked("elsewhere"));
        assert!(!running.is_terminated());
        s.revoke(&["r".into()], true);
        assert!(running.is_terminated());
        assert_eq!(s.revoked_ids(), vec!["w", "r", "elsewhere"]);
    }

    #[test]
    fn task_events_go_out_only_while_enabled() {
        let s = Arc::new(WorkerState::new("w@h", false));
        let (tx, mut rx) = mpsc::unbounded_channel();
        s.connect_events(tx);
        drop(s.track(&message("a"), None));
        assert!(rx.try_recv().is_err());
        assert!(s.set_task_events(true));
        assert!(!s.set_task_events(true));
        drop(s.track(&message("b"), None));
        let e = rx.try_recv().unwrap();
        assert_eq!(e["type"], "task-received");
        assert_eq!(e["args"], "(4, 4)");
        assert_eq!(e["hostname"], "w@h");
    }
}
