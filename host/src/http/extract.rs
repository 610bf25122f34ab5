//! Extractors: the authenticated caller, and JSON bodies whose rejections are problems.

use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::auth::{self, AuthError, Principal, Scope};

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    /// Authenticates the bearer token. An address over `auth.failed_per_minute`
    /// is refused (`429`) before its credential is looked at; each refused
    /// credential counts against its address and is logged with the reason the
    /// client is not told.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Present when served on a socket; in-process callers are not limited.
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        if let Some(ip) = peer
            && let Err(wait) = state.auth_limit.check(ip)
        {
            tracing::debug!(peer = %ip, "too many failed authentications; refused");
            return Err(ApiError::TooManyRequests {
                detail: "too many failed authentications from this address; retry later".into(),
                retry_after_secs: Some(wait.as_secs().max(1)),
            });
        }
        match bearer(parts, state).await {
            Ok(principal) => Ok(principal),
            // The store failing is not the client's fault: it does not count.
            Err(e @ AuthError::Store(_)) => Err(e.into()),
            Err(e) => {
                let peer_text = peer.map_or_else(|| "-".to_string(), |ip| ip.to_string());
                tracing::info!(peer = %peer_text, reason = %e, "authentication refused");
                if let Some(ip) = peer {
                    state.auth_limit.failed(ip);
                }
                Err(e.into())
            }
        }
    }
}

async fn bearer(parts: &Parts, state: &AppState) -> Result<Principal, AuthError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed("Authorization header is not ASCII"))?;
    let (scheme, token) =
        value.split_once(' ').ok_or(AuthError::Malformed("expected `Authorization: Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("only the Bearer scheme is supported"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    auth::authenticate(&state.store, &state.usage, state.jwt.as_deref(), token).await
}

impl Principal {
    /// Refuses with `403` unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("this credential lacks the `{scope}` scope")))
        }
    }
}

/// `axum::Json`, with every rejection turned into a problem response:
/// malformed JSON is `400`, well-formed JSON of the wrong shape `422`,
/// a body over the limit `413`, a missing JSON content type `415`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_problem(&rejection)),
        }
    }
}

fn json_problem(rejection: &JsonRejection) -> ApiError {
    if let Some(timeout) = super::limits::body_timeout(rejection) {
        return timeout;
    }
    let text = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => ApiError::Unprocessable(text),
        JsonRejection::JsonSyntaxError(_) => ApiError::BadRequest(text),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(text),
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the request body is larger than server.max_body_bytes".into())
        }
        _ => ApiError::BadRequest(text),
    }
}
