//! Pull paging and cursors, conflicts resolution, isolation, live notices.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::support::{TestServer, expect_problem, pull, pull_all, push_ok, results};

fn pages(range: std::ops::Range<usize>) -> Value {
    json!({"changes": {"pages": range.map(|i| json!({"id": format!("p{i}"), "version": 1, "data": {"n": i}})).collect::<Vec<_>>()}})
}

#[tokio::test]
async fn paging_types_tombstones_and_bad_cursors() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    push_ok(&server, &key, &pages(0..25)).await;
    push_ok(&server, &key, &json!({"changes": {"notebooks": [{"id": "n1", "version": 1, "data": {}}]}})).await;

    // Three pages of 10, 10 and 6, in sequence order, no duplicates.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let page = pull(&server, &key, &format!("?limit=10&since={cursor}")).await;
        let mut n = 0;
        for records in page["changes"].as_object().unwrap().values() {
            for r in records.as_array().unwrap() {
                seen.push(r["id"].as_str().unwrap().to_string());
                n += 1;
            }
        }
        sizes.push(n);
        cursor = page["cursor"].as_str().unwrap().to_string();
        assert_eq!(page["hasMore"], sizes.len() < 3, "{page}");
    }
    assert_eq!(sizes, vec![10, 10, 6]);
    let mut expected: Vec<String> = (0..25).map(|i| format!("p{i}")).chain(["n1".to_string()]).collect();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected, "every record exactly once");
    // From the last cursor: nothing new.
    let page = pull(&server, &key, &format!("?since={cursor}")).await;
    assert!(page["changes"].as_object().unwrap().is_empty());
    assert_eq!(page["hasMore"], false);

    // The types filter.
    let page = pull(&server, &key, "?types=notebooks").await;
    assert_eq!(page["changes"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["notebooks"]);
    let r = server.get("/api/sync/pull?types=gadgets", &key).send().await.unwrap();
    expect_problem(r, 422).await;

    // A delete propagates as a tombstone.
    push_ok(
        &server,
        &key,
        &json!({"changes": {"pages": [{"id": "p3", "version": 2, "baseVersion": 1, "deleted": true}]}}),
    )
    .await;
    let page = pull(&server, &key, &format!("?since={cursor}")).await;
    let changed = page["changes"]["pages"].as_array().unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["id"], "p3");
    assert_eq!(changed[0]["deleted"], true);
    assert_eq!(changed[0]["version"], 2);
    assert!(changed[0]["updatedAt"].is_i64());

    // Malformed cursor: 400. Another database's cursor: 410.
    for bad in ["?since=garbage", "?since=bm9wZQ", "?limit=abc", "?limit=0"] {
        let r = server.get(&format!("/api/sync/pull{bad}"), &key).send().await.unwrap();
        expect_problem(r, 400).await;
    }
    let other = TestServer::start().await;
    let other_key = other.cli_key("alice", &[]);
    push_ok(&other, &other_key, &pages(0..1)).await;
    let foreign = pull(&other, &other_key, "").await["cursor"].as_str().unwrap().to_string();
    let r = server.get(&format!("/api/sync/pull?since={foreign}"), &key).send().await.unwrap();
    let p = expect_problem(r, 410).await;
    assert!(p["detail"].as_str().unwrap().contains("beginning"));
}

#[tokio::test]
async fn page_byte_cap() {
    let server = TestServer::start_with(|c| c.sync.max_page_bytes = 5_000).await;
    let key = server.cli_key("alice", &[]);
    let big = json!({"changes": {"pages": (0..10).map(|i| json!({"id": format!("b{i}"), "version": 1, "data": {"blob": "x".repeat(1000)}})).collect::<Vec<_>>()}});
    push_ok(&server, &key, &big).await;
    let page = pull(&server, &key, "?limit=1000").await;
    let n = page["changes"]["pages"].as_array().unwrap().len();
    assert!((1..10).contains(&n), "a page stops near max_page_bytes, got {n}");
    assert_eq!(page["hasMore"], true);
    assert_eq!(pull_all(&server, &key).await.len(), 10);
}

#[tokio::test]
async fn conflicts_resolve_as_new_versions() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    let bob = server.cli_key("bob", &[]);
    push_ok(&server, &key, &json!({"changes": {"pages": [{"id": "p1", "version": 1, "data": {"t": "server"}}]}})).await;
    let stale =
        |t: &str| json!({"changes": {"pages": [{"id": "p1", "version": 2, "baseVersion": 0, "data": {"t": t}}]}});
    let r = push_ok(&server, &key, &stale("mine")).await;
    let first = results(&r, "pages")[0]["conflictId"].as_str().unwrap().to_string();
    let r = push_ok(&server, &key, &stale("other")).await;
    let second = results(&r, "pages")[0]["conflictId"].as_str().unwrap().to_string();
    let cursor = pull(&server, &key, "").await["cursor"].as_str().unwrap().to_string();

    // Another user's conflict id is not found, for listing and resolving.
    let r = server
        .post(&format!("/api/sync/conflicts/{first}/resolve"), &bob, &json!({"take": "incoming"}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 404).await;
    let list: Value = server.get("/api/sync/conflicts", &bob).send().await.unwrap().json().await.unwrap();
    assert!(list["conflicts"].as_array().unwrap().is_empty());

    // Bad resolutions are 422 and change nothing.
    for body in [
        json!({}),
        json!({"take": "both"}),
        json!({"take": "server", "record": {"data": {}}}),
        json!({"record": {"data": [1]}}),
    ] {
        let r = server.post(&format!("/api/sync/conflicts/{first}/resolve"), &key, &body).send().await.unwrap();
        expect_problem(r, 422).await;
    }

    // take incoming: a new version with the incoming data, visible to pull.
    let r = server
        .post(&format!("/api/sync/conflicts/{first}/resolve"), &key, &json!({"take": "incoming"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resolved: Value = r.json().await.unwrap();
    assert_eq!(resolved["record"]["data"]["t"], "mine");
    assert_eq!(resolved["record"]["version"], 2);
    let page = pull(&server, &key, &format!("?since={cursor}")).await;
    assert_eq!(page["changes"]["pages"][0]["data"]["t"], "mine");
    // Resolving twice is a 409.
    let r = server
        .post(&format!("/api/sync/conflicts/{first}/resolve"), &key, &json!({"take": "server"}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 409).await;

    // A hand-merged record.
    let r = server
        .post(&format!("/api/sync/conflicts/{second}/resolve"), &key, &json!({"record": {"data": {"t": "merged"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let all = pull_all(&server, &key).await;
    assert_eq!(all[0].1["data"]["t"], "merged");
    assert_eq!(all[0].1["version"], 3);

    let open: Value = server.get("/api/sync/conflicts?status=open", &key).send().await.unwrap().json().await.unwrap();
    assert!(open["conflicts"].as_array().unwrap().is_empty());
    let done: Value = server
        .get("/api/sync/conflicts?status=resolved&entity=pages", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let done = done["conflicts"].as_array().unwrap();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|c| c["resolvedAt"].is_i64() && c["status"] == "resolved"));
    let r = server.get("/api/sync/conflicts?status=maybe", &key).send().await.unwrap();
    expect_problem(r, 422).await;
    // The documented minimum page size is 1; larger than the maximum is capped.
    let r = server.get("/api/sync/conflicts?limit=0", &key).send().await.unwrap();
    expect_problem(r, 400).await;
    let r = server.get("/api/sync/conflicts?status=all&limit=5000", &key).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn conflict_listing_pages() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    push_ok(&server, &key, &pages(0..5)).await;
    let stale = json!({"changes": {"pages": (0..5).map(|i| json!({"id": format!("p{i}"), "version": 1, "data": {"other": true}})).collect::<Vec<_>>()}});
    // pages use compare-and-set: each record of the second push conflicts.
    push_ok(&server, &key, &stale).await;
    let first: Value = server.get("/api/sync/conflicts?limit=3", &key).send().await.unwrap().json().await.unwrap();
    assert_eq!(first["conflicts"].as_array().unwrap().len(), 3);
    assert_eq!(first["hasMore"], true);
    let after = first["cursor"].as_str().unwrap();
    let second: Value = server
        .get(&format!("/api/sync/conflicts?limit=3&after={after}"), &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["conflicts"].as_array().unwrap().len(), 2);
    assert_eq!(second["hasMore"], false);
}

#[tokio::test]
async fn users_never_see_each_other() {
    let server = TestServer::start().await;
    let alice = server.cli_key("alice", &[]);
    let bob = server.cli_key("bob", &[]);
    let same = |who: &str| json!({"changes": {"pages": [{"id": "shared-id", "version": 1, "data": {"owner": who}}]}});
    let r = push_ok(&server, &alice, &same("alice")).await;
    assert_eq!(results(&r, "pages")[0]["status"], "applied");
    let r = push_ok(&server, &bob, &same("bob")).await;
    assert_eq!(results(&r, "pages")[0]["status"], "applied", "same ids, separate records");
    let a = pull_all(&server, &alice).await;
    let b = pull_all(&server, &bob).await;
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    assert_eq!(a[0].1["data"]["owner"], "alice");
    assert_eq!(b[0].1["data"]["owner"], "bob");
    // A reference to another user's record does not count.
    push_ok(&server, &alice, &json!({"changes": {"contexts": [{"id": "ctx", "version": 1, "data": {}}]}})).await;
    let r = push_ok(
        &server,
        &bob,
        &json!({"changes": {"topics": [{"id": "t", "version": 1, "data": {"contextId": "ctx"}}]}}),
    )
    .await;
    assert_eq!(results(&r, "topics")[0]["status"], "rejected");
}

/// Reads SSE frames from a response until one names `event`, or the timeout passes.
/// Every frame read is appended to `log`.
pub(crate) async fn next_event(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
    log: &mut String,
    event: &str,
    timeout: Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            log.push_str(&frame);
            if frame.contains(&format!("event: {event}")) {
                return Some(frame);
            }
            continue;
        }
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            _ => return None,
        }
    }
}

#[tokio::test]
async fn events_wake_only_the_owner() {
    let server = TestServer::start_with(|c| c.sync.heartbeat_secs = 1).await;
    let alice = server.cli_key("alice", &[]);
    let bob = server.cli_key("bob", &[]);
    let open = |key: &str| server.get("/api/sync/events", key).send();
    let a = open(&alice).await.unwrap();
    let b = open(&bob).await.unwrap();
    assert_eq!(a.status(), 200);
    assert_eq!(a.headers().get("content-type").unwrap(), "text/event-stream");
    let mut a = a.bytes_stream();
    let mut b = b.bytes_stream();
    let (mut abuf, mut bbuf, mut alog, mut blog) = (String::new(), String::new(), String::new(), String::new());

    let r = push_ok(&server, &alice, &pages(0..2)).await;
    let frame = next_event(&mut a, &mut abuf, &mut alog, "change", Duration::from_secs(1))
        .await
        .expect("alice woken within 1 s");
    let data: Value = serde_json::from_str(frame.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(data["cursor"], r["cursor"]);
    // The cursor in the event is usable for pull.
    assert_eq!(pull(&server, &alice, &format!("?since={}", data["cursor"].as_str().unwrap())).await["hasMore"], false);
    assert!(
        next_event(&mut b, &mut bbuf, &mut blog, "change", Duration::from_millis(1500)).await.is_none(),
        "bob is never woken by alice"
    );
    // Heartbeats keep idle streams alive.
    assert!(blog.contains(":heartbeat") || blog.contains(": heartbeat"), "{blog:?}");

    let r = server.client.get(server.url("/api/sync/events")).send().await.unwrap();
    expect_problem(r, 401).await;
}

#[tokio::test]
async fn long_poll_answers_when_a_change_arrives() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    let other = server.cli_key("bob", &[]);
    let cursor = pull(&server, &key, "").await["cursor"].as_str().unwrap().to_string();
    let waiting = server.get(&format!("/api/sync/pull?since={cursor}&wait=10"), &key).send();
    let pusher = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        push_ok(&server, &other, &pages(0..1)).await; // another user's change does not answer it
        tokio::time::sleep(Duration::from_millis(300)).await;
        push_ok(&server, &key, &pages(5..6)).await;
    };
    let (response, ()) = tokio::join!(waiting, pusher);
    let page: Value = response.unwrap().json().await.unwrap();
    assert_eq!(page["changes"]["pages"][0]["id"], "p5");
    // With nothing arriving, wait ends with an empty page.
    let cursor = page["cursor"].as_str().unwrap();
    let page = pull(&server, &key, &format!("?since={cursor}&wait=1")).await;
    assert!(page["changes"].as_object().unwrap().is_empty());
}

#[tokio::test]
async fn event_streams_end_on_shutdown() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    let mut stream = server.get("/api/sync/events", &key).send().await.unwrap().bytes_stream();
    let stopping = tokio::spawn(server.stop());
    assert!(crate::support::ends_within(&mut stream, 10).await, "the event stream did not end on shutdown");
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("server stopped").unwrap();
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    push_ok(&server, &key, &pages(0..3)).await;
    let stale = json!({"changes": {"pages": [{"id": "p0", "version": 1, "data": {"other": true}}]}});
    push_ok(&server, &key, &stale).await;
    pull(&server, &key, "").await;
    let r = server.client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for line in [
        "accord_pushes_total 2",
        "accord_push_records_total{status=\"applied\"} 3",
        "accord_push_records_total{status=\"conflict\"} 1",
        "accord_pulls_total 1",
        "accord_pulled_records_total 3",
        "accord_policy_calls_total{entity=\"pages\",policy=\"field-merge\"} 4",
        "accord_policy_failures_total{entity=\"pages\",policy=\"field-merge\"} 0",
        // Histograms: request durations by route, push sizes, policy calls.
        "accord_http_request_duration_seconds_count{route=\"/api/sync/push\"} 2",
        "accord_http_request_duration_seconds_count{route=\"/api/sync/pull\"} 1",
        "accord_http_request_duration_seconds_bucket{route=\"/api/sync/pull\",le=\"+Inf\"} 1",
        "accord_http_request_duration_seconds_count{route=\"other\"} 1",
        "accord_push_records_count 2",
        "accord_push_records_sum 4",
        "accord_push_records_bucket{le=\"1\"} 1",
        "accord_push_records_bucket{le=\"10\"} 2",
        "accord_policy_call_duration_seconds_count 4",
        "accord_event_streams 0",
        "accord_long_polls 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    let gauge = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|n| n.parse().ok())
    };
    assert!(gauge("accord_database_bytes").is_some_and(|n| n > 0), "{text}");
    if crate::support::backend() == crate::support::Backend::Sqlite {
        assert!(gauge("accord_database_wal_bytes").is_some(), "{text}");
    }
    let not_found: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("accord_http_responses_total{class=\"4xx\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(not_found >= 1);
}

#[tokio::test]
async fn a_revoked_key_ends_its_event_stream_and_shutdown_ends_long_polls() {
    let server = TestServer::start_with(|c| c.sync.heartbeat_secs = 1).await;
    let manager = server.cli_key("alice", &[]);
    let r =
        server.post("/api/api-keys", &manager, &json!({"name": "tab", "scopes": ["sync:read"]})).send().await.unwrap();
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let mut stream = server.get("/api/sync/events", &key).send().await.unwrap().bytes_stream();
    let r =
        server.delete(&format!("/api/api-keys/{}", created["id"].as_str().unwrap()), &manager).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(crate::support::ends_within(&mut stream, 10).await, "the stream of a revoked key kept running");

    // A long poll answers (empty) as soon as shutdown begins, not after `wait`.
    let cursor = pull(&server, &manager, "").await["cursor"].as_str().unwrap().to_string();
    let waiting = tokio::spawn(server.get(&format!("/api/sync/pull?since={cursor}&wait=30"), &manager).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::spawn(server.stop());
    let answered = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("long poll answered");
    assert_eq!(answered.unwrap().unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("server stopped").unwrap();
}

#[tokio::test]
async fn reset_cursors_after_a_restore() {
    let keep = tempfile::tempdir().unwrap();
    let config = crate::support::test_config(keep.path());
    let db = crate::support::DbEnv::of(&config);
    let server = TestServer::start_in(tempfile::tempdir().unwrap(), config.clone()).await;
    let key = server.cli_key("alice", &[]);
    push_ok(&server, &key, &pages(0..2)).await;
    let cursor = pull(&server, &key, "").await["cursor"].as_str().unwrap().to_string();
    server.stop().await;

    let out = crate::support::cli(&["reset-cursors"], &[db.pair()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let server = TestServer::start_in(tempfile::tempdir().unwrap(), config).await;
    let r = server.get(&format!("/api/sync/pull?since={cursor}"), &key).send().await.unwrap();
    expect_problem(r, 410).await;
    assert_eq!(pull_all(&server, &key).await.len(), 2, "a full resync still gets everything");
}

#[tokio::test]
async fn a_hand_written_resolution_is_reference_checked() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    push_ok(&server, &key, &json!({"changes": {"contexts": [{"id": "c1", "version": 1, "data": {}}], "topics": [{"id": "t1", "version": 1, "data": {"contextId": "c1", "title": "a"}}]}})).await;
    let r = push_ok(
        &server,
        &key,
        &json!({"changes": {"topics": [{"id": "t1", "version": 2, "data": {"contextId": "c1", "title": "b"}}]}}),
    )
    .await;
    let id = results(&r, "topics")[0]["conflictId"].as_str().unwrap().to_string();
    let r = server
        .post(&format!("/api/sync/conflicts/{id}/resolve"), &key, &json!({"record": {"data": {"contextId": "nope"}}}))
        .send()
        .await
        .unwrap();
    let p = expect_problem(r, 422).await;
    assert!(p["detail"].as_str().unwrap().contains("contextId"), "{p}");
    let r = server
        .post(
            &format!("/api/sync/conflicts/{id}/resolve"),
            &key,
            &json!({"record": {"data": {"contextId": "c1", "title": "ab"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
