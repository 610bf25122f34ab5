//! Several hosts on one PostgreSQL database: what one host writes, every host
//! serves, wakes, replays and refuses; a host killed mid-push loses nothing it
//! acknowledged; the change listener survives losing its connection; a
//! database that cannot be reached is a 503, not a crash.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};

use crate::support::{
    DbEnv, RemoteServer, Served, TestServer, cli, expect_problem, fresh_database, pg, pg_query, postgres_only, push_ok,
    spawn_serve,
};
use crate::sync_pull::next_event;

fn rec(id: &str, version: i64, data: Value) -> Value {
    json!({"id": id, "version": version, "data": data})
}

/// `accord serve` on `db`, on a free port, with 1 s heartbeats.
fn host(dir: &Path, db: &DbEnv) -> Served {
    let cache = std::env::temp_dir().join("accord-test-policy-cache");
    spawn_serve(
        dir,
        &[
            ("ACCORD_SERVER__BIND", "127.0.0.1:0"),
            db.pair(),
            ("ACCORD_POLICIES__CACHE_DIR", cache.to_str().unwrap()),
            ("ACCORD_SYNC__HEARTBEAT_SECS", "1"),
        ],
    )
}

/// Two `accord serve` processes, A and B, on one fresh database.
struct Hosts {
    _dir: tempfile::TempDir,
    db: DbEnv,
    a: Served,
    b: Served,
    client: Client,
}

impl Hosts {
    fn start() -> Hosts {
        let dir = tempfile::tempdir().unwrap();
        let db = fresh_database(&dir.path().join("unused.db"));
        let a = host(dir.path(), &db);
        let b = host(dir.path(), &db);
        Hosts { _dir: dir, db, a, b, client: Client::new() }
    }

    /// A key for `user` made with the CLI (default scopes).
    fn key(&self, user: &str, name: &str) -> String {
        let out = cli(&["keys", "create", "--user", user, "--name", name], &[self.db.pair()], None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Rows of `sql` on the shared database.
    fn sql(&self, sql: &str) -> String {
        pg::cluster().psql(&self.db.value, sql)
    }
}

fn url(host: &Served, path: &str) -> String {
    format!("http://{}{path}", host.addr)
}

/// POSTs a push; returns the status and the body exactly as sent.
async fn push_raw(client: &Client, host: &Served, key: &str, body: &Value) -> (u16, bytes::Bytes) {
    let r = client.post(url(host, "/api/sync/push")).bearer_auth(key).json(body).send().await.expect("push request");
    (r.status().as_u16(), r.bytes().await.expect("push body"))
}

async fn push_json(client: &Client, host: &Served, key: &str, body: &Value) -> Value {
    let (status, bytes) = push_raw(client, host, key, body).await;
    assert_eq!(status, 200, "push failed: {}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap()
}

/// Pulls from `cursor` until `hasMore` is false (small pages), moving the
/// cursor; returns the ids of the records seen, in order.
async fn follow(client: &Client, host: &Served, key: &str, cursor: &mut String) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..10_000 {
        let r = client
            .get(url(host, &format!("/api/sync/pull?since={cursor}&limit=7")))
            .bearer_auth(key)
            .send()
            .await
            .expect("pull request");
        assert_eq!(r.status(), 200, "pull from {cursor:?} through {}", host.addr);
        let page: Value = r.json().await.unwrap();
        for records in page["changes"].as_object().unwrap().values() {
            ids.extend(records.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()));
        }
        *cursor = page["cursor"].as_str().unwrap().to_string();
        if page["hasMore"] == false {
            return ids;
        }
    }
    panic!("pull never finished");
}

/// The last change sequence of `user`, from the database itself.
fn last_seq(hosts: &Hosts, user: &str) -> i64 {
    hosts.sql(&format!("SELECT coalesce(max(last_seq), 0) FROM user_state WHERE user_id = '{user}'")).parse().unwrap()
}

fn count(hosts: &Hosts, table: &str) -> i64 {
    hosts.sql(&format!("SELECT count(*) FROM {table}")).parse().unwrap()
}

#[tokio::test]
async fn hosts_share_pushes_events_long_polls_and_push_ids() {
    if postgres_only("two `accord serve` processes on one database") {
        return;
    }
    let hosts = Hosts::start();
    let (a, b, c) = (&hosts.a, &hosts.b, &hosts.client);
    let key = hosts.key("alice", "laptop");

    // A push through A is pulled through B.
    push_json(c, a, &key, &json!({"changes": {"pages": [rec("p1", 1, json!({"t": "from a"}))]}})).await;
    let all = RemoteServer::new(&b.addr).pull_all(&key).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1["data"]["t"], "from a");

    // An event stream on B hears a push on A.
    let r = c.get(url(b, "/api/sync/events")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let (mut buf, mut log) = (String::new(), String::new());
    let pushed = push_json(c, a, &key, &json!({"changes": {"pages": [rec("p2", 1, json!({}))]}})).await;
    let frame = next_event(&mut stream, &mut buf, &mut log, "change", Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("B's stream did not hear A's push; frames: {log:?}"));
    let data: Value = serde_json::from_str(frame.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(data["cursor"], pushed["cursor"], "the event's cursor is the push's");

    // A long poll on B is answered by a push on A, long before it times out.
    let cursor = pushed["cursor"].as_str().unwrap().to_string();
    let waiting =
        tokio::spawn(c.get(url(b, &format!("/api/sync/pull?since={cursor}&wait=10"))).bearer_auth(&key).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pushed_at = Instant::now();
    push_json(c, a, &key, &json!({"changes": {"pages": [rec("p3", 1, json!({}))]}})).await;
    let page: Value = waiting.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(page["changes"]["pages"][0]["id"], "p3", "{page}");
    assert!(pushed_at.elapsed() < Duration::from_secs(5), "the long poll was not woken: {:?}", pushed_at.elapsed());

    // A pushId pushed on A and retried on B gets A's response byte for byte,
    // conflicts (whose server records are spliced back in) included.
    let setup = json!({"changes": {
        "contexts": [rec("c1", 1, json!({"name": "home"}))],
        "topics": [rec("t1", 1, json!({"title": "a", "contextId": "c1"}))],
        "ratings": [rec("r1", 5, json!({"topicId": "t1", "stars": 4}))],
    }});
    push_json(c, a, &key, &setup).await;
    let body = json!({"pushId": "retry-1", "changes": {
        "pages": [rec("p4", 1, json!({"t": 4}))],
        "ratings": [rec("r1", 2, json!({"topicId": "t1", "stars": 1}))],
    }});
    let (status, first) = push_raw(c, a, &key, &body).await;
    assert_eq!(status, 200);
    let first_json: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(first_json["results"]["ratings"][0]["status"], "conflict", "{first_json}");
    let seq = last_seq(&hosts, "alice");
    for (name, host) in [("B", b), ("A", a), ("B", b)] {
        let (status, again) = push_raw(c, host, &key, &body).await;
        assert_eq!(status, 200);
        assert_eq!(again, first, "the retry through {name} is not A's response byte for byte");
    }
    assert_eq!(last_seq(&hosts, "alice"), seq, "a retry wrote something");

    // The same pushId sent to A and B at once: identical answers, applied once.
    for round in 0..6 {
        let body = json!({"pushId": format!("dup-{round}"), "changes": {
            "pages": [rec(&format!("dup-{round}"), 1, json!({"round": round}))],
            "ratings": [rec("r1", 1, json!({"topicId": "t1", "stars": round}))],
        }});
        let (seq, conflicts, logged) =
            (last_seq(&hosts, "alice"), count(&hosts, "conflicts"), count(&hosts, "push_log"));
        let sends = (0..6).map(|i| push_raw(c, if i % 2 == 0 { a } else { b }, &key, &body));
        let answers = futures_util::future::join_all(sends).await;
        for (status, bytes) in &answers {
            assert_eq!(*status, 200, "round {round}: {}", String::from_utf8_lossy(bytes));
            assert_eq!(bytes, &answers[0].1, "round {round}: answers differ");
        }
        assert_eq!(last_seq(&hosts, "alice"), seq + 1, "round {round}: applied more than once");
        assert_eq!(count(&hosts, "conflicts"), conflicts + 1, "round {round}: one conflict, once");
        assert_eq!(count(&hosts, "push_log"), logged + 1, "round {round}");
    }
    let all = RemoteServer::new(&a.addr).pull_all(&key).await;
    assert_eq!(all.iter().filter(|(_, r)| r["id"].as_str().unwrap().starts_with("dup-")).count(), 6);
}

#[tokio::test]
async fn concurrent_pushes_through_both_hosts_converge_and_cursors_never_skip() {
    if postgres_only("two `accord serve` processes on one database") {
        return;
    }
    let hosts = Arc::new(Hosts::start());
    let key = hosts.key("alice", "laptop");
    const CLIENTS: usize = 2;
    const PUSHES: usize = 50;
    let done = Arc::new(AtomicUsize::new(0));

    // A follower pulls incrementally all along, through A and B in turn: it
    // must end up with every record exactly once.
    let follower = {
        let (hosts, key, done) = (hosts.clone(), key.clone(), done.clone());
        tokio::spawn(async move {
            let (mut cursor, mut seen, mut turn) = (String::new(), Vec::new(), 0usize);
            while done.load(Ordering::SeqCst) < CLIENTS {
                let host = if turn % 2 == 0 { &hosts.a } else { &hosts.b };
                seen.extend(follow(&hosts.client, host, &key, &mut cursor).await);
                turn += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            seen.extend(follow(&hosts.client, &hosts.b, &key, &mut cursor).await);
            seen
        })
    };
    // Each client alternates hosts; the first takes a cursor half-way through.
    let writers: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (hosts, key, done) = (hosts.clone(), key.clone(), done.clone());
            tokio::spawn(async move {
                let (mut acked, mut mid) = (Vec::new(), None);
                for n in 0..PUSHES {
                    let host = if (n + client) % 2 == 0 { &hosts.a } else { &hosts.b };
                    let ids: Vec<String> = (0..2).map(|k| format!("w{client}-{n}-{k}")).collect();
                    let body = json!({"pushId": format!("w{client}-{n}"), "changes": {
                        "pages": ids.iter().map(|id| rec(id, 1, json!({"n": n}))).collect::<Vec<_>>()
                    }});
                    push_json(&hosts.client, host, &key, &body).await;
                    acked.extend(ids);
                    if client == 0 && n == PUSHES / 2 {
                        let mut cursor = String::new();
                        let before = follow(&hosts.client, &hosts.b, &key, &mut cursor).await;
                        mid = Some((cursor, before));
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
                (acked, mid)
            })
        })
        .collect();
    let mut acked = BTreeSet::new();
    let mut mid = None;
    for w in writers {
        let (ids, m) = w.await.unwrap();
        acked.extend(ids);
        mid = mid.or(m);
    }
    assert_eq!(acked.len(), CLIENTS * PUSHES * 2);

    // Everything acknowledged is pulled through either host.
    for (name, host) in [("A", &hosts.a), ("B", &hosts.b)] {
        let all: BTreeSet<String> = RemoteServer::new(&host.addr)
            .pull_all(&key)
            .await
            .into_iter()
            .map(|(_, r)| r["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(all, acked, "a full pull through {name}");
    }
    // The cursor taken half-way through, continued through A, misses nothing and repeats nothing.
    let (mut cursor, before) = mid.expect("a cursor was taken half-way");
    let after = follow(&hosts.client, &hosts.a, &key, &mut cursor).await;
    let (before_set, after_set): (BTreeSet<_>, BTreeSet<_>) = (before.iter().collect(), after.iter().collect());
    assert!(before_set.is_disjoint(&after_set), "a record was pulled both before and after the half-way cursor");
    assert_eq!(before.len() + after.len(), acked.len(), "the half-way cursor skipped or repeated records");
    assert!(!before.is_empty() && !after.is_empty());
    // The incremental follower saw each record exactly once.
    let seen = follower.await.unwrap();
    let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), seen_set.len(), "the follower pulled a record twice");
    assert_eq!(seen_set, acked, "the follower skipped records");
}

#[tokio::test]
async fn a_key_revoked_through_one_host_is_refused_by_the_other() {
    if postgres_only("two `accord serve` processes on one database") {
        return;
    }
    let hosts = Hosts::start();
    let (a, b, c) = (&hosts.a, &hosts.b, &hosts.client);
    let admin = hosts.key("alice", "admin");
    let phone = hosts.key("alice", "phone");
    let r = c.get(url(b, "/api/sync/pull")).bearer_auth(&phone).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = c.get(url(b, "/api/sync/events")).bearer_auth(&phone).send().await.unwrap().bytes_stream();

    let keys: Value = c.get(url(a, "/api/api-keys")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    let id = keys.as_array().unwrap().iter().find(|k| k["name"] == "phone").unwrap()["id"].clone();
    let r = c.delete(url(a, &format!("/api/api-keys/{}", id.as_str().unwrap()))).bearer_auth(&admin).send().await;
    assert_eq!(r.unwrap().status(), 204);

    // B refuses it on its very next request, and ends its open stream.
    let r = c.get(url(b, "/api/sync/pull")).bearer_auth(&phone).send().await.unwrap();
    expect_problem(r, 401).await;
    let r = c.post(url(b, "/api/sync/push")).bearer_auth(&phone).json(&json!({"changes": {}})).send().await.unwrap();
    expect_problem(r, 401).await;
    assert!(crate::support::ends_within(&mut stream, 5).await, "B kept the revoked key's event stream open");
    let r = c.get(url(b, "/api/sync/pull")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 200, "the other key still works");
}

#[tokio::test]
async fn killing_a_host_mid_push_loses_nothing_it_acknowledged() {
    if postgres_only("two `accord serve` processes on one database") {
        return;
    }
    let mut hosts = Hosts::start();
    let key = hosts.key("alice", "laptop");
    const PER_PUSH: usize = 20;
    let body = |push_id: &str| {
        json!({"pushId": push_id, "changes": {"pages": (0..PER_PUSH)
            .map(|i| rec(&format!("{push_id}-{i}"), 1, json!({"i": i, "filler": "x".repeat(500)})))
            .collect::<Vec<_>>()}})
    };
    // Four clients push through A, one push after another, until A is gone.
    let a_url = url(&hosts.a, "/api/sync/push");
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (a_url, key, client) = (a_url.clone(), key.clone(), hosts.client.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for n in 0..1000 {
                    let push_id = format!("k{c}-{n}");
                    let r = client.post(&a_url).bearer_auth(&key).json(&body(&push_id)).send().await;
                    let acked = matches!(&r, Ok(r) if r.status() == 200);
                    // Read the whole answer: a 200 whose body was cut off is not an acknowledgement.
                    let acked = acked && r.unwrap().bytes().await.is_ok();
                    outcomes.push((push_id, acked));
                    if !acked {
                        break;
                    }
                }
                outcomes
            })
        })
        .collect();
    let mut delay = [0u8; 2];
    getrandom::fill(&mut delay).unwrap();
    tokio::time::sleep(Duration::from_millis(400 + u64::from(u16::from_le_bytes(delay)) % 600)).await;
    Command::new("kill").args(["-9", &hosts.a.child.id().to_string()]).status().unwrap();
    hosts.a.child.wait().unwrap();

    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.extend(c.await.unwrap());
    }
    let acked: Vec<&String> = outcomes.iter().filter(|(_, ok)| *ok).map(|(id, _)| id).collect();
    assert!(!acked.is_empty(), "nothing was acknowledged before the kill; the test proves nothing");
    let all = RemoteServer::new(&hosts.b.addr).pull_all(&key).await;
    let present = |push_id: &str| {
        all.iter().filter(|(_, r)| r["id"].as_str().unwrap().starts_with(&format!("{push_id}-"))).count()
    };
    for (push_id, ok) in &outcomes {
        let n = present(push_id);
        assert!(n == 0 || n == PER_PUSH, "{push_id}: {n} of {PER_PUSH} records (half a push)");
        assert!(!ok || n == PER_PUSH, "{push_id} was acknowledged by A but is missing through B");
    }
    // The pushes A did not answer complete through B, exactly once.
    let unanswered: Vec<&String> = outcomes.iter().filter(|(_, ok)| !*ok).map(|(id, _)| id).collect();
    for push_id in &unanswered {
        push_json(&hosts.client, &hosts.b, &key, &body(push_id)).await;
    }
    let all = RemoteServer::new(&hosts.b.addr).pull_all(&key).await;
    assert_eq!(all.len(), outcomes.len() * PER_PUSH);
    eprintln!("{} pushes acknowledged before the kill, {} retried on B", acked.len(), unanswered.len());
}

/// The backends of this database whose last statement was LISTEN (the change listener).
fn listeners(server: &TestServer) -> String {
    pg_query(
        &server.config,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
}

#[tokio::test]
async fn the_change_listener_reconnects_and_streams_resync() {
    if postgres_only("the LISTEN/NOTIFY change listener") {
        return;
    }
    let server = TestServer::start_with(|c| c.sync.heartbeat_secs = 1).await;
    let key = server.cli_key("alice", &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while listeners(&server) != "1" {
        assert!(Instant::now() < deadline, "the change listener never LISTENed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = server.get("/api/sync/events", &key).send().await.unwrap().bytes_stream();
    let (mut buf, mut log) = (String::new(), String::new());
    push_ok(&server, &key, &json!({"changes": {"pages": [rec("p1", 1, json!({}))]}})).await;
    assert!(next_event(&mut stream, &mut buf, &mut log, "change", Duration::from_secs(5)).await.is_some());

    // Cut the listener's connection from the database side.
    let killed = pg_query(
        &server.config,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    );
    assert_eq!(killed, "1");
    let started = Instant::now();
    assert!(
        next_event(&mut stream, &mut buf, &mut log, "resync", Duration::from_secs(5)).await.is_some(),
        "no resync after the listener lost its connection; frames: {log:?}"
    );
    eprintln!("resync {:?} after the listener's connection was cut", started.elapsed());
    // The listener is back: a later push arrives as a change.
    let pushed = push_ok(&server, &key, &json!({"changes": {"pages": [rec("p2", 1, json!({}))]}})).await;
    let frame = next_event(&mut stream, &mut buf, &mut log, "change", Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no change after the listener reconnected; frames: {log:?}"));
    assert!(frame.contains(pushed["cursor"].as_str().unwrap()), "{frame}");
    assert_eq!(listeners(&server), "1");
}

#[tokio::test]
async fn an_unreachable_database_is_503_and_not_ready_until_it_is_back() {
    if postgres_only("a PostgreSQL database that stops answering") {
        return;
    }
    let server = TestServer::start().await;
    let key = server.cli_key("alice", &[]);
    push_ok(&server, &key, &json!({"changes": {"pages": [rec("p1", 1, json!({}))]}})).await;
    assert_eq!(server.client.get(server.url("/readyz")).send().await.unwrap().status(), 200);

    // Only this test's database goes away: no new connections, the open ones cut.
    let url = server.config.database.url.clone().unwrap();
    let name = url.rsplit('/').next().unwrap().to_string();
    let cluster = pg::cluster();
    let admin = cluster.url("postgres");
    cluster.psql(&admin, &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
    cluster.psql(
        &admin,
        &format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}'"),
    );

    let r = server.get("/api/sync/pull", &key).send().await.unwrap();
    expect_problem(r, 503).await;
    let r = server.post("/api/sync/push", &key, &json!({"changes": {}})).send().await.unwrap();
    expect_problem(r, 503).await;
    let r = server.client.get(server.url("/readyz")).send().await.unwrap();
    expect_problem(r, 503).await;
    assert_eq!(server.client.get(server.url("/healthz")).send().await.unwrap().status(), 200, "still alive");

    // Back again: ready, and requests work without a restart.
    cluster.psql(&admin, &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.client.get(server.url("/readyz")).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "not ready again after the database came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    push_ok(&server, &key, &json!({"changes": {"pages": [rec("p2", 1, json!({}))]}})).await;
    assert_eq!(crate::support::pull_all(&server, &key).await.len(), 2);
}

#[test]
fn serve_and_migrate_refuse_an_unreachable_database_url_by_name() {
    // Runs on either backend: nothing listens at this URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://accord:hunter2@127.0.0.1:{port}/accord");
    for command in ["serve", "migrate"] {
        let out = cli(&[command], &[("ACCORD_DATABASE__URL", &url), ("ACCORD_SERVER__BIND", "127.0.0.1:0")], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command} started without its database");
        assert!(stderr.contains("database.url"), "{command}: {stderr}");
        assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{command}: {stderr}");
        assert!(stderr.contains("onnection refused"), "{command} does not say why: {stderr}");
        assert!(!stderr.contains("hunter2"), "{command} printed the password: {stderr}");
    }
}
