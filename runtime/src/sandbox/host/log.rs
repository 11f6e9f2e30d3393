//! Host capability: `host.log` — a guest writes a line to the worker's log —
//! and the per-call budget all guest output shares.
//!
//! A line goes through `tracing` inside the task's span, so it carries the
//! task id and name like every other line the worker writes about the task
//! (`tasks.add[<id>]: message`). Guest text is untrusted: control characters
//! and newlines are escaped (a guest cannot start a line that looks like the
//! worker's own), a line is cut at [`MAX_LINE`] bytes, and one call may log at
//! most `max_log_lines` lines and `max_log_bytes` bytes in all (host log,
//! stdout and stderr together); past that, one line says the output was
//! truncated and the rest is dropped, so a chatty guest cannot flood the log
//! or slow other tasks behind a slow log reader.

use super::bindings::celeriac::task::types::LogLevel;
use crate::sandbox::bounds::{self, HostBounds};

/// Longest log line a guest may write; longer lines are cut.
const MAX_LINE: usize = 8 * 1024;

/// What is left of one call's output budget.
#[derive(Debug)]
pub struct OutputBudget {
    lines_left: u32,
    bytes_left: usize,
    max_lines: u32,
    max_bytes: usize,
    exhausted: bool,
}

impl OutputBudget {
    /// A full budget for one call.
    pub fn new(b: &HostBounds) -> Self {
        OutputBudget {
            lines_left: b.max_log_lines,
            bytes_left: b.max_log_bytes,
            max_lines: b.max_log_lines,
            max_bytes: b.max_log_bytes,
            exhausted: false,
        }
    }

    /// Log one line of guest text at `level`, if the budget allows.
    pub fn log(&mut self, level: LogLevel, message: &str) {
        let line = bounds::escape_controls(bounds::truncate_end(message, MAX_LINE));
        if !self.admit(line.len()) {
            return;
        }
        match level {
            LogLevel::Trace => tracing::trace!("{line}"),
            LogLevel::Debug => tracing::debug!("{line}"),
            LogLevel::Info => tracing::info!("{line}"),
            LogLevel::Warning => tracing::warn!("{line}"),
            LogLevel::Error => tracing::error!("{line}"),
        }
    }

    /// Log what the guest printed: stdout at INFO, stderr at WARNING (Celery
    /// logs redirected task output at WARNING by default). `dropped` bytes did
    /// not fit the capture buffers.
    pub fn forward(&mut self, stdout: &str, stderr: &str, dropped: usize) {
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            self.log(LogLevel::Info, &format!("stdout: {line}"));
        }
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            self.log(LogLevel::Warning, &format!("stderr: {line}"));
        }
        if dropped > 0 && !self.exhausted {
            self.exhausted = true;
            tracing::warn!("guest output truncated: {dropped} bytes of stdout/stderr did not fit the capture buffer");
        }
    }

    /// Whether a line of `len` bytes fits; the first refusal says so once.
    fn admit(&mut self, len: usize) -> bool {
        if self.lines_left > 0 && len <= self.bytes_left {
            self.lines_left -= 1;
            self.bytes_left -= len;
            return true;
        }
        if !self.exhausted {
            self.exhausted = true;
            tracing::warn!(
                "guest output truncated: this call reached its limit of {} lines / {} bytes of output \
                 (max_log_lines / max_log_bytes); the rest is dropped",
                self.max_lines,
                self.max_bytes
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_logs_at_most_its_budget_then_says_so_once() {
        let mut b = OutputBudget::new(&HostBounds { max_log_lines: 3, max_log_bytes: 100, ..HostBounds::default() });
        assert!(b.admit(10) && b.admit(10) && b.admit(10));
        assert!(!b.admit(1) && b.exhausted);
        let mut b = OutputBudget::new(&HostBounds { max_log_lines: 100, max_log_bytes: 25, ..HostBounds::default() });
        assert!(b.admit(20));
        assert!(!b.admit(10), "bytes are counted too");
        assert!(b.admit(5), "a smaller line still fits");
    }
}
