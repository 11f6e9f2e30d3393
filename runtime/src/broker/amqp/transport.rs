//! The AMQP transport behind the worker's [`Transport`] boundary.
//!
//! kombu's pyamqp transport has real acknowledgements, so none of the virtual
//! transports' QoS bookkeeping applies: a [`Delivery`] carries the channel's
//! delivery tag ([`DeliveryAck`]); `ack` → `basic.ack` (what is pending goes
//! out together, without waiting for more, as one `multiple` ack where
//! [`super::acks::AckWindow`] allows), `requeue` → `basic.reject(requeue=true)`,
//! `hold` → nothing (the broker keeps an unacknowledged message for as long as
//! its channel lives), and a delivery whose channel has closed is stale (the
//! broker requeued it and delivers it again): never handed out, and dropped
//! by the worker if it holds one. The consumer sets `basic.qos` from the
//! prefetch window it is given. The event loops share the process's two
//! connections (each consumer its own channel); the transport that opened
//! them closes them ([`Transport::close`], `connection.close`). Two
//! capabilities only AMQP has: [`DelayedDelivery`] (far-future ETAs parked in
//! delay queues, see [`AmqpBroker::park`]) and [`ReplyPublisher`] (the
//! `rpc://` backend's confirmed reply messages).

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{AmqpBroker, AmqpConfig, AmqpDelivery, AmqpError, DeliveryAck, HOLD_HORIZON};
use crate::batch::Batcher;
use crate::broker::{
    AckHandle, Acker, BoxFuture, Broker, BrokerError, Capabilities, Consumer, DelayedDelivery, Delivery,
    ReplyPublisher, Transport,
};
use crate::protocol::EncodedTask;
use crate::protocol::amqp::result_properties;

/// How long one fetch waits for a first delivery.
const FETCH_WAIT: Duration = Duration::from_secs(1);

/// kombu's pyamqp transport, connected.
pub struct AmqpTransport {
    broker: AmqpBroker,
    config: AmqpConfig,
    /// The transport that connected (not one an event loop got from
    /// [`Transport::open_channel`]): only it closes the shared connections.
    owner: bool,
}

impl AmqpTransport {
    /// Connect as `config` says (to the first broker of its failover list that answers).
    pub async fn connect(config: AmqpConfig) -> Result<Self, AmqpError> {
        let broker =
            AmqpBroker::connect(&config.url, config.ssl.clone(), config.topology.clone(), &config.name).await?;
        Ok(AmqpTransport { broker, config, owner: true })
    }

    /// The shared connections.
    pub(super) fn broker(&self) -> &AmqpBroker {
        &self.broker
    }
}

impl Transport for AmqpTransport {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { fanout: true, priorities: true, per_queue_prefetch: true }
    }

    fn declare<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { Ok(self.broker.declare(queues).await?) })
    }

    fn publish<'a>(&'a self, queue: &'a str, task: &'a EncodedTask) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut task = task.clone();
            task.routing_key = queue.to_string();
            Ok(self.broker.publish_task(&task).await?)
        })
    }

    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(async move { Ok(self.broker.purge(queue).await?) })
    }

    fn open_channel(&self) -> BoxFuture<'_, Result<Broker, BrokerError>> {
        // The same two connections (lapin drives each from its own I/O thread);
        // each loop's consumer gets its own channel on the consumer connection.
        Box::pin(async move {
            Ok(Broker::new(AmqpTransport { broker: self.broker.clone(), config: self.config.clone(), owner: false }))
        })
    }

    fn consume<'a>(
        &'a self,
        queues: &'a [String],
        prefetch: usize,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BrokerError>> {
        Box::pin(async move {
            let (stop, stopped) = watch::channel(false);
            let prefetch = u16::try_from(prefetch).unwrap_or(u16::MAX);
            let deliveries = self.broker.consume(queues.to_vec(), prefetch, stopped);
            // No linger: the broker sends the next message of the prefetch
            // window only once it has the ack, so an ack waiting to join a
            // batch stalls the pipeline (1 ms held the drain at ~2,700/s).
            let acks = Batcher::spawn(None, |batch: Vec<DeliveryAck>| async move {
                for e in DeliveryAck::ack_all(batch).await {
                    // Its channel is gone: the broker has put the message back already.
                    tracing::warn!("could not acknowledge a message ({e}); the broker will deliver it again");
                }
            });
            Ok(Box::new(AmqpConsumer { deliveries, stop, acks, retired: false }) as Box<dyn Consumer>)
        })
    }

    fn delayed_delivery(&self) -> Option<&dyn DelayedDelivery> {
        Some(self)
    }

    fn replies(&self) -> Option<&dyn ReplyPublisher> {
        Some(self)
    }

    fn fanout(&self) -> Option<&dyn crate::broker::Fanout> {
        Some(self)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // An event loop's view of the shared connections leaves them to
            // the process's transport, closed once every loop has ended.
            if self.owner {
                self.broker.close().await;
            }
        })
    }
}

impl DelayedDelivery for AmqpTransport {
    fn horizon(&self) -> Duration {
        HOLD_HORIZON
    }

    fn park<'a>(&'a self, task: &'a EncodedTask, delay: Duration) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { Ok(self.broker.park(task, delay).await?) })
    }
}

impl ReplyPublisher for AmqpTransport {
    fn publish_reply<'a>(
        &'a self,
        reply_to: &'a str,
        correlation_id: &'a str,
        body: &'a [u8],
        content: (&'static str, &'static str),
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let props =
                result_properties(correlation_id, content, self.config.result_persistent).map_err(AmqpError::from)?;
            Ok(self.broker.publish("", reply_to, body, props).await?)
        })
    }
}

/// Deliveries of one consumer channel.
struct AmqpConsumer {
    deliveries: mpsc::Receiver<AmqpDelivery>,
    stop: watch::Sender<bool>,
    acks: Batcher<DeliveryAck>,
    /// Replaced by another consumer: cancelled at the broker, handing out what it had.
    retired: bool,
}

impl AmqpConsumer {
    /// The worker's view of `d`; `None` if its channel has closed meanwhile
    /// (the broker delivers it again on the next one).
    fn delivery(&self, d: AmqpDelivery) -> Option<Delivery> {
        if d.ack.is_stale() {
            tracing::debug!("dropping a message received on a channel that has closed since; the broker redelivers it");
            return None;
        }
        let handle = AmqpAck { ack: d.ack, acks: self.acks.clone() };
        let mut message = d.message;
        message.delivery.queue = Some(d.queue);
        Some(Delivery { message: Ok(message), acker: Acker::new(handle), idle: false })
    }
}

impl Consumer for AmqpConsumer {
    fn fetch(&mut self, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            match tokio::time::timeout(FETCH_WAIT, self.deliveries.recv()).await {
                Ok(Some(d)) => out.extend(self.delivery(d)),
                // Stopped: nothing will come any more (a retired one is then drained: no wait).
                Ok(None) if self.retired => {}
                Ok(None) => tokio::time::sleep(FETCH_WAIT).await,
                Err(_) => {}
            }
            while out.len() < max {
                match self.deliveries.try_recv() {
                    Ok(d) => out.extend(self.delivery(d)),
                    Err(_) => break,
                }
            }
            Ok(out)
        })
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        // Called at shutdown: stop receiving; what was prefetched and not taken
        // goes back when the channel closes with the connection, unacknowledged.
        self.stop.send_replace(true);
        Box::pin(async move { self.acks.barrier().await })
    }

    fn retire(&mut self) {
        // The consumer loop cancels its consumers (`basic.cancel`), requeues what arrives
        // meanwhile and ends; the channel stays open for the deliveries handed out.
        self.retired = true;
        self.stop.send_replace(true);
    }

    fn drained(&self) -> bool {
        self.retired && self.deliveries.is_closed() && self.deliveries.is_empty()
    }
}

/// The [`AckHandle`] of one AMQP delivery.
#[derive(Clone)]
struct AmqpAck {
    ack: DeliveryAck,
    acks: Batcher<DeliveryAck>,
}

impl AckHandle for AmqpAck {
    fn ack(&mut self) {
        self.acks.submit(self.ack.clone());
    }

    fn requeue(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.ack.requeue().await {
                tracing::debug!("could not give a message back ({e}); the broker requeues it with its channel");
            }
        })
    }

    fn hold(&mut self) {
        // The broker keeps it unacknowledged while the channel lives.
    }

    fn reject(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.ack.reject().await {
                tracing::warn!("could not reject a message ({e}); the broker will deliver it again");
            }
        })
    }

    fn clone_box(&self) -> Box<dyn AckHandle> {
        Box::new(self.clone())
    }

    fn is_stale(&self) -> bool {
        self.ack.is_stale()
    }
}
