//! Migrations: applied once, recorded, and a newer database refused.

use crate::support::{Backend, backend, cli};

fn versions(db: &std::path::Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT version FROM schema_migrations ORDER BY version").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn fresh_rerun_and_future() {
    if backend() == Backend::Postgres {
        return fresh_rerun_and_future_on_postgres();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let env = [("ACCORD_DATABASE__PATH", db.to_str().unwrap())];

    let out = cli(&["migrate"], &env, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = versions(&db);
    assert!(!first.is_empty() && first[0] == 1);
    let latest = accord::store::latest_version() as i64;
    assert_eq!(*first.last().unwrap(), latest);

    // Re-running applies nothing and changes nothing.
    let out = cli(&["migrate"], &env, None);
    assert!(out.status.success());
    assert_eq!(versions(&db), first);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'api_keys'", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 1);

    assert_eq!(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap(), latest);
    // A newer `user_version` in the file header alone is refused too.
    conn.pragma_update(None, "user_version", latest + 5).unwrap();
    let out = cli(&["migrate"], &env, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("newer"));
    conn.pragma_update(None, "user_version", latest).unwrap();

    // A database that records a migration this binary does not know is refused.
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, 'from_the_future', 0)",
        [latest + 1],
    )
    .unwrap();
    drop(conn);
    for cmd in ["migrate", "serve"] {
        let out = cli(&[cmd], &env, None);
        assert!(!out.status.success(), "{cmd} must refuse a newer database");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("newer") && err.contains(&(latest + 1).to_string()), "{err}");
    }
}

/// The same on PostgreSQL, but for SQLite's `user_version` header.
fn fresh_rerun_and_future_on_postgres() {
    let db = crate::support::fresh_database(std::path::Path::new("/nonexistent/unused.db"));
    let env = [db.pair()];
    let query = |sql: &str| crate::support::pg::cluster().psql(&db.value, sql);
    let versions = || -> Vec<i64> {
        query("SELECT version FROM schema_migrations ORDER BY version").lines().map(|v| v.parse().unwrap()).collect()
    };

    let out = cli(&["migrate"], &env, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A fresh PostgreSQL database starts at schema 4 (the first PostgreSQL
    // file holds the whole schema) and goes on to the newest.
    let first = versions();
    let latest = accord::store::latest_version() as i64;
    assert_eq!(first.first(), Some(&4));
    assert_eq!(first.last(), Some(&latest));

    // Re-running applies nothing and changes nothing.
    let out = cli(&["migrate"], &env, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(versions(), first);
    assert_eq!(query("SELECT to_regclass('api_keys') IS NOT NULL"), "t");

    // A database that records a migration this binary does not know is refused.
    query(&format!(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES ({}, 'from_the_future', 0)",
        latest + 1
    ));
    for cmd in ["migrate", "serve"] {
        let out = cli(&[cmd], &env, None);
        assert!(!out.status.success(), "{cmd} must refuse a newer database");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("newer") && err.contains(&(latest + 1).to_string()), "{err}");
    }
}

/// A database written by schema 2 (global change sequence, conflicts holding
/// a copy of the server record, plain-text pushId responses) is upgraded in
/// place: per-user sequences, conflicts by reference, old cursors answered 410.
#[tokio::test]
async fn schema_2_upgrades_to_per_user_sequences() {
    if crate::support::sqlite_only(
        "upgrades a SQLite file written by schema 2; PostgreSQL starts at the current schema",
    ) {
        return;
    }
    use base64::Engine as _;
    use serde_json::Value;

    use crate::support::{TestServer, expect_problem, pull, test_config};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("accord.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(include_str!("../../../migrations/0001_users_and_api_keys.sql")).unwrap();
    conn.execute_batch(include_str!("../../../migrations/0002_sync.sql")).unwrap();
    conn.execute_batch(
        r#"CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT;
        INSERT INTO schema_migrations VALUES (1, 'users_and_api_keys', 0), (2, 'sync', 0);
        PRAGMA user_version = 2;
        UPDATE sync_state SET last_seq = 3, epoch = 'oldepoch';
        INSERT INTO records VALUES ('alice', 'pages', 'p1', 2, 0, '{"t":"now"}', 10, 3);
        INSERT INTO records VALUES ('bob', 'pages', 'p1', 1, 0, '{"t":"bob"}', 10, 2);
        INSERT INTO records VALUES ('alice', 'pages', 'p2', 1, 0, '{}', 10, 1);
        INSERT INTO conflicts (id, user_id, entity, record_id, incoming, server, reason, status, created_at)
          VALUES ('c1', 'alice', 'pages', 'p1', '{"id":"p1","version":1,"baseVersion":0,"deleted":false,"data":{"t":"mine"}}',
                  '{"id":"p1","version":1,"deleted":false,"data":{"t":"then"},"updatedAt":5}', 'stale', 'open', 7);
        INSERT INTO push_log VALUES ('alice', 'push-1', x'00', '{"results":{}}', 9);"#,
    )
    .unwrap();
    drop(conn);

    let out = cli(&["migrate"], &[("ACCORD_DATABASE__PATH", db.to_str().unwrap())], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let state = |user: &str| -> (i64, i64, i64, i64) {
        conn.query_row(
            "SELECT last_seq, records, bytes, open_conflicts FROM user_state WHERE user_id = ?1",
            [user],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
    };
    let incoming_len = r#"{"id":"p1","version":1,"baseVersion":0,"deleted":false,"data":{"t":"mine"}}"#.len() as i64;
    assert_eq!(state("alice"), (3, 2, 11 + 2 + incoming_len + 14, 1));
    assert_eq!(state("bob"), (2, 1, 11, 0));
    let history: String = conn
        .query_row("SELECT data FROM record_history WHERE user_id = 'alice' AND id = 'p1' AND version = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(history, r#"{"t":"then"}"#, "the conflict's copy of the server record moved to history");
    let epoch: String = conn.query_row("SELECT epoch FROM sync_state", [], |r| r.get(0)).unwrap();
    assert_ne!(epoch, "oldepoch");
    drop(conn);

    let mut config = test_config(dir.path());
    config.database.path = db;
    let server = TestServer::start_in(dir, config).await;
    let key = server.cli_key("alice", &[]);
    let old = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("oldepoch.3");
    let r = server.get(&format!("/api/sync/pull?since={old}"), &key).send().await.unwrap();
    expect_problem(r, 410).await;
    assert_eq!(pull(&server, &key, "").await["changes"]["pages"].as_array().unwrap().len(), 2);
    let list: Value = server.get("/api/sync/conflicts", &key).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["conflicts"][0]["server"]["data"]["t"], "then");
    assert_eq!(list["conflicts"][0]["incoming"]["data"]["t"], "mine");
}
