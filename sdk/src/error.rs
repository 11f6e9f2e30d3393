//! [`TaskError`]: the exception a task raises; [`Retry`]: a retry it asks
//! for; [`Raise`]: either, what a task's `Err` becomes.

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
/// * `message` is `str(exc)`, and the exception's single argument unless
///   `args` says otherwise.
/// * `args` are the exception's arguments (`exc.args`, which Celery stores):
///   `None` means `(message,)`; [`TaskError::with_args`] sets several, e.g.
///   `ExpectedException('Task expected to fail', 'test')`.
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
    /// The human-readable message (`str(exc)`).
    pub message: String,
    /// The exception's arguments (`exc.args`); `None` means `(message,)`.
    pub args: Option<Vec<serde_json::Value>>,
    /// Extra traceback text, if any.
    pub traceback: Option<String>,
}

impl TaskError {
    /// Celery's `SoftTimeLimitExceeded` (from `celery.exceptions`): what a task
    /// returns when it stops at its soft time limit without a partial result
    /// (see [`soft_time_left`](crate::soft_time_left)).
    pub fn soft_time_limit_exceeded() -> Self {
        TaskError::new("SoftTimeLimitExceeded", "")
            .with_module("celery.exceptions")
            .with_args(Vec::<serde_json::Value>::new())
    }

    /// An exception of class `exc_type` with `message`, e.g.
    /// `TaskError::new("ZeroDivisionError", "division by zero")`.
    pub fn new(exc_type: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError { exc_type: exc_type.into(), exc_module: None, message: message.into(), args: None, traceback: None }
    }

    /// Sets the exception's arguments (`exc.args`), which the client gets
    /// back: `TaskError::new("ExpectedException", "").with_args(["Task expected
    /// to fail", "test"])` is `ExpectedException('Task expected to fail',
    /// 'test')`. The message becomes `str(exc)` of those arguments, as Python
    /// computes it, unless one was given.
    ///
    /// ```
    /// use celeriac_sdk::TaskError;
    ///
    /// let e = TaskError::new("ExpectedException", "").with_args(["Task expected to fail", "test"]);
    /// assert_eq!(e.message, "('Task expected to fail', 'test')");
    /// let e = TaskError::new("Oops", "").with_args([42]);
    /// assert_eq!(e.message, "42");
    /// ```
    pub fn with_args<A: Into<serde_json::Value>>(mut self, args: impl IntoIterator<Item = A>) -> Self {
        let args: Vec<serde_json::Value> = args.into_iter().map(Into::into).collect();
        if self.message.is_empty() {
            self.message = py_str_of_args(&args);
        }
        self.args = Some(args);
        self
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

/// Python's `str(exc)` for `exc.args`: `''`, `str(arg)`, or the tuple's repr.
fn py_str_of_args(args: &[serde_json::Value]) -> String {
    fn repr(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            serde_json::Value::Null => "None".into(),
            serde_json::Value::Bool(true) => "True".into(),
            serde_json::Value::Bool(false) => "False".into(),
            other => other.to_string(),
        }
    }
    match args {
        [] => String::new(),
        [serde_json::Value::String(s)] => s.clone(),
        [one] => repr(one),
        many => format!("({})", many.iter().map(repr).collect::<Vec<_>>().join(", ")),
    }
}

/// A retry a task asks for: Celery's `raise self.retry(exc=..., countdown=...)`.
///
/// Return it as the task's error (`Err(Retry::after(5.0).because(e).into())`,
/// or `?` on a `Result<_, Retry>` in a task returning `Result<_, Raise>`).
/// The worker stores `RETRY`, sends the same task again (same id and
/// arguments, `retries` + 1) to run after the countdown, and, once the task has
/// been retried `max_retries` times (declared with `#[task(max_retries = N)]`,
/// default 3), fails it with the `because` exception (or Celery's
/// `MaxRetriesExceededError`). [`crate::request`]`().retries` says how many
/// retries came before.
///
/// ```
/// use celeriac_sdk::{Raise, Retry, TaskError};
///
/// fn fetch(attempt: u32) -> Result<String, Raise> {
///     if attempt < 2 {
///         return Err(Retry::after(1.0).because(TaskError::value_error("not yet")).into());
///     }
///     Ok("done".into())
/// }
/// assert!(matches!(fetch(0), Err(Raise::Retry(_))));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Retry {
    /// Seconds from now (`None`, without `eta`: the task's `default_retry_delay`, 180 s by default).
    pub countdown: Option<f64>,
    /// When to run, ISO-8601 (takes precedence over `countdown`).
    pub eta: Option<String>,
    /// The exception that caused the retry.
    pub exc: Option<TaskError>,
    /// Overrides the task's `max_retries` for this decision.
    pub max_retries: Option<u32>,
}

impl Retry {
    /// A retry after the task's `default_retry_delay`.
    pub fn new() -> Self {
        Retry::default()
    }

    /// A retry in `countdown` seconds.
    pub fn after(countdown: f64) -> Self {
        Retry { countdown: Some(countdown), ..Retry::default() }
    }

    /// A retry at `eta` (ISO-8601, e.g. `2030-01-01T00:00:00+00:00`).
    pub fn at(eta: impl Into<String>) -> Self {
        Retry { eta: Some(eta.into()), ..Retry::default() }
    }

    /// The exception that caused it: stored with `RETRY`, raised once retries are exhausted.
    pub fn because(mut self, exc: impl Into<TaskError>) -> Self {
        self.exc = Some(exc.into());
        self
    }

    /// Overrides the task's `max_retries`.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = Some(n);
        self
    }
}

/// What a task's `Err` becomes: an exception or a retry request. Anything
/// that converts into a [`TaskError`] converts into a `Raise`, so a task
/// returning `Result<T, Raise>` can use `?` on both.
#[derive(Debug, Clone, PartialEq)]
pub enum Raise {
    /// An exception: the task fails (or retries, if its type is in `autoretry_for`).
    Exception(TaskError),
    /// A retry request (boxed: it is larger than an exception, and rare).
    Retry(Box<Retry>),
}

impl<E: Into<TaskError>> From<E> for Raise {
    fn from(e: E) -> Self {
        Raise::Exception(e.into())
    }
}

impl From<Retry> for Raise {
    fn from(r: Retry) -> Self {
        Raise::Retry(Box::new(r))
    }
}

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
        let e =
            TaskError::new("E", "").with_args([serde_json::json!("a"), serde_json::json!(1), serde_json::json!(null)]);
        assert_eq!(e.message, "('a', 1, None)");
        assert_eq!(e.args.as_ref().map(Vec::len), Some(3));
        assert_eq!(TaskError::new("E", "m").with_args(["a", "b"]).message, "m");
    }

    #[test]
    fn retries_and_exceptions_both_become_raise() {
        let r: Raise = Retry::after(2.0).because("boom").max_retries(5).into();
        let Raise::Retry(r) = r else { panic!("not a retry") };
        assert_eq!((r.countdown, r.max_retries), (Some(2.0), Some(5)));
        assert_eq!(r.exc.map(|e| e.exc_type), Some("RuntimeError".to_string()));
        assert!(matches!(Raise::from(TaskError::value_error("x")), Raise::Exception(_)));
        assert_eq!(Retry::at("2030-01-01T00:00:00+00:00").eta.as_deref(), Some("2030-01-01T00:00:00+00:00"));
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
