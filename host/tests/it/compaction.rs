//! Tombstone compaction: old deletes are purged with their history, and a
//! cursor from before the purge gets 410 instead of missing the delete.

use serde_json::json;

use crate::support::{Backend, TestServer, backend, expect_problem, pg_query, pull, pull_all, push_ok, test_config};

#[tokio::test]
async fn old_tombstones_are_purged_and_older_cursors_resync() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.database.path = data.path().join("accord.db");
    if backend() == Backend::Postgres {
        config.database.url = Some(crate::support::pg::cluster().create_database());
    }
    let server = TestServer::start_in(dir, config.clone()).await;
    let key = server.cli_key("alice", &[]);
    let bob = server.cli_key("bob", &[]);
    let page = |id: &str, v: i64, deleted: bool| json!({"id": id, "version": v, "deleted": deleted, "data": {"t": id}});
    push_ok(&server, &key, &json!({"changes": {"pages": [page("keep", 1, false), page("gone", 1, false)]}})).await;
    push_ok(&server, &key, &json!({"changes": {"pages": [page("gone", 2, false)]}})).await;
    push_ok(&server, &bob, &json!({"changes": {"pages": [page("bobs", 1, false)]}})).await;
    let before_delete = pull(&server, &key, "").await["cursor"].as_str().unwrap().to_string();
    let r = push_ok(
        &server,
        &key,
        &json!({"changes": {"pages": [{"id": "gone", "version": 3, "baseVersion": 2, "deleted": true}]}}),
    )
    .await;
    let after_delete = r["cursor"].as_str().unwrap().to_string();
    // The tombstone is listed until it is compacted.
    assert_eq!(pull(&server, &key, &format!("?since={before_delete}")).await["changes"]["pages"][0]["deleted"], true);
    server.stop().await;

    // Age the tombstone past sync.tombstone_retention_days (90 by default), then restart:
    // the janitor runs at startup (and hourly).
    let age = "UPDATE records SET updated_at = 0 WHERE deleted = 1";
    match backend() {
        Backend::Sqlite => {
            rusqlite::Connection::open(&config.database.path).unwrap().execute_batch(age).unwrap();
        }
        Backend::Postgres => {
            pg_query(&config, age);
        }
    }
    let server = TestServer::start_in(tempfile::tempdir().unwrap(), config.clone()).await;
    let mut purged = false;
    for _ in 0..100 {
        let ids: Vec<String> =
            pull_all(&server, &key).await.into_iter().map(|(_, r)| r["id"].as_str().unwrap().to_string()).collect();
        if !ids.contains(&"gone".to_string()) {
            assert_eq!(ids, ["keep"]);
            purged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(purged, "the old tombstone was purged");
    // A cursor from before the purged delete resyncs; one from after it carries on.
    let r = server.get(&format!("/api/sync/pull?since={before_delete}"), &key).send().await.unwrap();
    let problem = expect_problem(r, 410).await;
    assert!(problem["detail"].as_str().unwrap().contains("tombstone_retention_days"), "{problem}");
    assert_eq!(pull(&server, &key, &format!("?since={after_delete}")).await["hasMore"], false);
    // Its history went with it, other users are untouched, and the id can be used again.
    let history = "SELECT count(*) FROM record_history WHERE id = 'gone'";
    let left = match backend() {
        Backend::Sqlite => rusqlite::Connection::open(&config.database.path)
            .unwrap()
            .query_row(history, [], |r| r.get::<_, i64>(0))
            .unwrap(),
        Backend::Postgres => pg_query(&config, history).trim().parse().unwrap(),
    };
    assert_eq!(left, 0);
    assert_eq!(pull_all(&server, &bob).await.len(), 1);
    let r = push_ok(&server, &key, &json!({"changes": {"pages": [page("gone", 1, false)]}})).await;
    assert_eq!(r["results"]["pages"][0]["status"], "applied");
}

#[tokio::test]
async fn a_clients_stale_edit_is_superseded_by_its_own_newer_version() {
    let server = TestServer::start_with(|c| c.quotas.open_conflicts = 1).await;
    let key = server.cli_key("alice", &[]);
    let push = |client: &str, v: i64, base: i64, t: &str| json!({"clientId": client, "changes": {"pages": [{"id": "p1", "version": v, "baseVersion": base, "data": {"t": t}}]}});
    push_ok(&server, &key, &push("phone", 1, 0, "first")).await;
    push_ok(&server, &key, &push("laptop", 2, 1, "laptop edit")).await;
    // The phone's stale edit conflicts…
    let r = push_ok(&server, &key, &push("phone", 2, 1, "phone edit")).await;
    assert_eq!(r["results"]["pages"][0]["status"], "conflict");
    let stale = r["results"]["pages"][0]["conflictId"].as_str().unwrap().to_string();
    // …then the phone pulls, edits the server's version, and that is accepted: its conflict is moot.
    let r = push_ok(&server, &key, &push("phone", 3, 2, "phone again")).await;
    assert_eq!(r["results"]["pages"][0]["status"], "applied");
    let open: serde_json::Value = server.get("/api/sync/conflicts", &key).send().await.unwrap().json().await.unwrap();
    assert!(open["conflicts"].as_array().unwrap().is_empty(), "{open}");
    let all: serde_json::Value =
        server.get("/api/sync/conflicts?status=all", &key).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["conflicts"][0]["id"], stale.as_str());
    assert_eq!(all["conflicts"][0]["status"], "superseded");
    assert!(all["conflicts"][0]["resolvedAt"].is_i64());
    // It no longer counts against quotas.open_conflicts (1): a new conflict fits…
    let r = push_ok(&server, &key, &push("laptop", 3, 2, "laptop stale")).await;
    assert_eq!(r["results"]["pages"][0]["status"], "conflict");
    // …and another client's accepted version leaves that one open.
    push_ok(&server, &key, &push("phone", 5, 3, "phone latest")).await;
    let open: serde_json::Value = server.get("/api/sync/conflicts", &key).send().await.unwrap().json().await.unwrap();
    assert_eq!(open["conflicts"].as_array().unwrap().len(), 1);
    // A superseded conflict cannot be resolved.
    let r = server
        .post(&format!("/api/sync/conflicts/{stale}/resolve"), &key, &json!({"take": "incoming"}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 409).await;
}
