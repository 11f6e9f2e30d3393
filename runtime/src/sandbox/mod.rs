//! The sandbox: loads task components and runs each task call in a fresh,
//! limited WebAssembly instance.
//!
//! One [`Sandbox`] owns the wasmtime engines (Cranelift, pooling allocator, fuel
//! metering, epoch interruption; one per wasm stack size in use), the linker with
//! every host capability a task may import, and the registry of loaded tasks.
//! Each component is read and compiled within bounds ([`bounds`]; compiled in a
//! child process with a time and memory budget, see [`compile`]), cached on disk
//! ([`cache`]) and pre-linked (`InstancePre`). Components load in the background,
//! each served as soon as it is ready; a task of a component still loading waits
//! for it ([`Sandbox::serves`]). Each call gets
//! a new `Store` and a new instance from the pool, so no state survives from one
//! call to the next — which is what makes running untrusted tenants safe.
//!
//! Limits ([`limits`]) are always on: fuel, linear memory (plus tables and
//! instances), wall-clock time (epoch interruption for running code, a timer for
//! code blocked in the host, e.g. sleeping) and stack size (fixed per engine by
//! wasmtime, so a task with its own stack size runs on an engine of its own). A call never fails
//! the worker: whatever happens becomes an [`Outcome`].

pub mod bounds;
pub mod cache;
pub mod compile;
pub mod declared;
pub mod exports;
pub mod host;
pub mod limits;
pub mod loader;
pub mod outcome;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use wasmtime::component::Component;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

pub use bounds::HostBounds;
pub use compile::Compiler;
pub use exports::{Contract, DeclaredOptions};
use exports::{Exports, Returned};
use host::TaskState;
use host::bindings::TaskComponentPre;
use host::bindings_v0_1::TaskComponentPre as TaskComponentPreV0_1;
pub use host::context::Request;
pub use host::state::{StateSink, StateUpdate};
pub use limits::{ByteSize, Limits, LimitsOverride};
pub use loader::LoadError;
use outcome::TraceSite;
pub use outcome::{CallReport, FailureKind, Outcome, RetryRequest, TaskFailure};
use wasmtime::component::InstancePre;

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

/// How many wasm frames a trap's backtrace keeps (innermost first).
const BACKTRACE_FRAMES: usize = 100;

/// Limits for the load-time call to a component's `tasks()` export.
const LOAD_TIME_LIMIT: Duration = Duration::from_secs(10);

/// How many components load (compile, list their tasks) at once.
const LOAD_PARALLELISM: usize = 2;

/// Host memory is reserved for results in units of this many bytes.
const HOST_MEMORY_UNIT: usize = 64 << 10;

/// Components at least this large get a progress line on stderr when a CLI
/// command compiles them (compiling takes seconds from here on).
pub const STDERR_PROGRESS_MIN_SIZE: usize = 1 << 20;

/// Where the progress of a compile (a cache miss) is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileProgress {
    /// The log, at INFO, for every compile.
    Log,
    /// Standard error, for components of at least [`STDERR_PROGRESS_MIN_SIZE`].
    Stderr,
}

/// How the sandbox is set up.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Limits every task gets unless overridden.
    pub limits: Limits,
    /// Per-task limit overrides, by full task name; `"*"` applies to all tasks.
    pub task_limits: HashMap<String, LimitsOverride>,
    /// Per-tenant limit overrides (a tenant's `tenant.toml`), by tenant: over
    /// `"*"`, under the task's own.
    pub tenant_limits: HashMap<String, LimitsOverride>,
    /// The tenants whose `tenant.toml` the worker read at start. A hot-deployed
    /// component of another tenant with such a file is refused until a restart:
    /// served now, it would run outside the quotas and limits the file sets.
    pub tenant_files: HashSet<String>,
    /// Whether fuel is metered (costs ~20% on tight loops; the fuel limit needs it).
    pub fuel_metering: bool,
    /// How many calls may run at once (pool slots).
    pub max_concurrent: u32,
    /// Use the pooling instance allocator (faster instantiation).
    pub pooling: bool,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The cache is pruned to this many bytes after loading (0: no bound).
    pub cache_max_size: u64,
    /// Cached artifacts unused for longer are pruned after loading (0: no bound).
    pub cache_max_age: Duration,
    /// Where "compiling X (19 MiB)…" lines go: the log at INFO (the worker),
    /// or stderr for components of at least [`STDERR_PROGRESS_MIN_SIZE`] (CLI commands).
    pub compile_progress: CompileProgress,
    /// Bounds on what the host does for a guest.
    pub bounds: HostBounds,
    /// Who compiles components (the worker: a child process of its own binary).
    pub compiler: Compiler,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            limits: Limits::default(),
            task_limits: HashMap::new(),
            tenant_limits: HashMap::new(),
            tenant_files: HashSet::new(),
            fuel_metering: true,
            max_concurrent: 16,
            pooling: true,
            cache_dir: cache::ArtifactCache::default_dir(),
            cache_max_size: cache::DEFAULT_MAX_SIZE,
            cache_max_age: cache::DEFAULT_MAX_AGE,
            compile_progress: CompileProgress::Log,
            bounds: HostBounds::default(),
            compiler: Compiler::default(),
        }
    }
}

impl SandboxConfig {
    /// The effective limits of `task`: defaults, then `"*"`, then the task's own.
    pub fn limits_for(&self, task: &str) -> Limits {
        self.limits_with_declared(task, None, &DeclaredOptions::default())
    }

    /// The effective limits of `task` of `tenant` with the options its
    /// component declares: defaults, then the declared `time_limit`, then `"*"`,
    /// the tenant's and the task's own annotations (which override what a task
    /// declares, as in Celery).
    pub fn limits_with_declared(&self, task: &str, tenant: Option<&str>, declared: &DeclaredOptions) -> Limits {
        let mut l = self.limits;
        if let Some(t) = declared.time_limit {
            // A tenant's component can only shorten its time limit: a declared
            // 1e9 s would let a call that burns no fuel (waiting) hold its slots forever.
            let t = if tenant.is_some() { t.min(l.time_limit.as_secs_f64()) } else { t };
            l = l.with(&LimitsOverride { time_limit: Some(t), ..LimitsOverride::default() });
        }
        let tenant = tenant.and_then(|t| self.tenant_limits.get(t));
        for o in [self.task_limits.get("*"), tenant, self.task_limits.get(task)].into_iter().flatten() {
            l = l.with(o);
        }
        l
    }

    /// Every wasm stack size a task can get, the default (a task without
    /// annotations) first.
    fn stacks(&self) -> Vec<u64> {
        let mut stacks = vec![self.limits_for("").max_stack];
        let tenants =
            self.tenant_limits.keys().map(|t| self.limits_with_declared("", Some(t), &DeclaredOptions::default()));
        for l in self.task_limits.keys().map(|task| self.limits_for(task)).chain(tenants) {
            if !stacks.contains(&l.max_stack) {
                stacks.push(l.max_stack);
            }
        }
        stacks
    }

    /// Whether any task may keep its instance for more than one call
    /// (`max_calls_per_instance`): the pool then holds up to
    /// `max_concurrent` idle instances besides the running ones.
    fn reuses_instances(&self) -> bool {
        self.limits.max_calls_per_instance > 1
            || self.task_limits.values().chain(self.tenant_limits.values()).any(|o| o.max_calls_per_instance > Some(1))
    }

    /// The largest memory cap any task may have (sizes the pool's memory slots).
    fn memory_ceiling(&self) -> u64 {
        self.task_limits
            .values()
            .chain(self.tenant_limits.values())
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
    /// Its version: the first 12 hex digits of the file's SHA-256.
    pub version: String,
    /// The tenant whose directory it is in (`acme` for `acme/billing.wasm`).
    pub tenant: Option<String>,
    pre: InstancePre<TaskState>,
    exports: Exports,
}

impl LoadedComponent {
    /// The version of the `celeriac:task` contract it was built for.
    pub fn contract(&self) -> Contract {
        self.exports.contract()
    }
}

/// A task the sandbox can run.
pub struct TaskEntry {
    /// Full Celery name, e.g. `tasks.add`.
    pub name: String,
    /// The name the component knows it by (`add`).
    pub export: String,
    /// The component serving it.
    pub component: Arc<LoadedComponent>,
    /// Its effective limits.
    pub limits: Limits,
    /// The options the component declares for it (0.2.0 components; all
    /// defaults for 0.1.0 ones), checked at load time.
    pub options: DeclaredOptions,
    /// The engine it runs on (by stack size).
    engine: usize,
    /// The component pre-linked on that engine, and where its exports are.
    pre: InstancePre<TaskState>,
    exports: Exports,
}

/// An instance kept for the same task's next call, with its store.
struct Warm {
    /// The task it serves: compared by identity, so an instance of a version
    /// that hot deploy replaced is never handed to the new one (the `Weak`
    /// keeps the old entry's address from being reused).
    task: std::sync::Weak<TaskEntry>,
    store: Store<TaskState>,
    instance: wasmtime::component::Instance,
    /// Calls it has served.
    served: u32,
}

/// The idle instances kept for reuse (`max_calls_per_instance`), oldest
/// first, over all tasks: at most `max_concurrent` (the pool is sized for
/// them); keeping one more drops the oldest.
#[derive(Default)]
struct WarmInstances(std::sync::Mutex<std::collections::VecDeque<Warm>>);

impl WarmInstances {
    /// The most recently kept instance of `task`.
    fn take(&self, task: &Arc<TaskEntry>) -> Option<Warm> {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let at = q.iter().rposition(|w| std::ptr::eq(w.task.as_ptr(), Arc::as_ptr(task)))?;
        q.remove(at)
    }

    /// Keep `warm`, dropping the instances of versions no longer served
    /// (hot deploy replaced or removed them) and the oldest beyond `max`.
    fn keep(&self, warm: Warm, max: usize) {
        let dropped = {
            let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
            q.push_back(warm);
            let (live, mut gone): (std::collections::VecDeque<Warm>, std::collections::VecDeque<Warm>) =
                std::mem::take(&mut *q).into_iter().partition(|w| w.task.strong_count() > 0);
            *q = live;
            let excess = q.len().saturating_sub(max.max(1));
            gone.extend(q.drain(..excess));
            gone
        };
        // Dropped outside the lock: freeing an instance resets its pool slot.
        drop(dropped);
    }
}

impl TaskEntry {
    /// The tenant whose directory its component is in, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.component.tenant.as_deref()
    }
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
    /// Whether the task may send tasks (`canvas.send` / `canvas.replace`).
    pub may_send: bool,
    /// The tenant whose tasks alone it may send (`None`: any task).
    pub send_namespace: Option<String>,
    /// The call's soft time limit in seconds, which the guest can read
    /// (`host.soft-time-left`); the sandbox does not enforce it.
    pub soft_time_limit: Option<f64>,
    /// Hosts the call may reach over HTTP (`http_allow`; empty: none).
    pub http_allow: Vec<String>,
    /// The values `config.get` answers from (its tenant's `[config]`).
    pub config: Arc<BTreeMap<String, String>>,
}

/// What a call produced.
#[derive(Debug)]
pub struct CallResult {
    /// Success or failure.
    pub outcome: Outcome,
    /// Time, fuel and memory used.
    pub report: CallReport,
    /// The limits it ran with.
    pub limits: Limits,
    /// The version of the component that ran it ([`LoadedComponent::version`]).
    pub version: String,
    /// The worker-wide host memory held for this result until it is dropped
    /// (after the worker stored it); see [`HostBounds::max_host_memory`].
    pub host_memory: Option<HostMemory>,
    /// Signatures the call sent (`canvas.send`), frozen, for the worker to
    /// send whatever the outcome.
    pub sent: Vec<serde_json::Value>,
    /// The signature the call replaced itself with (`canvas.replace`), for the
    /// worker to send if the call succeeded.
    pub replacement: Option<serde_json::Value>,
    /// New members of the task's chord (`canvas.add-to-chord`), frozen.
    pub chord_additions: Vec<serde_json::Value>,
    /// How to settle the message instead of storing a state (`host.ignore`,
    /// `host.reject`), if the call asked and returned successfully.
    pub disposition: Option<host::disposition::Disposition>,
}

/// Host memory reserved for one result, given back when dropped.
#[derive(Debug)]
pub struct HostMemory {
    _permit: OwnedSemaphorePermit,
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

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One wasmtime engine, with its linker, for one wasm stack size.
struct EngineSet {
    stack: u64,
    engine: Engine,
    linker: wasmtime::component::Linker<TaskState>,
}

/// What is loaded, what failed, and what is still loading.
#[derive(Default)]
struct Registry {
    tasks: BTreeMap<String, Arc<TaskEntry>>,
    components: Vec<Arc<LoadedComponent>>,
    errors: Vec<LoadError>,
    /// Components still being read, compiled or listed: display name → the
    /// task-name prefix they will serve.
    pending: BTreeMap<String, String>,
}

impl Registry {
    /// Stop serving the component loaded from `path`; the names it served.
    fn remove_component(&mut self, path: &Path) -> Vec<String> {
        let names: Vec<String> =
            self.tasks.iter().filter(|(_, t)| t.component.path == path).map(|(n, _)| n.clone()).collect();
        for n in &names {
            self.tasks.remove(n);
        }
        self.components.retain(|c| c.path != path);
        names
    }
}

/// What one [`Sandbox::sync`] did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Files loaded or replaced.
    pub loaded: Vec<PathBuf>,
    /// Files that failed (an older version, if any, keeps serving).
    pub failed: Vec<PathBuf>,
    /// Files gone, no longer served.
    pub removed: Vec<PathBuf>,
}

/// A component's version: the first 12 hex digits of its SHA-256.
fn version_of(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The engines, their linkers and the loaded tasks.
pub struct Sandbox {
    /// One per stack size in use; index 0 has the default stack size.
    engines: Vec<EngineSet>,
    /// Instances kept for reuse, over all tasks (at most `max_concurrent`).
    warm: WarmInstances,
    config: SandboxConfig,
    cache: cache::ArtifactCache,
    registry: RwLock<Registry>,
    /// Bumped whenever a component finishes loading (or fails to).
    changed: watch::Sender<u64>,
    /// Held by the one [`Sandbox::sync`] running.
    syncing: tokio::sync::Mutex<()>,
    /// Never more calls in flight than pool slots.
    slots: Arc<Semaphore>,
    /// Host memory for results not yet stored, in [`HOST_MEMORY_UNIT`]s.
    host_memory: Arc<Semaphore>,
    /// Kept for its Drop: stops the epoch thread with the sandbox.
    _ticker: EpochTicker,
}

impl Sandbox {
    /// Create the engines and linkers. Loads nothing yet.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let ticker = EpochTicker::start().map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut engines = Vec::new();
        for stack in config.stacks() {
            let set = Self::engine_set(&config, stack).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
            ticker.add(set.engine.clone());
            engines.push(set);
        }
        let cache = cache::ArtifactCache::new(config.cache_dir.clone());
        let units = (config.bounds.max_host_memory / HOST_MEMORY_UNIT).max(1);
        Ok(Sandbox {
            engines,
            cache,
            slots: Arc::new(Semaphore::new(config.max_concurrent.max(1) as usize)),
            warm: WarmInstances::default(),
            host_memory: Arc::new(Semaphore::new(units)),
            config,
            registry: RwLock::default(),
            changed: watch::Sender::new(0),
            syncing: tokio::sync::Mutex::new(()),
            _ticker: ticker,
        })
    }

    /// An engine (and linker) whose wasm stack is `stack` bytes.
    fn engine_set(c: &SandboxConfig, stack: u64) -> wasmtime::Result<EngineSet> {
        let engine = Self::engine(c, stack)?;
        let linker = host::linker(&engine)?;
        Ok(EngineSet { stack, engine, linker })
    }

    fn engine(c: &SandboxConfig, stack: u64) -> wasmtime::Result<Engine> {
        let mut cfg = compile::engine_config(c.fuel_metering, stack);
        cfg.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(BACKTRACE_FRAMES));
        if c.pooling {
            // Running calls, the idle instances kept for reuse, load-time calls.
            // (An idle store keeps its fiber stack too: `total_stacks` counts it.)
            let kept = if c.reuses_instances() { c.max_concurrent.max(1) } else { 0 };
            let slots = c.max_concurrent.max(1) + kept + LOAD_PARALLELISM as u32;
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
                // Memory past KEEP_RESIDENT (a guest that grew big) is given back
                // at once, not batched: batching held several freed 128 MiB slots
                // resident after a memory-hungry tenant's calls. Calls that stay
                // within KEEP_RESIDENT queue nothing, so this costs them nothing.
                .decommit_batch_size(1);
            cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        Engine::new(&cfg)
    }

    /// The configuration this sandbox was created with.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Load every component under `root` (a directory or one `.wasm` file) and
    /// wait until all are loaded or refused. Bad files are recorded in
    /// [`Sandbox::load_errors`] and skipped.
    pub async fn load(&self, root: &Path) {
        let candidates = self.discover(root);
        self.load_all(root, candidates).await;
    }

    /// Start loading every component under `root` in the background; each is
    /// served as soon as it is ready. Files are found (and bad names refused)
    /// before this returns, so [`Sandbox::loading`] already names them.
    pub fn spawn_load(self: &Arc<Self>, root: &Path) -> tokio::task::JoinHandle<()> {
        let candidates = self.discover(root);
        let (me, root) = (self.clone(), root.to_path_buf());
        tokio::spawn(async move { me.load_all(&root, candidates).await })
    }

    /// Wait until nothing is loading any more, or `timeout` passes; true if done.
    pub async fn wait_loaded(&self, timeout: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        tokio::time::timeout(timeout, async {
            while !self.read().pending.is_empty() {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
        .is_ok()
    }

    fn discover(&self, root: &Path) -> Vec<loader::Candidate> {
        let (candidates, errors) = loader::discover(root);
        for e in &errors {
            tracing::error!("cannot load {e}");
        }
        let mut r = self.write();
        r.errors.extend(errors);
        r.pending.extend(candidates.iter().map(|c| (c.display.clone(), c.prefix.clone())));
        candidates
    }

    async fn load_all(&self, root: &Path, candidates: Vec<loader::Candidate>) {
        self.load_each(root, candidates).await;
        // Pruned once what this process uses is known (and so kept).
        let (cache, size, age) = (self.cache.clone(), self.config.cache_max_size, self.config.cache_max_age);
        if let Ok(p) = tokio::task::spawn_blocking(move || cache.prune(size, age)).await
            && p.files > 0
        {
            tracing::info!(
                "pruned {} compiled component(s) ({}) from the cache ({} left; cache_max_size {}, cache_max_age {}s)",
                p.files,
                ByteSize(p.bytes),
                ByteSize(p.kept_bytes),
                ByteSize(size),
                age.as_secs()
            );
        }
    }

    async fn load_each(&self, root: &Path, candidates: Vec<loader::Candidate>) {
        futures_util::stream::iter(candidates)
            .for_each_concurrent(LOAD_PARALLELISM, |c| async move {
                // A panic while loading (a bug) must still end the wait of
                // messages for this component.
                let loaded =
                    futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(self.load_one(root, &c)))
                        .await
                        .unwrap_or_else(|_| Err("internal error while loading it".to_string()));
                let mut r = self.write();
                r.pending.remove(&c.display);
                let refused = match loaded {
                    Ok((component, entries)) => {
                        // Prefixes are unique (see `loader::discover`) and names have no
                        // separators, so a clash means the same file was loaded twice.
                        if let Some(taken) = entries.iter().find(|e| r.tasks.contains_key(&e.name)) {
                            Some(format!("task {} is already served", taken.name))
                        } else {
                            tracing::debug!(
                                "loaded {} ({} in {:?})",
                                c.display,
                                if component.from_cache { "from cache" } else { "compiled" },
                                component.load_time
                            );
                            for e in entries {
                                r.tasks.insert(e.name.clone(), Arc::new(e));
                            }
                            r.components.push(component);
                            None
                        }
                    }
                    Err(reason) => Some(reason),
                };
                if let Some(reason) = refused {
                    let e = LoadError { path: c.path.clone(), reason };
                    tracing::error!("cannot load {e}");
                    r.errors.push(e);
                }
                drop(r);
                self.changed.send_modify(|n| *n += 1);
            })
            .await;
    }

    /// Read, check, compile and pre-link one component and list its tasks.
    async fn load_one(
        &self,
        root: &Path,
        c: &loader::Candidate,
    ) -> Result<(Arc<LoadedComponent>, Vec<TaskEntry>), String> {
        let bytes = Arc::new(loader::read_component(&c.path, root, self.config.bounds.max_component_size)?);
        self.load_bytes(c, bytes).await
    }

    /// Check, compile and pre-link one component's bytes and list its tasks.
    async fn load_bytes(
        &self,
        c: &loader::Candidate,
        bytes: Arc<Vec<u8>>,
    ) -> Result<(Arc<LoadedComponent>, Vec<TaskEntry>), String> {
        let version = version_of(&bytes);
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
        let (component, from_cache) = self.compile(0, bytes.clone(), &c.display).await?;
        let load_time = started.elapsed();
        let (pre, exports) = self.prelink(0, &component)?;
        let loaded = Arc::new(LoadedComponent {
            path: c.path.clone(),
            display: c.display.clone(),
            from_cache,
            load_time,
            version,
            tenant: c.tenant.clone(),
            pre,
            exports,
        });
        let listed = self.list_tasks(&loaded).await?;
        let mut seen = HashSet::new();
        for (export, options) in &listed {
            if !loader::valid_task_name(export) {
                return Err(format!(
                    "declares an invalid task name {:?}: a name is 1 to {} letters, digits, '_' or '-'",
                    bounds::truncate_end(export, 64),
                    bounds::MAX_TASK_NAME_LEN
                ));
            }
            if !seen.insert(export.as_str()) {
                return Err(format!("declares the task name {export:?} more than once"));
            }
            declared::check(options).map_err(|e| format!("declares for its task {export:?} {e}"))?;
        }
        // Tasks with their own stack size run on another engine, for which the
        // component is compiled (and cached) once per size.
        let mut other_stacks: HashMap<usize, (InstancePre<TaskState>, Exports)> = HashMap::new();
        let mut entries = Vec::with_capacity(listed.len());
        for (export, options) in listed {
            let name = format!("{}.{}", c.prefix, export);
            let limits = self.config.limits_with_declared(&name, c.tenant.as_deref(), &options);
            let engine = self.engines.iter().position(|e| e.stack == limits.max_stack).unwrap_or(0);
            let (pre, exports) = if engine == 0 {
                (loaded.pre.clone(), loaded.exports)
            } else if let Some(found) = other_stacks.get(&engine) {
                found.clone()
            } else {
                let (component, _) = self.compile(engine, bytes.clone(), &c.display).await?;
                let found = self.prelink(engine, &component)?;
                other_stacks.insert(engine, found.clone());
                found
            };
            entries.push(TaskEntry { name, export, component: loaded.clone(), limits, options, engine, pre, exports });
        }
        Ok((loaded, entries))
    }

    /// The compiled component for `wasm` on engine `engine`: from the on-disk
    /// cache, or compiled within the compile budget.
    async fn compile(&self, engine: usize, wasm: Arc<Vec<u8>>, display: &str) -> Result<(Component, bool), String> {
        let set = &self.engines[engine];
        let b = &self.config.bounds;
        let cached = self.cache.path_for(&set.engine, &wasm);
        if let Some(c) = cached.as_deref().and_then(|p| self.cache.lookup(&set.engine, p)) {
            return Ok((c, true));
        }
        let progress = Progress::start(self.config.compile_progress, display, wasm.len());
        // Compiled into a temporary file (the cache directory may be read-only),
        // read back (not mapped: a noexec mount would refuse to map it executable),
        // then stored in the cache if it can be.
        let out = std::env::temp_dir().join(format!("celeriac-{}-{}.cwasm", std::process::id(), uuid::Uuid::new_v4()));
        let compiled = compile::compile_to_file(
            &self.config.compiler,
            &set.engine,
            (self.config.fuel_metering, set.stack),
            wasm,
            &out,
            (b.compile_timeout, b.compile_memory),
        )
        .await
        .map_err(|e| e.to_string())
        .and_then(|()| std::fs::read(&out).map_err(|e| format!("cannot read the compiled component: {e}")));
        let _ = std::fs::remove_file(&out);
        progress.done(compiled.as_ref().err());
        let compiled = compiled?;
        // SAFETY: the artifact was written just now by an engine with the same
        // settings (the compiler process or this one); wasmtime checks its
        // header and settings again and refuses a mismatch.
        let component = unsafe { Component::deserialize(&set.engine, &compiled) }
            .map_err(|e| format!("cannot load the compiled component: {e:#}"))?;
        if let Some(path) = cached {
            self.cache.store(&path, &compiled);
        }
        Ok((component, false))
    }

    /// Link the component against what the worker grants and check its exports.
    /// A component built for `celeriac:task@0.2.0` or `@0.1.0` is accepted;
    /// its exports are checked against that version's world.
    fn prelink(&self, engine: usize, component: &Component) -> Result<(InstancePre<TaskState>, Exports), String> {
        let pre = self.engines[engine].linker.instantiate_pre(component).map_err(|e| {
            format!("imports something this worker does not grant: {}", bounds::truncate_end(&outcome_root(&e), 4096))
        })?;
        let wrong_world = |e: wasmtime::Error, iface: &str| {
            format!(
                "does not target the celeriac:task/task-component world (it must export {iface}): {}",
                bounds::truncate_end(&outcome_root(&e), 4096)
            )
        };
        let Some(exports) = Exports::of(component) else {
            // Checked against the current world, for its detailed reason.
            return Err(match TaskComponentPre::new(pre) {
                Err(e) => wrong_world(e, exports::TASK_INTERFACE),
                Ok(_) => format!("does not export {}", exports::TASK_INTERFACE),
            });
        };
        let iface = exports.contract().interface();
        match exports.contract() {
            Contract::V0_2 => TaskComponentPre::new(pre.clone()).map(drop),
            Contract::V0_1 => TaskComponentPreV0_1::new(pre.clone()).map(drop),
        }
        .map_err(|e| wrong_world(e, iface))?;
        Ok((pre, exports))
    }

    /// Call the component's `tasks()` export once, under load-time limits.
    async fn list_tasks(&self, c: &LoadedComponent) -> Result<Vec<(String, DeclaredOptions)>, String> {
        let limits = Limits { time_limit: LOAD_TIME_LIMIT, ..self.config.limits };
        let request = Request { name: format!("{}#tasks", c.display), ..Request::default() };
        let mut store = self.store(0, limits, request, None, host::Grants::default());
        let max = self.config.bounds.max_tasks_per_component;
        let fut = async {
            let instance = c.pre.instantiate_async(&mut store).await?;
            exports::tasks(&mut store, &instance, &c.exports, max).await
        };
        match tokio::time::timeout(LOAD_TIME_LIMIT + TIMER_GRACE, fut).await {
            Ok(Ok(listed)) => listed,
            Ok(Err(e)) => Err(format!("its tasks() export failed: {}", bounds::truncate_end(&outcome_root(&e), 4096))),
            Err(_) => Err(format!("its tasks() export did not return within {LOAD_TIME_LIMIT:?}")),
        }
    }

    /// A fresh store for one call, with limits, fuel and the epoch deadline set.
    fn store(
        &self,
        engine: usize,
        limits: Limits,
        request: Request,
        sink: Option<StateSink>,
        grants: host::Grants,
    ) -> Store<TaskState> {
        let state = TaskState::new(limits, &self.config.bounds, request, sink, grants);
        let mut store = Store::new(&self.engines[engine].engine, state);
        store.limiter(|s| &mut s.limiter);
        self.arm(&mut store, limits);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(outcome::TimeLimitHit))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// A kept instance's store made ready for its next call: the call's own
    /// limits, request and grants, a full fuel tank and a new deadline.
    fn renew(
        &self,
        store: &mut Store<TaskState>,
        limits: Limits,
        request: Request,
        sink: Option<StateSink>,
        grants: host::Grants,
    ) {
        store.data_mut().renew(limits, &self.config.bounds, request, sink, grants);
        self.arm(store, limits);
    }

    /// A full fuel tank and the epoch deadline, for the call about to start.
    fn arm(&self, store: &mut Store<TaskState>, limits: Limits) {
        if self.config.fuel_metering {
            // Cannot fail: fuel metering is enabled on this engine.
            let _ = store.set_fuel(limits.fuel);
        }
        store.set_epoch_deadline(1);
    }

    /// Hot deploy: bring what is served in line with the files under `root`
    /// now. A new or changed file (by content) is loaded off the hot path and
    /// swapped in at once: calls already running finish on the old version,
    /// calls after the swap run the new one. A file that fails to load keeps
    /// its old version serving (the failure is logged and listed). A removed
    /// file stops being served (its running calls finish). Calls are
    /// serialised: one sync at a time.
    pub async fn sync(&self, root: &Path) -> SyncReport {
        let _one_at_a_time = self.syncing.lock().await;
        let mut report = SyncReport::default();
        let (candidates, errors) = loader::discover(root);
        let wanted: HashSet<&Path> = candidates.iter().map(|c| c.path.as_path()).collect();
        // Removed files (and files now refused by name) stop being served.
        {
            let mut r = self.write();
            let gone: Vec<PathBuf> =
                r.components.iter().filter(|c| !wanted.contains(c.path.as_path())).map(|c| c.path.clone()).collect();
            for path in gone {
                let c = r.remove_component(&path);
                tracing::warn!("{}: removed; its tasks are no longer served ({})", path.display(), c.join(", "));
                report.removed.push(path);
            }
            r.errors.retain(|e| wanted.contains(e.path.as_path()));
            for e in errors {
                if !r.errors.iter().any(|o| o.path == e.path && o.reason == e.reason) {
                    tracing::error!("cannot load {e}");
                    r.errors.push(e);
                }
            }
        }
        for c in candidates {
            if let Some(t) = c.tenant.as_deref().filter(|t| !self.config.tenant_files.contains(*t))
                && root.join(t).join(crate::config::TENANT_FILE).exists()
            {
                let reason = format!(
                    "{t}/{} was not there when the worker started; restart the worker to serve {t}'s tasks under it",
                    crate::config::TENANT_FILE
                );
                // Said once per file, not at every later change in the directory.
                if !self.read().errors.iter().any(|e| e.path == c.path && e.reason == reason) {
                    self.refuse(&c, reason, &mut report);
                }
                continue;
            }
            let bytes = match loader::read_component(&c.path, root, self.config.bounds.max_component_size) {
                Ok(b) => Arc::new(b),
                Err(reason) => {
                    self.refuse(&c, reason, &mut report);
                    continue;
                }
            };
            let version = version_of(&bytes);
            let current = self.read().components.iter().find(|l| l.path == c.path).map(|l| l.version.clone());
            if current.as_deref() == Some(version.as_str()) {
                continue;
            }
            let loaded = match self.load_bytes(&c, bytes).await {
                Ok(l) => l,
                Err(reason) => {
                    self.refuse(&c, reason, &mut report);
                    continue;
                }
            };
            let (component, entries) = loaded;
            let mut r = self.write();
            if let Some(taken) =
                entries.iter().find(|e| r.tasks.get(&e.name).is_some_and(|t| t.component.path != c.path))
            {
                let reason = format!("task {} is already served by another file", taken.name);
                drop(r);
                self.refuse(&c, reason, &mut report);
                continue;
            }
            r.remove_component(&c.path);
            r.errors.retain(|e| e.path != c.path);
            let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
            for e in entries {
                r.tasks.insert(e.name.clone(), Arc::new(e));
            }
            match &current {
                Some(old) => tracing::warn!(
                    "{}: version {} replaces {old}; new calls of {} run it",
                    c.display,
                    component.version,
                    names.join(", ")
                ),
                None => {
                    tracing::warn!("{}: version {} loaded; serving {}", c.display, component.version, names.join(", "))
                }
            }
            r.components.push(component);
            report.loaded.push(c.path.clone());
            drop(r);
            self.changed.send_modify(|n| *n += 1);
        }
        report
    }

    /// A file that failed to load in a sync: logged, listed, its old version (if any) kept.
    fn refuse(&self, c: &loader::Candidate, reason: String, report: &mut SyncReport) {
        let e = LoadError { path: c.path.clone(), reason };
        let mut r = self.write();
        let keeps = r.components.iter().find(|l| l.path == c.path).map(|l| l.version.clone());
        match &keeps {
            Some(v) => tracing::error!("cannot load {e}; version {v} keeps serving"),
            None => tracing::error!("cannot load {e}"),
        }
        r.errors.retain(|o| o.path != c.path);
        r.errors.push(e);
        report.failed.push(c.path.clone());
    }

    /// The task registered under `name`, if any (now: see [`Sandbox::serves`]).
    pub fn task(&self, name: &str) -> Option<Arc<TaskEntry>> {
        self.read().tasks.get(name).cloned()
    }

    /// Whether the component that would serve `name` (by its prefix) is
    /// still loading.
    pub fn is_loading(&self, name: &str) -> bool {
        Self::loading_in(&self.read(), name)
    }

    fn loading_in(r: &Registry, name: &str) -> bool {
        name.rsplit_once('.').is_some_and(|(prefix, _)| r.pending.values().any(|p| p == prefix))
    }

    /// Whether `name` is served, waiting first for its component if that is
    /// still loading (see [`Sandbox::is_loading`]): a task sent while its
    /// component compiles runs once it is ready instead of failing as
    /// unregistered. The wait is bounded by the compile budget; a name no
    /// loading component can serve is answered at once.
    pub async fn serves(&self, name: &str) -> bool {
        let mut rx = self.changed.subscribe();
        loop {
            {
                // One look: a component's tasks appear as it leaves `pending`.
                let r = self.read();
                if r.tasks.contains_key(name) {
                    return true;
                }
                if !Self::loading_in(&r, name) {
                    return false;
                }
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }

    /// What to tell a user about a task name nothing serves (the worker's
    /// "Received unregistered task" line, `celeriac run`): the file that
    /// would serve it, what that file serves or why it failed to load, the
    /// prefixed name for a bare one (`add` → `tasks.add`), and the served
    /// tasks when there are few. Several lines, no trailing newline.
    pub fn not_registered_hint(&self, name: &str) -> String {
        /// Up to this many served tasks are listed.
        const LISTED: usize = 10;
        let r = self.read();
        let shown = |n: &str| format!("'{}'", bounds::escape_controls(bounds::truncate_end(n, 200)));
        let mut lines = Vec::new();
        let last = name.rsplit('.').next().unwrap_or(name);
        let alike: Vec<&str> =
            r.tasks.keys().filter(|t| t.rsplit('.').next() == Some(last) && *t != name).map(String::as_str).collect();
        match loader::component_for(name) {
            None => lines.push(format!(
                "A Celeriac task name is <component>.<task>: {} has no component prefix (tasks.wasm serves tasks.*).",
                shown(name)
            )),
            Some((file, prefix)) => {
                let siblings: Vec<&str> = r
                    .tasks
                    .keys()
                    .filter(|t| t.rsplit_once('.').is_some_and(|(p, _)| p == prefix))
                    .map(String::as_str)
                    .collect();
                let failed = r.errors.iter().find(|e| {
                    e.path.ends_with(&file)
                        || e.path.file_name() == Some(std::ffi::OsStr::new(&format!("{prefix}.wasm")))
                });
                if !siblings.is_empty() {
                    let listed: Vec<&str> = siblings.iter().copied().take(LISTED).collect();
                    lines.push(format!(
                        "{} is loaded but has no task {}; it serves {}{}.",
                        bounds::escape_controls(bounds::truncate_end(&file, 200)),
                        shown(last),
                        listed.join(", "),
                        if siblings.len() > LISTED { ", ..." } else { "" }
                    ));
                } else if let Some(e) = failed {
                    lines.push(format!(
                        "It would be served by {}, which failed to load: {e}",
                        bounds::escape_controls(bounds::truncate_end(&file, 200))
                    ));
                } else {
                    let dotted = format!("{prefix}.wasm");
                    lines.push(format!(
                        "It would be served by {} in the worker's tasks directory (-A), which has no such file{}.",
                        bounds::escape_controls(bounds::truncate_end(&file, 200)),
                        if dotted != file {
                            format!(" (nor {})", bounds::escape_controls(bounds::truncate_end(&dotted, 200)))
                        } else {
                            String::new()
                        }
                    ));
                }
            }
        }
        if let [one] = alike.as_slice() {
            lines.push(format!("Did you mean '{one}'?"));
        } else if !alike.is_empty() && alike.len() <= LISTED {
            lines.push(format!("Did you mean one of {}?", alike.join(", ")));
        }
        let served: Vec<&str> = r.tasks.keys().map(String::as_str).collect();
        if served.is_empty() {
            lines.push("This worker serves no task at all.".into());
        } else if served.len() <= LISTED {
            lines.push(format!("Served here: {}.", served.join(", ")));
        } else {
            lines.push(format!("{} tasks are served here (`celeriac tasks -A <dir>` lists them).", served.len()));
        }
        lines.join("\n")
    }

    /// Every loaded task, by name.
    pub fn tasks(&self) -> Vec<Arc<TaskEntry>> {
        self.read().tasks.values().cloned().collect()
    }

    /// Every loaded component.
    pub fn components(&self) -> Vec<Arc<LoadedComponent>> {
        self.read().components.clone()
    }

    /// Files that failed to load, with reasons.
    pub fn load_errors(&self) -> Vec<LoadError> {
        self.read().errors.clone()
    }

    /// Components still loading (display names).
    pub fn loading(&self) -> Vec<String> {
        self.read().pending.keys().cloned().collect()
    }

    /// Run one task call: in a fresh instance, or in one the task kept
    /// (`max_calls_per_instance`).
    pub async fn call(&self, task: &str, inv: Invocation) -> Result<CallResult, CallError> {
        let entry = self.task(task).ok_or_else(|| CallError::NotRegistered(task.to_string()))?;
        let limits = entry.limits.tightened_by_message(inv.message_time_limit);
        let b = self.config.bounds;
        // The semaphore is never closed, so acquiring cannot fail.
        let _slot = self.slots.acquire().await.ok();
        // Captured now: a trap unwinding the guest's fiber can leave the
        // thread's current span changed, so output is logged under this one.
        let span = tracing::Span::current();
        let http_granted = !inv.http_allow.is_empty();
        let grants = host::Grants {
            may_send: inv.may_send,
            send_namespace: inv.send_namespace,
            soft_time_limit: inv.soft_time_limit,
            http_allow: inv.http_allow,
            config: inv.config,
        };
        let reuse = limits.max_calls_per_instance > 1;
        let warm = if reuse { self.warm.take(&entry) } else { None };
        let (mut store, kept, served) = match warm {
            Some(Warm { mut store, instance, served, .. }) => {
                self.renew(&mut store, limits, inv.request, inv.state_sink, grants);
                (store, Some(instance), served)
            }
            None => (self.store(entry.engine, limits, inv.request, inv.state_sink, grants), None, 0),
        };
        let site = TraceSite { file: &entry.component.display, task: &entry.name };
        let started = Instant::now();
        let mut instance = None;
        let result = {
            let call = (entry.export.as_str(), inv.args.as_str(), inv.kwargs.as_str());
            let fut = async {
                let i = match kept {
                    Some(i) => i,
                    None => entry.pre.instantiate_async(&mut store).await?,
                };
                instance = Some(i);
                exports::invoke(&mut store, &i, &entry.exports, call, b.max_result_size, b.max_error_size).await
            };
            tokio::time::timeout(limits.time_limit + TIMER_GRACE, fut).await
        };
        let wall = started.elapsed();
        let fuel_consumed =
            if self.config.fuel_metering { limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0)) } else { 0 };
        let report = CallReport { wall, fuel_consumed, peak_memory: store.data().limiter.peak_memory, reused: served };
        let (stdout, out_dropped) = store.data().stdout.take();
        let (stderr, err_dropped) = store.data().stderr.take();
        span.in_scope(|| store.data_mut().output.forward(&stdout, &stderr, out_dropped + err_dropped));
        let canvas = std::mem::take(&mut store.data_mut().canvas);
        let disposition = store.data_mut().disposition.take();
        let http_denied = std::mem::take(&mut store.data_mut().http_grant.denied);
        // Kept for the task's next call only after a call that returned (a
        // trap or a timeout leaves an instance in no state to go on) and sent
        // no HTTP request (a connection or body it never dropped would go on
        // in the background past its call), while it has calls left, holds
        // at most half its memory cap (as Celery replaces a child past
        // `worker_max_memory_per_child` after its task: a guest that leaks
        // starts afresh before a call of it hits the cap) and left no more
        // host handles open than its first call did (leaked handles are host
        // memory no cap counts).
        if let (Ok(Ok(_)), Some(instance)) = (&result, instance)
            && served + 1 < limits.max_calls_per_instance
            && store.data().http_grant.sent() == 0
            && store.data().limiter.held() as u64 <= limits.max_memory / 2
            && !store.data_mut().leaked_handles()
        {
            store.data_mut().release();
            let warm = Warm { task: Arc::downgrade(&entry), store, instance, served: served + 1 };
            self.warm.keep(warm, self.config.max_concurrent as usize);
        } else {
            drop(store);
        }
        let mut host_memory = None;
        let outcome = match result {
            Ok(Ok(Returned::TooLarge(len))) => {
                Outcome::Failure(outcome::result_too_large(&site, len, b.max_result_size))
            }
            Ok(Ok(Returned::Json(json))) => match self.accept_result(&site, json).await {
                Ok((value, held)) => {
                    host_memory = Some(held);
                    Outcome::Success(value)
                }
                Err(failure) => Outcome::Failure(failure),
            },
            Ok(Ok(Returned::Raised(e))) => Outcome::Failure(raised(&site, &e, b.max_error_size)),
            Ok(Ok(Returned::Retry(r))) => Outcome::Retry(RetryRequest {
                countdown: r.countdown,
                eta: r.eta,
                exc: r.exc.map(|e| raised(&site, &e, b.max_error_size)),
                max_retries: r.max_retries,
            }),
            Ok(Ok(Returned::TooManyArgs(n))) => Outcome::Failure(outcome::too_many_args(&site, n)),
            Ok(Err(err)) => {
                tracing::debug!("trap: {err:?}");
                Outcome::Failure(outcome::trapped(&site, &err, &stderr, limits.fuel, limits.time_limit))
            }
            Err(_elapsed) => Outcome::Failure(outcome::timed_out(&site, limits.time_limit)),
        };
        // A call that failed after being refused HTTP access fails for that reason.
        let outcome = match outcome {
            Outcome::Failure(f) if !http_denied.is_empty() && f.kind == FailureKind::Raised => {
                let (exc_type, message) = host::http::denied_failure(&http_denied, http_granted);
                let message = format!("{message}; the task then failed with {}", f.repr());
                let denied =
                    outcome::raised(&site, &exc_type, Some("builtins"), &message, None, None, b.max_error_size);
                Outcome::Failure(denied)
            }
            other => other,
        };
        Ok(CallResult {
            outcome,
            report,
            limits,
            version: entry.component.version.clone(),
            host_memory,
            sent: canvas.sent,
            replacement: canvas.replacement,
            chord_additions: canvas.chord_additions,
            disposition,
        })
    }

    /// Parse a success result within the host-memory bounds: refused if
    /// parsing it would take more than `max_result_memory`, and held (with
    /// back-pressure) against `max_host_memory` until the worker has stored it.
    async fn accept_result(
        &self,
        site: &TraceSite<'_>,
        json: String,
    ) -> Result<(serde_json::Value, HostMemory), TaskFailure> {
        let b = &self.config.bounds;
        // Counted before parsing: a parsed value takes many times its text's size.
        let cost = bounds::parsed_json_cost(&json).map_err(|e| outcome::bad_result(site, &e))?;
        if cost > b.max_result_memory {
            return Err(outcome::result_too_costly(site, json.len(), cost, b.max_result_memory));
        }
        // The parsed value, and its encoded form while it is being stored.
        let units = (cost + 2 * json.len()).div_ceil(HOST_MEMORY_UNIT);
        let units = units.clamp(1, (b.max_host_memory / HOST_MEMORY_UNIT).max(1)) as u32;
        // The semaphore is never closed.
        let permit = self
            .host_memory
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| outcome::result_too_costly(site, json.len(), cost, b.max_host_memory))?;
        let value = serde_json::from_str(&json).map_err(|e| outcome::bad_result(site, &e))?;
        Ok((value, HostMemory { _permit: permit }))
    }
}

/// The "compiling tasks.wasm (19 MiB)…" line of one compile, and its "…
/// in 16.2s" ending (see [`CompileProgress`]).
struct Progress {
    to_stderr: bool,
    shown: bool,
    display: String,
    started: Instant,
}

impl Progress {
    fn start(how: CompileProgress, display: &str, size: usize) -> Progress {
        let to_stderr = how == CompileProgress::Stderr;
        let shown = !to_stderr || size >= STDERR_PROGRESS_MIN_SIZE;
        let display = bounds::escape_controls(display).into_owned();
        let line = format!("compiling {display} ({})…", ByteSize(size as u64));
        if shown && to_stderr {
            eprintln!("{line}");
        } else if shown {
            tracing::info!("{line}");
        }
        Progress { to_stderr, shown, display, started: Instant::now() }
    }

    fn done(self, failed: Option<&String>) {
        if !self.shown {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let line = match failed {
            None => format!("compiled {} in {secs:.1}s (cached for the next start)", self.display),
            Some(_) => format!("compiling {} failed after {secs:.1}s", self.display),
        };
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            tracing::info!("{line}");
        }
    }
}

/// An exception raised by a guest, made safe ([`outcome::raised`]).
fn raised(site: &TraceSite<'_>, e: &exports::RaisedError, max_error: usize) -> TaskFailure {
    outcome::raised(
        site,
        &e.exc_type,
        e.exc_module.as_deref(),
        &e.message,
        e.args.as_deref(),
        e.traceback.as_deref(),
        max_error,
    )
}

/// The innermost message of an error chain, for one-line reasons.
fn outcome_root(e: &wasmtime::Error) -> String {
    let msgs: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    msgs.join(": ")
}
