//! Authentication: who is calling, and what they may do.
//!
//! A `Bearer ka_…` token is an API key and is checked before anything else;
//! any other bearer token is left for the JWT verifier (a later addition) and
//! is refused until then. Malformed, unknown and revoked credentials stay
//! distinct errors so logs can tell them apart; clients see one 401 each.

pub mod apikey;
pub mod jwt;
pub mod usage;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

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
    /// When the credential stops being valid (a JWT's `exp`, unix seconds).
    pub expires_at: Option<u64>,
}

impl Principal {
    /// `admin` carries every other scope.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| *s == scope || *s == Scope::Admin)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    #[error("unknown API key")]
    UnknownKey,
    #[error("API key has been revoked")]
    Revoked,
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
    let hash = apikey::hash(token).ok_or(AuthError::Malformed("not a well-formed ka_ key"))?;
    let row = store.read(move |conn| conn.api_key_by_hash(&hash)).await?.ok_or(AuthError::UnknownKey)?;
    if row.revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    usage.record(&row.id);
    Ok(Principal {
        user_id: row.user_id,
        scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        key_id: Some(row.id),
        expires_at: None,
    })
}
