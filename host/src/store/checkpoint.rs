//! WAL checkpoints on a thread of their own, so the writer never pays for one.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL
//! past 1,000 pages: that commit (and every push waiting for the writer)
//! waits while pages are copied into the database file and it is synced.
//! The writer's connection instead reports the WAL's size after each commit
//! (its WAL hook replaces the automatic checkpoint), and past the same
//! threshold asks this thread to run a PASSIVE checkpoint on its own
//! connection, beside the writer. Commits stay durable in the WAL as before
//! (`synchronous` is unchanged); a checkpoint only moves committed pages.

use std::cell::Cell;
use std::ffi::c_int;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::hooks::Wal;

use super::StoreError;

/// WAL pages after which a checkpoint is asked for (SQLite's own default).
const PAGES: c_int = 1000;

thread_local! {
    /// Pages in the WAL after the last commit on this thread's connection.
    static WAL_PAGES: Cell<c_int> = const { Cell::new(0) };
}

/// The WAL hook of the writer's connection: runs on the writer thread, in COMMIT.
fn note_pages(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

#[derive(Default)]
struct Wanted {
    checkpoint: bool,
    closed: bool,
}

/// The checkpoint thread and how to wake it.
pub(super) struct Checkpointer {
    wanted: Arc<(Mutex<Wanted>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread with its own connection (`conn`, opened read-write
    /// on the same file), and turns the automatic checkpoint of `writer` off.
    pub fn start(writer: &Connection, conn: Connection, path: &Path) -> Result<Checkpointer, StoreError> {
        writer.wal_hook(Some(note_pages));
        let wanted = Arc::new((Mutex::new(Wanted::default()), Condvar::new()));
        let w = wanted.clone();
        let thread = std::thread::Builder::new()
            .name("accord-checkpoint".into())
            .spawn(move || run(&conn, &w))
            .map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
        Ok(Checkpointer { wanted, thread: Some(thread) })
    }

    /// After a commit on the writer's thread: asks for a checkpoint when the WAL has grown past the threshold.
    pub fn committed(&self) {
        if WAL_PAGES.get() >= PAGES {
            let (lock, wake) = &*self.wanted;
            let mut wanted = lock.lock().unwrap_or_else(|p| p.into_inner());
            if !wanted.checkpoint {
                wanted.checkpoint = true;
                wake.notify_one();
            }
        }
    }
}

impl Drop for Checkpointer {
    /// Stops the thread (after the checkpoint in progress, if any) and waits for it.
    fn drop(&mut self) {
        let (lock, wake) = &*self.wanted;
        lock.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, wanted: &(Mutex<Wanted>, Condvar)) {
    let (lock, wake) = wanted;
    loop {
        {
            let mut w = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !w.checkpoint && !w.closed {
                w = wake.wait(w).unwrap_or_else(|p| p.into_inner());
            }
            if w.closed {
                return;
            }
            w.checkpoint = false;
        }
        // PASSIVE: copies what no reader still needs, never waits on the writer or readers.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; the next commit past the threshold tries again");
        }
    }
}
