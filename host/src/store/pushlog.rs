//! SQL for the idempotency log: each push's response, by user and `pushId`.

use rusqlite::OptionalExtension;

use super::{StoreError, Tx};

impl Tx<'_> {
    /// The stored body hash and response of an earlier push with this id.
    pub fn logged_push(&self, user: &str, push_id: &str) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT body_hash, response FROM push_log WHERE user_id = ?1 AND push_id = ?2")?
            .query_row((user, push_id), |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    pub fn log_push(
        &self,
        user: &str,
        push_id: &str,
        body_hash: &[u8],
        response: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO push_log (user_id, push_id, body_hash, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute((user, push_id, body_hash, response, now))?;
        Ok(())
    }

    /// Forgets pushes logged before `before`; returns how many.
    pub fn expire_pushes(&self, before: i64) -> Result<usize, StoreError> {
        Ok(self.conn.prepare_cached("DELETE FROM push_log WHERE created_at < ?1")?.execute([before])?)
    }
}
