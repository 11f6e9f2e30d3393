//! Exceptions as Celery stores them in FAILURE / RETRY / REVOKED results.
//!
//! With a JSON or msgpack result serializer, Celery stores an exception as
//! `{"exc_type": <class name>, "exc_message": [<args>], "exc_module": <module>}`.
//! The Python client imports `exc_module` and looks up `exc_type` to rebuild
//! the exception, so the module matters: `TypeError` must say `builtins` for
//! `except TypeError` to catch it (see the client tests in
//! `03-result-backend/client-handwritten-tests.json`). This file knows the
//! module of every Python built-in exception and of the Celery / billiard /
//! kombu exceptions a worker can raise, and renders exceptions the way Python
//! prints them (`repr`, `str`, the last line of a traceback).

use serde_json::{Map, Value};

use super::error::ProtocolError;
use super::repr::{py_repr, py_str, py_tuple_repr};

/// Module name of Python's built-in exceptions.
pub const BUILTINS: &str = "builtins";

/// Every exception class in Python 3's `builtins` (3.11 – 3.13, including
/// warnings, the `IOError`/`EnvironmentError` aliases and the 3.13 additions).
pub const PYTHON_BUILTIN_EXCEPTIONS: &[&str] = &[
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "BaseException",
    "BaseExceptionGroup",
    "BlockingIOError",
    "BrokenPipeError",
    "BufferError",
    "BytesWarning",
    "ChildProcessError",
    "ConnectionAbortedError",
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "DeprecationWarning",
    "EOFError",
    "EncodingWarning",
    "EnvironmentError",
    "Exception",
    "ExceptionGroup",
    "FileExistsError",
    "FileNotFoundError",
    "FloatingPointError",
    "FutureWarning",
    "GeneratorExit",
    "IOError",
    "ImportError",
    "ImportWarning",
    "IndentationError",
    "IndexError",
    "InterruptedError",
    "IsADirectoryError",
    "KeyError",
    "KeyboardInterrupt",
    "LookupError",
    "MemoryError",
    "ModuleNotFoundError",
    "NameError",
    "NotADirectoryError",
    "NotImplementedError",
    "OSError",
    "OverflowError",
    "PendingDeprecationWarning",
    "PermissionError",
    "ProcessLookupError",
    "PythonFinalizationError",
    "RecursionError",
    "ReferenceError",
    "ResourceWarning",
    "RuntimeError",
    "RuntimeWarning",
    "StopAsyncIteration",
    "StopIteration",
    "SyntaxError",
    "SyntaxWarning",
    "SystemError",
    "SystemExit",
    "TabError",
    "TimeoutError",
    "TypeError",
    "UnboundLocalError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "UnicodeError",
    "UnicodeTranslateError",
    "UnicodeWarning",
    "UserWarning",
    "ValueError",
    "Warning",
    "ZeroDivisionError",
];

/// Exceptions a Celery worker raises, with the module their class really
/// lives in (`type(exc).__module__`, which is what Celery stores). The time
/// limit and worker-lost exceptions come from billiard; `celery.exceptions`
/// re-exports them, so a client can import them from either module.
pub const CELERY_EXCEPTIONS: &[(&str, &str)] = &[
    ("AlreadyRegistered", "celery.exceptions"),
    ("ChordError", "celery.exceptions"),
    ("Ignore", "celery.exceptions"),
    ("ImproperlyConfigured", "celery.exceptions"),
    ("IncompleteStream", "celery.exceptions"),
    ("InvalidTaskError", "celery.exceptions"),
    ("MaxRetriesExceededError", "celery.exceptions"),
    ("NotRegistered", "celery.exceptions"),
    ("QueueNotFound", "celery.exceptions"),
    ("Reject", "celery.exceptions"),
    ("Retry", "celery.exceptions"),
    ("SecurityError", "celery.exceptions"),
    ("TaskError", "celery.exceptions"),
    ("TaskRevokedError", "celery.exceptions"),
    ("SoftTimeLimitExceeded", "billiard.exceptions"),
    ("Terminated", "billiard.exceptions"),
    ("TimeLimitExceeded", "billiard.exceptions"),
    ("WorkerLostError", "billiard.exceptions"),
    ("ContentDisallowed", "kombu.exceptions"),
    ("DecodeError", "kombu.exceptions"),
    ("EncodeError", "kombu.exceptions"),
];

/// True when `name` is a Python built-in exception class.
pub fn is_builtin_exception(name: &str) -> bool {
    PYTHON_BUILTIN_EXCEPTIONS.contains(&name)
}

/// The module to store for an exception class name: `builtins` for Python
/// built-ins (checked first: `TimeoutError` is the built-in one), the real
/// module for Celery / billiard / kombu exceptions, `default` otherwise
/// (the worker passes `celeriac.exceptions`).
pub fn exception_module<'a>(name: &str, default: &'a str) -> &'a str {
    if is_builtin_exception(name) {
        return BUILTINS;
    }
    CELERY_EXCEPTIONS.iter().find(|(n, _)| *n == name).map_or(default, |(_, m)| m)
}

/// Built-in exceptions that do not derive from `Exception`: a client's
/// `except Exception` does not catch them, and `.get()` raising `SystemExit`
/// would end the client. A guest never gets to raise these as themselves.
const BASE_ONLY_BUILTINS: &[&str] =
    &["BaseException", "BaseExceptionGroup", "SystemExit", "KeyboardInterrupt", "GeneratorExit"];

/// The class a Python client may safely rebuild for an exception an untrusted
/// guest raised, as `(exc_type, exc_module)`.
///
/// Celery's client imports nothing itself but looks `exc_module` up in
/// `sys.modules` and walks `exc_type` as a dotted path, so a guest naming any
/// loaded class could make `.get()` raise `SystemExit`, `WorkerShutdown` or
/// `asyncio.CancelledError` (which `except Exception` does not catch), or name a
/// non-exception (`os` / `system`) and make the client raise `SecurityError`.
/// Only three kinds of names are kept: Python built-ins that derive from
/// `Exception`, the Celery / billiard / kombu task exceptions of
/// [`CELERY_EXCEPTIONS`] in their real module, and names in `stand_in_module`
/// (Celeriac's own, which no client can import, so Celery builds a plain
/// `Exception` subclass with the guest's name). Everything else becomes such a
/// stand-in. The name is first cut to a Python identifier (`sanitize`).
pub fn safe_guest_exception(
    exc_type: &str,
    module: Option<&str>,
    stand_in_module: &str,
    sanitize: impl Fn(&str) -> String,
) -> (String, String) {
    let name = sanitize(exc_type);
    let stand_in = |name: String| (name, stand_in_module.to_owned());
    if name != exc_type {
        return stand_in(name);
    }
    let builtin = is_builtin_exception(&name) && !BASE_ONLY_BUILTINS.contains(&name.as_str());
    // A client raising `SecurityError` is what this guards against; a guest
    // does not get to raise it by name either.
    let celery = CELERY_EXCEPTIONS.iter().find(|(n, _)| *n == name && *n != "SecurityError").map(|(_, m)| *m);
    match module {
        None | Some(BUILTINS) if builtin => (name, BUILTINS.to_owned()),
        None => match celery {
            Some(m) => (name, m.to_owned()),
            None => stand_in(name),
        },
        // celery.exceptions re-exports billiard's time limit exceptions.
        Some(m) if celery == Some(m) || (celery.is_some() && m == "celery.exceptions") => (name, m.to_owned()),
        Some(_) => stand_in(name),
    }
}

/// A serialised exception: `{"exc_type", "exc_message", "exc_module"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionInfo {
    /// Class name, e.g. `TypeError`.
    pub exc_type: String,
    /// The exception's `args`.
    pub exc_message: Vec<Value>,
    /// Module of the class, e.g. `builtins`. `None` only when read from a
    /// stored value that lacked it (a Python client then raises a generated
    /// class that `except TypeError` does not catch).
    pub exc_module: Option<String>,
}

impl ExceptionInfo {
    /// An exception with an explicit module.
    pub fn new(exc_type: impl Into<String>, args: Vec<Value>, module: impl Into<String>) -> Self {
        ExceptionInfo { exc_type: exc_type.into(), exc_message: args, exc_module: Some(module.into()) }
    }

    /// An exception whose module is picked by [`exception_module`].
    pub fn with_default_module(exc_type: impl Into<String>, args: Vec<Value>, default_module: &str) -> Self {
        let exc_type = exc_type.into();
        let module = exception_module(&exc_type, default_module).to_owned();
        ExceptionInfo { exc_type, exc_message: args, exc_module: Some(module) }
    }

    /// Shorthand for the common one-string-argument exception.
    pub fn with_message(exc_type: impl Into<String>, message: impl Into<String>, default_module: &str) -> Self {
        Self::with_default_module(exc_type, vec![Value::String(message.into())], default_module)
    }

    /// `TaskRevokedError(reason)` from `celery.exceptions`; `reason` is
    /// `revoked`, `terminated` or `expired`.
    pub fn task_revoked(reason: &str) -> Self {
        Self::new("TaskRevokedError", vec![Value::from(reason)], "celery.exceptions")
    }

    /// `NotRegistered(<task name>)`, as Celery reports an unknown task.
    pub fn not_registered(task_name: &str) -> Self {
        Self::new("NotRegistered", vec![Value::from(task_name)], "celery.exceptions")
    }

    /// The stored form, keys in Celery's order.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("exc_type".to_owned(), Value::String(self.exc_type.clone()));
        m.insert("exc_message".to_owned(), Value::Array(self.exc_message.clone()));
        m.insert("exc_module".to_owned(), self.exc_module.as_ref().map_or(Value::Null, |s| Value::String(s.clone())));
        Value::Object(m)
    }

    /// Read a stored exception, as leniently as Celery's client does:
    /// `exc_message` may be a single value instead of a list, `exc_module`
    /// may be missing. `exc_type` must be a string.
    pub fn from_value(value: &Value) -> Result<Self, ProtocolError> {
        let obj = value
            .as_object()
            .ok_or_else(|| ProtocolError::InvalidResult("exception result must be an object".to_owned()))?;
        let exc_type = obj
            .get("exc_type")
            .and_then(Value::as_str)
            .ok_or_else(|| ProtocolError::InvalidResult("exception has no string `exc_type`".to_owned()))?
            .to_owned();
        let exc_message = match obj.get("exc_message") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(other) => vec![other.clone()],
        };
        let exc_module = obj.get("exc_module").and_then(Value::as_str).map(str::to_owned);
        Ok(ExceptionInfo { exc_type, exc_message, exc_module })
    }

    /// Python `repr(exc)`: `TypeError('boom')`, `MyError('a', 42)`, `E()`.
    pub fn repr(&self) -> String {
        match self.exc_message.as_slice() {
            [one] => format!("{}({})", self.exc_type, py_repr(one)),
            many => format!("{}{}", self.exc_type, py_tuple_repr(many)),
        }
    }

    /// Python `str(exc)`: empty for no args, `str(arg)` for one (`repr(arg)`
    /// for `KeyError` and its subclass `NotRegistered`), the tuple repr for
    /// several.
    pub fn message(&self) -> String {
        match self.exc_message.as_slice() {
            [] => String::new(),
            [one] if matches!(self.exc_type.as_str(), "KeyError" | "NotRegistered") => py_repr(one),
            [one] => py_str(one),
            many => py_tuple_repr(many),
        }
    }

    /// The last line of a Python traceback for this exception:
    /// `TypeError: boom`, `tasks.MyCustomError: ('custom boom', 42)`,
    /// `celery.exceptions.NotRegistered: 'x'`, or just the qualified name
    /// when the message is empty.
    pub fn format_exception_only(&self) -> String {
        let name = match self.exc_module.as_deref() {
            None | Some("builtins") | Some("__main__") | Some("") => self.exc_type.clone(),
            Some(m) => format!("{m}.{}", self.exc_type),
        };
        let msg = self.message();
        if msg.is_empty() { name } else { format!("{name}: {msg}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_guest_cannot_name_a_class_that_escapes_except_exception() {
        let keep = |s: &str| s.to_owned();
        let safe = |t: &str, m: Option<&str>| safe_guest_exception(t, m, "celeriac.exceptions", keep);
        assert_eq!(safe("ValueError", None), ("ValueError".into(), "builtins".into()));
        assert_eq!(safe("ValueError", Some("builtins")), ("ValueError".into(), "builtins".into()));
        assert_eq!(safe("TimeLimitExceeded", Some("celery.exceptions")).1, "celery.exceptions");
        assert_eq!(safe("TimeLimitExceeded", None).1, "billiard.exceptions");
        assert_eq!(safe("EncodeError", Some("kombu.exceptions")).1, "kombu.exceptions");
        assert_eq!(safe("OutOfFuel", Some("celeriac.exceptions")).1, "celeriac.exceptions");
        for (t, m) in [
            ("SystemExit", Some("builtins")),
            ("KeyboardInterrupt", None),
            ("BaseException", None),
            ("GeneratorExit", Some("builtins")),
            ("WorkerShutdown", Some("celery.exceptions")),
            ("WorkerTerminate", Some("celery.exceptions")),
            ("SystemTerminate", Some("celery.worker.state")),
            ("CancelledError", Some("asyncio")),
            ("CancelledError", Some("asyncio.exceptions")),
            ("system", Some("os")),
            ("ValueError", Some("os")),
            ("NotRegistered", Some("builtins")),
            ("InvoiceMissing", Some("billing")),
            ("InvoiceMissing", None),
            ("SecurityError", Some("celery.exceptions")),
            ("SecurityError", None),
        ] {
            assert_eq!(safe(t, m), (t.to_owned(), "celeriac.exceptions".to_owned()), "{t} {m:?}");
        }
        let cut = |s: &str| s.replace('.', "_");
        assert_eq!(
            safe_guest_exception("exceptions.ValueError", Some("builtins"), "celeriac.exceptions", cut),
            ("exceptions_ValueError".into(), "celeriac.exceptions".into())
        );
    }

    #[test]
    fn modules() {
        const DEF: &str = "celeriac.exceptions";
        for b in [
            "TypeError",
            "ZeroDivisionError",
            "TimeoutError",
            "RecursionError",
            "MemoryError",
            "BaseException",
            "Exception",
            "ArithmeticError",
            "KeyError",
            "UserWarning",
            "ExceptionGroup",
        ] {
            assert_eq!(exception_module(b, DEF), "builtins", "{b}");
        }
        assert_eq!(exception_module("NotRegistered", DEF), "celery.exceptions");
        assert_eq!(exception_module("TaskRevokedError", DEF), "celery.exceptions");
        assert_eq!(exception_module("Retry", DEF), "celery.exceptions");
        assert_eq!(exception_module("Reject", DEF), "celery.exceptions");
        assert_eq!(exception_module("Ignore", DEF), "celery.exceptions");
        assert_eq!(exception_module("TimeLimitExceeded", DEF), "billiard.exceptions");
        assert_eq!(exception_module("SoftTimeLimitExceeded", DEF), "billiard.exceptions");
        assert_eq!(exception_module("WorkerLostError", DEF), "billiard.exceptions");
        assert_eq!(exception_module("ContentDisallowed", DEF), "kombu.exceptions");
        assert_eq!(exception_module("WasmTrap", DEF), DEF);
        assert_eq!(exception_module("typeerror", DEF), DEF);
        assert_eq!(PYTHON_BUILTIN_EXCEPTIONS.len(), 70);
    }

    #[test]
    fn serialised_form_and_key_order() {
        let e = ExceptionInfo::with_message("TypeError", "unsupported operand type(s) for +: 'int' and 'str'", "x");
        assert_eq!(
            super::super::pyjson::to_string(&e.to_value()),
            r#"{"exc_type": "TypeError", "exc_message": ["unsupported operand type(s) for +: 'int' and 'str'"], "exc_module": "builtins"}"#
        );
        let r = ExceptionInfo::task_revoked("expired");
        assert_eq!(
            r.to_value(),
            json!({"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"})
        );
    }

    #[test]
    fn from_value_is_lenient() {
        let e = ExceptionInfo::from_value(&json!({"exc_type": "TypeError", "exc_message": "boom as string"})).unwrap();
        assert_eq!(e.exc_message, vec![json!("boom as string")]);
        assert_eq!(e.exc_module, None);
        assert_eq!(e.to_value()["exc_module"], Value::Null);
        assert!(ExceptionInfo::from_value(&json!("just a string")).is_err());
        assert!(ExceptionInfo::from_value(&json!({"exc_message": []})).is_err());
    }

    #[test]
    fn python_renderings() {
        let e = ExceptionInfo::with_message("TypeError", "unsupported operand", "m");
        assert_eq!(e.repr(), "TypeError('unsupported operand')");
        assert_eq!(e.format_exception_only(), "TypeError: unsupported operand");
        let c = ExceptionInfo::new("MyCustomError", vec![json!("custom boom"), json!(42)], "tasks");
        assert_eq!(c.repr(), "MyCustomError('custom boom', 42)");
        assert_eq!(c.format_exception_only(), "tasks.MyCustomError: ('custom boom', 42)");
        let t = ExceptionInfo::new("TimeLimitExceeded", vec![json!(30)], "billiard.exceptions");
        assert_eq!(t.repr(), "TimeLimitExceeded(30)");
        let empty = ExceptionInfo::new("ValueError", vec![], "builtins");
        assert_eq!(empty.repr(), "ValueError()");
        assert_eq!(empty.format_exception_only(), "ValueError");
        let k = ExceptionInfo::with_message("KeyError", "x", "m");
        assert_eq!(k.format_exception_only(), "KeyError: 'x'");
        let q = ExceptionInfo::with_message("ValueError", "it's", "m");
        assert_eq!(q.repr(), "ValueError(\"it's\")");
        let nr = ExceptionInfo::not_registered("tasks.nope");
        assert_eq!(nr.exc_message, vec![json!("tasks.nope")]);
        assert_eq!(nr.format_exception_only(), "celery.exceptions.NotRegistered: 'tasks.nope'");
    }
}
