//! Attack scenarios from issue 7, measured against a release server: memory
//! amplification by small gzip bodies, disk amplification by conflicting
//! pushes, and one user's large pushes against another user's small one.

use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::{Server, post_push, record};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

/// Four ~32 KiB gzip bodies at once, each inflating to 32 MiB of tiny JSON
/// values, while /healthz is polled every 10 ms.
pub async fn memory() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let zeros = vec!["0"; 16 * 1024 * 1024 - 64].join(",");
    let bodies = [
        ("clientId array", format!(r#"{{"clientId":[{zeros}],"changes":{{}}}}"#)),
        ("version array", format!(r#"{{"changes":{{"pages":[{{"id":"a","version":[{zeros}],"data":{{}}}}]}}}}"#)),
        ("1M empty records", format!(r#"{{"changes":{{"pages":[{}]}}}}"#, vec!["{}"; 10_000_000].join(","))),
    ];
    drop(zeros);
    for (name, body) in bodies {
        let packed = gzip(&body);
        let inflated = body.len();
        drop(body);
        let before = server.peak_rss_mib();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let health = {
            let (client, base, stop) = (client.clone(), server.base.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for _ in 0..10_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let t = Instant::now();
                    client.get(format!("{base}/healthz")).send().await.unwrap().bytes().await.unwrap();
                    latencies.push(t.elapsed());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                latencies
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut pushes = Vec::new();
        for _ in 0..4 {
            let (client, url, key, packed) =
                (client.clone(), format!("{}/api/sync/push", server.base), server.key.clone(), packed.clone());
            pushes.push(tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(packed)
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for p in pushes {
            statuses.push(p.await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut latencies = health.await.unwrap();
        latencies.sort();
        println!(
            "attack memory `{name}`: 4 × {:.1} KiB gzip ({:.0} MiB inflated) → statuses {statuses:?}; \
             server peak RSS {before:.0} → {:.0} MiB; /healthz meanwhile n={} p50 {:.1} ms p99 {:.1} ms",
            packed.len() as f64 / 1024.0,
            inflated as f64 / 1048576.0,
            server.peak_rss_mib(),
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
        );
    }
}

/// Four 32 MiB blob uploads at once (one user's cap, `blobs.max_uploads_per_user`),
/// streamed in 64 KiB chunks: the server's peak RSS must not grow by the blobs' size.
pub async fn blobs() {
    use sha2::Digest as _;
    let server = Server::start().await;
    let client = reqwest::Client::new();
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 512; // 32 MiB, blobs.max_bytes
    let before = server.peak_rss_mib();
    let started = Instant::now();
    let mut uploads = Vec::new();
    for n in 0..4u8 {
        let chunk: Vec<u8> = (0..CHUNK).map(|i| (i as u8).wrapping_mul(31).wrapping_add(n)).collect();
        let mut hasher = sha2::Sha256::new();
        for _ in 0..CHUNKS {
            hasher.update(&chunk);
        }
        let hash: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let body = futures_util::stream::iter((0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
        let request = client
            .put(format!("{}/api/blobs/{hash}", server.base))
            .bearer_auth(&server.key)
            .body(reqwest::Body::wrap_stream(body));
        uploads.push(tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }));
    }
    let mut statuses = Vec::new();
    for u in uploads {
        statuses.push(u.await.unwrap_or(0));
    }
    println!(
        "attack blobs: 4 × 32 MiB uploads at once → statuses {statuses:?} in {:.1} s; server peak RSS {before:.0} → {:.0} MiB",
        started.elapsed().as_secs_f64(),
        server.peak_rss_mib(),
    );
}

/// Twenty 1 MB records (incompressible), then ten pushes of ~1 KB that each
/// conflict with all twenty, each with a pushId.
pub async fn disk() {
    let server = Server::start().await;
    if server.backend() != "sqlite" {
        println!("attack disk: measured on SQLite (file sizes) only");
        return;
    }
    let client = reqwest::Client::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..20 {
        let body: String = (0..1_000_000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'a' + (seed % 26) as u8)
            })
            .collect();
        let push = serde_json::json!({"changes": {"pages": [{"id": format!("big{i}"), "version": 1, "data": {"body": body}}]}});
        post_push(&client, &server.base, &server.key, push.to_string()).await;
    }
    let before = server.db_bytes();
    let mut sent = 0usize;
    for n in 0..10 {
        let records: Vec<_> =
            (0..20).map(|i| serde_json::json!({"id": format!("big{i}"), "version": 1, "data": {"n": n}})).collect();
        let push = serde_json::json!({"pushId": format!("conflict-{n}"), "changes": {"pages": records}}).to_string();
        sent += push.len();
        post_push(&client, &server.base, &server.key, push).await;
    }
    let grown = server.db_bytes().saturating_sub(before);
    println!(
        "attack disk: 10 pushes totalling {:.1} KB, each conflicting with 20 records of 1 MB → database grew {:.2} MiB",
        sent as f64 / 1000.0,
        grown as f64 / 1048576.0
    );
}

/// One user pushes batches of 5,000 ~1 KB records from two clients; another
/// user pushes one record every 20 ms. Reports the second user's latency and
/// the longest single job of the first.
pub async fn fairness(seconds: u64) {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let other = server.key_for("other").await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut heavy = Vec::new();
    for c in 0..2 {
        let (client, base, key) = (client.clone(), server.base.clone(), server.key.clone());
        heavy.push(tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            for n in 0..10_000usize {
                if Instant::now() >= deadline {
                    break;
                }
                let records: Vec<_> = (0..5000).map(|i| record(&format!("h{c}-{n}-{i}"), i)).collect();
                let body = serde_json::json!({"changes": {"pages": records}}).to_string();
                let t = Instant::now();
                post_push(&client, &base, &key, body).await;
                longest = longest.max(t.elapsed());
            }
            longest
        }));
    }
    let mut small = Vec::new();
    for n in 0..100_000usize {
        if Instant::now() >= deadline {
            break;
        }
        let body = serde_json::json!({"changes": {"pages": [record(&format!("s-{n}"), n)]}}).to_string();
        let t = Instant::now();
        post_push(&client, &server.base, &other, body).await;
        small.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut longest = Duration::ZERO;
    for h in heavy {
        longest = longest.max(h.await.unwrap());
    }
    small.sort();
    println!(
        "attack fairness {seconds} s: other user's 1-record push n={} p50 {:.1} ms p99 {:.1} ms max {:.1} ms; \
         heavy user's longest 5,000-record push (its whole round trip) {:.1} ms",
        small.len(),
        percentile(&small, 0.5),
        percentile(&small, 0.99),
        small.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        longest.as_secs_f64() * 1000.0
    );
}

/// 500 connections that send half a request and stop, against the shipped
/// header timeout: how long until they are closed, and /healthz meanwhile.
pub async fn half_sent(connections: usize) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = Server::start().await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..connections {
        let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else { break };
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        held.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            // Bounded: the shipped header timeout is 30 s.
            let _ = tokio::time::timeout(Duration::from_secs(120), async {
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            started.elapsed()
        }));
    }
    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let ok = client.get(format!("{}/healthz", server.base)).send().await.is_ok_and(|r| r.status() == 200);
        if ok {
            latencies.push(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut closed_after = Vec::new();
    for h in held {
        closed_after.push(h.await.unwrap());
    }
    closed_after.sort();
    latencies.sort();
    println!(
        "attack half-sent: {} connections opened; all closed by the server after {:.1}–{:.1} s \
         (server.header_timeout_secs = 30); /healthz meanwhile {} of 50 OK, p99 {:.1} ms",
        closed_after.len(),
        closed_after.first().map_or(0.0, Duration::as_secs_f64),
        closed_after.last().map_or(0.0, Duration::as_secs_f64),
        latencies.len(),
        percentile(&latencies, 0.99)
    );
}
