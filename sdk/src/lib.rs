//! Write [Celery](https://docs.celeryq.dev/) tasks in Rust, run by the Celeriac
//! worker as sandboxed WebAssembly components.
//!
//! A task is a plain Rust function marked with [`#[task]`](task). Its
//! parameters are filled from the Celery message's positional `args` and then
//! its `kwargs` (by parameter name), each deserialised with serde; its return
//! value is serialised to JSON and becomes the task's result. One
//! [`export_tasks!`] line per component lists the tasks it serves.
//!
//! ```no_run
//! use celeriac_sdk::task;
//!
//! /// `tasks.add` when this crate is built as `tasks.wasm`.
//! #[task]
//! fn add(x: i64, y: i64) -> i64 {
//!     x + y
//! }
//!
//! #[task]
//! fn div(a: f64, b: f64) -> Result<f64, celeriac_sdk::TaskError> {
//!     if b == 0.0 {
//!         return Err(celeriac_sdk::TaskError::new("ZeroDivisionError", "division by zero"));
//!     }
//!     Ok(a / b)
//! }
//!
//! #[task]
//! fn greet(name: String, greeting: Option<String>) -> String {
//!     celeriac_sdk::log::info(format!("greeting {name}"));
//!     format!("{}, {name}!", greeting.as_deref().unwrap_or("Hello"))
//! }
//!
//! celeriac_sdk::export_tasks!(add, div, greet);
//! # fn main() {}
//! ```
//!
//! From Python, with a Celeriac worker serving `tasks.wasm`:
//!
//! ```python
//! app.send_task("tasks.add", args=(4, 4)).get()          # 8
//! app.send_task("tasks.greet", args=("Bob",)).get()      # "Hello, Bob!"
//! app.send_task("tasks.div", args=(1, 0)).get()          # raises ZeroDivisionError
//! ```
//!
//! # Building
//!
//! The crate is a `cdylib` built for `wasm32-wasip2`, which directly yields a
//! component: `cargo build --profile guest --target wasm32-wasip2` (or
//! `make tasks` in the Celeriac repository).
//!
//! # Arguments
//!
//! Parameters bind like a Python function's: positional arguments first, then
//! keyword arguments by parameter name. `Option<T>` parameters may be left out
//! (they are `None`, like a Python `=None` default). Any `T: Deserialize` works,
//! including your own `#[derive(Deserialize)]` structs (from a JSON object) and
//! `&str` (borrowed from the message). A call that does not fit raises a
//! `TypeError` worded like CPython's:
//!
//! * `add() takes 2 positional arguments but 3 were given`
//! * `add() missing 1 required positional argument: 'y'`
//! * `add() got an unexpected keyword argument 'z'`
//! * `add() got multiple values for argument 'x'`
//! * `add() argument 'y' must be i64, not str "a"`
//!
//! # Results and errors
//!
//! The return type may be any `T: Serialize` (`()` gives `null`). If it is
//! written `Result<T, E>` (any path whose last segment is `Result`), `Ok(v)` is
//! the result and `Err(e)` raises `e.into()`, a [`TaskError`], so `?` works on
//! anything that converts into one.
//!
//! A panic aborts the task: the panic message is printed to stderr with Rust's
//! default format (`thread '<unnamed>' panicked at src/lib.rs:12:5:` then the
//! message) and the component traps. The worker reads that and reports a
//! `FAILURE`. Do not install a panic hook that changes this output.
//!
//! # Talking to the worker
//!
//! * [`log::info`] and friends (or the [`info!`] macros): a line in the worker's
//!   log, tagged with the task id. `println!`/`eprintln!` also end up there.
//! * [`update_state`]: a custom state such as `PROGRESS`, like Celery's
//!   `self.update_state(state=..., meta=...)`.
//! * [`request`]: the call's [`Request`] context, like Celery's `self.request`.
//!
//! These call into the worker and are only available inside a component;
//! called from a native (non-wasm) build they panic.

#![warn(missing_docs)]

extern crate self as celeriac_sdk;

mod args;
mod error;
mod host;
pub mod log;

pub use celeriac_sdk_macros::{export_tasks, task};
pub use error::TaskError;
pub use host::{Request, request, update_state, update_state_json};

/// Implementation details used by the macros' expansions. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::args::{Bound, Param, describe, encode, parse_args, parse_kwargs};
    pub use serde_json;
    pub use wit_bindgen;

    use serde_json::{Map, Value};

    use crate::TaskError;

    /// Bindings for `wit/task.wit`, world `task-component`.
    #[allow(missing_docs, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "task-component",
            pub_export_macro: true,
            export_macro_name: "__export_task_component",
            default_bindings_module: "celeriac_sdk::__private::bindings",
            runtime_path: "celeriac_sdk::__private::wit_bindgen::rt",
        });
    }

    /// The WIT `task-error` record.
    pub use bindings::celeriac::task::types::TaskError as WitTaskError;
    pub use bindings::exports::celeriac::task::task::Guest;

    /// The wrapper `#[task]` generates: binds `args`/`kwargs`, calls the task,
    /// encodes its result.
    pub type TaskFn = fn(&[Value], &Map<String, Value>) -> Result<String, TaskError>;

    /// One task of a component: its name (without the component prefix) and
    /// its wrapper.
    #[derive(Clone, Copy)]
    pub struct TaskDef {
        /// The task name, e.g. `add`.
        pub name: &'static str,
        /// The generated wrapper.
        pub call: TaskFn,
    }

    /// Fails compilation of `export_tasks!` when two tasks share a name.
    pub const fn assert_unique_names(tasks: &[TaskDef]) {
        let mut i = 0;
        while i < tasks.len() {
            let mut j = i + 1;
            while j < tasks.len() {
                if str_eq(tasks[i].name, tasks[j].name) {
                    panic!("export_tasks!: two tasks have the same name");
                }
                j += 1;
            }
            i += 1;
        }
    }

    const fn str_eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// `task.tasks`: the listed names.
    pub fn task_names(tasks: &[TaskDef]) -> Vec<String> {
        tasks.iter().map(|t| t.name.to_string()).collect()
    }

    /// `task.invoke`: parses the JSON arguments and runs the named task.
    pub fn invoke(tasks: &[TaskDef], name: &str, args: &str, kwargs: &str) -> Result<String, TaskError> {
        let Some(task) = tasks.iter().find(|t| t.name == name) else {
            return Err(TaskError::new("NotRegistered", format!("'{name}'")).with_module("celery.exceptions"));
        };
        let args = parse_args(task.name, args)?;
        let kwargs = parse_kwargs(task.name, kwargs)?;
        (task.call)(&args, &kwargs)
    }

    /// `task.invoke` with the error converted to the WIT record.
    pub fn invoke_wit(tasks: &[TaskDef], name: &str, args: &str, kwargs: &str) -> Result<String, WitTaskError> {
        invoke(tasks, name, args, kwargs).map_err(|e| WitTaskError {
            exc_type: e.exc_type,
            exc_module: e.exc_module,
            message: e.message,
            traceback: e.traceback,
        })
    }
}
