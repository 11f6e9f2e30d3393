//! The worker's pidbox node: kombu's `Node` with Celery's control panel
//! (`celery.worker.control`), so `celery inspect`, `celery control`,
//! `celery status` and Flower work against a Celeriac worker.
//!
//! Requests arrive on the transport's [`Mailbox`]; each one for this node
//! (see [`ControlRequest::is_for`]) that has not expired is answered, when it
//! asks for a reply, with Celery's reply shape: `{"ok": ...}` /
//! `{"error": ...}` for control commands, the data itself for inspect
//! commands, and `{"error": "KeyError('<method>')"}` for a command Celeriac
//! does not know (kombu's `Node.dispatch` answers an unknown handler so).
//! The replies' wording is Celery 5.7's (`celery/worker/control.py`). A
//! command never fails the worker: a bad request is logged and, where the
//! client waits, answered with an error.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, Semaphore, watch};

use super::Phase;
use super::state::WorkerState;
use crate::broker::{Broker, Mailbox};
use crate::config::{RateLimit, Settings};
use crate::connection::url::mask_password;
use crate::protocol::pidbox::ControlRequest;
use crate::protocol::py_repr;
use crate::sandbox::Sandbox;

/// What the control panel reads and changes.
pub(crate) struct Panel {
    pub state: Arc<WorkerState>,
    pub broker: Broker,
    pub sandbox: Arc<Sandbox>,
    pub settings: Settings,
    /// The queues consumed; `add_consumer`/`cancel_consumer` change them (every event loop follows).
    pub queues: Arc<watch::Sender<Vec<String>>>,
    pub broker_url: String,
    pub concurrency: u32,
    /// The worker's run slots (`pool_grow` / `pool_shrink`).
    pub run_slots: Arc<Semaphore>,
    /// Tenants' quotas: a queue paused for its tenant and then cancelled stays cancelled.
    pub rate_limits: Arc<super::rate::RateLimits>,
    /// Shutdown (`shutdown`).
    pub phase: Arc<watch::Sender<Phase>>,
    /// Asks the event dispatcher for a heartbeat now (`heartbeat`).
    pub heartbeat: Arc<Notify>,
    /// Where revoked ids are kept across restarts (`-S`), saved after each change.
    pub statedb: Option<std::path::PathBuf>,
}

/// The most run slots one `pool_grow` / `pool_shrink` adds or takes.
const MAX_POOL_CHANGE: u64 = 10_000;

fn ok(text: impl Into<String>) -> Value {
    json!({ "ok": text.into() })
}

fn nok(text: impl Into<String>) -> Value {
    json!({ "error": text.into() })
}

/// Serve the node's mailbox until the worker stops.
pub(crate) async fn serve(panel: Panel, mut mailbox: Box<dyn Mailbox>, mut phase: watch::Receiver<Phase>) {
    loop {
        let raw = tokio::select! {
            r = mailbox.next() => r,
            _ = async { phase.wait_for(|p| *p != Phase::Running).await.is_ok() } => break,
        };
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                tracing::debug!("pidbox: {e}; no more remote control");
                return;
            }
        };
        let request = match ControlRequest::decode(&raw) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("pidbox: {e}; ignored");
                continue;
            }
        };
        panel.state.adjust(request.clock);
        if !request.is_for(panel.state.hostname()) {
            continue;
        }
        if request.is_expired(super::state::now_epoch()) {
            tracing::debug!("pidbox: {} request expired before it arrived; ignored", request.method);
            continue;
        }
        tracing::debug!(
            "pidbox received method {} [reply_to:{:?} ticket:{:?}]",
            request.method,
            request.reply_to,
            request.ticket
        );
        let Some(reply) = panel.dispatch(&request).await else { continue };
        let Some(fanout) = panel.broker.fanout() else { continue };
        if let Some(message) = request.reply(panel.state.hostname(), reply, panel.state.forward())
            && let Err(e) = fanout.reply(&message).await
        {
            tracing::warn!("pidbox: cannot reply to {}: {e}", request.method);
        }
    }
    mailbox.close().await;
}

impl Panel {
    /// Run one command: the reply, or `None` when the command gets none (`shutdown`).
    async fn dispatch(&self, req: &ControlRequest) -> Option<Value> {
        let args = &req.arguments;
        let s = &self.state;
        Some(match req.method.as_str() {
            "ping" => ok("pong"),
            "stats" => self.stats(),
            "active" | "dump_active" => Value::Array(s.requests("active")),
            "reserved" | "dump_reserved" => Value::Array(s.requests("reserved")),
            "scheduled" | "dump_schedule" => Value::Array(s.requests("scheduled")),
            "revoked" | "dump_revoked" => json!(s.revoked_ids()),
            "registered" | "dump_tasks" => self.registered(args),
            "active_queues" => {
                let served = self.rate_limits.served(&self.queues.borrow());
                Value::Array(served.iter().map(|q| queue_info(q)).collect())
            }
            "conf" | "dump_conf" => self.conf(),
            "report" => ok(self.report()),
            "query_task" => Value::Object(s.query(&string_list(args.get("ids")))),
            "clock" => json!({ "clock": s.clock() }),
            "hello" => {
                let from = args.get("from_node").and_then(Value::as_str).unwrap_or_default();
                if from == s.hostname() {
                    Value::Null
                } else {
                    tracing::info!("sync with {from}");
                    s.merge_revoked(&string_list(args.get("revoked")));
                    self.save_state();
                    json!({ "revoked": s.revoked_ids(), "clock": s.forward() })
                }
            }
            "revoke" => self.revoke(args, args.get("terminate").is_some_and(py_truthy)),
            "terminate" => self.revoke(args, true),
            "rate_limit" => self.rate_limit(args),
            "time_limit" => self.time_limit(args),
            "enable_events" => self.switch_task_events(true),
            "disable_events" => self.switch_task_events(false),
            "heartbeat" => {
                tracing::debug!("Heartbeat requested by remote.");
                self.heartbeat.notify_one();
                Value::Null
            }
            "election" => Value::Null,
            "pool_grow" => {
                // Bounded: a semaphore refuses (panics at) more than usize::MAX >> 3 permits.
                let n = args.get("n").and_then(Value::as_u64).unwrap_or(1).min(MAX_POOL_CHANGE) as usize;
                self.run_slots.add_permits(n);
                tracing::info!("pool: {n} more run slot(s)");
                ok("pool will grow")
            }
            "pool_shrink" => {
                let n = args.get("n").and_then(Value::as_u64).unwrap_or(1).min(MAX_POOL_CHANGE) as u32;
                let slots = self.run_slots.clone();
                // Taken as running tasks finish, and never given back.
                tokio::spawn(async move {
                    if let Ok(p) = slots.acquire_many_owned(n).await {
                        p.forget();
                    }
                });
                ok("pool will shrink")
            }
            "autoscale" => nok("ValueError('Autoscale not enabled')"),
            "pool_restart" => nok("ValueError('Pool restarts not enabled')"),
            "add_consumer" => match args.get("queue").and_then(Value::as_str) {
                Some(queue) => self.add_consumer(queue).await,
                None => nok("TypeError(\"add_consumer() missing 1 required positional argument: 'queue'\")"),
            },
            "cancel_consumer" => match args.get("queue").and_then(Value::as_str) {
                Some(queue) => {
                    tracing::info!("Canceling queue {queue}");
                    self.queues.send_if_modified(|qs| {
                        // The operator's choice stands over a tenant's pause (worker/rate.rs).
                        self.rate_limits.taken_over(queue);
                        let before = qs.len();
                        qs.retain(|q| q != queue);
                        qs.len() != before
                    });
                    ok(format!("no longer consuming from {queue}"))
                }
                None => nok("TypeError(\"cancel_consumer() missing 1 required positional argument: 'queue'\")"),
            },
            "shutdown" => {
                let msg = args.get("msg").and_then(Value::as_str).unwrap_or("Got shutdown from remote");
                tracing::warn!("{msg}");
                let _ = self.phase.send(Phase::Warm);
                return None;
            }
            other => {
                tracing::error!("No such control command: {other}");
                nok(format!("KeyError({})", py_repr(&Value::from(other))))
            }
        })
    }

    /// Celery's `stats` reply layout.
    fn stats(&self) -> Value {
        let s = &self.state;
        let soft = self.settings.task_soft_time_limit;
        let hard = self.settings.task_time_limit;
        let timeouts = match (soft, hard) {
            (None, None) => json!([]),
            _ => json!([soft, hard]),
        };
        let prefetch = self.settings.worker_prefetch_multiplier.max(1) * self.concurrency;
        json!({
            "total": s.totals(),
            "pid": s.source.pid,
            "clock": s.clock().to_string(),
            "uptime": s.uptime(),
            "pool": {
                "implementation": "celeriac:WasmSandbox",
                "max-concurrency": self.concurrency,
                "processes": [s.source.pid],
                "max-tasks-per-child": null,
                "put-guarded-by-semaphore": false,
                "timeouts": timeouts,
            },
            "broker": broker_info(&self.broker_url, self.broker.name()),
            "prefetch_count": prefetch,
            "rusage": rusage(),
        })
    }

    /// `registered`: task names, each followed by the attributes asked for
    /// (`taskinfoitems`) that it has, as Celery's `_extract_info`.
    fn registered(&self, args: &Map<String, Value>) -> Value {
        let items = string_list(args.get("taskinfoitems"));
        let mut names: Vec<String> = self.sandbox.tasks().iter().map(|t| t.name.clone()).collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let mut fields = Vec::new();
                for item in &items {
                    let value = match item.as_str() {
                        "rate_limit" => self.rate_limit_of(&name).map(|r| r.to_string()),
                        "time_limit" => self.annotation(&name).time_limit.map(|t| t.to_string()),
                        _ => None,
                    };
                    if let Some(v) = value {
                        fields.push(format!("{item}={v}"));
                    }
                }
                if fields.is_empty() {
                    Value::from(name)
                } else {
                    Value::from(format!("{name} [{}]", fields.join(" ")))
                }
            })
            .collect()
    }

    /// `add_consumer`: declare `queue` as a Celery client does and consume it
    /// too (each event loop opens a consumer on the new set within a second).
    async fn add_consumer(&self, queue: &str) -> Value {
        if !self.queues.borrow().iter().any(|q| q == queue) {
            if let Err(e) = self.broker.declare(&[queue.to_string()]).await {
                return nok(format!("cannot declare queue {queue}: {e}"));
            }
            self.queues.send_modify(|qs| {
                // The operator's choice stands over a tenant's pause (worker/rate.rs).
                self.rate_limits.taken_over(queue);
                qs.push(queue.to_string())
            });
            tracing::info!("Started consuming from {queue}");
        }
        ok(format!("add consumer {queue}"))
    }

    /// The configured annotation of `task`, its tenant's defaults included.
    fn annotation(&self, task: &str) -> crate::config::Annotation {
        super::annotation_of(&self.settings, &self.sandbox, task)
    }

    /// The rate limit in force for `task`.
    fn rate_limit_of(&self, task: &str) -> Option<RateLimit> {
        match self.state.rate_limit(task) {
            Some(set) => set,
            None => self.annotation(task).rate_limit.or_else(|| self.settings.task_default_rate_limit.clone()),
        }
    }

    fn conf(&self) -> Value {
        let mut conf = match serde_json::to_value(&self.settings) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for (key, value) in conf.iter_mut() {
            if is_secret(key) {
                *value = Value::from("********");
            } else if let Value::String(s) = value
                && s.contains("://")
            {
                *s = mask_password(s);
            }
        }
        Value::Object(conf)
    }

    fn report(&self) -> String {
        format!(
            "software -> celeriac:{} (wasmtime sandbox)\nplatform -> system:{} arch:{}\nsettings -> transport:{} results:{}\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            self.broker.name(),
            self.settings.effective_result_backend().map(|u| mask_password(&u)).unwrap_or_else(|| "disabled".into()),
        )
    }

    /// `enable_events` / `disable_events`, in Celery's words.
    fn switch_task_events(&self, on: bool) -> Value {
        let word = if on { "enabled" } else { "disabled" };
        if self.state.set_task_events(on) {
            tracing::info!("Events of group {{task}} {word} by remote.");
            ok(format!("task events {word}"))
        } else {
            ok(format!("task events already {word}"))
        }
    }

    /// Keep the revoked ids on disk (`-S`), if asked to.
    fn save_state(&self) {
        if let Some(db) = &self.statedb
            && let Err(e) = super::statedb::save(db, &self.state)
        {
            tracing::error!("{e}");
        }
    }

    fn revoke(&self, args: &Map<String, Value>, terminate: bool) -> Value {
        let ids = string_list(args.get("task_id"));
        let (_held, running) = self.state.revoke(&ids, terminate);
        self.save_state();
        if terminate {
            let signal = args.get("signal").and_then(Value::as_str).unwrap_or("SIGTERM");
            for id in &running {
                tracing::info!("Terminating {id} ({signal})");
            }
            if running.is_empty() {
                return ok("terminate: tasks unknown");
            }
            return ok(format!("terminate: {}", running.join(", ")));
        }
        tracing::info!("Tasks flagged as revoked: {}", ids.join(", "));
        // Celery formats the Python set of ids.
        let set: Vec<String> = ids.iter().map(|id| py_repr(&Value::from(id.as_str()))).collect();
        ok(format!("tasks {{{}}} flagged as revoked", set.join(", ")))
    }

    fn rate_limit(&self, args: &Map<String, Value>) -> Value {
        let text = match args.get("rate_limit") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let limit = match RateLimit::parse(&text) {
            Ok(l) => l,
            Err(e) => {
                return nok(format!("Invalid rate limit string: ValueError({})", py_repr(&Value::from(e.to_string()))));
            }
        };
        let Some(task) = args.get("task_name").and_then(Value::as_str).filter(|t| self.sandbox.task(t).is_some())
        else {
            tracing::error!("Rate limit attempt for unknown task {:?}", args.get("task_name"));
            return nok("unknown task");
        };
        if limit.tasks_per_second().is_none() {
            self.state.set_rate_limit(task, None);
            tracing::info!("Rate limits disabled for tasks of type {task}");
            return ok("rate limit disabled successfully");
        }
        tracing::info!("New rate limit for tasks of type {task}: {text}.");
        self.state.set_rate_limit(task, Some(limit));
        ok("new rate limit set successfully")
    }

    fn time_limit(&self, args: &Map<String, Value>) -> Value {
        let Some(task) = args.get("task_name").and_then(Value::as_str).filter(|t| self.sandbox.task(t).is_some())
        else {
            tracing::error!("Change time limit attempt for unknown task {:?}", args.get("task_name"));
            return nok("unknown task");
        };
        let soft = args.get("soft").and_then(Value::as_f64);
        let hard = args.get("hard").and_then(Value::as_f64);
        self.state.set_time_limit(task, soft, hard);
        tracing::info!(
            "New time limits for tasks of type {task}: soft={} hard={}",
            soft.map_or("None".into(), |v| v.to_string()),
            hard.map_or("None".into(), |v| v.to_string())
        );
        ok("time limits set successfully")
    }
}

/// Celery's mingle: at start-up, ask the other nodes (`hello`, 1 s) for their
/// revoked ids and clock, and merge them; "mingle: all alone" when none answers.
pub(crate) async fn mingle(broker: Broker, state: Arc<WorkerState>) {
    let Some(fanout) = broker.fanout() else { return };
    tracing::info!("mingle: searching for neighbors");
    let oid = uuid::Uuid::new_v4().to_string();
    let ticket = uuid::Uuid::new_v4().to_string();
    let mut args = Map::new();
    args.insert("from_node".into(), Value::from(state.hostname()));
    args.insert("revoked".into(), json!(state.revoked_ids()));
    let expires = super::state::now_epoch() + 1.0;
    let request =
        crate::protocol::pidbox::request_message("hello", args, None, &ticket, &oid, state.forward(), expires);
    let raw = match fanout.call(&request, &oid, std::time::Duration::from_secs(1), None).await {
        Ok(raw) => raw,
        Err(e) => {
            tracing::warn!("mingle: {e}");
            return;
        }
    };
    let mut synced = 0;
    for r in &raw {
        let Ok((t, body)) = crate::protocol::pidbox::decode_reply(r) else { continue };
        if t.as_deref().is_some_and(|t| t != ticket) {
            continue;
        }
        for (node, reply) in body {
            if node == state.hostname() || !reply.is_object() {
                continue;
            }
            state.merge_revoked(&string_list(reply.get("revoked")));
            if let Some(clock) = reply.get("clock").and_then(Value::as_u64) {
                state.adjust(clock);
            }
            synced += 1;
        }
    }
    if synced == 0 {
        tracing::info!("mingle: all alone");
    } else {
        tracing::info!("mingle: sync with {synced} nodes");
    }
}

/// A list argument that Celery sends as a list or a single string.
fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Python's truth value of a JSON argument, as Celery's panel tests a flag
/// (`if terminate:`): Flower's API sends `terminate=true` as the integer `1`
/// (its `strtobool`), and `0`, `""`, `[]`, `{}` and `null` are false.
fn py_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Celery's `conf` censors keys that look secret.
fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    ["API", "TOKEN", "KEY", "SECRET", "PASS", "SIGNATURE", "DATABASE"].iter().any(|s| k.contains(s))
}

/// kombu's `Queue.as_dict()` of a queue consumed from the default exchange.
fn queue_info(queue: &str) -> Value {
    json!({
        "name": queue,
        "exchange": {
            "name": queue, "type": "direct", "arguments": null, "durable": true, "passive": false,
            "auto_delete": false, "delivery_mode": null, "no_declare": false,
        },
        "routing_key": queue,
        "queue_arguments": null,
        "binding_arguments": null,
        "consumer_arguments": null,
        "durable": true,
        "exclusive": false,
        "auto_delete": false,
        "no_ack": false,
        "alias": null,
        "bindings": [],
        "no_declare": null,
        "expires": null,
        "message_ttl": null,
        "max_length": null,
        "max_length_bytes": null,
        "max_priority": null,
    })
}

/// kombu's `Connection.info()` for the broker URL.
fn broker_info(url: &str, transport: &str) -> Value {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (userinfo, hostpart) = rest.rsplit_once('@').map_or((None, rest), |(u, h)| (Some(u), h));
    let (hostport, vhost) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
        _ => (hostport, None),
    };
    let userid = userinfo.map(|u| u.split(':').next().unwrap_or_default()).filter(|u| !u.is_empty());
    let vhost = vhost.split('?').next().unwrap_or_default();
    json!({
        "hostname": if host.is_empty() { "localhost" } else { host },
        "userid": userid,
        "virtual_host": if vhost.is_empty() && transport == "amqp" { "/" } else { vhost },
        "port": port,
        "insist": false,
        "ssl": url.starts_with("rediss") || url.starts_with("amqps"),
        "transport": transport,
        "connect_timeout": 4,
        "transport_options": {},
        "login_method": null,
        "uri_prefix": null,
        "heartbeat": 120.0,
        "failover_strategy": "round-robin",
        "alternates": [],
    })
}

/// `getrusage(RUSAGE_SELF)` in Celery's layout.
fn rusage() -> Value {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads nothing else.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) } != 0 {
        return json!({});
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    json!({
        "utime": secs(r.ru_utime), "stime": secs(r.ru_stime), "maxrss": r.ru_maxrss,
        "ixrss": r.ru_ixrss, "idrss": r.ru_idrss, "isrss": r.ru_isrss, "minflt": r.ru_minflt,
        "majflt": r.ru_majflt, "nswap": r.ru_nswap, "inblock": r.ru_inblock, "oublock": r.ru_oublock,
        "msgsnd": r.ru_msgsnd, "msgrcv": r.ru_msgrcv, "nsignals": r.ru_nsignals, "nvcsw": r.ru_nvcsw,
        "nivcsw": r.ru_nivcsw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_described_as_kombu_describes_them() {
        let i = broker_info("redis://:secret@localhost:6379/0", "redis");
        assert_eq!(i["hostname"], "localhost");
        assert_eq!(i["port"], 6379);
        assert_eq!(i["virtual_host"], "0");
        assert!(!i.to_string().contains("secret"));
        let i = broker_info("amqp://guest:guest@rabbit:5672//", "amqp");
        assert_eq!(i["userid"], "guest");
        assert_eq!(i["virtual_host"], "/");
        assert!(!i.to_string().contains("guest:guest"));
    }

    #[test]
    fn list_arguments_come_as_lists_or_single_strings() {
        assert_eq!(string_list(Some(&json!(["a", "b"]))), vec!["a", "b"]);
        assert_eq!(string_list(Some(&json!("a"))), vec!["a"]);
        assert!(string_list(None).is_empty());
    }

    #[test]
    fn flags_are_tested_for_pythons_truth_as_celery_does() {
        // Flower's `POST /api/task/revoke/<id>?terminate=true` arrives as `"terminate": 1`.
        for yes in [json!(true), json!(1), json!(2.5), json!("yes"), json!([0]), json!({"a": 1})] {
            assert!(py_truthy(&yes), "{yes}");
        }
        for no in [json!(false), json!(0), json!(0.0), json!(""), json!([]), json!({}), Value::Null] {
            assert!(!py_truthy(&no), "{no}");
        }
    }

    #[test]
    fn secrets_are_censored_in_conf() {
        assert!(is_secret("security_key") && is_secret("broker_password") && !is_secret("broker_url"));
    }
}
