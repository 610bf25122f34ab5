//! `lastUsedAt` bookkeeping, kept off the request path.
//!
//! Requests drop a note into a bounded channel with `try_send` (never waits);
//! a background task coalesces notes per key and writes them once a second.
//! If the database is slow the channel fills and further notes are dropped:
//! `lastUsedAt` is best-effort by design, request latency is not.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{Store, now_ms};

const QUEUE: usize = 4096;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct UsageRecorder {
    tx: mpsc::Sender<(String, i64)>,
}

impl UsageRecorder {
    /// Starts the flushing task; it ends, after a last flush, on [`UsageTask::finish`].
    pub fn start(store: Store) -> (UsageRecorder, UsageTask) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop, stopped) = oneshot::channel();
        let handle = tokio::spawn(flush_loop(store, rx, stopped));
        (UsageRecorder { tx }, UsageTask { stop, handle })
    }

    pub fn record(&self, key_id: &str) {
        let _ = self.tx.try_send((key_id.to_owned(), now_ms()));
    }
}

/// The running flusher.
pub struct UsageTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl UsageTask {
    /// Writes what is pending and stops.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

async fn flush_loop(store: Store, mut rx: mpsc::Receiver<(String, i64)>, mut stopped: oneshot::Receiver<()>) {
    let mut pending: HashMap<String, i64> = HashMap::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            note = rx.recv() => match note {
                Some((id, at)) => {
                    let slot = pending.entry(id).or_insert(at);
                    *slot = (*slot).max(at);
                }
                None => break,
            },
            _ = tick.tick() => flush(&store, &mut pending).await,
        }
    }
    while let Ok((id, at)) = rx.try_recv() {
        let slot = pending.entry(id).or_insert(at);
        *slot = (*slot).max(at);
    }
    flush(&store, &mut pending).await;
}

async fn flush(store: &Store, pending: &mut HashMap<String, i64>) {
    if pending.is_empty() {
        return;
    }
    let uses: Vec<(String, i64)> = pending.drain().collect();
    if let Err(e) = store.write(move |conn| conn.touch_api_keys(&uses)).await {
        tracing::warn!(error = %e, "could not record API key usage");
    }
}
