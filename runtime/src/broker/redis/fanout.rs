//! kombu's Redis fanout, for the pidbox (remote control) and events.
//!
//! On Redis a fanout exchange is pub/sub, not lists
//! (`tests/fixtures/redis/05-remote-control`): with kombu's default
//! `fanout_prefix` and `fanout_patterns`, a message for exchange `X` and
//! routing key `k` is `PUBLISH /<db>.X/k` (`/<db>.X` when `k` is empty), and a
//! worker `PSUBSCRIBE`s `/<db>.celery.pidbox`. It also registers its node
//! queue in the exchange's binding table the way kombu 5.7 does (`SADD
//! _kombu.binding.celery.pidbox "\x06\x16\x06\x16<node>.celery.pidbox"` and
//! the exchange's deadline raised with `ZADD _kombu.binding_deadlines GT`),
//! and removes it at shutdown; other bindings and deadlines are left alone.
//! A control reply goes to the direct exchange `reply.celery.pidbox`: the
//! client's binding (`SMEMBERS _kombu.binding.reply.celery.pidbox`) names its
//! reply list, which gets an `LPUSH`; with no binding (the client is gone)
//! the reply is dropped, as kombu drops an undeliverable message.

use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;

use super::RedisTransport;
use crate::broker::{BoxFuture, BrokerError, Fanout, Mailbox};
use crate::connection::redis as redis_conn;
use crate::protocol::pidbox::{EVENT_EXCHANGE, Outgoing, PIDBOX_EXCHANGE, REPLY_EXCHANGE, node_queue, reply_queue};
use crate::protocol::{Envelope, RawMessage};

/// How long kombu 5.7 keeps a binding without a new declaration (ms).
const BINDING_TTL_MS: u64 = 3_600_000;

impl RedisTransport {
    /// kombu's `keyprefix_fanout` channel for exchange `exchange` and routing key `routing_key`.
    fn fanout_channel(&self, exchange: &str, routing_key: &str) -> String {
        let db = self.client.get_connection_info().redis_settings().db();
        if routing_key.is_empty() { format!("/{db}.{exchange}") } else { format!("/{db}.{exchange}/{routing_key}") }
    }

    /// Add `member` to `exchange`'s binding table and raise the exchange's
    /// deadline, as kombu 5.7's binding script does.
    async fn bind(&self, exchange: &str, member: &str) -> Result<(), BrokerError> {
        let deadline = chrono::Utc::now().timestamp_millis() as u64 + BINDING_TTL_MS;
        let mut pipe = redis::pipe();
        pipe.sadd(self.broker.key(&format!("_kombu.binding.{exchange}")), member).ignore();
        pipe.cmd("ZADD")
            .arg(self.broker.key("_kombu.binding_deadlines"))
            .arg("GT")
            .arg(deadline)
            .arg(exchange)
            .ignore();
        let mut c = self.broker.conn.clone();
        let _: () = pipe.query_async(&mut c).await?;
        Ok(())
    }

    /// `(binding key, member)` of the node's pidbox queue, as kombu stores it.
    fn pidbox_binding(&self, hostname: &str) -> (String, String) {
        let sep = &self.broker.opts.sep;
        (self.broker.key(&format!("_kombu.binding.{PIDBOX_EXCHANGE}")), format!("{sep}{sep}{}", node_queue(hostname)))
    }
}

impl Fanout for RedisTransport {
    fn listen<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, Result<Box<dyn Mailbox>, BrokerError>> {
        Box::pin(async move {
            let (key, member) = self.pidbox_binding(hostname);
            self.bind(PIDBOX_EXCHANGE, &member).await?;
            let mut mailbox = RedisMailbox {
                client: self.client.clone(),
                channel: self.fanout_channel(PIDBOX_EXCHANGE, ""),
                stream: None,
                conn: self.broker.conn.clone(),
                binding: Some((key, member)),
            };
            mailbox.subscribe().await?;
            Ok(Box::new(mailbox) as Box<dyn Mailbox>)
        })
    }

    fn broadcast<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let channel = self.fanout_channel(&message.exchange, &message.routing_key);
            let mut c = self.broker.conn.clone();
            let _: i64 = c.publish(channel, message.to_envelope().to_bytes()).await?;
            Ok(())
        })
    }

    fn reply<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut c = self.broker.conn.clone();
            let table = self.broker.key(&format!("_kombu.binding.{}", message.exchange));
            let members: Vec<String> = c.smembers(table).await?;
            let sep = self.broker.opts.sep.as_str();
            let queues: Vec<&str> = members
                .iter()
                .filter_map(|m| {
                    let mut it = m.split(sep);
                    let (rk, _pattern, queue) = (it.next()?, it.next()?, it.next()?);
                    (rk == message.routing_key).then_some(queue)
                })
                .collect();
            if queues.is_empty() {
                tracing::debug!("no client listens for control reply {}; dropped", message.routing_key);
            }
            let bytes = message.to_envelope().to_bytes();
            for q in queues {
                let _: i64 = c.lpush(self.broker.list_for(q, 0), &bytes).await?;
            }
            Ok(())
        })
    }

    fn events(&self) -> BoxFuture<'_, Result<Box<dyn Mailbox>, BrokerError>> {
        Box::pin(async move {
            // kombu turns the `#` binding into the pattern `*`.
            let mut mailbox = RedisMailbox {
                client: self.client.clone(),
                channel: self.fanout_channel(EVENT_EXCHANGE, "*"),
                stream: None,
                conn: self.broker.conn.clone(),
                binding: None,
            };
            mailbox.subscribe().await?;
            Ok(Box::new(mailbox) as Box<dyn Mailbox>)
        })
    }

    fn call<'a>(
        &'a self,
        request: &'a Outgoing,
        oid: &'a str,
        timeout: Duration,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<RawMessage>, BrokerError>> {
        Box::pin(async move {
            let sep = &self.broker.opts.sep;
            let queue = reply_queue(oid);
            let key = self.broker.key(&format!("_kombu.binding.{REPLY_EXCHANGE}"));
            let member = format!("{oid}{sep}{sep}{queue}");
            let list = self.broker.list_for(&queue, 0);
            let mut c = self.broker.conn.clone();
            self.bind(REPLY_EXCHANGE, &member).await?;
            let collected = async {
                self.broadcast(request).await?;
                // Its own connection: a BRPOP would hold up every other command on a shared one.
                let mut blocking = redis_conn::connect(&self.client, timeout + Duration::from_secs(10)).await?;
                let end = tokio::time::Instant::now() + timeout;
                let mut out = Vec::new();
                while limit.is_none_or(|l| out.len() < l) {
                    let left = end.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let popped: Option<(String, Vec<u8>)> = blocking.brpop(&list, left.as_secs_f64().max(0.01)).await?;
                    let Some((_, bytes)) = popped else { break };
                    match Envelope::parse(&bytes).and_then(|e| e.into_raw_message()) {
                        Ok(raw) => out.push(raw),
                        Err(e) => tracing::warn!("ignoring an unreadable control reply: {e}"),
                    }
                }
                Ok::<_, BrokerError>(out)
            }
            .await;
            let mut cleanup = redis::pipe();
            cleanup.srem(&key, &member).ignore().del(&list).ignore();
            let _: redis::RedisResult<()> = cleanup.query_async(&mut c).await;
            collected
        })
    }
}

/// A `PSUBSCRIBE` on the node's pidbox channel, re-subscribed when its connection drops.
struct RedisMailbox {
    client: redis::Client,
    channel: String,
    stream: Option<redis::aio::PubSubStream>,
    /// For removing the binding at shutdown.
    conn: redis::aio::ConnectionManager,
    /// The node's `(binding key, member)`, for a pidbox.
    binding: Option<(String, String)>,
}

impl RedisMailbox {
    async fn subscribe(&mut self) -> Result<(), BrokerError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.psubscribe(&self.channel).await?;
        self.stream = Some(pubsub.into_on_message());
        Ok(())
    }
}

impl Mailbox for RedisMailbox {
    fn next(&mut self) -> BoxFuture<'_, Result<RawMessage, BrokerError>> {
        Box::pin(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                let Some(stream) = self.stream.as_mut() else {
                    if let Err(e) = self.subscribe().await {
                        tracing::warn!("cannot subscribe to {}: {e}; again in {delay:?}", self.channel);
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(8));
                    } else {
                        tracing::info!("listening on {} again", self.channel);
                    }
                    continue;
                };
                let Some(msg) = stream.next().await else {
                    tracing::warn!("the subscription to {} was lost; subscribing again", self.channel);
                    self.stream = None;
                    continue;
                };
                match Envelope::parse(msg.get_payload_bytes()).and_then(|e| e.into_raw_message()) {
                    Ok(raw) => return Ok(raw),
                    Err(e) => tracing::warn!(
                        "ignoring an unreadable control message ({e}): {}",
                        crate::broker::preview(msg.get_payload_bytes())
                    ),
                }
            }
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.stream = None;
            let Some((key, member)) = &self.binding else { return };
            let r: redis::RedisResult<i64> = self.conn.srem(key, member).await;
            if let Err(e) = r {
                tracing::debug!("pidbox: cannot remove the node's binding: {e}");
            }
        })
    }
}
