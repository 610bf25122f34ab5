//! SQL for recorded conflicts.

use super::sql::{P, Row};
use super::{ReadTx, StoreError, WriteTx};
use crate::model::DecidedBy;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictStatus {
    Open,
    Resolved,
    /// The same client later had a newer version of the record accepted.
    Superseded,
}

impl ConflictStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictStatus::Open => "open",
            ConflictStatus::Resolved => "resolved",
            ConflictStatus::Superseded => "superseded",
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
    /// The policy that decided it (`None` for conflicts recorded before schema 7).
    pub decided_by: Option<DecidedBy>,
    /// The base record the policy saw, as wire JSON (`None`: it saw none, or before schema 7).
    pub base: Option<String>,
}

pub struct NewConflict<'a> {
    pub id: &'a str,
    pub entity: &'a str,
    pub record_id: &'a str,
    pub incoming: &'a str,
    pub server_version: Option<i64>,
    /// The pushing client's `clientId`, if it sent one.
    pub client_id: Option<&'a str>,
    pub reason: &'a str,
    pub created_at: i64,
    pub decided_by: Option<&'a DecidedBy>,
    pub base: Option<&'a str>,
}

const COLUMNS: &str = "n, id, entity, record_id, incoming, server_version, reason, status, created_at, resolved_at, \
                       policy, policy_sha256, base";

fn from_row(r: &dyn Row) -> Result<ConflictRow, StoreError> {
    Ok(ConflictRow {
        n: r.int(0)?,
        id: r.text(1)?,
        entity: r.text(2)?,
        record_id: r.text(3)?,
        incoming: r.text(4)?,
        server_version: r.opt_int(5)?,
        reason: r.text(6)?,
        status: match r.text(7)?.as_str() {
            "open" => ConflictStatus::Open,
            "superseded" => ConflictStatus::Superseded,
            _ => ConflictStatus::Resolved,
        },
        created_at: r.int(8)?,
        resolved_at: r.opt_int(9)?,
        decided_by: super::records::decided_by(r, 10)?,
        base: r.opt_text(12)?,
    })
}

impl ReadTx<'_> {
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
             WHERE user_id = ?1 AND n > ?2 AND (CAST(?3 AS TEXT) IS NULL OR status = ?3)
               AND (CAST(?4 AS TEXT) IS NULL OR entity = ?4)
             ORDER BY n LIMIT ?5"
        );
        let params = [
            P::Text(user),
            P::Int(after),
            P::OptText(status.map(ConflictStatus::as_str)),
            P::OptText(entity),
            P::Int(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)),
        ];
        self.conn.page(&sql, &params, (limit, max_bytes), from_row, |c| c.incoming.len() + c.reason.len() + 128)
    }

    /// Conflicts of every user on `entity` recorded at or after `since`, oldest
    /// first, at most `limit`, each with its user (`policy replay`).
    pub fn conflicts_since(
        &self,
        entity: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<(String, ConflictRow)>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS}, user_id FROM conflicts WHERE entity = ?1 AND created_at >= ?2 ORDER BY n LIMIT ?3"
        );
        let params = [P::Text(entity), P::Int(since), P::Int(i64::try_from(limit).unwrap_or(i64::MAX))];
        self.conn.all(&sql, &params, |r| Ok((r.text(13)?, from_row(r)?)))
    }

    pub fn conflict(&self, user: &str, id: &str) -> Result<Option<ConflictRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM conflicts WHERE user_id = ?1 AND id = ?2");
        self.conn.first(&sql, &[P::Text(user), P::Text(id)], from_row)
    }
}

impl WriteTx<'_> {
    pub fn insert_conflict(&self, user: &str, c: &NewConflict<'_>) -> Result<(), StoreError> {
        self.conn.exec(
            "INSERT INTO conflicts (id, user_id, entity, record_id, incoming, server_version, reason, status, created_at,
               client_id, policy, policy_sha256, base)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?9, ?10, ?11, ?12)",
            &[
                P::Text(c.id),
                P::Text(user),
                P::Text(c.entity),
                P::Text(c.record_id),
                P::Text(c.incoming),
                P::OptInt(c.server_version),
                P::Text(c.reason),
                P::Int(c.created_at),
                P::OptText(c.client_id),
                P::OptText(c.decided_by.map(|d| d.policy.as_str())),
                P::OptText(c.decided_by.map(|d| d.sha256.as_str())),
                P::OptText(c.base),
            ],
        )?;
        Ok(())
    }

    /// Forgets conflicts resolved (or superseded) before `before`; returns how many.
    pub fn purge_resolved_conflicts(&self, before: i64) -> Result<usize, StoreError> {
        self.conn.exec("DELETE FROM conflicts WHERE status <> 'open' AND resolved_at < ?1", &[P::Int(before)])
    }

    /// Marks the open conflicts `client` left on this record superseded;
    /// returns how many, and the bytes of their incoming records.
    pub fn supersede_conflicts(
        &self,
        user: &str,
        entity: &str,
        record_id: &str,
        client: &str,
        now: i64,
    ) -> Result<(i64, i64), StoreError> {
        let freed = self.conn.all(
            "UPDATE conflicts SET status = 'superseded', resolved_at = ?5
             WHERE user_id = ?1 AND entity = ?2 AND record_id = ?3 AND client_id = ?4 AND status = 'open'
             RETURNING incoming",
            &[P::Text(user), P::Text(entity), P::Text(record_id), P::Text(client), P::Int(now)],
            |r| Ok(i64::try_from(r.text(0)?.len()).unwrap_or(0)),
        )?;
        Ok((i64::try_from(freed.len()).unwrap_or(i64::MAX), freed.iter().sum()))
    }

    pub fn mark_conflict_resolved(&self, user: &str, id: &str, now: i64) -> Result<(), StoreError> {
        self.conn.exec(
            "UPDATE conflicts SET status = 'resolved', resolved_at = ?3 WHERE user_id = ?1 AND id = ?2",
            &[P::Text(user), P::Text(id), P::Int(now)],
        )?;
        Ok(())
    }
}
