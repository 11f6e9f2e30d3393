//! kombu's SQLAlchemy transport on SQLite (`sqla+sqlite:///path`), the embedded default.
//!
//! The tables are exactly kombu's (`shared/celery-wire/sqlite/`), so a stock
//! Python client configured with the same URL publishes into them and a
//! Python kombu consumer could read them:
//!
//! - `kombu_queue(id, name UNIQUE)`: one row per queue name.
//! - `kombu_message(id, visible, timestamp, payload, version, queue_id)`:
//!   published with `visible = 1, timestamp = NULL, version = 1`; `payload`
//!   is the same JSON envelope as on Redis (base64 body), stored as TEXT.
//!   A consumer claims a row with `visible = 0, timestamp = <local now>,
//!   version + 1` inside `BEGIN IMMEDIATE`; rows are served
//!   `ORDER BY timestamp, id` (NULLs first: FIFO by id).
//!
//! Where kombu loses work, Celeriac does better without changing those tables:
//!
//! - kombu acknowledges only in memory and never deletes a row; Celeriac
//!   deletes a row when the message is acknowledged.
//! - kombu never makes a claimed row visible again, so a killed worker's
//!   messages are lost. Celeriac records each of its claims in a table of its
//!   own, `celeriac_claim(message_id, claimed_at, owner)`, refreshed while the
//!   worker holds the message (`touch`); a sweep makes rows whose claim is
//!   older than the visibility timeout visible again. Rows claimed by Python
//!   consumers have no claim row and are never touched.
//! - The file is switched to WAL mode (persistent), every connection has a
//!   busy timeout, and an idle consumer polls with a cheap read (no write
//!   lock) every `polling_interval` (default 50 ms) instead of taking the
//!   write lock once a second.
//!
//! Not available on this transport (as with kombu): remote control (no
//! fanout), events, priorities, per-message TTL.
//!
//! SQLite calls block: they run on tokio's blocking pool, each on a
//! connection taken from a small pool ([`Db`], shared with the database backend).

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::qos::{self, Bookkeeping, Held, QosConsumer, Received};
use super::{BoxFuture, Broker, BrokerError, Capabilities, Consumer, Housekeeping, Transport};
use crate::config::TransportOptions;
use crate::connection::sqlite::{Db, placeholders};
use crate::connection::url::sqlite_path;
use crate::protocol::time::now_secs;
use crate::protocol::{EncodedTask, Envelope};

/// How long `fetch` waits for a message before returning empty-handed.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// Default seconds between polls of an idle queue (`polling_interval`).
pub const DEFAULT_POLLING_INTERVAL: f64 = 0.05;
/// At most this many claims are restored per sweep.
const SWEEP_LIMIT: usize = 1000;

/// kombu's tables, with the DDL SQLAlchemy emits (as `sqlite3 .schema` shows it).
const KOMBU_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kombu_queue (
\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
\tname VARCHAR(200), 
\tUNIQUE (name)
);
CREATE TABLE IF NOT EXISTS kombu_message (
\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
\tvisible BOOLEAN, 
\ttimestamp DATETIME, 
\tpayload TEXT NOT NULL, 
\tversion SMALLINT NOT NULL, 
\tqueue_id INTEGER, 
\tCONSTRAINT \"FK_kombu_message_queue\" FOREIGN KEY(queue_id) REFERENCES kombu_queue (id)
);
CREATE INDEX IF NOT EXISTS ix_kombu_message_visible ON kombu_message (visible);
CREATE INDEX IF NOT EXISTS ix_kombu_message_timestamp ON kombu_message (timestamp);
CREATE INDEX IF NOT EXISTS ix_kombu_message_timestamp_id ON kombu_message (timestamp, id);
";

/// Celeriac's own claim bookkeeping (kombu never reads it).
const CLAIM_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS celeriac_claim (
\tmessage_id INTEGER NOT NULL PRIMARY KEY, 
\tclaimed_at REAL NOT NULL, 
\towner VARCHAR(64) NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_celeriac_claim_claimed_at ON celeriac_claim (claimed_at);
";

/// kombu's claim timestamp: naive local time with microseconds.
fn claim_timestamp() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// The row id a tag names (tags are row ids as text).
fn tag_id(tag: &str) -> Option<i64> {
    tag.parse().ok()
}

/// kombu's get-or-create of a queue row; returns its id.
fn queue_id(c: &Connection, name: &str) -> rusqlite::Result<i64> {
    if let Some(id) = c.query_row("SELECT id FROM kombu_queue WHERE name = ?", [name], |r| r.get(0)).optional()? {
        return Ok(id);
    }
    c.execute("INSERT OR IGNORE INTO kombu_queue (name) VALUES (?)", [name])?;
    c.query_row("SELECT id FROM kombu_queue WHERE name = ?", [name], |r| r.get(0))
}

/// Make a claimed row visible again (marked redelivered) and drop its claim.
/// Returns whether the row still existed.
fn make_visible(c: &Connection, id: i64) -> rusqlite::Result<bool> {
    let payload: Option<String> =
        c.query_row("SELECT payload FROM kombu_message WHERE id = ?", [id], |r| r.get(0)).optional()?;
    c.execute("DELETE FROM celeriac_claim WHERE message_id = ?", [id])?;
    let Some(payload) = payload else { return Ok(false) };
    // Mark it redelivered, as kombu's restore does on Redis; an unreadable
    // payload goes back unchanged (the worker will reject it).
    let payload = match Envelope::parse(payload.as_bytes()) {
        Ok(mut env) => {
            env.mark_redelivered();
            String::from_utf8(env.to_bytes()).unwrap_or(payload)
        }
        Err(_) => payload,
    };
    let n = c.execute(
        "UPDATE kombu_message SET visible = 1, timestamp = NULL, version = version + 1, payload = ? WHERE id = ?",
        params![payload, id],
    )?;
    Ok(n == 1)
}

/// One visible message read for a claim: id, payload, version, queue name.
type ClaimRow = (i64, Vec<u8>, i64, String);

/// A connection to an SQLite file speaking kombu's SQLAlchemy transport: the
/// bookkeeping and the statements behind [`SqliteTransport`].
#[derive(Clone)]
pub struct SqliteBroker {
    db: Db,
    opts: TransportOptions,
    /// Identifies this broker's claims (one per process).
    owner: String,
    /// Where the next claim's turn among the consumed queues starts.
    turn: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SqliteBroker {
    /// Open (and if needed create) the database named by `url`.
    pub async fn connect(url: &str, opts: TransportOptions) -> Result<Self, BrokerError> {
        let path = sqlite_path(url)?;
        let db = Db::open(path, format!("{KOMBU_SCHEMA}{CLAIM_SCHEMA}")).await?;
        Ok(SqliteBroker { db, opts, owner: uuid::Uuid::new_v4().simple().to_string(), turn: Default::default() })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    fn poll_interval(&self) -> Duration {
        let s = self.opts.polling_interval.unwrap_or(DEFAULT_POLLING_INTERVAL);
        Duration::from_secs_f64(if s.is_finite() { s.clamp(0.001, 60.0) } else { DEFAULT_POLLING_INTERVAL })
    }

    /// Create the queue rows (kombu does it when a queue is first used).
    pub async fn declare(&self, queues: &[String]) -> Result<(), BrokerError> {
        let queues = queues.to_vec();
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                for q in &queues {
                    queue_id(&tx, q)?;
                }
                tx.commit()
            })
            .await
            .map_err(BrokerError::from)
    }

    /// Claim up to `max` visible messages from `queues`, polling for about a
    /// second when there are none.
    pub async fn fetch(&self, queues: &[String], max: usize) -> Result<Vec<Received>, BrokerError> {
        if max == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + FETCH_WAIT;
        loop {
            let got = self.claim(queues, max).await?;
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
            tokio::time::sleep(self.poll_interval()).await;
        }
    }

    /// One claim attempt: a cheap read first (no lock), then the claim itself
    /// under the write lock. Several queues take turns, one message each,
    /// starting one queue further every claim (kombu's SQLAlchemy transport
    /// rotates its queue cycle): a backlog on one never starves another.
    async fn claim(&self, queues: &[String], max: usize) -> Result<Vec<Received>, BrokerError> {
        let mut queues = queues.to_vec();
        if queues.len() > 1 {
            let start = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % queues.len();
            queues.rotate_left(start);
        }
        let owner = self.owner.clone();
        self.db
            .run(move |c| {
                let from = format!(
                    "FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id \
                     WHERE q.name IN ({}) AND m.visible != 0",
                    placeholders(queues.len())
                );
                let any: Option<i64> = c
                    .prepare_cached(&format!("SELECT m.id {from} LIMIT 1"))?
                    .query_row(rusqlite::params_from_iter(&queues), |r| r.get(0))
                    .optional()?;
                if any.is_none() {
                    return Ok(Vec::new());
                }
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Up to `max` of each queue, oldest first, then dealt out in turns.
                let mut per_queue: Vec<std::collections::VecDeque<ClaimRow>> = Vec::new();
                {
                    let mut st = tx.prepare_cached(
                        "SELECT m.id, m.payload, m.version, q.name FROM kombu_message m JOIN kombu_queue q \
                         ON q.id = m.queue_id WHERE q.name = ? AND m.visible != 0 ORDER BY m.timestamp, m.id LIMIT ?",
                    )?;
                    for q in &queues {
                        let rows = st.query_map(params![q, max as i64], |r| {
                            Ok((r.get(0)?, r.get_ref(1)?.as_bytes()?.to_vec(), r.get(2)?, r.get(3)?))
                        })?;
                        per_queue.push(rows.collect::<rusqlite::Result<_>>()?);
                    }
                }
                let mut rows = Vec::with_capacity(max);
                while rows.len() < max && per_queue.iter().any(|q| !q.is_empty()) {
                    for q in per_queue.iter_mut() {
                        if rows.len() < max
                            && let Some(row) = q.pop_front()
                        {
                            rows.push(row);
                        }
                    }
                }
                let now = now_secs();
                let stamp = claim_timestamp();
                let mut out = Vec::with_capacity(rows.len());
                {
                    let mut take = tx.prepare_cached(
                        "UPDATE kombu_message SET visible = 0, timestamp = ?, version = ? WHERE id = ? AND version = ?",
                    )?;
                    let mut note = tx.prepare_cached(
                        "INSERT OR REPLACE INTO celeriac_claim (message_id, claimed_at, owner) VALUES (?, ?, ?)",
                    )?;
                    for (id, payload, version, queue) in rows {
                        if take.execute(params![stamp, version + 1, id, version])? != 1 {
                            continue;
                        }
                        note.execute(params![id, now, owner])?;
                        out.push(Received { queue, payload, tag: Some(id.to_string()), idle: false });
                    }
                }
                tx.commit()?;
                Ok(out)
            })
            .await
            .map_err(BrokerError::from)
    }

    /// Acknowledge: delete the rows (kombu would leave them forever).
    pub async fn ack(&self, tags: &[String]) -> Result<(), BrokerError> {
        let ids: Vec<i64> = tags.iter().filter_map(|t| tag_id(t)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                for chunk in ids.chunks(500) {
                    let ph = placeholders(chunk.len());
                    tx.execute(
                        &format!("DELETE FROM kombu_message WHERE id IN ({ph})"),
                        rusqlite::params_from_iter(chunk),
                    )?;
                    tx.execute(
                        &format!("DELETE FROM celeriac_claim WHERE message_id IN ({ph})"),
                        rusqlite::params_from_iter(chunk),
                    )?;
                }
                tx.commit()
            })
            .await
            .map_err(BrokerError::from)
    }

    /// Put a message this broker claimed back (visible, marked redelivered).
    /// False if it was acknowledged, or its claim expired and someone else
    /// claimed it meanwhile.
    pub async fn restore(&self, tag: &str) -> Result<bool, BrokerError> {
        let Some(id) = tag_id(tag) else { return Ok(false) };
        let owner = self.owner.clone();
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let claimed_by: Option<String> = tx
                    .query_row("SELECT owner FROM celeriac_claim WHERE message_id = ?", [id], |r| r.get(0))
                    .optional()?;
                if claimed_by.as_deref() != Some(owner.as_str()) {
                    return Ok(false);
                }
                let restored = make_visible(&tx, id)?;
                tx.commit()?;
                Ok(restored)
            })
            .await
            .map_err(BrokerError::from)
    }

    /// Refresh the claims of messages this broker still holds.
    pub async fn touch(&self, tags: &HashSet<String>) -> Result<(), BrokerError> {
        let ids: Vec<i64> = tags.iter().filter_map(|t| tag_id(t)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let owner = self.owner.clone();
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = now_secs();
                {
                    let mut st =
                        tx.prepare("UPDATE celeriac_claim SET claimed_at = ? WHERE message_id = ? AND owner = ?")?;
                    for id in ids {
                        st.execute(params![now, id, owner])?;
                    }
                }
                tx.commit()
            })
            .await
            .map_err(BrokerError::from)
    }

    /// The visibility sweep: make visible again every message whose claim is
    /// older than the visibility timeout, except those in `ours`.
    pub async fn restore_visible(&self, ours: &HashSet<String>) -> Result<usize, BrokerError> {
        let ceiling = now_secs() - self.opts.visibility().as_secs_f64();
        let ours: HashSet<i64> = ours.iter().filter_map(|t| tag_id(t)).collect();
        self.db
            .run(move |c| {
                let stale = |c: &Connection| -> rusqlite::Result<Vec<i64>> {
                    let mut st =
                        c.prepare("SELECT message_id FROM celeriac_claim WHERE claimed_at < ? ORDER BY message_id")?;
                    let ids = st.query_map([ceiling], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
                    Ok(ids.into_iter().filter(|id| !ours.contains(id)).take(SWEEP_LIMIT).collect())
                };
                // Read first: most sweeps find nothing and need no write lock.
                if stale(c)?.is_empty() {
                    return Ok(0);
                }
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut n = 0;
                for id in stale(&tx)? {
                    if make_visible(&tx, id)? {
                        n += 1;
                    }
                }
                tx.commit()?;
                Ok(n)
            })
            .await
            .map_err(BrokerError::from)
    }

    /// Delete the waiting (visible) messages of `queue`; claimed ones belong
    /// to a worker and stay. Returns how many were deleted.
    pub async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        let queue = queue.to_string();
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let n = tx.execute(
                    "DELETE FROM kombu_message WHERE visible != 0 \
                     AND queue_id IN (SELECT id FROM kombu_queue WHERE name = ?)",
                    params![queue],
                )?;
                tx.commit()?;
                Ok(n as u64)
            })
            .await
            .map_err(BrokerError::from)
    }

    /// Publish a task to `queue` exactly as kombu's producer does.
    pub async fn publish(&self, queue: &str, task: &EncodedTask) -> Result<(), BrokerError> {
        let payload = String::from_utf8(task.to_redis_bytes()).map_err(|e| BrokerError::Protocol(e.to_string()))?;
        self.publish_payload(queue, payload).await
    }

    /// Insert an envelope (JSON text) into `queue`.
    pub async fn publish_payload(&self, queue: &str, payload: String) -> Result<(), BrokerError> {
        let queue = queue.to_string();
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let qid = queue_id(&tx, &queue)?;
                tx.execute(
                    "INSERT INTO kombu_message (visible, timestamp, payload, version, queue_id) VALUES (1, NULL, ?, 1, ?)",
                    params![payload, qid],
                )?;
                tx.commit()
            })
            .await
            .map_err(BrokerError::from)
    }
}

/// kombu's SQLAlchemy transport on SQLite, as the worker and the CLI use it.
#[derive(Clone)]
pub struct SqliteTransport {
    broker: SqliteBroker,
    held: Held,
}

impl SqliteTransport {
    /// Open (and if needed create) the database named by `url`.
    pub async fn connect(url: &str, opts: TransportOptions) -> Result<Self, BrokerError> {
        Ok(SqliteTransport { broker: SqliteBroker::connect(url, opts).await?, held: Held::default() })
    }
}

impl Transport for SqliteTransport {
    fn name(&self) -> &'static str {
        "sqlalchemy"
    }

    /// As with kombu: no fanout (so no remote control or events), no priorities.
    fn capabilities(&self) -> Capabilities {
        Capabilities { fanout: false, priorities: false, per_queue_prefetch: false }
    }

    fn file(&self) -> Option<&Path> {
        Some(self.broker.path())
    }

    fn declare<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.broker.declare(queues))
    }

    fn publish<'a>(&'a self, queue: &'a str, task: &'a EncodedTask) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.broker.publish(queue, task))
    }

    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(self.broker.purge(queue))
    }

    /// The pool is not tied to a runtime: channels share it (and the claims' owner).
    fn open_channel(&self) -> BoxFuture<'_, Result<Broker, BrokerError>> {
        let channel = self.clone();
        Box::pin(async move { Ok(Broker::new(channel)) })
    }

    fn consume<'a>(
        &'a self,
        queues: &'a [String],
        _prefetch: usize,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BrokerError>> {
        let consumer = QosConsumer::new(self.broker.clone(), queues.to_vec(), self.held.clone());
        Box::pin(async move { Ok(Box::new(consumer) as Box<dyn Consumer>) })
    }

    fn start_housekeeping(&self) -> BoxFuture<'_, Housekeeping> {
        let interval = self.broker.opts.restore_interval();
        Box::pin(qos::start_housekeeping(self.broker.clone(), self.held.clone(), interval))
    }
}

impl Bookkeeping for SqliteBroker {
    fn fetch(&self, sources: &[String], max: usize) -> impl Future<Output = Result<Vec<Received>, BrokerError>> + Send {
        SqliteBroker::fetch(self, sources, max)
    }

    fn ack(&self, tags: &[String]) -> impl Future<Output = Result<(), BrokerError>> + Send {
        SqliteBroker::ack(self, tags)
    }

    fn restore(&self, tag: &str) -> impl Future<Output = Result<bool, BrokerError>> + Send {
        SqliteBroker::restore(self, tag)
    }

    fn touch(&self, tags: &HashSet<String>) -> impl Future<Output = Result<(), BrokerError>> + Send {
        SqliteBroker::touch(self, tags)
    }

    fn restore_visible(&self, ours: &HashSet<String>) -> impl Future<Output = Result<usize, BrokerError>> + Send {
        SqliteBroker::restore_visible(self, ours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::NewTask;

    fn opts(vis: f64) -> TransportOptions {
        TransportOptions { visibility_timeout: vis, polling_interval: Some(0.01), ..TransportOptions::default() }
    }

    fn url(dir: &tempfile::TempDir) -> String {
        format!("sqla+sqlite:///{}", dir.path().join("b.sqlite").display())
    }

    async fn publish_add(b: &SqliteBroker, queue: &str, x: i64) -> String {
        let mut t = NewTask::new("tasks.add", vec![x.into(), 1.into()], Default::default());
        t.options.queue = queue.into();
        b.publish(queue, &t.encode().unwrap()).await.unwrap();
        t.id
    }

    fn raw(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    #[tokio::test]
    async fn rows_are_kombus_and_acks_delete_them() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBroker::connect(&url(&dir), opts(3600.0)).await.unwrap();
        b.declare(&["celery".into()]).await.unwrap();
        let id = publish_add(&b, "celery", 4).await;
        let c = raw(b.path());
        let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let (visible, ts, version, qname, ptype, payload): (i64, Option<String>, i64, String, String, String) = c
            .query_row(
                "SELECT visible, timestamp, version, q.name, typeof(payload), payload FROM kombu_message m \
                 JOIN kombu_queue q ON q.id = m.queue_id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .unwrap();
        assert_eq!((visible, ts, version, qname.as_str(), ptype.as_str()), (1, None, 1, "celery", "text"));
        let env = Envelope::parse(payload.as_bytes()).unwrap();
        assert_eq!(env.headers["id"], id.as_str());
        assert_eq!(env.body_encoding(), Some("base64"));

        let got = b.fetch(&["celery".into()], 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].queue, "celery");
        assert_eq!(got[0].payload, payload.as_bytes());
        let (visible, ts, version): (i64, Option<String>, i64) = c
            .query_row("SELECT visible, timestamp, version FROM kombu_message", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((visible, version), (0, 2));
        assert_eq!(ts.unwrap().len(), "2026-11-27 05:23:38.458094".len());
        assert!(b.fetch(&["celery".into()], 10).await.unwrap().is_empty());

        b.ack(&[got[0].tag.clone().unwrap()]).await.unwrap();
        let left: i64 = c.query_row("SELECT count(*) FROM kombu_message", [], |r| r.get(0)).unwrap();
        let claims: i64 = c.query_row("SELECT count(*) FROM celeriac_claim", [], |r| r.get(0)).unwrap();
        assert_eq!((left, claims), (0, 0));
    }

    #[tokio::test]
    async fn reads_rows_written_like_kombu_and_serves_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBroker::connect(&url(&dir), opts(3600.0)).await.unwrap();
        let c = raw(b.path());
        // What the Python producer does (sql_logs/sql_client1.log).
        c.execute("INSERT INTO kombu_queue (name) VALUES ('celery')", []).unwrap();
        for i in 0..3 {
            c.execute(
                "INSERT INTO kombu_message (visible, timestamp, payload, version, queue_id) VALUES (?, ?, ?, ?, ?)",
                params![true, Option::<String>::None, format!("{{\"body\": \"{i}\"}}"), 1, 1],
            )
            .unwrap();
        }
        let got = b.fetch(&["celery".into(), "other".into()], 2).await.unwrap();
        let bodies: Vec<_> = got.iter().map(|d| String::from_utf8(d.payload.clone()).unwrap()).collect();
        assert_eq!(bodies, ["{\"body\": \"0\"}", "{\"body\": \"1\"}"]);
        assert_eq!(b.fetch(&["celery".into()], 5).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn restore_and_visibility_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteBroker::connect(&url(&dir), opts(3600.0)).await.unwrap();
        let b = SqliteBroker::connect(&url(&dir), opts(1.0)).await.unwrap();
        publish_add(&a, "celery", 1).await;
        publish_add(&a, "celery", 2).await;
        let got = a.fetch(&["celery".into()], 10).await.unwrap();
        assert_eq!(got.len(), 2);
        let tags: Vec<String> = got.iter().map(|d| d.tag.clone().unwrap()).collect();

        // Only the claimer may give a message back.
        assert!(!b.restore(&tags[0]).await.unwrap());
        assert!(a.restore(&tags[0]).await.unwrap());
        assert!(!a.restore(&tags[0]).await.unwrap());
        let again = b.fetch(&["celery".into()], 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].tag, Some(tags[0].clone()));
        let env = Envelope::parse(&again[0].payload).unwrap();
        assert!(env.redelivered());

        // `a` dies holding tags[1]: after the timeout b's sweep restores it,
        // but never what b itself holds, and never a fresh claim.
        assert_eq!(b.restore_visible(&HashSet::new()).await.unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        b.touch(&HashSet::from([tags[0].clone()])).await.unwrap();
        assert_eq!(b.restore_visible(&HashSet::new()).await.unwrap(), 1);
        let got = b.fetch(&["celery".into()], 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].tag, Some(tags[1].clone()));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let held = HashSet::from([tags[0].clone(), tags[1].clone()]);
        assert_eq!(b.restore_visible(&held).await.unwrap(), 0);
        b.ack(&[tags[0].clone(), tags[1].clone()]).await.unwrap();
        assert_eq!(b.restore_visible(&HashSet::new()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn rows_claimed_by_python_consumers_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBroker::connect(&url(&dir), opts(1.0)).await.unwrap();
        publish_add(&b, "celery", 1).await;
        let c = raw(b.path());
        c.execute("UPDATE kombu_message SET visible = 0, timestamp = '2000-01-01 00:00:00.000000', version = 2", [])
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(b.restore_visible(&HashSet::new()).await.unwrap(), 0);
        assert!(b.claim(&["celery".into()], 5).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_consumers_never_share_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let p = SqliteBroker::connect(&url(&dir), opts(3600.0)).await.unwrap();
        for i in 0..200 {
            publish_add(&p, "celery", i).await;
        }
        let mut handles = Vec::new();
        for _ in 0..4 {
            let b = SqliteBroker::connect(&url(&dir), opts(3600.0)).await.unwrap();
            handles.push(tokio::spawn(async move {
                let mut tags = Vec::new();
                loop {
                    let got = b.claim(&["celery".into()], 7).await.unwrap();
                    if got.is_empty() {
                        break tags;
                    }
                    tags.extend(got.into_iter().map(|d| d.tag.unwrap()));
                }
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!((all.len(), unique.len()), (200, 200));
    }
}
