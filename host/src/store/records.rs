//! SQL for records, their history, and each user's change sequence and usage.

use rusqlite::{OptionalExtension, Row};

use super::{StoreError, Tx};

pub use crate::model::RecordRow;

/// What a user has stored, as counted for quotas (or a change to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Current records, tombstones included.
    pub records: i64,
    /// JSON text of current records, open conflicts' incoming records and stored pushId responses.
    pub bytes: i64,
    pub open_conflicts: i64,
}

/// A user's change sequence and usage.
#[derive(Clone, Copy, Debug, Default)]
pub struct UserState {
    /// The sequence number of this user's latest change (0 before the first).
    pub last_seq: i64,
    pub usage: Usage,
}

fn record_from(r: &Row<'_>) -> rusqlite::Result<RecordRow> {
    Ok(RecordRow {
        entity: r.get(0)?,
        id: r.get(1)?,
        version: r.get(2)?,
        deleted: r.get(3)?,
        data: r.get(4)?,
        updated_at: r.get(5)?,
        seq: r.get(6)?,
    })
}

impl Tx<'_> {
    /// This database's identity, part of every cursor.
    pub fn epoch(&self) -> Result<String, StoreError> {
        Ok(self.conn.prepare_cached("SELECT epoch FROM sync_state WHERE id = 1")?.query_row([], |r| r.get(0))?)
    }

    /// Gives the database a new identity, so every cursor issued before is
    /// answered with 410 (after restoring a backup).
    pub fn new_epoch(&self) -> Result<String, StoreError> {
        self.conn.execute_batch("UPDATE sync_state SET epoch = lower(hex(randomblob(8))) WHERE id = 1")?;
        self.epoch()
    }

    /// The user's change sequence and usage (zeros for a user with no data).
    pub fn user_state(&self, user: &str) -> Result<UserState, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT last_seq, records, bytes, open_conflicts FROM user_state WHERE user_id = ?1")?
            .query_row([user], |r| {
                Ok(UserState {
                    last_seq: r.get(0)?,
                    usage: Usage { records: r.get(1)?, bytes: r.get(2)?, open_conflicts: r.get(3)? },
                })
            })
            .optional()?
            .unwrap_or_default())
    }

    /// Sets the user's change sequence to `last_seq` (when given) and adds `delta` to their usage.
    pub fn update_user_state(&self, user: &str, last_seq: Option<i64>, delta: &Usage) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO user_state (user_id, last_seq, records, bytes, open_conflicts)
                 VALUES (?1, coalesce(?2, 0), ?3, ?4, ?5)
                 ON CONFLICT (user_id) DO UPDATE SET
                   last_seq = coalesce(?2, last_seq), records = records + ?3,
                   bytes = bytes + ?4, open_conflicts = open_conflicts + ?5",
            )?
            .execute((user, last_seq, delta.records, delta.bytes, delta.open_conflicts))?;
        Ok(())
    }

    /// The current version of a record, tombstones included.
    pub fn record(&self, user: &str, entity: &str, id: &str) -> Result<Option<RecordRow>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT entity, id, version, deleted, data, updated_at, seq FROM records
                 WHERE user_id = ?1 AND entity = ?2 AND id = ?3",
            )?
            .query_row((user, entity, id), record_from)
            .optional()?)
    }

    /// True if the user has this record, even as a tombstone.
    pub fn record_exists(&self, user: &str, entity: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM records WHERE user_id = ?1 AND entity = ?2 AND id = ?3")?
            .query_row((user, entity, id), |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// An earlier version of a record, if history still holds it.
    pub fn record_version(
        &self,
        user: &str,
        entity: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<RecordRow>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT entity, id, version, deleted, data, updated_at, 0 FROM record_history
                 WHERE user_id = ?1 AND entity = ?2 AND id = ?3 AND version = ?4",
            )?
            .query_row((user, entity, id, version), record_from)
            .optional()?)
    }

    /// A version of a record: the current one if it has that version, else history's.
    pub fn record_at(&self, user: &str, entity: &str, id: &str, version: i64) -> Result<Option<RecordRow>, StoreError> {
        match self.record(user, entity, id)? {
            Some(current) if current.version == version => Ok(Some(current)),
            _ => self.record_version(user, entity, id, version),
        }
    }

    /// Writes `new` as the current version. If a `previous` version exists it
    /// moves to history, which is trimmed to the newest `keep` versions —
    /// except versions an open conflict names, which stay while it is open.
    pub fn put_record(
        &self,
        user: &str,
        new: &RecordRow,
        previous: Option<&RecordRow>,
        keep: u32,
    ) -> Result<(), StoreError> {
        match previous {
            None => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO records (user_id, entity, id, version, deleted, data, updated_at, seq)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute((
                        user,
                        &new.entity,
                        &new.id,
                        new.version,
                        new.deleted,
                        &new.data,
                        new.updated_at,
                        new.seq,
                    ))?;
            }
            Some(old) => {
                if keep > 0 || self.version_pinned(user, &old.entity, &old.id, old.version)? {
                    self.conn
                        .prepare_cached(
                            "INSERT OR REPLACE INTO record_history
                               (user_id, entity, id, version, deleted, data, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )?
                        .execute((user, &old.entity, &old.id, old.version, old.deleted, &old.data, old.updated_at))?;
                    self.conn
                        .prepare_cached(
                            "DELETE FROM record_history
                             WHERE user_id = ?1 AND entity = ?2 AND id = ?3 AND version <= (
                               SELECT version FROM record_history
                               WHERE user_id = ?1 AND entity = ?2 AND id = ?3
                               ORDER BY version DESC LIMIT 1 OFFSET ?4)
                             AND NOT EXISTS (
                               SELECT 1 FROM conflicts c
                               WHERE c.user_id = ?1 AND c.entity = ?2 AND c.record_id = ?3
                                 AND c.server_version = record_history.version AND c.status = 'open')",
                        )?
                        .execute((user, &old.entity, &old.id, keep))?;
                }
                self.conn
                    .prepare_cached(
                        "UPDATE records SET version = ?4, deleted = ?5, data = ?6, updated_at = ?7, seq = ?8
                         WHERE user_id = ?1 AND entity = ?2 AND id = ?3",
                    )?
                    .execute((
                        user,
                        &new.entity,
                        &new.id,
                        new.version,
                        new.deleted,
                        &new.data,
                        new.updated_at,
                        new.seq,
                    ))?;
            }
        }
        Ok(())
    }

    /// True when an open conflict names this version of the record as the server's.
    fn version_pinned(&self, user: &str, entity: &str, id: &str, version: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM conflicts WHERE user_id = ?1 AND entity = ?2 AND record_id = ?3
                   AND server_version = ?4 AND status = 'open'",
            )?
            .query_row((user, entity, id, version), |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The user's records changed after `since`, in sequence order: at most
    /// `limit` rows and, past the first, about `max_bytes` of data. `types`
    /// empty means every type. Returns the rows and whether more follow.
    pub fn changes_since(
        &self,
        user: &str,
        since: i64,
        types: &[String],
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<RecordRow>, bool), StoreError> {
        let mut sql = String::from(
            "SELECT entity, id, version, deleted, data, updated_at, seq FROM records
             WHERE user_id = ?1 AND seq > ?2",
        );
        if !types.is_empty() {
            sql.push_str(" AND entity IN (SELECT value FROM json_each(?3))");
        }
        sql.push_str(" ORDER BY seq");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let types_json = serde_json::to_string(types).unwrap_or_else(|_| "[]".into());
        let mut rows =
            if types.is_empty() { stmt.query((user, since))? } else { stmt.query((user, since, types_json))? };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = rows.next()? {
            if out.len() >= limit || (!out.is_empty() && bytes >= max_bytes) {
                return Ok((out, true));
            }
            let record = record_from(row)?;
            bytes += record.data.len() + record.id.len() + 64;
            out.push(record);
        }
        Ok((out, false))
    }
}
