//! `celeriac worker`: every option of Celery 5.7's `celery worker`.
//!
//! A Celery user's command line (`celery -A proj worker -l INFO -P prefork -c 8
//! --max-tasks-per-child 100 --pidfile … --detach`) works unchanged. Each
//! option does what Celery's does; where a worker that runs each call in a
//! fresh WebAssembly sandbox makes an option moot (pools, child recycling,
//! autoscaling of processes), it is accepted and the start-up log says once,
//! in one line, what it means here ([`moot_options`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::daemon::{self, Pidfile};
use super::{GlobalArgs, SandboxArgs, host_name};
use crate::sandbox::ByteSize;

/// The pools `celery worker -P` knows (Celery 5.7's choices).
const CELERY_POOLS: [&str; 7] = ["prefork", "eventlet", "gevent", "solo", "processes", "threads", "custom"];

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    // --- Worker Options ---
    /// Node name; %h: host name, %n: its first label, %d: its domain (default: celeriac@%h).
    #[arg(short = 'n', long, help_heading = "Worker Options")]
    hostname: Option<String>,
    /// Start the worker in the background (a new session; use with --pidfile and -f/--logfile).
    #[arg(short = 'D', long, help_heading = "Worker Options")]
    detach: bool,
    /// Keep revoked task ids (and the logical clock) in this file across restarts (Celery's state database;
    /// Celeriac's own JSON format).
    #[arg(short = 'S', long, value_name = "PATH", help_heading = "Worker Options")]
    statedb: Option<PathBuf>,
    /// Log level.
    #[arg(short = 'l', long, default_value = "WARNING", help_heading = "Worker Options",
          value_parser = clap::builder::PossibleValuesParser::new(
              ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL",
               "debug", "info", "warning", "error", "critical", "fatal", "WARN", "warn"]),
          hide_possible_values = true)]
    loglevel: String,
    /// Optimization profile: default or fair (this worker always hands a message to a free slot, as fair does).
    #[arg(short = 'O', long = "optimization", value_parser = ["default", "fair"], help_heading = "Worker Options")]
    optimization: Option<String>,
    /// Messages prefetched per concurrency slot (worker_prefetch_multiplier).
    #[arg(long, value_name = "N", help_heading = "Worker Options")]
    prefetch_multiplier: Option<u32>,
    /// Fetch a message only when a slot is free (worker_prefetch_multiplier = 1).
    #[arg(long, help_heading = "Worker Options")]
    disable_prefetch: bool,
    // --- Pool Options ---
    /// Tasks run at once: a number, or auto (the CPUs this process may use) (default: number of CPUs).
    #[arg(short = 'c', long, value_name = "N|auto", value_parser = parse_concurrency, help_heading = "Pool Options")]
    concurrency: Option<Concurrency>,
    /// Pool implementation (accepted: every task call runs in its own wasm sandbox; solo means -c 1).
    #[arg(short = 'P', long, value_parser = CELERY_POOLS, help_heading = "Pool Options")]
    pool: Option<String>,
    /// Send task events (task-received, -started, -succeeded, ...) for `celery events` and Flower
    /// (worker_send_task_events).
    #[arg(short = 'E', long = "task-events", visible_alias = "events", help_heading = "Pool Options")]
    task_events: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9808 (worker_metrics_address).
    #[arg(long, value_name = "ADDR", help_heading = "Worker Options")]
    metrics: Option<String>,
    /// Soft time limit in seconds (accepted; a wasm task cannot catch SoftTimeLimitExceeded: --time-limit applies).
    #[arg(long, value_name = "FLOAT", help_heading = "Pool Options")]
    soft_time_limit: Option<f64>,
    /// Accepted: every call gets a fresh sandbox instance, as if this were 1.
    #[arg(long, value_name = "INTEGER", help_heading = "Pool Options")]
    max_tasks_per_child: Option<u64>,
    /// Accepted (KiB): every call gets a fresh sandbox, whose memory --max-memory caps.
    #[arg(long, value_name = "INTEGER", help_heading = "Pool Options")]
    max_memory_per_child: Option<u64>,
    /// Accepted: no child processes are started (fork or spawn).
    #[arg(long, value_parser = ["fork", "spawn"], help_heading = "Pool Options")]
    pool_start_method: Option<String>,
    // --- Queue Options ---
    /// Purge the consumed queues before starting (Celery's --purge / --discard).
    #[arg(long, visible_alias = "discard", help_heading = "Queue Options")]
    purge: bool,
    /// Queues to consume, comma-separated (default: task_default_queue).
    #[arg(short = 'Q', long, value_delimiter = ',', help_heading = "Queue Options")]
    queues: Vec<String>,
    /// Queues not to consume, comma-separated.
    #[arg(short = 'X', long, value_delimiter = ',', help_heading = "Queue Options")]
    exclude_queues: Vec<String>,
    /// Python modules to import (accepted; tasks come from the -A components).
    #[arg(short = 'I', long, value_delimiter = ',', help_heading = "Queue Options")]
    include: Vec<String>,
    // --- Features ---
    /// Do not subscribe to other workers' events (gossip).
    #[arg(long, help_heading = "Features")]
    without_gossip: bool,
    /// Do not synchronize with other workers at start-up (mingle).
    #[arg(long, help_heading = "Features")]
    without_mingle: bool,
    /// Do not send event heartbeats.
    #[arg(long, help_heading = "Features")]
    without_heartbeat: bool,
    /// Seconds between event heartbeats.
    #[arg(long, value_name = "INTEGER", help_heading = "Features")]
    heartbeat_interval: Option<u32>,
    /// MAX,MIN: accepted; sandboxes are made per call, so concurrency is MAX.
    #[arg(long, value_name = "MAX,MIN", value_parser = parse_autoscale, help_heading = "Features")]
    autoscale: Option<(u32, u32)>,
    // --- Embedded Beat Options ---
    /// Embedded beat: not in Celeriac; run `celery -A proj beat` next to the worker.
    #[arg(short = 'B', long, help_heading = "Embedded Beat Options")]
    beat: bool,
    /// With -B: beat's schedule file (accepted with -B).
    #[arg(short = 's', long = "schedule-filename", visible_alias = "schedule", help_heading = "Embedded Beat Options")]
    schedule_filename: Option<String>,
    /// With -B: beat's scheduler class (accepted with -B).
    #[arg(long, help_heading = "Embedded Beat Options")]
    scheduler: Option<String>,
    // --- Daemonization Options ---
    /// Log destination (%n, %h, %i expanded as Celery does); defaults to stderr.
    #[arg(short = 'f', long, value_name = "FILE", help_heading = "Daemonization Options")]
    logfile: Option<String>,
    /// Write the pid here; refuse to start if a live process holds it.
    #[arg(long, value_name = "FILE", help_heading = "Daemonization Options")]
    pidfile: Option<String>,
    /// Drop privileges to this user (name or id).
    #[arg(long, help_heading = "Daemonization Options")]
    uid: Option<String>,
    /// Drop privileges to this group (name or id).
    #[arg(long, help_heading = "Daemonization Options")]
    gid: Option<String>,
    /// Create files with this umask (octal).
    #[arg(long, help_heading = "Daemonization Options")]
    umask: Option<String>,
    /// Accepted: there is no Python executable to override.
    #[arg(long, help_heading = "Daemonization Options")]
    executable: Option<String>,
}

/// `-c`: a number, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// This many tasks at once (0: the configured default, as Celery).
    Fixed(u32),
    /// The CPUs this process may use (cgroup quota and affinity mask).
    Auto,
}

fn parse_concurrency(s: &str) -> Result<Concurrency, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Concurrency::Auto);
    }
    s.parse::<u32>().map(Concurrency::Fixed).map_err(|_| format!("must be a non-negative integer or 'auto', got {s:?}"))
}

/// `--autoscale MAX[,MIN]`, as Celery reads it (the first number is the maximum).
fn parse_autoscale(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?}: give MAX,MIN (e.g. --autoscale 10,3) or MAX");
    let mut parts = s.split(',').map(|p| p.trim().parse::<u32>());
    let max = parts.next().and_then(Result::ok).ok_or_else(bad)?;
    let min = match parts.next() {
        None => 0,
        Some(m) => m.map_err(|_| bad())?,
    };
    if parts.next().is_some() || min > max {
        return Err(bad());
    }
    Ok((max, min))
}

impl WorkerArgs {
    /// One line per option this worker accepts for Celery's sake but has no
    /// use for, saying what it means here; `(warning, text)`: a warning when
    /// the user might expect an effect they will not get.
    fn moot_options(&self) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        let mut say = |warn: bool, s: String| out.push((warn, s));
        if let Some(p) = &self.pool {
            let solo = if p == "solo" { " (solo: one task at a time, -c 1)" } else { "" };
            say(
                false,
                format!("-P {p}: every task call runs in its own WebAssembly sandbox, not in a Python pool{solo}"),
            );
        }
        if let Some(o) = &self.optimization {
            say(false, format!("-O {o}: messages always go to a free slot as they are received (Celery's fair)"));
        }
        if let Some(n) = self.max_tasks_per_child {
            say(false, format!("--max-tasks-per-child {n}: every call already gets a fresh sandbox instance"));
        }
        if let Some(k) = self.max_memory_per_child {
            say(
                true,
                format!("--max-memory-per-child {k}: each call's fresh sandbox is capped by --max-memory instead"),
            );
        }
        if let Some(s) = self.soft_time_limit {
            say(
                true,
                format!("--soft-time-limit {s}: a wasm task cannot catch SoftTimeLimitExceeded; --time-limit applies"),
            );
        }
        if let Some(m) = &self.pool_start_method {
            say(false, format!("--pool-start-method {m}: no child processes are started"));
        }
        if let Some((max, min)) = self.autoscale {
            say(false, format!("--autoscale {max},{min}: sandboxes are made per call, so concurrency is {max}"));
        }
        if !self.include.is_empty() {
            let modules = self.include.join(",");
            say(true, format!("-I {modules}: no Python modules are imported; the tasks are the components of -A"));
        }
        if self.beat || self.schedule_filename.is_some() || self.scheduler.is_some() {
            say(true, "-B: no beat scheduler is embedded; run `celery -A proj beat` next to this worker".into());
        }
        if let Some(e) = &self.executable {
            say(false, format!("--executable {e}: there is no Python executable to override"));
        }
        if self.disable_prefetch {
            say(
                false,
                "--disable-prefetch: worker_prefetch_multiplier = 1 (a message is fetched for a free slot)".into(),
            );
        }
        out
    }
}

pub fn worker(g: &GlobalArgs, a: WorkerArgs, argv: &[String]) -> anyhow::Result<ExitCode> {
    let app = g.app("worker")?.to_path_buf();
    // Everything that can be refused is checked before detaching: nothing can be reported after.
    let mut settings = g.settings()?;
    let umask = a.umask.as_deref().map(daemon::parse_umask).transpose()?;
    let hostname = host_format(a.hostname.as_deref().unwrap_or("celeriac@%h"), &host_name());
    let logfile = a.logfile.as_deref().map(|f| PathBuf::from(daemon::node_format(f, &hostname)));
    let pidfile = a.pidfile.as_deref().map(|f| PathBuf::from(daemon::node_format(f, &hostname)));
    if a.detach {
        let cwd = g.start_dir.clone().unwrap_or_else(|| PathBuf::from("."));
        daemon::detach(&daemon::without_detach(argv), &cwd, logfile.as_deref(), pidfile.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(m) = umask {
        daemon::set_umask(m);
    }
    daemon::drop_privileges(a.uid.as_deref(), a.gid.as_deref())?;
    match &logfile {
        Some(f) => crate::logging::init_file(&a.loglevel, f).map_err(anyhow::Error::msg)?,
        None => crate::logging::init(&a.loglevel).map_err(anyhow::Error::msg)?,
    }
    if let Some(found) = g.discovered_config() {
        // Not asked for: say so, once logging is on.
        tracing::info!(
            "Reading {} from the current directory (as Celery's config_from_object('celeryconfig') would)",
            found.display()
        );
    }
    let _pidlock = pidfile.as_deref().map(Pidfile::acquire).transpose()?;
    for (warn, line) in a.moot_options() {
        if warn {
            tracing::warn!("{line}");
        } else {
            tracing::info!("{line}");
        }
    }

    match (a.pool.as_deref(), a.concurrency, a.autoscale) {
        (Some("solo"), _, _) => settings.worker_concurrency = Some(1),
        (_, Some(Concurrency::Auto), _) => settings.worker_concurrency = Some(available_cpus()),
        (_, Some(Concurrency::Fixed(n @ 1..)), _) => settings.worker_concurrency = Some(n),
        (_, _, Some((max, _))) if max > 0 => settings.worker_concurrency = Some(max),
        _ => {}
    }
    if let Some(p) = a.prefetch_multiplier {
        settings.worker_prefetch_multiplier = p;
    }
    if a.disable_prefetch {
        settings.worker_prefetch_multiplier = 1;
    }
    if a.task_events {
        settings.worker_send_task_events = true;
    }
    if let Some(addr) = &a.metrics {
        settings.worker_metrics_address = Some(addr.clone());
    }
    // Sandbox options from the command line override the config's [sandbox] table.
    let mut sb = settings.sandbox_config();
    a.sandbox.apply(&mut sb);
    settings.sandbox.fuel = Some(sb.limits.fuel);
    settings.sandbox.max_memory = Some(ByteSize(sb.limits.max_memory));
    settings.sandbox.time_limit = Some(sb.limits.time_limit.as_secs_f64());
    settings.sandbox.max_stack = Some(ByteSize(sb.limits.max_stack));
    settings.sandbox.max_calls_per_instance = Some(sb.limits.max_calls_per_instance);
    settings.sandbox.cache_dir = Some(sb.cache_dir.clone().unwrap_or_default());

    let mut queues = if a.queues.is_empty() { vec![settings.task_default_queue.clone()] } else { a.queues.clone() };
    queues.retain(|q| !q.is_empty() && !a.exclude_queues.contains(q));
    if queues.is_empty() {
        anyhow::bail!(
            "-X/--exclude-queues {} leaves no queue to consume (consumed: {})",
            a.exclude_queues.join(","),
            if a.queues.is_empty() { settings.task_default_queue.clone() } else { a.queues.join(",") }
        );
    }
    let statedb = a.statedb.as_deref().map(|f| PathBuf::from(daemon::node_format(&f.to_string_lossy(), &hostname)));
    let opts = crate::worker::WorkerOptions {
        settings,
        app,
        queues,
        exclude_queues: a.exclude_queues.clone(),
        hostname,
        banner: !g.quiet,
        purge: a.purge,
        statedb,
        features: crate::worker::Features {
            gossip: !a.without_gossip,
            mingle: !a.without_mingle,
            heartbeat: !a.without_heartbeat,
            heartbeat_interval: a.heartbeat_interval,
        },
    };
    // The main runtime only handles signals and housekeeping; the worker runs
    // its own single-threaded event loops (see `worker`).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the runtime")?;
    rt.block_on(crate::worker::run(opts))?;
    Ok(ExitCode::SUCCESS)
}

/// Celery's `host_format` for `-n`: `%h` the host name, `%n` its first
/// label, `%d` its domain, `%%` a percent sign.
fn host_format(template: &str, host: &str) -> String {
    let (name, domain) = host.split_once('.').unwrap_or((host, ""));
    let mut out = String::with_capacity(template.len() + host.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('%', Some(k @ ('h' | 'n' | 'd' | '%'))) => {
                chars.next();
                out.push_str(match k {
                    'h' => host,
                    'n' => name,
                    'd' => domain,
                    _ => "%",
                });
            }
            _ => out.push(c),
        }
    }
    out
}

/// `-c auto`: the CPUs this process may use (the standard library reads the
/// cgroup CPU quota and the affinity mask on Linux).
fn available_cpus() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_a_number_or_auto() {
        assert_eq!(parse_concurrency("4"), Ok(Concurrency::Fixed(4)));
        assert_eq!(parse_concurrency("AUTO"), Ok(Concurrency::Auto));
        assert!(parse_concurrency("-1").is_err());
        assert!(parse_concurrency("four").is_err());
    }

    #[test]
    fn node_names_expand_host_name_and_domain_as_celery() {
        assert_eq!(host_format("w1@%h", "box.example.com"), "w1@box.example.com");
        assert_eq!(host_format("%n-%d@%h", "box.example.com"), "box-example.com@box.example.com");
        assert_eq!(host_format("w@%n", "box"), "w@box");
        assert_eq!(host_format("100%%", "box"), "100%");
    }

    #[test]
    fn autoscale_reads_the_maximum_first_as_celery() {
        assert_eq!(parse_autoscale("10,3"), Ok((10, 3)));
        assert_eq!(parse_autoscale("8"), Ok((8, 0)));
        assert!(parse_autoscale("3,10").is_err());
        assert!(parse_autoscale("x").is_err());
    }
}
