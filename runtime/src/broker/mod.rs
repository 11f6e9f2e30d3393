//! Brokers: where task messages come from and where acknowledgements go.
//!
//! Celery talks to a broker through kombu; Celeriac implements kombu's
//! transports natively. [`redis`] is kombu's Redis transport (lists plus
//! `unacked` bookkeeping). A [`Delivery`] is one received, not yet acknowledged
//! message; the worker acknowledges it by tag, or puts it back with `restore`.

pub mod redis;

/// Errors talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker URL cannot be used.
    #[error("invalid broker URL {0}")]
    Url(String),
    /// The connection failed or a command was refused.
    #[error("broker connection error: {0}")]
    Connection(String),
    /// The broker held data we could not understand.
    #[error("broker protocol error: {0}")]
    Protocol(String),
}

impl BrokerError {
    pub(crate) fn redis(e: ::redis::RedisError) -> Self {
        BrokerError::Connection(e.to_string())
    }
}

/// One received message, not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue (list) it came from.
    pub queue: String,
    /// The raw message: a kombu JSON envelope on Redis.
    pub payload: Vec<u8>,
    /// The delivery tag, if the envelope carried a readable one. A message
    /// without one was not recorded as unacknowledged and needs no ack.
    pub tag: Option<String>,
}

impl Delivery {
    /// A delivery popped from a Redis list. The tag is read from the
    /// envelope's `properties.delivery_tag`, as the pop script did.
    pub(crate) fn from_redis(list: &[u8], payload: Vec<u8>) -> Self {
        #[derive(serde::Deserialize)]
        struct Props {
            delivery_tag: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Env {
            properties: Option<Props>,
        }
        let tag = serde_json::from_slice::<Env>(&payload).ok().and_then(|e| e.properties?.delivery_tag);
        Delivery { queue: String::from_utf8_lossy(list).into_owned(), payload, tag }
    }
}
