//! Bounds on what the host does on a guest's behalf.
//!
//! The sandbox's own limits ([`super::limits`]) stop a guest from using too
//! much fuel, linear memory, stack or time. Everything the *worker* does for a
//! guest — lifting its result and error into host memory, re-encoding them,
//! logging its output, listing its tasks, reading and compiling its file — is
//! work a hostile tenant could otherwise make unbounded, taking down every
//! other tenant on the worker. Each bound here has a default and a `[sandbox]`
//! setting; hitting one gives a clear FAILURE or a load-time refusal, never a
//! crash.
//!
//! The text helpers make guest text safe to put in the worker's log and in a
//! stored result: [`truncate_middle`] keeps the head and tail of oversized text
//! with a marker, and [`escape_controls`] turns newlines and other control
//! characters into visible escapes, so a guest cannot forge a worker log line.

use std::time::Duration;

/// Default cap on a success result's JSON text.
pub const DEFAULT_MAX_RESULT_SIZE: usize = 8 << 20;
/// Default cap on the host memory one parsed result may take.
pub const DEFAULT_MAX_RESULT_MEMORY: usize = 64 << 20;
/// Default cap on host memory held by results waiting to be stored, worker-wide.
pub const DEFAULT_MAX_HOST_MEMORY: usize = 256 << 20;
/// Default cap on an exception's message and on its traceback (each).
pub const DEFAULT_MAX_ERROR_SIZE: usize = 64 << 10;
/// Longest exception class name kept from a guest.
pub const MAX_EXC_TYPE_LEN: usize = 128;
/// Default cap on guest output lines (host log + stdout + stderr) per call.
pub const DEFAULT_MAX_LOG_LINES: u32 = 1000;
/// Default cap on guest output bytes (host log + stdout + stderr) per call.
pub const DEFAULT_MAX_LOG_BYTES: usize = 1 << 20;
/// Default cap on the task names one component may declare.
pub const DEFAULT_MAX_TASKS_PER_COMPONENT: usize = 1000;
/// Longest task name (the part a component declares) accepted.
pub const MAX_TASK_NAME_LEN: usize = 128;
/// Default cap on a component file's size.
pub const DEFAULT_MAX_COMPONENT_SIZE: u64 = 64 << 20;
/// Default time budget for compiling one component.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default address-space budget of the process compiling one component.
pub const DEFAULT_COMPILE_MEMORY: u64 = 2 << 30;

/// The host-side bounds (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostBounds {
    /// Largest success result (JSON text) a task may return.
    pub max_result_size: usize,
    /// Largest estimated host memory a parsed result may take.
    pub max_result_memory: usize,
    /// Host memory all results waiting to be stored may take together; a call
    /// whose result does not fit waits for room (back-pressure).
    pub max_host_memory: usize,
    /// Longest exception message, and longest traceback, kept from a guest.
    pub max_error_size: usize,
    /// Guest output lines logged per call.
    pub max_log_lines: u32,
    /// Guest output bytes logged per call.
    pub max_log_bytes: usize,
    /// Task names one component may declare.
    pub max_tasks_per_component: usize,
    /// Largest component file loaded.
    pub max_component_size: u64,
    /// Time budget to compile one component.
    pub compile_timeout: Duration,
    /// Address-space budget of the process that compiles one component.
    pub compile_memory: u64,
}

impl Default for HostBounds {
    fn default() -> Self {
        HostBounds {
            max_result_size: DEFAULT_MAX_RESULT_SIZE,
            max_result_memory: DEFAULT_MAX_RESULT_MEMORY,
            max_host_memory: DEFAULT_MAX_HOST_MEMORY,
            max_error_size: DEFAULT_MAX_ERROR_SIZE,
            max_log_lines: DEFAULT_MAX_LOG_LINES,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            max_tasks_per_component: DEFAULT_MAX_TASKS_PER_COMPONENT,
            max_component_size: DEFAULT_MAX_COMPONENT_SIZE,
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
            compile_memory: DEFAULT_COMPILE_MEMORY,
        }
    }
}

/// `text` cut to at most about `max` bytes, keeping its head and tail around a
/// marker that says how much was cut. Text within the bound is returned as is.
pub fn truncate_middle(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let keep = max / 2;
    let head = floor_boundary(text, keep);
    let tail = ceil_boundary(text, text.len() - keep);
    let cut = tail - head;
    cut_marked(&text[..head], cut, &text[tail..])
}

/// The head and tail of a text of which `cut` bytes in the middle were left
/// out, joined by the marker that says so.
pub fn cut_marked(head: &str, cut: usize, tail: &str) -> String {
    format!("{head}\n[... {cut} bytes truncated ...]\n{tail}")
}

/// `text` cut to at most `max` bytes at a character boundary.
pub fn truncate_end(text: &str, max: usize) -> &str {
    &text[..floor_boundary(text, max)]
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Whether `c` must not reach a log line as is: C0/C1 control characters
/// (newline, carriage return, escape, ...), DEL, Unicode line and paragraph
/// separators and the bidirectional overrides that reorder displayed text.
fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Guest text made safe for one log line: control characters become visible
/// escapes (`\n`, `\r`, `\x1b`, `\u202e`), everything else is kept.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_unsafe(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A guest's exception class name made safe to hand to a Python client: at
/// most [`MAX_EXC_TYPE_LEN`] characters of `[A-Za-z0-9_]`, not starting with a
/// digit (other characters become `_`); an empty name becomes `TaskError`.
pub fn sanitize_exc_type(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(MAX_EXC_TYPE_LEN)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if out.is_empty() {
        return "TaskError".to_string();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
        out.truncate(MAX_EXC_TYPE_LEN);
    }
    out
}

/// The cost estimate lives with the other pure data functions (the fuzz
/// targets build it without the sandbox).
pub use crate::protocol::parsed_json_cost;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_text_keeps_its_head_and_tail_around_a_marker() {
        let text = format!("{}{}{}", "a".repeat(100), "b".repeat(1000), "c".repeat(100));
        let cut = truncate_middle(&text, 200);
        assert!(cut.starts_with(&"a".repeat(100)), "{cut}");
        assert!(cut.ends_with(&"c".repeat(100)), "{cut}");
        assert!(cut.contains("[... 1000 bytes truncated ...]"), "{cut}");
        assert_eq!(truncate_middle("short", 200), "short");
    }

    #[test]
    fn truncation_never_splits_a_character() {
        let text = "é".repeat(1000);
        let cut = truncate_middle(&text, 101);
        assert!(cut.contains("bytes truncated"));
        assert_eq!(truncate_end("éé", 3), "é");
    }

    #[test]
    fn newlines_and_escapes_in_guest_text_become_visible() {
        let forged = "ok\n[2026-01-01 00:00:00,000: INFO/MainProcess] Task tasks.add[x] succeeded\r\x1b[31m\u{202e}";
        let safe = escape_controls(forged);
        assert!(!safe.contains('\n') && !safe.contains('\r') && !safe.contains('\x1b'));
        assert!(safe.contains("ok\\n[2026"), "{safe}");
        assert!(safe.ends_with("\\r\\x1b[31m\\u202e"), "{safe}");
        assert!(matches!(escape_controls("plain\ttext"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn exception_names_are_cut_to_python_identifier_characters() {
        assert_eq!(sanitize_exc_type("ValueError"), "ValueError");
        assert_eq!(sanitize_exc_type("os.system"), "os_system");
        assert_eq!(sanitize_exc_type("bad\nname"), "bad_name");
        assert_eq!(sanitize_exc_type("9lives"), "_9lives");
        assert_eq!(sanitize_exc_type(""), "TaskError");
        assert_eq!(sanitize_exc_type(&"E".repeat(20_000)).len(), MAX_EXC_TYPE_LEN);
    }
}
