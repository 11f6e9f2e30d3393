//! `celeriac-bench`: micro-benchmarks of Celeriac's own machinery, without
//! Redis or Python in the way.
//!
//! Why this exists: the worker runs every task in a fresh WebAssembly instance,
//! so the sandbox's per-call cost (a new `Store`, instantiation from the
//! pre-linked component, the call, the result parse) is a floor under the
//! worker's throughput and latency. This binary measures that floor the way
//! the worker pays it — through the public `celeriac::sandbox::Sandbox::call`
//! — one call after another on a single-threaded (`current_thread`) tokio
//! runtime, i.e. on one core, for several engine configurations:
//!
//! * pooling allocator, fuel metering on (the worker's default),
//! * pooling allocator, fuel metering off,
//! * on-demand allocator (pooling off), fuel on and off, for comparison.
//!
//! Each configuration gets its own engine and a temporary compilation cache
//! that is removed afterwards, so runs never share compiled artifacts. A
//! warm-up (a tenth of `--n`) runs before the measured calls. Every result is
//! checked (`add(i, i) == 2i`) so a broken sandbox cannot look fast.
//!
//! Any component and task can be measured (`-A path/to/tasks.wasm --task
//! tasks.add`, `--args '[1,2]'` for other signatures): `bench/languages.py`
//! uses it for the per-language table (Rust, Python, JS... guests). Each
//! configuration loads the component twice: once into the empty cache (the
//! compile time) and once more, in a new sandbox, from that cache (the load
//! time of a worker restart); the calls run on the second. Per call it also
//! reports the thread's minor page faults, which is where big interpreter
//! guests (componentize-py, QuickJS) spend most of their instantiation.
//!
//! Nothing here asserts a time: it reports. `bench/bench.py` runs it with
//! `--json` and folds the figures into its table.
//!
//! Usage: `cargo run --release -p celeriac-bench -- sandbox --n 20000`.

mod amqp_floor;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use celeriac::sandbox::{Invocation, Outcome, Request, Sandbox, SandboxConfig};
use clap::{Parser, Subcommand};
use serde::Serialize;

/// Benchmarks for Celeriac (the worker-vs-Celery harness is bench/run.sh).
#[derive(Debug, Parser)]
#[command(name = "celeriac-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Instantiate + call cost of one task, sequentially on one core.
    Sandbox(SandboxArgs),
    /// The least a worker can do per message on RabbitMQ (receive, reply, ack), until killed.
    AmqpFloor(amqp_floor::FloorArgs),
}

#[derive(Debug, clap::Args)]
struct SandboxArgs {
    /// Measured calls per configuration (a tenth more run first as warm-up).
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// Directory of task components (or one .wasm file).
    #[arg(short = 'A', long = "app", default_value = "target/tasks")]
    app: PathBuf,
    /// The task to call; it gets the arguments `[i, i]` (and must return `2i`)
    /// unless `--args` is given.
    #[arg(long, default_value = "tasks.add")]
    task: String,
    /// Positional arguments for every call, a JSON array; the call must then
    /// succeed (with `--expect`'s value, if given).
    #[arg(long)]
    args: Option<String>,
    /// The result every call must return with `--args`, as JSON.
    #[arg(long, requires = "args")]
    expect: Option<String>,
    /// Compile cache to use and keep (default: a fresh temporary one per
    /// configuration, removed afterwards). A warm cache skips the compile.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Configurations to run, comma-separated, from: pooling-fuel,
    /// pooling-nofuel, ondemand-fuel, ondemand-nofuel.
    #[arg(long, value_delimiter = ',', default_value = "pooling-fuel,pooling-nofuel,ondemand-fuel,ondemand-nofuel")]
    configs: Vec<String>,
    /// Calls one instance serves (the worker's `max_calls_per_instance`; 1,
    /// the default, instantiates afresh for every call).
    #[arg(long, default_value_t = 1)]
    max_calls_per_instance: u32,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// One engine configuration under test.
#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    pooling: bool,
    fuel: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant { name: "pooling-fuel", pooling: true, fuel: true },
    Variant { name: "pooling-nofuel", pooling: true, fuel: false },
    Variant { name: "ondemand-fuel", pooling: false, fuel: true },
    Variant { name: "ondemand-nofuel", pooling: false, fuel: false },
];

/// Figures for one configuration. Times are per call, in microseconds.
#[derive(Debug, Serialize)]
struct VariantReport {
    config: &'static str,
    pooling: bool,
    fuel_metering: bool,
    calls: usize,
    /// First component load (a compile, unless `--cache-dir` was warm), milliseconds.
    load_ms: f64,
    /// Second load, by a new sandbox from the cache the first one filled, milliseconds.
    cached_load_ms: f64,
    /// `Sandbox::call` as the worker pays it: store + instantiate + call + result parse.
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    min_us: f64,
    max_us: f64,
    /// The sandbox's own `CallReport::wall` (instantiate + call only), mean.
    inner_mean_us: f64,
    /// CPU time (user + system) of the benchmark thread per call: steadier than
    /// wall time when other work shares the machine.
    cpu_us_per_call: f64,
    /// Minor page faults of the benchmark thread per call (pages of the
    /// instance's memory touched for the first time since the slot was reset).
    minflt_per_call: f64,
    /// Sequential calls per second on one core (1e6 / mean_us).
    calls_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct SandboxReport {
    task: String,
    app: String,
    n: usize,
    warmup: usize,
    runtime: &'static str,
    results: Vec<VariantReport>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sandbox(a) => sandbox(a),
        Command::AmqpFloor(a) => amqp_floor::run(a),
    }
}

fn sandbox(a: SandboxArgs) -> anyhow::Result<()> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    let mut variants = Vec::new();
    for name in &a.configs {
        match VARIANTS.iter().find(|v| v.name == name.as_str()) {
            Some(v) => variants.push(*v),
            None => bail!("unknown config {name:?}; choose from {:?}", VARIANTS.map(|v| v.name)),
        }
    }
    // One thread: the calls are awaited one after another, as one worker slot would.
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the tokio runtime")?;
    let warmup = (a.n / 10).max(1);
    let mut results = Vec::new();
    for v in variants {
        if !a.json {
            eprintln!("sandbox: {} ({} calls + {} warm-up)...", v.name, a.n, warmup);
        }
        results.push(rt.block_on(run_variant(&a, v, warmup))?);
    }
    let report = SandboxReport {
        task: a.task.clone(),
        app: a.app.display().to_string(),
        n: a.n,
        warmup,
        runtime: "tokio current_thread, sequential awaits (one core)",
        results,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// A temporary directory removed on drop (also when a variant fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let dir = std::env::temp_dir().join(format!("celeriac-bench-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run_variant(a: &SandboxArgs, v: Variant, warmup: usize) -> anyhow::Result<VariantReport> {
    let temp = match &a.cache_dir {
        Some(_) => None,
        None => Some(TempDir::new(v.name)?),
    };
    let cache_dir = a.cache_dir.clone().or_else(|| temp.as_ref().map(|t| t.0.clone()));
    let mut config = SandboxConfig {
        fuel_metering: v.fuel,
        pooling: v.pooling,
        // The worker sizes its pool from -c; the benchmark needs one slot.
        max_concurrent: 2,
        cache_dir,
        ..Default::default()
    };
    config.limits.max_calls_per_instance = a.max_calls_per_instance.max(1);
    let (_, load_ms) = load(a, config.clone()).await?;
    let (sandbox, cached_load_ms) = load(a, config).await?;
    let call = |i: usize| call_task(&sandbox, a, i as i64);

    for i in 0..warmup {
        call(i).await?;
    }

    let mut samples: Vec<Duration> = Vec::with_capacity(a.n);
    let mut inner = Duration::ZERO;
    let (cpu0, flt0) = thread_usage();
    for i in 0..a.n {
        let t = Instant::now();
        let wall = call(i).await?;
        samples.push(t.elapsed());
        inner += wall;
    }
    let (cpu1, flt1) = thread_usage();
    let cpu = cpu1.saturating_sub(cpu0);

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let total: Duration = samples.iter().sum();
    let mean_us = us(total) / a.n as f64;
    samples.sort_unstable();
    Ok(VariantReport {
        config: v.name,
        pooling: v.pooling,
        fuel_metering: v.fuel,
        calls: a.n,
        load_ms,
        cached_load_ms,
        mean_us,
        p50_us: us(percentile(&samples, 50.0)),
        p99_us: us(percentile(&samples, 99.0)),
        min_us: us(samples[0]),
        max_us: us(samples[samples.len() - 1]),
        inner_mean_us: us(inner) / a.n as f64,
        cpu_us_per_call: us(cpu) / a.n as f64,
        minflt_per_call: flt1.saturating_sub(flt0) as f64 / a.n as f64,
        calls_per_sec: 1e6 / mean_us,
    })
}

/// A new sandbox with `a.app` loaded, and how long the load took (ms).
async fn load(a: &SandboxArgs, config: SandboxConfig) -> anyhow::Result<(Sandbox, f64)> {
    let sandbox = Sandbox::new(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    sandbox.load(&a.app).await;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    if sandbox.task(&a.task).is_none() {
        let errors: Vec<String> =
            sandbox.load_errors().iter().map(|e| format!("{}: {}", e.path.display(), e.reason)).collect();
        bail!(
            "task {} not found under {} (build it with `make tasks`); load errors: {errors:?}",
            a.task,
            a.app.display()
        );
    }

    Ok((sandbox, load_ms))
}

/// One call (`add(i, i)` unless `--args`); checks the answer and returns the
/// sandbox's own wall time.
async fn call_task(sandbox: &Sandbox, a: &SandboxArgs, i: i64) -> anyhow::Result<Duration> {
    let task = a.task.as_str();
    let inv = Invocation {
        args: a.args.clone().unwrap_or_else(|| format!("[{i},{i}]")),
        kwargs: "{}".into(),
        request: Request { name: task.to_string(), ..Request::default() },
        ..Default::default()
    };
    let r = sandbox.call(task, inv).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(args) = &a.args {
        return match r.outcome {
            Outcome::Success(v) => match &a.expect {
                Some(e) if serde_json::from_str::<serde_json::Value>(e).ok().as_ref() != Some(&v) => {
                    bail!("{task}{args} returned {v}, expected {e}")
                }
                _ => Ok(r.report.wall),
            },
            Outcome::Failure(f) => bail!("{task}{args} failed: {} {}\n{}", f.exc_type, f.message, f.traceback),
            Outcome::Retry(r) => bail!("{task}{args} asked for a retry: {r:?}"),
        };
    }
    match r.outcome {
        Outcome::Success(v) if v.as_i64() == Some(2 * i) => Ok(r.report.wall),
        Outcome::Success(v) => bail!("{task}({i}, {i}) returned {v}, expected {}", 2 * i),
        Outcome::Failure(f) => bail!("{task}({i}, {i}) failed: {} {}\n{}", f.exc_type, f.message, f.traceback),
        Outcome::Retry(r) => bail!("{task}({i}, {i}) asked for a retry: {r:?}"),
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// User + system CPU time and minor page faults of the calling thread.
fn thread_usage() -> (Duration, u64) {
    // SAFETY: getrusage only writes the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (Duration::ZERO, 0);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_minflt as u64)
}

fn print_table(r: &SandboxReport) {
    println!("Sandbox micro-benchmark: {} x {} ({}), {}", r.n, r.task, r.app, r.runtime);
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>11} {:>10} {:>8} {:>10} {:>9} {:>9}",
        "config",
        "mean µs",
        "p50 µs",
        "p99 µs",
        "min µs",
        "inner µs",
        "cpu µs",
        "minflt",
        "calls/s",
        "load ms",
        "cached ms"
    );
    for v in &r.results {
        println!(
            "{:<16} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.1} {:>10.1} {:>8.1} {:>10.0} {:>9.1} {:>9.1}",
            v.config,
            v.mean_us,
            v.p50_us,
            v.p99_us,
            v.min_us,
            v.inner_mean_us,
            v.cpu_us_per_call,
            v.minflt_per_call,
            v.calls_per_sec,
            v.load_ms,
            v.cached_load_ms
        );
    }
    println!(
        "(mean/p50/p99/min: Sandbox::call incl. store creation and result parse; inner: instantiate + call; cpu: thread CPU per call; minflt: minor page faults per call; load: first load (compile into an empty cache); cached: load of a new sandbox from that cache)"
    );
}
