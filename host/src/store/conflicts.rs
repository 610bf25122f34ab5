//! SQL for recorded conflicts.

use rusqlite::{OptionalExtension, Row};

use super::{StoreError, Tx};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictStatus {
    Open,
    Resolved,
}

impl ConflictStatus {
    fn as_sql(self) -> &'static str {
        match self {
            ConflictStatus::Open => "open",
            ConflictStatus::Resolved => "resolved",
        }
    }
}

/// A conflict as stored; `incoming` and `server` are wire-format record JSON.
#[derive(Clone, Debug)]
pub struct ConflictRow {
    pub n: i64,
    pub id: String,
    pub entity: String,
    pub record_id: String,
    pub incoming: String,
    pub server: Option<String>,
    pub reason: String,
    pub status: ConflictStatus,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
}

pub struct NewConflict<'a> {
    pub id: &'a str,
    pub entity: &'a str,
    pub record_id: &'a str,
    pub incoming: &'a str,
    pub server: Option<&'a str>,
    pub reason: &'a str,
    pub created_at: i64,
}

const COLUMNS: &str = "n, id, entity, record_id, incoming, server, reason, status, created_at, resolved_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ConflictRow> {
    let status: String = r.get(7)?;
    Ok(ConflictRow {
        n: r.get(0)?,
        id: r.get(1)?,
        entity: r.get(2)?,
        record_id: r.get(3)?,
        incoming: r.get(4)?,
        server: r.get(5)?,
        reason: r.get(6)?,
        status: if status == "open" { ConflictStatus::Open } else { ConflictStatus::Resolved },
        created_at: r.get(8)?,
        resolved_at: r.get(9)?,
    })
}

impl Tx<'_> {
    pub fn insert_conflict(&self, user: &str, c: &NewConflict<'_>) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO conflicts (id, user_id, entity, record_id, incoming, server, reason, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8)",
            )?
            .execute((c.id, user, c.entity, c.record_id, c.incoming, c.server, c.reason, c.created_at))?;
        Ok(())
    }

    /// One page of the user's conflicts after position `after`, oldest first.
    pub fn conflicts(
        &self,
        user: &str,
        status: Option<ConflictStatus>,
        entity: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ConflictRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM conflicts
             WHERE user_id = ?1 AND n > ?2 AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR entity = ?4)
             ORDER BY n LIMIT ?5"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map((user, after, status.map(ConflictStatus::as_sql), entity, limit), from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn conflict(&self, user: &str, id: &str) -> Result<Option<ConflictRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM conflicts WHERE user_id = ?1 AND id = ?2");
        Ok(self.conn.prepare_cached(&sql)?.query_row((user, id), from_row).optional()?)
    }

    pub fn mark_conflict_resolved(&self, user: &str, id: &str, now: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE conflicts SET status = 'resolved', resolved_at = ?3 WHERE user_id = ?1 AND id = ?2",
            )?
            .execute((user, id, now))?;
        Ok(())
    }
}
