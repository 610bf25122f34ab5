//! `/api/api-keys`: create, list and revoke the caller's API keys.
//!
//! A credential may create or revoke only keys whose scopes it holds itself
//! (`admin` holds every scope), and create keys only while its own expiry has
//! not passed: a JWT accepted inside its clock-skew leeway cannot mint a
//! lasting key. A key created by an expiring API key expires no later than it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::schema::Problem;
use super::{ApiError, ApiJson, AppState};
use crate::auth::{Principal, Scope, apikey};
use crate::store::{ApiKeyRow, now_ms};

/// Longest accepted key name, in characters.
const MAX_NAME: usize = 100;
/// Latest accepted `expiresAt` (2^53 - 1, exact in every JSON parser).
const MAX_EXPIRES_AT: i64 = 9_007_199_254_740_991;

/// `POST /api/api-keys` body.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewApiKey)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for; surrounding spaces are trimmed.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    name: String,
    /// Absent or null: `sync:read` and `sync:write`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<ScopeName>>, min_items = 1)]
    scopes: Option<Vec<String>>,
    /// When the new key stops working, unix ms, in the future (`422` otherwise);
    /// absent or null: never.
    #[serde(default, rename = "expiresAt")]
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    expires_at: Option<i64>,
}

/// A scope an API key can hold (`admin` holds every other).
#[derive(ToSchema)]
#[allow(dead_code)] // Documents the strings `Scope::parse` accepts.
enum ScopeName {
    #[schema(rename = "sync:read")]
    SyncRead,
    #[schema(rename = "sync:write")]
    SyncWrite,
    #[schema(rename = "keys:manage")]
    KeysManage,
    #[schema(rename = "admin")]
    Admin,
}

/// A key as clients see it: never the hash, never the key (except `key`, once, on creation).
#[derive(Serialize, ToSchema)]
#[schema(as = ApiKey)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    id: String,
    name: String,
    /// The key's first characters, to recognise it.
    prefix: String,
    scopes: Vec<String>,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    /// When the key stops working, unix ms; null: never.
    expires_at: Option<i64>,
    /// The raw key: only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    key: Option<String>,
}

impl From<ApiKeyRow> for KeyView {
    fn from(row: ApiKeyRow) -> Self {
        KeyView {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            scopes: row.scopes,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
            expires_at: row.expires_at,
            key: None,
        }
    }
}

/// Scopes a new key gets when the request names none.
pub const DEFAULT_HTTP_SCOPES: [Scope; 2] = [Scope::SyncRead, Scope::SyncWrite];

#[utoipa::path(
    post,
    path = "/api/api-keys",
    operation_id = "createApiKey",
    tag = "keys",
    summary = "Create an API key; the raw key is returned once",
    description = "Scope keys:manage; a key cannot grant scopes it does not hold, an expired token (a JWT inside its leeway) cannot create keys, and an expiring API key creates only keys expiring no later than itself (403). 409 past auth.max_keys_per_user.",
    request_body = CreateKey,
    responses(
        (status = 201, description = "The new key, with `key`", body = KeyView),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 409, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Principal,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::KeysManage)?;
    if caller.is_expired() {
        return Err(ApiError::Forbidden(
            "this token has expired (it is only accepted within the clock-skew leeway); \
             creating API keys needs an unexpired credential"
                .into(),
        ));
    }
    let name = body.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::Unprocessable(format!("`name` must be 1 to {MAX_NAME} characters")));
    }
    let scopes = match body.scopes {
        None => DEFAULT_HTTP_SCOPES.to_vec(),
        Some(names) => parse_scopes(&names).map_err(ApiError::Unprocessable)?,
    };
    if let Some(missing) = scopes.iter().find(|s| !caller.has(**s)) {
        return Err(ApiError::Forbidden(format!("cannot grant `{missing}`: the calling credential does not hold it")));
    }
    if let Some(at) = body.expires_at
        && (at <= now_ms() || at > MAX_EXPIRES_AT)
    {
        return Err(ApiError::Unprocessable(format!(
            "`expiresAt` must be in the future, in unix milliseconds no larger than {MAX_EXPIRES_AT}"
        )));
    }
    // An expiring API key cannot launder its expiry into a lasting key. (A JWT
    // always has an `exp`, but is a session: its user may create lasting keys.)
    if caller.key_id.is_some()
        && let Some(own) = caller.expires_at
    {
        let own_ms = i64::try_from(own).unwrap_or(i64::MAX).saturating_mul(1000);
        if body.expires_at.is_none_or(|at| at > own_ms) {
            return Err(ApiError::Forbidden(format!(
                "this key expires at {own_ms}; a key it creates must set `expiresAt` no later than that"
            )));
        }
    }
    // What one user can make the server keep is bounded (checked before
    // creating: concurrent creations may pass it by their number).
    let cap = state.config.auth.max_keys_per_user;
    let user = caller.user_id.clone();
    let (active, all) = state.store.read(move |tx| tx.api_key_counts(&user)).await?;
    if active >= cap || all >= cap.saturating_mul(10) {
        return Err(ApiError::Conflict(format!(
            "this user already has {active} keys not revoked and {all} in all; the limits are {cap} and {} \
             (auth.max_keys_per_user): revoke keys you no longer use",
            cap.saturating_mul(10)
        )));
    }
    let (row, raw) =
        apikey::issue(&state.store, &caller.user_id, &name, &scopes, body.expires_at).await.map_err(|e| match e {
            apikey::IssueError::Store(e) => ApiError::from(e),
            other => ApiError::Internal(other.to_string()),
        })?;
    let mut view = KeyView::from(row);
    view.key = Some(raw);
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    get,
    path = "/api/api-keys",
    operation_id = "listApiKeys",
    tag = "keys",
    summary = "The caller's API keys, oldest first (never the keys themselves)",
    description = "Scope keys:manage.",
    responses(
        (status = 200, description = "Keys, oldest first", body = Vec<KeyView>),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 429, response = Problem)
    )
)]
pub async fn list(State(state): State<AppState>, caller: Principal) -> Result<Json<Vec<KeyView>>, ApiError> {
    caller.require(Scope::KeysManage)?;
    let user = caller.user_id;
    let rows = state.store.read(move |conn| conn.api_keys_of(&user)).await?;
    Ok(Json(rows.into_iter().map(KeyView::from).collect()))
}

#[utoipa::path(
    delete,
    path = "/api/api-keys/{id}",
    operation_id = "revokeApiKey",
    tag = "keys",
    summary = "Revoke a key (soft delete; it fails on the very next request)",
    description = "Scope keys:manage; a key cannot revoke a key holding a scope it does not hold (403).",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
        (status = 429, response = Problem)
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::KeysManage)?;
    let user = caller.user_id.clone();
    // Looked up and revoked in one write job, so the scopes checked are the ones revoked.
    let result = state
        .store
        .write(move |conn| {
            let Some(row) = conn.api_key_of(&user, &id)? else { return Ok(Revoke::NotFound) };
            if let Some(scope) = row.scopes.iter().find(|s| Scope::parse(s).is_none_or(|s| !caller.has(s))) {
                return Ok(Revoke::Lacks(scope.clone()));
            }
            conn.revoke_api_key(Some(&user), &id, now_ms())?;
            Ok(Revoke::Done)
        })
        .await?;
    match result {
        Revoke::Done => Ok(StatusCode::NO_CONTENT),
        Revoke::NotFound => Err(ApiError::NotFound("no API key with this id".into())),
        Revoke::Lacks(scope) => Err(ApiError::Forbidden(format!(
            "cannot revoke a key with `{scope}`: the calling credential does not hold it"
        ))),
    }
}

enum Revoke {
    Done,
    NotFound,
    /// The key holds a scope the caller does not.
    Lacks(String),
}

/// Parses scope names, rejecting unknown ones and removing duplicates.
pub fn parse_scopes(names: &[String]) -> Result<Vec<Scope>, String> {
    let mut scopes = Vec::new();
    for name in names {
        let scope = Scope::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown scope `{name}`; known scopes are {}", known.join(", "))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err("`scopes` must name at least one scope".into());
    }
    Ok(scopes)
}
