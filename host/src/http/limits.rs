//! What one request or one user may hold: per-user caps on event streams and
//! long polls, and the deadline of a request body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures_util::StreamExt as _;

use super::ApiError;
use crate::config::Config;

/// How long a client refused by a per-user cap is told to wait, in seconds.
const RETRY_AFTER_SECS: u64 = 5;

/// The per-user caps of one server.
pub struct UserLimits {
    pub streams: Arc<UserSlots>,
    pub long_polls: Arc<UserSlots>,
    pub uploads: Arc<UserSlots>,
    /// Policy replays compile and run a candidate: one at a time, server-wide.
    pub replays: tokio::sync::Semaphore,
}

impl UserLimits {
    pub fn new(config: &Config) -> UserLimits {
        UserLimits {
            streams: UserSlots::new("event streams", "sync.max_streams_per_user", config.sync.max_streams_per_user),
            long_polls: UserSlots::new(
                "long polls",
                "sync.max_long_polls_per_user",
                config.sync.max_long_polls_per_user,
            ),
            uploads: UserSlots::new("blob uploads", "blobs.max_uploads_per_user", config.blobs.max_uploads_per_user),
            replays: tokio::sync::Semaphore::new(1),
        }
    }
}

/// At most `max` of one kind of long-lived request per user at a time.
pub struct UserSlots {
    what: &'static str,
    key: &'static str,
    max: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One taken slot; dropping it (the request ended, or its client went away) frees it.
pub struct Slot {
    slots: Arc<UserSlots>,
    user: String,
}

impl UserSlots {
    fn new(what: &'static str, key: &'static str, max: usize) -> Arc<UserSlots> {
        Arc::new(UserSlots { what, key, max, held: Mutex::new(HashMap::new()) })
    }

    /// Takes one of `user`'s slots, or refuses with a `429` problem.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<Slot, ApiError> {
        // The map is only ever incremented or decremented under the lock, so
        // a poisoned lock still holds consistent counts.
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(user.to_string()).or_insert(0);
        if *count >= self.max {
            tracing::info!(user, limit = self.max, what = self.what, "per-user cap reached");
            return Err(ApiError::TooManyRequests {
                detail: format!(
                    "this user already has {} {} open ({}); close one or retry later",
                    self.max, self.what, self.key
                ),
                retry_after_secs: Some(RETRY_AFTER_SECS),
            });
        }
        *count += 1;
        Ok(Slot { slots: self.clone(), user: user.to_string() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.user);
            }
        }
    }
}

/// The error a request body yields when it did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0} s (server.body_timeout_secs)")]
pub struct BodyTimeout(u64);

/// `body`, failing with [`BodyTimeout`] unless it has arrived in full within
/// `timeout` of the first time it is read (a handler that never reads the
/// body is never cut off). `received` counts the bytes as they arrive.
pub fn with_deadline(body: Body, timeout: Duration, received: impl Fn(usize) + Send + 'static) -> Body {
    struct State<S, F> {
        inner: S,
        deadline: Option<tokio::time::Instant>,
        done: bool,
        received: F,
    }
    let state = State { inner: body.into_data_stream(), deadline: None, done: false, received };
    let stream = futures_util::stream::unfold(state, move |mut state| async move {
        if state.done {
            return None;
        }
        let deadline = *state.deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
        let item: Result<Bytes, axum::BoxError> = match tokio::time::timeout_at(deadline, state.inner.next()).await {
            Ok(None) => return None,
            Ok(Some(Ok(chunk))) => {
                (state.received)(chunk.len());
                Ok(chunk)
            }
            Ok(Some(Err(e))) => {
                state.done = true;
                Err(e.into())
            }
            Err(_) => {
                state.done = true;
                Err(BodyTimeout(timeout.as_secs()).into())
            }
        };
        Some((item, state))
    });
    // Fused: a reader may poll again after the end (the gzip decoder does).
    Body::from_stream(stream.fuse())
}

/// The `408` problem for a body error that is (or is caused by) a [`BodyTimeout`].
pub fn body_timeout(error: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(timeout) = e.downcast_ref::<BodyTimeout>() {
            return Some(ApiError::RequestTimeout(timeout.to_string()));
        }
        next = e.source();
    }
    None
}
