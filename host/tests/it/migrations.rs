//! Migrations: applied once, recorded, and a newer database refused.

use crate::support::cli;

fn versions(db: &std::path::Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT version FROM schema_migrations ORDER BY version").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn fresh_rerun_and_future() {
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
