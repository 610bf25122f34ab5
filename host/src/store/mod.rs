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
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{broadcast, oneshot};

use crate::config::DatabaseConfig;

pub use conflicts::{ConflictRow, ConflictStatus, NewConflict};
pub use keys::{ApiKeyRow, NewApiKey};
pub use migrate::latest_version;
pub use pushlog::{LoggedPush, StoredResponse};
pub use records::{RecordRow, Usage, UserState};

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
    #[error("database busy")]
    Busy,
    #[error("the store is closed")]
    Closed,
    #[error("too many writes are waiting")]
    QueueFull,
    #[error("the write job failed")]
    JobLost,
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
    queue: Arc<writer::Queue>,
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
        let queue = Arc::new(writer::Queue::new(config.write_queue));
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("accord-writer".into())
            .spawn(move || writer::run(conn, &q))
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                config: config.clone(),
                queue,
                thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::new()),
                notices: broadcast::channel(NOTICE_BUFFER).0,
            }),
        })
    }

    /// Runs `f` on the writer thread inside its own savepoint, queued as the
    /// server's own work (not a user's). `Ok` commits it (the future resolves
    /// only after the commit is durable); `Err` rolls back everything `f` wrote.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_for("", 1, move |tx| f(tx).map(|v| (v, None))).await
    }

    /// Runs `f` for `user` on the writer thread inside its own savepoint;
    /// `weight` is about how many records it writes (for fair grouping).
    /// `Ok` commits, and once the commit is durable publishes the job's notice
    /// to subscribers — even if the caller stopped waiting. `Err` rolls back
    /// everything `f` wrote. A full queue refuses at once with `QueueFull`.
    pub async fn write_for<T, E, F>(&self, user: &str, weight: usize, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<(T, Option<Notice>), E> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Box::new(Pending { f, tx, notices: self.inner.notices.clone() });
        self.inner.queue.push(user, weight, job)?;
        rx.await.map_err(|_| E::from(StoreError::JobLost))?
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
        self.inner.queue.close();
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

/// A queued write: the caller's closure and where its result goes.
struct Pending<F, T, E> {
    f: F,
    tx: oneshot::Sender<Result<T, E>>,
    notices: broadcast::Sender<Notice>,
}

impl<F, T, E> writer::WriteJob for Pending<F, T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnOnce(&Tx<'_>) -> Result<(T, Option<Notice>), E> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> writer::Ran {
        let Pending { f, tx, notices } = *self;
        match f(&Tx { conn }) {
            Ok((value, notice)) => writer::Ran {
                keep: true,
                finish: Box::new(move |committed| {
                    if let (Ok(()), Some(notice)) = (&committed, notice) {
                        let _ = notices.send(notice);
                    }
                    let _ = tx.send(committed.map(|()| value).map_err(E::from));
                }),
            },
            Err(e) => writer::Ran {
                keep: false,
                finish: Box::new(move |_| {
                    let _ = tx.send(Err(e));
                }),
            },
        }
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.tx.send(Err(E::from(error)));
    }
}

#[cfg(test)]
mod tests {
    //! The writer under injected faults: no caller told "failed" sees its write commit.

    use std::time::Duration;

    use super::writer::Point;
    use super::*;

    fn open(dir: &Path) -> Store {
        let config = DatabaseConfig { path: dir.join("t.db"), ..DatabaseConfig::default() };
        Store::open(&config).expect("open store")
    }

    async fn users(store: &Store) -> Vec<String> {
        store
            .read(|tx| {
                let mut stmt = tx.conn.prepare("SELECT id FROM users ORDER BY id")?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .expect("read users")
    }

    /// Queues a job for `user` that inserts the user row `name`.
    fn insert(store: &Store, user: &str, name: &str) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let (store, user, name) = (store.clone(), user.to_string(), name.to_string());
        tokio::spawn(async move { store.write_for(&user, 1, move |tx| Ok((tx.ensure_user(&name, 0)?, None))).await })
    }

    /// Holds the writer inside a job until the returned sender fires, so the
    /// jobs queued meanwhile form the next group.
    async fn hold_writer(
        store: &Store,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<Result<(), StoreError>>) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered) = oneshot::channel::<()>();
        let store = store.clone();
        let job = tokio::spawn(async move {
            store
                .write_for("holder", 1, move |_tx| {
                    let _ = entered_tx.send(());
                    let _ = held.recv_timeout(Duration::from_secs(10));
                    Ok(((), None))
                })
                .await
        });
        entered.await.expect("writer entered the holding job");
        (release, job)
    }

    async fn queued(store: &Store, n: usize) {
        for _ in 0..200 {
            if store.inner.queue.len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("jobs were not queued");
    }

    #[tokio::test]
    async fn jobs_after_a_rollback_never_run_outside_a_transaction() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let (release, holder) = hold_writer(&store).await;
        let jobs = [insert(&store, "a", "a"), insert(&store, "b", "b"), insert(&store, "c", "c")];
        queued(&store, 3).await;
        // SQLite rolls the group back after job a, and the next BEGIN fails.
        store.inner.queue.faults.arm(Point::AfterJob, 1, 1);
        store.inner.queue.faults.arm(Point::Begin, 1, 1);
        release.send(()).expect("release the writer");
        assert!(holder.await.expect("join").is_ok());
        for job in jobs {
            assert!(job.await.expect("join").is_err(), "every job of the failed group is told it failed");
        }
        assert_eq!(users(&store).await, Vec::<String>::new(), "nothing of the failed group committed");
        // The writer recovers: the next job commits.
        assert!(insert(&store, "d", "d").await.expect("join").is_ok());
        assert_eq!(users(&store).await, vec!["d".to_string()]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_failed_savepoint_or_commit_fails_exactly_the_jobs_it_loses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        // Closing b's savepoint fails: a and b are lost with the transaction; c runs in a fresh one.
        let (release, holder) = hold_writer(&store).await;
        let jobs = [insert(&store, "a", "a"), insert(&store, "b", "b"), insert(&store, "c", "c")];
        queued(&store, 3).await;
        store.inner.queue.faults.arm(Point::CloseSavepoint, 2, 1);
        release.send(()).expect("release the writer");
        assert!(holder.await.expect("join").is_ok());
        let results: Vec<bool> =
            futures_util::future::join_all(jobs).await.into_iter().map(|r| r.expect("join").is_ok()).collect();
        assert_eq!(results, vec![false, false, true]);
        assert_eq!(users(&store).await, vec!["c".to_string()]);

        // A failed commit fails the whole group and writes none of it.
        let (release, holder) = hold_writer(&store).await;
        let jobs = [insert(&store, "d", "d"), insert(&store, "e", "e")];
        queued(&store, 2).await;
        store.inner.queue.faults.arm(Point::Commit, 1, 1);
        release.send(()).expect("release the writer");
        assert!(holder.await.expect("join").is_ok());
        for job in jobs {
            assert!(job.await.expect("join").is_err());
        }
        assert_eq!(users(&store).await, vec!["c".to_string()]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = DatabaseConfig { path: dir.path().join("t.db"), write_queue: 16, ..DatabaseConfig::default() };
        let store = Store::open(&config).expect("open store");
        let (release, holder) = hold_writer(&store).await;
        // One user may hold an eighth of the queue: 2 of 16.
        let mine = [insert(&store, "u", "u1"), insert(&store, "u", "u2")];
        queued(&store, 2).await;
        let refused = insert(&store, "u", "u3").await.expect("join");
        assert!(matches!(refused, Err(StoreError::QueueFull)), "{refused:?}");
        // Another user still gets in.
        let other = insert(&store, "v", "v1");
        queued(&store, 3).await;
        release.send(()).expect("release the writer");
        assert!(holder.await.expect("join").is_ok());
        for job in mine {
            assert!(job.await.expect("join").is_ok());
        }
        assert!(other.await.expect("join").is_ok());
        assert_eq!(users(&store).await, vec!["u1".to_string(), "u2".to_string(), "v1".to_string()]);
        store.close().await;
    }
}
