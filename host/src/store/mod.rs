//! The store: the only code in Accord that writes SQL, over two backends.
//!
//! One contract for both: `Store::write_for` runs a closure inside one write
//! transaction (`WriteTx`), `Store::read` inside one read snapshot (`ReadTx`,
//! which has no write methods, so a write inside a read does not compile).
//! The closures are synchronous and run on blocking threads, never on tokio
//! workers: sync's push code (`push::apply`, the policy calls) is one piece of
//! code for both backends, and SQLite's API is synchronous anyway — so
//! PostgreSQL is reached with the synchronous `postgres` client on blocking
//! threads, from a bounded pool, rather than through an async interface.
//!
//! - SQLite (`lite`): one writer thread owns the only write connection and
//!   commits queued jobs in groups, round-robin across users (`writer`);
//!   reads run on a small pool of read-only connections (WAL).
//! - PostgreSQL (`pg`): each job takes a pooled connection; jobs of one user
//!   are serialized by a per-user advisory lock, so each user's change
//!   sequence is allocated in commit order while different users write in
//!   parallel; change notices travel by `LISTEN/NOTIFY` to every host.
//!
//! A write job, once started, runs to its end whether or not the caller is
//! still waiting: a dropped HTTP request never leaves half a job written.

mod backup;
mod blobs;
mod checkpoint;
mod conflicts;
mod copy;
mod keys;
mod lite;
mod migrate;
mod notices;
mod objects;
mod pg;
mod pushlog;
mod records;
mod sql;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, oneshot};

use crate::config::DatabaseConfig;

pub use crate::model::now_ms;
pub use backup::{BackupReport, backup, blobs_beside, restore};
pub use blobs::{BlobRow, Stored};
pub use conflicts::{ConflictRow, ConflictStatus, NewConflict};
pub use copy::{Copied, sqlite_to_postgres};
pub use keys::{ApiKeyRow, NewApiKey};
pub use migrate::latest_version;
use notices::NoticeHub;
pub use objects::{Objects, Upload};
pub use pushlog::{LoggedPush, StoredResponse};
pub use records::{Change, RecordRow, Usage, UserState};

/// "User `user`'s data changed, up to sequence `seq`" — published after commit
/// (on PostgreSQL, to every host). A notice with `seq < 0` means "notices may
/// have been missed": every stream resyncs and every long poll looks again.
#[derive(Clone, Debug)]
pub struct Notice {
    pub user: String,
    pub seq: i64,
}

impl Notice {
    pub fn resync() -> Notice {
        Notice { user: String::new(), seq: -1 }
    }

    pub fn is_resync(&self) -> bool {
        self.seq < 0
    }
}

/// What can go wrong in the store. Requests see four kinds: `NotFound`,
/// `Busy` (a lock held elsewhere; retry), `Unavailable` (closed, full,
/// unreachable; retry) and `Other`; the rest only happen when opening.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("database busy")]
    Busy,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
    #[error(
        "the database is at schema version {database}, but this binary knows only up to {binary}; \
         it was written by a newer Accord — run that release, or restore a backup"
    )]
    FutureSchema { database: u32, binary: u32 },
    #[error("{0}")]
    Migration(String),
    #[error("cannot open database {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
}

impl StoreError {
    fn closed() -> StoreError {
        StoreError::Unavailable("the store is closed".into())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError::Busy,
            _ => StoreError::Other(format!("sqlite: {e}")),
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
                StoreError::Busy
            }
            Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::QUERY_CANCELED => StoreError::Busy,
            Some(c) if c.code().starts_with("08") || c.code().starts_with("57P") => {
                StoreError::Unavailable(format!("database unreachable: {e}"))
            }
            None if e.is_closed() => StoreError::Unavailable(format!("database unreachable: {e}")),
            _ => StoreError::Other(format!("postgres: {e}")),
        }
    }
}

/// A read snapshot. Its methods (in the submodules) are the store's read
/// vocabulary; callers never see SQL or driver types.
pub struct ReadTx<'c> {
    conn: sql::Conn<'c>,
}

/// A write transaction: everything a `ReadTx` reads, and the writes.
pub struct WriteTx<'c> {
    read: ReadTx<'c>,
}

impl<'c> std::ops::Deref for WriteTx<'c> {
    type Target = ReadTx<'c>;
    fn deref(&self) -> &ReadTx<'c> {
        &self.read
    }
}

impl<'c> WriteTx<'c> {
    fn new(conn: sql::Conn<'c>) -> WriteTx<'c> {
        WriteTx { read: ReadTx { conn } }
    }
}

/// A cheap, cloneable handle to the database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

enum Backend {
    Lite(lite::Lite),
    Pg(pg::Pg),
}

struct Inner {
    backend: Backend,
    notices: Arc<NoticeHub>,
}

impl Store {
    /// Opens (creating if needed) the database, applies migrations and starts
    /// the writer (SQLite) or the pool and change listener (PostgreSQL).
    /// Blocking: call it off the async runtime.
    pub fn open(config: &DatabaseConfig) -> Result<Store, StoreError> {
        let notices = Arc::new(NoticeHub::default());
        let backend = match &config.url {
            Some(url) => Backend::Pg(pg::Pg::open(url, config, notices.clone())?),
            None => Backend::Lite(lite::Lite::open(config)?),
        };
        Ok(Store { inner: Arc::new(Inner { backend, notices }) })
    }

    /// Runs `f` inside its own write transaction, as the server's own work
    /// (not a user's). `Ok` commits it (the future resolves only after the
    /// commit is durable); `Err` rolls back everything `f` wrote.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_for("", 1, move |tx| f(tx).map(|v| (v, None))).await
    }

    /// Runs `f` for `user` inside its own write transaction; `weight` is about
    /// how many records it writes (for fair grouping). Jobs of one user never
    /// run at the same time. `Ok` commits, and once the commit is durable
    /// publishes the job's notice — even if the caller stopped waiting. `Err`
    /// rolls back everything `f` wrote. Too many waiting writes refuse at once
    /// with `Unavailable`.
    pub async fn write_for<T, E, F>(&self, user: &str, weight: usize, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&WriteTx<'_>) -> Result<(T, Option<Notice>), E> + Send + 'static,
    {
        match &self.inner.backend {
            Backend::Lite(lite) => {
                let (tx, rx) = oneshot::channel();
                let job = Box::new(Pending { f, tx, notices: self.inner.notices.clone() });
                lite.queue.push(user, weight, job)?;
                rx.await.map_err(|_| E::from(StoreError::Other("the write job failed".into())))?
            }
            Backend::Pg(pg) => pg.write(user, f).await,
        }
    }

    /// Runs `f` inside one read snapshot, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.inner.backend {
            Backend::Lite(lite) => lite.read(f).await,
            Backend::Pg(pg) => pg.read(f).await,
        }
    }

    /// Notices of `user`'s committed changes (and resyncs), for long polls and event streams.
    pub fn subscribe(&self, user: &str) -> broadcast::Receiver<Notice> {
        self.inner.notices.subscribe(user)
    }

    /// True when the database answers and every known migration is applied.
    pub async fn is_ready(&self) -> Result<bool, StoreError> {
        self.read(|tx| migrate::is_current(&tx.conn)).await
    }

    /// The database's size in bytes and, on SQLite, its write-ahead log's
    /// (for metrics); `None` where it cannot be read.
    pub async fn size(&self) -> (Option<u64>, Option<u64>) {
        match &self.inner.backend {
            Backend::Lite(lite) => {
                let len = |p: PathBuf| std::fs::metadata(p).ok().map(|m| m.len());
                let wal = PathBuf::from(format!("{}-wal", lite.path.display()));
                (len(lite.path.clone()), Some(len(wal).unwrap_or(0)))
            }
            Backend::Pg(_) => {
                let size = self
                    .read(|tx| tx.conn.first("SELECT pg_database_size(current_database())", &[], |r| r.int(0)))
                    .await;
                (size.ok().flatten().and_then(|n| u64::try_from(n).ok()), None)
            }
        }
    }

    /// Waits for queued writes to commit, then closes every connection.
    pub async fn close(&self) {
        match &self.inner.backend {
            Backend::Lite(lite) => lite.close().await,
            Backend::Pg(pg) => pg.close(),
        }
    }

    /// Where the data lives, for logs: the SQLite path or the PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        match &self.inner.backend {
            Backend::Lite(lite) => lite.path.display().to_string(),
            Backend::Pg(pg) => pg.describe(),
        }
    }
}

/// A queued SQLite write: the caller's closure and where its result goes.
struct Pending<F, T, E> {
    f: F,
    tx: oneshot::Sender<Result<T, E>>,
    notices: Arc<NoticeHub>,
}

impl<F, T, E> writer::WriteJob for Pending<F, T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnOnce(&WriteTx<'_>) -> Result<(T, Option<Notice>), E> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &rusqlite::Connection) -> writer::Ran {
        let Pending { f, tx, notices } = *self;
        let write = WriteTx::new(sql::Conn::lite(conn));
        let outcome = f(&write).and_then(|done| write.conn.flush().map(|()| done).map_err(E::from));
        match outcome {
            Ok((value, notice)) => writer::Ran {
                keep: true,
                finish: Box::new(move |committed| {
                    if let (Ok(()), Some(notice)) = (&committed, notice) {
                        notices.publish(notice);
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

    use std::path::Path;

    use super::writer::Point;
    use super::*;

    fn lite(store: &Store) -> &lite::Lite {
        match &store.inner.backend {
            Backend::Lite(lite) => lite,
            Backend::Pg(_) => panic!("these tests drive the SQLite writer"),
        }
    }

    fn open(dir: &Path) -> Store {
        let config = DatabaseConfig { path: dir.join("t.db"), ..DatabaseConfig::default() };
        Store::open(&config).expect("open store")
    }

    async fn users(store: &Store) -> Vec<String> {
        store.read(|tx| tx.conn.all("SELECT id FROM users ORDER BY id", &[], |r| r.text(0))).await.expect("read users")
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
            if lite(store).queue.len() >= n {
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
        lite(&store).queue.faults.arm(Point::AfterJob, 1, 1);
        lite(&store).queue.faults.arm(Point::Begin, 1, 1);
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
        lite(&store).queue.faults.arm(Point::CloseSavepoint, 2, 1);
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
        lite(&store).queue.faults.arm(Point::Commit, 1, 1);
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
        assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
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
