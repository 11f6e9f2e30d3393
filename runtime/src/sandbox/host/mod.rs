//! What the worker grants a running task: the per-call store state and the
//! host side of the `celeriac:task/host` interface.
//!
//! Each capability is one small module with one job (Spin's "factors"):
//! [`log`] for log lines, [`state`] for `update_state`, [`context`] for the
//! request context, [`stdio`] for captured stdout/stderr, `config` for the
//! tenant's configuration values (answered from [`Grants::config`]), [`canvas`] for
//! sending tasks (granted per task), [`http`] for outbound HTTP through
//! `wasi:http` (granted per task or tenant, to listed hosts only). WASI itself
//! is granted with nothing behind it: no preopened directories, no network
//! addresses, no environment, no arguments, closed stdin; clocks and random work.
//! A future capability (key-value) is a new module here
//! plus an explicit grant in the worker's configuration.

pub mod canvas;
pub mod context;
pub mod disposition;
pub mod http;
pub mod log;
pub mod state;
pub mod stdio;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bounds::HostBounds;
use super::limits::{Limiter, Limits};
use context::Request;
use state::StateSink;
use stdio::{CAPTURE_LIMIT, CapturedOutput};

/// Host bindings generated from `wit/task.wit` (`celeriac:task@0.2.0`, the
/// current contract).
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "task-component",
        exports: { default: async },
    });
}

/// Host bindings generated from `wit/0.1.0/task.wit` (`celeriac:task@0.1.0`):
/// components built for the first contract keep loading and running; their
/// `host` imports are served by the same code as 0.2.0's.
pub mod bindings_v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "task-component",
        exports: { default: async },
    });
}

/// The most host handles an instance kept between calls may hold (a guest's
/// own, such as its stdio streams, are a handful).
const KEPT_HANDLES: usize = 64;

/// The data of one task call's `Store`: created fresh for every call and
/// dropped with it, unless the task keeps its instance (`max_calls_per_instance`:
/// then [`TaskState::release`] after the call, [`TaskState::renew`] before the next).
pub struct TaskState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Enforces the call's memory/table/instance limits and records peak memory.
    pub limiter: Limiter,
    /// The request context (`host.request`), also used to tag log lines.
    pub request: Request,
    /// Where `host.update-state` sends updates; `None` when nobody listens.
    pub state_sink: Option<StateSink>,
    /// Captured guest stdout.
    pub stdout: CapturedOutput,
    /// Captured guest stderr.
    pub stderr: CapturedOutput,
    /// When the call's wall-clock limit runs out.
    pub deadline: std::time::Instant,
    /// When the call's soft time limit passes (`host.soft-time-left`).
    pub soft_deadline: Option<std::time::Instant>,
    /// What the guest may still write to the worker's log in this call.
    pub output: log::OutputBudget,
    /// Signatures the call sent or replaced itself with (`canvas`).
    pub canvas: canvas::Sends,
    /// `host.ignore` / `host.reject`: how the message is settled instead of storing a state.
    pub disposition: Option<disposition::Disposition>,
    http: WasiHttpCtx,
    /// Who the call may reach over HTTP, and whom it was refused.
    pub http_grant: http::HttpGrant,
    /// What `config.get` answers from.
    config: std::sync::Arc<std::collections::BTreeMap<String, String>>,
    /// Host handles (streams, pollables, ...) the instance's first call left
    /// open: what a kept instance may hold between calls (see [`TaskState::leaked_handles`]).
    handles_kept: Option<usize>,
}

/// What one call is granted beyond the locked-down default.
#[derive(Debug, Default)]
pub struct Grants {
    /// May send tasks (`canvas`).
    pub may_send: bool,
    /// The tenant whose tasks alone it may send (`None`: any task).
    pub send_namespace: Option<String>,
    /// Its soft time limit in seconds (`host.soft-time-left`).
    pub soft_time_limit: Option<f64>,
    /// Hosts it may reach over HTTP.
    pub http_allow: Vec<String>,
    /// The values `config.get` answers from.
    pub config: std::sync::Arc<std::collections::BTreeMap<String, String>>,
}

impl TaskState {
    /// Fresh state for one call: a locked-down WASI context with captured stdio.
    pub fn new(
        limits: Limits,
        bounds: &HostBounds,
        request: Request,
        state_sink: Option<StateSink>,
        grants: Grants,
    ) -> Self {
        let stdout = CapturedOutput::new(CAPTURE_LIMIT);
        let stderr = CapturedOutput::new(CAPTURE_LIMIT);
        // The builder's defaults grant nothing: no preopens, no env, no args,
        // closed stdin, every socket address denied, no name lookups.
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
        // Nothing of a call yet (what `release` leaves); `renew` gives it this call's.
        let mut state = TaskState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(limits),
            request: Request::default(),
            state_sink: None,
            stdout,
            stderr,
            deadline: std::time::Instant::now(),
            soft_deadline: None,
            output: log::OutputBudget::new(bounds),
            canvas: canvas::Sends::new(false, None),
            disposition: None,
            http: WasiHttpCtx::new(),
            http_grant: http::HttpGrant::new(Vec::new()),
            config: Default::default(),
            handles_kept: None,
        };
        state.renew(limits, bounds, request, state_sink, grants);
        state
    }

    /// Ready for a call: that call's limits, request, grants and budgets (for a
    /// kept instance, `max_calls_per_instance`, its next call). The WASI
    /// context and resource table stay: the guest holds handles into them.
    pub fn renew(
        &mut self,
        limits: Limits,
        bounds: &HostBounds,
        request: Request,
        state_sink: Option<StateSink>,
        grants: Grants,
    ) {
        let now = std::time::Instant::now();
        self.limiter.renew(limits);
        self.request = request;
        self.state_sink = state_sink;
        self.deadline = now + limits.time_limit;
        self.soft_deadline = soft_deadline(now, grants.soft_time_limit);
        self.output = log::OutputBudget::new(bounds);
        self.canvas = canvas::Sends::new(grants.may_send, grants.send_namespace);
        self.disposition = None;
        self.http_grant = http::HttpGrant::new(grants.http_allow);
        self.config = grants.config;
    }

    /// Let go of what belongs to the call that just ended, before the instance
    /// is kept for another: its state sink (whoever listens to it waits for it
    /// to close), its request and its grants.
    pub fn release(&mut self) {
        self.state_sink = None;
        self.request = Request::default();
        self.canvas = canvas::Sends::new(false, None);
        self.http_grant = http::HttpGrant::new(Vec::new());
        self.config = Default::default();
    }

    /// Whether the call that just ended left more host handles open than the
    /// instance's first call did, or more than [`KEPT_HANDLES`]. What a first
    /// call leaves is the guest's own (wasi-libc and CPython keep their stdout
    /// stream once opened); a later call that adds to it leaks, and a kept
    /// instance would pile its handles up in the worker's memory call after
    /// call, uncounted by `max_memory`. (A guest that first prints in a later
    /// call is dropped after it too: it costs that instance, nothing else.)
    pub fn leaked_handles(&mut self) -> bool {
        let open = self.table.iter_mut().count();
        let first = *self.handles_kept.get_or_insert(open);
        open > first || open > KEPT_HANDLES
    }
}

/// When a soft time limit of `seconds` from `now` passes.
fn soft_deadline(now: std::time::Instant, seconds: Option<f64>) -> Option<std::time::Instant> {
    seconds
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| now.checked_add(std::time::Duration::from_secs_f64(s.min(1e9))))
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for TaskState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_grant }
    }
}

impl bindings::celeriac::task::types::Host for TaskState {}

impl bindings::celeriac::task::host::Host for TaskState {
    fn log(&mut self, level: bindings::celeriac::task::types::LogLevel, message: String) {
        self.output.log(level, &message);
    }

    fn update_state(&mut self, state: String, meta: String) {
        state::update_state(self, state, meta);
    }

    fn request(&mut self) -> bindings::celeriac::task::types::RequestContext {
        self.request.to_wit()
    }

    fn delivery_info(&mut self) -> String {
        serde_json::Value::Object(self.request.delivery_info.clone()).to_string()
    }

    fn ignore(&mut self) {
        self.disposition = Some(disposition::Disposition::Ignore);
    }

    fn reject(&mut self, requeue: bool) {
        self.disposition = Some(disposition::Disposition::Reject { requeue });
    }

    fn soft_time_left(&mut self) -> Option<f64> {
        let now = std::time::Instant::now();
        self.soft_deadline.map(|d| match d.checked_duration_since(now) {
            Some(left) => left.as_secs_f64(),
            None => -now.duration_since(d).as_secs_f64(),
        })
    }
}

impl bindings::celeriac::task::canvas::Host for TaskState {
    fn send(&mut self, signature: String) -> Result<String, bindings::celeriac::task::types::TaskError> {
        canvas::send(self, signature)
    }

    fn replace(&mut self, signature: String) -> Result<(), bindings::celeriac::task::types::TaskError> {
        canvas::replace(self, signature)
    }

    fn add_to_chord(&mut self, signature: String) -> Result<String, bindings::celeriac::task::types::TaskError> {
        canvas::add_to_chord(self, signature)
    }
}

impl bindings::celeriac::task::config::Host for TaskState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

impl bindings_v0_1::celeriac::task::types::Host for TaskState {}

impl bindings_v0_1::celeriac::task::host::Host for TaskState {
    fn log(&mut self, level: bindings_v0_1::celeriac::task::types::LogLevel, message: String) {
        use bindings::celeriac::task::types::LogLevel as L;
        use bindings_v0_1::celeriac::task::types::LogLevel as V1;
        let level = match level {
            V1::Trace => L::Trace,
            V1::Debug => L::Debug,
            V1::Info => L::Info,
            V1::Warning => L::Warning,
            V1::Error => L::Error,
        };
        self.output.log(level, &message);
    }

    fn update_state(&mut self, state: String, meta: String) {
        state::update_state(self, state, meta);
    }

    fn request(&mut self) -> bindings_v0_1::celeriac::task::types::RequestContext {
        self.request.to_wit_v0_1()
    }
}

/// A linker with everything a task component may import: WASI p2 (locked
/// down per call by [`TaskState::new`]), `wasi:http`'s outgoing handler
/// (every request checked by [`http::HttpGrant`]), `celeriac:task/host` in both
/// versions of the contract (0.1.0 and 0.2.0), and 0.2.0's `canvas` and `config`.
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<TaskState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    bindings::celeriac::task::host::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)?;
    bindings::celeriac::task::types::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)?;
    bindings::celeriac::task::canvas::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)?;
    bindings::celeriac::task::config::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)?;
    bindings_v0_1::celeriac::task::host::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)?;
    bindings_v0_1::celeriac::task::types::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)?;
    Ok(linker)
}
