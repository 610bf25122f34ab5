//! The SQLite backend: one writer thread (see `writer`) and a pool of
//! read-only connections that WAL lets read beside it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::checkpoint::Checkpointer;
use super::sql::Conn;
use super::{ReadTx, StoreError, migrate, writer};
use crate::config::DatabaseConfig;

pub struct Lite {
    pub path: PathBuf,
    config: DatabaseConfig,
    pub queue: Arc<writer::Queue>,
    thread: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

impl Lite {
    pub fn open(config: &DatabaseConfig) -> Result<Lite, StoreError> {
        let path = config.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        }
        let mut conn = open_connection(&path, config, false)?;
        migrate::migrate(&mut conn)?;
        let checkpoints = Checkpointer::start(&conn, open_connection(&path, config, false)?, &path)?;
        let queue = Arc::new(writer::Queue::new(config.write_queue));
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("accord-writer".into())
            .spawn(move || writer::run(conn, &q, checkpoints))
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        Ok(Lite {
            path,
            config: config.clone(),
            queue,
            thread: Mutex::new(Some(thread)),
            readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Runs `f` on a read-only connection in one read transaction, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (readers, path, config) = (self.readers.clone(), self.path.clone(), self.config.clone());
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().map_err(|_| StoreError::closed())?.pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&path, &config, true)?,
            };
            // One read transaction, so every query of `f` sees the same snapshot.
            let result = conn
                .execute_batch("BEGIN")
                .map_err(StoreError::from)
                .and_then(|()| f(&ReadTx { conn: Conn::lite(&conn) }));
            let _ = conn.execute_batch("ROLLBACK");
            if let Ok(mut pool) = readers.lock()
                && pool.len() < config.readers
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|_| StoreError::Other("a read failed".into()))?
    }

    /// Waits for queued writes to commit, then closes every connection.
    pub async fn close(&self) {
        self.queue.close();
        if let Ok(mut pool) = self.readers.lock() {
            pool.clear();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
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
