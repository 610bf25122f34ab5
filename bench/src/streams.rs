//! Many idle listeners (issue 12): thousands of open event streams across
//! many users, what they cost in server memory, and push latency with and
//! without them. A push wakes only its own user's streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use accord::auth::{Scope, apikey};
use futures_util::StreamExt as _;

use crate::{Server, post_push, record};

/// Sequential pushes of 10 records by `key`; (p50, p99) in ms.
async fn push_latency(server: &Server, key: &str, tag: &str, pushes: usize) -> (f64, f64) {
    let client = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(pushes);
    for n in 0..pushes {
        let records: Vec<_> = (0..10).map(|i| record(&format!("{tag}-{n}-{i}"), i)).collect();
        let body = serde_json::json!({"changes": {"pages": records}}).to_string();
        let t = Instant::now();
        post_push(&client, &server.base, key, body).await;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3;
    (pct(0.5), pct(0.99))
}

/// Resident memory of the server process now, in MiB.
fn rss_mib(server: &Server) -> f64 {
    let pid = server.child.as_ref().and_then(|c| c.id()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

pub async fn idle_streams(streams: usize, users: usize, pushes: usize) {
    let server = Server::start_with_env(&[
        ("ACCORD_SERVER__MAX_CONNECTIONS", (streams + 100).to_string()),
        ("ACCORD_SYNC__MAX_STREAMS_PER_USER", streams.div_ceil(users).to_string()),
    ])
    .await;
    let (p50_before, p99_before) = push_latency(&server, &server.key, "before", pushes).await;
    let rss_before = rss_mib(&server);

    let store = accord::server::open_store(&server.config).await.unwrap();
    let mut keys = Vec::with_capacity(users);
    for u in 0..users {
        let user = format!("listener{u}");
        keys.push(apikey::issue(&store, &user, &user, &[Scope::SyncRead, Scope::SyncWrite], None).await.unwrap().1);
    }
    store.close().await;

    // Open the streams, a few hundred at a time; each counts the `change` events it sees.
    let changes: Arc<Vec<AtomicUsize>> = Arc::new((0..users).map(|_| AtomicUsize::new(0)).collect());
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let opened = Instant::now();
    let mut held = Vec::with_capacity(streams);
    for chunk in (0..streams).collect::<Vec<_>>().chunks(250) {
        let mut opening = Vec::new();
        for &s in chunk {
            let u = s % users;
            let request = client.get(format!("{}/api/sync/events", server.base)).bearer_auth(&keys[u]).send();
            opening.push(async move { (u, request.await) });
        }
        for (u, response) in futures_util::future::join_all(opening).await {
            let response = response.unwrap();
            assert_eq!(response.status(), 200, "stream refused");
            let changes = changes.clone();
            held.push(tokio::spawn(async move {
                let mut body = response.bytes_stream();
                while let Some(Ok(chunk)) = body.next().await {
                    let seen = chunk.windows(13).filter(|w| w == b"event: change").count();
                    changes[u].fetch_add(seen, Ordering::Relaxed);
                }
            }));
        }
    }
    let open_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open = rss_mib(&server);

    // Pushes by a user with no streams wake nobody; one push by listener0 wakes its streams only.
    let (p50_open, p99_open) = push_latency(&server, &server.key, "open", pushes).await;
    let body = serde_json::json!({"changes": {"pages": [record("wake", 0)]}}).to_string();
    post_push(&reqwest::Client::new(), &server.base, &keys[0], body).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let woken = changes[0].load(Ordering::Relaxed);
    let elsewhere: usize = changes.iter().skip(1).map(|c| c.load(Ordering::Relaxed)).sum();
    println!(
        "idle streams: {streams} event streams of {users} users opened in {open_secs:.1} s; server RSS {rss_before:.0} → \
         {rss_open:.0} MiB (+{:.1} KiB per stream); push of 10 records p50/p99 {p50_before:.2}/{p99_before:.2} ms with no \
         streams, {p50_open:.2}/{p99_open:.2} ms with {streams} open ({pushes} pushes each); one push by a listener woke \
         {woken} of its {} streams and {elsewhere} others",
        (rss_open - rss_before) * 1024.0 / streams as f64,
        streams.div_ceil(users),
    );
    for h in held {
        h.abort();
    }
}
