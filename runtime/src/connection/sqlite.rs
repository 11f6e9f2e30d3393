//! The SQLite file shared by the embedded transport and the database backend.
//!
//! kombu's SQLAlchemy transport and Celery's database backend each open the
//! file through SQLAlchemy's pool; here both go through one small pool of
//! rusqlite connections ([`Db`]), with the settings that keep a second process
//! working beside us: WAL mode and a busy timeout. SQLite calls block, so
//! every call runs on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

/// How long a connection waits for SQLite's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per pool.
const POOL_IDLE: usize = 4;

/// An SQLite call that failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused the statement or the file could not be opened.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The blocking call panicked or its runtime shut down.
    #[error("SQLite call panicked or was cancelled: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A small pool of connections to one SQLite file; every call runs on
/// tokio's blocking pool.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

struct DbInner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Db {
    /// Open `path` (creating the file), switch it to WAL mode and run `schema`.
    pub async fn open(path: PathBuf, schema: String) -> Result<Db, DbError> {
        let db = Db { inner: Arc::new(DbInner { path, idle: Mutex::new(Vec::new()) }) };
        db.run(move |c| {
            set_wal(c)?;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(&schema)?;
            tx.commit()
        })
        .await?;
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `f` with a pooled connection on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let failed = |source| DbError::Sqlite { path: inner.path.clone(), source };
            let mut conn = match inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                Some(c) => c,
                None => connect(&inner.path).map_err(failed)?,
            };
            let result = f(&mut conn).map_err(failed);
            // A connection left inside a transaction (it cannot be: transactions
            // roll back on drop) or after an error is still reusable.
            let mut idle = inner.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < POOL_IDLE && conn.is_autocommit() {
                idle.push(conn);
            }
            result
        })
        .await?
    }
}

/// Open one connection with a busy timeout, so another process holding the
/// write lock makes us wait instead of failing with "database is locked".
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(BUSY_TIMEOUT)?;
    Ok(c)
}

/// Switch the file to WAL mode (persistent; readers and the writer no longer
/// block each other). Retried briefly: the switch needs a moment alone.
fn set_wal(c: &Connection) -> rusqlite::Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Err(last.unwrap_or(rusqlite::Error::InvalidQuery))
}

/// `?, ?, ?` for `n` parameters.
pub fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}
