//! The `celeriac` command line, shaped like Celery 5's: `worker`, `call`,
//! `result`, `purge`, `report`, plus Celeriac's own `run`, `tasks`,
//! `check-config`, and `new`/`build` for task projects in any language.
//!
//! As with `celery`, the options that say which app and which servers
//! (`-A`, `-b/--broker`, `--result-backend`, `--config`, `--workdir`, `-q`,
//! `-C`) go before the subcommand (`celeriac -A target/tasks worker -l INFO`);
//! they are also accepted after it. The Celery commands this binary does not
//! have are named in `--help` and, when typed, answered with where to go
//! ([`hints`]).
//!
//! This is the edge of the program: errors become `anyhow` messages and exit
//! codes here, and nowhere deeper.

mod build;
mod call;
mod daemon;
mod hints;
mod new;
mod purge;
mod remote;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::Settings;
use crate::protocol::Serializer;
use crate::protocol::result::ResultMeta;
use crate::sandbox::{ByteSize, Invocation, LimitsOverride, Outcome, Request, Sandbox, SandboxConfig};

/// Celeriac: a Celery-compatible worker that runs tasks as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "celeriac", version, about, long_about = None, after_help = hints::CELERY_COMMANDS_HELP)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a worker that serves Celery task messages from the broker.
    Worker(Box<worker::WorkerArgs>),
    /// Send a task message exactly as a Python Celery client would, and optionally wait for its result.
    Call(call::CallArgs),
    /// Print the stored result of a task.
    Result(call::ResultArgs),
    /// Erase all messages from the task queues (as `celery purge`).
    Purge(purge::PurgeArgs),
    /// Show what is useful in a bug report: versions, platform, servers, settings.
    Report,
    /// Validate a config file and print the effective settings.
    CheckConfig(CheckConfigArgs),
    /// Run one task once, locally, and print its JSON result.
    Run(RunArgs),
    /// List the tasks a directory of components serves, and the files that failed to load.
    Tasks(TasksArgs),
    /// Ask the workers (Celeriac or Python) what they do, as `celery inspect`: ping, stats, active,
    /// reserved, scheduled, registered, revoked, active_queues, conf, report, query_task, clock.
    Inspect(remote::RemoteArgs),
    /// Change the workers, as `celery control`: rate_limit, time_limit, revoke, terminate,
    /// enable_events, disable_events, heartbeat, pool_grow, pool_shrink, shutdown, ...
    Control(remote::RemoteArgs),
    /// List the workers that answer, as `celery status`.
    Status(remote::StatusArgs),
    /// Print the events workers send as they come, as `celery events --dump`.
    Events(remote::EventsArgs),
    /// Create a task project from a template: rust, python, js, c or zig (serves NAME.add).
    New(new::NewArgs),
    /// Build a task project into a component with its language's toolchain (default DIR/dist/NAME.wasm).
    Build(build::BuildArgs),
}

/// The options `celery` takes before its subcommand (`celery -A proj -b URL worker`),
/// accepted before or after it.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Directory of task components (or a single .wasm file): the app.
    #[arg(short = 'A', long = "app", value_name = "DIR|FILE.wasm", global = true, help_heading = "Global Options")]
    pub app: Option<PathBuf>,
    /// Broker URL, e.g. redis://localhost:6379/0.
    #[arg(short = 'b', long, global = true, help_heading = "Global Options")]
    pub broker: Option<String>,
    /// Result backend URL, e.g. redis://localhost:6379/1.
    #[arg(long, global = true, help_heading = "Global Options")]
    pub result_backend: Option<String>,
    /// Config file with Celery setting names: celeryconfig.py or TOML (also $CELERIAC_CONFIG;
    /// default: ./celeryconfig.py if there is one).
    #[arg(long, env = "CELERIAC_CONFIG", value_name = "FILE", global = true, help_heading = "Global Options")]
    pub config: Option<PathBuf>,
    /// Change to this directory before anything else (relative paths are read from there).
    #[arg(long, value_name = "PATH", global = true, help_heading = "Global Options")]
    pub workdir: Option<PathBuf>,
    /// Quiet: the worker prints no banner (as Celery's -q).
    #[arg(short = 'q', long, global = true, help_heading = "Global Options")]
    pub quiet: bool,
    /// No colours (accepted for Celery's sake: celeriac never colours its output).
    #[arg(short = 'C', long, global = true, help_heading = "Global Options")]
    pub no_color: bool,
    /// Accepted for Celery's sake: there is no Python loader; settings come from --config.
    #[arg(long, value_name = "TEXT", global = true, help_heading = "Global Options")]
    pub loader: Option<String>,
    /// Accepted for Celery's sake: there are no Django checks to skip.
    #[arg(long, global = true, help_heading = "Global Options")]
    pub skip_checks: bool,
    /// The directory the command started in, before --workdir.
    #[arg(skip)]
    pub start_dir: Option<PathBuf>,
}

impl GlobalArgs {
    /// Settings: defaults ← config file ← CELERY_*/CELERIAC_* environment ← `-b` / `--result-backend`.
    fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings::load(config_file(self.config.as_deref()).as_deref())?;
        if let Some(b) = &self.broker {
            s.broker_url = Some(b.clone());
        }
        if let Some(r) = &self.result_backend {
            s.result_backend = Some(r.clone());
        }
        Ok(s)
    }

    /// The config file found in the current directory because none was named.
    fn discovered_config(&self) -> Option<PathBuf> {
        self.config.is_none().then(crate::config::discover_config).flatten()
    }

    /// The `-A` directory, which `command` needs.
    fn app(&self, command: &str) -> anyhow::Result<&Path> {
        self.app.as_deref().with_context(|| {
            format!(
                "celeriac {command} needs the task components: -A DIR (e.g. `celeriac -A target/tasks {command}`; \
                 build them with `make tasks`)"
            )
        })
    }
}

/// How to sandbox the task components.
#[derive(Debug, Args, Clone, Default)]
pub struct SandboxArgs {
    /// Fuel (instruction budget) per task call.
    #[arg(long, help_heading = "Sandbox Options")]
    pub fuel: Option<u64>,
    /// Memory cap per task call, e.g. 64MiB.
    #[arg(long, value_name = "SIZE", help_heading = "Sandbox Options")]
    pub max_memory: Option<ByteSize>,
    /// Hard wall-clock limit per task call, in seconds (Celery's --time-limit).
    #[arg(long, value_name = "SECS", help_heading = "Sandbox Options")]
    pub time_limit: Option<f64>,
    /// Wasm stack size, e.g. 512KiB.
    #[arg(long, value_name = "SIZE", help_heading = "Sandbox Options")]
    pub max_stack: Option<ByteSize>,
    /// Calls one instance serves before it is dropped (default 1: a fresh
    /// instance for every call; more keeps a task's module state between its calls).
    #[arg(long, value_name = "N", help_heading = "Sandbox Options")]
    pub max_calls_per_instance: Option<u32>,
    /// Directory for compiled components (default: ~/.cache/celeriac).
    #[arg(long, value_name = "DIR", help_heading = "Sandbox Options")]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write compiled components on disk.
    #[arg(long, help_heading = "Sandbox Options")]
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
            max_calls_per_instance: self.max_calls_per_instance,
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
    /// Positional arguments, each a JSON value: 4, '"a"', '[1,2]' (or all at once with -a).
    #[arg(allow_negative_numbers = true, value_name = "ARG")]
    args: Vec<String>,
    /// Positional arguments as one JSON array, as `celery call -a '[4, 4]'`.
    #[arg(short = 'a', long = "args", value_name = "JSON ARRAY")]
    args_json: Option<String>,
    /// Keyword arguments as a JSON object, as `celery call -k '{"y": 4}'`.
    #[arg(short = 'k', long, value_name = "JSON OBJECT")]
    kwargs: Option<String>,
}

impl TaskCall {
    /// The arguments parsed as JSON.
    fn parse(&self) -> anyhow::Result<(Vec<serde_json::Value>, serde_json::Map<String, serde_json::Value>)> {
        let args = match &self.args_json {
            None => parse_json_args(&self.args)?,
            Some(_) if !self.args.is_empty() => bail!(
                "give the positional arguments either after the task name ({} {}) or as one JSON array with \
                 -a/--args, not both",
                self.task,
                self.args.join(" ")
            ),
            Some(a) => parse_json_array(a)?,
        };
        Ok((args, parse_json_kwargs(self.kwargs.as_deref())?))
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

#[derive(Debug, Args)]
struct CheckConfigArgs {
    /// The config file, celeryconfig.py or TOML (default: --config, or $CELERIAC_CONFIG, else
    /// ./celeryconfig.py if there is one; none means defaults and environment).
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
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => hints::with_hints(e, &argv).exit(),
    };
    let result = dispatch(cli, &argv);
    match result {
        Ok(code) => code,
        Err(e) => {
            // Whatever the error quotes, no password is printed.
            eprintln!("Error: {}", crate::connection::url::mask_urls_in(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli, argv: &[String]) -> anyhow::Result<ExitCode> {
    let mut g = cli.global;
    g.start_dir = std::env::current_dir().ok();
    // As Celery does: the working directory changes first, so that -A, --config and
    // every relative path after it are read from there.
    if let Some(dir) = &g.workdir {
        std::env::set_current_dir(dir).with_context(|| format!("--workdir {}", dir.display()))?;
    }
    match cli.command {
        Command::Worker(a) => worker::worker(&g, *a, argv),
        Command::Call(a) => call::call(&g, a),
        Command::Result(a) => call::result(&g, a),
        Command::Purge(a) => purge::purge(&g, a),
        Command::Report => report(&g),
        Command::CheckConfig(a) => check_config(&g, a),
        Command::Run(a) => run(&g, a),
        Command::Tasks(a) => tasks(&g, a),
        Command::Inspect(a) => remote::remote(&g, crate::remote::Kind::Inspect, a),
        Command::Control(a) => remote::remote(&g, crate::remote::Kind::Control, a),
        Command::Status(a) => remote::status(&g, a),
        Command::Events(a) => remote::events(&g, a),
        Command::New(a) => new::new(a),
        Command::Build(a) => build::build(a),
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

/// Parse an `-a/--args` option: one JSON array, as `celery call` takes it.
pub fn parse_json_array(args: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    match serde_json::from_str(args) {
        Ok(serde_json::Value::Array(a)) => Ok(a),
        Ok(other) => bail!(
            "-a/--args takes one JSON array, got {other}: write -a '[{other}]', or give each argument after the \
             task name"
        ),
        Err(e) => bail!(
            "-a/--args is not a JSON array ({e}): write -a '[4, 4]' (quoted for the shell), or give each argument \
             after the task name: celeriac call tasks.add 4 4"
        ),
    }
}

/// Parse a `-k/--kwargs` option: a JSON object.
pub fn parse_json_kwargs(kwargs: Option<&str>) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let Some(k) = kwargs else { return Ok(serde_json::Map::new()) };
    match serde_json::from_str(k) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(other) => bail!("-k/--kwargs must be a JSON object, got {other}: write -k '{{\"x\": 1}}'"),
        Err(e) => {
            let hint = match k.split_once('=') {
                Some((name, value)) => format!(" (not name=value: write -k '{{\"{name}\": {value}}}')"),
                None => String::new(),
            };
            bail!("-k/--kwargs is not valid JSON: {e}{hint}")
        }
    }
}

/// The sandbox `run` and `tasks` call into, configured as a worker with these
/// settings would be (its `[sandbox]`, `task_annotations`, tenants' `tenant.toml`)
/// under `args`, with one run slot.
async fn load_sandbox(app: &Path, settings: &Settings, args: &SandboxArgs) -> anyhow::Result<Sandbox> {
    let mut cfg = SandboxConfig {
        max_concurrent: 1,
        compiler: crate::sandbox::Compiler::this_executable(),
        compile_progress: crate::sandbox::CompileProgress::Stderr,
        ..settings.sandbox_config()
    };
    args.apply(&mut cfg);
    crate::sandbox::loader::check_app_dir(app, &std::env::current_dir()?)?;
    let sandbox = Sandbox::new(cfg)?;
    sandbox.load(app).await;
    Ok(sandbox)
}

fn run(g: &GlobalArgs, a: RunArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(&a.loglevel).map_err(anyhow::Error::msg)?;
    let app = g.app("run")?;
    let (args, kwargs) = a.call.parse()?;
    let task = a.call.task.clone();
    let settings = local_settings(g, app)?;
    runtime()?.block_on(async {
        let sandbox = load_sandbox(app, &settings, &a.sandbox).await?;
        let Some(entry) = sandbox.task(&task) else {
            for e in sandbox.load_errors() {
                eprintln!("warning: {e}");
            }
            bail!("task {task} is not registered.\n{}", sandbox.not_registered_hint(&task));
        };
        // The grants a worker would give the call; what it sends is reported, not sent (no broker here).
        let tenant = entry.tenant().map(str::to_string);
        let annotation =
            crate::worker::annotation_over(settings.annotation_in(&task, tenant.as_deref()), &entry.options);
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
            http_allow: annotation.http_allow.clone().unwrap_or_default(),
            config: settings.tenants.config_of(tenant.as_deref()),
            soft_time_limit: annotation.soft_time_limit.or(settings.task_soft_time_limit),
            may_send: annotation.send_tasks.unwrap_or(false),
            send_namespace: tenant.clone(),
            ..Invocation::default()
        };
        let span = crate::logging::task_span(&task, &inv.request.id);
        let res = tracing::Instrument::instrument(sandbox.call(&task, inv), span).await?;
        if a.report {
            eprintln!("{}", serde_json::json!({"report": res.report, "limits": res.limits}));
        }
        let unsent = res.sent.iter().chain(&res.chord_additions).chain(res.replacement.as_ref());
        for sig in unsent {
            let name = sig.get("task").and_then(|t| t.as_str()).unwrap_or("?");
            let args = sig.get("args").map(ToString::to_string).unwrap_or_default();
            eprintln!("warning: the task sent {name}{args}; not sent: celeriac run has no broker");
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
            // `celeriac run` calls once: a retry request is reported, not sent.
            Outcome::Retry(r) => {
                let because = r.exc.as_ref().map(|f| format!(": {}", f.repr())).unwrap_or_default();
                eprintln!("the task asked to be retried (countdown {:?}, eta {:?}){because}", r.countdown, r.eta);
                ExitCode::FAILURE
            }
        })
    })
}

fn tasks(g: &GlobalArgs, a: TasksArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(&a.loglevel).map_err(anyhow::Error::msg)?;
    let app = g.app("tasks")?;
    let settings = local_settings(g, app)?;
    runtime()?.block_on(async {
        let sandbox = load_sandbox(app, &settings, &a.sandbox).await?;
        print!("{}", crate::worker::task_listing(&sandbox));
        Ok(if sandbox.load_errors().is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

/// The settings `run` and `tasks` apply, as a worker on `app` reads them at
/// start: the config file (`--config`, else `./celeryconfig.py`) and every
/// tenant's `tenant.toml` under `app`.
fn local_settings(g: &GlobalArgs, app: &Path) -> anyhow::Result<Settings> {
    let found = g.discovered_config();
    let mut settings = match (g.settings(), &found) {
        (Ok(s), _) => s,
        (Err(e), None) => return Err(e),
        (Err(e), Some(f)) => {
            return Err(e.context(format!(
                "celeriac read {} from the current directory, as a worker started here would; fix it, or name \
                 another file with --config",
                f.display()
            )));
        }
    };
    if let Some(f) = &found {
        tracing::info!("Reading {} from the current directory (as a worker started here would)", f.display());
    }
    settings.tenants = crate::config::Tenants::load(app)?;
    for w in settings.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(settings)
}

/// This machine's host name, for node names like `celeriac@host`.
pub fn host_name() -> String {
    hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "localhost".into())
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
fn print_meta(meta: &ResultMeta) -> ExitCode {
    let state = meta.status.as_str().to_string();
    match state.as_str() {
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
    }
}

/// The config file to read: the one named, else Celery's `celeryconfig.py` in
/// the current directory when there is one (the worker logs that it read it:
/// see [`GlobalArgs::discovered_config`]).
fn config_file(named: Option<&std::path::Path>) -> Option<PathBuf> {
    named.map(Path::to_path_buf).or_else(crate::config::discover_config)
}

fn check_config(g: &GlobalArgs, a: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let file = a.file.or_else(|| g.config.clone()).or_else(|| {
        let found = crate::config::discover_config()?;
        eprintln!("reading {} from the current directory", found.display());
        Some(found)
    });
    let mut settings = Settings::load(file.as_deref())?;
    for w in settings.warnings() {
        eprintln!("warning: {w}");
    }
    // Message signing's files, loaded as the worker loads them at start (key, password, certificates).
    if crate::security::Security::wanted(&settings) {
        let security = crate::security::Security::from_settings(&settings)?;
        let signs_as = security.signer.as_ref().map(|s| s.id().to_string()).unwrap_or_default();
        eprintln!(
            "message signing: the key and certificate load (signs as {signs_as}), and so does the certificate store: OK"
        );
    }
    // Printed as `celery report` prints them: passwords masked.
    use crate::connection::url::mask_password;
    settings.broker_url = settings.broker_url.as_deref().map(mask_password);
    settings.result_backend = settings.result_backend.as_deref().map(mask_password);
    // As Celery's `inspect conf` masks a secret setting.
    if settings.security_key_password.is_some() {
        settings.security_key_password = Some("********".into());
    }
    print!("{}", toml::to_string_pretty(&settings).context("cannot print settings")?);
    eprintln!("{}: OK", file.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "settings".into()));
    // With -A, each tenant's tenant.toml, read as the worker reads it at start.
    if let Some(app) = &g.app {
        let tenants = crate::config::Tenants::load(app)?;
        for (name, t) in &tenants.0 {
            let path = app.join(name).join(crate::config::TENANT_FILE);
            eprintln!("{}: OK ({})", path.display(), t.summary());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `celery report`'s counterpart: versions, platform and the servers, passwords masked.
fn report(g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    use crate::connection::url::mask_password;
    let settings = g.settings()?;
    println!("software -> celeriac:{} (wasmtime 48, Celery message protocol 2)", env!("CARGO_PKG_VERSION"));
    println!("platform -> system:{} arch:{}", std::env::consts::OS, std::env::consts::ARCH);
    println!("broker_url: {}", mask_password(&settings.effective_broker_url()));
    let results = settings.effective_result_backend().map(|u| mask_password(&u)).unwrap_or_else(|| "disabled".into());
    println!("result_backend: {results}");
    if let Some(app) = &g.app {
        println!("app: {}", app.display());
    }
    if let Some(config) = &g.config {
        println!("config: {}", config.display());
    }
    Ok(ExitCode::SUCCESS)
}
