//! HTTP: routes, extractors and the mapping of errors to problem responses.
//! Only this module knows HTTP; it calls into `auth` and `store`.

mod admin;
mod blobs;
mod extract;
pub mod keys;
mod limits;
mod observe;
mod openapi;
mod ops;
mod problem;
mod request_id;
pub mod schema;
mod sync;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::{Extension, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate as _};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::UsageRecorder;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::store::Store;
use crate::sync::SyncCore;

pub use extract::ApiJson;
pub use limits::UserLimits;
pub use problem::{ApiError, ensure_problem};

/// What every handler can reach: one `Arc`, so the clones axum makes for
/// each request's extractors and middleware are one atomic increment each,
/// not one per shared part (~20, which showed in profiles of small pushes).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
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
    // Each route's OpenAPI operation is declared on its handler (`#[utoipa::path]`).
    let (routes, api) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::revoke))
        .routes(routes!(blobs::get, blobs::head, blobs::put))
        .routes(routes!(sync::push))
        .routes(routes!(sync::pull))
        .routes(routes!(sync::events))
        .routes(routes!(sync::conflicts))
        .routes(routes!(sync::resolve))
        .routes(routes!(sync::history))
        .routes(routes!(admin::policies))
        .routes(routes!(admin::reload))
        .routes(routes!(admin::replay))
        .routes(routes!(admin::shadow))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .split_for_parts();
    let document = openapi::render(&api, &state.config);
    let api = routes
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(Extension(document))
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
