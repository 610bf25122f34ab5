//! API keys: lifecycle, scopes, isolation, secrecy.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestServer, cli, expect_problem};

async fn list(server: &TestServer, key: &str) -> Vec<Value> {
    let r = server.get("/api/api-keys", key).send().await.expect("list");
    assert_eq!(r.status(), 200);
    r.json().await.expect("list body")
}

#[tokio::test]
async fn key_lifecycle_cli_and_http() {
    let server = TestServer::start().await;
    let admin = server.cli_key("alice", &[]);
    assert!(admin.starts_with("ka_") && admin.len() == 46, "{admin}");

    // Create over HTTP: 201, the raw key once, the documented fields.
    let r =
        server.post("/api/api-keys", &admin, &json!({"name": "phone", "scopes": ["sync:read"]})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let phone = created["key"].as_str().expect("key in body").to_string();
    assert!(phone.starts_with("ka_"));
    assert_eq!(created["name"], "phone");
    assert_eq!(created["scopes"], json!(["sync:read"]));
    assert!(created["createdAt"].is_i64());
    assert!(created["revokedAt"].is_null());
    let prefix = created["prefix"].as_str().unwrap();
    assert!(phone.starts_with(prefix) && prefix.len() < 16);

    // List: both keys, never a hash or a key.
    let keys = list(&server, &admin).await;
    assert_eq!(keys.len(), 2);
    for k in &keys {
        assert!(k.get("key").is_none() && k.get("hash").is_none(), "{k}");
        for field in ["id", "name", "prefix", "scopes", "createdAt", "lastUsedAt", "revokedAt"] {
            assert!(k.get(field).is_some(), "missing {field}: {k}");
        }
    }
    let listed = serde_json::to_string(&keys).unwrap();
    assert!(!listed.contains(&phone[3..]) && !listed.contains(&admin[3..]));

    // Use the phone key: its scope lets it read nothing key-related.
    let r = server.get("/api/api-keys", &phone).send().await.unwrap();
    expect_problem(r, 403).await;

    // lastUsedAt is written off the request path, within a couple of seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    let phone_id = created["id"].as_str().unwrap().to_string();
    loop {
        let keys = list(&server, &admin).await;
        let k = keys.iter().find(|k| k["id"] == phone_id.as_str()).unwrap();
        if k["lastUsedAt"].is_i64() {
            break;
        }
        assert!(Instant::now() < deadline, "lastUsedAt never set");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Revoke: 204, the key fails on the very next request, the row stays with revokedAt.
    let r = server.delete(&format!("/api/api-keys/{phone_id}"), &admin).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = server.get("/api/api-keys", &phone).send().await.unwrap();
    let p = expect_problem(r, 401).await;
    assert!(p["detail"].as_str().unwrap().contains("revoked"));
    let keys = list(&server, &admin).await;
    let k = keys.iter().find(|k| k["id"] == phone_id.as_str()).unwrap();
    assert!(k["revokedAt"].is_i64());
    // Revoking twice is harmless.
    let r = server.delete(&format!("/api/api-keys/{phone_id}"), &admin).send().await.unwrap();
    assert_eq!(r.status(), 204);

    // The raw keys never reach the database file (or its WAL).
    let db = server.db_path();
    server.stop().await;
    for path in [db.clone(), db.with_extension("db-wal")] {
        if let Ok(bytes) = std::fs::read(&path) {
            for raw in [&admin, &phone] {
                assert!(!bytes.windows(raw.len()).any(|w| w == raw.as_bytes()), "raw key found in {}", path.display());
            }
        }
    }
}

#[tokio::test]
async fn cli_lists_and_revokes() {
    let server = TestServer::start().await;
    let key = server.cli_key("carol", &["sync:read", "keys:manage"]);
    let db = server.db_path();
    let env = [("ACCORD_DATABASE__PATH", db.to_str().unwrap())];
    let out = cli(&["keys", "list", "--user", "carol"], &env, None);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("sync:read keys:manage"), "{text}");
    assert!(!text.contains(&key));
    let id = list(&server, &key).await[0]["id"].as_str().unwrap().to_string();
    let out = cli(&["keys", "revoke", &id], &env, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = server.get("/api/api-keys", &key).send().await.unwrap();
    expect_problem(r, 401).await;
    let out = cli(&["keys", "revoke", "no-such-key"], &env, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API key"));
}

#[tokio::test]
async fn users_are_isolated() {
    let server = TestServer::start().await;
    let alice = server.cli_key("alice", &[]);
    let bob = server.cli_key("bob", &[]);
    let alice_id = list(&server, &alice).await[0]["id"].as_str().unwrap().to_string();

    let bobs = list(&server, &bob).await;
    assert_eq!(bobs.len(), 1);
    assert_ne!(bobs[0]["id"], alice_id.as_str());

    let r = server.delete(&format!("/api/api-keys/{alice_id}"), &bob).send().await.unwrap();
    expect_problem(r, 404).await;
    // Alice's key still works.
    assert_eq!(list(&server, &alice).await.len(), 1);
}

#[tokio::test]
async fn scopes_are_enforced() {
    let server = TestServer::start().await;
    let manager = server.cli_key("dave", &["keys:manage", "sync:read"]);
    // Cannot grant what it does not hold.
    let r = server.post("/api/api-keys", &manager, &json!({"name": "x", "scopes": ["admin"]})).send().await.unwrap();
    expect_problem(r, 403).await;
    let r =
        server.post("/api/api-keys", &manager, &json!({"name": "x", "scopes": ["sync:write"]})).send().await.unwrap();
    expect_problem(r, 403).await;
    let r =
        server.post("/api/api-keys", &manager, &json!({"name": "x", "scopes": ["sync:read"]})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // Unknown scope names are invalid input.
    let r = server.post("/api/api-keys", &manager, &json!({"name": "x", "scopes": ["root"]})).send().await.unwrap();
    expect_problem(r, 422).await;
    // admin carries every scope.
    let admin = server.cli_key("dave", &["admin"]);
    let r = server.post("/api/api-keys", &admin, &json!({"name": "y", "scopes": ["admin"]})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(list(&server, &admin).await.len(), 4);
}

#[tokio::test]
async fn bad_credentials_get_401_with_challenge() {
    let server = TestServer::start().await;
    let _real = server.cli_key("erin", &[]);
    let unknown = format!("ka_{}", "A".repeat(43));
    let cases: Vec<Option<String>> = vec![
        None,
        Some("Bearer".into()),
        Some("Basic dXNlcjpwYXNz".into()),
        Some("Bearer ka_tooshort".into()),
        Some(format!("Bearer {unknown}")),
        Some("Bearer eyJhbGciOiJIUzI1NiJ9.e30.x".into()),
    ];
    for header in cases {
        let mut req = server.client.get(server.url("/api/api-keys"));
        if let Some(h) = &header {
            req = req.header("authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"), "{header:?}");
        expect_problem(r, 401).await;
    }
}
