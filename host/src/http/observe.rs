//! The middleware every request passes: counts responses, makes sure every
//! error is a problem document, and logs client aborts.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::Response;

use crate::metrics::Metrics;

/// Counts responses by status class, turns any error response that is not
/// yet a problem document into one, and logs requests whose client went away
/// before the response was sent (info, not error).
pub async fn observe(
    State(metrics): State<Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    struct Guard {
        route: String,
        declared_bytes: Option<u64>,
        done: bool,
        metrics: Arc<Metrics>,
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            if !self.done {
                self.metrics.client_abort();
                tracing::info!(route = %self.route, bytes = ?self.declared_bytes, "client aborted the request");
            }
        }
    }
    let declared_bytes =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let route = format!("{} {}", request.method(), request.uri().path());
    let mut guard = Guard { route, declared_bytes, done: false, metrics };
    let response = next.run(request).await;
    guard.done = true;
    guard.metrics.response(response.status().as_u16());
    super::ensure_problem(response)
}
