//! SQL for records, their history, and each user's change sequence and usage.

use super::sql::{P, Row};
use super::{ReadTx, StoreError, WriteTx};

pub use crate::model::{DecidedBy, RecordRow};

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
    /// The highest sequence of a tombstone compacted away; older cursors get 410.
    pub purged_seq: i64,
    pub usage: Usage,
}

const RECORD: &str = "entity, id, version, deleted, data, updated_at, seq, policy, policy_sha256";

/// Which policy decided a version, as the `policy, policy_sha256` parameters.
pub(super) fn audit_params(r: &RecordRow) -> (P<'_>, P<'_>) {
    let d = r.decided_by.as_ref();
    (P::OptText(d.map(|d| d.policy.as_str())), P::OptText(d.map(|d| d.sha256.as_str())))
}

/// A record as the 8 parameters of `(user_id, entity, id, version, deleted, data, updated_at, seq)`.
pub(super) fn record_params<'a>(user: &'a str, r: &'a RecordRow) -> [P<'a>; 8] {
    [
        P::Text(user),
        P::Text(&r.entity),
        P::Text(&r.id),
        P::Int(r.version),
        P::Int(i64::from(r.deleted)),
        P::Text(&r.data),
        P::Int(r.updated_at),
        P::Int(r.seq),
    ]
}

fn record_from(r: &dyn Row) -> Result<RecordRow, StoreError> {
    Ok(RecordRow {
        entity: r.text(0)?,
        id: r.text(1)?,
        version: r.int(2)?,
        deleted: r.int(3)? != 0,
        data: r.text(4)?,
        updated_at: r.int(5)?,
        seq: r.int(6)?,
        decided_by: decided_by(r, 7)?,
    })
}

/// The `policy, policy_sha256` columns at `i` and `i + 1`.
pub(super) fn decided_by(r: &dyn Row, i: usize) -> Result<Option<DecidedBy>, StoreError> {
    Ok(match (r.opt_text(i)?, r.opt_text(i + 1)?) {
        (Some(policy), Some(sha256)) => Some(DecidedBy { policy, sha256 }),
        _ => None,
    })
}

impl ReadTx<'_> {
    /// This database's identity, part of every cursor.
    pub fn epoch(&self) -> Result<String, StoreError> {
        self.conn
            .first("SELECT epoch FROM sync_state WHERE id = 1", &[], |r| r.text(0))?
            .ok_or_else(|| StoreError::Other("sync_state has no row".into()))
    }

    /// The user's change sequence and usage (zeros for a user with no data).
    pub fn user_state(&self, user: &str) -> Result<UserState, StoreError> {
        Ok(self
            .conn
            .first(
                "SELECT last_seq, records, bytes, open_conflicts, purged_seq FROM user_state WHERE user_id = ?1",
                &[P::Text(user)],
                |r| {
                    Ok(UserState {
                        last_seq: r.int(0)?,
                        purged_seq: r.int(4)?,
                        usage: Usage { records: r.int(1)?, bytes: r.int(2)?, open_conflicts: r.int(3)? },
                    })
                },
            )?
            .unwrap_or_default())
    }

    /// The current version of a record, tombstones included.
    pub fn record(&self, user: &str, entity: &str, id: &str) -> Result<Option<RecordRow>, StoreError> {
        self.conn.first(
            &format!("SELECT {RECORD} FROM records WHERE user_id = ?1 AND entity = ?2 AND id = ?3"),
            &[P::Text(user), P::Text(entity), P::Text(id)],
            record_from,
        )
    }

    /// Users with tombstones last written before `before` (at most `limit`).
    pub fn users_with_old_tombstones(&self, before: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        self.conn.all(
            "SELECT DISTINCT user_id FROM records WHERE deleted = 1 AND updated_at < ?1 LIMIT ?2",
            &[P::Int(before), P::Int(i64::try_from(limit).unwrap_or(i64::MAX))],
            |r| r.text(0),
        )
    }

    /// The current versions of those of `ids` the user has (tombstones included).
    pub fn records_of(&self, user: &str, entity: &str, ids: &[&str]) -> Result<Vec<RecordRow>, StoreError> {
        let mut out = Vec::new();
        for_chunks(ids, |chunk, list| {
            let sql = format!("SELECT {RECORD} FROM records WHERE user_id = ?1 AND entity = ?2 AND id IN ({list})");
            let mut params = vec![P::Text(user), P::Text(entity)];
            params.extend(chunk.iter().map(|id| P::Text(id)));
            out.extend(self.conn.all(&sql, &params, record_from)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Those of `ids` the user has a record of (tombstones included).
    pub fn existing_ids(
        &self,
        user: &str,
        entity: &str,
        ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut out = std::collections::HashSet::new();
        for_chunks(ids, |chunk, list| {
            let sql = format!("SELECT id FROM records WHERE user_id = ?1 AND entity = ?2 AND id IN ({list})");
            let mut params = vec![P::Text(user), P::Text(entity)];
            params.extend(chunk.iter().map(|id| P::Text(id)));
            out.extend(self.conn.all(&sql, &params, |r| r.text(0))?);
            Ok(())
        })?;
        Ok(out)
    }

    /// True if the user has this record, even as a tombstone.
    pub fn record_exists(&self, user: &str, entity: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .first(
                "SELECT 1 FROM records WHERE user_id = ?1 AND entity = ?2 AND id = ?3",
                &[P::Text(user), P::Text(entity), P::Text(id)],
                |_| Ok(()),
            )?
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
        self.conn.first(
            "SELECT entity, id, version, deleted, data, updated_at, CAST(0 AS BIGINT), policy, policy_sha256
             FROM record_history WHERE user_id = ?1 AND entity = ?2 AND id = ?3 AND version = ?4",
            &[P::Text(user), P::Text(entity), P::Text(id), P::Int(version)],
            record_from,
        )
    }

    /// A record's current version and the earlier ones history holds, newest first.
    pub fn record_versions(&self, user: &str, entity: &str, id: &str) -> Result<Vec<RecordRow>, StoreError> {
        let mut out: Vec<RecordRow> = self.record(user, entity, id)?.into_iter().collect();
        out.extend(self.conn.all(
            "SELECT entity, id, version, deleted, data, updated_at, CAST(0 AS BIGINT), policy, policy_sha256
             FROM record_history WHERE user_id = ?1 AND entity = ?2 AND id = ?3 ORDER BY version DESC",
            &[P::Text(user), P::Text(entity), P::Text(id)],
            record_from,
        )?);
        Ok(out)
    }

    /// A version of a record: the current one if it has that version, else history's.
    pub fn record_at(&self, user: &str, entity: &str, id: &str, version: i64) -> Result<Option<RecordRow>, StoreError> {
        match self.record(user, entity, id)? {
            Some(current) if current.version == version => Ok(Some(current)),
            _ => self.record_version(user, entity, id, version),
        }
    }

    /// True when an open conflict names this version of the record as the server's.
    fn version_pinned(&self, user: &str, entity: &str, id: &str, version: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .first(
                "SELECT 1 FROM conflicts WHERE user_id = ?1 AND entity = ?2 AND record_id = ?3
                   AND server_version = ?4 AND status = 'open'",
                &[P::Text(user), P::Text(entity), P::Text(id), P::Int(version)],
                |_| Ok(()),
            )?
            .is_some())
    }

    /// Calls `f` for each of the user's records changed after `since`, in
    /// sequence order: at most `limit` rows and, past the first, about
    /// `max_bytes` of data. `types` empty means every type. Each row is lent
    /// as read (no copy of its data); returns whether more follow.
    pub fn changes_since(
        &self,
        user: &str,
        since: i64,
        types: &[String],
        (limit, max_bytes): (usize, usize),
        mut f: impl FnMut(&Change<'_>),
    ) -> Result<bool, StoreError> {
        let mut sql = "SELECT entity, id, version, deleted, data, updated_at, seq FROM records \
                       WHERE user_id = ?1 AND seq > ?2"
            .to_string();
        let mut params = vec![P::Text(user), P::Int(since)];
        if !types.is_empty() {
            let list: Vec<String> = (0..types.len()).map(|i| format!("?{}", i + 4)).collect();
            sql.push_str(&format!(" AND entity IN ({})", list.join(", ")));
        }
        // One row past the page says whether more follow.
        sql.push_str(" ORDER BY seq LIMIT ?3");
        params.push(P::Int(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)));
        params.extend(types.iter().map(|t| P::Text(t)));
        let (mut rows, mut bytes, mut more) = (0usize, 0usize, false);
        self.conn.each(&sql, &params, |r| {
            if rows >= limit || (rows > 0 && bytes >= max_bytes) {
                more = true;
                return Ok(false);
            }
            let change = Change {
                entity: r.str(0)?,
                id: r.str(1)?,
                version: r.int(2)?,
                deleted: r.int(3)? != 0,
                data: r.str(4)?,
                updated_at: r.int(5)?,
                seq: r.int(6)?,
            };
            bytes += change.data.len() + change.id.len() + 64;
            rows += 1;
            f(&change);
            Ok(true)
        })?;
        Ok(more)
    }
}

/// A changed record as `changes_since` lends it: borrowed from the result row.
pub struct Change<'r> {
    pub entity: &'r str,
    pub id: &'r str,
    pub version: i64,
    pub deleted: bool,
    pub data: &'r str,
    pub updated_at: i64,
    pub seq: i64,
}

/// Runs `f` over `ids` in chunks of a few fixed sizes (padded by repeating
/// the last id), so the prepared statements stay few: `f` gets the chunk and
/// its `?3, ?4, …` placeholder list.
pub(super) fn for_chunks(
    ids: &[&str],
    mut f: impl FnMut(&[&str], &str) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    const SIZES: [usize; 4] = [1, 8, 64, 512];
    let mut rest = ids;
    while let Some(last) = rest.last().copied() {
        let size = SIZES.iter().copied().find(|s| *s >= rest.len()).unwrap_or(SIZES[SIZES.len() - 1]);
        let take = size.min(rest.len());
        let mut chunk: Vec<&str> = rest[..take].to_vec();
        let pad = if take < rest.len() { rest[take - 1] } else { last };
        chunk.resize(size, pad);
        let list: Vec<String> = (0..size).map(|i| format!("?{}", i + 3)).collect();
        f(&chunk, &list.join(", "))?;
        rest = &rest[take..];
    }
    Ok(())
}

impl WriteTx<'_> {
    /// Gives the database a new identity, so every cursor issued before is
    /// answered with 410 (after restoring a backup).
    pub fn new_epoch(&self) -> Result<String, StoreError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| StoreError::Other(format!("no randomness for the epoch: {e}")))?;
        let epoch = crate::model::hex(&bytes);
        self.conn.exec("UPDATE sync_state SET epoch = ?1 WHERE id = 1", &[P::Text(&epoch)])?;
        Ok(epoch)
    }

    /// Purges the user's tombstones last written before `before`, with their
    /// history, and raises the user's purge horizon past them; returns how many.
    pub fn purge_tombstones(&self, user: &str, before: i64) -> Result<usize, StoreError> {
        let purged = self.conn.all(
            "DELETE FROM records WHERE user_id = ?1 AND deleted = 1 AND updated_at < ?2
             RETURNING entity, id, seq, data",
            &[P::Text(user), P::Int(before)],
            |r| Ok((r.text(0)?, r.text(1)?, r.int(2)?, r.text(3)?.len())),
        )?;
        let (mut horizon, mut bytes) = (0i64, 0i64);
        for (entity, id, seq, len) in &purged {
            self.conn.exec(
                "DELETE FROM record_history WHERE user_id = ?1 AND entity = ?2 AND id = ?3",
                &[P::Text(user), P::Text(entity), P::Text(id)],
            )?;
            horizon = horizon.max(*seq);
            bytes += i64::try_from(*len).unwrap_or(0);
        }
        if !purged.is_empty() {
            let n = i64::try_from(purged.len()).unwrap_or(i64::MAX);
            self.update_user_state(user, None, &Usage { records: -n, bytes: -bytes, open_conflicts: 0 })?;
            self.conn.exec(
                "UPDATE user_state SET purged_seq = ?2 WHERE user_id = ?1 AND purged_seq < ?2",
                &[P::Text(user), P::Int(horizon)],
            )?;
        }
        Ok(purged.len())
    }

    /// Sets the user's change sequence to `last_seq` (when given) and adds `delta` to their usage.
    pub fn update_user_state(&self, user: &str, last_seq: Option<i64>, delta: &Usage) -> Result<(), StoreError> {
        self.conn.exec(
            "INSERT INTO user_state (user_id, last_seq, records, bytes, open_conflicts)
             VALUES (?1, coalesce(CAST(?2 AS BIGINT), 0), ?3, ?4, ?5)
             ON CONFLICT (user_id) DO UPDATE SET
               last_seq = coalesce(CAST(?2 AS BIGINT), user_state.last_seq),
               records = user_state.records + ?3,
               bytes = user_state.bytes + ?4,
               open_conflicts = user_state.open_conflicts + ?5",
            &[
                P::Text(user),
                P::OptInt(last_seq),
                P::Int(delta.records),
                P::Int(delta.bytes),
                P::Int(delta.open_conflicts),
            ],
        )?;
        Ok(())
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
        let row = record_params(user, new);
        let (policy, sha256) = audit_params(new);
        let Some(old) = previous else {
            if new.decided_by.is_none() {
                // Written with the job's other new records, many per statement.
                self.conn.insert_record(user, new);
            } else {
                let mut params = row.to_vec();
                params.extend([policy, sha256]);
                self.conn.exec(
                    "INSERT INTO records (user_id, entity, id, version, deleted, data, updated_at, seq, policy, policy_sha256)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    &params,
                )?;
            }
            return Ok(());
        };
        if keep > 0 || self.version_pinned(user, &old.entity, &old.id, old.version)? {
            self.conn.exec(
                "INSERT INTO record_history (user_id, entity, id, version, deleted, data, updated_at, policy, policy_sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (user_id, entity, id, version) DO UPDATE SET
                   deleted = excluded.deleted, data = excluded.data, updated_at = excluded.updated_at,
                   policy = excluded.policy, policy_sha256 = excluded.policy_sha256",
                &[
                    P::Text(user),
                    P::Text(&old.entity),
                    P::Text(&old.id),
                    P::Int(old.version),
                    P::Int(i64::from(old.deleted)),
                    P::Text(&old.data),
                    P::Int(old.updated_at),
                    audit_params(old).0,
                    audit_params(old).1,
                ],
            )?;
            self.conn.exec(
                "DELETE FROM record_history
                 WHERE user_id = ?1 AND entity = ?2 AND id = ?3 AND version <= (
                   SELECT version FROM record_history
                   WHERE user_id = ?1 AND entity = ?2 AND id = ?3
                   ORDER BY version DESC LIMIT 1 OFFSET ?4)
                 AND NOT EXISTS (
                   SELECT 1 FROM conflicts c
                   WHERE c.user_id = ?1 AND c.entity = ?2 AND c.record_id = ?3
                     AND c.server_version = record_history.version AND c.status = 'open')",
                &[P::Text(user), P::Text(&old.entity), P::Text(&old.id), P::Int(i64::from(keep))],
            )?;
        }
        let mut params = row.to_vec();
        params.extend([policy, sha256]);
        self.conn.exec(
            "UPDATE records SET version = ?4, deleted = ?5, data = ?6, updated_at = ?7, seq = ?8,
               policy = ?9, policy_sha256 = ?10
             WHERE user_id = ?1 AND entity = ?2 AND id = ?3",
            &params,
        )?;
        Ok(())
    }
}
