//! Authentication: who is calling, and what they may do.
//!
//! A `Bearer ka_…` token is an API key and is checked before anything else;
//! any other bearer token goes to the JWT verifier (when `[auth.jwt]` sets a
//! key source). Tokens of the wrong shape are refused before any database or
//! JWKS work. Malformed, unknown, revoked and expired credentials stay
//! distinct errors so logs can tell them apart; clients see one generic 401
//! for all of them (see `http::problem`), and repeated failures from one
//! address are limited by [`limit::FailedAuthLimit`].

pub mod apikey;
pub mod jwt;
pub mod limit;
pub mod usage;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, now_ms};

pub use usage::UsageRecorder;

/// A permission an API key can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "sync:read")]
    SyncRead,
    #[serde(rename = "sync:write")]
    SyncWrite,
    #[serde(rename = "keys:manage")]
    KeysManage,
    /// Everything, including server administration.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::SyncRead, Scope::SyncWrite, Scope::KeysManage, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::SyncRead => "sync:read",
            Scope::SyncWrite => "sync:write",
            Scope::KeysManage => "keys:manage",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: String,
    pub scopes: Vec<Scope>,
    /// The API key used, if the caller used one.
    pub key_id: Option<String>,
    /// When the credential stops being valid, unix seconds: a JWT's `exp`
    /// (which it is accepted past, by the leeway), an API key's expiry.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// `admin` carries every other scope.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| *s == scope || *s == Scope::Admin)
    }

    /// True when the credential's own expiry has passed (without leeway):
    /// a JWT inside its clock-skew leeway still authenticates, but is expired here.
    pub fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|exp| i64::try_from(exp).unwrap_or(i64::MAX).saturating_mul(1000) <= now_ms())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    /// The `Authorization` header itself is unusable (not the token in it).
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    /// A `ka_` token that cannot be a key (length or alphabet); never looked up.
    #[error("malformed API key: {0}")]
    MalformedKey(&'static str),
    #[error("unknown API key")]
    UnknownKey,
    #[error("API key {0} has been revoked")]
    Revoked(String),
    #[error("API key {0} has expired")]
    Expired(String),
    #[error("token is not an API key and no JWT verifier is configured")]
    NotAnApiKey,
    #[error(transparent)]
    Jwt(#[from] jwt::JwtError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a JWT-authenticated user may do: everything but administration,
/// which needs an API key with the `admin` scope.
pub const JWT_SCOPES: [Scope; 3] = [Scope::SyncRead, Scope::SyncWrite, Scope::KeysManage];

/// Resolves a bearer token to a principal: a `ka_` API key first, else a JWT
/// (when a verifier is configured).
pub async fn authenticate(
    store: &Store,
    usage: &UsageRecorder,
    jwt: Option<&jwt::JwtVerifier>,
    token: &str,
) -> Result<Principal, AuthError> {
    if !token.starts_with(apikey::PREFIX) {
        let verifier = jwt.ok_or(AuthError::NotAnApiKey)?;
        let (user_id, exp) = verifier.verify(token).await?;
        return Ok(Principal { user_id, scopes: JWT_SCOPES.to_vec(), key_id: None, expires_at: Some(exp) });
    }
    // The shape check runs before the store is touched.
    let hash = apikey::hash(token).ok_or(AuthError::MalformedKey("not `ka_` and 43 base64url characters"))?;
    let row = store.read(move |conn| conn.api_key_by_hash(&hash)).await?.ok_or(AuthError::UnknownKey)?;
    if row.revoked_at.is_some() {
        return Err(AuthError::Revoked(row.id));
    }
    if row.expires_at.is_some_and(|at| at <= now_ms()) {
        return Err(AuthError::Expired(row.id));
    }
    usage.record(&row.id);
    Ok(Principal {
        user_id: row.user_id,
        scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        key_id: Some(row.id),
        expires_at: row.expires_at.map(|ms| u64::try_from(ms / 1000).unwrap_or(0)),
    })
}
