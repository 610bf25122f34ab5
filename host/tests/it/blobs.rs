//! Attachments: `PUT|HEAD|GET /api/blobs/{sha256}` (streamed, verified,
//! ranged, per user), records naming blobs, and collection of unnamed blobs.

use futures_util::stream;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{TestServer, expect_problem, push, push_ok, results, test_config};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

async fn put(server: &TestServer, key: &str, hash: &str, body: Vec<u8>) -> reqwest::Response {
    server.client.put(server.url(&format!("/api/blobs/{hash}"))).bearer_auth(key).body(body).send().await.unwrap()
}

async fn head(server: &TestServer, key: &str, hash: &str) -> reqwest::Response {
    server.client.head(server.url(&format!("/api/blobs/{hash}"))).bearer_auth(key).send().await.unwrap()
}

fn image(id: &str, hash: &str) -> Value {
    json!({"id": id, "version": 1, "data": {"sha256": hash, "mimeType": "image/png"}})
}

#[tokio::test]
async fn upload_probe_and_download_with_ranges_and_etags() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let hash = sha(&bytes);

    assert_eq!(head(&server, &key, &hash).await.status(), 404);
    let r = put(&server, &key, &hash, bytes.clone()).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["etag"], format!("\"{hash}\"").as_str());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"sha256": hash, "size": 100_000}));
    // Uploading it again changes nothing and says so.
    assert_eq!(put(&server, &key, &hash, bytes.clone()).await.status(), 200);

    let h = head(&server, &key, &hash).await;
    assert_eq!(h.status(), 200);
    assert_eq!(h.headers()["content-length"], "100000");
    assert_eq!(h.headers()["accept-ranges"], "bytes");

    let url = server.url(&format!("/api/blobs/{hash}"));
    let get = |range: Option<&str>| {
        let mut req = server.client.get(&url).bearer_auth(&key).header("accept-encoding", "gzip");
        if let Some(range) = range {
            req = req.header("range", range);
        }
        req.send()
    };
    let whole = get(None).await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["etag"], format!("\"{hash}\"").as_str());
    assert!(whole.headers()["cache-control"].to_str().unwrap().contains("max-age=31536000"));
    assert!(whole.headers().get("content-encoding").is_none(), "blobs are sent as stored");
    assert_eq!(whole.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let part = get(Some("bytes=10-19")).await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    let tail = get(Some("bytes=-7")).await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &bytes[100_000 - 7..]);
    let from = get(Some("bytes=99990-")).await.unwrap();
    assert_eq!(from.bytes().await.unwrap().as_ref(), &bytes[99_990..]);
    let outside = get(Some("bytes=100000-")).await.unwrap();
    assert_eq!(outside.headers()["content-range"], "bytes */100000");
    expect_problem(outside, 416).await;
    // Several ranges are not served: the whole blob comes back.
    assert_eq!(get(Some("bytes=0-1,5-6")).await.unwrap().status(), 200);

    let cached =
        server.client.get(&url).bearer_auth(&key).header("if-none-match", format!("\"{hash}\"")).send().await.unwrap();
    assert_eq!(cached.status(), 304);
    assert!(cached.bytes().await.unwrap().is_empty());

    // Reading needs sync:read, writing sync:write.
    let reader = server.cli_key("alice", &["sync:read"]);
    assert_eq!(head(&server, &reader, &hash).await.status(), 200);
    expect_problem(put(&server, &reader, &sha(b"x"), b"x".to_vec()).await, 403).await;
    server.stop().await;
}

#[tokio::test]
async fn bad_uploads_are_refused_and_store_nothing() {
    let server = TestServer::start_with(|c| {
        c.blobs.max_bytes = 64 * 1024;
        c.quotas.blob_bytes = 100 * 1024;
    })
    .await;
    let key = server.cli_key("alice", &[]);

    // Not a hash.
    for bad in ["abc", &"A".repeat(64), &"g".repeat(64)] {
        let p = expect_problem(put(&server, &key, bad, b"x".to_vec()).await, 400).await;
        assert!(p["detail"].as_str().unwrap().contains("SHA-256"), "{p}");
    }
    // The body does not match the hash.
    let claimed = sha(b"what the client meant");
    let p = expect_problem(put(&server, &key, &claimed, b"something else".to_vec()).await, 422).await;
    assert!(p["detail"].as_str().unwrap().contains(&sha(b"something else")), "{p}");
    assert_eq!(head(&server, &key, &claimed).await.status(), 404);

    // Too large: refused from Content-Length, and while streaming without one.
    let big = vec![7u8; 64 * 1024 + 1];
    expect_problem(put(&server, &key, &sha(&big), big.clone()).await, 413).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    let r = server
        .client
        .put(server.url(&format!("/api/blobs/{}", sha(&big))))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_problem(r, 413).await;
    assert_eq!(head(&server, &key, &sha(&big)).await.status(), 404);

    // The per-user quota (100 KiB): the first two 40 KiB blobs fit, the third does not.
    for n in 0..3u8 {
        let blob = vec![n; 40 * 1024];
        let r = put(&server, &key, &sha(&blob), blob.clone()).await;
        if n < 2 {
            assert_eq!(r.status(), 201);
        } else {
            let p = expect_problem(r, 507).await;
            assert!(p["detail"].as_str().unwrap().contains("quotas.blob_bytes"), "{p}");
            assert_eq!(head(&server, &key, &sha(&blob)).await.status(), 404);
        }
    }
    // Nothing of the refused uploads is left in the blob folder (only the two stored).
    let files = walk(&server.config.blobs.folder(&server.config.database));
    assert_eq!(files.len(), 2, "{files:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_blob_is_only_readable_by_users_who_uploaded_it() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.cli_key("alice", &[]), server.cli_key("bob", &[]));
    let bytes = b"alice's photo".to_vec();
    let hash = sha(&bytes);
    assert_eq!(put(&server, &alice, &hash, bytes.clone()).await.status(), 201);
    // Bob cannot learn that anyone has it, read it, or name it in a record.
    assert_eq!(head(&server, &bob, &hash).await.status(), 404);
    let r = server.client.get(server.url(&format!("/api/blobs/{hash}"))).bearer_auth(&bob).send().await.unwrap();
    expect_problem(r, 404).await;
    let (status, body) = push(&server, &bob, &json!({"changes": {"imageBlobs": [image("i1", &hash)]}})).await;
    assert_eq!(status, 200);
    assert_eq!(results(&body, "imageBlobs")[0]["status"], "rejected");
    // Uploading the same bytes himself gives him his own copy.
    assert_eq!(put(&server, &bob, &hash, bytes.clone()).await.status(), 201);
    let r = server.client.get(server.url(&format!("/api/blobs/{hash}"))).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    server.stop().await;
}

#[tokio::test]
async fn records_may_only_name_uploaded_blobs() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    let bytes = b"\x89PNG not really".to_vec();
    let hash = sha(&bytes);

    // The shipped imageBlobs type declares `sha256` a blob field: naming an
    // unknown blob is rejected, naming the field; the rest of the push applies.
    let body = json!({"changes": {
        "imageBlobs": [image("img", &hash)],
        "pages": [{"id": "p", "version": 1, "data": {"title": "t"}}]}});
    let r = push_ok(&server, &key, &body).await;
    let result = &results(&r, "imageBlobs")[0];
    assert_eq!(result["status"], "rejected", "{r}");
    let reason = result["reason"].as_str().unwrap();
    assert!(reason.contains("sha256") && reason.contains(&hash), "{reason}");
    assert_eq!(results(&r, "pages")[0]["status"], "applied");

    // A blob field must hold a hash or null.
    let (status, _) = push(&server, &key, &json!({"changes": {"imageBlobs": [image("img", "not-a-hash")]}})).await;
    assert_eq!(status, 422);
    let null = json!({"changes": {"imageBlobs": [{"id": "none", "version": 1, "data": {"sha256": null}}]}});
    assert_eq!(results(&push_ok(&server, &key, &null).await, "imageBlobs")[0]["status"], "applied");

    // Upload first, then push.
    assert_eq!(put(&server, &key, &hash, bytes).await.status(), 201);
    let r = push_ok(&server, &key, &json!({"changes": {"imageBlobs": [image("img", &hash)]}})).await;
    assert_eq!(results(&r, "imageBlobs")[0]["status"], "applied", "{r}");
    server.stop().await;
}

#[tokio::test]
async fn blobs_no_record_names_are_collected_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    let data = tempfile::tempdir().unwrap();
    config.blobs.dir = data.path().join("blobs");
    config.database.path = data.path().join("accord.db");
    if crate::support::backend() == crate::support::Backend::Postgres {
        config.database.url = Some(crate::support::pg::cluster().create_database());
    }
    let server = TestServer::start_in(dir, config.clone()).await;
    let key = server.cli_key("alice", &[]);
    let (kept, loose) = (b"named by a record".to_vec(), b"named by nothing".to_vec());
    for b in [&kept, &loose] {
        assert_eq!(put(&server, &key, &sha(b), b.clone()).await.status(), 201);
    }
    let r = push_ok(&server, &key, &json!({"changes": {"imageBlobs": [image("img", &sha(&kept))]}})).await;
    assert_eq!(results(&r, "imageBlobs")[0]["status"], "applied", "{r}");
    server.stop().await;
    assert_eq!(walk(&config.blobs.dir).len(), 2, "within the default grace period nothing goes");

    // No grace from here on: the janitor (which runs at startup) collects at once.
    config.blobs.gc_grace_hours = 0;

    let restart = || TestServer::start_in(tempfile::tempdir().unwrap(), config.clone());
    let server = restart().await;
    wait_until(|| walk(&config.blobs.dir).len() == 1).await;
    assert_eq!(head(&server, &key, &sha(&loose)).await.status(), 404, "collected");
    assert_eq!(head(&server, &key, &sha(&kept)).await.status(), 200, "a record names it");
    // Deleting the record lets its blob go too. (imageBlobs are append-only:
    // the delete is a conflict, which the client resolves by taking it.)
    let gone = json!({"changes": {"imageBlobs": [{"id": "img", "version": 2, "baseVersion": 1, "deleted": true}]}});
    let r = push_ok(&server, &key, &gone).await;
    let conflict = results(&r, "imageBlobs")[0]["conflictId"].as_str().unwrap().to_string();
    let resolved = server
        .post(&format!("/api/sync/conflicts/{conflict}/resolve"), &key, &json!({"take": "incoming"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), 200);
    server.stop().await;
    let server = restart().await;
    wait_until(|| walk(&config.blobs.dir).is_empty()).await;
    assert_eq!(head(&server, &key, &sha(&kept)).await.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn a_large_blob_streams_in_and_out() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    // 24 MiB in 64 KiB chunks, without Content-Length.
    let chunk: Vec<u8> = (0..65_536u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut hasher = Sha256::new();
    for _ in 0..384 {
        hasher.update(&chunk);
    }
    let hash: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let body = stream::iter((0..384).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = server
        .client
        .put(server.url(&format!("/api/blobs/{hash}")))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = server.client.get(server.url(&format!("/api/blobs/{hash}"))).bearer_auth(&key).send().await.unwrap();
    let bytes = got.bytes().await.unwrap();
    assert_eq!(bytes.len(), 384 * 65_536);
    assert_eq!(sha(&bytes), hash);
    server.stop().await;
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("condition not reached within 5 s");
}

/// Every file under `dir` (the blob folder).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
