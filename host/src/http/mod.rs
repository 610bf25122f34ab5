//! HTTP: routes, extractors and the mapping of errors to problem responses.
//! Only this module knows HTTP; it calls into `auth` and `store`.

mod admin;
mod blobs;
mod extract;
pub mod keys;
mod limits;
mod observe;
mod ops;
mod problem;
mod request_id;
mod sync;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{delete, get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate as _};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;

use crate::auth::UsageRecorder;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::store::Store;
use crate::sync::SyncCore;

pub use extract::ApiJson;
pub use limits::UserLimits;
pub use problem::{ApiError, ensure_problem};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub usage: UsageRecorder,
    pub sync: SyncCore,
    /// The active policy set (the same one `sync` decides with): admin view, reload, metrics.
    pub policies: Arc<Policies>,
    pub metrics: Arc<Metrics>,
    /// Verifies JWT bearer tokens; `None` when `[auth.jwt]` sets no key source.
    pub jwt: Option<Arc<crate::auth::jwt::JwtVerifier>>,
    /// Failed authentications per client address (`auth.failed_per_minute`).
    pub auth_limit: Arc<crate::auth::limit::FailedAuthLimit>,
    /// Turns true when the server starts shutting down (ends event streams).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Per-user caps on event streams and long polls.
    pub limits: Arc<UserLimits>,
}

/// The whole HTTP application, without a socket (tests can drive it in-process).
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.server.max_body_bytes;
    let observed = state.clone();
    let cors = cors_layer(&state.config.server.cors_origins);
    let api = Router::new()
        .route("/api/api-keys", get(keys::list).post(keys::create))
        .route("/api/api-keys/{id}", delete(keys::revoke))
        .route("/api/blobs/{sha256}", get(blobs::get).head(blobs::head).put(blobs::put))
        .route("/api/sync/push", post(sync::push))
        .route("/api/sync/pull", get(sync::pull))
        .route("/api/sync/events", get(sync::events))
        .route("/api/sync/conflicts", get(sync::conflicts))
        .route("/api/sync/conflicts/{id}/resolve", post(sync::resolve))
        .route("/api/admin/policies", get(admin::policies))
        .route("/api/admin/reload", post(admin::reload))
        .route("/metrics", get(ops::metrics))
        .route("/api/openapi.json", get(ops::openapi))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .with_state(state);
    let mut app = api
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestDecompressionLayer::new().gzip(true))
        // Blobs go out as stored: mostly compressed already, and `Range` counts stored bytes.
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .compress_when(DefaultPredicate::new().and(NotForContentType::const_new("application/octet-stream"))),
        )
        .layer(CatchPanicLayer::custom(ops::panic_response))
        .layer(axum::middleware::from_fn_with_state(observed, observe::observe))
        .layer(TraceLayer::new_for_http().make_span_with(request_id::make_span));
    if let Some(cors) = cors {
        app = app.layer(cors);
    }
    // Outermost, so that even CORS answers carry the request id.
    app.layer(axum::middleware::from_fn(request_id::request_id))
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::RANGE,
                header::IF_NONE_MATCH,
                header::IF_RANGE,
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers(Any)
            // Every request carries Authorization, so each needs a preflight: let browsers cache it.
            .max_age(std::time::Duration::from_secs(600)),
    )
}
