//! Compiling an untrusted component under a time and memory budget.
//!
//! Cranelift's cost is not linear in a component's size: 300 KB of nested
//! `if`s can take minutes and a million tiny functions gigabytes. A thread
//! cannot be stopped or capped, so the worker compiles in a child process —
//! itself, re-executed as `celeriac __compile-component` — with an
//! address-space limit (`RLIMIT_AS`, [`HostBounds::compile_memory`]) and a
//! deadline ([`HostBounds::compile_timeout`]) after which it is killed. The
//! child builds an engine with the same code-generation settings as the
//! worker's ([`engine_config`]), compiles the component read from its stdin and
//! writes the artifact to the path it was given (the on-disk cache entry, or a
//! temporary file), atomically. The worker then maps the artifact in.
//!
//! Where no worker binary is at hand (a library user, unit tests), compiling
//! happens on a blocking thread under the same deadline — abandoned, not
//! stopped, when it runs over — and without the memory budget.
//!
//! [`HostBounds::compile_memory`]: super::bounds::HostBounds::compile_memory
//! [`HostBounds::compile_timeout`]: super::bounds::HostBounds::compile_timeout

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::{Config, Engine};

/// The hidden subcommand the child process runs.
pub const SUBCOMMAND: &str = "__compile-component";

/// Largest wasm input the child accepts on stdin (the worker bounds files far below this).
const MAX_INPUT: u64 = 1 << 30;

/// How many bytes of the child's stderr are kept for the error message.
const STDERR_KEPT: usize = 4096;

/// Who compiles components.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Compiler {
    /// On a blocking thread of this process, under the time budget only.
    #[default]
    InProcess,
    /// In a child process running this executable's [`SUBCOMMAND`], under the
    /// time and memory budgets.
    Isolated(PathBuf),
}

impl Compiler {
    /// The running executable (the `celeriac` binary) as the compiler process;
    /// in-process if it cannot be found.
    pub fn this_executable() -> Compiler {
        match std::env::current_exe() {
            Ok(exe) => Compiler::Isolated(exe),
            Err(e) => {
                tracing::warn!(
                    "cannot find the celeriac executable ({e}); compiling components in-process, without a memory budget"
                );
                Compiler::InProcess
            }
        }
    }
}

/// Why a component could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The component is invalid (wasmtime's validation or compilation error).
    #[error("invalid component: {0}")]
    Invalid(String),
    /// Compiling ran past the time budget.
    #[error("compiling took longer than {0:?} (compile_timeout); refused")]
    Timeout(Duration),
    /// Compiling needed more memory than the budget.
    #[error("compiling needed more than {} MiB of memory (compile_memory); refused", .0 >> 20)]
    OutOfMemory(u64),
    /// The compiler process could not be run or failed in another way.
    #[error("the compiler process failed: {0}")]
    Process(String),
}

/// Wasmtime settings that change generated code, shared by the worker's
/// engines and the compiler process so their artifacts are interchangeable.
pub fn engine_config(fuel_metering: bool, stack: u64) -> Config {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true)
        .consume_fuel(fuel_metering)
        .epoch_interruption(true)
        .max_wasm_stack(stack as usize)
        .async_stack_size((stack as usize + (1 << 20)).max(2 << 20))
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
    cfg
}

/// Compile `wasm` into the artifact file `out` for an engine made by
/// [`engine_config`]`(fuel_metering, stack)`, with `compiler`, within
/// `timeout` and (isolated only) `memory` bytes of address space.
pub async fn compile_to_file(
    compiler: &Compiler,
    engine: &Engine,
    (fuel_metering, stack): (bool, u64),
    wasm: std::sync::Arc<[u8]>,
    out: &Path,
    (timeout, memory): (Duration, u64),
) -> Result<(), CompileError> {
    match compiler {
        Compiler::InProcess => {
            let engine = engine.clone();
            let out = out.to_path_buf();
            let job = tokio::task::spawn_blocking(move || {
                let bytes = engine.precompile_component(&wasm).map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
                let tag = uuid::Uuid::new_v4().to_string();
                write_atomically(&out, &bytes, &tag)
                    .map_err(|e| CompileError::Process(format!("cannot write artifact: {e}")))
            });
            match tokio::time::timeout(timeout, job).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(CompileError::Process(format!("compiler thread failed: {e}"))),
                Err(_) => Err(CompileError::Timeout(timeout)),
            }
        }
        Compiler::Isolated(exe) => isolated(exe, (fuel_metering, stack), &wasm, out, (timeout, memory)).await,
    }
}

async fn isolated(
    exe: &Path,
    (fuel_metering, stack): (bool, u64),
    wasm: &[u8],
    out: &Path,
    (timeout, memory): (Duration, u64),
) -> Result<(), CompileError> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .arg(u8::from(fuel_metering).to_string())
        .arg(stack.to_string())
        .arg(out)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: memory, rlim_max: memory };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| CompileError::Process(format!("cannot start {}: {e}", exe.display())))?;
    let pid = child.id().unwrap_or(0);
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let run = async {
        if let Some(mut s) = stdin.take() {
            // A child that dies early closes the pipe; its exit status says why.
            let _ = s.write_all(wasm).await;
        }
        let mut err = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(STDERR_KEPT as u64 * 4).read_to_end(&mut err).await;
        }
        let status = child.wait().await;
        (status, err)
    };
    let (status, err) = match tokio::time::timeout(timeout, run).await {
        Ok(done) => done,
        Err(_) => {
            let _ = child.kill().await;
            let _ = std::fs::remove_file(temporary(out, &pid.to_string()));
            return Err(CompileError::Timeout(timeout));
        }
    };
    let status = status.map_err(|e| CompileError::Process(e.to_string()))?;
    let err = String::from_utf8_lossy(&err);
    let err = crate::sandbox::bounds::truncate_end(err.trim(), STDERR_KEPT);
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    let out_of_memory = err.contains("memory allocation of")
        || err.contains("out of memory")
        || err.contains("Cannot allocate memory")
        || status.signal() == Some(libc::SIGABRT)
        || status.signal() == Some(libc::SIGSEGV);
    if status.code() == Some(2) {
        Err(CompileError::Invalid(err.to_string()))
    } else if out_of_memory {
        Err(CompileError::OutOfMemory(memory))
    } else {
        Err(CompileError::Process(format!("{status}: {err}")))
    }
}

/// Entry point of the compiler process: `celeriac __compile-component
/// <fuel_metering 0|1> <stack bytes> <out path>`, the component on stdin.
/// Exits 0 when the artifact is written, 2 when the component is invalid.
pub fn child_main(args: &[String]) -> ExitCode {
    let fail = |code: u8, msg: String| {
        eprintln!("{msg}");
        ExitCode::from(code)
    };
    let [fuel, stack, out] = args else {
        return fail(1, format!("usage: celeriac {SUBCOMMAND} <fuel 0|1> <stack bytes> <out>"));
    };
    let (Ok(stack), fuel_metering) = (stack.parse::<u64>(), fuel == "1") else {
        return fail(1, format!("bad stack size {stack:?}"));
    };
    let mut wasm = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut std::io::Read::take(std::io::stdin().lock(), MAX_INPUT), &mut wasm)
    {
        return fail(1, format!("cannot read the component from stdin: {e}"));
    }
    let engine = match Engine::new(&engine_config(fuel_metering, stack)) {
        Ok(e) => e,
        Err(e) => return fail(1, format!("cannot create the engine: {e:#}")),
    };
    let bytes = match engine.precompile_component(&wasm) {
        Ok(b) => b,
        Err(e) => return fail(2, format!("{e:#}")),
    };
    match write_atomically(Path::new(out), &bytes, &std::process::id().to_string()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, format!("cannot write {out}: {e}")),
    }
}

/// The temporary file `path` is written through, by the writer named `tag`.
fn temporary(path: &Path, tag: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{tag}"));
    PathBuf::from(name)
}

/// Write `bytes` to `path` through a temporary file in the same directory
/// (named after `tag`, unique among concurrent writers).
pub fn write_atomically(path: &Path, bytes: &[u8], tag: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temporary(path, tag);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
