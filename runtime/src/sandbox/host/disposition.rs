//! Host capability: `host.ignore` and `host.reject` — Celery's `raise
//! Ignore()` and `raise Reject(requeue=...)`: how the message is settled when
//! the call returns, instead of storing the task's state. Only recorded here;
//! the worker settles the message once the call has returned successfully.

/// What the task asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Store nothing, run no callback, acknowledge.
    Ignore,
    /// Store nothing; give the message back to its queue (`requeue`) or drop it.
    Reject {
        /// Back to the queue, or dropped (dead-lettered where the queue says so).
        requeue: bool,
    },
}
