//! `celeriac-bench amqp-floor`: the least any worker can do per task on RabbitMQ,
//! to tell the broker's ceiling from the worker's cost.
//!
//! Why this exists: over RabbitMQ the drain rate of `bench/run.sh --broker amqp`
//! is bounded by two processes sharing two cores, the worker and RabbitMQ. This
//! consumer does what a Celery worker must do per message and nothing else:
//! receive it (`basic.qos` per consumer, the worker's prefetch window), publish
//! the `rpc://` reply to its `reply_to` with `correlation_id` = the task id
//! (unless the message says `ignore_result`) under publisher confirms, and
//! acknowledge it only once its reply is confirmed, in one
//! `basic.ack(multiple=true)` per read — no JSON decoding, no task. Its drain
//! rate is therefore the ceiling of *any* worker with that window on this
//! broker and machine, and its CPU per message is the floor of a client's cost.
//!
//! Two clients do the same thing:
//! * `raw`: frames (de)serialised with `amq-protocol` (the frame codec lapin
//!   itself uses) over one tokio `TcpStream`, on a single-threaded runtime:
//!   one read and one write per batch, no other thread.
//! * `lapin`: the library the worker uses, with the same window and acks.
//!
//! The difference between the two is what the AMQP client library costs; the
//! difference between `raw` and the worker is what the worker adds.
//!
//! It runs until killed (the harness stops it once the queue is drained).

use std::collections::{BTreeSet, VecDeque};

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, ProtocolVersion, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, BasicProperties, basic, channel, confirm, connection};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Which client drains the queue.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Client {
    /// `amq-protocol` frames over one tokio socket, single-threaded.
    Raw,
    /// lapin, as the worker uses it.
    Lapin,
}

#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// Broker URL (`amqp://` or kombu's `pyamqp://`; user, password, host, port, vhost).
    #[arg(long)]
    url: String,
    /// Queue to drain.
    #[arg(long, default_value = "celery")]
    queue: String,
    /// Unacknowledged messages per consumer (`basic.qos`): the worker's is
    /// `worker_prefetch_multiplier` (4) x concurrency.
    #[arg(long, default_value_t = 8)]
    prefetch: u16,
    /// Which client.
    #[arg(long, value_enum, default_value_t = Client::Raw)]
    client: Client,
    /// `raw`: one `basic.ack` per message instead of one `multiple` ack per read.
    #[arg(long)]
    ack_each: bool,
}

/// A result body of the size Celery's rpc backend sends.
fn reply_body(task_id: &str) -> Vec<u8> {
    format!(
        r#"{{"task_id": "{task_id}", "status": "SUCCESS", "result": 8, "traceback": null, "children": [], "date_done": "2026-12-01T12:00:00.000000+00:00"}}"#
    )
    .into_bytes()
}

fn reply_properties(task_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_correlation_id(ShortString::from(task_id.to_string()))
        .with_content_type(ShortString::from("application/json"))
        .with_content_encoding(ShortString::from("utf-8"))
        .with_delivery_mode(1)
}

/// Where the reply of a message goes: its `reply_to`, unless its headers say
/// `ignore_result` (or it names no `reply_to`).
fn reply_of(p: &BasicProperties) -> Option<(String, String)> {
    let ignore = p
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(&ShortString::from("ignore_result")).cloned())
        .is_some_and(|v| v == AMQPValue::Boolean(true));
    if ignore {
        return None;
    }
    let reply_to = p.reply_to().as_ref()?.as_str().to_string();
    let id = p.correlation_id().as_ref().map(|c| c.as_str().to_string()).unwrap_or_default();
    Some((reply_to, id))
}

pub fn run(a: FloorArgs) -> anyhow::Result<()> {
    let url = match a.url.strip_prefix("pyamqp://") {
        Some(rest) => format!("amqp://{rest}"),
        None => a.url.clone(),
    };
    let uri: amq_protocol::uri::AMQPUri = url.parse().map_err(|e| anyhow!("{url}: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        match a.client {
            Client::Raw => raw(uri, &a).await,
            Client::Lapin => with_lapin(uri, &a).await,
        }
    })
}

/// One connection's bytes: frames parsed from `rbuf`, frames to send gathered in `out`.
struct Wire {
    stream: TcpStream,
    rbuf: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
}

impl Wire {
    fn push(&mut self, f: AMQPFrame) -> anyhow::Result<()> {
        let out = std::mem::take(&mut self.out);
        self.out = cookie_factory::gen_simple(gen_frame(&f), out).map_err(|e| anyhow!("encode: {e:?}"))?;
        Ok(())
    }

    fn method(&mut self, channel: u16, m: AMQPClass) -> anyhow::Result<()> {
        self.push(AMQPFrame::Method(channel, m))
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Read what the socket has (at least one byte).
    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.pos > 0 && self.pos * 2 >= self.rbuf.len() {
            self.rbuf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.rbuf.len();
        self.rbuf.resize(len + 64 * 1024, 0);
        let n = self.stream.read(&mut self.rbuf[len..]).await?;
        self.rbuf.truncate(len + n);
        if n == 0 {
            bail!("the broker closed the connection");
        }
        Ok(())
    }

    /// The next complete frame already read, if any.
    fn next_frame(&mut self) -> anyhow::Result<Option<AMQPFrame>> {
        let buf = &self.rbuf[self.pos..];
        if buf.len() < 7 {
            return Ok(None);
        }
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
        if buf.len() < size + 8 {
            return Ok(None);
        }
        let (_, frame) = parse_frame(&buf[..size + 8]).map_err(|e| anyhow!("bad frame: {e:?}"))?;
        self.pos += size + 8;
        Ok(Some(frame))
    }

    async fn expect(&mut self) -> anyhow::Result<AMQPFrame> {
        loop {
            if let Some(f) = self.next_frame()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }
}

/// A delivery being assembled from its method, header and body frames.
struct Incoming {
    tag: u64,
    properties: Option<BasicProperties>,
    left: u64,
}

async fn raw(uri: amq_protocol::uri::AMQPUri, a: &FloorArgs) -> anyhow::Result<()> {
    let stream = TcpStream::connect((uri.authority.host.as_str(), uri.authority.port))
        .await
        .context("connecting to the broker")?;
    stream.set_nodelay(true)?;
    let mut w = Wire { stream, rbuf: Vec::new(), pos: 0, out: Vec::new() };
    w.push(AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()))?;
    w.flush().await?;
    match w.expect().await? {
        AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_))) => {}
        f => bail!("expected connection.start, got {f}"),
    }
    let user = &uri.authority.userinfo;
    w.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from(format!("\0{}\0{}", user.username, user.password)),
            locale: "en_US".into(),
        })),
    )?;
    w.flush().await?;
    let tune = match w.expect().await? {
        AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
        f => bail!("expected connection.tune, got {f}"),
    };
    w.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max.min(128 * 1024),
            heartbeat: 0,
        })),
    )?;
    w.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: uri.vhost.clone().into(),
        })),
    )?;
    // Channel 1 consumes, channel 2 publishes replies under confirms.
    for ch in [1, 2] {
        w.method(ch, AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})))?;
    }
    w.method(1, AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: a.prefetch, global: false })))?;
    w.method(2, AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false })))?;
    w.method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: a.queue.clone().into(),
            consumer_tag: "floor".into(),
            ..basic::Consume::default()
        })),
    )?;
    w.flush().await?;
    // open-ok, two channel open-ok, qos-ok, select-ok, consume-ok (in order per channel).
    let mut ready = 0;
    while ready < 6 {
        match w.expect().await? {
            AMQPFrame::Method(_, AMQPClass::Connection(connection::AMQPMethod::Close(c))) => {
                bail!("the broker closed the connection: {} {}", c.reply_code, c.reply_text)
            }
            AMQPFrame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => {
                bail!("the broker closed a channel: {} {}", c.reply_code, c.reply_text)
            }
            AMQPFrame::Method(..) => ready += 1,
            _ => {}
        }
    }

    let mut current: Option<Incoming> = None;
    // (delivery tag, confirm sequence of its reply), in delivery order.
    let mut pending: VecDeque<(u64, Option<u64>)> = VecDeque::new();
    let mut next_seq = 1_u64;
    let mut confirmed = 0_u64;
    let mut confirmed_singles = BTreeSet::new();
    loop {
        // Frames already read (the first deliveries may have come with consume-ok) first.
        while let Some(frame) = w.next_frame()? {
            let complete = match frame {
                AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))) => {
                    current = Some(Incoming { tag: d.delivery_tag, properties: None, left: 0 });
                    None
                }
                AMQPFrame::Header(1, h) => {
                    let m = current.as_mut().context("a header without basic.deliver")?;
                    m.properties = Some(h.properties);
                    m.left = h.body_size;
                    if h.body_size == 0 { current.take() } else { None }
                }
                AMQPFrame::Body(1, data) => {
                    let m = current.as_mut().context("a body without basic.deliver")?;
                    m.left = m.left.saturating_sub(data.len() as u64);
                    if m.left == 0 { current.take() } else { None }
                }
                AMQPFrame::Method(2, AMQPClass::Basic(basic::AMQPMethod::Ack(ack))) => {
                    if ack.multiple {
                        confirmed = confirmed.max(ack.delivery_tag);
                    } else {
                        confirmed_singles.insert(ack.delivery_tag);
                    }
                    while confirmed_singles.remove(&(confirmed + 1)) {
                        confirmed += 1;
                    }
                    None
                }
                AMQPFrame::Method(2, AMQPClass::Basic(basic::AMQPMethod::Nack(_))) => {
                    bail!("the broker refused a reply (basic.nack)")
                }
                AMQPFrame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => {
                    bail!("the broker closed a channel: {} {}", c.reply_code, c.reply_text)
                }
                AMQPFrame::Method(_, AMQPClass::Connection(connection::AMQPMethod::Close(c))) => {
                    bail!("the broker closed the connection: {} {}", c.reply_code, c.reply_text)
                }
                _ => None,
            };
            if let Some(m) = complete {
                let reply = m.properties.as_ref().and_then(reply_of);
                match reply {
                    Some((reply_to, id)) => {
                        let body = reply_body(&id);
                        w.method(
                            2,
                            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                                exchange: "".into(),
                                routing_key: reply_to.into(),
                                mandatory: false,
                                immediate: false,
                            })),
                        )?;
                        w.push(AMQPFrame::Header(
                            2,
                            AMQPContentHeader {
                                class_id: 60,
                                body_size: body.len() as u64,
                                properties: reply_properties(&id),
                            },
                        ))?;
                        w.push(AMQPFrame::Body(2, body))?;
                        pending.push_back((m.tag, Some(next_seq)));
                        next_seq += 1;
                    }
                    None => pending.push_back((m.tag, None)),
                }
            }
        }
        // Acknowledge, in one basic.ack(multiple), every delivery whose reply is confirmed.
        let mut last = None;
        while let Some(&(tag, seq)) = pending.front() {
            if seq.is_some_and(|s| s > confirmed) {
                break;
            }
            last = Some(tag);
            pending.pop_front();
            if a.ack_each {
                w.method(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: tag, multiple: false })),
                )?;
                last = None;
            }
        }
        if let Some(tag) = last {
            w.method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: tag, multiple: true })))?;
        }
        w.flush().await?;
        w.fill().await?;
    }
}

async fn with_lapin(uri: amq_protocol::uri::AMQPUri, a: &FloorArgs) -> anyhow::Result<()> {
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
    let runtime = lapin::runtime::default_runtime()?;
    let conn = lapin::Connection::connect_uri_with_config(
        uri,
        lapin::ConnectionProperties::default(),
        lapin::tcp::OwnedTLSConfig::default(),
        runtime,
    )
    .await?;
    let consumer_channel = conn.create_channel().await?;
    consumer_channel.basic_qos(a.prefetch, BasicQosOptions { global: false }).await?;
    let publisher = conn.create_channel().await?;
    publisher.confirm_select(Default::default()).await?;
    let mut consumer = consumer_channel
        .basic_consume(a.queue.as_str().into(), "floor".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    // As the raw client: take what has arrived, publish the replies, wait for
    // their confirms, then one multiple ack.
    loop {
        let mut batch = Vec::new();
        let first = consumer.next().await.context("the consumer ended")??;
        batch.push(first);
        while let Some(Some(more)) = futures_util::FutureExt::now_or_never(consumer.next()) {
            batch.push(more?);
        }
        // Published together (each publish waits for lapin's I/O thread to take the frames).
        let replies: Vec<(String, String, Vec<u8>)> = batch
            .iter()
            .filter_map(|d| reply_of(&d.properties))
            .map(|(reply_to, id)| {
                let body = reply_body(&id);
                (reply_to, id, body)
            })
            .collect();
        let confirms = futures_util::future::try_join_all(replies.iter().map(|(reply_to, id, body)| {
            publisher.basic_publish(
                "".into(),
                reply_to.as_str().into(),
                BasicPublishOptions::default(),
                body,
                reply_properties(id),
            )
        }))
        .await?;
        for c in confirms {
            if c.await?.is_nack() {
                bail!("the broker refused a reply (basic.nack)");
            }
        }
        if let Some(last) = batch.last() {
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn celery_properties(ignore_result: bool) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("ignore_result".into(), AMQPValue::Boolean(ignore_result));
        BasicProperties::default()
            .with_headers(headers)
            .with_reply_to("c5d0a1f6-reply".into())
            .with_correlation_id("9f3e2c1a-task".into())
    }

    #[test]
    fn a_reply_goes_to_the_messages_reply_to_with_the_task_id_unless_it_ignores_its_result() {
        assert_eq!(reply_of(&celery_properties(false)), Some(("c5d0a1f6-reply".into(), "9f3e2c1a-task".into())));
        assert_eq!(reply_of(&celery_properties(true)), None);
        assert_eq!(reply_of(&BasicProperties::default()), None);
    }

    #[test]
    fn frames_are_read_only_once_complete() {
        let mut out = Vec::new();
        out = cookie_factory::gen_simple(gen_frame(&AMQPFrame::Heartbeat), out).unwrap();
        out = cookie_factory::gen_simple(gen_frame(&AMQPFrame::Body(1, b"hello".to_vec())), out).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let mut w = Wire { stream, rbuf: out[..out.len() - 1].to_vec(), pos: 0, out: Vec::new() };
            assert_eq!(w.next_frame().unwrap(), Some(AMQPFrame::Heartbeat));
            assert_eq!(w.next_frame().unwrap(), None, "the body frame lacks its end byte");
            w.rbuf.push(*out.last().unwrap());
            assert_eq!(w.next_frame().unwrap(), Some(AMQPFrame::Body(1, b"hello".to_vec())));
        });
    }
}
