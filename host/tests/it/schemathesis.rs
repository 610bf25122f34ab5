//! schemathesis (property-based API testing from the OpenAPI document) against
//! a real server with the shipped configuration: every operation, every check,
//! a fixed seed and example count, and zero failures. The Python package is
//! installed into a virtualenv under the target dir on first run
//! (fixtures/schemathesis/requirements.txt pins it).
//!
//! Where a request's validity depends on server state, which no schema can say,
//! `schemathesis.toml` (written below) widens the statuses `positive_data_acceptance`
//! accepts for that one operation, and only by the documented status:
//! a cursor the server did not issue (`400`/`410`), a blob whose bytes do not hash
//! to its URL (`422`), a `pushId` reused with another body (`422`, as the
//! idempotency-key draft says), an `expiresAt` already past (`422`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::{TestServer, push_ok, results, run_bounded};

/// The run CI makes; `ACCORD_SCHEMATHESIS_SEED` / `ACCORD_SCHEMATHESIS_EXAMPLES` make others.
const SEED: u32 = 1;
const EXAMPLES: u32 = 30;

fn setting(name: &str, default: u32) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}
const JWT_SECRET: &str = "schemathesis-secret";

/// The virtualenv's `schemathesis`, installed from the pinned requirements when missing.
fn schemathesis() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let bin = venv.join("bin/schemathesis");
    if bin.exists() {
        return bin;
    }
    let mut python = Command::new("python3");
    python.args(["-m", "venv"]).arg(&venv);
    let (ok, out) = run_bounded(python, Path::new("."), Duration::from_secs(120));
    assert!(ok, "python3 -m venv failed (Debian: apt-get install python3-venv):\n{out}");
    let requirements = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/schemathesis/requirements.txt");
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", "--disable-pip-version-check", "-r", requirements]);
    let (ok, out) = run_bounded(pip, Path::new("."), Duration::from_secs(600));
    assert!(ok, "pip install schemathesis failed:\n{out}");
    bin
}

fn config_toml(hash: &str, conflict: &str, jwt: &str) -> String {
    format!(
        r#"# Written by host/tests/it/schemathesis.rs.
# (Long polls end within sync.max_wait_secs, set to 1 for this run.)

# A cursor is opaque: a string the server did not issue is 400, or 410 if it names another database.
[[operations]]
include-path-regex = "^/api/sync/(pull|conflicts)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "410", "429"]

# The body must hash to the URL's SHA-256; a push may name only blobs its user uploaded.
[[operations]]
include-name = "PUT /api/blobs/{{sha256}}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

# A pushId reused with another body is 422 (draft-ietf-httpapi-idempotency-key-header).
[[operations]]
include-name = "POST /api/sync/push"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

# The body must be a policy component that loads (a schema says only "bytes").
[[operations]]
include-name = "POST /api/admin/policies/replay"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

# expiresAt must be in the future.
[[operations]]
include-name = "POST /api/api-keys"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

# Real data to reach past 404: a blob this user uploaded, a conflict it has.
[[operations]]
include-path = "/api/blobs/{{sha256}}"
include-method-regex = "^(GET|HEAD)$"
parameters = {{ sha256 = "{hash}" }}

[[operations]]
include-name = "POST /api/sync/conflicts/{{id}}/resolve"
parameters = {{ id = "{conflict}" }}

[[operations]]
include-name = "GET /api/sync/records/{{entity}}/{{id}}/history"
parameters = {{ entity = "topics", id = "t1" }}

# Revoking keys with a JWT (which holds keys:manage, not admin): it can revoke
# the keys the run creates, but not the admin key the rest of the run uses.
[[operations]]
include-name = "DELETE /api/api-keys/{{id}}"
headers = {{ Authorization = "Bearer {jwt}" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_with_every_check() {
    if crate::support::sqlite_only("the document and the checks do not depend on the store") {
        return;
    }
    let server = TestServer::start_with(|c| {
        // Failed authentications are part of the run (ignored_auth check).
        c.auth.failed_per_minute = 1_000_000;
        c.sync.max_wait_secs = 1;
        c.auth.jwt.secret = Some(JWT_SECRET.into());
    })
    .await;
    let key = server.cli_key("st", &["admin"]);
    let bytes = b"a picture".to_vec();
    let hash: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let r = server.client.put(server.url(&format!("/api/blobs/{hash}"))).bearer_auth(&key).body(bytes).send().await;
    assert_eq!(r.unwrap().status(), 201);
    let record = |v: i64, b: i64, t: &str| json!({"id": "t1", "version": v, "baseVersion": b, "data": {"title": t}});
    push_ok(&server, &key, &json!({"changes": {"topics": [record(1, 0, "a")]}})).await;
    push_ok(&server, &key, &json!({"changes": {"topics": [record(2, 1, "b")]}})).await;
    let r = push_ok(&server, &key, &json!({"changes": {"topics": [record(2, 1, "c")]}})).await;
    let conflict = results(&r, "topics")[0]["conflictId"].as_str().unwrap().to_string();
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let jwt = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "st", "exp": exp}),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("schemathesis.toml"), config_toml(&hash, &conflict, &jwt)).unwrap();
    let bin = schemathesis();
    let mut run = Command::new(bin);
    run.args(["--config-file", "schemathesis.toml", "run"])
        .arg(server.url("/api/openapi.json"))
        .args(["--checks", "all", "--seed", &setting("ACCORD_SCHEMATHESIS_SEED", SEED)])
        .args(["--max-examples", &setting("ACCORD_SCHEMATHESIS_EXAMPLES", EXAMPLES)])
        // Streams never end by themselves: sse.rs tests them.
        .args(["--exclude-path", "/api/sync/events", "--no-color"])
        .args(["-H", &format!("Authorization: Bearer {key}")]);
    let path = dir.path().to_path_buf();
    let (ok, out) =
        tokio::task::spawn_blocking(move || run_bounded(run, &path, Duration::from_secs(900))).await.unwrap();
    assert!(ok, "schemathesis found failures:\n{out}");
    eprintln!("{out}");
    server.stop().await;
}
