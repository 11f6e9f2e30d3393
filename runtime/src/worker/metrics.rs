//! The worker's Prometheus metrics (`--metrics ADDR`, `worker_metrics_address`):
//! tasks by name, tenant and final state, run-time and sandbox-time histograms, fuel
//! consumed, peak guest memory, what the worker holds (reserved, scheduled
//! for an ETA, active) and broker connection errors, served as OpenMetrics
//! text at `GET /metrics` by `prometheus-client`.
//!
//! The HTTP side is one request per connection, `GET /metrics` only: a
//! scrape endpoint, not a web server (anything else is a 404, a request
//! larger than 8 KiB or slower than 5 s is dropped).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::state::WorkerState;
use crate::sandbox::CallReport;

/// A task's name and its tenant (`""` for a task outside any tenant's directory).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TaskLabel {
    pub task: String,
    pub tenant: String,
}

/// A task's name, tenant and final state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TaskStateLabel {
    pub task: String,
    pub tenant: String,
    pub state: String,
}

/// Where held requests are.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeldLabel {
    state: String,
}

type TimeHistograms = Family<TaskLabel, Histogram, fn() -> Histogram>;

/// Seconds, from 1 ms to about 9 minutes.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// The worker's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    tasks: Family<TaskStateLabel, Counter>,
    runtime: TimeHistograms,
    sandbox: TimeHistograms,
    fuel: Family<TaskLabel, Counter>,
    memory_peak: Family<TaskLabel, Gauge>,
    held: Family<HeldLabel, Gauge>,
    broker_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("celeriac");
        let tasks = Family::<TaskStateLabel, Counter>::default();
        registry.register("tasks", "Tasks finished, by name and final state", tasks.clone());
        let runtime = TimeHistograms::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register("task_runtime_seconds", "Time from a task's start to its outcome, by task", runtime.clone());
        let sandbox = TimeHistograms::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register("task_sandbox_seconds", "Time inside the wasm sandbox per call, by task", sandbox.clone());
        let fuel = Family::<TaskLabel, Counter>::default();
        registry.register("task_fuel", "Fuel (wasm instructions) consumed, by task", fuel.clone());
        let memory_peak = Family::<TaskLabel, Gauge>::default();
        registry.register(
            "task_memory_peak_bytes",
            "Largest guest memory one call of the task reached",
            memory_peak.clone(),
        );
        let held = Family::<HeldLabel, Gauge>::default();
        registry.register(
            "requests",
            "Requests the worker holds now: reserved (prefetched, rate-limited, waiting for a slot), scheduled \
             (waiting for an ETA), active (running)",
            held.clone(),
        );
        let broker_errors = Counter::default();
        registry.register(
            "broker_connection_errors",
            "Times a fetch from the broker failed and was retried (Redis, SQLite; the AMQP consumer reconnects inside its transport, see the log)",
            broker_errors.clone(),
        );
        Metrics { registry, tasks, runtime, sandbox, fuel, memory_peak, held, broker_errors }
    }
}

impl Metrics {
    /// A task of `tenant` reached its final `state`; `report` when it ran in
    /// the sandbox, `runtime` from its start to its stored outcome.
    pub fn finished(
        &self,
        task: &str,
        tenant: &str,
        state: &str,
        report: Option<&CallReport>,
        runtime: Option<Duration>,
    ) {
        let (task, tenant) = (task.to_string(), tenant.to_string());
        self.tasks
            .get_or_create(&TaskStateLabel { task: task.clone(), tenant: tenant.clone(), state: state.into() })
            .inc();
        let label = TaskLabel { task, tenant };
        if let Some(r) = runtime {
            self.runtime.get_or_create(&label).observe(r.as_secs_f64());
        }
        if let Some(report) = report {
            self.sandbox.get_or_create(&label).observe(report.wall.as_secs_f64());
            self.fuel.get_or_create(&label).inc_by(report.fuel_consumed);
            let peak = i64::try_from(report.peak_memory).unwrap_or(i64::MAX);
            let gauge = self.memory_peak.get_or_create(&label);
            if peak > gauge.get() {
                gauge.set(peak);
            }
        }
    }

    /// The consumer lost its broker connection.
    pub fn broker_error(&self) {
        self.broker_errors.inc();
    }

    /// The text exposition, with the held-request gauges read from `state` now.
    pub fn render(&self, state: &WorkerState) -> String {
        for (which, n) in state.held_counts() {
            self.held.get_or_create(&HeldLabel { state: which.into() }).set(n as i64);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("metrics: cannot encode: {e}");
        }
        out
    }
}

/// Serve `GET /metrics` on `addr` until the worker exits.
pub(crate) async fn serve(addr: &str, state: Arc<WorkerState>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("metrics: serving http://{}/metrics", listener.local_addr()?);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { continue };
            let state = state.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), respond(&mut socket, &state)).await;
            });
        }
    });
    Ok(())
}

async fn respond(socket: &mut tokio::net::TcpStream, state: &WorkerState) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    // Up to the end of the headers.
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        if len == buf.len() {
            return Ok(());
        }
        let n = socket.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (status, content_type, body) = if method == "GET" && path.split('?').next() == Some("/metrics") {
        ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", state.metrics.render(state))
    } else {
        ("404 Not Found", "text/plain; charset=utf-8", "only GET /metrics is served here\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_tasks_are_counted_by_name_and_state_with_their_sandbox_figures() {
        let m = Metrics::default();
        let report = CallReport { wall: Duration::from_millis(3), fuel_consumed: 1000, peak_memory: 65536, reused: 0 };
        m.finished("tasks.add", "", "SUCCESS", Some(&report), Some(Duration::from_millis(4)));
        m.finished("tasks.add", "", "SUCCESS", Some(&report), Some(Duration::from_millis(4)));
        m.finished("acme.tasks.add", "acme", "SUCCESS", Some(&report), Some(Duration::from_millis(4)));
        m.finished("tasks.spin", "", "REVOKED", None, None);
        let text = m.render(&WorkerState::new("w@h", false));
        assert!(text.contains("celeriac_tasks_total{task=\"tasks.add\",tenant=\"\",state=\"SUCCESS\"} 2"), "{text}");
        assert!(text.contains("celeriac_tasks_total{task=\"tasks.spin\",tenant=\"\",state=\"REVOKED\"} 1"), "{text}");
        assert!(text.contains("celeriac_task_fuel_total{task=\"tasks.add\",tenant=\"\"} 2000"), "{text}");
        assert!(text.contains("celeriac_task_fuel_total{task=\"acme.tasks.add\",tenant=\"acme\"} 1000"), "{text}");
        assert!(text.contains("celeriac_task_memory_peak_bytes{task=\"tasks.add\",tenant=\"\"} 65536"), "{text}");
        assert!(text.contains("celeriac_task_sandbox_seconds_count{task=\"tasks.add\",tenant=\"\"} 2"), "{text}");
        assert!(text.contains("celeriac_requests{state=\"active\"} 0"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
