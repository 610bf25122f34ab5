//! Bounded by design: per-user cursors, disk per byte received, quotas,
//! byte-capped conflict pages, the push body budget, a busy database.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestServer, expect_problem, pull, push, push_ok, results};

fn page(id: &str, version: i64, data: Value) -> Value {
    json!({"id": id, "version": version, "data": data})
}

/// The size of the database with its WAL, in bytes (on PostgreSQL, its `pg_database_size`).
fn db_bytes(server: &TestServer) -> u64 {
    if server.config.database.url.is_some() {
        return crate::support::pg_query(&server.config, "SELECT pg_database_size(current_database())")
            .parse()
            .unwrap();
    }
    let db = server.db_path();
    let wal = db.with_extension("db-wal");
    [db, wal].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

#[tokio::test]
async fn a_cursor_reveals_nothing_about_other_users() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.cli_key("alice", &[]), server.cli_key("bob", &[]));
    push_ok(&server, &bob, &json!({"changes": {"pages": [page("b1", 1, json!({}))]}})).await;
    let before = pull(&server, &bob, "").await["cursor"].as_str().unwrap().to_string();
    for i in 0..5 {
        push_ok(&server, &alice, &json!({"changes": {"pages": [page(&format!("a{i}"), 1, json!({}))]}})).await;
    }
    // Bob's cursor does not move with alice's writes, from the start or from his cursor.
    assert_eq!(pull(&server, &bob, "").await["cursor"], before.as_str());
    assert_eq!(pull(&server, &bob, &format!("?since={before}")).await["cursor"], before.as_str());
    // Alice's own sequence counts only her writes: her cursor is not bob's plus five.
    let mine = pull(&server, &alice, "").await["cursor"].as_str().unwrap().to_string();
    assert_ne!(mine, before);
    // And a change of bob's moves his cursor again.
    let r = push_ok(&server, &bob, &json!({"changes": {"pages": [page("b2", 1, json!({}))]}})).await;
    let after = pull(&server, &bob, &format!("?since={before}")).await;
    assert_eq!(after["changes"]["pages"][0]["id"], "b2");
    assert_eq!(after["cursor"], r["cursor"]);
}

#[tokio::test]
async fn conflicting_pushes_against_large_records_cost_little_disk() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    // Twenty records of ~1 MB each, incompressible.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> String {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'a' + (seed % 26) as u8)
            })
            .collect()
    };
    for i in 0..20 {
        let big = json!({"changes": {"pages": [page(&format!("p{i}"), 1, json!({"body": noise(1_000_000)}))]}});
        push_ok(&server, &key, &big).await;
    }
    let before = db_bytes(&server);
    // Ten small pushes, each conflicting with all twenty records, each with a pushId.
    let mut first = None;
    for n in 0..10 {
        let stale: Vec<Value> = (0..20).map(|i| page(&format!("p{i}"), 1, json!({"n": n}))).collect();
        let body = json!({"pushId": format!("conflicting-{n}"), "changes": {"pages": stale}});
        let raw = server.post("/api/sync/push", &key, &body).send().await.unwrap().text().await.unwrap();
        let parsed: Value = serde_json::from_str(&raw).unwrap();
        assert!(results(&parsed, "pages").iter().all(|r| r["status"] == "conflict"), "{}", &raw[..200]);
        assert!(raw.len() > 20_000_000, "the answer carries the server records");
        first.get_or_insert((body, raw));
    }
    let grown = db_bytes(&server).saturating_sub(before);
    assert!(grown < 5 * 1024 * 1024, "ten conflicting pushes grew the database by {grown} bytes");

    // A retried pushId still gets its answer byte for byte, server records included.
    let (body, raw) = first.unwrap();
    let again = server.post("/api/sync/push", &key, &body).send().await.unwrap().text().await.unwrap();
    assert!(again == raw, "replay differs from the first answer");

    // The conflicts list shows the server version each conflict met, even after the record moved on.
    let bump = json!({"changes": {"pages": [{"id": "p0", "version": 2, "baseVersion": 1, "data": {"body": "short"}}]}});
    assert_eq!(results(&push_ok(&server, &key, &bump).await, "pages")[0]["status"], "applied");
    let list: Value = server.get("/api/sync/conflicts?limit=1", &key).send().await.unwrap().json().await.unwrap();
    let c = &list["conflicts"][0];
    assert_eq!(c["recordId"], "p0");
    assert_eq!(c["server"]["version"], 1);
    assert_eq!(c["server"]["data"]["body"].as_str().unwrap().len(), 1_000_000);
    assert_eq!(c["incoming"]["data"]["n"], 0);
}

#[tokio::test]
async fn conflict_pages_are_byte_capped() {
    let server = TestServer::start_with(|c| c.sync.max_page_bytes = 64 * 1024).await;
    let key = server.cli_key("alice", &[]);
    let body = "x".repeat(40 * 1024);
    let records: Vec<Value> = (0..6).map(|i| page(&format!("p{i}"), 1, json!({"body": body}))).collect();
    push_ok(&server, &key, &json!({"changes": {"pages": records}})).await;
    let stale: Vec<Value> = (0..6).map(|i| page(&format!("p{i}"), 1, json!({"other": i}))).collect();
    push_ok(&server, &key, &json!({"changes": {"pages": stale}})).await;
    let (mut seen, mut after, mut pages) = (0, String::new(), 0);
    loop {
        let r = server.get(&format!("/api/sync/conflicts?limit=1000&after={after}"), &key).send().await.unwrap();
        let text = r.text().await.unwrap();
        assert!(text.len() < 3 * 64 * 1024, "a conflicts page of {} bytes", text.len());
        let list: Value = serde_json::from_str(&text).unwrap();
        seen += list["conflicts"].as_array().unwrap().len();
        pages += 1;
        if list["hasMore"] == false {
            break;
        }
        after = list["cursor"].as_str().unwrap().to_string();
        assert!(pages < 10);
    }
    assert_eq!(seen, 6);
    assert!(pages >= 3, "6 conflicts of 40 KiB server records need several 64 KiB pages, got {pages}");
}

#[tokio::test]
async fn quotas_refuse_a_push_whole_and_let_users_shrink() {
    let server = TestServer::start_with(|c| {
        c.quotas.records = 3;
        c.quotas.open_conflicts = 1;
    })
    .await;
    let key = server.cli_key("alice", &[]);
    let bob = server.cli_key("bob", &[]);
    let three: Vec<Value> = (0..3).map(|i| page(&format!("p{i}"), 1, json!({"n": i}))).collect();
    push_ok(&server, &key, &json!({"changes": {"pages": three}})).await;
    let cursor = pull(&server, &key, "").await["cursor"].clone();
    // A fourth record is over the quota: 507, and nothing of the push is written.
    let more = json!({"changes": {"pages": [
        {"id": "p0", "version": 2, "baseVersion": 1, "data": {"n": 10}},
        page("p3", 1, json!({})),
    ]}});
    let r = server.post("/api/sync/push", &key, &more).send().await.unwrap();
    let problem = expect_problem(r, 507).await;
    assert!(problem["detail"].as_str().unwrap().contains("quotas.records"), "{problem}");
    let after = pull(&server, &key, "").await;
    assert_eq!(after["cursor"], cursor, "nothing was written");
    // Other users have quotas of their own.
    push_ok(&server, &bob, &json!({"changes": {"pages": [page("b1", 1, json!({}))]}})).await;
    // Shrinking is always allowed: a tombstone does not add a record.
    let delete = json!({"changes": {"pages": [{"id": "p2", "version": 2, "baseVersion": 1, "deleted": true}]}});
    assert_eq!(results(&push_ok(&server, &key, &delete).await, "pages")[0]["status"], "applied");
    // One open conflict is allowed, the second is refused.
    let stale = |n: i64| json!({"changes": {"pages": [page("p1", 1, json!({"stale": n}))]}});
    assert_eq!(results(&push_ok(&server, &key, &stale(1)).await, "pages")[0]["status"], "conflict");
    let (status, problem) = push(&server, &key, &stale(2)).await;
    assert_eq!(status, 507, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("quotas.open_conflicts"));

    // The shipped defaults set every quota.
    let defaults = accord::config::Config::default().quotas;
    assert!(defaults.records > 0 && defaults.bytes > 0 && defaults.open_conflicts > 0);
}

#[tokio::test]
async fn a_resolution_is_validated_like_a_push() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    push_ok(&server, &key, &json!({"changes": {"contexts": [page("c1", 1, json!({"name": "home"}))]}})).await;
    let topic =
        |v: i64, ctx: Value| json!({"changes": {"topics": [page("t1", v, json!({"title": "x", "contextId": ctx}))]}});
    push_ok(&server, &key, &topic(1, json!("c1"))).await;
    // A push refuses a reference that is not a string id.
    let (status, _) = push(&server, &key, &topic(2, json!(123))).await;
    assert_eq!(status, 422);
    let r = push_ok(&server, &key, &json!({"changes": {"topics": [page("t1", 1, json!({"title": "other"}))]}})).await;
    let id = results(&r, "topics")[0]["conflictId"].as_str().unwrap().to_string();
    // So does a resolution, and it changes nothing.
    for data in [json!({"contextId": 123}), json!({"contextId": "nope"})] {
        let body = json!({"record": {"data": data}});
        let r = server.post(&format!("/api/sync/conflicts/{id}/resolve"), &key, &body).send().await.unwrap();
        expect_problem(r, 422).await;
    }
    let body = json!({"record": {"data": {"title": "fixed", "contextId": "c1"}}});
    let r = server.post(&format!("/api/sync/conflicts/{id}/resolve"), &key, &body).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_locked_database_is_busy_not_closed() {
    let server = TestServer::start_with(|c| c.database.busy_timeout_ms = 100).await;
    let key = server.cli_key("alice", &[]);
    push_ok(&server, &key, &json!({"changes": {"pages": [page("p1", 1, json!({}))]}})).await;
    // Another process holds the write lock: SQLite's one lock, or on PostgreSQL a
    // lock on `records` that lets plain reads through but no writer.
    enum Lock {
        Sqlite(rusqlite::Connection),
        Postgres(crate::support::pg::Session),
    }
    let lock = match &server.config.database.url {
        None => {
            let other = rusqlite::Connection::open(server.db_path()).unwrap();
            other.execute_batch("BEGIN IMMEDIATE").unwrap();
            Lock::Sqlite(other)
        }
        Some(url) => {
            let mut other = crate::support::pg::cluster().session(url);
            other.run("BEGIN; LOCK TABLE records IN EXCLUSIVE MODE;");
            Lock::Postgres(other)
        }
    };
    let r = server
        .post("/api/sync/push", &key, &json!({"changes": {"pages": [page("p2", 1, json!({}))]}}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("a push waits busy_timeout_ms for a lock, not until the lock is released");
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let problem = expect_problem(r, 503).await;
    assert!(problem["detail"].as_str().unwrap().contains("database busy"), "{problem}");
    match lock {
        Lock::Sqlite(other) => other.execute_batch("ROLLBACK").unwrap(),
        Lock::Postgres(mut other) => {
            other.run("ROLLBACK;");
        }
    }
    // Nothing of the refused push was written, and the server writes again.
    let all = pull(&server, &key, "").await;
    assert_eq!(all["changes"]["pages"].as_array().unwrap().len(), 1);
    push_ok(&server, &key, &json!({"changes": {"pages": [page("p2", 1, json!({}))]}})).await;
}

#[tokio::test]
async fn push_bodies_share_a_bounded_budget() {
    let server = TestServer::start_with(|c| {
        c.server.max_body_bytes = 64 * 1024;
        c.server.max_parsing_bytes = 128 * 1024;
    })
    .await;
    let key = server.cli_key("alice", &[]);
    // Three slow uploads of 60 KiB each, held open at once, need more than
    // the 128 KiB budget: at least one is refused while the others wait.
    let mut slow = Vec::new();
    for name in ["slow1", "slow2", "slow3"] {
        let (more, rest) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
        let head = format!(
            r#"{{"changes": {{"pages": [{{"id": "{name}", "version": 1, "data": {{"body": "{}"#,
            "x".repeat(60 * 1024)
        );
        more.send(Ok(head.into_bytes())).await.unwrap();
        let request = server
            .client
            .post(server.url("/api/sync/push"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream_from(rest)));
        let task = tokio::spawn(async move {
            let r = request.send().await.unwrap();
            let retry_after = r.headers().contains_key("retry-after");
            (r.status().as_u16(), retry_after, r.text().await.unwrap())
        });
        slow.push((name, more, task));
    }
    let mut refused = Vec::new();
    // (Generous: on a loaded machine the bodies take a while to arrive.)
    for _ in 0..1000 {
        if slow.iter().any(|(_, _, task)| task.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut waiting = Vec::new();
    for (name, more, task) in slow {
        if task.is_finished() {
            let (status, retry_after, body) = task.await.unwrap();
            assert_eq!(status, 503, "{body}");
            assert!(retry_after && body.contains("server.max_parsing_bytes"), "{body}");
            refused.push(name);
        } else {
            waiting.push((name, more, task));
        }
    }
    assert!(!refused.is_empty(), "three 60 KiB bodies at once fit a 128 KiB budget");
    // The others finish and are applied; the budget is free again.
    let mut applied = Vec::new();
    for (name, more, task) in waiting {
        // A second upload may have been refused after the first (the budget
        // counts buffer capacity): its body is no longer being read.
        let fed = more.send(Ok(br#""}}]}}"#.to_vec())).await;
        drop(more);
        let (status, retry_after, body) = task.await.unwrap();
        if fed.is_err() {
            assert_eq!(status, 503, "{body}");
            assert!(retry_after && body.contains("server.max_parsing_bytes"), "{body}");
            refused.push(name);
            continue;
        }
        assert_eq!(status, 200, "{body}");
        applied.push(name);
    }
    assert!(!applied.is_empty(), "one 60 KiB body fits a 128 KiB budget");
    let after = json!({"changes": {"pages": [page("after", 1, json!({"body": "y".repeat(60 * 1024)}))]}});
    push_ok(&server, &key, &after).await;
    let ids: Vec<String> = crate::support::pull_all(&server, &key)
        .await
        .into_iter()
        .map(|(_, r)| r["id"].as_str().unwrap().into())
        .collect();
    for id in applied.iter().chain(&["after"]) {
        assert!(ids.contains(&id.to_string()), "{ids:?}");
    }
    for id in refused {
        assert!(!ids.contains(&id.to_string()), "a refused push wrote nothing: {ids:?}");
    }
}

/// A stream of body chunks fed from a channel.
fn stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn inflated_bodies_are_refused_without_building_them() {
    use std::io::Write as _;
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    let gzip = |text: &str| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    };
    let zeros = |n: usize| vec!["0"; n].join(",");
    let n = 15 * 1024 * 1024;
    for (body, status, says) in [
        (format!(r#"{{"clientId": [{}], "changes": {{}}}}"#, zeros(n)), 422, "clientId"),
        (
            format!(r#"{{"changes": {{"pages": [{{"id": "a", "version": [{}], "data": {{}}}}]}}}}"#, zeros(n)),
            422,
            "version",
        ),
        (format!(r#"{{"changes": {{"pages": [{}]}}}}"#, vec!["{}"; 10_001].join(",")), 413, "max_records_per_push"),
    ] {
        let packed = gzip(&body);
        assert!(packed.len() < 64 * 1024, "a small upload: {} bytes", packed.len());
        let r = server
            .client
            .post(server.url("/api/sync/push"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(packed)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(r, status).await;
        assert!(problem["detail"].as_str().unwrap().contains(says), "{problem}");
    }
    assert!(pull(&server, &key, "").await["changes"].as_object().unwrap().is_empty());
}
