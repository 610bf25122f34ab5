//! The middleware every request passes: counts responses, makes sure every
//! error is a problem document, puts a deadline on the request body, and logs
//! client aborts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::Response;

use super::AppState;
use crate::metrics::Metrics;

/// Counts responses by status class, turns any error response that is not
/// yet a problem document into one, and logs requests whose client went away
/// before the response was sent (info, not error). The request body must
/// arrive within `server.body_timeout_secs` of the handler starting to read it.
pub async fn observe(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    struct Guard {
        route: String,
        declared_bytes: Option<u64>,
        received: Arc<AtomicU64>,
        done: bool,
        metrics: Arc<Metrics>,
        span: tracing::Span,
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            if !self.done {
                let _in_request = self.span.enter();
                self.metrics.client_abort();
                let received = self.received.load(Relaxed);
                tracing::info!(route = %self.route, bytes = received, declared = ?self.declared_bytes,
                    "client aborted the request");
            }
        }
    }
    let declared_bytes =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let route = format!("{} {}", request.method(), request.uri().path());
    let matched = request.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_string());
    let started = std::time::Instant::now();
    // Count the body bytes as they arrive, so an abort can say how far the upload got.
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let (parts, body) = request.into_parts();
    // A blob may be large and come over a slow link: it has its own deadline.
    let blob_upload = parts.method == axum::http::Method::PUT && parts.uri.path().starts_with("/api/blobs/");
    let secs = if blob_upload { state.config.blobs.upload_timeout_secs } else { state.config.server.body_timeout_secs };
    let timeout = Duration::from_secs(secs);
    let body = super::limits::with_deadline(body, timeout, move |n| {
        counter.fetch_add(n as u64, Relaxed);
    });
    let request = axum::extract::Request::from_parts(parts, body);
    let metrics = state.metrics.clone();
    let mut guard = Guard { route, declared_bytes, received, done: false, metrics, span: tracing::Span::current() };
    let response = next.run(request).await;
    guard.done = true;
    guard.metrics.request(matched.as_deref().unwrap_or("other"), started.elapsed().as_secs_f64());
    guard.metrics.response(response.status().as_u16());
    super::ensure_problem(response)
}
