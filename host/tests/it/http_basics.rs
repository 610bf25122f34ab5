//! Problem responses for bad input, health endpoints, body limits.

use serde_json::{Value, json};

use crate::support::{TestServer, expect_problem};

async fn key_count(server: &TestServer, key: &str) -> usize {
    let r = server.get("/api/api-keys", key).send().await.unwrap();
    r.json::<Vec<Value>>().await.unwrap().len()
}

#[tokio::test]
async fn bad_input_is_a_problem_and_changes_nothing() {
    let server = TestServer::start_with(|c| c.server.max_body_bytes = 4096).await;
    let key = server.cli_key("alice", &[]);
    let url = server.url("/api/api-keys");
    let send_raw = |body: &'static str| {
        server.client.post(&url).bearer_auth(&key).header("content-type", "application/json").body(body).send()
    };

    let p = expect_problem(send_raw("{\"name\": ").await.unwrap(), 400).await;
    assert!(p["detail"].as_str().unwrap().contains("parse") || p["detail"].as_str().unwrap().contains("EOF"), "{p}");
    expect_problem(send_raw("{\"name\": 5}").await.unwrap(), 422).await;
    expect_problem(send_raw("{}").await.unwrap(), 422).await;
    expect_problem(send_raw("{\"name\": \"x\", \"scopes\": \"sync:read\"}").await.unwrap(), 422).await;
    expect_problem(send_raw("{\"name\": \"\"}").await.unwrap(), 422).await;
    expect_problem(send_raw("{\"name\": \"x\", \"scopez\": []}").await.unwrap(), 422).await;
    expect_problem(send_raw("[1,2]").await.unwrap(), 422).await;

    let r = server.client.post(&url).bearer_auth(&key).body("{\"name\":\"x\"}").send().await.unwrap();
    expect_problem(r, 415).await;

    let big = json!({"name": "x".repeat(10_000)});
    let r = server.post("/api/api-keys", &key, &big).send().await.unwrap();
    expect_problem(r, 413).await;

    assert_eq!(key_count(&server, &key).await, 1, "nothing was created by bad input");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let server = TestServer::start().await;
    let r = server.client.get(server.url("/no/such/route")).send().await.unwrap();
    expect_problem(r, 404).await;
    let r = server.client.put(server.url("/api/api-keys")).send().await.unwrap();
    expect_problem(r, 405).await;
    let r = server.client.get(server.url("/api/api-keys/abc")).send().await.unwrap();
    expect_problem(r, 405).await;
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    let r = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn cors_answers_configured_origins() {
    let server = TestServer::start_with(|c| c.server.cors_origins = vec!["https://app.example".into()]).await;
    let r = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/api/api-keys"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()),
        Some("https://app.example")
    );
    // A blob upload from a browser: PUT with the client's own request id; the preflight is cached.
    let r = server
        .client
        .request(reqwest::Method::OPTIONS, server.url(&format!("/api/blobs/{}", "a".repeat(64))))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "authorization,x-request-id,content-type")
        .send()
        .await
        .unwrap();
    let allowed = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_ascii_lowercase());
    assert!(allowed("access-control-allow-methods").is_some_and(|m| m.contains("put")));
    assert!(allowed("access-control-allow-headers").is_some_and(|h| h.contains("x-request-id")));
    assert_eq!(allowed("access-control-max-age").as_deref(), Some("600"));
    let r = server.client.get(server.url("/healthz")).header("origin", "https://evil.example").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn openapi_is_generated_from_the_routes() {
    let server = TestServer::start().await;
    let r = server.client.get(server.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // Routes are registered only through `routes!`, which takes each one's
    // operation from its handler's `#[utoipa::path]`: none can go undocumented.
    let router = include_str!("../../src/http/mod.rs");
    assert!(!router.contains(".route("), "a route registered without its OpenAPI operation");
    // And every documented operation is served (no 404/405 from the fallbacks).
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 14, "{} paths", paths.len());
    let hash = "0".repeat(64);
    for (path, ops) in paths {
        let url = server.url(&path.replace("{id}", "x").replace("{sha256}", &hash));
        for method in ops.as_object().unwrap().keys() {
            if path == "/api/sync/events" {
                continue; // 401 without a key, but would stream with one: covered in sse.rs.
            }
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = server.client.request(method.clone(), &url).send().await.unwrap();
            assert!(
                ![404, 405].contains(&r.status().as_u16()),
                "{method} {path} is documented but answers {}",
                r.status()
            );
        }
    }
    // The configured entity types are named where a push, a pull or a conflict query takes one.
    let changes = &doc["components"]["schemas"]["PushRequest"]["properties"]["changes"];
    assert_eq!(changes["additionalProperties"], false);
    assert!(changes["properties"]["pages"].is_object(), "{changes}");
    let topics = &doc["components"]["schemas"]["IncomingRecord.topics"]["properties"]["data"]["properties"];
    assert_eq!(topics["contextId"]["type"], json!(["string", "null"]), "reference fields are declared: {topics}");
    let images = &doc["components"]["schemas"]["IncomingRecord.imageBlobs"]["properties"]["data"]["properties"];
    assert!(images["sha256"]["oneOf"][0]["pattern"].is_string(), "blob fields are declared: {images}");
}
