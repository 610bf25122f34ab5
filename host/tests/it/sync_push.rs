//! Push: the version rules, references, validation, atomicity, idempotency.

use serde_json::{Value, json};

use crate::support::{TestServer, expect_problem, pull, pull_all, push, push_ok, results};

fn rec(id: &str, version: i64, data: Value) -> Value {
    json!({"id": id, "version": version, "data": data})
}

fn based(id: &str, version: i64, base: i64, data: Value) -> Value {
    json!({"id": id, "version": version, "baseVersion": base, "data": data})
}

#[tokio::test]
async fn version_rule_outcomes_and_conflict_rows() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    let setup = json!({"changes": {
        "contexts": [rec("c1", 1, json!({"name": "home"}))],
        "topics": [rec("t1", 1, json!({"title": "a", "contextId": "c1"}))],
        "ratings": [rec("r1", 1, json!({"topicId": "t1", "stars": 3}))],
    }});
    let r = push_ok(&server, &key, &setup).await;
    for ty in ["contexts", "topics", "ratings"] {
        assert_eq!(results(&r, ty)[0]["status"], "applied", "{r}");
        assert_eq!(results(&r, ty)[0]["serverVersion"], 1);
    }
    assert!(r["cursor"].is_string());

    // ratings use version-wins: same record again is unchanged; higher version replaces.
    let r =
        push_ok(&server, &key, &json!({"changes": {"ratings": [rec("r1", 1, json!({"topicId": "t1", "stars": 3}))]}}))
            .await;
    assert_eq!(results(&r, "ratings")[0]["status"], "unchanged");
    let r =
        push_ok(&server, &key, &json!({"changes": {"ratings": [rec("r1", 5, json!({"topicId": "t1", "stars": 4}))]}}))
            .await;
    assert_eq!(results(&r, "ratings")[0]["status"], "applied");
    assert_eq!(results(&r, "ratings")[0]["serverVersion"], 5, "max(server+1, incoming)");
    // A lower or equal version with other data is a conflict; the server keeps its record.
    let r =
        push_ok(&server, &key, &json!({"changes": {"ratings": [rec("r1", 2, json!({"topicId": "t1", "stars": 1}))]}}))
            .await;
    let res = &results(&r, "ratings")[0];
    assert_eq!(res["status"], "conflict");
    assert_eq!(res["serverVersion"], 5);
    assert_eq!(res["record"]["data"]["stars"], 4);
    assert!(res["reason"].as_str().unwrap().contains("not newer"));
    let conflict_id = res["conflictId"].as_str().unwrap().to_string();

    // The conflict row keeps the incoming record and the server's record at the time.
    let list: Value = server.get("/api/sync/conflicts", &key).send().await.unwrap().json().await.unwrap();
    let conflicts = list["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!(c["id"], conflict_id.as_str());
    assert_eq!(c["entity"], "ratings");
    assert_eq!(c["recordId"], "r1");
    assert_eq!(c["incoming"]["data"]["stars"], 1);
    assert_eq!(c["incoming"]["version"], 2);
    assert_eq!(c["server"]["data"]["stars"], 4);
    assert_eq!(c["server"]["version"], 5);
    assert_eq!(c["status"], "open");
    assert!(c["createdAt"].is_i64() && c["resolvedAt"].is_null());

    // topics use compare-and-set: a change based on the server's version applies...
    let r = push_ok(
        &server,
        &key,
        &json!({"changes": {"topics": [based("t1", 2, 1, json!({"title": "b", "contextId": "c1"}))]}}),
    )
    .await;
    assert_eq!(results(&r, "topics")[0]["status"], "applied");
    assert_eq!(results(&r, "topics")[0]["serverVersion"], 2);
    // ...a second device's change based on the old version conflicts, even with a higher version.
    let r = push_ok(
        &server,
        &key,
        &json!({"changes": {"topics": [based("t1", 9, 1, json!({"title": "c", "contextId": "c1"}))]}}),
    )
    .await;
    assert_eq!(results(&r, "topics")[0]["status"], "conflict");
    // The stored version is the server's: max(server + 1, incoming).
    let r = push_ok(
        &server,
        &key,
        &json!({"changes": {"topics": [based("t1", 2, 2, json!({"title": "d", "contextId": "c1"}))]}}),
    )
    .await;
    assert_eq!(results(&r, "topics")[0]["serverVersion"], 3);

    // A dangling reference is rejected, naming the field; nothing is stored for it.
    let r = push_ok(&server, &key, &json!({"changes": {"ratings": [rec("r2", 1, json!({"topicId": "ghost"}))]}})).await;
    let res = &results(&r, "ratings")[0];
    assert_eq!(res["status"], "rejected");
    assert!(res["reason"].as_str().unwrap().contains("topicId"), "{res}");
    assert!(pull_all(&server, &key).await.iter().all(|(_, r)| r["id"] != "r2"));
}

#[tokio::test]
async fn references_are_applied_parents_first_whatever_the_json_order() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    // JSON order: children before parents.
    let body = json!({"changes": {
        "pageNotebooks": [rec("pn1", 1, json!({"pageId": "p1", "notebookId": "n1"}))],
        "pages": [rec("p1", 1, json!({"title": "page"}))],
        "notebooks": [rec("n1", 1, json!({"title": "nb"}))],
        "historyEntries": [rec("h1", 1, json!({"topicId": "t1"})), rec("h2", 1, json!({"topicId": "t9"}))],
        "topics": [rec("t1", 1, json!({"contextId": "c1"})), rec("t9", 1, json!({"contextId": "nowhere"})), rec("t2", 1, json!({"contextId": null}))],
        "contexts": [rec("c1", 1, json!({}))],
    }});
    let text = server.post("/api/sync/push", &key, &body).send().await.unwrap().text().await.unwrap();
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(results(&r, "pageNotebooks")[0]["status"], "applied", "{r}");
    assert_eq!(results(&r, "topics")[0]["status"], "applied");
    assert_eq!(results(&r, "topics")[2]["status"], "applied", "a null reference is not checked");
    let t9 = &results(&r, "topics")[1];
    assert_eq!(t9["status"], "rejected");
    assert!(t9["reason"].as_str().unwrap().contains("contextId"));
    assert_eq!(results(&r, "historyEntries")[0]["status"], "applied");
    // A record whose parent was rejected in the same push is rejected too, naming the parent.
    let h2 = &results(&r, "historyEntries")[1];
    assert_eq!(h2["status"], "rejected");
    assert!(h2["reason"].as_str().unwrap().contains("t9"), "{h2}");
    // The response lists types in dependency order.
    let pos = |t: &str| text.find(&format!("\"{t}\":[")).unwrap();
    assert!(pos("contexts") < pos("topics") && pos("topics") < pos("historyEntries"));
    assert_eq!(pull_all(&server, &key).await.len(), 7);

    // A tombstoned parent still counts.
    push_ok(
        &server,
        &key,
        &json!({"changes": {"contexts": [{"id": "c1", "version": 2, "baseVersion": 1, "deleted": true}]}}),
    )
    .await;
    let r = push_ok(&server, &key, &json!({"changes": {"topics": [rec("t3", 1, json!({"contextId": "c1"}))]}})).await;
    assert_eq!(results(&r, "topics")[0]["status"], "applied");
}

#[tokio::test]
async fn invalid_records_fail_the_whole_push() {
    let server = TestServer::start_with(|c| {
        c.sync.max_records_per_push = 600;
        c.sync.max_record_bytes = 2000;
        c.sync.max_json_depth = 8;
    })
    .await;
    let key = server.cli_key("alice", &[]);
    let mut pages: Vec<Value> = (0..500).map(|i| rec(&format!("p{i}"), 1, json!({"n": i}))).collect();
    pages[399] = json!({"id": "p399", "version": 0, "data": {}});
    let (status, body) = push(&server, &key, &json!({"changes": {"pages": pages.clone()}})).await;
    assert_eq!(status, 422);
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("pages[399]") && detail.contains("version"), "{detail}");
    assert!(pull_all(&server, &key).await.is_empty(), "nothing of a failed push is stored");

    let cases: Vec<(Value, &str)> = vec![
        (json!({"version": 1, "data": {}}), "id"),
        (json!({"id": "", "version": 1, "data": {}}), "id"),
        (json!({"id": "x".repeat(129), "version": 1, "data": {}}), "id"),
        (json!({"id": 5, "version": 1, "data": {}}), "id"),
        (json!({"id": "a", "version": -1, "data": {}}), "version"),
        (json!({"id": "a", "version": 1.5, "data": {}}), "version"),
        (json!({"id": "a", "version": "1", "data": {}}), "version"),
        (json!({"id": "a", "version": 1, "data": [1]}), "data"),
        (json!({"id": "a", "version": 1, "data": "text"}), "data"),
        (json!({"id": "a", "version": 1}), "data"),
        (json!({"id": "a", "version": 1, "data": {"big": "x".repeat(3000)}}), "data"),
        (json!({"id": "a", "version": 1, "data": {"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{}}}}}}}}}}), "data"),
        (json!({"id": "a", "version": 1, "baseVersion": "x", "data": {}}), "baseVersion"),
        (json!("not an object"), "object"),
    ];
    for (record, field) in cases {
        let (status, body) =
            push(&server, &key, &json!({"changes": {"pages": [rec("ok", 1, json!({})), record.clone()]}})).await;
        assert_eq!(status, 422, "{record}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("pages[1]") && detail.contains(field), "{record}: {detail}");
    }
    let dup = json!({"changes": {"pages": [rec("a", 1, json!({})), rec("a", 2, json!({}))]}});
    let (status, body) = push(&server, &key, &dup).await;
    assert_eq!(status, 422);
    assert!(body["detail"].as_str().unwrap().contains("twice"));
    let (status, _) = push(&server, &key, &json!({"changes": {"gadgets": [rec("a", 1, json!({}))]}})).await;
    assert_eq!(status, 422);
    let (status, _) = push(
        &server,
        &key,
        &json!({"changes": {"pages": pages.iter().chain(&pages[..101]).cloned().collect::<Vec<_>>()}}),
    )
    .await;
    assert_eq!(status, 413);
    let (status, _) = push(&server, &key, &json!({"pushId": "", "changes": {}})).await;
    assert_eq!(status, 422);
    let (status, _) = push(&server, &key, &json!({"changes": []})).await;
    assert_eq!(status, 422);
    // The same entity type twice in `changes` would silently lose one list: 422.
    let twice = r#"{"changes": {"pages": [{"id": "a", "version": 1, "data": {}}], "pages": [{"id": "b", "version": 1, "data": {}}]}}"#;
    let r = server
        .client
        .post(server.url("/api/sync/push"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(twice)
        .send()
        .await
        .unwrap();
    let p = expect_problem(r, 422).await;
    assert!(p["detail"].as_str().unwrap().contains("twice"), "{p}");
    // Versions beyond 2^53-1 are refused (clients could not represent them).
    let (status, _) = push(
        &server,
        &key,
        &json!({"changes": {"pages": [{"id": "big", "version": 9007199254740992_i64, "data": {}}]}}),
    )
    .await;
    assert_eq!(status, 422);
    let r = server
        .client
        .post(server.url("/api/sync/push"))
        .bearer_auth(&key)
        .body("{\"changes\": {")
        .send()
        .await
        .unwrap();
    expect_problem(r, 400).await;
    assert!(pull_all(&server, &key).await.is_empty());

    // A sync:read key cannot push.
    let reader = server.cli_key("alice", &["sync:read"]);
    let r = server.post("/api/sync/push", &reader, &json!({"changes": {}})).send().await.unwrap();
    expect_problem(r, 403).await;
}

#[tokio::test]
async fn push_ids_make_retries_safe() {
    let server = TestServer::start().await;
    let alice = server.cli_key("alice", &[]);
    let bob = server.cli_key("bob", &[]);
    let body = json!({"clientId": "laptop", "pushId": "push-1", "changes": {"pages": [rec("p1", 1, json!({"t": 1})), rec("p2", 1, json!({"t": 2}))]}});
    let first = server.post("/api/sync/push", &alice, &body).send().await.unwrap().text().await.unwrap();
    let second = server.post("/api/sync/push", &alice, &body).send().await.unwrap().text().await.unwrap();
    assert_eq!(first, second, "a retry gets the identical response");
    // A retry whose body is encoded differently (whitespace) is still the same push.
    let pretty = serde_json::to_string_pretty(&body).unwrap();
    let r = server
        .client
        .post(server.url("/api/sync/push"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body(pretty)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), first);
    let page = pull(&server, &alice, "").await;
    assert_eq!(page["changes"]["pages"].as_array().unwrap().len(), 2);
    let cursor_after = page["cursor"].clone();

    // Same pushId, different body: 422, nothing applied.
    let other = json!({"pushId": "push-1", "changes": {"pages": [rec("p3", 1, json!({}))]}});
    let (status, problem) = push(&server, &alice, &other).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(pull(&server, &alice, "").await["cursor"], cursor_after, "no new sequence numbers");

    // Another user's identical pushId is independent.
    let r = push_ok(&server, &bob, &body).await;
    assert_eq!(results(&r, "pages")[0]["status"], "applied");

    // Concurrent duplicates: one application, identical answers.
    let body = json!({"pushId": "push-2", "changes": {"pages": [rec("c1", 1, json!({"x": 1}))]}});
    let sends = (0..8).map(|_| server.post("/api/sync/push", &alice, &body).send());
    let responses = futures_util::future::join_all(sends).await;
    let mut texts = Vec::new();
    for r in responses {
        texts.push(r.unwrap().text().await.unwrap());
    }
    assert!(texts.windows(2).all(|w| w[0] == w[1]), "{texts:?}");
    let all = pull_all(&server, &alice).await;
    assert_eq!(all.iter().filter(|(_, r)| r["id"] == "c1").count(), 1);
    let conflicts: Value = server.get("/api/sync/conflicts", &alice).send().await.unwrap().json().await.unwrap();
    assert!(conflicts["conflicts"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn gzip_push_and_pull() {
    use std::io::Write as _;
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    let body = json!({"changes": {"pages": (0..50).map(|i| rec(&format!("g{i}"), 1, json!({"text": "lorem ipsum ".repeat(20)}))).collect::<Vec<_>>()}});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.to_string().as_bytes()).unwrap();
    let compressed = gz.finish().unwrap();
    let r = server
        .client
        .post(server.url("/api/sync/push"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let raw_client = reqwest::Client::builder().no_gzip().build().unwrap();
    let r = raw_client
        .get(server.url("/api/sync/pull"))
        .bearer_auth(&key)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"));
    let bytes = r.bytes().await.unwrap();
    let page: Value = serde_json::from_reader(flate2::read::GzDecoder::new(&bytes[..])).unwrap();
    // An encoding the server does not speak is a 415 problem, not a bare status.
    let r = server
        .client
        .post(server.url("/api/sync/push"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body("whatever")
        .send()
        .await
        .unwrap();
    expect_problem(r, 415).await;
    assert_eq!(page["changes"]["pages"].as_array().unwrap().len(), 50);
}
