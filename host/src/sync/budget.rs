//! A server-wide bound on the bytes of request bodies held and parsed at once.
//!
//! Each push body takes its bytes from one budget as they arrive and gives
//! them back when the push is answered, so many large uploads at once cannot
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

    /// Appends `chunk` to `body` if the budget has room for it.
    pub fn extend(&self, body: &mut BodyBytes, chunk: &[u8]) -> Result<(), SyncError> {
        let n = u32::try_from(chunk.len()).ok().filter(|n| (*n as usize) <= self.total);
        let permit = n.and_then(|n| self.permits.clone().try_acquire_many_owned(n).ok()).ok_or_else(|| {
            SyncError::Busy(format!(
                "the server is reading too many request bodies at once (server.max_parsing_bytes = {}); retry shortly",
                self.total
            ))
        })?;
        match &mut body.held {
            Some(held) => held.merge(permit),
            None => body.held = Some(permit),
        }
        body.bytes.extend_from_slice(chunk);
        Ok(())
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
