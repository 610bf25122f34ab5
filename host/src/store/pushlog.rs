//! SQL for the idempotency log: each push's response, by user and `pushId`.
//!
//! Responses are stored deflate-compressed, with the server records of
//! conflicts cut out: `splices` names each one (entity, id, version) and where
//! it goes back, so a replay re-renders the same bytes from the record
//! versions that open conflicts keep in history.

use super::sql::P;
use super::{ReadTx, StoreError, WriteTx};

/// A logged push: its fingerprint and its response in stored form.
pub struct LoggedPush {
    pub body_hash: Vec<u8>,
    pub stored: StoredResponse,
}

/// A response as kept in the log.
pub enum StoredResponse {
    /// The response text itself (a small one with nothing cut out, or one
    /// logged before responses were packed).
    Text(String),
    /// Deflate-compressed response with records cut out, and where they go.
    Packed { packed: Vec<u8>, splices: Option<String> },
}

impl ReadTx<'_> {
    /// The stored body hash and response of an earlier push with this id.
    pub fn logged_push(&self, user: &str, push_id: &str) -> Result<Option<LoggedPush>, StoreError> {
        self.conn.first(
            "SELECT body_hash, response, packed, splices FROM push_log WHERE user_id = ?1 AND push_id = ?2",
            &[P::Text(user), P::Text(push_id)],
            |r| {
                let stored = match r.opt_bytes(2)? {
                    Some(packed) => StoredResponse::Packed { packed, splices: r.opt_text(3)? },
                    None => StoredResponse::Text(r.text(1)?),
                };
                Ok(LoggedPush { body_hash: r.bytes(0)?, stored })
            },
        )
    }
}

impl WriteTx<'_> {
    /// Logs a push's response in stored form; returns the bytes stored (for usage).
    pub fn log_push(
        &self,
        user: &str,
        push_id: &str,
        body_hash: &[u8],
        stored: &StoredResponse,
        now: i64,
    ) -> Result<i64, StoreError> {
        let (text, packed, splices) = match stored {
            StoredResponse::Text(text) => (text.as_str(), None, None),
            StoredResponse::Packed { packed, splices } => ("", Some(packed.as_slice()), splices.as_deref()),
        };
        let bytes = stored_bytes(text.len() + packed.map_or(0, <[u8]>::len), splices);
        self.conn.exec(
            "INSERT INTO push_log (user_id, push_id, body_hash, response, packed, splices, stored_bytes, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                P::Text(user),
                P::Text(push_id),
                P::Bytes(body_hash),
                P::Text(text),
                P::OptBytes(packed),
                P::OptText(splices),
                P::Int(bytes),
                P::Int(now),
            ],
        )?;
        Ok(bytes)
    }

    /// Forgets pushes logged before `before`, and takes their bytes off each
    /// user's usage; returns how many.
    pub fn expire_pushes(&self, before: i64) -> Result<usize, StoreError> {
        let freed = self.conn.all(
            "DELETE FROM push_log WHERE created_at < ?1 RETURNING user_id, stored_bytes",
            &[P::Int(before)],
            |r| Ok((r.text(0)?, r.int(1)?)),
        )?;
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
fn stored_bytes(response: usize, splices: Option<&str>) -> i64 {
    i64::try_from(response + splices.map_or(0, str::len)).unwrap_or(i64::MAX)
}
