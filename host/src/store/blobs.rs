//! SQL for attachments: which user has which blob (and where its bytes are),
//! which records name them, and object keys waiting to be deleted.
//!
//! Garbage collection is two-step and crash-safe: collected rows and
//! abandoned uploads leave their object keys in `blob_garbage`, and the
//! objects are deleted (and the keys forgotten) afterwards.

use std::collections::HashSet;

use super::records::for_chunks;
use super::sql::P;
use super::{ReadTx, StoreError, WriteTx};

/// A user's copy of a blob.
#[derive(Clone, Debug)]
pub struct BlobRow {
    pub size: i64,
    pub object_key: String,
}

/// How storing an upload ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// The user did not have it; now they do.
    Created,
    /// The user had it already (this upload's object is garbage).
    Existing,
    /// The user's blobs would exceed the quota: (bytes in use, quota).
    OverQuota(i64, u64),
}

impl ReadTx<'_> {
    /// The user's copy of blob `sha256`, if they have one.
    pub fn blob(&self, user: &str, sha256: &str) -> Result<Option<BlobRow>, StoreError> {
        self.conn.first(
            "SELECT size, object_key FROM blobs WHERE user_id = ?1 AND sha256 = ?2",
            &[P::Text(user), P::Text(sha256)],
            |r| Ok(BlobRow { size: r.int(0)?, object_key: r.text(1)? }),
        )
    }

    /// Bytes of blobs the user has.
    pub fn blob_bytes(&self, user: &str) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .first(
                "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs WHERE user_id = ?1",
                &[P::Text(user)],
                |r| r.int(0),
            )?
            .unwrap_or(0))
    }

    /// Object keys of blobs and abandoned uploads that became garbage before `before`.
    pub fn blob_garbage(&self, before: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        self.conn.all(
            "SELECT object_key FROM blob_garbage WHERE since < ?1 ORDER BY since LIMIT ?2",
            &[P::Int(before), P::Int(i64::try_from(limit).unwrap_or(i64::MAX))],
            |r| r.text(0),
        )
    }

    /// Every object key a blob row points at (what a backup must copy).
    pub fn blob_object_keys(&self) -> Result<Vec<String>, StoreError> {
        self.conn.all("SELECT object_key FROM blobs ORDER BY object_key", &[], |r| r.text(0))
    }
}

impl WriteTx<'_> {
    /// Notes an upload about to write `object_key`, so that a crash before
    /// [`WriteTx::store_blob`] leaves the object to be collected.
    pub fn begin_upload(&self, object_key: &str, now: i64) -> Result<(), StoreError> {
        self.conn.exec(
            "INSERT INTO blob_garbage (object_key, since) VALUES (?1, ?2) ON CONFLICT (object_key) DO NOTHING",
            &[P::Text(object_key), P::Int(now)],
        )?;
        Ok(())
    }

    /// Gives the user blob `sha256` (verified, its bytes at `object_key`),
    /// unless that takes their blobs past `quota` bytes (0 = no quota).
    pub fn store_blob(
        &self,
        user: &str,
        sha256: &str,
        size: i64,
        object_key: &str,
        quota: u64,
        now: i64,
    ) -> Result<Stored, StoreError> {
        let touched = self.conn.exec(
            "UPDATE blobs SET touched_at = ?3 WHERE user_id = ?1 AND sha256 = ?2",
            &[P::Text(user), P::Text(sha256), P::Int(now)],
        )?;
        if touched > 0 {
            // This upload's copy is not needed: collect it at once.
            self.conn.exec("UPDATE blob_garbage SET since = 0 WHERE object_key = ?1", &[P::Text(object_key)])?;
            return Ok(Stored::Existing);
        }
        let used = self.blob_bytes(user)?;
        if quota > 0 && u64::try_from(used.saturating_add(size)).unwrap_or(u64::MAX) > quota {
            self.conn.exec("UPDATE blob_garbage SET since = 0 WHERE object_key = ?1", &[P::Text(object_key)])?;
            return Ok(Stored::OverQuota(used, quota));
        }
        self.conn.exec(
            "INSERT INTO blobs (user_id, sha256, size, object_key, created_at, touched_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            &[P::Text(user), P::Text(sha256), P::Int(size), P::Text(object_key), P::Int(now)],
        )?;
        self.conn.exec("DELETE FROM blob_garbage WHERE object_key = ?1", &[P::Text(object_key)])?;
        Ok(Stored::Created)
    }

    /// Of `hashes`, the blobs the user has; marks them touched, so none of
    /// them is collected while this transaction names them.
    pub fn touch_blobs(&self, user: &str, hashes: &[&str], now: i64) -> Result<HashSet<String>, StoreError> {
        let mut out = HashSet::new();
        for_chunks(hashes, |chunk, list| {
            let sql =
                format!("UPDATE blobs SET touched_at = ?2 WHERE user_id = ?1 AND sha256 IN ({list}) RETURNING sha256");
            let mut params = vec![P::Text(user), P::Int(now)];
            params.extend(chunk.iter().map(|h| P::Text(h)));
            out.extend(self.conn.all(&sql, &params, |r| r.text(0))?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Records that record `entity`/`id` now names exactly `hashes` (empty
    /// for a tombstone). Blobs it stops naming are touched, so their grace
    /// period starts now.
    pub fn set_blob_refs(
        &self,
        user: &str,
        entity: &str,
        id: &str,
        hashes: &[&str],
        now: i64,
    ) -> Result<(), StoreError> {
        let old: Vec<String> = self.conn.all(
            "SELECT sha256 FROM blob_refs WHERE user_id = ?1 AND entity = ?2 AND record_id = ?3",
            &[P::Text(user), P::Text(entity), P::Text(id)],
            |r| r.text(0),
        )?;
        for gone in old.iter().filter(|h| !hashes.contains(&h.as_str())) {
            self.conn.exec(
                "DELETE FROM blob_refs WHERE user_id = ?1 AND sha256 = ?2 AND entity = ?3 AND record_id = ?4",
                &[P::Text(user), P::Text(gone), P::Text(entity), P::Text(id)],
            )?;
            self.conn.exec(
                "UPDATE blobs SET touched_at = ?3 WHERE user_id = ?1 AND sha256 = ?2",
                &[P::Text(user), P::Text(gone), P::Int(now)],
            )?;
        }
        for new in hashes.iter().filter(|h| !old.iter().any(|o| o == *h)) {
            self.conn.exec(
                "INSERT INTO blob_refs (user_id, sha256, entity, record_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                &[P::Text(user), P::Text(new), P::Text(entity), P::Text(id)],
            )?;
        }
        Ok(())
    }

    /// Collects up to `limit` blobs that no record names and nothing touched
    /// since `before`: their rows go, their object keys become garbage.
    /// Returns how many.
    pub fn collect_blobs(&self, before: i64, limit: usize) -> Result<usize, StoreError> {
        // The conditions are on the deleted row itself, so on PostgreSQL a
        // push touching the blob concurrently wins (the row is re-checked).
        let keys = self.conn.all(
            "DELETE FROM blobs
             WHERE touched_at < ?1
               AND NOT EXISTS (SELECT 1 FROM blob_refs r WHERE r.user_id = blobs.user_id AND r.sha256 = blobs.sha256)
               AND (user_id, sha256) IN (
                 SELECT b.user_id, b.sha256 FROM blobs b WHERE b.touched_at < ?1 AND NOT EXISTS (
                   SELECT 1 FROM blob_refs r WHERE r.user_id = b.user_id AND r.sha256 = b.sha256)
                 LIMIT ?2)
             RETURNING object_key",
            &[P::Int(before), P::Int(i64::try_from(limit).unwrap_or(i64::MAX))],
            |r| r.text(0),
        )?;
        for key in &keys {
            self.conn.exec(
                "INSERT INTO blob_garbage (object_key, since) VALUES (?1, ?2)
                 ON CONFLICT (object_key) DO UPDATE SET since = excluded.since",
                &[P::Text(key), P::Int(0)],
            )?;
        }
        Ok(keys.len())
    }

    /// Forgets garbage keys whose objects are deleted.
    pub fn forget_garbage(&self, keys: &[&str]) -> Result<(), StoreError> {
        for key in keys {
            self.conn.exec("DELETE FROM blob_garbage WHERE object_key = ?1", &[P::Text(key)])?;
        }
        Ok(())
    }
}
