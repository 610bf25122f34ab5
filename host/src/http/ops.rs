//! Operational endpoints: liveness, readiness, and the fallbacks for unknown routes.

use axum::extract::State;
use axum::http::{Method, Uri};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::schema::{Health, Problem};
use super::{ApiError, AppState};
use crate::metrics::{PolicyCounts, StoreSize};

/// `GET /metrics`: Prometheus text format. Aggregate counters only — no user data.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics (docs/operations.md lists them)",
    security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let set = state.policies.current();
    let counts: Vec<PolicyCounts<'_>> = set
        .bindings
        .iter()
        .map(|(entity, b)| PolicyCounts {
            entity,
            policy: &b.policy.name,
            calls: b.policy.calls(),
            failures: b.policy.failures(),
            shadow: b.shadow.as_ref().map(|s| {
                let (agree, disagree) = s.counts();
                (s.policy.name.as_str(), agree, disagree)
            }),
        })
        .collect();
    let (database_bytes, wal_bytes) = state.store.size().await;
    let text = state.metrics.render(&counts, &StoreSize { database_bytes, wal_bytes });
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

/// `GET /api/openapi.json`: the API as OpenAPI 3.1, generated from the handlers
/// and the configured entity types (see `openapi`).
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    summary = "This document",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = Object))
)]
pub async fn openapi(Extension(doc): Extension<super::openapi::Document>) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], doc.0)
}

/// The process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    summary = "The process is up",
    security(()),
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Health))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The database answers and every migration is applied.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    summary = "The database answers and migrations are applied",
    security(()),
    responses(
        (status = 200, description = "`{\"status\": \"ready\", \"database\": \"ok\"}`", body = Health),
        (status = 503, response = Problem)
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.store.is_ready().await {
        Ok(true) => Ok(Json(json!({ "status": "ready", "database": "ok" }))),
        Ok(false) => Err(ApiError::Unavailable("database migrations are not applied".into())),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::Unavailable("database is not reachable".into()))
        }
    }
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// Used by the panic catcher: a panic is a server bug, logged, never shown.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ApiError::Internal("handler panicked".into()).into_response()
}
