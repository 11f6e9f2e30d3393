//! Host capability: `host.log` — a guest writes a line to the worker's log.
//!
//! The line goes through `tracing` inside the task's span, so it carries the
//! task id and name like every other line the worker writes about the task
//! (`tasks.add[<id>]: message`).

use super::bindings::celeriac::task::types::LogLevel;

/// Longest log line a guest may write; longer lines are cut.
const MAX_LINE: usize = 8 * 1024;

/// Write one guest log line at the guest's chosen level.
pub fn log(level: LogLevel, message: &str) {
    let mut end = message.len().min(MAX_LINE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let line = &message[..end];
    match level {
        LogLevel::Trace => tracing::trace!("{line}"),
        LogLevel::Debug => tracing::debug!("{line}"),
        LogLevel::Info => tracing::info!("{line}"),
        LogLevel::Warning => tracing::warn!("{line}"),
        LogLevel::Error => tracing::error!("{line}"),
    }
}
