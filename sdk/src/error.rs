//! [`TaskError`]: the exception a task raises.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An exception raised by a task, as the Celery client sees it.
///
/// Returning `Err(TaskError)` from a task (or any `Err(e)` where
/// `e: Into<TaskError>`) makes the task's result a Celery `FAILURE`. A Python
/// client's `result.get()` then re-raises it:
///
/// * `exc_type` is the exception class name, e.g. `"ValueError"`,
///   `"ZeroDivisionError"`, or a name of your own such as `"InvoiceNotFound"`.
/// * `exc_module` is the Python module of that class. `None` (the default)
///   means `builtins` for a Python built-in exception name and
///   `celeriac.exceptions` for any other name (the worker decides).
/// * `message` is the exception's single argument.
/// * `traceback` is extra traceback text appended to the worker's own; Rust
///   tasks usually leave it `None`.
///
/// ```
/// use celeriac_sdk::TaskError;
///
/// let e = TaskError::new("ZeroDivisionError", "division by zero");
/// assert_eq!(e.to_string(), "ZeroDivisionError: division by zero");
///
/// let e = TaskError::new("InvoiceNotFound", "no invoice 42").with_module("billing.errors");
/// assert_eq!(e.exc_module.as_deref(), Some("billing.errors"));
///
/// // `?` converts common Rust errors:
/// fn parse(s: &str) -> Result<i64, TaskError> {
///     Ok(s.parse::<i64>()?) // ParseIntError -> ValueError
/// }
/// assert_eq!(parse("x").unwrap_err().exc_type, "ValueError");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// The exception class name, e.g. `ValueError`.
    pub exc_type: String,
    /// The Python module of the exception class; `None` lets the worker pick
    /// (`builtins` for built-in names, `celeriac.exceptions` otherwise).
    pub exc_module: Option<String>,
    /// The human-readable message.
    pub message: String,
    /// Extra traceback text, if any.
    pub traceback: Option<String>,
}

impl TaskError {
    /// An exception of class `exc_type` with `message`, e.g.
    /// `TaskError::new("ZeroDivisionError", "division by zero")`.
    pub fn new(exc_type: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError { exc_type: exc_type.into(), exc_module: None, message: message.into(), traceback: None }
    }

    /// A Python `ValueError(message)`.
    pub fn value_error(message: impl Into<String>) -> Self {
        Self::new("ValueError", message)
    }

    /// A Python `TypeError(message)`.
    pub fn type_error(message: impl Into<String>) -> Self {
        Self::new("TypeError", message)
    }

    /// A Python `RuntimeError(message)`.
    pub fn runtime_error(message: impl Into<String>) -> Self {
        Self::new("RuntimeError", message)
    }

    /// Sets the Python module the exception class lives in.
    pub fn with_module(mut self, module: impl Into<String>) -> Self {
        self.exc_module = Some(module.into());
        self
    }

    /// Attaches traceback text, which the worker appends to its own.
    pub fn with_traceback(mut self, traceback: impl Into<String>) -> Self {
        self.traceback = Some(traceback.into());
        self
    }
}

impl fmt::Display for TaskError {
    /// `ValueError: message`, or `module.Class: message` when a module is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(module) = &self.exc_module {
            write!(f, "{module}.")?;
        }
        write!(f, "{}: {}", self.exc_type, self.message)
    }
}

impl std::error::Error for TaskError {}

/// `Err("message".to_string())` raises `RuntimeError("message")`.
impl From<String> for TaskError {
    fn from(message: String) -> Self {
        Self::runtime_error(message)
    }
}

/// `Err("message")` raises `RuntimeError("message")`.
impl From<&str> for TaskError {
    fn from(message: &str) -> Self {
        Self::runtime_error(message)
    }
}

/// A JSON (de)serialisation error raises `ValueError`, like Python's
/// `json.JSONDecodeError` (a `ValueError` subclass).
impl From<serde_json::Error> for TaskError {
    fn from(e: serde_json::Error) -> Self {
        Self::value_error(e.to_string())
    }
}

/// An I/O error raises `OSError` with the error's message.
impl From<std::io::Error> for TaskError {
    fn from(e: std::io::Error) -> Self {
        Self::new("OSError", e.to_string())
    }
}

/// `"x".parse::<i64>()?` raises `ValueError`, like Python's `int("x")`.
impl From<std::num::ParseIntError> for TaskError {
    fn from(e: std::num::ParseIntError) -> Self {
        Self::value_error(e.to_string())
    }
}

/// `"x".parse::<f64>()?` raises `ValueError`, like Python's `float("x")`.
impl From<std::num::ParseFloatError> for TaskError {
    fn from(e: std::num::ParseFloatError) -> Self {
        Self::value_error(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors() {
        let e = TaskError::value_error("bad");
        assert_eq!((e.exc_type.as_str(), e.message.as_str()), ("ValueError", "bad"));
        assert_eq!(e.exc_module, None);
        assert_eq!(e.traceback, None);
        assert_eq!(TaskError::type_error("t").exc_type, "TypeError");
        assert_eq!(TaskError::runtime_error("r").exc_type, "RuntimeError");
        let e = TaskError::new("Oops", "m").with_module("my.mod").with_traceback("tb");
        assert_eq!(e.to_string(), "my.mod.Oops: m");
        assert_eq!(e.traceback.as_deref(), Some("tb"));
    }

    #[test]
    fn conversions() {
        assert_eq!(TaskError::from("x").exc_type, "RuntimeError");
        assert_eq!(TaskError::from(String::from("x")).message, "x");
        let json_err = serde_json::from_str::<i64>("nope").unwrap_err();
        assert_eq!(TaskError::from(json_err).exc_type, "ValueError");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = TaskError::from(io);
        assert_eq!((e.exc_type.as_str(), e.message.as_str()), ("OSError", "no such file"));
        assert_eq!(TaskError::from("1.5x".parse::<f64>().unwrap_err()).exc_type, "ValueError");
    }
}
