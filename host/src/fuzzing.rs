//! Entry points of the `cargo fuzz` targets (fuzz/) and of their regression
//! test (host/tests/it/fuzz_regressions.rs): each feeds arbitrary bytes to a
//! parser that a client or a plugin controls and asserts what must hold of
//! the result. A panic is a finding.

use std::sync::OnceLock;

use crate::auth::{apikey, jwt::JwtVerifier};
use crate::config::{Config, JwtConfig, SyncConfig};
use crate::model::Decision;
use crate::policy::{Limits, MAX_REASON, validate};
use crate::sync::{Entities, cursor, wire};

/// A push body, decoded against the shipped entity types and limits.
pub fn push_body(data: &[u8]) {
    static SETUP: OnceLock<(Entities, SyncConfig)> = OnceLock::new();
    let (entities, limits) = SETUP.get_or_init(|| {
        let config = Config::default();
        (Entities::from_config(&config).expect("the default entities are valid"), config.sync)
    });
    let Ok(push) = wire::parse_push(data, entities, limits) else { return };
    assert!(push.record_count <= limits.max_records_per_push);
    assert_eq!(push.record_count, push.groups.iter().map(|(_, r)| r.len()).sum::<usize>());
    for (type_index, records) in &push.groups {
        let ty = &entities.types[*type_index];
        for r in records {
            assert!(r.data.starts_with('{') && r.data.len() <= limits.max_record_bytes);
            assert_eq!(r.refs.len(), ty.refs.len());
            assert_eq!(r.blobs.len(), ty.blobs.len());
            assert!(r.blobs.iter().flatten().all(|h| crate::sync::blobs::is_sha256(h)));
        }
    }
}

/// A pull cursor: decodes or is refused; what decodes re-encodes to the same position.
pub fn cursor(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some((epoch, seq)) = cursor::decode(text) {
        assert_eq!(cursor::decode(&cursor::encode(&epoch, seq)), Some((epoch, seq)));
    }
}

/// A bearer token: the API-key shape check, and JWT verification against an
/// HS256 secret (arbitrary bytes must never verify).
pub fn credentials(data: &[u8]) {
    static JWT: OnceLock<(tokio::runtime::Runtime, JwtVerifier)> = OnceLock::new();
    let Ok(token) = std::str::from_utf8(data) else { return };
    if apikey::hash(token).is_some() {
        assert!(token.starts_with(apikey::PREFIX));
    }
    let (runtime, verifier) = JWT.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let config = JwtConfig { secret: Some("fuzzing secret, 32 bytes or more!".into()), ..JwtConfig::default() };
        let verifier = runtime
            .block_on(JwtVerifier::from_config(&config))
            .expect("a valid JWT config")
            .expect("a secret makes a verifier");
        (runtime, verifier)
    });
    assert!(runtime.block_on(verifier.verify(token)).is_err(), "an unsigned token verified: {token:?}");
}

/// A policy's decision: the first byte picks the kind, the rest is its text.
pub fn policy_output(data: &[u8]) {
    let Some((kind, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest).into_owned();
    let decision = match kind % 4 {
        0 => Decision::Accept,
        1 => Decision::Merged { data: text.clone(), deleted: kind & 4 != 0 },
        2 => Decision::Conflict(text.clone()),
        _ => Decision::Reject(text.clone()),
    };
    let limits = Limits { cpu_ms: 100, memory_bytes: 1 << 20, max_output_bytes: 64 * 1024 };
    // The validator checks without building a `Value`; it must agree with building one.
    let merged_ok = kind % 4 == 1
        && text.len() <= limits.max_output_bytes
        && serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v.is_object());
    let result = validate(decision, &limits);
    if kind % 4 == 1 {
        assert_eq!(result.is_ok(), merged_ok, "validate disagrees with serde_json on {text:?}");
    }
    match result {
        Ok(Decision::Merged { data, .. }) => {
            assert!(data.len() <= limits.max_output_bytes);
            let parsed: serde_json::Value = serde_json::from_str(&data).expect("validated data is JSON");
            assert!(parsed.is_object());
        }
        Ok(Decision::Conflict(reason) | Decision::Reject(reason)) => assert!(reason.len() <= MAX_REASON),
        Ok(Decision::Accept) | Err(_) => {}
    }
}

/// A config file: loads or is refused with a message, never a panic.
pub fn config(data: &[u8]) {
    let Ok(dir) = tempfile_dir() else { return };
    let path = dir.join("config.toml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(config) = Config::load(Some(&path)) {
        assert!(config.entity_order().is_ok(), "a loaded config has an entity order");
    }
}

/// A folder for the config target's file, one per process.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir.clone());
    }
    let dir = std::env::temp_dir().join(format!("accord-fuzz-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(DIR.get_or_init(|| dir).clone())
}
