//! The one place errors become HTTP responses: RFC 9457 `application/problem+json`.
//!
//! Internal details (SQL errors, panics) are logged here and never sent, and
//! a refused credential gets one generic detail ([`CREDENTIALS_REFUSED`]): the
//! client never learns whether a key exists, was revoked or expired.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::store::StoreError;
use crate::sync::SyncError;

/// Base of the `type` URIs; each problem kind is documented in docs/problems.md.
const TYPE_BASE: &str = "https://accord.dev/problems/";

/// The `detail` of every 401 about the credential itself.
pub const CREDENTIALS_REFUSED: &str = "invalid or expired credentials";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_secs: Option<u64> },
    #[error("{0}")]
    Unavailable(String),
    /// A per-user quota is used up (507).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A `Range` that names no byte of a blob of `size` bytes (416).
    #[error("the requested range is outside the blob's {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    /// The request's `X-Request-Id`, so a problem can be found in the logs.
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::Unauthorized(AuthError::Store(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable")
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
            }
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request-timeout", "Request timeout"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::Gone(_) => (StatusCode::GONE, "cursor-gone", "Cursor no longer valid"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            }
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-input", "Invalid input"),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too-many-requests", "Too many requests")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            ApiError::QuotaExceeded(_) => (StatusCode::INSUFFICIENT_STORAGE, "quota-exceeded", "Quota exceeded"),
            ApiError::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range-not-satisfiable", "Range not satisfiable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal server error"),
        }
    }

    /// What the client is told; internal errors say nothing about internals.
    fn detail(&self) -> String {
        match self {
            ApiError::Unauthorized(AuthError::Store(_)) => "the credential store is unavailable; retry".into(),
            ApiError::Unauthorized(AuthError::NotAnApiKey) => {
                "the bearer token is not an API key, and JWT authentication is not configured".into()
            }
            ApiError::Unauthorized(AuthError::Missing) => {
                "missing credentials: send `Authorization: Bearer <API key or JWT>`".into()
            }
            ApiError::Unauthorized(e @ AuthError::Malformed(_)) => e.to_string(),
            // Unknown, revoked, expired, malformed or badly signed: one answer.
            ApiError::Unauthorized(_) => CREDENTIALS_REFUSED.into(),
            ApiError::Internal(_) => "the server failed to handle this request; it has been logged".into(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("no such resource".into()),
            StoreError::Busy | StoreError::Unavailable(_) => ApiError::Unavailable(format!("{e}; retry")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Invalid(m) => ApiError::Unprocessable(m),
            SyncError::TooLarge(m) => ApiError::PayloadTooLarge(m),
            SyncError::BadRequest(m) => ApiError::BadRequest(m),
            SyncError::CursorGone(m) => ApiError::Gone(m),
            SyncError::NotFound(m) => ApiError::NotFound(m),
            SyncError::Conflict(m) => ApiError::Conflict(m),
            SyncError::QuotaExceeded(m) => ApiError::QuotaExceeded(m),
            SyncError::RangeNotSatisfiable(size) => ApiError::RangeNotSatisfiable { size },
            SyncError::Busy(m) => ApiError::Unavailable(m),
            SyncError::Store(e) => e.into(),
        }
    }
}

/// Turns an error response produced outside our handlers (e.g. by a tower
/// layer rejecting a `Content-Encoding`) into a problem document with the same
/// status, keeping its other headers.
pub fn ensure_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "application/problem+json");
    if status.as_u16() < 400 || is_problem {
        return response;
    }
    let reason = status.canonical_reason().unwrap_or("request refused").to_lowercase();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound(reason),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(reason),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(reason),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("unsupported Content-Type or Content-Encoding (gzip is accepted)".into())
        }
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(reason),
        StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout(reason),
        StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(reason),
        StatusCode::TOO_MANY_REQUESTS => ApiError::TooManyRequests { detail: reason, retry_after_secs: None },
        s if s.is_server_error() => ApiError::Internal(format!("a layer answered {s}")),
        _ => ApiError::BadRequest(reason),
    };
    let (mut parts, _) = response.into_parts();
    let problem = error.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in problem.headers() {
        parts.headers.insert(name.clone(), value.clone());
    }
    let mut out = Response::from_parts(parts, problem.into_body());
    *out.status_mut() = status;
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        match &self {
            ApiError::Internal(msg) => tracing::error!(error = %msg, "internal error"),
            ApiError::Unauthorized(AuthError::Store(e)) => tracing::error!(error = %e, "auth lookup failed"),
            _ => {}
        }
        let problem = Problem {
            kind: format!("{TYPE_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail: self.detail(),
            request_id: super::request_id::current(),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // Everything answered 503 is momentary (busy database, full queues).
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        match &self {
            ApiError::TooManyRequests { retry_after_secs: Some(secs), .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            ApiError::RangeNotSatisfiable { size } => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
            // The rest of an unread body may still be on its way: this connection is done.
            ApiError::RequestTimeout(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
