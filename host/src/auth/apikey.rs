//! API key format: `ka_` + base64url (no padding) of 32 random bytes; only its SHA-256 is kept.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::Scope;
use crate::store::{ApiKeyRow, NewApiKey, Store, StoreError, now_ms};

pub const PREFIX: &str = "ka_";
/// base64url of 32 bytes without padding.
const BODY_LEN: usize = 43;
/// Characters kept for recognition: `ka_` plus 6 of the key's 43 (36 of 256 bits; not a secret).
const SHOWN: usize = PREFIX.len() + 6;

/// A freshly generated key. `raw` is shown to its owner once and then dropped.
pub struct Generated {
    pub raw: String,
    pub hash: [u8; 32],
    pub prefix: String,
}

/// Draws a new key from the operating system's random source.
pub fn generate() -> Result<Generated, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let raw = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = digest(&raw);
    let prefix = raw[..SHOWN].to_string();
    Ok(Generated { raw, hash, prefix })
}

/// A random identifier for a stored key (not secret): 20 lowercase hex digits,
/// safe in URLs and as a command-line argument (never starts with `-`).
pub fn new_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes)?;
    Ok(crate::model::hex(&bytes))
}

/// The lookup hash of a raw key, or `None` when it is not shaped like one.
pub fn hash(raw: &str) -> Option<[u8; 32]> {
    let body = raw.strip_prefix(PREFIX)?;
    let well_formed =
        body.len() == BODY_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| digest(raw))
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the OS random source failed: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Generates and stores a key for `user_id`, expiring at `expires_at` (unix
/// ms) if given; returns the stored row and the
/// raw key, which the caller shows once and forgets.
pub async fn issue(
    store: &Store,
    user_id: &str,
    name: &str,
    scopes: &[Scope],
    expires_at: Option<i64>,
) -> Result<(ApiKeyRow, String), IssueError> {
    let generated = generate().map_err(IssueError::Random)?;
    let new = NewApiKey {
        id: new_id().map_err(IssueError::Random)?,
        user_id: user_id.to_string(),
        name: name.to_string(),
        prefix: generated.prefix,
        hash: generated.hash,
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        created_at: now_ms(),
        expires_at,
    };
    let row = store.write(move |conn| conn.insert_api_key(&new)).await?;
    Ok((row, generated.raw))
}

fn digest(raw: &str) -> [u8; 32] {
    Sha256::digest(raw.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = generate().expect("os rng");
        assert!(k.raw.starts_with("ka_"));
        assert_eq!(k.raw.len(), 3 + 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&k.raw[3..]).expect("base64url").len(), 32);
        assert_eq!(hash(&k.raw), Some(k.hash));
        assert!(k.raw.starts_with(&k.prefix));
        assert_ne!(generate().expect("os rng").raw, k.raw);
    }

    #[test]
    fn malformed_keys_have_no_hash() {
        assert_eq!(hash("ka_short"), None);
        assert_eq!(hash(&format!("ka_{}", "=".repeat(43))), None);
        assert_eq!(hash(&format!("kb_{}", "a".repeat(43))), None);
        assert_eq!(hash(&format!("ka_{}", "a".repeat(42))), None);
        assert_eq!(hash(&format!("ka_{}", "a".repeat(44))), None);
        assert_eq!(hash(&format!("ka_{}+", "a".repeat(42))), None);
        assert_eq!(hash(&format!("ka_{}é", "a".repeat(41))), None);
        assert!(hash(&format!("ka_{}", "a".repeat(43))).is_some());
    }
}
