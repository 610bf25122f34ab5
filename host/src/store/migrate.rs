//! Schema migrations: numbered `.sql` files from `migrations/` (SQLite) and
//! `migrations/postgres/`, embedded at build time. Both backends number the
//! same logical schema alike, so their newest versions are equal.
//!
//! All pending migrations are applied in one transaction and recorded in
//! `schema_migrations` (for SQLite also the newest version in `user_version`);
//! a database that records a version this binary does not know was written by
//! a newer release and is refused. On PostgreSQL an advisory lock keeps two
//! hosts starting at once from migrating together.

use rusqlite::{Connection, TransactionBehavior};

use super::sql::Conn;
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

/// Key of the advisory lock held while migrating a PostgreSQL database.
const PG_MIGRATION_LOCK: i64 = 0x6163_636f_7264; // "accord"

/// Applies every pending PostgreSQL migration; returns how many were applied.
pub fn migrate_pg(client: &mut postgres::Client) -> Result<usize, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at BIGINT NOT NULL
         )",
    )?;
    let applied: Vec<u32> = tx
        .query("SELECT version FROM schema_migrations", &[])?
        .iter()
        .map(|r| u32::try_from(r.get::<_, i64>(0)).unwrap_or(u32::MAX))
        .collect();
    let newest = applied.iter().copied().max().unwrap_or(0);
    if newest > latest_version() {
        return Err(StoreError::FutureSchema { database: newest, binary: latest_version() });
    }
    let mut count = 0;
    // A fresh database gets the whole schema at once (the first file holds it).
    for m in PG_MIGRATIONS.iter().filter(|m| !applied.contains(&m.version) && m.version > newest) {
        tx.batch_execute(m.sql).map_err(|e| {
            StoreError::Migration(format!("migration postgres/{:04}_{} failed: {e}", m.version, m.name))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&i64::from(m.version), &m.name, &now_ms()],
        )?;
        tracing::info!(version = m.version, name = m.name, "applied migration (postgres)");
        count += 1;
    }
    tx.commit()?;
    Ok(count)
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

/// True when the newest known migration is recorded (used by `/readyz`).
pub fn is_current(conn: &Conn<'_>) -> Result<bool, StoreError> {
    let newest = conn.first("SELECT max(version) FROM schema_migrations", &[], |r| r.opt_int(0))?.flatten();
    Ok(newest == Some(i64::from(latest_version())))
}

fn applied_versions(conn: &Connection) -> Result<Vec<u32>, StoreError> {
    let mut stmt = conn.prepare("SELECT version FROM schema_migrations")?;
    let rows = stmt.query_map([], |r| r.get::<_, u32>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_backends_end_at_the_same_schema_version() {
        let pg = super::PG_MIGRATIONS.last().map_or(0, |m| m.version);
        assert_eq!(pg, super::latest_version(), "migrations/postgres must reach the SQLite schema version");
    }
}
