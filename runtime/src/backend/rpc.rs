//! Celery's `rpc://` result backend: results sent back as AMQP messages.
//!
//! With `result_backend = "rpc://"` nothing is stored: the worker publishes
//! every state of a task (STARTED, custom states from `update_state`,
//! SUCCESS / FAILURE with its traceback) to the default exchange with routing
//! key = the client's `reply_to` queue and `correlation_id` = the task id,
//! exactly the body and properties Celery's rpc backend sends
//! (`tests/fixtures/amqp/results_rpc/`: JSON meta with `task_id`, empty
//! headers, `delivery_mode` 1, or 2 with `result_persistent`). Every publish
//! is confirmed by the broker before it counts as written. The worker does
//! not declare the reply queue (the client does): if it is gone, the result
//! is dropped, as with Celery.
//!
//! Only the client that sent a task can read its result, so this backend
//! cannot `get`, `forget` or wait; and, as in Celery, it cannot run chords
//! (the client refuses them).
//!
//! Where a task's states go is learnt when its message is received
//! ([`RpcBackend::route`]), and forgotten once a ready state was published.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::BackendError;
use crate::broker::amqp::AmqpBroker;
use crate::protocol::Serializer;
use crate::protocol::amqp::result_properties;
use crate::protocol::result::ResultMeta;

/// Whether a URL names the rpc backend (`rpc://`).
pub fn is_url(url: &str) -> bool {
    url.starts_with("rpc://")
}

/// Publishes task states to their clients' reply queues.
#[derive(Clone)]
pub struct RpcBackend {
    broker: AmqpBroker,
    serializer: Serializer,
    persistent: bool,
    /// task id → reply queue.
    routes: Arc<Mutex<HashMap<String, String>>>,
}

impl RpcBackend {
    /// A backend publishing through `broker` with `serializer`
    /// (`result_serializer`); `persistent` is `result_persistent`.
    pub fn new(broker: AmqpBroker, serializer: Serializer, persistent: bool) -> Self {
        RpcBackend { broker, serializer, persistent, routes: Arc::default() }
    }

    /// Remember that `task_id`'s states go to `reply_to`.
    pub fn route(&self, task_id: &str, reply_to: &str) {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(task_id.to_string(), reply_to.to_string());
    }

    /// Publish several states, all confirmed (in order per task).
    pub async fn store_many(&self, metas: &[ResultMeta]) -> Result<(), BackendError> {
        let mut sends = Vec::with_capacity(metas.len());
        for meta in metas {
            let reply_to = self.routes.lock().unwrap_or_else(|p| p.into_inner()).get(&meta.task_id).cloned();
            let Some(reply_to) = reply_to else {
                tracing::debug!("task {}: no reply_to, so no rpc result is sent", meta.task_id);
                continue;
            };
            let body = meta.encode(self.serializer).map_err(|e| BackendError::Encode(e.to_string()))?;
            let props = result_properties(&meta.task_id, self.serializer, self.persistent)
                .map_err(|e| BackendError::Encode(e.to_string()))?;
            let broker = self.broker.clone();
            sends.push(async move { broker.publish("", &reply_to, &body, props).await });
        }
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        for meta in metas.iter().filter(|m| m.status.is_ready()) {
            routes.remove(&meta.task_id);
        }
        Ok(())
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
