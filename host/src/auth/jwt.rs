//! JWT bearer tokens: signature (HMAC secret, a PEM public key, or a JWKS from
//! a file or URL), allowed algorithms, `iss`, `aud`, expiry with leeway, and
//! the claim that names the user.
//!
//! `alg: none` and any algorithm not configured are refused, and a key only
//! ever verifies algorithms of its own family: the `Validation` is built per
//! token from the allowed algorithms that match the key (an RSA public key
//! never checks an HMAC signature, which would let its PEM text act as a
//! shared secret). A token that is not three base64url segments is refused
//! before any key lookup. A token whose `kid` is not in the cached JWKS makes
//! the verifier re-read the JWKS (file or URL, at most every
//! `JWKS_MIN_REFRESH`), so rotated IdP keys work without a restart.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::RwLock;

use crate::config::JwtConfig;

/// Least time between two reads of the JWKS, file or URL (unknown `kid`s cannot force more).
pub const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest token looked at; real ones are a few KiB.
const MAX_TOKEN_LEN: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("not a JWT: {0}")]
    Malformed(&'static str),
    #[error("token signed by an unknown key id {0:?}")]
    UnknownKey(String),
    #[error("the token has no usable `{0}` claim")]
    NoUser(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JwtSetupError(pub String);

enum JwksSource {
    File(PathBuf),
    Url(String),
}

pub struct JwtVerifier {
    /// Claim checks; its `algorithms` are replaced per token by [`JwtVerifier::verify`].
    validation: Validation,
    /// `auth.jwt.algorithms`, in order.
    allowed: Vec<Algorithm>,
    static_key: Option<DecodingKey>,
    jwks_source: Option<JwksSource>,
    jwks: RwLock<JwkSet>,
    last_fetch: Mutex<Option<Instant>>,
    user_claim: String,
    http: reqwest::Client,
}

fn parse_algorithm(name: &str) -> Result<Algorithm, JwtSetupError> {
    let known = [
        ("HS256", Algorithm::HS256),
        ("HS384", Algorithm::HS384),
        ("HS512", Algorithm::HS512),
        ("RS256", Algorithm::RS256),
        ("RS384", Algorithm::RS384),
        ("RS512", Algorithm::RS512),
        ("PS256", Algorithm::PS256),
        ("PS384", Algorithm::PS384),
        ("PS512", Algorithm::PS512),
        ("ES256", Algorithm::ES256),
        ("ES384", Algorithm::ES384),
        ("EdDSA", Algorithm::EdDSA),
    ];
    known.iter().find(|(n, _)| *n == name).map(|(_, a)| *a).ok_or_else(|| {
        let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
        JwtSetupError(format!(
            "config key `auth.jwt.algorithms`: unknown algorithm `{name}` (known: {})",
            names.join(", ")
        ))
    })
}

impl JwtVerifier {
    /// `None` when no key source is configured (JWT disabled).
    pub async fn from_config(cfg: &JwtConfig) -> Result<Option<JwtVerifier>, JwtSetupError> {
        let sources =
            [cfg.secret.is_some(), cfg.public_key_file.is_some(), cfg.jwks_file.is_some(), cfg.jwks_url.is_some()];
        match sources.iter().filter(|s| **s).count() {
            0 => return Ok(None),
            1 => {}
            _ => {
                return Err(JwtSetupError(
                    "config keys `auth.jwt`: set exactly one of secret, public_key_file, jwks_file, jwks_url".into(),
                ));
            }
        }
        let algorithms = cfg.algorithms.iter().map(|a| parse_algorithm(a)).collect::<Result<Vec<_>, _>>()?;
        if algorithms.is_empty() {
            return Err(JwtSetupError("config key `auth.jwt.algorithms`: name at least one algorithm".into()));
        }
        let validation = claim_validation(cfg);
        let static_key = if let Some(secret) = &cfg.secret {
            Some(DecodingKey::from_secret(secret.expose().as_bytes()))
        } else if let Some(path) = &cfg.public_key_file {
            let pem = std::fs::read(path).map_err(|e| {
                JwtSetupError(format!("config key `auth.jwt.public_key_file`: cannot read {}: {e}", path.display()))
            })?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .or_else(|_| DecodingKey::from_ec_pem(&pem))
                .or_else(|_| DecodingKey::from_ed_pem(&pem))
                .map_err(|e| {
                    JwtSetupError(format!(
                        "config key `auth.jwt.public_key_file`: {} is not an RSA, EC or Ed25519 public key: {e}",
                        path.display()
                    ))
                })?;
            Some(key)
        } else {
            None
        };
        if let Some(key) = &static_key {
            let family = key.family();
            if !algorithms.iter().any(|a| a.family() == family) {
                let source = if cfg.secret.is_some() { "auth.jwt.secret" } else { "auth.jwt.public_key_file" };
                let names: Vec<String> = family.algorithms().iter().map(|a| format!("{a:?}")).collect();
                return Err(JwtSetupError(format!(
                    "config key `auth.jwt.algorithms`: the `{source}` key ({family:?}) verifies only {}, and none of them is listed",
                    names.join(", ")
                )));
            }
        }
        let jwks_source = match (&cfg.jwks_file, &cfg.jwks_url) {
            (Some(f), _) => Some(JwksSource::File(f.clone())),
            (None, Some(u)) => Some(JwksSource::Url(u.clone())),
            _ => None,
        };
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| JwtSetupError(format!("cannot build the JWKS HTTP client: {e}")))?;
        let verifier = JwtVerifier {
            validation,
            allowed: algorithms,
            static_key,
            jwks_source,
            jwks: RwLock::new(JwkSet { keys: Vec::new() }),
            last_fetch: Mutex::new(None),
            user_claim: cfg.user_claim.clone(),
            http,
        };
        match &verifier.jwks_source {
            // A file must be right at startup; a URL may be down for a moment.
            Some(JwksSource::File(_)) => verifier.refresh(true).await.map_err(JwtSetupError)?,
            Some(JwksSource::Url(url)) => {
                if let Err(e) = verifier.refresh(true).await {
                    tracing::warn!(url = %url, error = %e, "JWKS not loaded yet; retrying when a token arrives");
                }
            }
            None => {}
        }
        Ok(Some(verifier))
    }

    /// Re-reads the JWKS (file or URL) at most every `JWKS_MIN_REFRESH` unless `force`.
    async fn refresh(&self, force: bool) -> Result<(), String> {
        let Some(source) = &self.jwks_source else { return Ok(()) };
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < JWKS_MIN_REFRESH) {
                tracing::debug!("JWKS read less than JWKS_MIN_REFRESH ago; not re-reading it for an unknown kid");
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let text = match source {
            JwksSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("config key `auth.jwt.jwks_file`: cannot read {}: {e}", path.display()))?,
            JwksSource::Url(url) => {
                let response = self.http.get(url).send().await.map_err(|e| format!("fetching {url}: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("fetching {url}: HTTP {}", response.status()));
                }
                response.text().await.map_err(|e| format!("reading {url}: {e}"))?
            }
        };
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| format!("the JWKS is not valid: {e}"))?;
        *self.jwks.write().await = set;
        Ok(())
    }

    /// The key for a token's `kid` and `alg`. A JWK that names its own `alg`
    /// verifies only that algorithm.
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, JwtError> {
        if let Some(key) = &self.static_key {
            return Ok(key.clone());
        }
        let lookup = |set: &JwkSet| -> Option<Result<DecodingKey, JwtError>> {
            let jwk = match kid {
                Some(kid) => set.find(kid)?,
                None if set.keys.len() == 1 => &set.keys[0],
                None => {
                    return Some(Err(JwtError::Invalid("the token has no `kid` and the JWKS has several keys".into())));
                }
            };
            if jwk.common.key_algorithm.is_some_and(|own| own != KeyAlgorithm::from(alg)) {
                return Some(Err(JwtError::Invalid(format!("the JWK names another algorithm than {alg:?}"))));
            }
            Some(DecodingKey::from_jwk(jwk).map_err(|e| JwtError::Invalid(format!("unusable JWK: {e}"))))
        };
        if let Some(found) = lookup(&*self.jwks.read().await) {
            return found;
        }
        // Unknown kid: the IdP may have rotated its keys.
        if let Err(e) = self.refresh(false).await {
            tracing::warn!(error = %e, "JWKS refresh failed");
        }
        lookup(&*self.jwks.read().await).unwrap_or_else(|| Err(JwtError::UnknownKey(kid.unwrap_or("").to_string())))
    }

    /// Verifies `token`; returns the user id it names and its `exp` (unix seconds).
    pub async fn verify(&self, token: &str) -> Result<(String, u64), JwtError> {
        check_shape(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
        if !self.allowed.contains(&header.alg) {
            return Err(JwtError::Invalid(format!("algorithm {:?} is not allowed", header.alg)));
        }
        let key = self.key_for(header.kid.as_deref(), header.alg).await?;
        // Only the allowed algorithms of the key's own family: jsonwebtoken
        // refuses a list that mixes families, and a key must never verify an
        // algorithm of another family (RSA public key used as an HMAC secret).
        let family = key.family();
        let mut validation = self.validation.clone();
        validation.algorithms = self.allowed.iter().copied().filter(|a| a.family() == family).collect();
        if !validation.algorithms.contains(&header.alg) {
            return Err(JwtError::Invalid(format!(
                "algorithm {:?} does not match the key type {family:?}",
                header.alg
            )));
        }
        let data =
            jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| JwtError::Invalid(e.to_string()))?;
        // `exp` is a required claim, so validation guarantees it is present.
        let exp = data.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let user = match data.claims.get(&self.user_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(JwtError::NoUser(self.user_claim.clone())),
        };
        Ok((user, exp))
    }
}

/// The claim checks of `[auth.jwt]`: `exp` always, `nbf` when present (both
/// with the leeway), `iss` and `aud` required and matched when configured.
fn claim_validation(cfg: &JwtConfig) -> Validation {
    let mut validation =
        Validation { leeway: cfg.leeway_secs, validate_exp: true, validate_nbf: true, ..Validation::default() };
    let mut required = vec!["exp"];
    match &cfg.issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match &cfg.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Refuses, without any key lookup, what cannot be a signed JWT: three
/// non-empty base64url segments separated by dots.
fn check_shape(token: &str) -> Result<(), JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("longer than any JWT accepted"));
    }
    let segments: Vec<&str> = token.split('.').collect();
    if segments.len() != 3 {
        return Err(JwtError::Malformed("not three dot-separated segments"));
    }
    let base64url = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !segments.iter().all(|s| base64url(s)) {
        return Err(JwtError::Malformed("a segment is empty or not base64url"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_three_base64url_segments_pass_the_shape_check() {
        assert!(check_shape("eyJhbGciOiJIUzI1NiJ9.e30.c2ln").is_ok());
        for bad in ["", "a.b", "a.b.c.d", "a..c", "a.b.", ".b.c", "a.b+/.c", "a.b.c=", "a b.c.d", "a.b.c\n"] {
            assert!(check_shape(bad).is_err(), "{bad:?}");
        }
        assert!(check_shape(&format!("a.{}.c", "b".repeat(MAX_TOKEN_LEN))).is_err());
    }

    #[test]
    fn issuer_and_audience_become_required_claims() {
        let mut cfg = JwtConfig::default();
        let v = claim_validation(&cfg);
        assert_eq!(v.required_spec_claims.len(), 1);
        assert!(v.validate_nbf && v.validate_exp && !v.validate_aud);
        cfg.issuer = Some("https://idp".into());
        cfg.audience = Some("accord".into());
        let v = claim_validation(&cfg);
        for claim in ["exp", "iss", "aud"] {
            assert!(v.required_spec_claims.contains(claim), "{claim}");
        }
        assert!(v.validate_aud);
    }
}
