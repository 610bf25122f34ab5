//! A server-wide bound on the bytes of request bodies held and parsed at once.
//!
//! Each push body takes the memory it allocates (its buffer's capacity, the
//! old and the new buffer both while it grows) from one budget as bytes
//! arrive, and gives it back when the push is answered, so many large uploads at once cannot
//! grow memory without bound: past the budget a push is refused at once with
//! `503` and `Retry-After` (nothing is written), and the client retries.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::SyncError;

/// Largest budget a semaphore can count (tokio's limit on permits).
const MAX_PERMITS: usize = Semaphore::MAX_PERMITS;

#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

/// A body being read, and the share of the budget it holds.
pub struct BodyBytes {
    bytes: Vec<u8>,
    held: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    pub fn new(total: usize) -> BodyBudget {
        let total = total.clamp(1, MAX_PERMITS);
        BodyBudget { permits: Arc::new(Semaphore::new(total)), total }
    }

    /// An empty body holding nothing yet.
    pub fn start(&self) -> BodyBytes {
        BodyBytes { bytes: Vec::new(), held: None }
    }

    /// Appends `chunk` to `body` if the budget has room for the memory it
    /// takes; `limit` is the largest body allowed (the buffer never grows past it).
    pub fn extend(&self, body: &mut BodyBytes, chunk: &[u8], limit: usize) -> Result<(), SyncError> {
        let needed = body.bytes.len() + chunk.len();
        if needed > body.bytes.capacity() {
            let capacity = needed.max(body.bytes.capacity() * 2).max(16 * 1024).min(limit.max(needed));
            // The old buffer lives until the copy is made: hold both, then give the old back.
            let permit = self.take(capacity)?;
            let mut grown = Vec::with_capacity(capacity);
            grown.extend_from_slice(&body.bytes);
            body.bytes = grown;
            body.held = Some(permit);
        }
        body.bytes.extend_from_slice(chunk);
        Ok(())
    }

    fn take(&self, bytes: usize) -> Result<OwnedSemaphorePermit, SyncError> {
        let n = u32::try_from(bytes).ok().filter(|n| (*n as usize) <= self.total);
        n.and_then(|n| self.permits.clone().try_acquire_many_owned(n).ok()).ok_or_else(|| {
            SyncError::Busy(format!(
                "the server is reading too many request bodies at once (server.max_parsing_bytes = {}); retry shortly",
                self.total
            ))
        })
    }
}

impl BodyBytes {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Frees the bytes but keeps holding their budget (for what was parsed from them).
    pub fn into_budget(self) -> Option<OwnedSemaphorePermit> {
        self.held
    }
}
