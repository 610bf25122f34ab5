//! The failed-authentication limit per client address (`auth.failed_per_minute`).

use crate::keys::GENERIC_401;
use crate::support::{TestServer, expect_problem};

fn bad_key(i: usize) -> String {
    format!("ka_{:A>43}", i)
}

#[tokio::test]
async fn repeated_failures_from_one_address_get_429_and_good_traffic_is_not_limited() {
    // The shipped default: 20 failures per minute.
    let server = TestServer::start().await;
    assert_eq!(server.config.auth.failed_per_minute, 20);
    let good = server.cli_key("lou", &[]);
    // Successful authentications never count, however many.
    for _ in 0..60 {
        assert_eq!(server.get("/api/sync/pull", &good).send().await.unwrap().status(), 200);
    }
    // 19 failures, then good traffic again: still served.
    for i in 0..19 {
        let p = expect_problem(server.get("/api/sync/pull", &bad_key(i)).send().await.unwrap(), 401).await;
        assert_eq!(p["detail"], GENERIC_401);
    }
    for _ in 0..20 {
        assert_eq!(server.get("/api/sync/pull", &good).send().await.unwrap().status(), 200);
    }
    // The 20th failure is still a 401; after it the address is refused.
    expect_problem(server.get("/api/sync/pull", &bad_key(19)).send().await.unwrap(), 401).await;
    let r = server.get("/api/sync/pull", &bad_key(20)).send().await.unwrap();
    let retry: u64 = r.headers().get("retry-after").expect("Retry-After").to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let p = expect_problem(r, 429).await;
    assert_eq!(p["type"], "https://accord.dev/problems/too-many-requests");
    // Refused before the credential is looked at, so a missing header or even a
    // good key from this address waits too (documented in docs/security.md).
    expect_problem(server.client.get(server.url("/api/sync/pull")).send().await.unwrap(), 429).await;
    expect_problem(server.get("/api/sync/pull", &good).send().await.unwrap(), 429).await;
    // Routes without authentication are not affected.
    assert_eq!(server.client.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    // The bucket refills at 20 per minute: one failure is allowed again after ~3 s.
    tokio::time::sleep(std::time::Duration::from_secs(retry)).await;
    assert_eq!(server.get("/api/sync/pull", &good).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn zero_disables_the_failed_auth_limit() {
    let server = TestServer::start_with(|c| c.auth.failed_per_minute = 0).await;
    for i in 0..40 {
        expect_problem(server.get("/api/sync/pull", &bad_key(i)).send().await.unwrap(), 401).await;
    }
}

#[test]
fn failed_per_minute_is_a_config_key_and_unknown_auth_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accord.toml");
    std::fs::write(&file, "[auth]\nfailed_per_minute = 5\n").unwrap();
    let loaded = accord::config::Config::load(Some(&file)).unwrap();
    assert_eq!(loaded.auth.failed_per_minute, 5);
    for text in ["[auth]\nfailed_per_minut = 5\n", "[auth]\nfailed_per_minute = -1\n"] {
        std::fs::write(&file, text).unwrap();
        let err = accord::config::Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("failed_per_minut"), "{text}: {err}");
    }
}
