//! Connection limits: header-read timeout, request-body timeout, connection cap,
//! and the per-user caps on event streams and long polls.

use std::time::Duration;

use accord::config::Config;
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{TestServer, expect_problem, pull};

fn addr(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or resets it); returns what it sent.
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn shipped_defaults_bound_connections_and_streams() {
    let shipped = Config::default();
    assert!(shipped.server.header_timeout_secs <= 30, "header timeout {}", shipped.server.header_timeout_secs);
    assert!(shipped.server.body_timeout_secs <= 60, "body timeout {}", shipped.server.body_timeout_secs);
    assert!((1..=4096).contains(&shipped.server.max_connections));
    assert_eq!(shipped.sync.max_streams_per_user, 16);
    assert_eq!(shipped.sync.max_long_polls_per_user, 16);
    // The documented config.toml states the same values.
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    for line in [
        format!("header_timeout_secs = {}", shipped.server.header_timeout_secs),
        format!("body_timeout_secs = {}", shipped.server.body_timeout_secs),
        format!("max_connections = {}", shipped.server.max_connections),
        format!("max_streams_per_user = {}", shipped.sync.max_streams_per_user),
        format!("max_long_polls_per_user = {}", shipped.sync.max_long_polls_per_user),
    ] {
        assert!(text.lines().any(|l| l == line), "config.toml lacks `{line}`");
    }
}

#[tokio::test]
async fn half_sent_requests_are_closed_after_the_header_timeout() {
    let server = TestServer::start_with(|c| c.server.header_timeout_secs = 1).await;
    let addr = addr(&server);
    let started = tokio::time::Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(tcp);
    }
    // A normal client is served meanwhile.
    let r = tokio::time::timeout(Duration::from_secs(5), server.client.get(server.url("/healthz")).send())
        .await
        .expect("healthz answered while 200 half-sent requests are open")
        .unwrap();
    assert_eq!(r.status(), 200);
    // Every half-sent request is closed: 1 s timeout, generous margin.
    let closed = futures_util::future::join_all(slow.iter_mut().map(read_to_close));
    let answers = tokio::time::timeout(Duration::from_secs(15), closed).await.expect("all closed within the timeout");
    for answer in answers {
        let text = String::from_utf8_lossy(&answer);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "unexpected answer: {text}");
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout could have passed");
    // A new connection: the pooled one was idle for about the timeout and may be closing just now.
    let r = reqwest::Client::new().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_stalled_body_is_a_408_and_closes_the_connection() {
    let server = TestServer::start_with(|c| c.server.body_timeout_secs = 1).await;
    let key = server.cli_key("alice", &[]);
    let addr = addr(&server);
    for path in ["/api/sync/push", "/api/api-keys"] {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nX-Request-Id: stalled-1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"changes\":"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(15), read_to_close(&mut tcp))
            .await
            .expect("answered and closed within the body timeout");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(text.to_ascii_lowercase().contains("content-type: application/problem+json"), "{text}");
        assert!(text.contains("/problems/request-timeout"), "{text}");
        assert!(text.contains("\"requestId\":\"stalled-1\""), "{text}");
    }
    // A body sent in full is not affected.
    let r = server.post("/api/api-keys", &key, &serde_json::json!({"name": "k"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn beyond_max_connections_a_connection_waits_until_one_closes() {
    let server = TestServer::start_with(|c| c.server.max_connections = 2).await;
    let addr = addr(&server);
    // Two idle connections take both slots.
    let first = TcpStream::connect(&addr).await.unwrap();
    let mut second = TcpStream::connect(&addr).await.unwrap();
    second.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf)).await.expect("served").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // A third is not served while they are open (it waits in the backlog)...
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf)).await.is_err(),
        "a connection beyond max_connections was served"
    );
    // ...and is served once one of them closes.
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut third))
        .await
        .expect("served after a slot freed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    drop(second);
    // The server stays healthy.
    for _ in 0..5 {
        let r = tokio::time::timeout(Duration::from_secs(10), server.client.get(server.url("/healthz")).send())
            .await
            .expect("served")
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

async fn expect_too_many(response: reqwest::Response) -> Value {
    let retry: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert!(retry >= 1);
    let body = expect_problem(response, 429).await;
    assert_eq!(body["type"], "https://accord.dev/problems/too-many-requests");
    body
}

#[tokio::test]
async fn event_streams_per_user_are_capped() {
    let server = TestServer::start_with(|c| {
        c.sync.max_streams_per_user = 2;
        c.sync.heartbeat_secs = 1;
    })
    .await;
    let alice = server.cli_key("alice", &[]);
    let bob = server.cli_key("bob", &[]);
    // Each stream on its own client, so dropping one closes its connection.
    let open = |key: String| {
        let url = server.url("/api/sync/events");
        async move { reqwest::Client::new().get(url).bearer_auth(key).send().await.unwrap() }
    };
    let a1 = open(alice.clone()).await;
    let a2 = open(alice.clone()).await;
    assert_eq!((a1.status().as_u16(), a2.status().as_u16()), (200, 200));
    let refused = expect_too_many(open(alice.clone()).await).await;
    assert!(refused["detail"].as_str().unwrap().contains("sync.max_streams_per_user"), "{refused}");
    // Another user is unaffected.
    let b1 = open(bob.clone()).await;
    assert_eq!(b1.status(), 200);

    // A stream that ends (here: its client disconnects) frees its slot.
    drop(a1);
    let mut reopened = None;
    for _ in 0..100 {
        let r = open(alice.clone()).await;
        if r.status() == 200 {
            reopened = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let freed = reopened.is_some();
    assert!(freed, "closing an event stream did not free its slot");
    expect_too_many(open(alice.clone()).await).await;

    // A stream ended by the server (shutdown) also ends cleanly.
    let mut stream = a2.bytes_stream();
    let mut more = reopened.unwrap().bytes_stream();
    assert!(matches!(tokio::time::timeout(Duration::from_secs(5), stream.next()).await, Ok(Some(Ok(_)))));
    drop(b1);
    let stopping = tokio::spawn(server.stop());
    assert!(crate::support::ends_within(&mut stream, 10).await);
    assert!(crate::support::ends_within(&mut more, 10).await);
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("server stopped").unwrap();
}

#[tokio::test]
async fn long_polls_per_user_are_capped() {
    let server = TestServer::start_with(|c| c.sync.max_long_polls_per_user = 2).await;
    let alice = server.cli_key("alice", &[]);
    let bob = server.cli_key("bob", &[]);
    let cursor = pull(&server, &alice, "").await["cursor"].as_str().unwrap().to_string();
    let poll = |key: &str, wait: u64| {
        let request = reqwest::Client::new()
            .get(server.url(&format!("/api/sync/pull?since={cursor}&wait={wait}")))
            .bearer_auth(key)
            .send();
        async move { request.await.unwrap() }
    };
    // Two long polls wait; a third is refused. A holder that reached the server
    // after a probe took its slot was refused itself: start it again.
    let mut holders: Vec<tokio::task::JoinHandle<reqwest::Response>> = Vec::new();
    let mut refused = None;
    for _ in 0..40 {
        holders.retain(|h| !h.is_finished());
        while holders.len() < 2 {
            holders.push(tokio::spawn(poll(&alice, 30)));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if holders.iter().any(|h| h.is_finished()) {
            continue;
        }
        let r = poll(&alice, 1).await;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
    }
    let capped = refused.is_some();
    assert!(capped, "a third long poll was never refused");
    let body = expect_too_many(refused.unwrap()).await;
    assert!(body["detail"].as_str().unwrap().contains("sync.max_long_polls_per_user"), "{body}");
    // A pull without `wait` is not a long poll, and another user is unaffected.
    assert!(pull(&server, &alice, "").await["cursor"].is_string());
    assert_eq!(poll(&bob, 1).await.status(), 200);

    // A client that goes away frees its slot.
    holders[0].abort();
    let mut freed = false;
    for _ in 0..100 {
        if poll(&alice, 1).await.status() == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "a disconnected long poll kept its slot");
    for holder in &holders {
        holder.abort();
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_closes_stragglers_after_the_grace() {
    let server = TestServer::start_with(|c| c.server.shutdown_grace_secs = 2).await;
    let key = server.cli_key("alice", &[]);
    let addr = addr(&server);
    // A half-sent request would hold its connection for the 30 s header timeout.
    let mut straggler = TcpStream::connect(&addr).await.unwrap();
    straggler.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // A long poll in flight answers when shutdown begins.
    let cursor = pull(&server, &key, "").await["cursor"].as_str().unwrap().to_string();
    let waiting = tokio::spawn(server.get(&format!("/api/sync/pull?since={cursor}&wait=30"), &key).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::spawn(server.stop());
    let answered = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("long poll answered");
    assert_eq!(answered.unwrap().unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(15), stopping).await.expect("server stopped after the grace").unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut straggler)).await;
    assert!(closed.is_ok(), "a straggling connection outlived the server");
}
