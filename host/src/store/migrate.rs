//! Schema migrations: numbered `.sql` files from `migrations/`, embedded at build time.
//!
//! All pending migrations are applied in one transaction and recorded in
//! `schema_migrations` (and the newest version in SQLite's `user_version`); a
//! database that records a version this binary does not know was written by
//! a newer release and is refused.

use rusqlite::{Connection, TransactionBehavior};

use super::{StoreError, now_ms};

pub(crate) struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The newest schema version this binary knows.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Applies every pending migration; returns how many were applied.
pub fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY NOT NULL,
             name TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         ) STRICT;",
    )?;
    let applied = applied_versions(&tx)?;
    // The newest version recorded either in our table or in SQLite's
    // `user_version` header field (which we keep equal to it, and which
    // outside tools see without knowing our tables).
    let header: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let newest = applied.iter().copied().max().unwrap_or(0).max(header);
    if newest > latest_version() {
        return Err(StoreError::FutureSchema { database: newest, binary: latest_version() });
    }
    let mut count = 0;
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tx.execute_batch(m.sql)
            .map_err(|e| StoreError::Migration(format!("migration {:04}_{} failed: {e}", m.version, m.name)))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            (m.version, m.name, now_ms()),
        )?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        count += 1;
    }
    tx.pragma_update(None, "user_version", latest_version())?;
    tx.commit()?;
    Ok(count)
}

/// True when every known migration is recorded (used by `/readyz`).
pub fn is_current(conn: &Connection) -> Result<bool, StoreError> {
    let applied = applied_versions(conn)?;
    Ok(MIGRATIONS.iter().all(|m| applied.contains(&m.version)))
}

fn applied_versions(conn: &Connection) -> Result<Vec<u32>, StoreError> {
    let mut stmt = conn.prepare("SELECT version FROM schema_migrations")?;
    let rows = stmt.query_map([], |r| r.get::<_, u32>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
