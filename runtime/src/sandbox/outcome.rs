//! What one task call produced, and how a failure is described to a Celery client.
//!
//! Every way a call can end — a returned value, an error the guest raised, a
//! trap (panic, out of fuel, memory cap, time limit, stack overflow) — becomes an
//! [`Outcome`]. Failures carry an exception type a Python client re-raises
//! (`MemoryError`, `RecursionError`, `celery.exceptions.TimeLimitExceeded`, ...)
//! and a traceback that reads like Python's, innermost frame last, built from the
//! wasm backtrace with function names and, where the component carries debug
//! info, `file:line`.

use std::time::Duration;

use serde::Serialize;
use wasmtime::{Trap, WasmBacktrace};

use super::bounds;
use super::limits::MemoryLimitExceeded;
use crate::protocol::exception::{ExceptionInfo, safe_guest_exception};

/// Module name for exception types Celeriac itself defines. A Python client
/// cannot import it, so Celery builds a stand-in class with this name.
pub const CELERIAC_EXC_MODULE: &str = "celeriac.exceptions";

/// How a call ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The task returned this JSON value.
    Success(serde_json::Value),
    /// The task failed.
    Failure(TaskFailure),
    /// The task asked to be retried (Celery's `raise self.retry(...)`).
    Retry(RetryRequest),
}

/// A retry asked for by a task, checked and made safe (see [`raised`]); the
/// worker decides whether it happens (`max_retries`) and when.
#[derive(Debug, Clone)]
pub struct RetryRequest {
    /// Seconds from now until the retry runs.
    pub countdown: Option<f64>,
    /// When the retry runs, ISO-8601 (takes precedence over `countdown`).
    pub eta: Option<String>,
    /// The exception that caused it (stored with `RETRY`, raised once retries are exhausted).
    pub exc: Option<TaskFailure>,
    /// The task's `max_retries` for this decision.
    pub max_retries: Option<u32>,
}

/// Why a call failed, from the worker's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The guest returned an error (an exception it raised).
    Raised,
    /// The fuel budget ran out.
    OutOfFuel,
    /// The guest tried to grow its memory past the cap.
    MemoryLimit,
    /// The wall-clock limit ran out.
    TimeLimit,
    /// The wasm stack overflowed (unbounded recursion).
    StackOverflow,
    /// The guest panicked (a trap with a panic message on stderr).
    Panic,
    /// Any other trap (`unreachable`, out-of-bounds access, integer divide by zero, exit...).
    Trap,
    /// The guest returned something that is not valid JSON.
    BadResult,
}

/// A failed call, ready to be stored as a Celery `FAILURE`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskFailure {
    /// What kind of failure this is.
    pub kind: FailureKind,
    /// Exception class name, e.g. `ZeroDivisionError`.
    pub exc_type: String,
    /// The module the exception class is stored under (`builtins`,
    /// `celery.exceptions`, ... or `celeriac.exceptions` for stand-ins).
    pub exc_module: String,
    /// The exception message.
    pub message: String,
    /// The exception's arguments (`exc.args`) when the guest gave them; `None`
    /// means the single argument `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<serde_json::Value>>,
    /// Python-style traceback text.
    pub traceback: String,
}

impl TaskFailure {
    /// The exception as Celery stores it: `{"exc_type", "exc_message": <args>, "exc_module"}`.
    pub fn exception(&self) -> ExceptionInfo {
        let args = self.args.clone().unwrap_or_else(|| vec![serde_json::Value::String(self.message.clone())]);
        ExceptionInfo::new(self.exc_type.clone(), args, self.exc_module.clone())
    }

    /// The exception as Python's `repr` shows it in Celery's log line:
    /// `ZeroDivisionError('division by zero')`, `ExpectedException('a', 'b')`.
    pub fn repr(&self) -> String {
        match &self.args {
            None => format!("{}({})", self.exc_type, crate::protocol::repr::py_str_repr(&self.message)),
            Some(_) => self.exception().repr(),
        }
    }
}

/// Measurements of one call.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CallReport {
    /// Wall time from instantiation to return.
    #[serde(serialize_with = "secs")]
    pub wall: Duration,
    /// Fuel units consumed.
    pub fuel_consumed: u64,
    /// Peak linear memory in bytes.
    pub peak_memory: usize,
    /// Calls the instance had served before this one (0: a fresh instance;
    /// more only with `max_calls_per_instance`).
    #[serde(default)]
    pub reused: u32,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The time limit ran out while the guest was running (raised by the epoch callback).
#[derive(Debug, thiserror::Error)]
#[error("time limit exceeded")]
pub struct TimeLimitHit;

/// Where a traceback's frames come from: the component file and task export.
pub struct TraceSite<'a> {
    /// The component's file name as shown in tracebacks (e.g. `tasks.wasm`).
    pub file: &'a str,
    /// The full Celery task name.
    pub task: &'a str,
}

/// The last line of a traceback: `ValueError: bad` or `celery.exceptions.TimeLimitExceeded: ...`.
fn exception_line(exc_type: &str, module: Option<&str>, message: &str) -> String {
    let name = match module {
        None | Some("builtins") => exc_type.to_string(),
        Some(m) => format!("{m}.{exc_type}"),
    };
    if message.is_empty() { name } else { format!("{name}: {message}") }
}

/// A failure raised by the guest itself (`Err(task-error)`): no wasm backtrace
/// exists, so the traceback names the task export, then the guest's own
/// traceback text if it sent one.
///
/// Everything here comes from an untrusted guest, so it is bounded and made
/// safe first: the class is mapped onto one a client may rebuild
/// ([`safe_guest_exception`]), the message and the guest's traceback are each
/// cut to `max_error` bytes (head and tail kept), and the traceback's lines —
/// which the worker logs — have their control characters escaped, so a guest
/// cannot start a log line of its own. The stored message itself stays the
/// guest's text (only cut), as Celery stores it.
///
/// `args` (0.2.0 guests) are the exception's arguments as JSON texts; one that
/// is not valid JSON is kept as a string.
pub fn raised(
    site: &TraceSite<'_>,
    exc_type: &str,
    exc_module: Option<&str>,
    message: &str,
    args: Option<&[String]>,
    guest_traceback: Option<&str>,
    max_error: usize,
) -> TaskFailure {
    let (exc_type, module) = safe_guest_exception(exc_type, exc_module, CELERIAC_EXC_MODULE, bounds::sanitize_exc_type);
    let message = bounds::truncate_middle(message, max_error);
    let mut tb = String::from("Traceback (most recent call last):\n");
    tb.push_str(&format!("  File \"{}\", in {} (wasm export celeriac:task/task#invoke)\n", site.file, site.task));
    if let Some(g) = guest_traceback.map(str::trim_end).filter(|g| !g.is_empty()) {
        for line in bounds::truncate_middle(g, max_error).lines() {
            tb.push_str("  ");
            tb.push_str(&bounds::escape_controls(line));
            tb.push('\n');
        }
    }
    tb.push_str(&bounds::escape_controls(&exception_line(&exc_type, Some(&module), &message)));
    tb.push('\n');
    let args = args.map(|args| {
        args.iter().map(|a| serde_json::from_str(a).unwrap_or_else(|_| serde_json::Value::String(a.clone()))).collect()
    });
    TaskFailure { kind: FailureKind::Raised, exc_type, exc_module: module, message, args, traceback: tb }
}

/// A failure for a call that ran past its wall-clock limit while blocked in
/// the host (e.g. sleeping), where no wasm backtrace can be captured.
pub fn timed_out(site: &TraceSite<'_>, limit: Duration) -> TaskFailure {
    let (exc_type, module, message) = time_limit_exception(limit);
    let mut tb = String::from("Traceback (most recent call last):\n");
    tb.push_str(&format!("  File \"{}\", in {} (wasm export celeriac:task/task#invoke)\n", site.file, site.task));
    tb.push_str("  (stopped while waiting in a host call)\n");
    tb.push_str(&exception_line(exc_type, Some(module), &message));
    tb.push('\n');
    TaskFailure {
        kind: FailureKind::TimeLimit,
        exc_type: exc_type.into(),
        exc_module: module.into(),
        message,
        args: None,
        traceback: tb,
    }
}

fn time_limit_exception(limit: Duration) -> (&'static str, &'static str, String) {
    (
        // Where Celery's own worker says it lives (celery.exceptions re-exports it).
        "TimeLimitExceeded",
        "billiard.exceptions",
        format!("task exceeded its time limit of {}s", trim_float(limit.as_secs_f64())),
    )
}

fn trim_float(f: f64) -> String {
    let s = format!("{f:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Classify a trap or host error from a call and build its failure.
///
/// `stderr` is what the guest wrote to stderr (a Rust panic message is there),
/// `limits` the limits the call ran with.
pub fn trapped(
    site: &TraceSite<'_>,
    err: &wasmtime::Error,
    stderr: &str,
    fuel: u64,
    time_limit: Duration,
) -> TaskFailure {
    let trap = err.downcast_ref::<Trap>().copied();
    let panic = parse_rust_panic(stderr);
    let (kind, exc_type, module, message): (FailureKind, &str, &str, String) =
        if err.downcast_ref::<TimeLimitHit>().is_some() || trap == Some(Trap::Interrupt) {
            let (t, m, msg) = time_limit_exception(time_limit);
            (FailureKind::TimeLimit, t, m, msg)
        } else if let Some(m) = err.downcast_ref::<MemoryLimitExceeded>() {
            (FailureKind::MemoryLimit, "MemoryError", "builtins", m.to_string())
        } else if trap == Some(Trap::OutOfFuel) {
            (
                FailureKind::OutOfFuel,
                "OutOfFuel",
                CELERIAC_EXC_MODULE,
                format!("task ran out of fuel (budget: {fuel} units)"),
            )
        } else if trap == Some(Trap::StackOverflow) {
            (
                FailureKind::StackOverflow,
                "RecursionError",
                "builtins",
                "maximum recursion depth exceeded (wasm call stack exhausted)".to_string(),
            )
        } else if trap == Some(Trap::MemoryOutOfBounds) && looks_like_runaway_recursion(err) {
            // Rust and C guests keep part of each frame on a "shadow stack" at the
            // bottom of linear memory; recursing past it wraps below address 0.
            (
                FailureKind::StackOverflow,
                "RecursionError",
                "builtins",
                "maximum recursion depth exceeded (the guest's stack in linear memory overflowed)".to_string(),
            )
        } else if let Some(p) = &panic {
            (FailureKind::Panic, "WasmPanic", CELERIAC_EXC_MODULE, p.message.clone())
        } else if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
            (FailureKind::Trap, "WasmTrap", CELERIAC_EXC_MODULE, format!("guest exited with status {}", exit.0))
        } else if let Some(t) = trap {
            (FailureKind::Trap, "WasmTrap", CELERIAC_EXC_MODULE, t.to_string())
        } else {
            (FailureKind::Trap, "WasmTrap", CELERIAC_EXC_MODULE, root_message(err))
        };

    let mut tb = String::from("Traceback (most recent call last):\n");
    tb.push_str(&format!("  File \"{}\", in {} (wasm export celeriac:task/task#invoke)\n", site.file, site.task));
    if let Some(bt) = err.downcast_ref::<WasmBacktrace>() {
        push_frames(&mut tb, site.file, bt);
    }
    // Everything below is guest text (panic message, stderr, names from the
    // name section in the frames above): escaped, so the logged traceback
    // cannot start a line of its own.
    if let Some(loc) = panic.as_ref().and_then(|p| p.location.as_ref()) {
        tb.push_str(&format!("  {} (panic location)\n", bounds::escape_controls(loc)));
    }
    if kind != FailureKind::Panic {
        let tail = stderr_tail(stderr);
        if !tail.is_empty() {
            tb.push_str("  Guest stderr (last lines):\n");
            for l in tail.lines() {
                tb.push_str("    ");
                tb.push_str(&bounds::escape_controls(l));
                tb.push('\n');
            }
        }
    }
    tb.push_str(&bounds::escape_controls(&exception_line(exc_type, Some(module), &message)));
    tb.push('\n');
    TaskFailure {
        kind,
        exc_type: exc_type.to_string(),
        exc_module: module.to_string(),
        message,
        args: None,
        traceback: tb,
    }
}

/// Whether a backtrace's innermost frames are one function calling itself:
/// the signature of unbounded recursion.
fn looks_like_runaway_recursion(err: &wasmtime::Error) -> bool {
    const RUN: usize = 16;
    let Some(bt) = err.downcast_ref::<WasmBacktrace>() else { return false };
    let frames = bt.frames();
    frames.len() >= RUN && frames[..RUN].windows(2).all(|w| w[0].func_index() == w[1].func_index())
}

/// The guest raised an exception with more arguments than the worker copies.
pub fn too_many_args(site: &TraceSite<'_>, n: usize) -> TaskFailure {
    let message = format!("task raised an exception with {n} arguments; the limit is {}", super::exports::ARGS_CEILING);
    encode_error(site, &message)
}

/// The guest returned text that is not JSON.
pub fn bad_result(site: &TraceSite<'_>, err: &serde_json::Error) -> TaskFailure {
    let message = format!("task returned a result that is not valid JSON: {err}");
    encode_error(site, &message)
}

/// A result the worker refuses to store, as kombu's `EncodeError`.
fn encode_error(site: &TraceSite<'_>, message: &str) -> TaskFailure {
    let mut f = raised(site, "EncodeError", Some("kombu.exceptions"), message, None, None, usize::MAX);
    f.kind = FailureKind::BadResult;
    f
}

/// The guest returned a result larger than the worker accepts.
pub fn result_too_large(site: &TraceSite<'_>, len: usize, max: usize) -> TaskFailure {
    encode_error(site, &format!("task returned a result of {len} bytes; the limit is {max} bytes (max_result_size)"))
}

/// The guest returned a result that would take more host memory to parse and
/// store than the worker grants one result.
pub fn result_too_costly(site: &TraceSite<'_>, len: usize, cost: usize, max: usize) -> TaskFailure {
    encode_error(
        site,
        &format!(
            "task returned a result of {len} bytes that would take about {} MiB of worker memory to store; \
             the limit is {} MiB (max_result_memory)",
            cost.div_ceil(1 << 20),
            max >> 20
        ),
    )
}

/// The innermost error message of a chain (the trap reason, not the backtrace).
fn root_message(err: &wasmtime::Error) -> String {
    err.chain().last().map(|e| e.to_string()).unwrap_or_else(|| err.to_string())
}

/// How many frames to show at most; Python shows everything, but a stack
/// overflow would otherwise print thousands.
const MAX_FRAMES: usize = 40;

/// Append the backtrace's frames, outermost first (Python order), collapsing
/// repeats like Python's "[Previous line repeated N more times]".
fn push_frames(tb: &mut String, file: &str, bt: &WasmBacktrace) {
    let mut lines: Vec<String> = Vec::new();
    for frame in bt.frames().iter().rev() {
        let func = frame.func_name().map(demangle).unwrap_or_else(|| format!("<wasm function {}>", frame.func_index()));
        let located: Vec<String> = frame
            .symbols()
            .iter()
            .rev()
            .filter_map(|s| {
                let f = s.file()?;
                let name = s.name().map(demangle).unwrap_or_else(|| func.clone());
                Some(match s.line() {
                    Some(line) => format!("  File \"{f}\", line {line}, in {name}"),
                    None => format!("  File \"{f}\", in {name}"),
                })
            })
            .collect();
        if located.is_empty() {
            let offset = frame.module_offset().map(|o| format!(", offset {o:#x}")).unwrap_or_default();
            lines.push(format!("  File \"{file}\"{offset}, in {func}"));
        } else {
            lines.extend(located);
        }
    }
    // Collapse runs of the same frame (offsets differ only by the call site).
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let key = frame_key(&lines[i]);
        let mut j = i + 1;
        while j < lines.len() && frame_key(&lines[j]) == key {
            j += 1;
        }
        let run = j - i;
        out.extend(lines[i..i + run.min(3)].iter().cloned());
        if run > 3 {
            out.push(format!("  [Previous line repeated {} more times]", run - 3));
        }
        i = j;
    }
    if out.len() > MAX_FRAMES {
        let skipped = out.len() - MAX_FRAMES;
        let tail = out.split_off(out.len() - (MAX_FRAMES - 10));
        out.truncate(10);
        out.push(format!("  [... {skipped} frames omitted ...]"));
        out.extend(tail);
    }
    for l in out {
        tb.push_str(&bounds::escape_controls(&l));
        tb.push('\n');
    }
}

/// A frame line without its offset, to spot recursion.
fn frame_key(line: &str) -> &str {
    match line.find(", offset ") {
        Some(p) => match line[p..].find(", in ") {
            Some(q) => &line[p + q..],
            None => line,
        },
        None => line,
    }
}

/// Demangle a Rust symbol name (others pass through), without the hash suffix.
fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// A Rust panic as printed on stderr by the default panic hook.
#[derive(Debug, PartialEq)]
pub struct RustPanic {
    /// `src/lib.rs:19:24`, if given.
    pub location: Option<String>,
    /// The panic message.
    pub message: String,
}

/// Find a Rust panic message in captured stderr:
/// `thread '<unnamed>' panicked at src/lib.rs:19:24:\n<message>\nnote: ...`.
pub fn parse_rust_panic(stderr: &str) -> Option<RustPanic> {
    let start = stderr.rfind("panicked at ")?;
    let rest = &stderr[start + "panicked at ".len()..];
    let (location, body) = match rest.split_once(":\n") {
        Some((loc, body)) if !loc.contains('\n') => (Some(loc.trim().to_string()), body),
        _ => (None, rest),
    };
    let message: Vec<&str> = body.lines().take_while(|l| !l.starts_with("note: ")).collect();
    let message = message.join("\n").trim().to_string();
    Some(RustPanic { location, message })
}

/// The last few lines of stderr, for tracebacks of unexplained traps.
fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_panic_messages_are_found_on_stderr() {
        let stderr = "thread '<unnamed>' (1) panicked at src/lib.rs:19:24:\ntask asked to panic: \"boom\"\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        let p = parse_rust_panic(stderr).unwrap();
        assert_eq!(p.location.as_deref(), Some("src/lib.rs:19:24"));
        assert_eq!(p.message, "task asked to panic: \"boom\"");
        assert_eq!(parse_rust_panic("just some output\n"), None);
    }

    #[test]
    fn raised_errors_read_like_python_tracebacks() {
        let site = TraceSite { file: "tasks.wasm", task: "tasks.div" };
        let f = raised(&site, "ZeroDivisionError", None, "division by zero", None, None, 1024);
        assert!(f.traceback.starts_with("Traceback (most recent call last):\n"));
        assert!(f.traceback.contains("tasks.div"));
        assert!(f.traceback.ends_with("ZeroDivisionError: division by zero\n"));
        assert_eq!(f.repr(), "ZeroDivisionError('division by zero')");
    }

    #[test]
    fn a_guest_error_is_bounded_and_cannot_forge_log_lines() {
        let site = TraceSite { file: "evil.wasm", task: "evil.boom" };
        let huge = "x".repeat(1 << 20);
        let forged = "ok\n[2026-01-01 00:00:00,000: INFO/MainProcess] Task tasks.add[1] succeeded";
        let f = raised(&site, &"E".repeat(20 << 20), Some("os"), &huge, None, Some(&huge), 4096);
        assert_eq!(f.exc_type.len(), bounds::MAX_EXC_TYPE_LEN);
        assert_eq!(f.exc_module, CELERIAC_EXC_MODULE);
        assert!(f.message.len() < 4200 && f.message.contains("bytes truncated"));
        assert!(f.traceback.len() < 3 * 4200, "{}", f.traceback.len());
        let f = raised(&site, "SystemExit", Some("builtins"), forged, None, Some(forged), 4096);
        assert_eq!((f.exc_type.as_str(), f.exc_module.as_str()), ("SystemExit", CELERIAC_EXC_MODULE));
        assert_eq!(f.message, forged, "the stored message is the guest's own text");
        assert!(f.traceback.lines().all(|l| !l.starts_with('[')), "{}", f.traceback);
    }

    #[test]
    fn a_panic_message_cannot_forge_log_lines_either() {
        let site = TraceSite { file: "evil.wasm", task: "evil.panic" };
        let stderr = "thread '<unnamed>' panicked at src/lib.rs:1:1:\nboom\n[2026-01-01 00:00:00,000: INFO/MainProcess] forged\n";
        let err = wasmtime::Error::new(Trap::UnreachableCodeReached);
        let f = trapped(&site, &err, stderr, 1, Duration::from_secs(1));
        assert_eq!(f.kind, FailureKind::Panic);
        assert!(f.message.contains("\n[2026"), "the stored message is the guest's own text");
        assert!(f.traceback.lines().all(|l| !l.starts_with('[')), "{}", f.traceback);
        let f = trapped(
            &site,
            &wasmtime::Error::new(Trap::UnreachableCodeReached),
            "a\r\n[x] y\x1b\n",
            1,
            Duration::from_secs(1),
        );
        assert!(f.traceback.lines().all(|l| !l.starts_with('[') && !l.contains('\x1b')), "{}", f.traceback);
    }

    #[test]
    fn time_limits_print_compactly() {
        let site = TraceSite { file: "tasks.wasm", task: "tasks.sleep" };
        let f = timed_out(&site, Duration::from_millis(1500));
        assert_eq!(f.message, "task exceeded its time limit of 1.5s");
        assert!(f.traceback.ends_with("billiard.exceptions.TimeLimitExceeded: task exceeded its time limit of 1.5s\n"));
    }
}
