//! Celery's `rpc://` result backend: results sent back as AMQP messages.
//!
//! With `result_backend = "rpc://"` nothing is stored: the worker publishes
//! every state of a task (STARTED, custom states from `update_state`,
//! SUCCESS / FAILURE with its traceback) to the default exchange with routing
//! key = the client's `reply_to` queue and `correlation_id` = the task id,
//! exactly the body and properties Celery's rpc backend sends
//! (`tests/fixtures/amqp/results_rpc/`: JSON meta with `task_id`, empty
//! headers, `delivery_mode` 1, or 2 with `result_persistent`). It publishes
//! through the broker connection ([`ReplyPublisher`], an AMQP capability), and
//! every publish is confirmed by the broker before it counts as written. The
//! worker does not declare the reply queue (the client does): if it is gone,
//! the result is dropped, as with Celery. A state whose message had no
//! `reply_to` goes nowhere.
//!
//! Only the client that sent a task can read its result, so this backend
//! cannot `get`, `forget` or wait; and, as in Celery, it counts no chords
//! (the client refuses them on `rpc://`).

use super::ResultEncoding;
use super::{BackendError, Reply, ResultBackend, Waiter};
use crate::broker::{BoxFuture, Broker};
use crate::protocol::result::ResultMeta;

/// Whether a URL names the rpc backend (`rpc://`).
pub fn is_url(url: &str) -> bool {
    url.starts_with("rpc://")
}

/// Why the rpc backend cannot read results.
pub const CANNOT_READ: &str =
    "rpc:// results go to the reply queue of the client that sent the task; only that client can read them";

/// Publishes task states to their clients' reply queues.
pub struct RpcBackend {
    broker: Broker,
    encoding: ResultEncoding,
}

impl RpcBackend {
    /// A backend publishing through `broker`, which must be able to
    /// ([`crate::broker::Transport::replies`]: an AMQP broker).
    pub fn new(broker: &Broker, encoding: ResultEncoding) -> Result<Self, BackendError> {
        if broker.replies().is_none() {
            return Err(BackendError::Unsupported(
                "the rpc:// result backend needs an AMQP broker (amqp://, pyamqp://)",
            ));
        }
        Ok(RpcBackend { broker: broker.clone(), encoding })
    }

    async fn publish_all(&self, replies: &[Reply]) -> Result<(), BackendError> {
        let Some(publisher) = self.broker.replies() else {
            return Err(BackendError::Unsupported("the broker cannot publish replies"));
        };
        let mut bodies = Vec::with_capacity(replies.len());
        for r in replies {
            let Some(reply_to) = r.routing.reply_to.as_deref().filter(|q| !q.is_empty()) else {
                tracing::debug!("task {}: no reply_to, so no rpc result is sent", r.meta.task_id);
                continue;
            };
            let body = self.encoding.encode_meta(&r.meta).map_err(|e| BackendError::Encode(e.to_string()))?;
            let correlation_id = r.routing.correlation_id.as_deref().unwrap_or(&r.meta.task_id);
            bodies.push((reply_to, correlation_id, body));
        }
        // Published together, each confirmed; per task they stay in order on one channel.
        let content = self.encoding.content();
        let sends = bodies.iter().map(|(q, c, b)| publisher.publish_reply(q, c, b, content));
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        Ok(())
    }
}

impl ResultBackend for RpcBackend {
    fn name(&self) -> &'static str {
        "rpc"
    }

    fn store_many<'a>(&'a self, replies: &'a [Reply]) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.publish_all(replies))
    }

    fn get<'a>(&'a self, _task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>, BackendError>> {
        Box::pin(async { Err(BackendError::Unsupported(CANNOT_READ)) })
    }

    fn forget<'a>(&'a self, _task_id: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async { Err(BackendError::Unsupported(CANNOT_READ)) })
    }

    fn waiter<'a>(&'a self, _task_id: &'a str) -> BoxFuture<'a, Result<Box<dyn Waiter>, BackendError>> {
        Box::pin(async { Err(BackendError::Unsupported(CANNOT_READ)) })
    }
}

#[cfg(test)]
mod tests {
    use super::is_url;

    #[test]
    fn rpc_urls_are_recognised() {
        assert!(is_url("rpc://"));
        assert!(is_url("rpc://localhost//"));
        assert!(!is_url("redis://localhost"));
    }
}
