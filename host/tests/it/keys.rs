//! API keys: lifecycle, scopes, isolation, secrecy.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestServer, cli, expect_problem};

/// The one `detail` of a 401 about the credential itself.
pub const GENERIC_401: &str = "invalid or expired credentials";

fn now_ms() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

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
        for field in ["id", "name", "prefix", "scopes", "createdAt", "lastUsedAt", "revokedAt", "expiresAt"] {
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
    assert_eq!(p["detail"], GENERIC_401, "a 401 does not say the key was revoked");
    let keys = list(&server, &admin).await;
    let k = keys.iter().find(|k| k["id"] == phone_id.as_str()).unwrap();
    assert!(k["revokedAt"].is_i64());
    // Revoking twice is harmless.
    let r = server.delete(&format!("/api/api-keys/{phone_id}"), &admin).send().await.unwrap();
    assert_eq!(r.status(), 204);

    // The raw keys never reach the database file (or its WAL), nor on PostgreSQL a dump of the database.
    let (db, url) = (server.db_path(), server.config.database.url.clone());
    server.stop().await;
    if let Some(url) = url {
        let dump = crate::support::pg::cluster().dump(&url);
        assert!(dump.len() > 1000, "a dump with the schema");
        for raw in [&admin, &phone] {
            assert!(!dump.windows(raw.len()).any(|w| w == raw.as_bytes()), "raw key found in the database");
        }
    }
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
    let db = server.db_env();
    let env = [db.pair()];
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

#[tokio::test]
async fn a_401_never_tells_unknown_revoked_expired_or_malformed_keys_apart() {
    let server = TestServer::start().await;
    let admin = server.cli_key("ivy", &[]);
    let create = |body: Value| server.post("/api/api-keys", &admin, &body).send();
    let revoked: Value = create(json!({"name": "revoked"})).await.unwrap().json().await.unwrap();
    let r = server.delete(&format!("/api/api-keys/{}", revoked["id"].as_str().unwrap()), &admin).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let expiring: Value =
        create(json!({"name": "short", "expiresAt": now_ms() + 1500})).await.unwrap().json().await.unwrap();
    let short = expiring["key"].as_str().unwrap().to_string();
    assert_eq!(server.get("/api/sync/pull", &short).send().await.unwrap().status(), 200, "works until it expires");
    tokio::time::sleep(Duration::from_millis(2000)).await;

    let refused = [
        ("unknown", format!("ka_{}", "A".repeat(43))),
        ("revoked", revoked["key"].as_str().unwrap().to_string()),
        ("expired", short),
        ("too short", "ka_tooshort".to_string()),
        ("bad alphabet", format!("ka_{}", "+".repeat(43))),
    ];
    for (what, key) in refused {
        let p = expect_problem(server.get("/api/sync/pull", &key).send().await.unwrap(), 401).await;
        assert_eq!(p["detail"], GENERIC_401, "{what}: {p}");
        assert_eq!(p["type"], "https://accord.dev/problems/unauthorized");
    }
    // The expired key is listed with its expiry, like any other.
    let keys = list(&server, &admin).await;
    let k = keys.iter().find(|k| k["id"] == expiring["id"]).unwrap();
    assert_eq!(k["expiresAt"], expiring["expiresAt"]);
    assert!(k["revokedAt"].is_null());
}

#[tokio::test]
async fn keys_can_expire_over_http_and_from_the_cli() {
    let server = TestServer::start().await;
    let admin = server.cli_key("jon", &[]);
    let post = |body: Value| server.post("/api/api-keys", &admin, &body).send();
    // No expiry: null. A time in the past, or not an integer: 422.
    let forever: Value = post(json!({"name": "forever"})).await.unwrap().json().await.unwrap();
    assert!(forever["expiresAt"].is_null(), "{forever}");
    for bad in [json!(now_ms() - 1000), json!("tomorrow"), json!(1.5)] {
        let r = post(json!({"name": "x", "expiresAt": bad})).await.unwrap();
        expect_problem(r, 422).await;
    }
    let at = now_ms() + 3_600_000;
    let r = post(json!({"name": "hour", "expiresAt": at})).await.unwrap();
    assert_eq!(r.status(), 201);
    let hour: Value = r.json().await.unwrap();
    assert_eq!(hour["expiresAt"], at);
    assert_eq!(server.get("/api/sync/pull", hour["key"].as_str().unwrap()).send().await.unwrap().status(), 200);

    // The CLI takes a duration with s, m, h or d and shows the expiry in `keys list`.
    let db = server.db_env();
    let env = [db.pair()];
    let before = now_ms();
    let out = cli(&["keys", "create", "--user", "jon", "--name", "month", "--expires-in", "30d"], &env, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let month = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(String::from_utf8_lossy(&out.stderr).contains("expires at"));
    assert_eq!(server.get("/api/sync/pull", &month).send().await.unwrap().status(), 200);
    let keys = list(&server, &admin).await;
    let listed = keys.iter().find(|k| k["name"] == "month").unwrap();
    let expires = listed["expiresAt"].as_i64().unwrap();
    let thirty_days = 30 * 86_400_000;
    assert!(expires >= before + thirty_days && expires <= now_ms() + thirty_days, "{listed}");
    let out = cli(&["keys", "list", "--user", "jon"], &env, None);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("expires"), "{text}");
    assert!(text.contains(&expires.to_string()), "{text}");
    for bad in ["30", "30w", "-1d", "0h"] {
        let out = cli(&["keys", "create", "--user", "jon", "--name", "bad", "--expires-in", bad], &env, None);
        assert!(!out.status.success(), "--expires-in {bad} was accepted");
    }
}

#[tokio::test]
async fn a_key_revokes_and_creates_only_keys_within_its_own_scopes() {
    let server = TestServer::start().await;
    let admin = server.cli_key("kim", &["admin"]);
    let manager = server.cli_key("kim", &["keys:manage", "sync:read"]);
    let reader = server.cli_key("kim", &["sync:read"]);
    let keys = list(&server, &admin).await;
    let id_of =
        |scopes: Value| keys.iter().find(|k| k["scopes"] == scopes).unwrap()["id"].as_str().unwrap().to_string();
    let (admin_id, manager_id, reader_id) =
        (id_of(json!(["admin"])), id_of(json!(["keys:manage", "sync:read"])), id_of(json!(["sync:read"])));

    // The manager cannot revoke the admin key of its own user...
    let r = server.delete(&format!("/api/api-keys/{admin_id}"), &manager).send().await.unwrap();
    let p = expect_problem(r, 403).await;
    assert!(p["detail"].as_str().unwrap().contains("admin"), "{p}");
    assert_eq!(server.get("/api/admin/policies", &admin).send().await.unwrap().status(), 200, "admin key still works");
    // ...nor create one, nor one with a scope it lacks.
    for scopes in [json!(["admin"]), json!(["sync:write"])] {
        let r = server.post("/api/api-keys", &manager, &json!({"name": "n", "scopes": scopes})).send().await.unwrap();
        expect_problem(r, 403).await;
    }
    // It may revoke a key whose scopes it holds, and itself.
    let r = server.delete(&format!("/api/api-keys/{reader_id}"), &manager).send().await.unwrap();
    assert_eq!(r.status(), 204);
    expect_problem(server.get("/api/sync/pull", &reader).send().await.unwrap(), 401).await;
    let r = server.delete(&format!("/api/api-keys/{manager_id}"), &manager).send().await.unwrap();
    assert_eq!(r.status(), 204);
    // admin holds every scope: it revokes anything of its user.
    let spare = server.cli_key("kim", &["keys:manage", "sync:write"]);
    let spare_id =
        list(&server, &admin).await.into_iter().find(|k| k["scopes"] == json!(["keys:manage", "sync:write"]));
    let r = server.delete(&format!("/api/api-keys/{}", spare_id.unwrap()["id"].as_str().unwrap()), &admin).send().await;
    assert_eq!(r.unwrap().status(), 204);
    expect_problem(server.get("/api/api-keys", &spare).send().await.unwrap(), 401).await;
}

#[tokio::test]
async fn an_expiring_key_ends_its_event_stream() {
    let server = TestServer::start_with(|c| c.sync.heartbeat_secs = 1).await;
    let manager = server.cli_key("max", &[]);
    let body = json!({"name": "tab", "scopes": ["sync:read"], "expiresAt": now_ms() + 2000});
    let created: Value = server.post("/api/api-keys", &manager, &body).send().await.unwrap().json().await.unwrap();
    let key = created["key"].as_str().unwrap();
    let opened = Instant::now();
    let r = server.get("/api/sync/events", key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    assert!(crate::support::ends_within(&mut stream, 10).await, "the stream of an expired key kept running");
    assert!(opened.elapsed() >= Duration::from_millis(1500), "the stream ended before the key expired");
}

#[tokio::test]
async fn an_expiring_key_creates_only_keys_that_expire_no_later() {
    let server = TestServer::start().await;
    let admin = server.cli_key("ned", &[]);
    let own = now_ms() + 3_600_000;
    let body = json!({"name": "ci", "scopes": ["sync:read", "keys:manage"], "expiresAt": own});
    let ci: Value = server.post("/api/api-keys", &admin, &body).send().await.unwrap().json().await.unwrap();
    let ci = ci["key"].as_str().unwrap();
    // Own expiry is whole seconds for the comparison; stay a second inside it.
    let inside = own - 1000;
    for later in [json!(null), json!(own + 60_000)] {
        let r = server.post("/api/api-keys", ci, &json!({"name": "x", "scopes": ["sync:read"], "expiresAt": later}));
        expect_problem(r.send().await.unwrap(), 403).await;
    }
    let r = server.post("/api/api-keys", ci, &json!({"name": "ok", "scopes": ["sync:read"], "expiresAt": inside}));
    assert_eq!(r.send().await.unwrap().status(), 201);
}

#[tokio::test]
async fn keys_per_user_are_bounded() {
    let server = TestServer::start_with(|c| c.auth.max_keys_per_user = 3).await;
    let key = server.cli_key("alice", &[]);
    let create =
        |name: String| server.post("/api/api-keys", &key, &json!({"name": name, "scopes": ["sync:read"]})).send();
    // The CLI key is one of three; two more fit, the fourth is refused.
    let mut ids = Vec::new();
    for i in 0..2 {
        let r = create(format!("k{i}")).await.unwrap();
        assert_eq!(r.status(), 201);
        ids.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    let problem = expect_problem(create("k2".into()).await.unwrap(), 409).await;
    assert!(problem["detail"].as_str().unwrap().contains("auth.max_keys_per_user"), "{problem}");
    // Revoking frees a slot, but revoked keys count towards ten times the limit in all.
    let mut made = 3;
    for round in 0..40 {
        let id = ids.pop().unwrap();
        assert_eq!(server.delete(&format!("/api/api-keys/{id}"), &key).send().await.unwrap().status(), 204);
        let r = create(format!("r{round}")).await.unwrap();
        if r.status() == 409 {
            break;
        }
        assert_eq!(r.status(), 201);
        made += 1;
        ids.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    assert_eq!(made, 30, "thirty keys in all, revoked ones included");
    assert!(list(&server, &key).await.len() <= 30);
    // Another user has limits of their own.
    let bob = server.cli_key("bob", &[]);
    let r = server.post("/api/api-keys", &bob, &json!({"name": "b", "scopes": ["sync:read"]})).send().await.unwrap();
    assert_eq!(r.status(), 201);
}
