//! Celery's Redis result backend.
//!
//! Writes `celery-task-meta-<id>` = JSON meta with `SETEX <result_expires>` (or
//! plain `SET` when results never expire) and `PUBLISH` of the same bytes on the
//! same channel, inside one `MULTI`/`EXEC`: a Python client subscribes when it
//! sends the task, reads the key once, and then only listens.

use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::ResultEncoding;
use super::{BackendError, ChordCounter, ChordMember, Reply, ResultBackend, TASK_KEY_PREFIX, Waiter};
use crate::broker::BoxFuture;
use crate::connection::redis as redis_conn;
use crate::protocol::ExceptionInfo;
use crate::protocol::result::ResultMeta;

/// Record one chord header member and, if it completes the chord, claim the
/// chord (only one worker wins) and return every member's entry in order.
/// KEYS: .j .t .s .d .c taskset-meta; ARGV: member `id:index`, index, entry,
/// ttl, claim token, size fallback (the body's `chord_size`).
/// Same keys and semantics as Celery 5.7's own scripts (ZSET `.j` scored by
/// group index, dedup SET `.d`, size `.s` + correction `.t`, claim `.c`).
const CHORD_PART_SCRIPT: &str = r#"
if redis.call('GET', KEYS[5]) == 'done' then return false end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then return false end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[1])
local count = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
  redis.call('EXPIRE', KEYS[6], ttl)
end
local size = tonumber(redis.call('GET', KEYS[3]) or ARGV[6]) or 0
local extra = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if size <= 0 or count < size + extra then return false end
if not redis.call('SET', KEYS[5], ARGV[5], 'NX', 'EX', 60) then return false end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// The chord counting script, hashed once.
static CHORD_PART: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(CHORD_PART_SCRIPT));

/// A connection to a Redis result backend.
#[derive(Clone)]
pub struct RedisBackend {
    client: redis::Client,
    conn: ConnectionManager,
    /// Result time-to-live in seconds; `None` keeps results forever.
    expires: Option<u64>,
    /// How values are written (`result_serializer`, signed under `auth`).
    encoding: ResultEncoding,
}

/// The key holding `task_id`'s state.
pub fn task_key(task_id: &str) -> String {
    format!("{TASK_KEY_PREFIX}{task_id}")
}

impl RedisBackend {
    /// Connect to `url` (`redis://[:password@]host:port/db`, `unix:///path`).
    pub async fn connect(url: &str, expires: Option<u64>, encoding: ResultEncoding) -> Result<Self, BackendError> {
        let client = redis_conn::open_client(url)?;
        let conn = redis_conn::connect(&client, Duration::from_secs(30)).await?;
        Ok(RedisBackend { client, conn, expires, encoding })
    }

    /// Store and publish several states in one `MULTI`/`EXEC` round trip
    /// (`SETEX` then `PUBLISH` for each, in order).
    pub async fn store_many<'a>(&self, metas: impl IntoIterator<Item = &'a ResultMeta>) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for meta in metas {
            // One value that cannot be encoded fails its own task, not the batch.
            let bytes = match self.encoding.encode_meta(meta) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("cannot encode the state of {}: {e}; storing an EncodeError instead", meta.task_id);
                    let exc = ExceptionInfo::new("EncodeError", vec![e.to_string().into()], "kombu.exceptions");
                    let failure =
                        ResultMeta::failure(&meta.task_id, &exc, None).with_date_done(Some(chrono::Utc::now()));
                    self.encoding.encode_meta(&failure).map_err(|e| BackendError::Encode(e.to_string()))?
                }
            };
            let key = task_key(&meta.task_id);
            match self.expires {
                Some(ttl) => pipe.set_ex(&key, &bytes, ttl).ignore(),
                None => pipe.set(&key, &bytes).ignore(),
            };
            pipe.publish(&key, bytes).ignore();
        }
        let mut c = self.conn.clone();
        Ok(pipe.query_async::<()>(&mut c).await?)
    }

    /// The stored state of `task_id`, if any.
    pub async fn get(&self, task_id: &str) -> Result<Option<ResultMeta>, BackendError> {
        let mut c = self.conn.clone();
        let raw: Option<Vec<u8>> = c.get(task_key(task_id)).await?;
        raw.map(|b| decode(&b)).transpose()
    }

    /// Delete the stored result of `task_id` (Celery's `forget`).
    pub async fn forget(&self, task_id: &str) -> Result<(), BackendError> {
        let mut c = self.conn.clone();
        Ok(c.del::<_, ()>(task_key(task_id)).await?)
    }

    /// Record a finished chord header member (Celery's `on_chord_part_return`).
    /// Returns the decoded `[1, id, state, result]` entries of all members, in
    /// group order, when this call completed the chord and won its claim.
    pub async fn chord_part_return(
        &self,
        group_id: &str,
        task_id: &str,
        index: u64,
        state: &str,
        result: &serde_json::Value,
        chord_size: Option<u64>,
    ) -> Result<Option<Vec<serde_json::Value>>, BackendError> {
        let base = format!("celery-taskset-meta-{group_id}");
        let entry = serde_json::json!([1, task_id, state, result]).to_string();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut c = self.conn.clone();
        let mut inv = CHORD_PART.prepare_invoke();
        for suffix in [".j", ".t", ".s", ".d", ".c", ""] {
            inv.key(format!("{base}{suffix}"));
        }
        inv.arg(format!("{task_id}:{index}"))
            .arg(index)
            .arg(entry)
            .arg(self.expires.unwrap_or(0))
            .arg(token)
            .arg(chord_size.unwrap_or(0));
        let members: Option<Vec<String>> = inv.invoke_async(&mut c).await?;
        Ok(members.map(|m| m.iter().filter_map(|e| serde_json::from_str(e).ok()).collect()))
    }

    /// Record a chord's header size, `celery-taskset-meta-<group>.s`, as
    /// Celery's `set_chord_size` does (expiring with the results).
    pub async fn set_chord_size(&self, group_id: &str, size: u64) -> Result<(), BackendError> {
        let key = format!("celery-taskset-meta-{group_id}.s");
        let mut c = self.conn.clone();
        match self.expires {
            Some(ttl) if ttl > 0 => Ok(c.set_ex::<_, _, ()>(key, size, ttl).await?),
            _ => Ok(c.set::<_, _, ()>(key, size).await?),
        }
    }

    /// One more member for a chord: `celery-taskset-meta-<group>.t` + 1, as
    /// Celery's `add_to_chord` (the counting script adds it to the size).
    pub async fn add_to_chord(&self, group_id: &str) -> Result<(), BackendError> {
        let key = format!("celery-taskset-meta-{group_id}.t");
        let mut pipe = redis::pipe();
        pipe.atomic().incr(&key, 1).ignore();
        if let Some(ttl) = self.expires.filter(|t| *t > 0) {
            pipe.expire(&key, ttl as i64).ignore();
        }
        let mut c = self.conn.clone();
        Ok(pipe.query_async::<()>(&mut c).await?)
    }

    /// Mark a chord as done and drop its bookkeeping keys.
    pub async fn chord_done(&self, group_id: &str) -> Result<(), BackendError> {
        let base = format!("celery-taskset-meta-{group_id}");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&[format!("{base}.j"), format!("{base}.t"), format!("{base}.s"), format!("{base}.d")])
            .ignore()
            .set_ex(format!("{base}.c"), "done", 300)
            .ignore();
        let mut c = self.conn.clone();
        Ok(pipe.query_async::<()>(&mut c).await?)
    }

    /// Subscribe to `task_id`'s state channel. Subscribe before sending the
    /// task, as a Python client does, so a fast worker's PUBLISH is not missed.
    pub async fn subscribe(&self, task_id: &str) -> Result<ResultSubscription, BackendError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(task_key(task_id)).await?;
        Ok(ResultSubscription { backend: self.clone(), task_id: task_id.to_string(), pubsub })
    }
}

impl ResultBackend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn store_many<'a>(&'a self, replies: &'a [Reply]) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(RedisBackend::store_many(self, replies.iter().map(|r| &r.meta)))
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>, BackendError>> {
        Box::pin(RedisBackend::get(self, task_id))
    }

    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(RedisBackend::forget(self, task_id))
    }

    fn waiter<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Box<dyn Waiter>, BackendError>> {
        Box::pin(async move { Ok(Box::new(self.subscribe(task_id).await?) as Box<dyn Waiter>) })
    }

    fn chords(&self) -> Option<&dyn ChordCounter> {
        Some(self)
    }
}

impl Waiter for ResultSubscription {
    fn wait(self: Box<Self>, timeout: Duration) -> BoxFuture<'static, Result<ResultMeta, BackendError>> {
        Box::pin(ResultSubscription::wait(*self, timeout))
    }
}

impl ChordCounter for RedisBackend {
    fn chord_part_return<'a>(
        &'a self,
        m: ChordMember<'a>,
    ) -> BoxFuture<'a, Result<Option<Vec<serde_json::Value>>, BackendError>> {
        Box::pin(RedisBackend::chord_part_return(self, m.group_id, m.task_id, m.index, m.state, m.result, m.chord_size))
    }

    fn set_chord_size<'a>(&'a self, group_id: &'a str, size: u64) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(RedisBackend::set_chord_size(self, group_id, size))
    }

    fn add_to_chord<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(RedisBackend::add_to_chord(self, group_id))
    }

    fn chord_done<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(RedisBackend::chord_done(self, group_id))
    }
}

/// A subscription to one task's state channel.
pub struct ResultSubscription {
    backend: RedisBackend,
    task_id: String,
    pubsub: redis::aio::PubSub,
}

impl ResultSubscription {
    /// Wait the way a Python client does: read the key once (a result stored
    /// before the subscription), then listen until a ready state arrives.
    pub async fn wait(mut self, timeout: Duration) -> Result<ResultMeta, BackendError> {
        if let Some(m) = self.backend.get(&self.task_id).await?
            && m.status.is_ready()
        {
            return Ok(m);
        }
        let mut stream = self.pubsub.on_message();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Err(BackendError::Timeout(self.task_id.clone())),
                Ok(None) => return Err(BackendError::SubscriptionClosed),
                Ok(Some(msg)) => match decode(msg.get_payload_bytes()) {
                    Ok(m) if m.status.is_ready() => return Ok(m),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("ignoring unreadable state of {}: {e}", self.task_id),
                },
            }
        }
    }
}

/// Decode a stored value (JSON or msgpack).
fn decode(bytes: &[u8]) -> Result<ResultMeta, BackendError> {
    ResultMeta::decode(bytes).map_err(|e| BackendError::Encode(e.to_string()))
}
