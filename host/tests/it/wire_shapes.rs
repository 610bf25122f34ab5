//! Every body the server writes parses into its type in `accord::http::schema`
//! (unknown fields refused), the types the OpenAPI document is generated from:
//! the bytes `sync` splices by hand cannot drift from the document.

use accord::http::schema::{
    BlobStored, ConflictList, ConflictStatus, Health, Problem, PullResponse, PushResponse, RecordHistory, Resolved,
    Status,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{TestServer, push_ok};

async fn body<T: DeserializeOwned>(r: reqwest::Response, status: u16) -> T {
    assert_eq!(r.status(), status);
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn parse<T: DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
}

fn rec(id: &str, version: i64, base: i64, data: Value) -> Value {
    json!({"id": id, "version": version, "baseVersion": base, "data": data})
}

#[tokio::test]
async fn every_writer_output_parses_into_its_schema_type() {
    let server = TestServer::start().await;
    let key = server.cli_key("ana", &["admin"]);

    // applied, then unchanged, merged, conflict and rejected in one push.
    let first = json!({"changes": {
        "contexts": [rec("c1", 1, 0, json!({"name": "home"}))],
        "topics": [rec("t1", 1, 0, json!({"title": "a", "body": "b", "contextId": "c1"}))],
        "ratings": [rec("r1", 1, 0, json!({"topicId": "t1", "stars": 3}))],
    }});
    let r: PushResponse = parse(&push_ok(&server, &key, &first).await);
    assert!(r.results.values().flatten().all(|x| x.status == Status::Applied && x.server_version == Some(1)));
    push_ok(
        &server,
        &key,
        &json!({"changes": {"topics": [rec("t1", 2, 1, json!({"title": "A", "body": "b", "contextId": "c1"}))]}}),
    )
    .await;
    let mixed = json!({"pushId": "p-1", "clientId": "phone", "changes": {
        "ratings": [rec("r1", 1, 0, json!({"topicId": "t1", "stars": 3}))],
        "topics": [
            rec("t1", 2, 1, json!({"title": "a", "body": "B", "contextId": "c1"})),
        ],
        "historyEntries": [rec("h1", 1, 0, json!({"topicId": "nowhere"}))],
    }});
    let raw = push_ok(&server, &key, &mixed).await;
    let r: PushResponse = parse(&raw);
    let status = |ty: &str| &r.results[ty][0].status;
    assert_eq!(*status("ratings"), Status::Unchanged, "{raw}");
    assert_eq!(*status("topics"), Status::Merged, "{raw}");
    assert!(r.results["topics"][0].record.is_some());
    assert_eq!(*status("historyEntries"), Status::Rejected, "{raw}");
    assert!(r.results["historyEntries"][0].reason.is_some());
    // A replay is the stored answer, byte for byte: it parses the same.
    let again: PushResponse = parse(&push_ok(&server, &key, &mixed).await);
    assert_eq!(again.cursor, r.cursor);

    let clash =
        json!({"changes": {"topics": [rec("t1", 3, 1, json!({"title": "x", "body": "b", "contextId": "c1"}))]}});
    let raw = push_ok(&server, &key, &clash).await;
    let r: PushResponse = parse(&raw);
    let conflict = &r.results["topics"][0];
    assert_eq!(conflict.status, Status::Conflict, "{raw}");
    let conflict_id = conflict.conflict_id.clone().unwrap();
    assert!(conflict.record.is_some() && conflict.reason.is_some());

    // Pull, in pages too.
    let page: PullResponse = body(server.get("/api/sync/pull", &key).send().await.unwrap(), 200).await;
    assert!(!page.has_more && page.changes["topics"][0].version == 3);
    let page: PullResponse = body(server.get("/api/sync/pull?limit=1", &key).send().await.unwrap(), 200).await;
    assert!(page.has_more);

    // Conflicts, open and then resolved.
    let list: ConflictList = body(server.get("/api/sync/conflicts", &key).send().await.unwrap(), 200).await;
    assert_eq!(list.conflicts.len(), 1);
    assert_eq!(list.conflicts[0].status, ConflictStatus::Open);
    assert!(list.conflicts[0].server.is_some());
    let resolve = format!("/api/sync/conflicts/{conflict_id}/resolve");
    let r = server.post(&resolve, &key, &json!({"record": {"data": {"title": "y", "contextId": "c1"}}})).send().await;
    let resolved: Resolved = body(r.unwrap(), 200).await;
    assert_eq!(resolved.record.version, 4);
    let list: ConflictList = body(server.get("/api/sync/conflicts?status=all", &key).send().await.unwrap(), 200).await;
    assert_eq!(list.conflicts[0].status, ConflictStatus::Resolved);
    assert!(list.conflicts[0].resolved_at.is_some());
    assert_eq!(list.conflicts[0].decided_by.as_ref().map(|d| d.policy.as_str()), Some("field-merge"));

    // A record's history: the resolution (as sent), the merge (by field-merge), the first two.
    let r = server.get("/api/sync/records/topics/t1/history", &key).send().await.unwrap();
    let history: RecordHistory = body(r, 200).await;
    let versions: Vec<i64> = history.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, [4, 3, 2, 1]);
    assert!(history.versions[0].decided_by.is_none());
    assert_eq!(history.versions[1].decided_by.as_ref().map(|d| d.sha256.len()), Some(64));

    // Problems, from the sync core, the extractors and the fallbacks alike.
    let problem: Problem =
        body(server.post(&resolve, &key, &json!({"take": "server"})).send().await.unwrap(), 409).await;
    assert_eq!(problem.status, 409);
    let problem: Problem = body(server.get("/api/sync/pull?since=nope", &key).send().await.unwrap(), 400).await;
    assert!(problem.request_id.is_some());
    let _: Problem = body(server.get("/api/sync/pull", "ka_wrong").send().await.unwrap(), 401).await;
    let _: Problem = body(server.get("/nowhere", &key).send().await.unwrap(), 404).await;

    // Blobs, keys, policies, health.
    let bytes = b"a picture".to_vec();
    let hash: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let r = server.client.put(server.url(&format!("/api/blobs/{hash}"))).bearer_auth(&key).body(bytes).send().await;
    let stored: BlobStored = body(r.unwrap(), 201).await;
    assert_eq!((stored.sha256, stored.size), (hash, 9));
    let created: Value =
        body(server.post("/api/api-keys", &key, &json!({"name": "laptop"})).send().await.unwrap(), 201).await;
    assert!(created["key"].is_string());
    let _: Health = body(server.client.get(server.url("/readyz")).send().await.unwrap(), 200).await;
    let _: Health = body(server.client.get(server.url("/healthz")).send().await.unwrap(), 200).await;
    server.stop().await;
}
