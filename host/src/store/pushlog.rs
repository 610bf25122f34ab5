//! SQL for the idempotency log: each push's response, by user and `pushId`.
//!
//! Responses are stored deflate-compressed, with the server records of
//! conflicts cut out: `splices` names each one (entity, id, version) and where
//! it goes back, so a replay re-renders the same bytes from the record
//! versions that open conflicts keep in history.

use rusqlite::OptionalExtension;

use super::{StoreError, Tx};

/// A logged push: its fingerprint and its response in stored form.
pub struct LoggedPush {
    pub body_hash: Vec<u8>,
    pub stored: StoredResponse,
}

/// A response as kept in the log.
pub enum StoredResponse {
    /// Written before responses were packed: the response text itself.
    Text(String),
    /// Deflate-compressed response with records cut out, and where they go.
    Packed { packed: Vec<u8>, splices: Option<String> },
}

impl Tx<'_> {
    /// The stored body hash and response of an earlier push with this id.
    pub fn logged_push(&self, user: &str, push_id: &str) -> Result<Option<LoggedPush>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT body_hash, response, packed, splices FROM push_log WHERE user_id = ?1 AND push_id = ?2",
            )?
            .query_row((user, push_id), |r| {
                let packed: Option<Vec<u8>> = r.get(2)?;
                let stored = match packed {
                    Some(packed) => StoredResponse::Packed { packed, splices: r.get(3)? },
                    None => StoredResponse::Text(r.get(1)?),
                };
                Ok(LoggedPush { body_hash: r.get(0)?, stored })
            })
            .optional()?)
    }

    /// Logs a push's response in packed form; returns the bytes stored (for usage).
    pub fn log_push(
        &self,
        user: &str,
        push_id: &str,
        body_hash: &[u8],
        packed: &[u8],
        splices: Option<&str>,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO push_log (user_id, push_id, body_hash, response, packed, splices, created_at)
                 VALUES (?1, ?2, ?3, '', ?4, ?5, ?6)",
            )?
            .execute((user, push_id, body_hash, packed, splices, now))?;
        Ok(stored_bytes(packed.len(), splices))
    }

    /// Forgets pushes logged before `before`, and takes their bytes off each
    /// user's usage; returns how many.
    pub fn expire_pushes(&self, before: i64) -> Result<usize, StoreError> {
        let freed: Vec<(String, i64)> = self
            .conn
            .prepare_cached(
                "DELETE FROM push_log WHERE created_at < ?1
                 RETURNING user_id, length(CAST(response AS BLOB)) + coalesce(length(packed), 0)
                   + coalesce(length(CAST(splices AS BLOB)), 0)",
            )?
            .query_map([before], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut per_user: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        for (user, bytes) in &freed {
            *per_user.entry(user).or_default() += bytes;
        }
        for (user, bytes) in per_user {
            let delta = super::Usage { bytes: -bytes, ..Default::default() };
            self.update_user_state(user, None, &delta)?;
        }
        Ok(freed.len())
    }
}

/// What a logged push counts against its user's `bytes`.
fn stored_bytes(packed: usize, splices: Option<&str>) -> i64 {
    i64::try_from(packed + splices.map_or(0, str::len)).unwrap_or(i64::MAX)
}
