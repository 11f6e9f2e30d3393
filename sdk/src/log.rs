//! Lines in the worker's log, tagged with the running task's id and name.
//!
//! ```no_run
//! use celeriac_sdk::log;
//!
//! log::info("starting");
//! log::warning(format!("{} items skipped", 3));
//! celeriac_sdk::info!("done after {} steps", 42);
//! ```
//!
//! Output written with `println!` / `eprintln!` is captured by the worker too,
//! but without a level.

use crate::__private::bindings::celeriac::task::host;
use crate::__private::bindings::celeriac::task::types::LogLevel;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected, but the task goes on.
    Warning,
    /// Something failed.
    Error,
}

/// Writes `message` to the worker's log at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    let level = match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warning => LogLevel::Warning,
        Level::Error => LogLevel::Error,
    };
    host::log(level, message.as_ref());
}

/// Writes `message` to the worker's log at level `trace`.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message)
}

/// Writes `message` to the worker's log at level `debug`.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message)
}

/// Writes `message` to the worker's log at level `info`.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message)
}

/// Writes `message` to the worker's log at level `warning`.
pub fn warning(message: impl AsRef<str>) {
    log(Level::Warning, message)
}

/// Writes `message` to the worker's log at level `error`.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message)
}

/// `trace!("fmt", args..)`: [`log::trace`](crate::log::trace) with `format!` arguments.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log::trace(::std::format!($($arg)*)) };
}

/// `debug!("fmt", args..)`: [`log::debug`](crate::log::debug) with `format!` arguments.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::debug(::std::format!($($arg)*)) };
}

/// `info!("fmt", args..)`: [`log::info`](crate::log::info) with `format!` arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::info(::std::format!($($arg)*)) };
}

/// `warning!("fmt", args..)`: [`log::warning`](crate::log::warning) with `format!` arguments.
#[macro_export]
macro_rules! warning {
    ($($arg:tt)*) => { $crate::log::warning(::std::format!($($arg)*)) };
}

/// `error!("fmt", args..)`: [`log::error`](crate::log::error) with `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::error(::std::format!($($arg)*)) };
}
