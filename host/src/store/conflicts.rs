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

/// A conflict as stored: `incoming` is wire-format record JSON; the server's
/// record it met is named by version (kept in history while the conflict is open).
#[derive(Clone, Debug)]
pub struct ConflictRow {
    pub n: i64,
    pub id: String,
    pub entity: String,
    pub record_id: String,
    pub incoming: String,
    pub server_version: Option<i64>,
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
    pub server_version: Option<i64>,
    pub reason: &'a str,
    pub created_at: i64,
}

const COLUMNS: &str = "n, id, entity, record_id, incoming, server_version, reason, status, created_at, resolved_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ConflictRow> {
    let status: String = r.get(7)?;
    Ok(ConflictRow {
        n: r.get(0)?,
        id: r.get(1)?,
        entity: r.get(2)?,
        record_id: r.get(3)?,
        incoming: r.get(4)?,
        server_version: r.get(5)?,
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
                "INSERT INTO conflicts (id, user_id, entity, record_id, incoming, server_version, reason, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8)",
            )?
            .execute((c.id, user, c.entity, c.record_id, c.incoming, c.server_version, c.reason, c.created_at))?;
        Ok(())
    }

    /// One page of the user's conflicts after position `after`, oldest first:
    /// at most `limit` rows and, past the first, about `max_bytes` of
    /// incoming records. Returns the rows and whether more follow.
    pub fn conflicts(
        &self,
        user: &str,
        status: Option<ConflictStatus>,
        entity: Option<&str>,
        after: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<ConflictRow>, bool), StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM conflicts
             WHERE user_id = ?1 AND n > ?2 AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR entity = ?4)
             ORDER BY n"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query((user, after, status.map(ConflictStatus::as_sql), entity))?;
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        while let Some(row) = rows.next()? {
            if out.len() >= limit || (!out.is_empty() && bytes >= max_bytes) {
                return Ok((out, true));
            }
            let conflict = from_row(row)?;
            bytes += conflict.incoming.len() + conflict.reason.len() + 128;
            out.push(conflict);
        }
        Ok((out, false))
    }

    pub fn conflict(&self, user: &str, id: &str) -> Result<Option<ConflictRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM conflicts WHERE user_id = ?1 AND id = ?2");
        Ok(self.conn.prepare_cached(&sql)?.query_row((user, id), from_row).optional()?)
    }

    /// Forgets resolved conflicts resolved before `before`; returns how many.
    pub fn purge_resolved_conflicts(&self, before: i64) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM conflicts WHERE status = 'resolved' AND resolved_at < ?1")?
            .execute([before])?)
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
