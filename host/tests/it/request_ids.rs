//! Request ids: taken from the client or generated, echoed, in problems and logs.

use std::time::Duration;

use serde_json::json;

use crate::support::{TestServer, expect_problem, spawn_serve};

fn header(response: &reqwest::Response) -> String {
    response.headers().get("x-request-id").expect("X-Request-Id on the response").to_str().unwrap().to_string()
}

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn request_ids_are_echoed_and_carried_by_problems() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);

    // Given by the client: echoed.
    let r = server.client.get(server.url("/healthz")).header("x-request-id", "client-id 42/a").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r), "client-id 42/a");
    // Not given: generated, different every time.
    let r = server.client.get(server.url("/healthz")).send().await.unwrap();
    let generated = header(&r);
    assert!(is_generated(&generated), "{generated}");
    let r = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_ne!(header(&r), generated);
    // Too long, or not printable ASCII: replaced by a generated one.
    for bad in ["x".repeat(129).into_bytes(), b"caf\xc3\xa9".to_vec(), b"a\tb".to_vec()] {
        let value = reqwest::header::HeaderValue::from_bytes(&bad).unwrap();
        let r = server.client.get(server.url("/healthz")).header("x-request-id", value).send().await.unwrap();
        assert!(is_generated(&header(&r)), "{:?} was kept", String::from_utf8_lossy(&bad));
    }
    let r = server.client.get(server.url("/healthz")).header("x-request-id", "y".repeat(128)).send().await.unwrap();
    assert_eq!(header(&r), "y".repeat(128));

    // Every problem carries the id: 404, 401, 422, 405.
    let r = server.client.get(server.url("/no/such")).header("x-request-id", "find-me-404").send().await.unwrap();
    assert_eq!(header(&r), "find-me-404");
    assert_eq!(expect_problem(r, 404).await["requestId"], "find-me-404");
    let r = server.client.get(server.url("/api/sync/pull")).header("x-request-id", "find-me-401").send().await.unwrap();
    assert_eq!(expect_problem(r, 401).await["requestId"], "find-me-401");
    let r = server.post("/api/api-keys", &key, &json!({})).header("x-request-id", "find-me-422").send().await.unwrap();
    assert_eq!(expect_problem(r, 422).await["requestId"], "find-me-422");
    let r = server.client.put(server.url("/api/api-keys")).send().await.unwrap();
    let id = header(&r);
    assert!(is_generated(&id));
    assert_eq!(expect_problem(r, 405).await["requestId"], id.as_str());
    // A problem made by a layer (not a handler) carries it too: a bad Content-Encoding.
    let r = server
        .post("/api/api-keys", &key, &json!({"name": "x"}))
        .header("content-encoding", "br")
        .header("x-request-id", "find-me-415")
        .send()
        .await
        .unwrap();
    assert_eq!(expect_problem(r, 415).await["requestId"], "find-me-415");
    // Successful JSON bodies are not changed.
    let r = server.get("/api/api-keys", &key).header("x-request-id", "ok-1").send().await.unwrap();
    assert_eq!(header(&r), "ok-1");
    assert!(r.json::<serde_json::Value>().await.unwrap().is_array());
}

#[tokio::test]
async fn every_log_line_of_a_request_names_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::support::fresh_database(&dir.path().join("accord.db"));
    let served = spawn_serve(
        dir.path(),
        &[("ACCORD_SERVER__BIND", "127.0.0.1:0"), ("ACCORD_LOG__LEVEL", "accord=debug,tower_http=debug"), db.pair()],
    );
    let client = reqwest::Client::new();
    let base = format!("http://{}", served.addr);
    let r = client.get(format!("{base}/api/sync/pull")).header("x-request-id", "trace-me-7").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.get(format!("{base}/healthz")).header("x-request-id", "trace-me-8").send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The last request's own "finished" line is the last one its span logs (the
    // response may reach the client before it is written).
    let logged = |a: &str, b: &str| served.log.lock().unwrap().iter().any(|l| l.contains(a) && l.contains(b));
    let mut done = false;
    for _ in 0..100 {
        if logged("request_id=trace-me-8", "finished processing request") {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = served.log.lock().unwrap().clone();
    assert!(done, "no request log lines:\n{}", log.join("\n"));
    // Every line logged while handling a request is in its span, which names the id.
    let request_lines: Vec<&String> =
        log.iter().filter(|l| l.contains("processing request") || l.contains("authentication refused")).collect();
    assert!(request_lines.len() >= 5, "{}", log.join("\n"));
    for line in &request_lines {
        assert!(line.contains("request_id=trace-me-"), "a request's log line lacks its id: {line}");
        // The accept loop gives every request its peer address (ConnectInfo).
        assert!(line.contains("peer=127.0.0.1:"), "a request's log line lacks its peer: {line}");
    }
    assert!(
        request_lines.iter().any(|l| l.contains("authentication refused") && l.contains("request_id=trace-me-7")),
        "{}",
        log.join("\n")
    );
}
