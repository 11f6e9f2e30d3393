//! The sandbox: loads task components and runs each task call in a fresh,
//! limited WebAssembly instance.
//!
//! One [`Sandbox`] owns one wasmtime engine (Cranelift, pooling allocator, fuel
//! metering, epoch interruption), the linker with every host capability a task
//! may import, and the registry of loaded tasks. Each component is compiled once
//! (cached on disk, see [`cache`]) and pre-linked (`InstancePre`); each call gets
//! a new `Store` and a new instance from the pool, so no state survives from one
//! call to the next — which is what makes running untrusted tenants safe.
//!
//! Limits ([`limits`]) are always on: fuel, linear memory (plus tables and
//! instances), wall-clock time (epoch interruption for running code, a timer for
//! code blocked in the host, e.g. sleeping) and stack size (fixed per engine by
//! wasmtime, so a task with its own stack size runs on an engine of its own). A call never fails
//! the worker: whatever happens becomes an [`Outcome`].

pub mod cache;
pub mod host;
pub mod limits;
pub mod loader;
pub mod outcome;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

use host::TaskState;
use host::bindings::{TaskComponent, TaskComponentPre};
pub use host::context::Request;
pub use host::state::{StateSink, StateUpdate};
pub use limits::{ByteSize, Limits, LimitsOverride};
pub use loader::LoadError;
use outcome::TraceSite;
pub use outcome::{CallReport, FailureKind, Outcome, TaskFailure};

/// How often the epoch ticks: the granularity of time limits and of the
/// cooperative yields that keep a busy guest from starving the async runtime.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Extra time the host timer waits past a time limit, so that a guest running
/// wasm code is stopped by the epoch callback (with a backtrace) rather than by
/// the timer (without one).
const TIMER_GRACE: Duration = Duration::from_millis(50);

/// Bytes of each pooled memory slot kept resident between calls (reset in
/// place rather than returned to the kernel). Covers a typical compiled guest's
/// whole working set (the Rust example uses ~1.1 MiB).
const KEEP_RESIDENT: usize = 4 << 20;

/// Largest result (JSON text) a task may return; a larger one is a failure.
pub const MAX_RESULT_BYTES: usize = 8 << 20;

/// How many wasm frames a trap's backtrace keeps (innermost first).
const BACKTRACE_FRAMES: usize = 100;

/// Limits for the load-time call to a component's `tasks()` export.
const LOAD_TIME_LIMIT: Duration = Duration::from_secs(10);

/// How the sandbox is set up.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Limits every task gets unless overridden.
    pub limits: Limits,
    /// Per-task limit overrides, by full task name; `"*"` applies to all tasks.
    pub task_limits: HashMap<String, LimitsOverride>,
    /// Whether fuel is metered (costs ~20% on tight loops; the fuel limit needs it).
    pub fuel_metering: bool,
    /// How many calls may run at once (pool slots).
    pub max_concurrent: u32,
    /// Use the pooling instance allocator (faster instantiation).
    pub pooling: bool,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            limits: Limits::default(),
            task_limits: HashMap::new(),
            fuel_metering: true,
            max_concurrent: 16,
            pooling: true,
            cache_dir: cache::ArtifactCache::default_dir(),
        }
    }
}

impl SandboxConfig {
    /// The effective limits of `task`: defaults, then `"*"`, then the task's own.
    pub fn limits_for(&self, task: &str) -> Limits {
        let mut l = self.limits;
        if let Some(o) = self.task_limits.get("*") {
            l = l.with(o);
        }
        if let Some(o) = self.task_limits.get(task) {
            l = l.with(o);
        }
        l
    }

    /// The largest memory cap any task may have (sizes the pool's memory slots).
    fn memory_ceiling(&self) -> u64 {
        self.task_limits
            .values()
            .filter_map(|o| o.max_memory.map(ByteSize::as_u64))
            .fold(self.limits.max_memory, u64::max)
    }
}

/// Errors setting up the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The wasmtime engine could not be created with this configuration.
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
}

/// Errors that prevent a call from starting (every other problem is an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No loaded component serves this task name.
    #[error("Task of kind '{0}' never registered, please make sure it's imported.")]
    NotRegistered(String),
}

/// A loaded component: compiled, pre-linked, ready to instantiate.
pub struct LoadedComponent {
    /// The file it came from.
    pub path: PathBuf,
    /// Its name in tracebacks and listings.
    pub display: String,
    /// Whether the compiled artifact came from the on-disk cache.
    pub from_cache: bool,
    /// Time spent compiling or deserialising it.
    pub load_time: Duration,
    pre: TaskComponentPre<TaskState>,
}

/// A task the sandbox can run.
#[derive(Clone)]
pub struct TaskEntry {
    /// Full Celery name, e.g. `tasks.add`.
    pub name: String,
    /// The name the component knows it by (`add`).
    pub export: String,
    /// The component serving it.
    pub component: Arc<LoadedComponent>,
    /// Its effective limits.
    pub limits: Limits,
    /// The engine it runs on (by stack size).
    engine: usize,
    /// The component pre-linked on that engine.
    pre: TaskComponentPre<TaskState>,
}

/// One task call to make.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// Positional arguments, a JSON array as text.
    pub args: String,
    /// Keyword arguments, a JSON object as text.
    pub kwargs: String,
    /// The request context the guest can read (its `id` and `name` also tag log lines).
    pub request: Request,
    /// The message's own hard time limit in seconds, if any (can only tighten).
    pub message_time_limit: Option<f64>,
    /// Where custom states (`update_state`) go; `None` logs them at debug level.
    pub state_sink: Option<StateSink>,
}

/// What a call produced.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// Success or failure.
    pub outcome: Outcome,
    /// Time, fuel and memory used.
    pub report: CallReport,
    /// The limits it ran with.
    pub limits: Limits,
}

/// Increments every engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    engines: Arc<std::sync::Mutex<Vec<Engine>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start() -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engines: Arc<std::sync::Mutex<Vec<Engine>>> = Arc::default();
        let (flag, list) = (stop.clone(), engines.clone());
        let thread = std::thread::Builder::new().name("celeriac-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                for e in list.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    e.increment_epoch();
                }
            }
        })?;
        Ok(EpochTicker { stop, engines, thread: Some(thread) })
    }

    fn add(&self, engine: Engine) {
        self.engines.lock().unwrap_or_else(|p| p.into_inner()).push(engine);
    }
}

/// One wasmtime engine, with its linker, for one wasm stack size.
struct EngineSet {
    stack: u64,
    engine: Engine,
    linker: wasmtime::component::Linker<TaskState>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The engines, their linkers and the loaded tasks.
pub struct Sandbox {
    /// Index 0 has the default stack size; others are added on demand.
    engines: Vec<EngineSet>,
    config: SandboxConfig,
    cache: cache::ArtifactCache,
    tasks: BTreeMap<String, TaskEntry>,
    components: Vec<Arc<LoadedComponent>>,
    errors: Vec<LoadError>,
    /// Never more calls in flight than pool slots.
    slots: Arc<tokio::sync::Semaphore>,
    ticker: EpochTicker,
}

impl Sandbox {
    /// Create the default engine and linker. Loads nothing yet.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let ticker = EpochTicker::start().map_err(|e| SandboxError::Engine(e.to_string()))?;
        let set =
            Self::engine_set(&config, config.limits.max_stack).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        ticker.add(set.engine.clone());
        let cache = cache::ArtifactCache::new(config.cache_dir.clone());
        Ok(Sandbox {
            engines: vec![set],
            cache,
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent.max(1) as usize)),
            config,
            tasks: BTreeMap::new(),
            components: Vec::new(),
            errors: Vec::new(),
            ticker,
        })
    }

    /// An engine (and linker) whose wasm stack is `stack` bytes.
    fn engine_set(c: &SandboxConfig, stack: u64) -> wasmtime::Result<EngineSet> {
        let engine = Self::engine(c, stack)?;
        let linker = host::linker(&engine)?;
        Ok(EngineSet { stack, engine, linker })
    }

    /// The index of the engine for `stack`, created if this is its first use.
    fn engine_for(&mut self, stack: u64) -> Result<usize, String> {
        if let Some(i) = self.engines.iter().position(|e| e.stack == stack) {
            return Ok(i);
        }
        let set = Self::engine_set(&self.config, stack)
            .map_err(|e| format!("cannot create an engine with a {stack}-byte stack: {e:#}"))?;
        self.ticker.add(set.engine.clone());
        self.engines.push(set);
        Ok(self.engines.len() - 1)
    }

    fn engine(c: &SandboxConfig, stack: u64) -> wasmtime::Result<Engine> {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .consume_fuel(c.fuel_metering)
            .epoch_interruption(true)
            .max_wasm_stack(stack as usize)
            .async_stack_size((stack as usize + (1 << 20)).max(2 << 20))
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(BACKTRACE_FRAMES));
        if c.pooling {
            let slots = c.max_concurrent.max(1) + 1; // +1 for load-time calls
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(slots)
                .total_core_instances(slots * 16)
                .total_memories(slots * 4)
                .total_tables(slots * 16)
                .total_stacks(slots)
                .max_memories_per_component(8)
                .max_tables_per_component(32)
                .max_core_instances_per_component(64)
                .max_memory_size(c.memory_ceiling() as usize)
                // Reset a freed slot by rewriting only its dirty pages (found with
                // Linux's PAGEMAP_SCAN where available) instead of madvise: no page
                // faults on reuse and no TLB shootdowns across the runtime's threads.
                .pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT / 16)
                .decommit_batch_size(16);
            cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        Engine::new(&cfg)
    }

    /// The configuration this sandbox was created with.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Load every component under `root` (a directory or one `.wasm` file).
    /// Bad files are recorded in [`Sandbox::load_errors`] and skipped.
    pub async fn load(&mut self, root: &Path) {
        let (candidates, errors) = loader::discover(root);
        self.errors.extend(errors);
        for c in candidates {
            match self.load_one(&c).await {
                Ok(()) => {}
                Err(reason) => {
                    tracing::error!("cannot load {}: {reason}", c.path.display());
                    self.errors.push(LoadError { path: c.path.clone(), reason });
                }
            }
        }
    }

    async fn load_one(&mut self, c: &loader::Candidate) -> Result<(), String> {
        let bytes = std::fs::read(&c.path).map_err(|e| format!("cannot read file: {e}"))?;
        match loader::binary_kind(&bytes) {
            loader::BinaryKind::NotWasm => return Err("not a WebAssembly file (bad magic header)".into()),
            loader::BinaryKind::CoreModule => {
                return Err("is a core WebAssembly module, not a component; build it for a component target \
                     (e.g. `cargo build --target wasm32-wasip2`) or wrap it with `wasm-tools component new`"
                    .into());
            }
            loader::BinaryKind::Component => {}
        }
        let started = Instant::now();
        let (component, from_cache) = self
            .cache
            .load_or_compile(&self.engines[0].engine, &bytes)
            .map_err(|e| format!("invalid component: {e:#}"))?;
        let load_time = started.elapsed();
        let pre = self.prelink(0, &component)?;
        let loaded =
            Arc::new(LoadedComponent { path: c.path.clone(), display: c.display.clone(), from_cache, load_time, pre });
        let names = self.list_tasks(&loaded).await?;
        // Tasks with their own stack size run on another engine, for which the
        // component is compiled (and cached) once per size.
        let mut other_stacks: HashMap<u64, (usize, TaskComponentPre<TaskState>)> = HashMap::new();
        for export in names {
            if !loader::valid_task_name(&export) {
                return Err(format!("declares an invalid task name {export:?}"));
            }
            let name = format!("{}.{}", c.prefix, export);
            if let Some(other) = self.tasks.get(&name) {
                self.errors.push(LoadError {
                    path: c.path.clone(),
                    reason: format!("task {name} is already served by {}; keeping that one", other.component.display),
                });
                continue;
            }
            let limits = self.config.limits_for(&name);
            let (engine, pre) = if limits.max_stack == self.engines[0].stack {
                (0, loaded.pre.clone())
            } else if let Some(found) = other_stacks.get(&limits.max_stack) {
                found.clone()
            } else {
                let i = self.engine_for(limits.max_stack)?;
                let (component, _) = self
                    .cache
                    .load_or_compile(&self.engines[i].engine, &bytes)
                    .map_err(|e| format!("invalid component: {e:#}"))?;
                let found = (i, self.prelink(i, &component)?);
                other_stacks.insert(limits.max_stack, found.clone());
                found
            };
            self.tasks.insert(name.clone(), TaskEntry { name, export, component: loaded.clone(), limits, engine, pre });
        }
        tracing::debug!(
            "loaded {} ({} in {:?})",
            c.display,
            if from_cache { "from cache" } else { "compiled" },
            load_time
        );
        self.components.push(loaded);
        Ok(())
    }

    /// Link the component against what the worker grants and check its exports.
    fn prelink(&self, engine: usize, component: &Component) -> Result<TaskComponentPre<TaskState>, String> {
        let pre = self.engines[engine]
            .linker
            .instantiate_pre(component)
            .map_err(|e| format!("imports something this worker does not grant: {}", outcome_root(&e)))?;
        TaskComponentPre::new(pre).map_err(|e| {
            format!(
                "does not target the celeriac:task/task-component world (it must export celeriac:task/task@0.1.0): {}",
                outcome_root(&e)
            )
        })
    }

    /// Call the component's `tasks()` export once, under load-time limits.
    async fn list_tasks(&self, c: &LoadedComponent) -> Result<Vec<String>, String> {
        let limits = Limits { time_limit: LOAD_TIME_LIMIT, ..self.config.limits };
        let request = Request { name: format!("{}#tasks", c.display), ..Request::default() };
        let mut store = self.store(0, limits, request, None);
        let fut = async {
            let instance: TaskComponent = c.pre.instantiate_async(&mut store).await?;
            instance.celeriac_task_task().call_tasks(&mut store).await
        };
        match tokio::time::timeout(LOAD_TIME_LIMIT + TIMER_GRACE, fut).await {
            Ok(Ok(names)) => Ok(names),
            Ok(Err(e)) => Err(format!("its tasks() export failed: {}", outcome_root(&e))),
            Err(_) => Err(format!("its tasks() export did not return within {LOAD_TIME_LIMIT:?}")),
        }
    }

    /// A fresh store for one call, with limits, fuel and the epoch deadline set.
    fn store(&self, engine: usize, limits: Limits, request: Request, sink: Option<StateSink>) -> Store<TaskState> {
        let mut store = Store::new(&self.engines[engine].engine, TaskState::new(limits, request, sink));
        store.limiter(|s| &mut s.limiter);
        if self.config.fuel_metering {
            // Cannot fail: fuel metering is enabled on this engine.
            let _ = store.set_fuel(limits.fuel);
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(outcome::TimeLimitHit))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// The task registered under `name`, if any.
    pub fn task(&self, name: &str) -> Option<&TaskEntry> {
        self.tasks.get(name)
    }

    /// Every loaded task, by name.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskEntry> {
        self.tasks.values()
    }

    /// Every loaded component.
    pub fn components(&self) -> &[Arc<LoadedComponent>] {
        &self.components
    }

    /// Files that failed to load, with reasons.
    pub fn load_errors(&self) -> &[LoadError] {
        &self.errors
    }

    /// Run one task call in a fresh instance.
    pub async fn call(&self, task: &str, inv: Invocation) -> Result<CallResult, CallError> {
        let entry = self.tasks.get(task).ok_or_else(|| CallError::NotRegistered(task.to_string()))?;
        let limits = entry.limits.tightened_by_message(inv.message_time_limit);
        // The semaphore is never closed, so acquiring cannot fail.
        let _slot = self.slots.acquire().await.ok();
        // Captured now: a trap unwinding the guest's fiber can leave the
        // thread's current span changed, so output is logged under this one.
        let span = tracing::Span::current();
        let mut store = self.store(entry.engine, limits, inv.request, inv.state_sink);
        let site = TraceSite { file: &entry.component.display, task: &entry.name };
        let started = Instant::now();
        let result = {
            let fut = async {
                let instance: TaskComponent = entry.pre.instantiate_async(&mut store).await?;
                instance.celeriac_task_task().call_invoke(&mut store, &entry.export, &inv.args, &inv.kwargs).await
            };
            tokio::time::timeout(limits.time_limit + TIMER_GRACE, fut).await
        };
        let wall = started.elapsed();
        let fuel_consumed =
            if self.config.fuel_metering { limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0)) } else { 0 };
        let report = CallReport { wall, fuel_consumed, peak_memory: store.data().limiter.peak_memory };
        let (stdout, _) = store.data().stdout.take();
        let (stderr, dropped) = store.data().stderr.take();
        span.in_scope(|| forward_output(&stdout, &stderr, dropped));
        let outcome = match result {
            // Bounded before parsing: a parsed JSON value takes many times its
            // text's size, and the text may be as large as the guest's memory.
            Ok(Ok(Ok(json))) if json.len() > MAX_RESULT_BYTES => {
                Outcome::Failure(outcome::result_too_large(&site, json.len(), MAX_RESULT_BYTES))
            }
            Ok(Ok(Ok(json))) => match serde_json::from_str(&json) {
                Ok(v) => Outcome::Success(v),
                Err(e) => Outcome::Failure(outcome::bad_result(&site, &e)),
            },
            Ok(Ok(Err(e))) => {
                Outcome::Failure(outcome::raised(&site, e.exc_type, e.exc_module, e.message, e.traceback))
            }
            Ok(Err(err)) => {
                tracing::debug!("trap: {err:?}");
                Outcome::Failure(outcome::trapped(&site, &err, &stderr, limits.fuel, limits.time_limit))
            }
            Err(_elapsed) => Outcome::Failure(outcome::timed_out(&site, limits.time_limit)),
        };
        Ok(CallResult { outcome, report, limits })
    }
}

/// Log what the guest printed: stdout at INFO, stderr at WARNING (Celery logs
/// redirected task output at WARNING by default).
fn forward_output(stdout: &str, stderr: &str, dropped: usize) {
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!("stdout: {line}");
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        tracing::warn!("stderr: {line}");
    }
    if dropped > 0 {
        tracing::warn!("guest output truncated: {dropped} bytes dropped");
    }
}

/// The innermost message of an error chain, for one-line reasons.
fn outcome_root(e: &wasmtime::Error) -> String {
    let msgs: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    msgs.join(": ")
}
