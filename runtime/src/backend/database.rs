//! Celery's database result backend on SQLite (`db+sqlite:///path`).
//!
//! The tables are exactly Celery's (`shared/celery-wire/sqlite/`):
//! `celery_taskmeta(id, task_id UNIQUE, status, result BLOB, date_done,
//! traceback, children BLOB, name, args, kwargs, worker, retries, queue,
//! stamps)` and `celery_tasksetmeta`. A state is written the way Celery 5.7's
//! worker leaves it: one row per task id, every column set on each write
//! (`result` = the value encoded with the result serializer: JSON bytes by
//! default, `8` → `X'38'`; `date_done` naive UTC text; `children` NULL when
//! there are none; the `result_extended` columns NULL unless known). Celery's
//! table has no column for the component version a Redis or rpc:// result
//! names (`component_version`), so here the worker's log line and the task
//! events are where it is found.
//!
//! Celery 5.6 and older clients unpickle the `result` column and fail on
//! JSON bytes; Celery 5.7 reads both. For 5.6 clients, the worker's backend
//! URL may end in `?result_format=pickle` (the clients keep the plain URL of
//! the same file): `result` and `children` are then written as a pickle
//! (protocol 2) of the JSON value, which both versions read ([`pickle`]).
//! Rows written by a 5.6 worker (pickle) are read here too ([`unpickle`],
//! JSON-like values only; nothing is ever executed).
//!
//! Clients poll: a waiter re-reads the row until it is ready. Rows older than
//! `result_expires` are deleted now and then by the writer (Celery leaves
//! that to beat's `celery.backend_cleanup`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::{BackendError, Reply, ResultBackend, Waiter};
use crate::broker::BoxFuture;
use crate::connection::UrlError;
use crate::connection::sqlite::Db;
use crate::connection::url::sqlite_path;
use crate::protocol::Serializer;
use crate::protocol::content::DecodeError;
use crate::protocol::result::{ExtendedMeta, ResultMeta, TaskState};
use crate::protocol::time::now_secs;
use crate::protocol::time::parse_datetime;

/// Celery's tables, with the DDL SQLAlchemy emits.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS celery_taskmeta (
\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
\ttask_id VARCHAR(155), 
\tstatus VARCHAR(50), 
\tresult BLOB, 
\tdate_done DATETIME, 
\ttraceback TEXT, 
\tchildren BLOB, 
\tname VARCHAR(155), 
\targs BLOB, 
\tkwargs BLOB, 
\tworker VARCHAR(155), 
\tretries INTEGER, 
\tqueue VARCHAR(155), 
\tstamps BLOB, 
\tUNIQUE (task_id)
);
CREATE INDEX IF NOT EXISTS ix_celery_taskmeta_date_done ON celery_taskmeta (date_done);
CREATE TABLE IF NOT EXISTS celery_tasksetmeta (
\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
\ttaskset_id VARCHAR(155), 
\tresult BLOB, 
\tdate_done DATETIME, 
\tUNIQUE (taskset_id)
);
CREATE INDEX IF NOT EXISTS ix_celery_tasksetmeta_date_done ON celery_tasksetmeta (date_done);
";

/// Seconds between two deletions of expired results.
const CLEANUP_EVERY: u64 = 600;
/// Waiter poll interval: starts here...
const POLL_MIN: Duration = Duration::from_millis(20);
/// ...and grows to this.
const POLL_MAX: Duration = Duration::from_millis(250);

/// Celery's `date_done` column: naive UTC with microseconds.
fn date_text(d: &DateTime<Utc>) -> String {
    d.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// A connection to a `db+sqlite://` result backend.
#[derive(Clone)]
pub struct DatabaseBackend {
    db: Db,
    expires: Option<u64>,
    serializer: Serializer,
    /// Write `result` / `children` as pickles (for Celery <= 5.6 clients).
    pickle_results: bool,
    last_cleanup: Arc<AtomicU64>,
}

/// One row's columns but `task_id`: what a store writes (`result` always
/// set) and what a read returns.
struct Row {
    status: String,
    result: Option<Vec<u8>>,
    date_done: Option<String>,
    traceback: Option<String>,
    children: Option<Vec<u8>>,
    name: Option<String>,
    args: Option<Vec<u8>>,
    kwargs: Option<Vec<u8>>,
    worker: Option<String>,
    retries: Option<i64>,
    queue: Option<String>,
}

impl DatabaseBackend {
    /// Open (and if needed create) the database named by `url`.
    pub async fn connect(url: &str, expires: Option<u64>, serializer: Serializer) -> Result<Self, BackendError> {
        let path = sqlite_path(url)?;
        let mut pickle_results = false;
        for (k, v) in url.split_once('?').map(|(_, q)| q).unwrap_or("").split('&').filter_map(|kv| kv.split_once('=')) {
            match (k, v) {
                ("result_format", "pickle") => pickle_results = true,
                ("result_format", "json" | "serializer") => pickle_results = false,
                ("result_format", other) => {
                    return Err(UrlError(format!("{url}: result_format={other}: use pickle or serializer")).into());
                }
                _ => {}
            }
        }
        let db = Db::open(path, SCHEMA.to_string()).await?;
        Ok(DatabaseBackend { db, expires, serializer, pickle_results, last_cleanup: Arc::new(AtomicU64::new(0)) })
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        self.db.path()
    }

    fn encode(&self, v: &Value) -> Result<Vec<u8>, BackendError> {
        self.serializer.encode(v).map_err(|e| BackendError::Encode(e.to_string()))
    }

    /// `result` / `children` column bytes.
    fn encode_result(&self, v: &Value) -> Result<Vec<u8>, BackendError> {
        if self.pickle_results { Ok(pickle(v)) } else { self.encode(v) }
    }

    /// Store `meta` as the state of its task (insert or overwrite the row).
    pub async fn store(&self, meta: &ResultMeta) -> Result<(), BackendError> {
        self.store_many(std::slice::from_ref(meta)).await
    }

    /// Store several states in one transaction (one fsync), in order.
    pub async fn store_many<'a>(&self, metas: impl IntoIterator<Item = &'a ResultMeta>) -> Result<(), BackendError> {
        let rows = metas
            .into_iter()
            .map(|m| Ok((m.task_id.clone(), self.columns(m)?)))
            .collect::<Result<Vec<_>, BackendError>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        let cleanup_before = self.cleanup_due();
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut st = tx.prepare(
                        "INSERT INTO celery_taskmeta (task_id, status, result, date_done, traceback, children, \
                         name, args, kwargs, worker, retries, queue, stamps) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL) \
                         ON CONFLICT (task_id) DO UPDATE SET status = ?2, result = ?3, date_done = ?4, \
                         traceback = ?5, children = ?6, name = ?7, args = ?8, kwargs = ?9, worker = ?10, \
                         retries = ?11, queue = ?12, stamps = NULL",
                    )?;
                    for (task_id, r) in &rows {
                        st.execute(params![
                            task_id,
                            r.status,
                            r.result,
                            r.date_done,
                            r.traceback,
                            r.children,
                            r.name,
                            r.args,
                            r.kwargs,
                            r.worker,
                            r.retries,
                            r.queue
                        ])?;
                    }
                }
                if let Some(before) = cleanup_before {
                    tx.execute("DELETE FROM celery_taskmeta WHERE date_done < ?", [&before])?;
                    tx.execute("DELETE FROM celery_tasksetmeta WHERE date_done < ?", [&before])?;
                }
                tx.commit()
            })
            .await
            .map_err(BackendError::from)
    }

    /// The column values of a state, as Celery 5.7's worker writes them.
    fn columns(&self, meta: &ResultMeta) -> Result<Row, BackendError> {
        let x = meta.extended.as_ref();
        Ok(Row {
            status: meta.status.as_str().to_string(),
            result: Some(self.encode_result(&meta.result)?),
            date_done: meta.date_done.as_ref().map(date_text),
            traceback: meta.traceback.clone(),
            children: match &meta.children {
                Some(c) if !c.is_empty() => Some(self.encode_result(&Value::Array(c.clone()))?),
                _ => None,
            },
            name: x.and_then(|x| x.name.clone()),
            args: x.map(|x| self.encode(&x.args)).transpose()?,
            kwargs: x.map(|x| self.encode(&x.kwargs)).transpose()?,
            worker: x.and_then(|x| x.worker.clone()),
            retries: x.and_then(|x| x.retries).map(|r| r as i64),
            queue: x.and_then(|x| x.queue.clone()),
        })
    }

    /// If expired results are due for deletion, the `date_done` bound.
    fn cleanup_due(&self) -> Option<String> {
        let ttl = self.expires?;
        let now = now_secs() as u64;
        let last = self.last_cleanup.load(Ordering::Relaxed);
        if now.saturating_sub(last) < CLEANUP_EVERY
            || self.last_cleanup.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return None;
        }
        Some(date_text(&(Utc::now() - chrono::Duration::seconds(ttl.min(i64::MAX as u64 / 2) as i64))))
    }

    /// The stored state of `task_id`, if any.
    pub async fn get(&self, task_id: &str) -> Result<Option<ResultMeta>, BackendError> {
        let id = task_id.to_string();
        let row = self
            .db
            .run(move |c| {
                c.query_row(
                    "SELECT status, result, date_done, traceback, children, name, args, kwargs, worker, retries, queue \
                     FROM celery_taskmeta WHERE task_id = ?",
                    [&id],
                    |r| {
                        let bytes = |i: usize| -> rusqlite::Result<Option<Vec<u8>>> {
                            Ok(r.get_ref(i)?.as_bytes_or_null()?.map(<[u8]>::to_vec))
                        };
                        let text = |i: usize| -> rusqlite::Result<Option<String>> {
                            Ok(bytes(i)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
                        };
                        Ok(Row {
                            status: text(0)?.unwrap_or_else(|| "PENDING".into()),
                            result: bytes(1)?,
                            date_done: text(2)?,
                            traceback: text(3)?,
                            children: bytes(4)?,
                            name: text(5)?,
                            args: bytes(6)?,
                            kwargs: bytes(7)?,
                            worker: text(8)?,
                            retries: r.get(9).ok().flatten(),
                            queue: text(10)?,
                        })
                    },
                )
                .optional()
            })
            .await
            .map_err(BackendError::from)?;
        row.map(|r| self.meta_from_row(task_id, r)).transpose()
    }

    fn meta_from_row(&self, task_id: &str, r: Row) -> Result<ResultMeta, BackendError> {
        let decode = |b: &Option<Vec<u8>>| -> Result<Value, BackendError> {
            b.as_deref().map_or(Ok(Value::Null), |b| {
                decode_value(b, self.serializer).map_err(|e| BackendError::Encode(e.to_string()))
            })
        };
        let children = match decode(&r.children)? {
            Value::Array(c) => Some(c),
            _ => None,
        };
        let extended = r.name.is_some().then(|| -> Result<ExtendedMeta, BackendError> {
            Ok(ExtendedMeta {
                name: r.name.clone(),
                args: decode(&r.args)?,
                kwargs: decode(&r.kwargs)?,
                worker: r.worker.clone(),
                retries: r.retries.and_then(|n| u64::try_from(n).ok()),
                queue: r.queue.clone(),
            })
        });
        Ok(ResultMeta {
            task_id: task_id.to_string(),
            status: TaskState::parse(&r.status),
            result: decode(&r.result)?,
            traceback: r.traceback,
            children,
            date_done: r.date_done.as_deref().and_then(parse_datetime),
            group_id: None,
            parent_id: None,
            extended: extended.transpose()?,
            component_version: None,
        })
    }

    /// Delete the stored state of `task_id` (Celery's `forget`).
    pub async fn forget(&self, task_id: &str) -> Result<(), BackendError> {
        let id = task_id.to_string();
        self.db
            .run(move |c| c.execute("DELETE FROM celery_taskmeta WHERE task_id = ?", [&id]).map(|_| ()))
            .await
            .map_err(BackendError::from)
    }

    /// A waiter for `task_id` (polls the row, as Celery's client does).
    pub fn waiter(&self, task_id: &str) -> PollWaiter {
        PollWaiter { backend: self.clone(), task_id: task_id.to_string() }
    }
}

impl ResultBackend for DatabaseBackend {
    fn name(&self) -> &'static str {
        "database"
    }

    fn store_many<'a>(&'a self, replies: &'a [Reply]) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(DatabaseBackend::store_many(self, replies.iter().map(|r| &r.meta)))
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>, BackendError>> {
        Box::pin(DatabaseBackend::get(self, task_id))
    }

    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(DatabaseBackend::forget(self, task_id))
    }

    fn waiter<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Box<dyn Waiter>, BackendError>> {
        let waiter = DatabaseBackend::waiter(self, task_id);
        Box::pin(async move { Ok(Box::new(waiter) as Box<dyn Waiter>) })
    }
}

impl Waiter for PollWaiter {
    fn wait(self: Box<Self>, timeout: Duration) -> BoxFuture<'static, Result<ResultMeta, BackendError>> {
        Box::pin(PollWaiter::wait(*self, timeout))
    }
}

/// Waits for one task by re-reading its row.
pub struct PollWaiter {
    backend: DatabaseBackend,
    task_id: String,
}

impl PollWaiter {
    /// Poll until the task is ready or `timeout` passes.
    pub async fn wait(self, timeout: Duration) -> Result<ResultMeta, BackendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut interval = POLL_MIN;
        loop {
            match self.backend.get(&self.task_id).await {
                Ok(Some(m)) if m.status.is_ready() => return Ok(m),
                Ok(_) => {}
                Err(BackendError::Encode(e)) => tracing::warn!("ignoring unreadable state of {}: {e}", self.task_id),
                Err(e) => return Err(e),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(BackendError::Timeout(self.task_id.clone()));
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval * 5 / 4).min(POLL_MAX);
        }
    }
}

/// Decode a `result`-like column: a pickle (Celery <= 5.6 writers), the
/// configured serializer, or the other one.
fn decode_value(bytes: &[u8], preferred: Serializer) -> Result<Value, ColumnError> {
    // A msgpack value starting with 0x80 is an empty map, one byte long.
    if bytes.len() > 2 && bytes[0] == 0x80 && bytes[1] <= 5 {
        return Ok(unpickle(bytes)?);
    }
    let other = if preferred == Serializer::Json { Serializer::Msgpack } else { Serializer::Json };
    Ok(preferred.decode(bytes).or_else(|e| other.decode(bytes).map_err(|_| e))?)
}

/// A pickle (protocol 2, readable by every Python 3) of a JSON value: what a
/// Celery <= 5.6 client needs in the `result` column. Lists stay lists
/// (Python tuples have no JSON form; Celery accepts either).
pub fn pickle(v: &Value) -> Vec<u8> {
    fn write(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::Null => out.push(b'N'),
            Value::Bool(b) => out.push(if *b { 0x88 } else { 0x89 }),
            Value::Number(n) => {
                let int = n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
                match int {
                    Some(i) if (0..256).contains(&i) => out.extend([b'K', i as u8]),
                    Some(i) if (0..65536).contains(&i) => {
                        out.push(b'M');
                        out.extend((i as u16).to_le_bytes());
                    }
                    Some(i) if i32::try_from(i).is_ok() => {
                        out.push(b'J');
                        out.extend((i as i32).to_le_bytes());
                    }
                    Some(i) => {
                        // LONG1: minimal little-endian two's complement.
                        let mut b = i.to_le_bytes().to_vec();
                        while b.len() > 1 {
                            let (last, prev) = (b[b.len() - 1], b[b.len() - 2]);
                            if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
                                b.pop();
                            } else {
                                break;
                            }
                        }
                        out.extend([0x8a, b.len() as u8]);
                        out.extend(b);
                    }
                    None => {
                        out.push(b'G');
                        out.extend(n.as_f64().unwrap_or(f64::NAN).to_be_bytes());
                    }
                }
            }
            Value::String(s) => {
                out.push(b'X');
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s.as_bytes());
            }
            Value::Array(a) => {
                out.push(b']');
                if !a.is_empty() {
                    out.push(b'(');
                    a.iter().for_each(|x| write(out, x));
                    out.push(b'e');
                }
            }
            Value::Object(m) => {
                out.push(b'}');
                if !m.is_empty() {
                    out.push(b'(');
                    for (k, x) in m {
                        write(out, &Value::String(k.clone()));
                        write(out, x);
                    }
                    out.push(b'u');
                }
            }
        }
    }
    let mut out = vec![0x80, 2];
    write(&mut out, v);
    out.push(b'.');
    out
}

/// Why a stored pickle could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable pickle: {0}")]
pub struct PickleError(String);

impl From<&str> for PickleError {
    fn from(reason: &str) -> Self {
        PickleError(reason.to_owned())
    }
}

impl From<String> for PickleError {
    fn from(reason: String) -> Self {
        PickleError(reason)
    }
}

/// Why a `result`-like column could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ColumnError {
    /// Neither serializer reads it.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A pickle (Celery <= 5.6) that is not a JSON-like value.
    #[error(transparent)]
    Pickle(#[from] PickleError),
}

/// Read a pickle of a JSON-like value (None, bool, int, float, str, bytes as
/// text, list, tuple, dict): what Celery <= 5.6 stores in the `result` column.
/// Anything else (classes, reduce) is refused: nothing is ever executed.
pub fn unpickle(data: &[u8]) -> Result<Value, PickleError> {
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: Vec<Option<Value>> = Vec::new();
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], PickleError> {
        let s = data.get(*i..*i + n).ok_or("truncated pickle")?;
        *i += n;
        Ok(s)
    };
    let uint = |b: &[u8]| b.iter().rev().fold(0u64, |a, x| (a << 8) | u64::from(*x));
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| e.to_string());
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| PickleError::from("pickle stack underflow"));
    let pop_mark = |stack: &mut Vec<Value>, marks: &mut Vec<usize>| -> Result<Vec<Value>, PickleError> {
        let m = marks.pop().ok_or("pickle mark missing")?;
        if m > stack.len() {
            return Err("bad pickle mark".into());
        }
        Ok(stack.split_off(m))
    };
    fn put(memo: &mut Vec<Option<Value>>, idx: usize, v: Value) {
        if memo.len() <= idx {
            memo.resize(idx + 1, None);
        }
        memo[idx] = Some(v);
    }
    fn key(v: Value) -> String {
        match v {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }
    // Containers are values on the stack and are mutated in place; memoised
    // copies are refreshed when fetched again, which is enough for trees.
    loop {
        let op = *take(&mut i, 1)?.first().ok_or("truncated pickle")?;
        match op {
            0x80 => {
                take(&mut i, 1)?;
            }
            0x95 => {
                take(&mut i, 8)?;
            }
            b'.' => return pop(&mut stack),
            b'N' => stack.push(Value::Null),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::from(take(&mut i, 1)?[0])),
            b'M' => stack.push(Value::from(uint(take(&mut i, 2)?))),
            b'J' => {
                let b = take(&mut i, 4)?;
                stack.push(Value::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a { take(&mut i, 1)?[0] as usize } else { uint(take(&mut i, 4)?) as usize };
                let b = take(&mut i, n)?;
                if n > 16 {
                    return Err("integer too large".into());
                }
                let neg = b.last().is_some_and(|x| x & 0x80 != 0);
                let mut buf = if neg { [0xffu8; 16] } else { [0u8; 16] };
                buf[..n].copy_from_slice(b);
                let v = i128::from_le_bytes(buf);
                stack.push(match (i64::try_from(v), u64::try_from(v)) {
                    (Ok(i), _) => Value::from(i),
                    (_, Ok(u)) => Value::from(u),
                    _ => Value::from(v as f64),
                });
            }
            b'G' => {
                let b = take(&mut i, 8)?;
                let f = f64::from_be_bytes(b.try_into().map_err(|_| "bad float")?);
                stack.push(serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number));
            }
            0x8c | b'X' | 0x8d | b'C' | b'B' | 0x8e => {
                let n = match op {
                    0x8c | b'C' => take(&mut i, 1)?[0] as usize,
                    b'X' | b'B' => uint(take(&mut i, 4)?) as usize,
                    _ => uint(take(&mut i, 8)?) as usize,
                };
                let b = take(&mut i, n)?;
                stack.push(Value::String(if matches!(op, b'C' | b'B' | 0x8e) {
                    String::from_utf8_lossy(b).into_owned()
                } else {
                    text(b)?
                }));
            }
            b'}' => stack.push(Value::Object(Map::new())),
            b']' | b')' => stack.push(Value::Array(Vec::new())),
            b'(' => marks.push(stack.len()),
            b't' | b'l' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::Array(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("pickle stack underflow".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Array(items));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Array(a)) => a.push(v),
                    _ => return Err("APPEND to a non-list".into()),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                match stack.last_mut() {
                    Some(Value::Array(a)) => a.extend(items),
                    _ => return Err("APPENDS to a non-list".into()),
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Object(m)) => {
                        m.insert(key(k), v);
                    }
                    _ => return Err("SETITEM on a non-dict".into()),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                let Some(Value::Object(m)) = stack.last_mut() else { return Err("SETITEMS on a non-dict".into()) };
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    m.insert(key(k), v);
                }
            }
            0x94 => {
                let v = stack.last().cloned().ok_or("MEMOIZE on an empty stack")?;
                let idx = memo.len();
                put(&mut memo, idx, v);
            }
            b'q' | b'r' => {
                let idx = if op == b'q' { take(&mut i, 1)?[0] as usize } else { uint(take(&mut i, 4)?) as usize };
                let v = stack.last().cloned().ok_or("PUT on an empty stack")?;
                put(&mut memo, idx, v);
            }
            b'h' | b'j' => {
                let idx = if op == b'h' { take(&mut i, 1)?[0] as usize } else { uint(take(&mut i, 4)?) as usize };
                let v = memo.get(idx).cloned().flatten().ok_or("unknown pickle memo entry")?;
                stack.push(v);
            }
            other => {
                return Err(format!("unsupported pickle opcode 0x{other:02x} (only JSON-like values are read)").into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ExceptionInfo;
    use rusqlite::Connection;
    use serde_json::json;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    async fn backend(dir: &tempfile::TempDir) -> DatabaseBackend {
        let url = format!("db+sqlite:///{}", dir.path().join("r.sqlite").display());
        DatabaseBackend::connect(&url, Some(86400), Serializer::Json).await.unwrap()
    }

    #[test]
    fn pickles_from_celery_5_6() {
        // results/result_encoding_cross_version.json
        assert_eq!(unpickle(&hex("80054B082E")).unwrap(), json!(8));
        assert_eq!(unpickle(&hex("80024B2A2E")).unwrap(), json!(42));
        assert_eq!(unpickle(&hex("80049503000000000000004b2a2e")).unwrap(), json!(42));
        let exc = "8005954C000000000000007D94288C086578635F74797065948C0A56616C75654572726F72948C0B6578635F6D657373616765948C04626F6F6D9485948C0A6578635F6D6F64756C65948C086275696C74696E7394752E";
        assert_eq!(
            unpickle(&hex(exc)).unwrap(),
            json!({"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"})
        );
        // pickle.dumps([1, -2, 3.5, None, True, 'x', {'a': (1,)}, 2**40, -2**40, 300, 70000, 'ééé'(, b'by')], protocol=2 / 5)
        let expect = json!([1, -2, 3.5, null, true, "x", {"a": [1]}, 1u64 << 40, -(1i64 << 40), 300, 70000, "ééé"]);
        let p2 = "80025d7100284b014afeffffff47400c0000000000004e8858010000007871017d710258010000006171034b01857104738a06\
                  0000000000018a060000000000ff4d2c014a701101005806000000c3a9c3a9c3a97105652e";
        assert_eq!(unpickle(&hex(&p2.replace(' ', ""))).unwrap(), expect);
        let p5 = "8005954c000000000000005d94284b014afeffffff47400c0000000000004e888c0178947d948c0161944b018594738a0600\
                  00000000018a060000000000ff4d2c014a701101008c06c3a9c3a9c3a9944302627994652e";
        let mut expect5 = expect.clone();
        expect5.as_array_mut().unwrap().push(json!("by"));
        assert_eq!(unpickle(&hex(&p5.replace(' ', ""))).unwrap(), expect5);
        // pickle.dumps(os.system): a global, refused
        assert!(unpickle(&hex("80049514000000000000008c05706f736978948c0673797374656d9493942e")).is_err());
    }

    #[test]
    fn pickles_for_celery_5_6() {
        // Same bytes as Python's pickle.dumps(42, protocol=2) (results/result_encoding_cross_version.json).
        assert_eq!(pickle(&json!(42)), hex("80024B2A2E"));
        for v in [
            json!(null),
            json!([1, -2, 3.5, null, true, false, "x", "ééé", {"a": [1]}, [], {}]),
            json!([255, 256, 65535, 65536, -1, -129, 2147483647, 2147483648i64, -2147483649i64]),
            json!([i64::MAX, i64::MIN, u64::MAX, 1e300, -0.5]),
            json!({"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"}),
        ] {
            assert_eq!(unpickle(&pickle(&v)).unwrap(), v, "{v}");
        }
    }

    #[tokio::test]
    async fn pickle_results_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("db+sqlite:///{}?result_format=pickle", dir.path().join("r.sqlite").display());
        let b = DatabaseBackend::connect(&url, None, Serializer::Json).await.unwrap();
        b.store(&ResultMeta::success("t", json!(42))).await.unwrap();
        let c = Connection::open(b.path()).unwrap();
        let raw: Vec<u8> = c.query_row("SELECT result FROM celery_taskmeta", [], |r| r.get(0)).unwrap();
        assert_eq!(raw, hex("80024B2A2E"));
        assert_eq!(b.get("t").await.unwrap().unwrap().result, json!(42));
        assert!(DatabaseBackend::connect(&format!("{url}x"), None, Serializer::Json).await.is_err());
    }

    #[tokio::test]
    async fn rows_are_celerys() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        b.store(&ResultMeta::success("t1", json!(8))).await.unwrap();
        let exc = ExceptionInfo::new("ValueError", vec![json!("boom")], "builtins");
        b.store(&ResultMeta::failure("t2", &exc, Some("Traceback...\n".into()))).await.unwrap();
        b.store_many(&[
            ResultMeta::started("t3", 7, "w@h"),
            ResultMeta::success("t3", json!({"a": [1, 2.5]})).with_children(Some(vec![json!([["c", null], null])])),
        ])
        .await
        .unwrap();
        let c = Connection::open(b.path()).unwrap();
        /// status, result, date_done, traceback, children, typeof(result).
        type Columns = (String, Vec<u8>, Option<String>, Option<String>, Option<Vec<u8>>, String);
        let row = |id: &str| -> Columns {
            c.query_row(
                "SELECT status, result, date_done, traceback, children, typeof(result) FROM celery_taskmeta WHERE task_id = ?",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .unwrap()
        };
        let (status, result, date_done, tb, children, ty) = row("t1");
        assert_eq!(
            (status.as_str(), result.as_slice(), tb, children, ty.as_str()),
            ("SUCCESS", &b"8"[..], None, None, "blob")
        );
        let d = date_done.unwrap();
        assert_eq!(d.len(), "2026-11-27 05:23:38.538507".len());
        assert!(!d.contains('T') && !d.contains('+'));
        let (status, result, _, tb, _, _) = row("t2");
        assert_eq!(status, "FAILURE");
        assert_eq!(result, br#"{"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"}"#);
        assert_eq!(tb.as_deref(), Some("Traceback...\n"));
        let (status, result, _, _, children, _) = row("t3");
        assert_eq!((status.as_str(), result.as_slice()), ("SUCCESS", &br#"{"a": [1, 2.5]}"#[..]));
        assert_eq!(children.unwrap(), br#"[[["c", null], null]]"#);
        let n: i64 = c.query_row("SELECT count(*) FROM celery_taskmeta", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3);

        let m = b.get("t2").await.unwrap().unwrap();
        assert_eq!(m.status, TaskState::Failure);
        assert_eq!(m.exception().unwrap().exc_type, "ValueError");
        assert!(m.date_done.is_some());
        assert_eq!(b.get("t3").await.unwrap().unwrap().children.unwrap().len(), 1);
        assert!(b.get("nope").await.unwrap().is_none());
        b.forget("t1").await.unwrap();
        assert!(b.get("t1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn reads_rows_written_by_hand_and_by_celery_5_6() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        let c = Connection::open(b.path()).unwrap();
        // results/handwritten_rows_client_test.sh
        c.execute_batch(
            "INSERT INTO celery_taskmeta(task_id,status,result,date_done) VALUES('a','SUCCESS','{\"a\": [1, 2.5, \"x\", null, true]}','2026-11-27 05:25:57.658270');
             INSERT INTO celery_taskmeta(task_id,status,result,date_done) VALUES('b','SUCCESS',X'80054B082E',NULL);
             INSERT INTO celery_taskmeta(task_id,status,result,date_done) VALUES('c','PENDING',NULL,'2026-11-27 05:25:57.658270');",
        )
        .unwrap();
        let a = b.get("a").await.unwrap().unwrap();
        assert_eq!(a.result, json!({"a": [1, 2.5, "x", null, true]}));
        assert_eq!(a.date_done.unwrap().to_rfc3339(), "2026-11-27T05:25:57.658270+00:00");
        let m = b.get("b").await.unwrap().unwrap();
        assert_eq!((m.result, m.date_done), (json!(8), None));
        assert_eq!(b.get("c").await.unwrap().unwrap().status, TaskState::Pending);
    }

    #[tokio::test]
    async fn waiter_polls_until_ready() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        let w = b.waiter("t");
        let b2 = b.clone();
        tokio::spawn(async move {
            b2.store(&ResultMeta::started("t", 1, "h")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            b2.store(&ResultMeta::success("t", json!(7))).await.unwrap();
        });
        let m = w.wait(Duration::from_secs(5)).await.unwrap();
        assert_eq!(m.result, json!(7));
        assert!(matches!(b.waiter("never").wait(Duration::from_millis(100)).await, Err(BackendError::Timeout(_))));
    }

    #[tokio::test]
    async fn expired_results_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        let old = Utc::now() - chrono::Duration::days(2);
        b.last_cleanup.store(now_secs() as u64, Ordering::Relaxed);
        b.store(&ResultMeta::success("old", json!(1)).with_date_done(Some(old))).await.unwrap();
        b.store(&ResultMeta::started("running", 1, "h")).await.unwrap();
        assert!(b.get("old").await.unwrap().is_some());
        b.last_cleanup.store(0, Ordering::Relaxed);
        b.store(&ResultMeta::success("new", json!(2))).await.unwrap();
        assert!(b.get("old").await.unwrap().is_none());
        assert!(b.get("running").await.unwrap().is_some());
        assert!(b.get("new").await.unwrap().is_some());
    }
}
