//! All-or-nothing under dropped connections and `kill -9`.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use crate::support::{TestServer, cli, pull_all, push_ok, spawn_serve};

fn batch(prefix: &str, n: usize) -> Value {
    let filler = "x".repeat(900);
    json!({"pushId": format!("push-{prefix}"), "changes": {"pages": (0..n).map(|i| json!({"id": format!("{prefix}-{i}"), "version": 1, "data": {"i": i, "filler": filler}})).collect::<Vec<_>>()}})
}

fn count(records: &[(String, Value)], prefix: &str) -> usize {
    records.iter().filter(|(_, r)| r["id"].as_str().unwrap().starts_with(&format!("{prefix}-"))).count()
}

#[tokio::test]
async fn dropped_connections_leave_all_or_nothing() {
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    let addr = server.base.trim_start_matches("http://").to_string();

    // Cut off mid-upload: nothing is applied.
    let body = batch("half", 1000).to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/sync/push HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body.as_bytes()[..body.len() / 2]).await.unwrap();
    drop(tcp);

    // Whole body sent, connection dropped before the response: all of it, or (never half) none.
    let body = batch("whole", 1000).to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/sync/push HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body.as_bytes()).await.unwrap();
    tcp.flush().await.unwrap();
    drop(tcp);

    let mut stable = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let all = pull_all(&server, &key).await;
        assert_eq!(count(&all, "half"), 0, "a push cut off mid-upload wrote something");
        let whole = count(&all, "whole");
        assert!(whole == 0 || whole == 1000, "half a push is visible: {whole}");
        if stable == Some(whole) && whole == 1000 {
            break;
        }
        stable = Some(whole);
    }
    // The server is healthy and a retry with the same pushId completes the push exactly once.
    push_ok(&server, &key, &batch("whole", 1000)).await;
    assert_eq!(count(&pull_all(&server, &key).await, "whole"), 1000);
}

/// Starts `accord serve` as a child on a fresh port over `db`.
fn serve_child(dir: &std::path::Path, db: &crate::support::DbEnv) -> crate::support::Served {
    spawn_serve(dir, &[("ACCORD_SERVER__BIND", "127.0.0.1:0"), db.pair(), ("ACCORD_DATABASE__SYNCHRONOUS", "full")])
}

#[tokio::test]
async fn kill_dash_nine_mid_push_loses_nothing_acknowledged_and_writes_no_half() {
    let dir = tempfile::tempdir().unwrap();
    // On PostgreSQL only `accord` is killed, never the database server: the same guarantees hold.
    let db = crate::support::fresh_database(&dir.path().join("crash.db"));
    let out = cli(&["keys", "create", "--user", "alice", "--name", "crash"], &[db.pair()], None);
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let client = reqwest::Client::new();
    let mut outcomes = Vec::new();

    for round in 0..10 {
        let prefix = format!("r{round}");
        let mut served = serve_child(dir.path(), &db);
        let url = format!("http://{}/api/sync/push", served.addr);
        let body = batch(&prefix, 5000);
        let request = client.post(&url).bearer_auth(&key).json(&body).send();
        let request = tokio::spawn(request);
        let mut delay = [0u8; 2];
        getrandom::fill(&mut delay).unwrap();
        tokio::time::sleep(Duration::from_millis(u64::from(u16::from_le_bytes(delay)) % 400)).await;
        Command::new("kill").args(["-9", &served.child.id().to_string()]).status().unwrap();
        served.child.wait().unwrap();
        let acknowledged = matches!(request.await.unwrap(), Ok(r) if r.status() == 200);

        let served = serve_child(dir.path(), &db);
        let server_view = crate::support::RemoteServer::new(&served.addr);
        let all = server_view.pull_all(&key).await;
        let n = count(&all, &prefix);
        assert!(n == 0 || n == 5000, "round {round}: {n} of 5000 records survived");
        assert!(!acknowledged || n == 5000, "round {round}: an acknowledged push was lost");
        outcomes.push(n);
        // Retrying with the same pushId completes it exactly once.
        let r = client
            .post(format!("http://{}/api/sync/push", served.addr))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(count(&server_view.pull_all(&key).await, &prefix), 5000);
        drop(served);
    }
    eprintln!("records present after each kill: {outcomes:?}");
}
