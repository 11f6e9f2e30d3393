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
//! * [`soft_time_left`]: seconds until the call's soft time limit, so a task can
//!   stop in time (Celery raises `SoftTimeLimitExceeded` in a Python task).
//! * [`delivery_info`], [`ignore`], [`reject`], [`add_to_chord`]: Celery's
//!   `self.request.delivery_info`, `raise Ignore()`, `raise Reject(requeue=)`
//!   and `self.add_to_chord(sig)`.
//! * [`signature`] / [`chain`] / [`group`] / [`chord`] and [`Signature::delay`]:
//!   send tasks, like Celery's `add.delay(2, 2)`; [`replace`]: Celery's
//!   `self.replace(sig)`. Granted per task by the worker (`send_tasks`).
//!
//! These call into the worker and are only available inside a component;
//! called from a native (non-wasm) build they panic.

#![warn(missing_docs)]

extern crate self as celeriac_sdk;

mod args;
mod canvas;
mod error;
mod host;
pub mod log;

pub use canvas::{Signature, add_to_chord, chain, chord, group, replace, signature};
pub use celeriac_sdk_macros::{export_tasks, task};
pub use error::{Raise, Retry, TaskError};
pub use host::{
    Request, config, delivery_info, ignore, reject, request, soft_time_left, update_state, update_state_json,
};

/// Implementation details used by the macros' expansions. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::args::{Bound, Param, describe, encode, parse_args, parse_kwargs};
    pub use serde_json;
    pub use wit_bindgen;

    use serde_json::{Map, Value};

    use crate::{Raise, TaskError};

    /// Bindings for `wit/task.wit` (`celeriac:task@0.2.0`), world `task-component`.
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
    /// The WIT `raised` variant and `task-info` record.
    pub use bindings::celeriac::task::types::{Raised, TaskInfo};
    use bindings::celeriac::task::types::{RetryRequest, TaskOptions as WitTaskOptions};
    pub use bindings::exports::celeriac::task::task::Guest;

    /// The wrapper `#[task]` generates: binds `args`/`kwargs`, calls the task,
    /// encodes its result.
    pub type TaskFn = fn(&[Value], &Map<String, Value>) -> Result<String, Raise>;

    /// The options a task declares with `#[task(...)]` (Celery's
    /// `@app.task(...)` keyword arguments); `None` keeps the worker's default.
    #[derive(Clone, Copy, Default)]
    pub struct TaskOptions {
        /// `rate_limit`, e.g. `"10/m"`.
        pub rate_limit: Option<&'static str>,
        /// `time_limit`, seconds.
        pub time_limit: Option<f64>,
        /// `soft_time_limit`, seconds.
        pub soft_time_limit: Option<f64>,
        /// `max_retries`.
        pub max_retries: Option<u32>,
        /// `default_retry_delay`, seconds.
        pub default_retry_delay: Option<f64>,
        /// `autoretry_for`, exception class names.
        pub autoretry_for: &'static [&'static str],
        /// `retry_backoff` factor (`true` is 1).
        pub retry_backoff: Option<u32>,
        /// `retry_backoff_max`, seconds.
        pub retry_backoff_max: Option<u32>,
        /// `retry_jitter`.
        pub retry_jitter: Option<bool>,
        /// `acks_late`.
        pub acks_late: Option<bool>,
        /// `ignore_result`.
        pub ignore_result: Option<bool>,
        /// `queue`.
        pub queue: Option<&'static str>,
    }

    impl TaskOptions {
        /// No options declared (a `const` `Default`).
        pub const NONE: TaskOptions = TaskOptions {
            rate_limit: None,
            time_limit: None,
            soft_time_limit: None,
            max_retries: None,
            default_retry_delay: None,
            autoretry_for: &[],
            retry_backoff: None,
            retry_backoff_max: None,
            retry_jitter: None,
            acks_late: None,
            ignore_result: None,
            queue: None,
        };

        fn to_wit(self) -> WitTaskOptions {
            WitTaskOptions {
                rate_limit: self.rate_limit.map(str::to_string),
                time_limit: self.time_limit,
                soft_time_limit: self.soft_time_limit,
                max_retries: self.max_retries,
                default_retry_delay: self.default_retry_delay,
                autoretry_for: self.autoretry_for.iter().map(|s| s.to_string()).collect(),
                retry_backoff: self.retry_backoff,
                retry_backoff_max: self.retry_backoff_max,
                retry_jitter: self.retry_jitter,
                acks_late: self.acks_late,
                ignore_result: self.ignore_result,
                queue: self.queue.map(str::to_string),
            }
        }
    }

    /// One task of a component: its name (without the component prefix), its
    /// declared options and its wrapper.
    #[derive(Clone, Copy)]
    pub struct TaskDef {
        /// The task name, e.g. `add`.
        pub name: &'static str,
        /// The options it declares.
        pub options: TaskOptions,
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

    /// `task.tasks`: the listed tasks with their declared options.
    pub fn task_infos(tasks: &[TaskDef]) -> Vec<TaskInfo> {
        tasks.iter().map(|t| TaskInfo { name: t.name.to_string(), options: t.options.to_wit() }).collect()
    }

    /// `task.invoke`: parses the JSON arguments and runs the named task.
    pub fn invoke(tasks: &[TaskDef], name: &str, args: &str, kwargs: &str) -> Result<String, Raise> {
        let Some(task) = tasks.iter().find(|t| t.name == name) else {
            return Err(TaskError::new("NotRegistered", format!("'{name}'")).with_module("celery.exceptions").into());
        };
        let args = parse_args(task.name, args)?;
        let kwargs = parse_kwargs(task.name, kwargs)?;
        (task.call)(&args, &kwargs)
    }

    fn wit_error(e: TaskError) -> WitTaskError {
        WitTaskError {
            exc_type: e.exc_type,
            exc_module: e.exc_module,
            message: e.message,
            args: e.args.map(|args| args.iter().map(Value::to_string).collect()),
            traceback: e.traceback,
        }
    }

    /// `task.invoke` with the error converted to the WIT variant.
    // `Raised` is the WIT binding's own type, which the export must return as it is.
    #[allow(clippy::result_large_err)]
    pub fn invoke_wit(tasks: &[TaskDef], name: &str, args: &str, kwargs: &str) -> Result<String, Raised> {
        invoke(tasks, name, args, kwargs).map_err(|raise| match raise {
            Raise::Exception(e) => Raised::Exception(wit_error(e)),
            Raise::Retry(r) => {
                let r = *r;
                Raised::Retry(RetryRequest {
                    countdown: r.countdown,
                    eta: r.eta,
                    exc: r.exc.map(wit_error),
                    max_retries: r.max_retries,
                })
            }
        })
    }
}
