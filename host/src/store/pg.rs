//! The PostgreSQL backend, for many stateless hosts on one database.
//!
//! - Jobs run on blocking threads with a connection from a bounded pool
//!   (`database.pool_size` per host; waiting longer than
//!   `database.busy_timeout_ms` for one is `Unavailable`).
//! - A write job of a user first takes that user's transaction-level
//!   advisory lock, so one user's writes never overlap on any host: each
//!   user's change sequence (`user_state.last_seq`) is allocated in commit
//!   order, and a `pushId` retried on another host meets the first push's
//!   log row. Different users write in parallel; no row is locked by every push.
//! - Notices go out with `pg_notify` inside the transaction (PostgreSQL
//!   delivers them at commit, to every host). A listener thread per host
//!   receives them; after it loses its connection it reconnects and publishes
//!   a resync notice, so streams and long polls look again instead of
//!   missing changes made meanwhile.
//! - Reads run in a `REPEATABLE READ, READ ONLY` transaction: one snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::sql::{Conn, PgConn};
use super::{Notice, NoticeHub, ReadTx, StoreError, WriteTx, migrate};
use crate::config::DatabaseConfig;

/// The notification channel (NOTIFY is scoped to the database already).
const CHANNEL: &str = "accord_changes";
/// How often the listener checks whether the store is closing.
const LISTEN_TICK: Duration = Duration::from_millis(250);
/// Pause between attempts to reconnect the listener.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// Idle connections. A `postgres::Client` blocks on its own runtime when
/// dropped, which panics on a tokio worker: idle connections are therefore
/// always dropped on a thread of their own.
#[derive(Default)]
struct Idle(Vec<PgConn>);

impl Drop for Idle {
    fn drop(&mut self) {
        let conns = std::mem::take(&mut self.0);
        if !conns.is_empty() {
            let _ = std::thread::Builder::new().name("accord-pg-close".into()).spawn(move || drop(conns));
        }
    }
}

pub struct Pg {
    url: String,
    pool: Arc<Mutex<Idle>>,
    permits: Arc<Semaphore>,
    size: usize,
    wait: Duration,
    closed: Arc<AtomicBool>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

/// A new connection: NOTICEs ("already exists, skipping") are not worth a
/// log line each, and a lock held elsewhere is waited for at most
/// `busy_timeout_ms`, then the request is answered `503 database busy`.
fn connect(url: &str, busy: Duration) -> Result<PgConn, StoreError> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {}", with_causes(&e))))?;
    client.batch_execute(&format!(
        "SET client_min_messages TO warning; SET lock_timeout = {}",
        busy.as_millis().max(1)
    ))?;
    Ok(PgConn::new(client))
}

impl Pg {
    pub fn open(url: &str, config: &DatabaseConfig, notices: Arc<NoticeHub>) -> Result<Pg, StoreError> {
        let wait = Duration::from_millis(config.busy_timeout_ms);
        // At startup, say which setting leads to the database that cannot be reached.
        let mut first = connect(url, wait).map_err(|e| match e {
            StoreError::Unavailable(m) => StoreError::Unavailable(format!("database.url = {}: {m}", describe(url))),
            other => other,
        })?;
        migrate::migrate_pg(&mut first.client)?;
        let closed = Arc::new(AtomicBool::new(false));
        let listener = {
            let (url, closed) = (url.to_string(), closed.clone());
            std::thread::Builder::new()
                .name("accord-pg-listen".into())
                .spawn(move || listen(&url, &notices, &closed))
                .map_err(|e| StoreError::Other(format!("cannot start the change listener: {e}")))?
        };
        Ok(Pg {
            url: url.to_string(),
            pool: Arc::new(Mutex::new(Idle(vec![first]))),
            permits: Arc::new(Semaphore::new(config.pool_size)),
            size: config.pool_size,
            wait,
            closed,
            listener: Mutex::new(Some(listener)),
        })
    }

    /// A slot in the pool, waiting at most `busy_timeout_ms`.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::closed());
        }
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(StoreError::closed()),
            Err(_) => Err(StoreError::Unavailable(format!(
                "all {} database connections are busy (database.pool_size)",
                self.size
            ))),
        }
    }

    pub async fn write<T, E, F>(&self, user: &str, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&WriteTx<'_>) -> Result<(T, Option<Notice>), E> + Send + 'static,
    {
        let permit = self.permit().await?;
        let (pool, url, user, wait) = (self.pool.clone(), self.url.clone(), user.to_string(), self.wait);
        // Runs to its end even if the caller stops waiting.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = take(&pool, &url, wait)?;
            let result = write_in(&mut conn, &user, f);
            give_back(&pool, conn);
            result
        })
        .await
        .map_err(|_| E::from(StoreError::Other("a write job failed".into())))?
    }

    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self.permit().await?;
        let (pool, url, wait) = (self.pool.clone(), self.url.clone(), self.wait);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = take(&pool, &url, wait)?;
            let result = conn
                .client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .map_err(StoreError::from)
                .and_then(|()| f(&ReadTx { conn: Conn::pg(&mut conn) }));
            let _ = conn.client.batch_execute("ROLLBACK");
            give_back(&pool, conn);
            result
        })
        .await
        .map_err(|_| StoreError::Other("a read failed".into()))?
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.permits.close();
        if let Ok(mut pool) = self.pool.lock() {
            drop(std::mem::take(&mut *pool));
        }
        if let Some(listener) = self.listener.lock().ok().and_then(|mut l| l.take()) {
            let _ = listener.join();
        }
    }

    /// The URL without its password.
    pub fn describe(&self) -> String {
        describe(&self.url)
    }
}

/// An error and its causes, `: `-separated ("error connecting to server: Connection refused").
pub(super) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// A PostgreSQL URL without its password.
pub(super) fn describe(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(name) => name.clone(),
                    postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .unwrap_or_default();
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!("postgres://{}@{host}:{port}/{}", c.get_user().unwrap_or(""), c.get_dbname().unwrap_or(""))
        }
        Err(_) => "postgres://…".into(),
    }
}

/// A pooled connection, or a new one when the pool is empty or the pooled one died.
fn take(pool: &Mutex<Idle>, url: &str, busy: Duration) -> Result<PgConn, StoreError> {
    let pooled = pool.lock().map_err(|_| StoreError::closed())?.0.pop();
    match pooled {
        Some(conn) if !conn.client.is_closed() => Ok(conn),
        _ => connect(url, busy),
    }
}

fn give_back(pool: &Mutex<Idle>, conn: PgConn) {
    if conn.client.is_closed() {
        return;
    }
    if let Ok(mut pool) = pool.lock() {
        pool.0.push(conn);
    }
}

/// One write transaction: the user's lock, the job, its notice, commit.
fn write_in<T, E, F>(conn: &mut PgConn, user: &str, f: F) -> Result<T, E>
where
    E: From<StoreError>,
    F: FnOnce(&WriteTx<'_>) -> Result<(T, Option<Notice>), E>,
{
    let store = |e: postgres::Error| E::from(StoreError::from(e));
    conn.client.batch_execute("BEGIN").map_err(store)?;
    if !user.is_empty() {
        let locked = conn.client.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&user]);
        if let Err(e) = locked {
            let _ = conn.client.batch_execute("ROLLBACK");
            return Err(store(e));
        }
    }
    let outcome = {
        let write = WriteTx::new(Conn::pg(&mut *conn));
        f(&write).and_then(|done| write.conn.flush().map(|()| done).map_err(E::from))
    };
    let (value, notice) = match outcome {
        Ok(done) => done,
        Err(e) => {
            let _ = conn.client.batch_execute("ROLLBACK");
            return Err(e);
        }
    };
    if let Some(notice) = notice {
        let payload = format!("{}:{}", notice.seq, notice.user);
        if let Err(e) = conn.client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]) {
            let _ = conn.client.batch_execute("ROLLBACK");
            return Err(store(e));
        }
    }
    match conn.client.batch_execute("COMMIT") {
        Ok(()) => Ok(value),
        Err(e) => {
            let _ = conn.client.batch_execute("ROLLBACK");
            Err(store(e))
        }
    }
}

/// The listener thread: publishes every host's change notices to this host's
/// subscribers, until the store closes.
fn listen(url: &str, notices: &NoticeHub, closed: &AtomicBool) {
    let mut connected_before = false;
    while !closed.load(Ordering::Relaxed) {
        match postgres::Client::connect(url, postgres::NoTls) {
            Ok(mut client) => match client.batch_execute(&format!("LISTEN {CHANNEL}")) {
                Ok(()) => {
                    if connected_before {
                        // Notices sent while we were away are lost: everyone looks again.
                        tracing::info!("change listener reconnected; streams resync");
                        notices.publish(Notice::resync());
                    }
                    connected_before = true;
                    relay(&mut client, notices, closed);
                }
                Err(e) => tracing::warn!(error = %e, "cannot LISTEN for changes"),
            },
            Err(e) => tracing::warn!(error = %e, "change listener cannot connect; retrying"),
        }
        if !closed.load(Ordering::Relaxed) {
            std::thread::sleep(RECONNECT_PAUSE);
        }
    }
}

/// Relays notifications until the connection fails or the store closes.
fn relay(client: &mut postgres::Client, notices: &NoticeHub, closed: &AtomicBool) {
    while !closed.load(Ordering::Relaxed) {
        let next = client.notifications().timeout_iter(LISTEN_TICK).next();
        match next.transpose() {
            Some(Ok(n)) => {
                if let Some((seq, user)) = n.payload().split_once(':')
                    && let Ok(seq) = seq.parse::<i64>()
                {
                    notices.publish(Notice { user: user.to_string(), seq });
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "change listener lost its connection");
                return;
            }
            None if client.is_closed() => {
                tracing::warn!("change listener lost its connection");
                return;
            }
            None => {}
        }
    }
}
