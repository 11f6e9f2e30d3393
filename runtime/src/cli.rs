//! The `celeriac` command line: `worker`, `run`, `tasks`, `call`, `result`,
//! `check-config`.
//!
//! This is the edge of the program: errors become `anyhow` messages and exit
//! codes here, and nowhere deeper.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::Settings;
use crate::protocol::result::ResultMeta;
use crate::protocol::{NewTask, Serializer};
use crate::sandbox::{ByteSize, Invocation, LimitsOverride, Outcome, Request, Sandbox, SandboxConfig};

/// Celeriac: a Celery-compatible worker that runs tasks as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "celeriac", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a worker that serves Celery task messages from the broker.
    Worker(WorkerArgs),
    /// Send a task message exactly as a Python Celery client would, and optionally wait for its result.
    Call(CallArgs),
    /// Print the stored result of a task.
    Result(ResultArgs),
    /// Validate a config file and print the effective settings.
    CheckConfig(CheckConfigArgs),
    /// Run one task once, locally, and print its JSON result.
    Run(RunArgs),
    /// List the tasks a directory of components serves, and the files that failed to load.
    Tasks(TasksArgs),
}

/// Where the task components are, and how to sandbox them.
#[derive(Debug, Args, Clone)]
pub struct SandboxArgs {
    /// Directory of task components (or a single .wasm file).
    #[arg(short = 'A', long = "app", value_name = "DIR|FILE.wasm")]
    pub app: PathBuf,
    /// Fuel (instruction budget) per task call.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory cap per task call, e.g. 64MiB.
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<ByteSize>,
    /// Wall-clock limit per task call, in seconds.
    #[arg(long, value_name = "SECS")]
    pub time_limit: Option<f64>,
    /// Wasm stack size, e.g. 512KiB.
    #[arg(long, value_name = "SIZE")]
    pub max_stack: Option<ByteSize>,
    /// Directory for compiled components (default: ~/.cache/celeriac).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write compiled components on disk.
    #[arg(long)]
    pub no_cache: bool,
}

impl SandboxArgs {
    /// Apply these options on top of a sandbox configuration.
    pub fn apply(&self, cfg: &mut SandboxConfig) {
        let o = LimitsOverride {
            fuel: self.fuel,
            max_memory: self.max_memory,
            time_limit: self.time_limit,
            max_stack: self.max_stack,
            ..Default::default()
        };
        cfg.limits = cfg.limits.with(&o);
        if let Some(d) = &self.cache_dir {
            cfg.cache_dir = Some(d.clone());
        }
        if self.no_cache {
            cfg.cache_dir = None;
        }
    }
}

/// A task name and its arguments, as `run` and `call` take them.
#[derive(Debug, Args)]
struct TaskCall {
    /// The task name, e.g. tasks.add.
    task: String,
    /// Positional arguments, each a JSON value: 4, '"a"', '[1,2]'.
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// Keyword arguments as a JSON object.
    #[arg(long, value_name = "JSON")]
    kwargs: Option<String>,
}

impl TaskCall {
    /// The arguments parsed as JSON.
    fn parse(&self) -> anyhow::Result<(Vec<serde_json::Value>, serde_json::Map<String, serde_json::Value>)> {
        Ok((parse_json_args(&self.args)?, parse_json_kwargs(self.kwargs.as_deref())?))
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    call: TaskCall,
    /// Also print the call's wall time, fuel and peak memory (to stderr).
    #[arg(long)]
    report: bool,
    /// Log level (DEBUG, INFO, WARNING, ERROR).
    #[arg(short = 'l', long, default_value = "WARNING")]
    loglevel: String,
}

/// Where the broker and result backend are (overrides config and environment).
#[derive(Debug, Args, Clone)]
struct ConnectionArgs {
    /// Broker URL, e.g. redis://localhost:6379/0.
    #[arg(short = 'b', long)]
    broker: Option<String>,
    /// Result backend URL, e.g. redis://localhost:6379/1.
    #[arg(long)]
    result_backend: Option<String>,
    /// TOML config file with Celery setting names (also $CELERIAC_CONFIG).
    #[arg(long, env = "CELERIAC_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConnectionArgs {
    /// Settings: defaults ← config file ← CELERIAC_* environment ← these options.
    fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings::load(self.config.as_deref())?;
        if let Some(b) = &self.broker {
            s.broker_url = Some(b.clone());
        }
        if let Some(r) = &self.result_backend {
            s.result_backend = Some(r.clone());
        }
        Ok(s)
    }
}

#[derive(Debug, Args)]
struct WorkerArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    conn: ConnectionArgs,
    /// Number of tasks run at once (default: number of CPUs).
    #[arg(short = 'c', long)]
    concurrency: Option<u32>,
    /// Queues to consume, comma-separated (default: task_default_queue).
    #[arg(short = 'Q', long, value_delimiter = ',')]
    queues: Vec<String>,
    /// Node name; %h is replaced by the host name (default: celeriac@%h).
    #[arg(short = 'n', long)]
    hostname: Option<String>,
    /// Log level (DEBUG, INFO, WARNING, ERROR, CRITICAL).
    #[arg(short = 'l', long, default_value = "WARNING")]
    loglevel: String,
    /// Messages prefetched per concurrency slot.
    #[arg(long)]
    prefetch_multiplier: Option<u32>,
    /// Send task events (not implemented yet: reported at start-up).
    #[arg(short = 'E', long = "task-events")]
    task_events: bool,
}

#[derive(Debug, Args)]
struct CallArgs {
    #[command(flatten)]
    conn: ConnectionArgs,
    #[command(flatten)]
    call: TaskCall,
    /// Queue to send to (default: task_routes, else task_default_queue).
    #[arg(long)]
    queue: Option<String>,
    /// Run no earlier than this many seconds from now.
    #[arg(long, value_name = "SECS")]
    countdown: Option<f64>,
    /// Discard the task if not started within this many seconds.
    #[arg(long, value_name = "SECS")]
    expires: Option<f64>,
    /// Message priority (Redis: 0 is served first).
    #[arg(long)]
    priority: Option<u8>,
    /// Hard time limit in seconds.
    #[arg(long, value_name = "SECS")]
    time_limit: Option<f64>,
    /// Body serializer: json or msgpack (default: task_serializer).
    #[arg(long)]
    serializer: Option<String>,
    /// Ask the worker not to store a result.
    #[arg(long)]
    ignore_result: bool,
    /// Wait for the result and print it (the task id goes to stderr).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    timeout: f64,
}

#[derive(Debug, Args)]
struct ResultArgs {
    #[command(flatten)]
    conn: ConnectionArgs,
    /// The task id.
    task_id: String,
    /// Wait until the task is ready (SUCCESS, FAILURE, REVOKED), up to --timeout.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    timeout: f64,
}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    /// The config file (default: $CELERIAC_CONFIG; none means defaults and environment).
    #[arg(env = "CELERIAC_CONFIG")]
    file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TasksArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Log level (DEBUG, INFO, WARNING, ERROR).
    #[arg(short = 'l', long, default_value = "ERROR")]
    loglevel: String,
}

/// Entry point of the `celeriac` binary.
pub fn main() -> ExitCode {
    // TLS (rediss://) uses rustls with the ring provider; install it once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The worker re-executes itself to compile untrusted components under a
    // time and memory budget (sandbox::compile); not a user-facing command.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(crate::sandbox::compile::SUBCOMMAND) {
        return crate::sandbox::compile::child_main(&argv[2..]);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Worker(a) => worker(a),
        Command::Call(a) => call(a),
        Command::Result(a) => result(a),
        Command::CheckConfig(a) => check_config(a),
        Command::Run(a) => run(a),
        Command::Tasks(a) => tasks(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A multi-threaded tokio runtime for one command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// Parse `celeriac run`'s positional arguments, each one JSON value.
pub fn parse_json_args(args: &[String]) -> anyhow::Result<Vec<serde_json::Value>> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            serde_json::from_str(a).with_context(|| {
                format!("argument {} is not a JSON value: {a} (quote strings as JSON, e.g. '\"{a}\"')", i + 1)
            })
        })
        .collect()
}

/// Parse a `--kwargs` option: a JSON object.
pub fn parse_json_kwargs(kwargs: Option<&str>) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    match kwargs {
        None => Ok(serde_json::Map::new()),
        Some(k) => match serde_json::from_str(k).context("--kwargs is not valid JSON")? {
            serde_json::Value::Object(m) => Ok(m),
            other => bail!("--kwargs must be a JSON object, got {other}"),
        },
    }
}

async fn load_sandbox(args: &SandboxArgs, max_concurrent: u32) -> anyhow::Result<Sandbox> {
    let mut cfg = SandboxConfig {
        max_concurrent,
        compiler: crate::sandbox::Compiler::this_executable(),
        compile_progress: crate::sandbox::CompileProgress::Stderr,
        ..SandboxConfig::default()
    };
    args.apply(&mut cfg);
    crate::sandbox::loader::check_app_dir(&args.app, &std::env::current_dir()?)?;
    let sandbox = Sandbox::new(cfg)?;
    sandbox.load(&args.app).await;
    Ok(sandbox)
}

fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(&a.loglevel).map_err(anyhow::Error::msg)?;
    let (args, kwargs) = a.call.parse()?;
    let task = a.call.task.clone();
    runtime()?.block_on(async {
        let sandbox = load_sandbox(&a.sandbox, 1).await?;
        if sandbox.task(&task).is_none() {
            for e in sandbox.load_errors() {
                eprintln!("warning: {e}");
            }
            bail!("task {task} is not registered.\n{}", sandbox.not_registered_hint(&task));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let inv = Invocation {
            args: serde_json::Value::Array(args).to_string(),
            kwargs: serde_json::Value::Object(kwargs).to_string(),
            request: Request {
                id: id.clone(),
                name: task.clone(),
                root_id: Some(id),
                hostname: format!("celeriac@{}", host_name()),
                ..Request::default()
            },
            ..Invocation::default()
        };
        let span = crate::logging::task_span(&task, &inv.request.id);
        let res = tracing::Instrument::instrument(sandbox.call(&task, inv), span).await?;
        if a.report {
            eprintln!("{}", serde_json::json!({"report": res.report, "limits": res.limits}));
        }
        Ok(match res.outcome {
            Outcome::Success(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Outcome::Failure(f) => {
                eprint!("{}", f.traceback);
                ExitCode::FAILURE
            }
        })
    })
}

fn tasks(a: TasksArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(&a.loglevel).map_err(anyhow::Error::msg)?;
    runtime()?.block_on(async {
        let sandbox = load_sandbox(&a.sandbox, 1).await?;
        print!("{}", crate::worker::task_listing(&sandbox));
        Ok(if sandbox.load_errors().is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

/// This machine's host name, for node names like `celeriac@host`.
pub fn host_name() -> String {
    hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "localhost".into())
}

fn worker(a: WorkerArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(&a.loglevel).map_err(anyhow::Error::msg)?;
    let mut settings = a.conn.settings()?;
    if let Some(c) = a.concurrency {
        settings.worker_concurrency = Some(c);
    }
    if let Some(p) = a.prefetch_multiplier {
        settings.worker_prefetch_multiplier = p;
    }
    if a.task_events || settings.worker_send_task_events {
        tracing::warn!("task events (-E) are not implemented yet; no events will be sent");
    }
    // Sandbox options from the command line override the config's [sandbox] table.
    let mut sb = settings.sandbox_config();
    a.sandbox.apply(&mut sb);
    settings.sandbox.fuel = Some(sb.limits.fuel);
    settings.sandbox.max_memory = Some(ByteSize(sb.limits.max_memory));
    settings.sandbox.time_limit = Some(sb.limits.time_limit.as_secs_f64());
    settings.sandbox.max_stack = Some(ByteSize(sb.limits.max_stack));
    settings.sandbox.cache_dir = Some(sb.cache_dir.clone().unwrap_or_default());
    let hostname = a.hostname.as_deref().unwrap_or("celeriac@%h").replace("%h", &host_name());
    let opts = crate::worker::WorkerOptions { settings, app: a.sandbox.app.clone(), queues: a.queues, hostname };
    // The main runtime only handles signals and housekeeping; the worker runs
    // its own single-threaded event loops (see `worker`).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(crate::worker::run(opts))?;
    Ok(ExitCode::SUCCESS)
}

/// Connect to the result backend named by the settings (with the broker
/// connection, when there is one).
async fn result_backend(
    settings: &Settings,
    broker: Option<&crate::broker::Broker>,
) -> anyhow::Result<crate::backend::Backend> {
    let url = settings
        .effective_result_backend()
        .context("no result backend configured (use --result-backend or result_backend in the config)")?;
    let ser = Serializer::from_name(&settings.result_serializer).unwrap_or(Serializer::Json);
    Ok(crate::backend::Backend::connect(&url, settings.result_expires.0, ser, broker).await?)
}

/// Print a stored meta: the result JSON on stdout for SUCCESS, the traceback
/// on stderr for a failure, the state otherwise. Returns the exit code.
fn print_meta(meta: &ResultMeta) -> anyhow::Result<ExitCode> {
    let state = meta.status.as_str().to_string();
    Ok(match state.as_str() {
        "SUCCESS" => {
            println!("{}", meta.result);
            ExitCode::SUCCESS
        }
        "FAILURE" | "REVOKED" => {
            match (&meta.traceback, meta.exception()) {
                (Some(tb), _) => eprint!("{}{}", tb, if tb.ends_with('\n') { "" } else { "\n" }),
                (None, Some(exc)) => eprintln!("{}", exc.format_exception_only()),
                (None, None) => eprintln!("{state}: {}", meta.result),
            }
            ExitCode::FAILURE
        }
        _ => {
            println!("{state} {}", meta.result);
            ExitCode::from(3)
        }
    })
}

fn call(a: CallArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init("WARNING").map_err(anyhow::Error::msg)?;
    let settings = a.conn.settings()?;
    let (args, kwargs) = a.call.parse()?;
    let mut task = NewTask::new(a.call.task.clone(), args, kwargs);
    let route = settings.route(&a.call.task);
    let o = &mut task.options;
    // `--queue` overrides task_routes; else the route's exchange and key (on AMQP), or its queue.
    (o.exchange, o.queue) = match &a.queue {
        Some(q) => (String::new(), q.clone()),
        None => route.publish_target(&settings.task_default_queue, settings.exchange_routing()),
    };
    o.priority = a.priority.or(route.priority);
    let now = chrono::Utc::now();
    let after =
        |s: f64| crate::protocol::time::after_seconds(now, s).with_context(|| format!("{s} seconds is out of range"));
    o.eta = a.countdown.map(after).transpose()?;
    o.expires = a.expires.map(after).transpose()?;
    o.timelimit.hard = a.time_limit;
    o.ignore_result = a.ignore_result;
    let ser = a.serializer.as_deref().unwrap_or(&settings.task_serializer);
    o.serializer =
        Serializer::from_name(ser).with_context(|| format!("unsupported serializer {ser:?}: use json or msgpack"))?;
    let broker_url = settings.effective_broker_url();
    runtime()?.block_on(async {
        let broker = crate::broker::Broker::connect_with_settings(&broker_url, &settings, "celeriac call").await?;
        if broker.name() == "amqp" && task.options.exchange.is_empty() {
            // As a Celery client does: the queue exists before the task is published to it.
            broker.declare(std::slice::from_ref(&task.options.queue)).await?;
        }
        let encoded = task.encode()?;
        // Subscribe before publishing, as a Python client does, so a fast worker cannot be missed.
        let waiter =
            if a.wait { Some(result_backend(&settings, Some(&broker)).await?.waiter(&task.id).await?) } else { None };
        broker.publish(&task.options.queue, &encoded).await?;
        let outcome = match waiter {
            None => {
                println!("{}", task.id);
                Ok(ExitCode::SUCCESS)
            }
            Some(sub) => {
                eprintln!("{}", task.id);
                let timeout = std::time::Duration::from_secs_f64(a.timeout.max(0.0));
                match sub.wait(timeout).await {
                    Err(crate::backend::BackendError::Timeout(_)) => {
                        Err(anyhow::anyhow!(crate::hints::call_timed_out(&settings, &task.id, timeout)))
                    }
                    other => print_meta(&other?),
                }
            }
        };
        // AMQP: connection.close rather than a dropped socket.
        broker.close().await;
        outcome
    })
}

fn result(a: ResultArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init("WARNING").map_err(anyhow::Error::msg)?;
    let settings = a.conn.settings()?;
    runtime()?.block_on(async {
        let backend = result_backend(&settings, None).await?;
        let meta = if a.wait {
            backend.waiter(&a.task_id).await?.wait(std::time::Duration::from_secs_f64(a.timeout.max(0.0))).await?
        } else {
            match backend.get(&a.task_id).await? {
                Some(b) => b,
                None => {
                    println!("PENDING");
                    return Ok(ExitCode::from(3));
                }
            }
        };
        print_meta(&meta)
    })
}

fn check_config(a: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(a.file.as_deref())?;
    for w in settings.warnings() {
        eprintln!("warning: {w}");
    }
    print!("{}", toml::to_string_pretty(&settings).context("cannot print settings")?);
    eprintln!("{}: OK", a.file.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "settings".into()));
    Ok(ExitCode::SUCCESS)
}
