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
//! lost (see `POP_SCRIPT`). Every message is taken that way, so none is ever
//! only in the worker's memory: when every queue is empty the worker waits
//! with `BLMOVE l l RIGHT RIGHT` on each list (which returns when a message
//! arrives but leaves it where it is) and then pops with the script (see
//! [`RedisBroker::fetch`]). The chaos suite (`bench/chaos.sh`) found the
//! `BRPOP` window losing about one task per `kill -9`.

mod fanout;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde_json::Value;

use super::qos::{self, Bookkeeping, Held, QosConsumer, Received};
use super::{BoxFuture, Broker, BrokerError, Capabilities, Consumer, Housekeeping, Transport};
use crate::config::TransportOptions;
use crate::connection::redis as redis_conn;
use crate::protocol::EncodedTask;
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

/// Pop up to ARGV[1] messages from KEYS[5..] and record each. The lists come
/// in groups of ARGV[3] (one group per priority step, highest first, each
/// with every consumed queue): a group is emptied before the next, and within
/// a group the queues take turns, one message each — so a queue with a
/// backlog never starves another (kombu rotates its queue cycle to the same
/// end; the worker also rotates where each turn starts).
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
local width = math.max(1, tonumber(ARGV[3]) or 1)
local first = 5
while first <= #KEYS and #out < max * 3 do
  local last = math.min(first + width - 1, #KEYS)
  local empty = {}
  local left = last - first + 1
  while left > 0 and #out < max * 3 do
    for i = first, last do
      if #out >= max * 3 then break end
      if not empty[i] then
        local m = redis.call('RPOP', KEYS[i])
        if m then
          out[#out + 1] = KEYS[i]
          out[#out + 1] = m
          out[#out + 1] = record(KEYS[1], KEYS[2], ARGV[2], m)
        else
          empty[i] = true
          left = left - 1
        end
      end
    end
  end
  first = last + 1
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
const WAIT_TIMEOUT: f64 = 1.0;

/// How long the consumer sleeps between two polls when the server has no
/// `BLMOVE` (Redis before 6.2) to wait with.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A connection to a Redis broker speaking kombu's transport: the
/// bookkeeping and the commands behind [`RedisTransport`].
#[derive(Clone)]
pub struct RedisBroker {
    /// For ordinary commands (multiplexed, auto-reconnecting).
    conn: ConnectionManager,
    /// Where the wake-up connections come from.
    client: redis::Client,
    /// One connection per list for the blocking `BLMOVE` waits (a blocked
    /// connection serves nothing else), opened on first use.
    waiters: Arc<Mutex<HashMap<String, ConnectionManager>>>,
    /// False once the server said it has no `BLMOVE`: the consumer polls.
    blmove: Arc<AtomicBool>,
    opts: TransportOptions,
    pop: redis::Script,
    restore: redis::Script,
    unlock: redis::Script,
    /// The fetch id to use next: kept after a failed fetch so the retry replays it.
    next_fetch: Arc<Mutex<Option<String>>>,
    /// The last fetch whose reply arrived (its saved copy is deleted next time).
    done_fetch: Arc<Mutex<Option<String>>>,
    /// Where the next fetch's turn among the consumed queues starts.
    turn: Arc<std::sync::atomic::AtomicUsize>,
}

/// kombu's `_q_for_pri`: the list for `queue` at `priority`, which is rounded
/// down to one of the priority steps; step 0 is the plain queue name.
pub fn priority_list(opts: &TransportOptions, queue: &str, priority: u8) -> String {
    let step = opts.priority_steps.iter().copied().filter(|s| *s <= priority).max().unwrap_or(0);
    if step == 0 { queue.to_string() } else { format!("{queue}{}{step}", opts.sep) }
}

/// Lock a mutex, ignoring poisoning (the data is a plain id).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedisBroker {
    /// Connect to the broker at `url` (`redis://[:password@]host:port/db`,
    /// `unix:///path`, `socket:///path`).
    pub async fn connect(url: &str, opts: TransportOptions) -> Result<Self, BrokerError> {
        let client = redis_conn::open_client(url)?;
        let conn = redis_conn::connect(&client, Duration::from_secs(30)).await?;
        Ok(RedisBroker {
            conn,
            client,
            waiters: Arc::default(),
            blmove: Arc::new(AtomicBool::new(true)),
            opts,
            pop: redis::Script::new(&format!("{RECORD_FN}{POP_SCRIPT}")),
            restore: redis::Script::new(RESTORE_SCRIPT),
            unlock: redis::Script::new(UNLOCK_SCRIPT),
            next_fetch: Arc::default(),
            done_fetch: Arc::default(),
            turn: Arc::default(),
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

    /// The priority steps, in the order kombu polls them (each once).
    fn priority_steps(&self) -> Vec<u8> {
        let mut steps = self.opts.priority_steps.clone();
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// The lists to consume, in the order kombu polls them: grouped by
    /// priority step, then by queue.
    pub fn consume_lists(&self, queues: &[String]) -> Vec<String> {
        let steps = self.priority_steps();
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
        Ok(pipe.query_async::<()>(&mut c).await?)
    }

    /// Receive up to `max` messages from `lists`, each recorded in the ack
    /// bookkeeping as it is popped: take what is there at once, or wait up to
    /// a second for something to arrive and take it then.
    pub async fn fetch(&self, lists: &[String], max: usize) -> Result<Vec<Received>, BrokerError> {
        if max == 0 || lists.is_empty() {
            return Ok(Vec::new());
        }
        let got = self.pop(lists, max, false).await?;
        if !got.is_empty() || !self.wait(lists).await? {
            return Ok(got);
        }
        self.pop(lists, max, true).await
    }

    /// Pop and record up to `max` messages from `lists`, in order
    /// (`POP_SCRIPT`); `idle`: after a wait on empty queues.
    async fn pop(&self, lists: &[String], max: usize, idle: bool) -> Result<Vec<Received>, BrokerError> {
        let mut c = self.conn.clone();
        let fetch_id = lock(&self.next_fetch).take().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let done_id = lock(&self.done_fetch).take().unwrap_or_default();
        let mut inv = self.pop.prepare_invoke();
        // `lists` is priority-major (`consume_lists`): one group of queues per priority step.
        let steps = self.priority_steps().len();
        let width = if steps > 0 && lists.len().is_multiple_of(steps) { lists.len() / steps } else { lists.len() };
        inv.key(self.key("unacked"))
            .key(self.key("unacked_index"))
            .key(self.key(&format!("celeriac.fetch.{fetch_id}")))
            .key(self.key(&format!("celeriac.fetch.{done_id}")))
            .arg(max)
            .arg(now_secs())
            .arg(width);
        // Each fetch starts its turn at the next queue (within every priority group).
        let start = if width > 1 { self.turn.fetch_add(1, Ordering::Relaxed) % width } else { 0 };
        for group in lists.chunks(width.max(1)) {
            for l in group[start.min(group.len())..].iter().chain(&group[..start.min(group.len())]) {
                inv.key(l);
            }
        }
        let flat: Vec<Vec<u8>> = match inv.invoke_async(&mut c).await {
            Ok(flat) => flat,
            Err(e) => {
                // The script may have run with its reply lost: retry with the same id.
                *lock(&self.next_fetch) = Some(fetch_id);
                *lock(&self.done_fetch) = Some(done_id).filter(|d| !d.is_empty());
                return Err(e.into());
            }
        };
        if flat.is_empty() {
            // Nothing was handed out: the id can be used again, the old copy is deleted.
            *lock(&self.next_fetch) = Some(fetch_id);
            return Ok(Vec::new());
        }
        *lock(&self.done_fetch) = Some(fetch_id);
        Ok(flat
            .chunks_exact(3)
            .map(|p| Received {
                queue: String::from_utf8_lossy(&p[0]).into_owned(),
                payload: p[1].clone(),
                tag: (!p[2].is_empty()).then(|| String::from_utf8_lossy(&p[2]).into_owned()),
                idle,
            })
            .collect())
    }

    /// Wait until one of `lists` has a message, up to [`WAIT_TIMEOUT`],
    /// without taking it: `BLMOVE l l RIGHT RIGHT` moves the oldest message
    /// to where it already is. True if one arrived. One wait per list, each on
    /// its own connection; the first to return ends the wait (the others stay
    /// blocked on the server until their timeout, and the next wait on that
    /// list queues behind, returning at once if a message arrived meanwhile).
    async fn wait(&self, lists: &[String]) -> Result<bool, BrokerError> {
        if !self.blmove.load(Ordering::Relaxed) {
            tokio::time::sleep(POLL_INTERVAL).await;
            return Ok(true);
        }
        let mut waits: FuturesUnordered<_> = lists.iter().map(|l| self.wait_one(l)).collect();
        while let Some(r) = waits.next().await {
            match r {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                        && e.to_string().to_ascii_lowercase().contains("unknown command") =>
                {
                    tracing::warn!(
                        "This Redis server has no BLMOVE (Redis 6.2+): polling the queues every {POLL_INTERVAL:?} \
                         while they are empty instead"
                    );
                    self.blmove.store(false, Ordering::Relaxed);
                    return Ok(true);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// One list's `BLMOVE` wait: true if a message is there.
    async fn wait_one(&self, list: &str) -> redis::RedisResult<bool> {
        let existing = lock(&self.waiters).get(list).cloned();
        let mut c = match existing {
            Some(c) => c,
            None => {
                // Replies may queue behind a wait left from the previous round.
                let c = redis_conn::connect(&self.client, Duration::from_secs_f64(2.0 * WAIT_TIMEOUT + 10.0)).await?;
                lock(&self.waiters).entry(list.to_string()).or_insert(c).clone()
            }
        };
        let moved: Option<Vec<u8>> = redis::cmd("BLMOVE")
            .arg(list)
            .arg(list)
            .arg("RIGHT")
            .arg("RIGHT")
            .arg(WAIT_TIMEOUT)
            .query_async(&mut c)
            .await?;
        Ok(moved.is_some())
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
        Ok(pipe.query_async::<()>(&mut c).await?)
    }

    /// Refresh the receive time of messages this worker still holds, so that
    /// no restore sweep (ours or a Python worker's) treats them as abandoned.
    /// `ZADD XX` only updates tags still present: acknowledged ones stay gone.
    pub async fn touch(&self, tags: &HashSet<String>) -> Result<(), BrokerError> {
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
        cmd.query_async::<i64>(&mut c).await?;
        Ok(())
    }

    /// Put an unacknowledged message back on its queue, marked redelivered
    /// (kombu's `restore_by_tag`). Returns whether it was restored (false if it
    /// had been acknowledged or restored by someone else meanwhile).
    pub async fn restore(&self, tag: &str) -> Result<bool, BrokerError> {
        let mut c = self.conn.clone();
        let entry: Option<Vec<u8>> = c.hget(self.key("unacked"), tag).await?;
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
        let n: i64 = inv.invoke_async(&mut c).await?;
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
    pub async fn lookup(&self, exchange: &str, routing_key: &str) -> Result<Vec<String>, BrokerError> {
        if exchange.is_empty() {
            return Ok(vec![routing_key.to_string()]);
        }
        let mut c = self.conn.clone();
        let members: Vec<String> = c.smembers(self.key(&format!("_kombu.binding.{exchange}"))).await?;
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
    pub async fn restore_visible(&self, ours: &HashSet<String>) -> Result<usize, BrokerError> {
        let mut c = self.conn.clone();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let locked: Option<String> = redis::cmd("SET")
            .arg(self.key("unacked_mutex"))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(self.opts.unacked_mutex_expire().as_millis() as u64)
            .query_async(&mut c)
            .await?;
        if locked.is_none() {
            let left: i64 = c.pttl(self.key("unacked_mutex")).await.unwrap_or(-1);
            tracing::debug!(
                "restore sweep skipped: another worker holds unacked_mutex (for {:.1} s more)",
                left as f64 / 1000.0
            );
            return Ok(0);
        }
        let ceiling = now_secs() - self.opts.visibility().as_secs_f64();
        let result = async {
            let tags: Vec<String> = c.zrangebyscore_limit(self.key("unacked_index"), 0, ceiling, 0, 1000).await?;
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

    /// kombu's `_purge`: the length of each priority list of `queue`, then
    /// the lists deleted, in one transaction.
    pub async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        let mut steps = self.opts.priority_steps.clone();
        steps.sort_unstable();
        steps.dedup();
        let lists: Vec<String> = steps.iter().map(|s| self.list_for(queue, *s)).collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for l in &lists {
            pipe.llen(l).del(l).ignore();
        }
        let mut c = self.conn.clone();
        let sizes: Vec<u64> = pipe.query_async(&mut c).await?;
        Ok(sizes.iter().sum())
    }

    /// Publish an envelope to `queue` (default exchange) at `priority`.
    pub async fn publish(&self, queue: &str, priority: u8, envelope: &[u8]) -> Result<(), BrokerError> {
        let mut c = self.conn.clone();
        let _: i64 = c.lpush(self.list_for(queue, priority), envelope).await?;
        Ok(())
    }
}

/// kombu's Redis transport, as the worker and the CLI use it.
#[derive(Clone)]
pub struct RedisTransport {
    url: String,
    /// For the pidbox subscription (a connection of its own).
    client: redis::Client,
    broker: RedisBroker,
    held: Held,
}

impl RedisTransport {
    /// Connect to the broker at `url` (`redis://[:password@]host:port/db`,
    /// `rediss://`, `unix:///path`, `socket:///path`).
    pub async fn connect(url: &str, opts: TransportOptions) -> Result<Self, BrokerError> {
        Ok(RedisTransport {
            url: url.to_string(),
            client: redis_conn::open_client(url)?,
            broker: RedisBroker::connect(url, opts).await?,
            held: Held::default(),
        })
    }
}

/// One start reserved in a task's shared bucket (GCRA on the server's clock):
/// the key holds the theoretical arrival time in microseconds. KEYS: the
/// bucket; ARGV: the interval between starts in microseconds. Returns the
/// wait in microseconds.
const RESERVE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local interval = tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', math.ceil((tat + interval - now) / 1000) + 1000)
return tat - now
"#;

/// The reservation script, hashed once.
static RESERVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(RESERVE_SCRIPT));

impl crate::broker::SharedRateLimits for RedisTransport {
    fn reserve<'a>(
        &'a self,
        task: &'a str,
        per_second: f64,
    ) -> BoxFuture<'a, Result<std::time::Duration, BrokerError>> {
        Box::pin(async move {
            let interval = (1e6 / per_second).clamp(1.0, 1e12) as u64;
            let mut c = self.broker.conn.clone();
            let wait: i64 =
                RESERVE.key(format!("celeriac-rate-limit:{task}")).arg(interval).invoke_async(&mut c).await?;
            Ok(std::time::Duration::from_micros(wait.max(0) as u64))
        })
    }
}

impl Transport for RedisTransport {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { fanout: true, priorities: true, per_queue_prefetch: false }
    }

    fn fanout(&self) -> Option<&dyn crate::broker::Fanout> {
        Some(self)
    }

    fn shared_rate_limits(&self) -> Option<&dyn crate::broker::SharedRateLimits> {
        Some(self)
    }

    fn declare<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.broker.declare(queues))
    }

    fn publish<'a>(&'a self, queue: &'a str, task: &'a EncodedTask) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { self.broker.publish(queue, task.priority.unwrap_or(0), &task.to_redis_bytes()).await })
    }

    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(self.broker.purge(queue))
    }

    fn route<'a>(&'a self, exchange: &'a str, routing_key: &'a str) -> BoxFuture<'a, Result<Vec<String>, BrokerError>> {
        Box::pin(self.broker.lookup(exchange, routing_key))
    }

    fn open_channel(&self) -> BoxFuture<'_, Result<Broker, BrokerError>> {
        Box::pin(async move {
            let broker = RedisBroker::connect(&self.url, self.broker.opts.clone()).await?;
            Ok(Broker::new(RedisTransport {
                url: self.url.clone(),
                client: self.client.clone(),
                broker,
                held: self.held.clone(),
            }))
        })
    }

    fn consume<'a>(
        &'a self,
        queues: &'a [String],
        _prefetch: usize,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BrokerError>> {
        let lists = self.broker.consume_lists(queues);
        let consumer = QosConsumer::new(self.broker.clone(), lists, self.held.clone());
        Box::pin(async move { Ok(Box::new(consumer) as Box<dyn Consumer>) })
    }

    fn start_housekeeping(&self) -> BoxFuture<'_, Housekeeping> {
        let interval = self.broker.opts.restore_interval();
        Box::pin(qos::start_housekeeping(self.broker.clone(), self.held.clone(), interval))
    }
}

impl Bookkeeping for RedisBroker {
    fn fetch(&self, sources: &[String], max: usize) -> impl Future<Output = Result<Vec<Received>, BrokerError>> + Send {
        RedisBroker::fetch(self, sources, max)
    }

    fn ack(&self, tags: &[String]) -> impl Future<Output = Result<(), BrokerError>> + Send {
        RedisBroker::ack(self, tags)
    }

    fn restore(&self, tag: &str) -> impl Future<Output = Result<bool, BrokerError>> + Send {
        RedisBroker::restore(self, tag)
    }

    fn touch(&self, tags: &HashSet<String>) -> impl Future<Output = Result<(), BrokerError>> + Send {
        RedisBroker::touch(self, tags)
    }

    fn restore_visible(&self, ours: &HashSet<String>) -> impl Future<Output = Result<usize, BrokerError>> + Send {
        RedisBroker::restore_visible(self, ours)
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
}
