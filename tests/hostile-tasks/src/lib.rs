//! Test-only hostile task component (issue #9). See README.md.
//!
//! Written against `wit/0.1.0/task.wit` with `wit-bindgen` directly, not the
//! SDK, so that `tasks()` and `invoke()` can return anything a hostile tenant
//! could. It stays on `celeriac:task@0.1.0` on purpose: it is also the proof
//! that components built for the first contract keep loading and running.
//! Every size and name comes from the call's arguments; the behaviour of
//! `tasks()` comes from a mode field patched into the binary by
//! `tests/hostile-gen/gen.py` (one component file per mode, one build).
//!
//! Only meaningful as a wasm32 guest: on the host (`cargo clippy --workspace`)
//! the crate is empty.
#![cfg(target_arch = "wasm32")]

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use serde_json::Value;

wit_bindgen::generate!({
    path: "../../wit/0.1.0",
    world: "task-component",
});

use celeriac::task::host;
use celeriac::task::types::{LogLevel, TaskError};

// --- mode -------------------------------------------------------------------

/// Marker (16 bytes) then the mode (16 bytes, NUL padded). `gen.py` finds the
/// marker in the built component and rewrites the mode bytes in place.
#[used]
static MODE: [u8; 32] = *b"@@HOSTILE-MODE@@normal\0\0\0\0\0\0\0\0\0\0";

fn mode() -> String {
    let base = MODE.as_ptr();
    let mut out = Vec::with_capacity(16);
    for i in 16..32 {
        // Volatile: the compiler must not fold the static's initial value.
        let b = unsafe { core::ptr::read_volatile(base.add(i)) };
        if b == 0 {
            break;
        }
        out.push(b);
    }
    String::from_utf8_lossy(&out).into_owned()
}

// --- allocator ----------------------------------------------------------------

/// A bump allocator: every call runs in a fresh instance, so nothing needs to
/// be freed, and a 4 M-element `Vec<String>` of 3-byte names costs 3 bytes a
/// name instead of a 16-byte malloc chunk (it keeps `tasks()` of the 4 M-name
/// modes inside the default 128 MiB guest memory). The last allocation can be
/// grown or freed in place.
struct Bump;

static NEXT: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);
static LAST: AtomicUsize = AtomicUsize::new(0);
const PAGE: usize = 65536;

fn reserve_to(end: usize) -> bool {
    let have = END.load(Relaxed);
    if end <= have {
        return true;
    }
    let pages = (end - have).div_ceil(PAGE);
    if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
        return false;
    }
    END.store(have + pages * PAGE, Relaxed);
    true
}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if END.load(Relaxed) == 0 {
            let top = core::arch::wasm32::memory_size(0) * PAGE;
            NEXT.store(top, Relaxed);
            END.store(top, Relaxed);
        }
        let start = (NEXT.load(Relaxed) + l.align() - 1) & !(l.align() - 1);
        let Some(end) = start.checked_add(l.size()) else { return std::ptr::null_mut() };
        if !reserve_to(end) {
            return std::ptr::null_mut();
        }
        NEXT.store(end, Relaxed);
        LAST.store(start, Relaxed);
        start as *mut u8
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if p as usize == LAST.load(Relaxed) && p as usize + l.size() == NEXT.load(Relaxed) {
            NEXT.store(p as usize, Relaxed);
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if p as usize == LAST.load(Relaxed) && p as usize + l.size() == NEXT.load(Relaxed) {
            let Some(end) = (p as usize).checked_add(new_size) else { return std::ptr::null_mut() };
            if !reserve_to(end) {
                return std::ptr::null_mut();
            }
            NEXT.store(end, Relaxed);
            return p;
        }
        let new = unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, l.align())) };
        if !new.is_null() {
            unsafe { std::ptr::copy_nonoverlapping(p, new, l.size().min(new_size)) };
        }
        new
    }
}

#[global_allocator]
static ALLOC: Bump = Bump;

// --- tasks() ------------------------------------------------------------------

/// The tasks of the `normal` mode.
const NORMAL: &[&str] = &[
    "add",
    "raise_message",
    "raise_type_name",
    "raise_traceback",
    "raise_as",
    "result_objects",
    "result_nested",
    "result_string",
    "log",
    "forge",
    "state_flood",
    "sleep",
    "spin",
];

/// `t` + `i` in base 36 (distinct short names).
fn short_name(i: usize) -> String {
    let mut digits = [0u8; 16];
    let mut n = i;
    let mut k = digits.len();
    loop {
        k -= 1;
        digits[k] = b"0123456789abcdefghijklmnopqrstuvwxyz"[n % 36];
        n /= 36;
        if n == 0 {
            break;
        }
    }
    let mut s = String::with_capacity(1 + digits.len() - k);
    s.push('t');
    s.push_str(std::str::from_utf8(&digits[k..]).unwrap());
    s
}

/// Name `i` of the `max1000` / `over1001` modes: exactly 128 characters of
/// `[A-Za-z0-9_-]` (`t<i>-` padded with `_`). `tests/test_hostile_tenants.py`
/// builds the same names.
fn long_name(i: usize) -> String {
    let mut s = format!("t{i}-");
    while s.len() < 128 {
        s.push('_');
    }
    s
}

fn names(mode: &str) -> Vec<String> {
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match mode {
        "dup4m" => {
            let mut v = Vec::with_capacity(4_000_000);
            for _ in 0..4_000_000 {
                v.push(String::from("add"));
            }
            v
        }
        "uniq4m" => {
            let mut v = Vec::with_capacity(4_000_000);
            for i in 0..4_000_000 {
                v.push(short_name(i));
            }
            v
        }
        "max1000" => (0..1000).map(long_name).collect(),
        "over1001" => (0..1001).map(long_name).collect(),
        "dotted" => list(&["add", "evil.add"]),
        "colon" => list(&["add", "a:b"]),
        "newline" => list(&["add", "ok\n[2026-11-30 10:00:00,000: INFO/MainProcess] celeriac@forged ready."]),
        "control" => list(&["add", "bell\x07esc\x1b[31mred\x1b[0m"]),
        "long129" => vec!["add".into(), "a".repeat(129)],
        "dupes" => list(&["add", "add"]),
        "empty" => list(&["add", ""]),
        "bigname" => vec!["add".into(), "n".repeat(16 << 20)],
        "trap" => core::arch::wasm32::unreachable(),
        "spin" => loop {
            black_box(0u64);
        },
        _ => list(NORMAL),
    }
}

// --- invoke() -----------------------------------------------------------------

fn err(exc_type: &str, module: Option<&str>, message: String, traceback: Option<String>) -> TaskError {
    TaskError { exc_type: exc_type.into(), exc_module: module.map(Into::into), message, traceback }
}

fn type_error(message: String) -> TaskError {
    err("TypeError", None, message, None)
}

struct Args(Vec<Value>);

impl Args {
    fn u(&self, i: usize) -> Result<usize, TaskError> {
        self.0
            .get(i)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| type_error(format!("argument {i} must be a non-negative integer")))
    }

    fn f(&self, i: usize) -> Result<f64, TaskError> {
        self.0.get(i).and_then(Value::as_f64).ok_or_else(|| type_error(format!("argument {i} must be a number")))
    }

    fn s(&self, i: usize) -> Result<String, TaskError> {
        self.0
            .get(i)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| type_error(format!("argument {i} must be a string")))
    }

    fn opt_s(&self, i: usize) -> Result<Option<String>, TaskError> {
        match self.0.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(type_error(format!("argument {i} must be a string or null"))),
        }
    }
}

/// `n` bytes: `head`, then `fill` repeated, then `tail` (shortened if `n` is small).
fn sized(n: usize, head: &str, fill: u8, tail: &str) -> String {
    let mut v = Vec::with_capacity(n);
    if n >= head.len() + tail.len() {
        v.extend_from_slice(head.as_bytes());
        v.resize(n - tail.len(), fill);
        v.extend_from_slice(tail.as_bytes());
    } else {
        v.resize(n, fill);
    }
    String::from_utf8(v).unwrap()
}

fn write_line(stream: &str, line: &str) {
    match stream {
        "host" => host::log(LogLevel::Warning, line),
        "stdout" => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
        "stderr" => {
            let mut out = std::io::stderr().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
        _ => {
            write_line("host", line);
            write_line("stdout", line);
            write_line("stderr", line);
        }
    }
}

fn run(name: &str, args: &Args) -> Result<String, TaskError> {
    match name {
        "add" => {
            let x = args.0.first().and_then(Value::as_i64).ok_or_else(|| type_error("x must be an integer".into()))?;
            let y = args.0.get(1).and_then(Value::as_i64).ok_or_else(|| type_error("y must be an integer".into()))?;
            Ok(x.wrapping_add(y).to_string())
        }
        "raise_message" => Err(err("ValueError", None, sized(args.u(0)?, "HEAD", b'x', "TAIL"), None)),
        "raise_type_name" => Err(err(&"E".repeat(args.u(0)?), None, "a very long class name".into(), None)),
        "raise_traceback" => {
            let n = args.u(0)?;
            let mut tb = String::with_capacity(n + 64);
            tb.push_str("TBHEAD\n");
            let mut i = 0usize;
            while tb.len() + 40 < n {
                tb.push_str(&format!("  File \"evil.py\", line {i}, in f\n"));
                i += 1;
            }
            tb.push_str("TBTAIL");
            Err(err("ValueError", None, "long traceback".into(), Some(tb)))
        }
        "raise_as" => {
            let module = args.opt_s(0)?;
            Err(err(&args.s(1)?, module.as_deref(), args.s(2)?, None))
        }
        "result_objects" => {
            let n = args.u(0)?;
            let mut s = String::with_capacity(3 * n + 2);
            s.push('[');
            for i in 0..n {
                if i > 0 {
                    s.push(',');
                }
                s.push_str("{}");
            }
            s.push(']');
            Ok(s)
        }
        "result_nested" => {
            let d = args.u(0)?;
            let mut s = String::with_capacity(2 * d);
            s.extend(std::iter::repeat_n('[', d));
            s.extend(std::iter::repeat_n(']', d));
            Ok(s)
        }
        "result_string" => {
            let n = args.u(0)?;
            let mut s = String::with_capacity(n + 2);
            s.push('"');
            s.extend(std::iter::repeat_n('y', n));
            s.push('"');
            Ok(s)
        }
        "log" => {
            let (lines, bytes, stream) = (args.u(0)?, args.u(1)?, args.s(2)?);
            let mut line = String::with_capacity(bytes + 32);
            for i in 0..lines {
                line.clear();
                line.push_str("line ");
                line.push_str(&i.to_string());
                line.push(' ');
                while line.len() < bytes {
                    line.push('z');
                }
                write_line(&stream, &line);
            }
            Ok(lines.to_string())
        }
        "forge" => {
            let text = args.s(0)?;
            host::log(LogLevel::Info, &text);
            print!("{text}\n");
            let _ = std::io::stdout().flush();
            eprint!("{text}\n");
            Err(err("ValueError", None, text, None))
        }
        "state_flood" => {
            let (count, bytes) = (args.u(0)?, args.u(1)?);
            let meta = format!("{{\"pad\": \"{}\"}}", "p".repeat(bytes));
            for _ in 0..count {
                host::update_state("PROGRESS", &meta);
            }
            Ok(count.to_string())
        }
        "sleep" => {
            let secs = args.f(0)?;
            std::thread::sleep(std::time::Duration::from_secs_f64(secs));
            Ok(serde_json::to_string(&secs).unwrap())
        }
        "spin" => {
            let mut x = 0u64;
            loop {
                x = black_box(x.wrapping_add(1));
            }
        }
        // Names served only by the patched modes (`t0`, ...): echo the name.
        other => Ok(serde_json::to_string(other).unwrap()),
    }
}

struct Component;

impl exports::celeriac::task::task::Guest for Component {
    fn tasks() -> Vec<String> {
        names(&mode())
    }

    fn invoke(name: String, args: String, _kwargs: String) -> Result<String, TaskError> {
        let args = serde_json::from_str::<Vec<Value>>(&args).map_err(|e| type_error(format!("bad args: {e}")))?;
        run(&name, &Args(args))
    }
}

export!(Component);
