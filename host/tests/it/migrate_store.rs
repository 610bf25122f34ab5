//! `accord migrate-store`: a SQLite server's data, copied into PostgreSQL,
//! serves the same clients as if nothing had happened.

use std::path::Path;
use std::process::Command;

use reqwest::Client;
use serde_json::{Value, json};

use crate::support::{Served, cli, pg, postgres_only, spawn_serve};

fn rec(id: &str, version: i64, data: Value) -> Value {
    json!({"id": id, "version": version, "data": data})
}

fn serve(dir: &Path, db: (&str, &str)) -> Served {
    let cache = std::env::temp_dir().join("accord-test-policy-cache");
    spawn_serve(
        dir,
        &[("ACCORD_SERVER__BIND", "127.0.0.1:0"), db, ("ACCORD_POLICIES__CACHE_DIR", cache.to_str().unwrap())],
    )
}

fn key(db: (&str, &str), user: &str, name: &str, scopes: &[&str]) -> String {
    let mut args = vec!["keys", "create", "--user", user, "--name", name];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let out = cli(&args, &[db], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A client of one served host: requests return the status and the body as sent.
struct Api<'a> {
    host: &'a Served,
    client: Client,
}

impl Api<'_> {
    async fn get(&self, path: &str, key: &str) -> (u16, String) {
        let r = self.client.get(format!("http://{}{path}", self.host.addr)).bearer_auth(key).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn push(&self, key: &str, body: &Value) -> String {
        let r = self
            .client
            .post(format!("http://{}/api/sync/push", self.host.addr))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "push failed: {text}");
        text
    }

    /// One pull page of everything after `since` (the test's data fits one page).
    async fn pull(&self, key: &str, since: &str) -> String {
        let (status, text) = self.get(&format!("/api/sync/pull?since={since}&limit=1000"), key).await;
        assert_eq!(status, 200, "pull since {since:?}: {text}");
        let page: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(page["hasMore"], false);
        text
    }
}

fn cursor_of(page: &str) -> String {
    serde_json::from_str::<Value>(page).unwrap()["cursor"].as_str().unwrap().to_string()
}

fn stop(mut served: Served) {
    Command::new("kill").args(["-TERM", &served.child.id().to_string()]).status().unwrap();
    assert!(served.child.wait().unwrap().success(), "the server did not stop cleanly");
}

fn migrate_store(from: &Path, to: &str) -> std::process::Output {
    cli(&["migrate-store", "--from", from.to_str().unwrap(), "--to", to], &[], None)
}

#[tokio::test]
async fn a_sqlite_database_moves_to_postgres_and_clients_carry_on() {
    if postgres_only("migrate-store copies into PostgreSQL") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source.db");
    let lite = ("ACCORD_DATABASE__PATH", file.to_str().unwrap());
    let alice = key(lite, "alice", "laptop", &[]);
    let phone = key(lite, "alice", "phone", &["sync:read"]);
    let old = key(lite, "alice", "old", &[]);
    let bob = key(lite, "bob", "desk", &[]);

    // Data on SQLite: several types, history, a tombstone, a conflict, pushIds, a revoked key.
    let served = serve(dir.path(), lite);
    let api = Api { host: &served, client: Client::new() };
    api.push(
        &alice,
        &json!({"changes": {
            "contexts": [rec("c1", 1, json!({"name": "home"}))],
            "topics": [rec("t1", 1, json!({"title": "a", "contextId": "c1"}))],
            "ratings": [rec("r1", 5, json!({"topicId": "t1", "stars": 4}))],
            "historyEntries": [rec("h1", 1, json!({"topicId": "t1"}))],
            "pages": [rec("p1", 1, json!({"text": "one"})), rec("p2", 1, json!({"text": "two"}))],
        }}),
    )
    .await;
    api.push(
        &alice,
        &json!({"changes": {
            "topics": [{"id": "t1", "version": 2, "baseVersion": 1, "data": {"title": "b", "contextId": "c1"}}],
            "pages": [{"id": "p2", "version": 2, "baseVersion": 1, "deleted": true}],
        }}),
    )
    .await;
    let conflict_push = json!({"pushId": "with-conflict", "changes": {
        "ratings": [rec("r1", 2, json!({"topicId": "t1", "stars": 1}))],
        "pages": [rec("p3", 1, json!({"text": "three"}))],
    }});
    let conflict_answer = api.push(&alice, &conflict_push).await;
    assert!(conflict_answer.contains("\"conflict\""), "{conflict_answer}");
    api.push(&bob, &json!({"pushId": "bob-1", "changes": {"pages": [rec("b1", 1, json!({}))]}})).await;
    let keys: Value = serde_json::from_str(&api.get("/api/api-keys", &alice).await.1).unwrap();
    let old_id =
        keys.as_array().unwrap().iter().find(|k| k["name"] == "old").unwrap()["id"].as_str().unwrap().to_string();
    let r = api.client.delete(format!("http://{}/api/api-keys/{old_id}", served.addr)).bearer_auth(&alice).send();
    assert_eq!(r.await.unwrap().status(), 204);

    // A client's cursor, then changes after it.
    let mid = cursor_of(&api.pull(&alice, "").await);
    api.push(
        &alice,
        &json!({"changes": {
            "pages": [rec("p4", 1, json!({"text": "four"}))],
            "topics": [{"id": "t1", "version": 3, "baseVersion": 2, "data": {"title": "c", "contextId": "c1"}}],
        }}),
    )
    .await;
    let after_mid = api.pull(&alice, &mid).await;
    let full = api.pull(&alice, "").await;
    let bob_full = api.pull(&bob, "").await;
    let (status, conflicts) = api.get("/api/sync/conflicts", &alice).await;
    assert_eq!(status, 200);
    stop(served);

    // Copy into a fresh PostgreSQL database.
    let cluster = pg::cluster();
    let target = cluster.create_database();
    let out = migrate_store(&file, &target);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "migrate-store failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    for (table, rows) in
        [("users", 2), ("api_keys", 4), ("records", 9), ("conflicts", 1), ("push_log", 2), ("user_state", 2)]
    {
        let line =
            stdout.lines().find(|l| l.split_whitespace().next() == Some(table)).unwrap_or_else(|| panic!("{stdout}"));
        assert_eq!(line.split_whitespace().nth(1), Some(rows.to_string().as_str()), "{table}: {stdout}");
    }
    let history: i64 = cluster.psql(&target, "SELECT count(*) FROM record_history").parse().unwrap();
    assert!(history >= 2, "record history was not copied ({history} rows)");

    // Served from PostgreSQL: the same keys, cursors, conflicts and pushIds.
    let served = serve(dir.path(), ("ACCORD_DATABASE__URL", &target));
    let api = Api { host: &served, client: Client::new() };
    assert_eq!(api.get("/api/sync/pull", &phone).await.0, 200, "a read-only key authenticates");
    assert_eq!(api.get("/api/sync/pull", &old).await.0, 401, "the revoked key stays revoked");
    assert_eq!(api.pull(&alice, &mid).await, after_mid, "a cursor from SQLite continues, nothing skipped");
    assert_eq!(api.pull(&alice, "").await, full);
    assert_eq!(api.pull(&bob, "").await, bob_full);
    assert_eq!(api.get("/api/sync/conflicts", &alice).await, (200, conflicts.clone()));
    let listed: Value = serde_json::from_str(&conflicts).unwrap();
    assert_eq!(listed["conflicts"][0]["server"]["version"], 5, "the conflict lists its server version: {listed}");
    assert_eq!(api.push(&alice, &conflict_push).await, conflict_answer, "the pushId replays byte for byte");

    // New writes continue the sequences: a new conflict lists after the old one, a new change after the cursor.
    let last = cursor_of(&full);
    let answer =
        api.push(&alice, &json!({"changes": {"ratings": [rec("r1", 3, json!({"topicId": "t1", "stars": 2}))]}})).await;
    assert!(answer.contains("\"conflict\""), "{answer}");
    let listed: Value = serde_json::from_str(&api.get("/api/sync/conflicts", &alice).await.1).unwrap();
    let listed = listed["conflicts"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["incoming"]["version"], 2);
    assert_eq!(listed[1]["incoming"]["version"], 3);
    api.push(&alice, &json!({"changes": {"pages": [rec("p5", 1, json!({}))]}})).await;
    let page: Value = serde_json::from_str(&api.pull(&alice, &last).await).unwrap();
    assert_eq!(page["changes"]["pages"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["changes"]["pages"][0]["id"], "p5");
    drop(served);

    // A second copy into the same (no longer empty) database is refused and changes nothing.
    let before = cluster.psql(&target, "SELECT count(*) FROM records");
    let out = migrate_store(&file, &target);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second migrate-store into the same database succeeded");
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(cluster.psql(&target, "SELECT count(*) FROM records"), before);
}

#[test]
fn migrate_store_refuses_a_source_it_cannot_copy_faithfully() {
    if postgres_only("migrate-store copies into PostgreSQL") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = pg::cluster();
    let target = cluster.create_database();

    // No such file: nothing is created.
    let missing = dir.path().join("missing.db");
    let out = migrate_store(&missing, &target);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such SQLite database"));
    assert!(!missing.exists());

    // A database from a newer Accord is refused before anything is written.
    let future = dir.path().join("future.db");
    let out = cli(&["migrate"], &[("ACCORD_DATABASE__PATH", future.to_str().unwrap())], None);
    assert!(out.status.success());
    let latest = i64::from(accord::store::latest_version());
    rusqlite::Connection::open(&future).unwrap().pragma_update(None, "user_version", latest + 1).unwrap();
    let out = migrate_store(&future, &target);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("newer"), "{stderr}");

    // Not a PostgreSQL URL: a usage error.
    let out = migrate_store(&future, "mysql://nope");
    assert_eq!(out.status.code(), Some(2));
}
