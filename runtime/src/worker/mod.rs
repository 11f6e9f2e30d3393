//! The worker: consumes task messages, runs them in the sandbox, stores results.
//!
//! The worker runs one single-threaded event loop per core (at most one per
//! concurrency slot), each with its own broker and backend connections, like
//! one of Celery's prefork processes: no cross-thread wake-ups on the hot path,
//! and CPU-bound tasks still run in parallel. Concurrency and prefetch are split
//! between the loops. In each loop, a consumer receives messages while it has prefetch
//! room (`worker_prefetch_multiplier` × concurrency unacknowledged messages, as
//! Celery's QoS counts them: a slot frees when its message is acknowledged, or
//! parked until its ETA); each message is handled by
//! its own tokio task that waits for its ETA, then for one of `concurrency` run
//! slots, runs the task in a fresh sandbox instance and stores the outcome. A
//! long task never blocks the others: running guests yield to the runtime at
//! every epoch tick.
//!
//! Acknowledgement follows Celery: when the task starts (default) or after its
//! result is stored (`task_acks_late`), through the delivery's
//! [`Acker`](crate::broker::Acker). Everything else about acknowledgements is
//! the transport's: on Redis and SQLite it refreshes the records of messages
//! this worker holds, so no restore sweep — ours or a Python worker's — puts
//! back a message that is still being worked on, and if the worker dies, the
//! refresh stops and the message is restored after the visibility timeout.
//!
//! Shutdown: the first SIGTERM/SIGINT is a warm shutdown (stop consuming, put
//! back prefetched messages that have not started, let running tasks finish
//! within a bound); a second one is a cold shutdown (running tasks are
//! stopped and their messages put back on their queues — requeued when acks
//! are late, re-sent when the message was acknowledged as the task started,
//! where Celery loses it); a third exits at once. Either way the broker
//! connections are closed last ([`Transport::close`](crate::broker::Transport::close):
//! AMQP's `connection.close`), after what the finished tasks queued is written.
//!
//! Around the event loops, on the main runtime, where the transport has
//! fanout: the pidbox node (`control`: `celery inspect`/`control`), the
//! event dispatcher (`events`: worker heartbeats, `-E` task events), both
//! reading `state` (what each request is doing, revoked ids, the Lamport
//! clock, run-time limits), which `statedb` keeps across restarts (`-S`);
//! the `/metrics` endpoint (`metrics`) and hot deploy of the task
//! directory (`deploy`).

mod banner;
mod builtins;
pub mod canvas;
mod control;
mod deploy;
mod events;
mod listing;
mod metrics;
mod rate;
mod request;
mod retries;
mod state;
mod statedb;
#[cfg(test)]
mod tests;

pub use listing::task_listing;
pub use retries::annotation_over;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use crate::backend::{Backend, BackendError, Reply, ResultEncoding};
use crate::batch;
use crate::broker::{Broker, BrokerError, Consumer};
use crate::config::Settings;
use crate::connection::retry;
use crate::connection::url::mask_password;
use crate::protocol::auth::Signer;
use crate::protocol::{AcceptContent, Serializer};
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::security;

/// How long a warm shutdown waits for running tasks before giving up.
const WARM_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a cold shutdown waits for running tasks to give their messages back.
const COLD_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How many scheduler ticks the consumer gives a task received while idle
/// before fetching again: one to run it, one for the result batcher to
/// collect it, one for the connection to write it.
const IDLE_RESULT_TICKS: usize = 3;

/// Most finished tasks whose results may be waiting to be written at once.
const RESULT_BACKLOG: usize = 1024;

/// The Celery-level log line for a worker coming up, which tools wait for.
pub const READY_LINE: &str = "ready.";

/// How long start-up waits for components to load before it goes on and
/// serves what is ready (the rest is served as each finishes compiling).
const STARTUP_LOAD_WAIT: Duration = Duration::from_secs(2);

/// What the worker was asked to do.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Effective settings (file, environment and command line merged).
    pub settings: Settings,
    /// Task components directory or file.
    pub app: PathBuf,
    /// Queues to consume (default: `task_default_queue`).
    pub queues: Vec<String>,
    /// Queues not to consume (`-X`): also keeps tenants' own queues out.
    pub exclude_queues: Vec<String>,
    /// Node name, e.g. `celeriac@host`.
    pub hostname: String,
    /// Print the start-up banner (`-q` turns it off, as in Celery).
    pub banner: bool,
    /// Purge the consumed queues before consuming (`--purge`).
    pub purge: bool,
    /// Keep revoked ids across restarts in this file (`-S/--statedb`).
    pub statedb: Option<PathBuf>,
    /// Celery's worker features that travel as events (`--without-gossip`, ...).
    pub features: Features,
}

/// The worker features Celery's command line turns off or tunes
/// (`--without-gossip`, `--without-mingle`, `--without-heartbeat`,
/// `--heartbeat-interval`). They all travel as events over a fanout exchange;
/// the worker records them here for the events machinery to honour.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Subscribe to other workers' events (gossip).
    pub gossip: bool,
    /// Ask other workers for their state at start-up (mingle).
    pub mingle: bool,
    /// Send `worker-heartbeat` events.
    pub heartbeat: bool,
    /// Seconds between heartbeats (`None`: Celery's default, 2 s).
    pub heartbeat_interval: Option<u32>,
}

impl Default for Features {
    fn default() -> Self {
        Features { gossip: true, mingle: true, heartbeat: true, heartbeat_interval: None }
    }
}

/// Shutdown phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Consuming and running.
    Running,
    /// Warm shutdown: no new work, running tasks finish.
    Warm,
    /// Cold shutdown: exit now.
    Cold,
}

/// State shared by the consumer loop and every message handler.
pub(crate) struct Shared {
    pub sandbox: Arc<Sandbox>,
    pub broker: Broker,
    pub backend: Option<Backend>,
    pub settings: Settings,
    pub accept: AcceptContent,
    /// Signs the tasks the worker sends (`task_serializer = "auth"`).
    pub signer: Option<Arc<dyn Signer>>,
    pub hostname: String,
    /// Run slots, shared by every event loop: at most `concurrency` tasks run
    /// at once in the whole worker. Shared so that messages one loop holds
    /// while its own call is stuck (sleeping or spinning until its time limit)
    /// run in any free slot, on that loop, interleaved with the stuck call
    /// (a running guest yields at every epoch tick), instead of waiting behind it.
    pub run_slots: Arc<Semaphore>,
    /// Rate-limit token buckets, shared by every event loop (the limit is per worker).
    pub rate_limits: Arc<rate::RateLimits>,
    /// Tasks that ran and are waiting for their result to be written. Bounds
    /// memory when the result backend is slower than the tasks.
    pub backlog: Arc<Semaphore>,
    /// Task states, written in batches (`None` when results are disabled).
    pub results: Option<batch::Batcher<Reply>>,
    /// Current shutdown phase.
    pub phase: watch::Receiver<Phase>,
    /// What the worker holds and did (remote control, events).
    pub state: Arc<state::WorkerState>,
    /// The queues to consume; `add_consumer`/`cancel_consumer` change them.
    pub queues: watch::Receiver<Vec<String>>,
}

impl Shared {
    /// How the tasks this worker sends are routed (`task_routes`, declared queues).
    pub(crate) fn router(&self) -> canvas::Router<'_> {
        canvas::Router::new(&self.settings, Some(&self.sandbox))
    }

    /// The state of one event loop drawing on the worker's `run_slots`; spawns
    /// the result batcher on the current runtime.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sandbox: Arc<Sandbox>,
        broker: Broker,
        backend: Option<Backend>,
        settings: Settings,
        accept: AcceptContent,
        signer: Option<Arc<dyn Signer>>,
        hostname: String,
        run_slots: Arc<Semaphore>,
        rate_limits: Arc<rate::RateLimits>,
        phase: watch::Receiver<Phase>,
        state: Arc<state::WorkerState>,
        queues: watch::Receiver<Vec<String>>,
    ) -> Shared {
        let results = backend.clone().map(|b| {
            batch::Batcher::spawn(None, move |replies: Vec<Reply>| {
                let b = b.clone();
                async move {
                    retry("store task states", || b.store_many(&replies)).await;
                }
            })
        });
        Shared {
            sandbox,
            broker,
            backend,
            settings,
            accept,
            signer,
            hostname,
            run_slots,
            rate_limits,
            backlog: Arc::new(Semaphore::new(RESULT_BACKLOG)),
            results,
            phase,
            state,
            queues,
        }
    }

    /// The tenant `task` belongs to: the directory of the component serving it.
    pub fn tenant_of(&self, task: &str) -> Option<String> {
        self.sandbox.task(task)?.tenant().map(str::to_string)
    }

    /// The configured annotation of `task`, its tenant's defaults included.
    pub fn annotation(&self, task: &str) -> crate::config::Annotation {
        annotation_of(&self.settings, &self.sandbox, task)
    }

    /// Whether a warm or cold shutdown has begun.
    pub fn stopping(&self) -> bool {
        *self.phase.borrow() != Phase::Running
    }
}

/// The configured annotation of `task` on a worker serving `sandbox`: the
/// `"*"` entry, its tenant's defaults, then its own.
pub(crate) fn annotation_of(settings: &Settings, sandbox: &Sandbox, task: &str) -> crate::config::Annotation {
    settings.annotation_in(task, sandbox.task(task).as_deref().and_then(crate::sandbox::TaskEntry::tenant))
}

/// A broker or backend error that retrying may cure (the server is down or
/// restarting), as opposed to a configuration mistake.
pub(crate) trait ConnectionFailure: std::fmt::Display {
    /// Whether the server could not be reached or refused a command.
    fn is_connection_error(&self) -> bool;
}

impl ConnectionFailure for BrokerError {
    fn is_connection_error(&self) -> bool {
        BrokerError::is_connection_error(self)
    }
}

impl ConnectionFailure for BackendError {
    fn is_connection_error(&self) -> bool {
        BackendError::is_connection_error(self)
    }
}

/// Start a worker and run it until shutdown.
pub async fn run(opts: WorkerOptions) -> anyhow::Result<()> {
    let mut settings = opts.settings.clone();
    settings.tenants = crate::config::Tenants::load(&opts.app)?;
    for w in settings.warnings() {
        tracing::warn!("{w}");
    }
    let broker_url = settings.effective_broker_url();
    let result_serializer = match settings.result_serializer.as_str() {
        // Signed JSON (see `security`, below).
        "auth" => Serializer::Json,
        other => Serializer::from_name(other)
            .ok_or_else(|| anyhow::anyhow!("unsupported result_serializer {other:?}: use json, msgpack or auth"))?,
    };
    let mut accept = AcceptContent::new(settings.accept_content.iter().map(String::as_str))
        .with_limits(settings.message_limits.limits());
    let security = security::Security::from_settings(&settings)?;
    if accept.wants_auth() {
        if settings.accept_content != ["auth"] || settings.task_serializer != "auth" {
            // Celery's setup_security refuses the same (SETTING_MISSING).
            anyhow::bail!(
                "message signing needs task_serializer = \"auth\" and accept_content = [\"auth\"] \
                 (there is no point in signing messages if unsigned ones are accepted too)"
            );
        }
        if let Some(store) = &security.verifier {
            let ids: Vec<&str> = store.ids().collect();
            tracing::info!("Message signing: only tasks signed by one of {ids:?} are accepted");
            accept = accept.with_verifier(store.clone());
        }
    }
    let signer: Option<Arc<dyn Signer>> = match &security.signer {
        Some(s) if settings.task_serializer == "auth" => Some(s.clone()),
        _ => None,
    };
    let result_encoding = ResultEncoding {
        serializer: result_serializer,
        signer: match &security.signer {
            Some(s) if settings.result_serializer == "auth" => Some(s.clone() as Arc<dyn Signer>),
            _ => None,
        },
    };

    let cwd = std::env::current_dir()?;
    crate::sandbox::loader::check_app_dir(&opts.app, &cwd)?;
    let sandbox_config =
        SandboxConfig { compiler: crate::sandbox::Compiler::this_executable(), ..settings.sandbox_config() };
    let sandbox = Arc::new(Sandbox::new(sandbox_config)?);
    // Components load in the background, each served once ready; start-up
    // waits a moment so the banner lists what is quick to load (cached or
    // small), never for a slow or hostile compile.
    let loading = sandbox.spawn_load(&opts.app);
    if !sandbox.wait_loaded(STARTUP_LOAD_WAIT).await {
        tracing::warn!(
            "still compiling {}: their tasks are served when ready (messages for them wait)",
            sandbox.loading().join(", ")
        );
    }
    if sandbox.tasks().is_empty() && sandbox.loading().is_empty() {
        anyhow::bail!("no task could be loaded from {}", opts.app.display());
    }
    // Hot deploy: components added, replaced or removed under the directory are picked up.
    let _hot_deploy = if opts.app.is_dir() {
        deploy::watch(sandbox.clone(), opts.app.clone(), settings.tenants.clone())
            .inspect_err(|e| tracing::error!("hot deploy is off: cannot watch {}: {e}", opts.app.display()))
            .ok()
    } else {
        None
    };
    tokio::spawn({
        let (sandbox, app) = (sandbox.clone(), opts.app.clone());
        async move {
            let _ = loading.await;
            if sandbox.tasks().is_empty() {
                tracing::error!(
                    "no task could be loaded from {}; every message will fail as unregistered",
                    app.display()
                );
            }
        }
    });

    // The main connections: queue declaration and the transport's housekeeping.
    let (s, name) = (&settings, &opts.hostname);
    let broker =
        connect_with_retry("broker", &broker_url, || Broker::connect_with_settings(&broker_url, s, name)).await?;
    let backend_url = settings.effective_result_backend();
    if let Some(url) = &backend_url {
        let expires = settings.result_expires.0;
        connect_with_retry("result backend", url, || {
            Backend::connect(url, expires, result_encoding.clone(), Some(&broker))
        })
        .await?;
    }

    let concurrency = settings.concurrency();
    let mut queues =
        if opts.queues.is_empty() { vec![settings.task_default_queue.clone()] } else { opts.queues.clone() };
    // The worker's own queues, never paused for a tenant.
    let worker_queues = queues.clone();
    // Each tenant's own queue is consumed too, taking turns with the others (fair queues),
    // unless `-X` names it.
    for q in settings.tenants.queues() {
        if !queues.contains(&q) && !opts.exclude_queues.contains(&q) {
            queues.push(q);
        }
    }
    for (name, t) in &settings.tenants.0 {
        tracing::info!("tenant {name}: {}", t.summary());
    }
    if opts.banner {
        print!("{}", banner::banner(&opts, &sandbox, &settings, &queues, concurrency));
    }
    for w in settings.unconsumed_routes(&queues) {
        tracing::warn!("{w}");
    }
    broker.declare(&queues).await?;
    if opts.purge {
        purge(&broker, &queues).await?;
    }
    let unsupported = broker.capabilities().unsupported_features();
    if !unsupported.is_empty() {
        tracing::warn!("Not available on the {} transport: {}", broker.name(), unsupported.join(", "));
    }
    if broker.shared_rate_limits().is_none()
        && settings.task_annotations.values().any(|a| a.cluster_rate_limit.is_some())
    {
        tracing::warn!(
            "cluster_rate_limit needs a broker every worker shares a bucket on (Redis); the {} transport has none: \
             only the per-worker rate_limit applies",
            broker.name()
        );
    }
    tracing::info!("Connected to {}", mask_password(&broker_url));
    // Runs until dropped, at the end of this function.
    let _housekeeping = broker.start_housekeeping().await;

    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let phase_tx = Arc::new(phase_tx);
    let queues_tx = Arc::new(watch::Sender::new(queues.clone()));
    let state = Arc::new(state::WorkerState::new(&opts.hostname, settings.worker_send_task_events));
    if let Some(db) = &opts.statedb {
        let n = statedb::load(db, &state)?;
        tracing::info!("state database {}: {n} revoked task id(s) restored", db.display());
    }
    if let Some(addr) = &settings.worker_metrics_address {
        metrics::serve(addr, state.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    }
    let loops = event_loops(concurrency);
    let mut threads = Vec::with_capacity(loops as usize);
    let run_slots = Arc::new(Semaphore::new(concurrency.max(1) as usize));
    // A tenant's own queue is paused while too many of its messages wait (worker/rate.rs), unless the
    // broker bounds each queue's deliveries itself.
    let mut rate_limits = rate::RateLimits::new(&settings.tenants);
    if !broker.capabilities().per_queue_prefetch {
        rate_limits = rate_limits.with_flow_control(queues_tx.clone(), &worker_queues);
    }
    let rate_limits = Arc::new(rate_limits);
    // Remote control and events, where the transport has fanout.
    let heartbeat = Arc::new(tokio::sync::Notify::new());
    let mut dispatcher = None;
    let mut pidbox = None;
    if let Some(fanout) = broker.fanout() {
        dispatcher =
            Some(events::Dispatcher::start(broker.clone(), state.clone(), heartbeat.clone(), &opts.features).await);
        match fanout.listen(&opts.hostname).await {
            Ok(mailbox) => {
                let panel = control::Panel {
                    state: state.clone(),
                    broker: broker.clone(),
                    sandbox: sandbox.clone(),
                    settings: settings.clone(),
                    queues: queues_tx.clone(),
                    broker_url: broker_url.clone(),
                    concurrency,
                    run_slots: run_slots.clone(),
                    rate_limits: rate_limits.clone(),
                    phase: phase_tx.clone(),
                    heartbeat: heartbeat.clone(),
                    statedb: opts.statedb.clone(),
                };
                pidbox = Some(tokio::spawn(control::serve(panel, mailbox, phase_rx.clone())));
                if opts.features.mingle {
                    // In the background: serving does not wait for the other nodes.
                    tokio::spawn(control::mingle(broker.clone(), state.clone()));
                }
            }
            Err(e) => tracing::error!("remote control is unavailable: cannot listen on the pidbox: {e}"),
        }
    }
    for i in 0..loops {
        let ctx = LoopContext {
            index: i,
            slots: concurrency / loops + u32::from(i < concurrency % loops),
            run_slots: run_slots.clone(),
            rate_limits: rate_limits.clone(),
            sandbox: sandbox.clone(),
            settings: settings.clone(),
            accept: accept.clone(),
            signer: signer.clone(),
            result_encoding: result_encoding.clone(),
            broker: broker.clone(),
            broker_url: broker_url.clone(),
            backend_url: backend_url.clone(),
            queues: queues_tx.subscribe(),
            hostname: opts.hostname.clone(),
            phase: phase_rx.clone(),
            state: state.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("celeriac-loop-{i}"))
            .spawn(move || event_loop(ctx))
            .map_err(|e| anyhow::anyhow!("cannot start event loop thread: {e}"))?;
        threads.push(thread);
    }
    tracing::info!("{} {READY_LINE}", opts.hostname);

    tokio::spawn(signals(phase_tx.clone()));
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("an event loop panicked"))))
            .collect::<Vec<_>>()
    })
    .await?;
    // Remote control stops with the warm shutdown; worker-offline goes last.
    if let Some(p) = pidbox {
        let _ = p.await;
    }
    if let Some(d) = dispatcher {
        d.stop().await;
    }
    if let Some(db) = &opts.statedb
        && let Err(e) = statedb::save(db, &state)
    {
        tracing::error!("{e}");
    }
    // The event loops have closed their own connections; this one's declarations are long done.
    broker.close().await;
    joined.into_iter().collect()
}

/// `--purge`: erase the consumed queues before consuming, with Celery's line.
async fn purge(broker: &Broker, queues: &[String]) -> anyhow::Result<()> {
    let mut count = 0;
    for q in queues {
        count += broker.purge(q).await?;
    }
    if count > 0 {
        let what = if count == 1 { "message" } else { "messages" };
        println!("purge: Erased {count} {what} from the queue.\n");
    }
    Ok(())
}

/// How many event loops to run: one per core, but never more than the
/// concurrency (each loop runs at least one task at a time).
fn event_loops(concurrency: u32) -> u32 {
    let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    concurrency.clamp(1, cores.max(1))
}

/// Everything one event loop needs.
struct LoopContext {
    index: u32,
    slots: u32,
    run_slots: Arc<Semaphore>,
    rate_limits: Arc<rate::RateLimits>,
    sandbox: Arc<Sandbox>,
    settings: Settings,
    accept: AcceptContent,
    signer: Option<Arc<dyn Signer>>,
    result_encoding: ResultEncoding,
    /// The process's main broker connection; the loop opens a channel of it.
    broker: Broker,
    broker_url: String,
    backend_url: Option<String>,
    queues: watch::Receiver<Vec<String>>,
    hostname: String,
    phase: watch::Receiver<Phase>,
    state: Arc<state::WorkerState>,
}

/// One single-threaded event loop, on its own thread: its own connections,
/// consumer, batchers and share of the concurrency (like one of Celery's
/// prefork processes, without cross-thread wake-ups on the hot path).
fn event_loop(ctx: LoopContext) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let url = &ctx.broker_url;
        let main = &ctx.broker;
        let broker = connect_with_retry("broker", url, || main.open_channel()).await?;
        let backend = match &ctx.backend_url {
            None => None,
            Some(url) => {
                let (expires, enc) = (ctx.settings.result_expires.0, &ctx.result_encoding);
                let b = &broker;
                Some(
                    connect_with_retry("result backend", url, || Backend::connect(url, expires, enc.clone(), Some(b)))
                        .await?,
                )
            }
        };
        let prefetch = prefetch_window(&ctx.settings, ctx.slots);
        let queues = ctx.queues.borrow().clone();
        let consumer = connect_with_retry("broker", url, || broker.consume(&queues, prefetch)).await?;
        let shared = Arc::new(Shared::new(
            ctx.sandbox,
            broker,
            backend,
            ctx.settings,
            ctx.accept,
            ctx.signer,
            ctx.hostname,
            ctx.run_slots,
            ctx.rate_limits,
            ctx.phase,
            ctx.state,
            ctx.queues,
        ));
        tracing::debug!("event loop {} consuming with {} run slots", ctx.index, ctx.slots);
        let (handlers, consumer) = consume(shared.clone(), consumer, ctx.slots).await;
        shutdown(shared, handlers, consumer).await;
        Ok(())
    })
}

/// Connect, retrying with back-off while the server is unreachable (it may
/// be starting up), for up to a minute.
async fn connect_with_retry<T, F, Fut, E>(what: &str, url: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: ConnectionFailure,
{
    let mut delay = Duration::from_millis(200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() < deadline && e.is_connection_error() => {
                tracing::error!(
                    "Cannot connect to {what} {}: {e}. Trying again in {:.1} seconds...",
                    mask_password(url),
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => anyhow::bail!("cannot connect to {what} {}: {e}", mask_password(url)),
        }
    }
}

/// Turn SIGTERM/SIGINT into shutdown phases, saying what each does in
/// Celery's words: the first is a warm shutdown, the second a cold one
/// (running tasks are stopped and their messages put back, see
/// `request::cancelled_by_cold_shutdown`), a third exits at once.
async fn signals(phase: Arc<watch::Sender<Phase>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the worker with SIGKILL");
        return;
    };
    for received in 1u32.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        match received {
            1 => {
                tracing::warn!("{WARM_SHUTDOWN_HINT}");
                tracing::warn!("worker: Warm shutdown (MainProcess)");
                let _ = phase.send(Phase::Warm);
            }
            2 => {
                tracing::warn!("worker: Cold shutdown (MainProcess)");
                tracing::warn!("{COLD_SHUTDOWN_HINT}");
                let _ = phase.send(Phase::Cold);
            }
            _ => {
                tracing::error!("worker: Hard shutdown: exiting now; running tasks' messages are not put back");
                std::process::exit(1);
            }
        }
    }
}

/// Celery 5.7's line on the first Ctrl+C (here on the first SIGTERM too: a
/// second one of either is a cold shutdown).
pub const WARM_SHUTDOWN_HINT: &str =
    "worker: Hitting Ctrl+C again will initiate cold shutdown, terminating all running tasks!";

/// What a cold shutdown does to running tasks, said before it does it.
pub const COLD_SHUTDOWN_HINT: &str = "worker: Terminating running tasks; their messages go back to their queues \
     (requeued with task_acks_late, else re-sent), so they run again. Hitting Ctrl+C again exits at once.";

/// How many unacknowledged messages a loop with `concurrency` run slots may
/// hold: `worker_prefetch_multiplier` × concurrency, as Celery's QoS counts.
fn prefetch_window(settings: &Settings, concurrency: u32) -> usize {
    (settings.worker_prefetch_multiplier.max(1) * concurrency).max(concurrency) as usize
}

/// The consumer loop: receive while there is prefetch room, until shutdown.
/// Returns the set of running handler tasks, and the consumer (whose acks
/// the shutdown waits for).
async fn consume(
    shared: Arc<Shared>,
    mut consumer: Box<dyn Consumer>,
    concurrency: u32,
) -> (tokio::task::JoinSet<()>, Box<dyn Consumer>) {
    let prefetch = prefetch_window(&shared.settings, concurrency);
    let room = Arc::new(Semaphore::new(prefetch));
    let mut handlers = tokio::task::JoinSet::new();
    let mut backoff = Duration::from_millis(100);
    let mut phase = shared.phase.clone();
    let mut queues = shared.queues.clone();
    // The queues this consumer was opened on (`add_consumer`/`cancel_consumer` change them).
    queues.mark_unchanged();
    while !shared.stopping() {
        // Reap finished handlers so the set does not grow.
        while handlers.try_join_next().is_some() {}
        if queues.has_changed().unwrap_or(false) {
            let wanted = queues.borrow_and_update().clone();
            consumer = Box::pin(switch_queues(&shared, consumer, &wanted, prefetch)).await;
        }
        if queues.borrow().is_empty() {
            // Every queue cancelled: consume nothing until one is added.
            tokio::select! {
                _ = queues.changed() => {}
                _ = phase.changed() => {}
            }
            continue;
        }
        let first = tokio::select! {
            p = room.clone().acquire_owned() => p,
            changed = phase.changed() => {
                if changed.is_err() {
                    // No signal handling (the sender is gone): the phase never changes again.
                    phase = watch::channel(Phase::Running).1;
                }
                continue;
            }
        };
        let Ok(first) = first else { break };
        // Let handlers that are about to free their slots run first, so one
        // fetch takes many messages under load (one round trip, not one each).
        tokio::task::yield_now().await;
        let mut permits = vec![first];
        while let Ok(p) = room.clone().try_acquire_owned() {
            permits.push(p);
        }
        // Not cancelled on shutdown: a fetch dropped mid-flight could lose a message.
        match consumer.fetch(permits.len()).await {
            Ok(deliveries) => {
                backoff = Duration::from_millis(100);
                // Taken by a blocking wait on empty queues: the worker was idle.
                let idle = deliveries.iter().any(|d| d.idle);
                for d in deliveries {
                    let Some(permit) = permits.pop() else { break };
                    let s = shared.clone();
                    // Boxed: the handler's state is kilobytes, and tokio would
                    // otherwise copy it several times on its way into the task.
                    handlers.spawn(Box::pin(async move {
                        // The handler gives the prefetch slot back when the message is
                        // acknowledged (or parked for its ETA), as Celery's QoS does.
                        let mut fallback = d.acker.duplicate();
                        let run = std::panic::AssertUnwindSafe(request::handle(&s, d, permit));
                        if futures_util::FutureExt::catch_unwind(run).await.is_err() {
                            // A bug, not bad input: drop the message rather than let
                            // it come back forever.
                            tracing::error!("internal error while handling a message; it has been discarded");
                            fallback.ack();
                        }
                    }));
                }
                if idle {
                    // The worker was idle and a client is probably waiting on this
                    // task: let it run and its result reach the backend's socket
                    // before the next fetch goes out (ahead of it, Redis would run
                    // the fetch first, and the client's first look for the result
                    // would more often find nothing and wait for the publish).
                    for _ in 0..IDLE_RESULT_TICKS {
                        tokio::task::yield_now().await;
                    }
                }
            }
            Err(e) => {
                shared.state.metrics.broker_error();
                tracing::error!(
                    "consumer: Cannot connect to the broker: {e}. Trying again in {:.2} seconds...",
                    backoff.as_secs_f64()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(8));
            }
        }
    }
    (handlers, consumer)
}

/// A consumer on the queues `wanted` now, replacing `consumer`, which is
/// retired: it takes nothing new, hands out what it had received first, and
/// keeps acknowledging what it delivered (flushing the new one flushes it
/// too). On failure the old consumer goes on.
async fn switch_queues(
    shared: &Shared,
    consumer: Box<dyn Consumer>,
    wanted: &[String],
    prefetch: usize,
) -> Box<dyn Consumer> {
    if wanted.is_empty() {
        return consumer;
    }
    match shared.broker.consume(wanted, prefetch).await {
        Ok(current) => {
            let mut old = consumer;
            old.retire();
            Box::new(Replaced { current, old })
        }
        Err(e) => {
            tracing::error!("cannot consume {}: {e}; still consuming the previous queues", wanted.join(", "));
            consumer
        }
    }
}

/// A consumer that replaced another one when the queues changed.
struct Replaced {
    current: Box<dyn Consumer>,
    old: Box<dyn Consumer>,
}

impl Consumer for Replaced {
    fn fetch(&mut self, max: usize) -> crate::broker::BoxFuture<'_, Result<Vec<crate::broker::Delivery>, BrokerError>> {
        Box::pin(async move {
            // What the retired consumer had received first (it takes nothing new).
            if !self.old.drained() {
                let got = self.old.fetch(max).await?;
                if !got.is_empty() {
                    return Ok(got);
                }
            }
            self.current.fetch(max).await
        })
    }

    fn retire(&mut self) {
        self.current.retire();
        self.old.retire();
    }

    fn drained(&self) -> bool {
        self.old.drained() && self.current.drained()
    }

    fn flush(&self) -> crate::broker::BoxFuture<'_, ()> {
        let (old, current) = (self.old.flush(), self.current.flush());
        Box::pin(async move {
            old.await;
            current.await;
        })
    }
}

/// Wait for running tasks (bounded), unless a cold shutdown cuts it short.
async fn shutdown(shared: Arc<Shared>, mut handlers: tokio::task::JoinSet<()>, consumer: Box<dyn Consumer>) {
    let mut phase = shared.phase.clone();
    let wait_all = async { while handlers.join_next().await.is_some() {} };
    let cold = async {
        while *phase.borrow_and_update() != Phase::Cold {
            if phase.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let finish = async {
        wait_all.await;
        // Everything the finished tasks queued must reach the servers before we exit.
        if let Some(r) = &shared.results {
            r.barrier().await;
        }
        consumer.flush().await;
    };
    let cut_short = tokio::select! {
        _ = finish => false,
        _ = cold => true,
        _ = tokio::time::sleep(WARM_SHUTDOWN_TIMEOUT) => {
            tracing::warn!(
                "warm shutdown timed out after {WARM_SHUTDOWN_TIMEOUT:?}; running tasks are left, their messages \
                 unacknowledged (the broker gives them back: AMQP at once, Redis/SQLite after visibility_timeout)"
            );
            false
        }
    };
    if cut_short {
        // Running tasks stop at once and give their messages back (request.rs):
        // wait for that, and for acknowledgements already queued, within a bound.
        let settle = async {
            while handlers.join_next().await.is_some() {}
            consumer.flush().await;
        };
        if tokio::time::timeout(COLD_SHUTDOWN_TIMEOUT, settle).await.is_err() {
            tracing::warn!(
                "cold shutdown: some messages could not be given back within {COLD_SHUTDOWN_TIMEOUT:?}; the broker \
                 restores them (AMQP at once, Redis/SQLite after visibility_timeout)"
            );
        }
    }
    // Last: acknowledgements and results are written (or abandoned), so the
    // connections close cleanly rather than drop (unacknowledged messages go back either way).
    shared.broker.close().await;
}
