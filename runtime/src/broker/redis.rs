//! kombu's Redis transport, exactly, so Celeriac and Python workers can share one Redis.
//!
//! - A queue is a Redis LIST named after it; priorities live in sub-lists
//!   `<queue>\x06\x16<step>` (steps 0/3/6/9; on Redis a LOWER number is served first).
//! - Producers `LPUSH` a JSON envelope; consumers pop from the right (FIFO).
//! - A received message is recorded in `unacked` (HASH tag → `[envelope, exchange,
//!   routing_key]`) and `unacked_index` (ZSET tag → receive time) until it is
//!   acknowledged; a message whose consumer died is pushed back by the restore
//!   sweep once it is older than the visibility timeout, guarded by `unacked_mutex`.
//!
//! Where kombu pops with `BRPOP` and records the message with a second command
//! (a crash in between loses the message), Celeriac pops and records in one Lua
//! script, atomically and in batches, and a lost reply is replayed rather than
//! lost (see `POP_SCRIPT`). It only falls back to `BRPOP` to wait when every
//! queue is empty; the worker records a message it got that way as soon as
//! it is going to hold on to it, and not at all when it acknowledges it as it
//! starts, at once ([`RedisBroker::record`]). That one message has kombu's
//! window (popped, not yet recorded: lost if the worker dies right then).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde_json::Value;

use super::{BrokerError, Delivery};
use crate::config::TransportOptions;
use crate::protocol::time::now_secs;

/// Lua shared by the pop scripts: record one message in the ack bookkeeping.
/// Writes `[<envelope>, "<exchange>", "<routing_key>"]` exactly as kombu does,
/// keeping the envelope's bytes as they are.
const RECORD_FN: &str = r#"
local function record(unacked, index, now, m)
  local ok, env = pcall(cjson.decode, m)
  if not ok or type(env) ~= 'table' or type(env.properties) ~= 'table' then return '' end
  local tag = env.properties.delivery_tag
  if type(tag) ~= 'string' or tag == '' then return '' end
  local ex, rk = '', ''
  local di = env.properties.delivery_info
  if type(di) == 'table' then
    if type(di.exchange) == 'string' then ex = di.exchange end
    if type(di.routing_key) == 'string' then rk = di.routing_key end
  end
  redis.call('ZADD', index, now, tag)
  redis.call('HSET', unacked, tag, '[' .. m .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
  return tag
end
"#;

/// Pop up to ARGV[1] messages from KEYS[5..] (in order) and record each.
/// Returns a flat list `queue, message, tag, queue, message, tag, ...`, where
/// `tag` is the delivery tag recorded in `unacked` (`""` if the message could
/// not be recorded): the tag the worker acknowledges is always the one recorded.
///
/// Idempotent per fetch id: what a call hands out is also saved under its
/// fetch key (KEYS[3]); a call with the same fetch id (the worker retrying
/// after the reply was lost, e.g. Redis restarting) returns that instead of
/// popping more, so a lost reply never strands messages in `unacked`. The
/// previous fetch's key (KEYS[4]) is deleted once the worker has its reply.
const POP_SCRIPT: &str = r#"
redis.call('DEL', KEYS[4])
local saved = redis.call('GET', KEYS[3])
if saved then return cjson.decode(saved) end
local out = {}
local max = tonumber(ARGV[1])
for i = 5, #KEYS do
  while #out < max * 3 do
    local m = redis.call('RPOP', KEYS[i])
    if not m then break end
    out[#out + 1] = KEYS[i]
    out[#out + 1] = m
    out[#out + 1] = record(KEYS[1], KEYS[2], ARGV[2], m)
  end
  if #out >= max * 3 then break end
end
if #out > 0 then redis.call('SET', KEYS[3], cjson.encode(out), 'EX', 3600) end
return out
"#;

/// Move an unacked message back to its queue(s) if it is still the same
/// unacked entry. KEYS: unacked, unacked_index, target lists...; ARGV: tag,
/// expected entry, payload. Like kombu, every queue bound to the message's
/// exchange and routing key gets it back.
const RESTORE_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
for i = 3, #KEYS do redis.call('RPUSH', KEYS[i], ARGV[3]) end
return 1
"#;

/// Release `unacked_mutex` only if we still hold it.
const UNLOCK_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// How long a blocking wait lasts before the consumer loop looks around again.
const BRPOP_TIMEOUT: f64 = 1.0;

/// A connection to a Redis broker speaking kombu's transport.
#[derive(Clone)]
pub struct RedisBroker {
    /// For ordinary commands (multiplexed, auto-reconnecting).
    conn: ConnectionManager,
    /// For `BRPOP`, which would block everything else on a shared connection.
    blocking: ConnectionManager,
    opts: TransportOptions,
    pop: redis::Script,
    restore: redis::Script,
    unlock: redis::Script,
    /// The fetch id to use next: kept after a failed fetch so the retry replays it.
    next_fetch: Arc<Mutex<Option<String>>>,
    /// The last fetch whose reply arrived (its saved copy is deleted next time).
    done_fetch: Arc<Mutex<Option<String>>>,
}

/// Turn kombu-style URLs into ones the redis crate understands:
/// `socket:///path` and `redis+socket:///path` become `unix:///path`.
pub fn normalize_url(url: &str) -> String {
    for prefix in ["redis+socket://", "socket://"] {
        if let Some(rest) = url.strip_prefix(prefix) {
            return format!("unix://{rest}");
        }
    }
    url.to_string()
}

/// A client for a kombu-style Redis URL. `socket://` becomes `unix://`; for
/// `rediss://` (TLS), kombu's query parameters map onto the redis crate's TLS
/// options: `ssl_cert_reqs` (`required`, `optional`, `none`, or `CERT_*`;
/// anything but `required` skips certificate verification), `ssl_ca_certs`
/// (a PEM file of trusted roots instead of the system store), and
/// `ssl_certfile` + `ssl_keyfile` (a client certificate).
pub fn open_client(url: &str) -> Result<redis::Client, String> {
    let url = normalize_url(url);
    if !url.starts_with("rediss://") {
        return redis::Client::open(url.as_str()).map_err(|e| format!("{}: {e}", mask(&url)));
    }
    let (base, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let mut keep = Vec::new();
    let (mut verify, mut ca, mut cert, mut key) = (true, None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "ssl_cert_reqs" => {
                let v = v.to_ascii_lowercase();
                verify = matches!(v.trim_start_matches("cert_"), "required");
            }
            "ssl_ca_certs" => ca = Some(v.to_string()),
            "ssl_certfile" => cert = Some(v.to_string()),
            "ssl_keyfile" => key = Some(v.to_string()),
            _ => keep.push(pair),
        }
    }
    let mut target = base.to_string();
    if !keep.is_empty() {
        target = format!("{target}?{}", keep.join("&"));
    }
    if !verify {
        target.push_str("#insecure");
    }
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("cannot read {p}: {e}"));
    let client_tls = match (cert, key) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig { client_cert: read(&c)?, client_key: read(&k)? }),
        (None, None) => None,
        _ => return Err("ssl_certfile and ssl_keyfile must be given together".into()),
    };
    let root_cert = ca.as_deref().map(read).transpose()?;
    let result = if client_tls.is_some() || root_cert.is_some() {
        redis::Client::build_with_tls(target.as_str(), redis::TlsCertificates { client_tls, root_cert })
    } else {
        redis::Client::open(target.as_str())
    };
    result.map_err(|e| format!("{}: {e}", mask(&url)))
}

/// A URL for error messages, password hidden.
fn mask(url: &str) -> String {
    crate::worker::mask_password(url)
}

/// Connect a command connection and a blocking one to `url`.
pub async fn connect_pair(url: &str) -> Result<(ConnectionManager, ConnectionManager), BrokerError> {
    let client = open_client(url).map_err(BrokerError::Url)?;
    let base = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let conn = client
        .get_connection_manager_with_config(base.clone().set_response_timeout(Some(Duration::from_secs(30))))
        .await
        .map_err(BrokerError::redis)?;
    let blocking = client
        .get_connection_manager_with_config(
            base.set_response_timeout(Some(Duration::from_secs_f64(BRPOP_TIMEOUT + 10.0))),
        )
        .await
        .map_err(BrokerError::redis)?;
    Ok((conn, blocking))
}

/// kombu's `_q_for_pri`: the list for `queue` at `priority`, which is rounded
/// down to one of the priority steps; step 0 is the plain queue name.
pub fn priority_list(opts: &TransportOptions, queue: &str, priority: u8) -> String {
    let step = opts.priority_steps.iter().copied().filter(|s| *s <= priority).max().unwrap_or(0);
    if step == 0 { queue.to_string() } else { format!("{queue}{}{step}", opts.sep) }
}

/// What recording a received message needs from its envelope's properties.
#[derive(serde::Deserialize)]
struct ReceivedProps {
    delivery_tag: String,
    delivery_info: Option<DeliveryInfo>,
}

#[derive(serde::Deserialize, Default)]
struct DeliveryInfo {
    exchange: Option<Value>,
    routing_key: Option<Value>,
}

/// The envelope's text and the properties recording needs; `None` if it is
/// not an envelope with a delivery tag (the worker rejects it anyway).
fn received_props(payload: &[u8]) -> Option<(&str, ReceivedProps)> {
    #[derive(serde::Deserialize)]
    struct Env {
        properties: ReceivedProps,
    }
    let text = std::str::from_utf8(payload).ok()?;
    let props = serde_json::from_str::<Env>(text).ok()?.properties;
    (!props.delivery_tag.is_empty()).then_some((text, props))
}

/// Warn about a received message that could not be recorded as unacknowledged.
fn log_unrecorded(r: redis::RedisResult<()>) {
    if let Err(e) = r {
        tracing::warn!("could not record a received message as unacknowledged: {e}");
    }
}

/// Lock a mutex, ignoring poisoning (the data is a plain id).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedisBroker {
    /// Connect to the broker at `url` (`redis://[:password@]host:port/db`,
    /// `unix:///path`, `socket:///path`).
    pub async fn connect(url: &str, opts: TransportOptions) -> Result<Self, BrokerError> {
        let (conn, blocking) = connect_pair(url).await?;
        Ok(RedisBroker {
            conn,
            blocking,
            opts,
            pop: redis::Script::new(&format!("{RECORD_FN}{POP_SCRIPT}")),
            restore: redis::Script::new(RESTORE_SCRIPT),
            unlock: redis::Script::new(UNLOCK_SCRIPT),
            next_fetch: Arc::default(),
            done_fetch: Arc::default(),
        })
    }

    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.opts.global_keyprefix)
    }

    /// The list holding `queue`'s messages of priority `priority`
    /// (kombu's `_q_for_pri`: the priority rounded down to a step).
    pub fn list_for(&self, queue: &str, priority: u8) -> String {
        self.key(&priority_list(&self.opts, queue, priority))
    }

    /// The lists to consume, in the order kombu polls them: grouped by
    /// priority step, then by queue.
    pub fn consume_lists(&self, queues: &[String]) -> Vec<String> {
        let mut steps = self.opts.priority_steps.clone();
        steps.sort_unstable();
        steps.dedup();
        steps.iter().flat_map(|s| queues.iter().map(move |q| self.list_for(q, *s))).collect()
    }

    /// Declare queues the way kombu does (bindings of the default exchange),
    /// so Python tools that inspect bindings see them.
    pub async fn declare(&self, queues: &[String]) -> Result<(), BrokerError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for q in queues {
            let member = format!("{q}{sep}{sep}{q}", sep = self.opts.sep);
            pipe.sadd(self.key(&format!("_kombu.binding.{q}")), &member).ignore();
            pipe.sadd(self.key(&format!("_kombu.binding_permanent.{q}")), &member).ignore();
        }
        let mut c = self.conn.clone();
        pipe.query_async::<()>(&mut c).await.map_err(BrokerError::redis)
    }

    /// Receive up to `max` messages from `lists`: take what is there at once
    /// (recorded in the ack bookkeeping), or wait up to a second for one (not
    /// recorded yet: see [`RedisBroker::record`]).
    pub async fn fetch(&self, lists: &[String], max: usize) -> Result<Vec<Delivery>, BrokerError> {
        if max == 0 || lists.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let fetch_id = lock(&self.next_fetch).take().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let done_id = lock(&self.done_fetch).take().unwrap_or_default();
        let mut inv = self.pop.prepare_invoke();
        inv.key(self.key("unacked"))
            .key(self.key("unacked_index"))
            .key(self.key(&format!("celeriac.fetch.{fetch_id}")))
            .key(self.key(&format!("celeriac.fetch.{done_id}")))
            .arg(max)
            .arg(now_secs());
        for l in lists {
            inv.key(l);
        }
        let flat: Vec<Vec<u8>> = match inv.invoke_async(&mut c).await {
            Ok(flat) => flat,
            Err(e) => {
                // The script may have run with its reply lost: retry with the same id.
                *lock(&self.next_fetch) = Some(fetch_id);
                *lock(&self.done_fetch) = Some(done_id).filter(|d| !d.is_empty());
                return Err(BrokerError::redis(e));
            }
        };
        if !flat.is_empty() {
            *lock(&self.done_fetch) = Some(fetch_id);
            return Ok(flat.chunks_exact(3).map(|p| Delivery::recorded(&p[0], p[1].clone(), &p[2])).collect());
        }
        let mut b = self.blocking.clone();
        let popped: Option<(Vec<u8>, Vec<u8>)> = b.brpop(lists, BRPOP_TIMEOUT).await.map_err(BrokerError::redis)?;
        let Some((list, payload)) = popped else { return Ok(Vec::new()) };
        let tag = received_props(&payload).map(|(_, p)| p.delivery_tag);
        Ok(vec![Delivery::waited(&list, payload, tag)])
    }

    /// Record a message obtained with BRPOP in the ack bookkeeping, as kombu
    /// does (`MULTI; ZADD unacked_index; HSET unacked; EXEC`, with the routing
    /// read from the envelope).
    ///
    /// The worker calls this before it holds on to the message (an ETA to wait
    /// for, no free run slot, `acks_late`); a message it acknowledges as it
    /// starts, at once, is never recorded — kombu would record it and remove
    /// it again a moment later, and a crash in that moment loses it either way
    /// (popped, not yet recorded). That keeps two Redis transactions off the
    /// idle path, where a client is waiting for the result.
    ///
    /// The reply is not awaited. Polling once queues the transaction on the
    /// command connection now, so Redis runs it before this message's ack,
    /// which is sent later on the same connection.
    pub fn record(&self, tag: &str, payload: &[u8]) {
        let Some(pipe) = self.record_pipeline(tag, payload) else { return };
        let mut c = self.conn.clone();
        let mut recording = Box::pin(async move { pipe.query_async::<()>(&mut c).await });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match recording.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => log_unrecorded(r),
            std::task::Poll::Pending => {
                tokio::spawn(async move { log_unrecorded(recording.await) });
            }
        }
    }

    /// [`RedisBroker::record`], waiting for Redis to confirm it (before a
    /// message is given back, which needs the record to be there).
    pub async fn record_confirmed(&self, tag: &str, payload: &[u8]) -> Result<(), BrokerError> {
        let Some(pipe) = self.record_pipeline(tag, payload) else { return Ok(()) };
        let mut c = self.conn.clone();
        pipe.query_async::<()>(&mut c).await.map_err(BrokerError::redis)
    }

    /// `MULTI; ZADD unacked_index; HSET unacked; EXEC` for a received message,
    /// the entry written as kombu writes it (`None`: not an envelope).
    fn record_pipeline(&self, tag: &str, payload: &[u8]) -> Option<redis::Pipeline> {
        let (text, props) = received_props(payload)?;
        let info = props.delivery_info.unwrap_or_default();
        // As the Lua recorder (and kombu): anything but a string counts as "".
        let quote =
            |v: Option<Value>| Value::String(v.as_ref().and_then(Value::as_str).unwrap_or_default().into()).to_string();
        let entry = format!("[{text}, {}, {}]", quote(info.exchange), quote(info.routing_key));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(self.key("unacked_index"), tag, now_secs())
            .ignore()
            .hset(self.key("unacked"), tag, entry)
            .ignore();
        Some(pipe)
    }

    /// Acknowledge messages: remove them from the bookkeeping (one round trip).
    pub async fn ack(&self, tags: &[String]) -> Result<(), BrokerError> {
        if tags.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for t in tags {
            pipe.zrem(self.key("unacked_index"), t).ignore();
            pipe.hdel(self.key("unacked"), t).ignore();
        }
        let mut c = self.conn.clone();
        pipe.query_async::<()>(&mut c).await.map_err(BrokerError::redis)
    }

    /// Refresh the receive time of messages this worker still holds, so that
    /// no restore sweep (ours or a Python worker's) treats them as abandoned.
    /// `ZADD XX` only updates tags still present: acknowledged ones stay gone.
    pub async fn touch(&self, tags: &std::collections::HashSet<String>) -> Result<(), BrokerError> {
        if tags.is_empty() {
            return Ok(());
        }
        let now = now_secs();
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.key("unacked_index")).arg("XX");
        for t in tags {
            cmd.arg(now).arg(t);
        }
        let mut c = self.conn.clone();
        cmd.query_async::<i64>(&mut c).await.map_err(BrokerError::redis)?;
        Ok(())
    }

    /// Put an unacknowledged message back on its queue, marked redelivered
    /// (kombu's `restore_by_tag`). Returns whether it was restored (false if it
    /// had been acknowledged or restored by someone else meanwhile).
    pub async fn restore(&self, tag: &str) -> Result<bool, BrokerError> {
        let mut c = self.conn.clone();
        let entry: Option<Vec<u8>> = c.hget(self.key("unacked"), tag).await.map_err(BrokerError::redis)?;
        let Some(entry) = entry else { return Ok(false) };
        let Some((payload, queues)) = self.restored_payload(&entry).await? else {
            // Unreadable entry: drop it from the bookkeeping rather than retrying forever.
            tracing::error!("dropping unreadable unacked entry {tag}");
            self.ack(&[tag.to_string()]).await?;
            return Ok(false);
        };
        let mut inv = self.restore.prepare_invoke();
        inv.key(self.key("unacked")).key(self.key("unacked_index"));
        for list in &queues {
            inv.key(list);
        }
        inv.arg(tag).arg(&entry).arg(&payload);
        let n: i64 = inv.invoke_async(&mut c).await.map_err(BrokerError::redis)?;
        Ok(n == 1)
    }

    /// Rebuild the envelope of an unacked entry with `redelivered` set, and
    /// find the list(s) it goes back to.
    async fn restored_payload(&self, entry: &[u8]) -> Result<Option<(Vec<u8>, Vec<String>)>, BrokerError> {
        let Ok(Value::Array(mut parts)) = serde_json::from_slice::<Value>(entry) else { return Ok(None) };
        if parts.len() < 3 {
            return Ok(None);
        }
        let rk = parts[2].as_str().unwrap_or_default().to_string();
        let ex = parts[1].as_str().unwrap_or_default().to_string();
        let mut envelope = parts.swap_remove(0);
        if let Some(h) = envelope.get_mut("headers").and_then(Value::as_object_mut) {
            h.insert("redelivered".into(), Value::Bool(true));
        }
        if let Some(di) = envelope.pointer_mut("/properties/delivery_info").and_then(Value::as_object_mut) {
            di.insert("redelivered".into(), Value::Bool(true));
        }
        let priority = envelope.pointer("/properties/priority").and_then(Value::as_u64).unwrap_or(0).min(255) as u8;
        let queues = self.lookup(&ex, &rk).await?;
        let lists = queues.iter().map(|q| self.list_for(q, priority)).collect();
        let payload = serde_json::to_vec(&envelope).map_err(|e| BrokerError::Protocol(e.to_string()))?;
        Ok(Some((payload, lists)))
    }

    /// The queues an (exchange, routing key) pair delivers to: the routing key
    /// itself for the default exchange, else the exchange's bindings.
    async fn lookup(&self, exchange: &str, routing_key: &str) -> Result<Vec<String>, BrokerError> {
        if exchange.is_empty() {
            return Ok(vec![routing_key.to_string()]);
        }
        let mut c = self.conn.clone();
        let members: Vec<String> =
            c.smembers(self.key(&format!("_kombu.binding.{exchange}"))).await.map_err(BrokerError::redis)?;
        let mut queues: Vec<String> = members
            .iter()
            .filter_map(|m| {
                let mut it = m.split(self.opts.sep.as_str());
                let rk = it.next()?;
                let _pattern = it.next()?;
                let queue = it.next()?;
                (rk == routing_key || rk.is_empty()).then(|| queue.to_string())
            })
            .collect();
        queues.dedup();
        if queues.is_empty() {
            // kombu falls back to the routing key as the queue name.
            queues.push(routing_key.to_string());
        }
        Ok(queues)
    }

    /// The restore sweep: push back every unacked message older than the
    /// visibility timeout whose tag is not in `ours` (messages this worker still
    /// holds), under `unacked_mutex`. Returns how many were restored.
    pub async fn restore_visible(&self, ours: &std::collections::HashSet<String>) -> Result<usize, BrokerError> {
        let mut c = self.conn.clone();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let locked: Option<String> = redis::cmd("SET")
            .arg(self.key("unacked_mutex"))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(300_000)
            .query_async(&mut c)
            .await
            .map_err(BrokerError::redis)?;
        if locked.is_none() {
            return Ok(0);
        }
        let ceiling = now_secs() - self.opts.visibility().as_secs_f64();
        let result = async {
            let tags: Vec<String> = c
                .zrangebyscore_limit(self.key("unacked_index"), 0, ceiling, 0, 1000)
                .await
                .map_err(BrokerError::redis)?;
            let mut n = 0;
            for tag in tags.iter().filter(|t| !ours.contains(*t)) {
                if self.restore(tag).await? {
                    n += 1;
                }
            }
            Ok::<usize, BrokerError>(n)
        }
        .await;
        let _: redis::RedisResult<i64> =
            self.unlock.key(self.key("unacked_mutex")).arg(&token).invoke_async(&mut c).await;
        result
    }

    /// Publish an envelope to `queue` (default exchange) at `priority`.
    pub async fn publish(&self, queue: &str, priority: u8, envelope: &[u8]) -> Result<(), BrokerError> {
        let mut c = self.conn.clone();
        let _: i64 = c.lpush(self.list_for(queue, priority), envelope).await.map_err(BrokerError::redis)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_round_down_to_kombu_steps() {
        let o = TransportOptions::default();
        assert_eq!(priority_list(&o, "celery", 0), "celery");
        assert_eq!(priority_list(&o, "celery", 2), "celery");
        assert_eq!(priority_list(&o, "celery", 5), "celery\x06\x163");
        assert_eq!(priority_list(&o, "celery", 9), "celery\x06\x169");
        assert_eq!(priority_list(&o, "celery", 255), "celery\x06\x169");
    }

    #[test]
    fn received_props_read_the_tag_whatever_the_routing_fields_hold() {
        let env = br#"{"body": "", "properties": {"delivery_tag": "t1", "delivery_info": {"exchange": 5, "routing_key": "celery"}}}"#;
        let (_, props) = received_props(env).expect("an envelope with a tag");
        assert_eq!(props.delivery_tag, "t1");
        let info = props.delivery_info.expect("delivery_info");
        assert_eq!(info.exchange.as_ref().and_then(Value::as_str), None);
        assert_eq!(info.routing_key.as_ref().and_then(Value::as_str), Some("celery"));
        assert!(received_props(br#"{"properties": {"delivery_tag": ""}}"#).is_none());
        assert!(received_props(b"not json").is_none());
    }

    #[test]
    fn socket_urls_become_unix_urls() {
        assert_eq!(normalize_url("socket:///tmp/r.sock"), "unix:///tmp/r.sock");
        assert_eq!(normalize_url("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn kombu_tls_parameters_are_understood() {
        // Verification off: the client is built (no connection is made here).
        assert!(open_client("rediss://localhost:6380/0?ssl_cert_reqs=CERT_NONE").is_ok());
        assert!(open_client("rediss://localhost:6380/0?ssl_cert_reqs=required").is_ok());
        let err = open_client("rediss://localhost:6380/0?ssl_ca_certs=/nonexistent.pem").unwrap_err();
        assert!(err.contains("cannot read /nonexistent.pem"), "{err}");
        assert!(open_client("rediss://h/0?ssl_certfile=/x").unwrap_err().contains("together"));
    }
}
