//! kombu's pidbox and Celery's events on AMQP, declared as Celery 5.7
//! declares them (`tests/fixtures/amqp/`, README "Topology"):
//!
//! - `celery.pidbox`: fanout exchange, not durable. The node's queue
//!   `<node>.celery.pidbox` is exclusive and auto-deleted, with `x-expires`
//!   10 s and `x-message-ttl` 300 s, bound with key `""`, consumed with
//!   `no_ack` (a control message is never redelivered).
//! - `reply.celery.pidbox`: direct exchange, not durable; a reply is
//!   published under the client's id and dropped by the broker if that
//!   client's queue is gone.
//! - `celeryev`: topic exchange, durable; events under their routing key.
//!
//! The mailbox consumes on the consumer connection and, when that drops,
//! declares and consumes again with back-off (the exclusive queue died with
//! the old connection; what was broadcast meanwhile is missed, as with Celery).

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::transport::AmqpTransport;
use super::{AmqpBroker, AmqpError, Live, Role};
use crate::broker::{BoxFuture, BrokerError, Fanout, Mailbox};
use crate::protocol::RawMessage;
use crate::protocol::amqp::{self as wire, Deliver, short_string};
use crate::protocol::pidbox::{EVENT_EXCHANGE, Outgoing, PIDBOX_EXCHANGE, REPLY_EXCHANGE, node_queue, reply_queue};

/// Celery 5.7's pidbox queue arguments: `x-expires` 10 s, `x-message-ttl` 300 s.
fn pidbox_queue_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(10_000));
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(300_000));
    args
}

/// How Celery declares the exchange a message of `exchange` goes to.
fn exchange_kind(exchange: &str) -> (ExchangeKind, bool) {
    match exchange {
        EVENT_EXCHANGE => (ExchangeKind::Topic, true),
        PIDBOX_EXCHANGE => (ExchangeKind::Fanout, false),
        _ => (ExchangeKind::Direct, false),
    }
}

impl AmqpBroker {
    /// Declare `exchange` as Celery does, once per publisher connection.
    async fn declare_exchange(&self, exchange: &str) -> Result<(), AmqpError> {
        let Live { conn, generation, .. } = self.live(Role::Publisher).await?;
        let key = format!("exchange:{exchange}");
        if self.inner.declared.lock().unwrap_or_else(|p| p.into_inner()).get(&key) == Some(&generation) {
            return Ok(());
        }
        let (kind, durable) = exchange_kind(exchange);
        let channel = conn.create_channel().await?;
        let opts = ExchangeDeclareOptions { durable, ..ExchangeDeclareOptions::default() };
        channel.exchange_declare(short_string("exchange", exchange)?, kind, opts, FieldTable::default()).await?;
        let _ = channel.close(200, "declared".into()).await;
        self.inner.declared.lock().unwrap_or_else(|p| p.into_inner()).insert(key, generation);
        Ok(())
    }

    /// Publish a control reply, broadcast or event (confirmed).
    pub async fn publish_outgoing(&self, message: &Outgoing) -> Result<(), AmqpError> {
        self.declare_exchange(&message.exchange).await?;
        let props = wire::outgoing_properties(message)?;
        self.publish(&message.exchange, &message.routing_key, &message.body, props).await
    }

    /// Declare what `source` receives from on a new consumer channel and consume it.
    async fn consume_source(&self, source: &Source) -> Result<(Channel, lapin::Consumer), AmqpError> {
        match source {
            Source::Pidbox(hostname) => self.consume_pidbox(hostname).await,
            Source::Events(queue) => self.consume_events(queue).await,
        }
    }

    /// An event receiver's queue, as Celery's `EventReceiver` declares it:
    /// `celeryev.<uuid>`, exclusive and auto-deleted, bound to `celeryev` with `#`.
    async fn consume_events(&self, queue: &str) -> Result<(Channel, lapin::Consumer), AmqpError> {
        self.consume_exclusive(EVENT_EXCHANGE, queue, "#", FieldTable::default()).await
    }

    /// Declare the node's pidbox queue on a new consumer channel and consume it.
    async fn consume_pidbox(&self, hostname: &str) -> Result<(Channel, lapin::Consumer), AmqpError> {
        self.consume_exclusive(PIDBOX_EXCHANGE, &node_queue(hostname), "", pidbox_queue_arguments()).await
    }

    /// Declare client `oid`'s reply queue as Celery does and consume it.
    async fn consume_replies(&self, oid: &str) -> Result<(Channel, lapin::Consumer), AmqpError> {
        self.consume_exclusive(REPLY_EXCHANGE, &reply_queue(oid), oid, pidbox_queue_arguments()).await
    }

    /// On a new consumer channel: `exchange` declared as Celery declares it,
    /// an exclusive, auto-deleted `queue` with `arguments` bound to it with
    /// `key`, and a `no_ack` consumer of that queue (what is broadcast is
    /// never redelivered).
    async fn consume_exclusive(
        &self,
        exchange: &str,
        queue: &str,
        key: &str,
        arguments: FieldTable,
    ) -> Result<(Channel, lapin::Consumer), AmqpError> {
        let Live { conn, .. } = self.live(Role::Consumer).await?;
        let channel = conn.create_channel().await?;
        let (kind, durable) = exchange_kind(exchange);
        let ex = short_string("exchange", exchange)?;
        let opts = ExchangeDeclareOptions { durable, ..ExchangeDeclareOptions::default() };
        channel.exchange_declare(ex.clone(), kind, opts, FieldTable::default()).await?;
        let q = short_string("queue", queue)?;
        let opts = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(q.clone(), opts, arguments).await?;
        let key = short_string("routing_key", key)?;
        channel.queue_bind(q.clone(), ex, key, QueueBindOptions::default(), FieldTable::default()).await?;
        let tag = format!("celeriac-{}", uuid::Uuid::new_v4());
        let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let consumer = channel.basic_consume(q, tag.as_str().into(), no_ack, FieldTable::default()).await?;
        Ok((channel, consumer))
    }
}

impl Fanout for AmqpTransport {
    fn listen<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, Result<Box<dyn Mailbox>, BrokerError>> {
        Box::pin(async move {
            let broker = self.broker().clone();
            let source = Source::Pidbox(hostname.to_string());
            let session = Some(broker.consume_source(&source).await?);
            Ok(Box::new(AmqpMailbox { broker, source, session }) as Box<dyn Mailbox>)
        })
    }

    fn broadcast<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { Ok(self.broker().publish_outgoing(message).await?) })
    }

    fn reply<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), BrokerError>> {
        debug_assert_eq!(message.exchange, REPLY_EXCHANGE);
        Box::pin(async move { Ok(self.broker().publish_outgoing(message).await?) })
    }

    fn events(&self) -> BoxFuture<'_, Result<Box<dyn Mailbox>, BrokerError>> {
        Box::pin(async move {
            let broker = self.broker().clone();
            let source = Source::Events(format!("celeryev.{}", uuid::Uuid::new_v4()));
            let session = Some(broker.consume_source(&source).await?);
            Ok(Box::new(AmqpMailbox { broker, source, session }) as Box<dyn Mailbox>)
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
            let broker = self.broker();
            let (channel, mut consumer) = broker.consume_replies(oid).await?;
            broker.publish_outgoing(request).await?;
            let end = tokio::time::Instant::now() + timeout;
            let mut out = Vec::new();
            while limit.is_none_or(|l| out.len() < l) {
                match tokio::time::timeout_at(end, consumer.next()).await {
                    Ok(Some(Ok(d))) => {
                        let deliver = Deliver {
                            delivery_tag: d.delivery_tag,
                            exchange: d.exchange.as_str().to_string(),
                            routing_key: d.routing_key.as_str().to_string(),
                            redelivered: d.redelivered,
                        };
                        out.push(wire::raw_message(&deliver, &d.properties, d.data));
                    }
                    Ok(Some(Err(e))) => return Err(AmqpError::from(e).into()),
                    Ok(None) | Err(_) => break,
                }
            }
            // The exclusive, auto-deleted reply queue goes with its channel.
            let _ = channel.close(200, "collected".into()).await;
            Ok(out)
        })
    }
}

/// What a mailbox consumes.
enum Source {
    /// The node's pidbox queue.
    Pidbox(String),
    /// An event receiver's queue (its name).
    Events(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Pidbox(host) => f.write_str(&node_queue(host)),
            Source::Events(queue) => f.write_str(queue),
        }
    }
}

/// A pidbox or event consumer, re-declared after a connection loss.
struct AmqpMailbox {
    broker: AmqpBroker,
    source: Source,
    /// The channel (kept open while consuming) and its consumer.
    session: Option<(Channel, lapin::Consumer)>,
}

impl Mailbox for AmqpMailbox {
    fn next(&mut self) -> BoxFuture<'_, Result<RawMessage, BrokerError>> {
        Box::pin(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                let Some((_, consumer)) = self.session.as_mut() else {
                    match self.broker.consume_source(&self.source).await {
                        Ok(s) => {
                            tracing::info!("consuming {} again", self.source);
                            self.session = Some(s);
                        }
                        Err(AmqpError::Closed) => return Err(AmqpError::Closed.into()),
                        Err(e) => {
                            tracing::warn!("cannot consume {}: {e}; again in {delay:?}", self.source);
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(8));
                        }
                    }
                    continue;
                };
                match consumer.next().await {
                    Some(Ok(d)) => {
                        let deliver = Deliver {
                            delivery_tag: d.delivery_tag,
                            exchange: d.exchange.as_str().to_string(),
                            routing_key: d.routing_key.as_str().to_string(),
                            redelivered: d.redelivered,
                        };
                        return Ok(wire::raw_message(&deliver, &d.properties, d.data));
                    }
                    Some(Err(e)) => {
                        tracing::warn!("the consumer of {} failed: {e}; consuming again", self.source);
                        self.session = None;
                    }
                    None => {
                        tracing::warn!("the consumer of {} ended; consuming again", self.source);
                        self.session = None;
                    }
                }
            }
        })
    }
}
