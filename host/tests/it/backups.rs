//! Online backup of a running server, restore, and clients that converge.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::{Backend, TestServer, backend, cli, expect_problem, pull, pull_all, push_ok, test_config};

fn batch(n: usize) -> Value {
    let records: Vec<Value> =
        (0..5).map(|i| json!({"id": format!("b{n:03}-{i}"), "version": 1, "data": {"n": n, "i": i}})).collect();
    json!({"pushId": format!("push-{n:03}"), "changes": {"pages": records}})
}

#[tokio::test]
async fn a_backup_taken_during_pushes_restores_and_clients_converge() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    if backend() == Backend::Postgres {
        // PostgreSQL is backed up with its own tools; the commands say so.
        let url = crate::support::pg::cluster().create_database();
        let env = [("ACCORD_DATABASE__URL", url.as_str())];
        for args in [vec!["backup", "/tmp/never.db"], vec!["restore", "/tmp/never.db"]] {
            let out = cli(&args, &env, None);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("database.url is set"), "{args:?}");
        }
        return;
    }
    let data = tempfile::tempdir().unwrap();
    config.database.path = data.path().join("accord.db");
    // Blobs in their default folder, beside the database, where the CLI looks too.
    config.blobs.dir = std::path::PathBuf::new();
    let db_env = [("ACCORD_DATABASE__PATH", config.database.path.to_str().unwrap().to_string())];
    let env: Vec<(&str, &str)> = db_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = TestServer::start_in(dir, config.clone()).await;
    let key = server.cli_key("alice", &[]);
    // An attachment, named by a record: the backup carries it.
    let photo = b"a photo worth keeping".to_vec();
    let hash: String = sha2::Sha256::digest(&photo).iter().map(|b| format!("{b:02x}")).collect();
    let blob_url = server.url(&format!("/api/blobs/{hash}"));
    let r = server.client.put(&blob_url).bearer_auth(&key).body(photo.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let image = json!({"changes": {"imageBlobs": [{"id": "img", "version": 1, "data": {"sha256": hash}}]}});
    push_ok(&server, &key, &image).await;

    // A bounded push loop runs while the backup is taken.
    const PUSHES: usize = 120;
    let done = Arc::new(AtomicUsize::new(0));
    let pusher = {
        let (client, url, key, done) = (server.client.clone(), server.url("/api/sync/push"), key.clone(), done.clone());
        tokio::spawn(async move {
            for n in 0..PUSHES {
                let r = client.post(&url).bearer_auth(&key).json(&batch(n)).send().await.unwrap();
                assert_eq!(r.status(), 200);
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    for _ in 0..500 {
        if done.load(Ordering::SeqCst) >= 30 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before_backup = done.load(Ordering::SeqCst);
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("accord-backup.db");
    let file_arg = file.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking({
        let (file_arg, env) = (file_arg.clone(), db_env.clone());
        move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            cli(&["backup", &file_arg], &env, None)
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("integrity check ok"), "{said}");
    assert!(said.contains("copied 1 blob objects"), "{said}");
    pusher.await.unwrap();
    assert!(done.load(Ordering::SeqCst) == PUSHES);
    // A backup never overwrites a file.
    assert!(!cli(&["backup", &file_arg], &env, None).status.success());
    let late_cursor = pull(&server, &key, "").await["cursor"].as_str().unwrap().to_string();
    server.stop().await;

    // Restoring onto a machine that lost its blob folder too.
    std::fs::remove_dir_all(data.path().join("blobs")).unwrap();
    let out = cli(&["restore", &file_arg], &env, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = TestServer::start_in(tempfile::tempdir().unwrap(), config).await;
    let blob_url = server.url(&format!("/api/blobs/{hash}"));
    let r = server.client.get(&blob_url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), photo.as_slice());

    // A cursor from after the backup is answered 410: the client resyncs.
    let r = server.get(&format!("/api/sync/pull?since={late_cursor}"), &key).send().await.unwrap();
    expect_problem(r, 410).await;
    // The copy holds every push acknowledged before the backup began, and
    // each push whole or not at all.
    let restored: BTreeSet<String> =
        pull_all(&server, &key).await.into_iter().map(|(_, r)| r["id"].as_str().unwrap().to_string()).collect();
    let whole: Vec<usize> = (0..PUSHES).filter(|n| restored.contains(&format!("b{n:03}-0"))).collect();
    for n in 0..PUSHES {
        let present = (0..5).filter(|i| restored.contains(&format!("b{n:03}-{i}"))).count();
        assert!(present == 0 || present == 5, "push {n} is partly present");
    }
    assert!(whole.len() >= before_backup, "{} pushes restored, {before_backup} acknowledged before", whole.len());
    assert!(whole.len() < PUSHES || before_backup == PUSHES, "the copy is a snapshot, not the end state");

    // The client pushes its changes again with the same pushIds: those in the
    // backup replay, the rest apply, and everyone converges on all of them.
    for n in 0..PUSHES {
        push_ok(&server, &key, &batch(n)).await;
    }
    let all: BTreeSet<String> =
        pull_all(&server, &key).await.into_iter().map(|(_, r)| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(all.len(), PUSHES * 5 + 1, "every batch and the image record");
}
