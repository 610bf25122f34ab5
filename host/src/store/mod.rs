//! The SQLite store: the only code in Accord that writes SQL.
//!
//! Threading: SQLite calls never run on tokio worker threads. All writes go to
//! one dedicated writer thread that owns the only write connection. SQLite
//! allows a single writer at a time anyway, so a pool of writers would only
//! queue on the file lock; one thread queues in memory instead, and can commit
//! several waiting jobs in one transaction (group commit, one fsync) while
//! giving each job its own savepoint, so every job stays all-or-nothing.
//! Reads run in `spawn_blocking` on a small pool of read-only connections,
//! which WAL lets proceed beside the writer.
//!
//! A write job, once handed to the writer, runs to its end whether or not the
//! caller is still waiting: a dropped HTTP request therefore never leaves half
//! a job written — the job either commits whole or rolls back whole.

mod conflicts;
mod keys;
mod migrate;
mod pushlog;
mod records;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{broadcast, oneshot};

use crate::config::DatabaseConfig;

pub use conflicts::{ConflictRow, ConflictStatus, NewConflict};
pub use keys::{ApiKeyRow, NewApiKey};
pub use migrate::latest_version;
pub use records::{RecordRow, SyncState};

/// How many queued write jobs the writer commits together at most.
const MAX_GROUP: usize = 64;
/// Change notices buffered per subscriber before it is told it lagged.
const NOTICE_BUFFER: usize = 1024;

/// "User `user`'s data changed, up to sequence `seq`" — published after commit.
///
/// In-process today; a PostgreSQL store would carry these over LISTEN/NOTIFY
/// so every host sees every commit.
#[derive(Clone, Debug)]
pub struct Notice {
    pub user: String,
    pub seq: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database is busy")]
    Busy,
    #[error("the store is closed")]
    Closed,
    #[error(
        "the database is at schema version {database}, but this binary knows only up to {binary}; \
         it was written by a newer Accord — run that release, or restore a backup"
    )]
    FutureSchema { database: u32, binary: u32 },
    #[error("{0}")]
    Migration(String),
    #[error("cannot open database {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError::Busy,
            _ => StoreError::Sqlite(e),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Tells a job's caller how the group transaction ended.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The outcome of running one job inside the group transaction.
struct Ran {
    keep: bool,
    finish: Finish,
}

type Job = Box<dyn FnOnce(&Connection) -> Ran + Send>;

/// A connection lent to a job: inside a savepoint on the writer, or read-only.
/// Its methods (in the submodules) are the store's whole vocabulary; callers
/// never see SQL or rusqlite types.
pub struct Tx<'c> {
    conn: &'c Connection,
}

/// A cheap, cloneable handle to the database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    config: DatabaseConfig,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    notices: broadcast::Sender<Notice>,
}

impl Store {
    /// Opens (creating if needed) the database, applies migrations and starts the writer.
    pub fn open(config: &DatabaseConfig) -> Result<Store, StoreError> {
        let path = config.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        }
        let mut conn = open_connection(&path, config, false)?;
        migrate::migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("accord-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                config: config.clone(),
                writer: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::new()),
                notices: broadcast::channel(NOTICE_BUFFER).0,
            }),
        })
    }

    /// Runs `f` on the writer thread inside its own savepoint. `Ok` commits it
    /// (the future resolves only after the commit is durable); `Err` rolls back
    /// everything `f` wrote.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_notifying(move |tx| f(tx).map(|v| (v, None))).await
    }

    /// Like [`Store::write`], and once the commit is durable publishes the
    /// job's notice to subscribers — even if the caller stopped waiting.
    pub async fn write_notifying<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<(T, Option<Notice>), StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let notices = self.inner.notices.clone();
        let job: Job = Box::new(move |conn| match f(&Tx { conn }) {
            Ok((value, notice)) => Ran {
                keep: true,
                finish: Box::new(move |committed| {
                    if let (Ok(()), Some(notice)) = (&committed, notice) {
                        let _ = notices.send(notice);
                    }
                    let _ = tx.send(committed.map(|()| value));
                }),
            },
            Err(e) => Ran {
                keep: false,
                finish: Box::new(move |_| {
                    let _ = tx.send(Err(e));
                }),
            },
        });
        let sender = self.inner.writer.lock().map_err(|_| StoreError::Closed)?.clone();
        sender.ok_or(StoreError::Closed)?.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read-only connection off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().map_err(|_| StoreError::Closed)?.pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&inner.path, &inner.config, true)?,
            };
            // One read transaction, so every query of `f` sees the same snapshot.
            let result = conn.execute_batch("BEGIN").map_err(StoreError::from).and_then(|()| f(&Tx { conn: &conn }));
            let _ = conn.execute_batch("ROLLBACK");
            if let Ok(mut pool) = inner.readers.lock()
                && pool.len() < inner.config.readers
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Notices of committed changes, for long polls and event streams.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.notices.subscribe()
    }

    /// True when the database answers and every known migration is applied.
    pub async fn is_ready(&self) -> Result<bool, StoreError> {
        self.read(|tx| migrate::is_current(tx.conn)).await
    }

    /// Waits for queued writes to commit, then closes every connection.
    pub async fn close(&self) {
        let sender = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        drop(sender);
        if let Ok(mut pool) = self.inner.readers.lock() {
            pool.clear();
        }
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

fn open_connection(path: &Path, config: &DatabaseConfig, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_millis(config.busy_timeout_ms))?;
    if !read_only {
        // WAL lets readers run beside the writer; journal_mode persists in the file.
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", config.synchronous.as_sql())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The writer thread: takes every job waiting in the queue (up to
/// `MAX_GROUP`), runs each in its own savepoint inside one transaction, commits
/// once, then tells each caller how its job ended.
fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let e = StoreError::from(e);
            tracing::error!(error = %e, "cannot begin write transaction");
            // Every job is dropped unrun; its caller sees `Closed`-like failure via the dropped channel.
            continue;
        }
        let mut finished: Vec<Finish> = Vec::with_capacity(group.len());
        for job in group {
            if let Err(e) = conn.execute_batch("SAVEPOINT job") {
                tracing::error!(error = %e, "cannot open savepoint");
                continue;
            }
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job(&conn)));
            match ran {
                Ok(ran) => {
                    let end = if ran.keep { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
                    if let Err(e) = conn.execute_batch(end) {
                        tracing::error!(error = %e, "cannot close savepoint");
                    }
                    finished.push(ran.finish);
                }
                Err(_) => {
                    tracing::error!("a write job panicked; its changes were rolled back");
                    let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                }
            }
            // Some errors (disk full, I/O) make SQLite roll back the whole
            // transaction. The jobs before this point are then lost: tell their
            // callers, and open a fresh transaction for the rest of the group.
            if conn.is_autocommit() {
                tracing::error!("the write transaction was rolled back by SQLite; failing the jobs in it");
                for finish in finished.drain(..) {
                    finish(Err(StoreError::Commit("the transaction was rolled back".into())));
                }
                if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                    tracing::error!(error = %e, "cannot begin write transaction");
                }
            }
        }
        let committed = conn.execute_batch("COMMIT");
        if let Err(e) = &committed {
            tracing::error!(error = %e, "commit failed; the whole group was rolled back");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for finish in finished {
            finish(match &committed {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Commit(e.to_string())),
            });
        }
    }
    // Every sender is gone: the store is closing. Dropping `conn` checkpoints the WAL.
    let _ = conn.execute_batch("PRAGMA optimize");
}
