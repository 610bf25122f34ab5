//! Attachments: uploads hashed as they stream into the object store (never
//! whole in memory), reads by the user who has the blob, and collection of
//! blobs that no record names.
//!
//! A user has a blob once they uploaded it (even when another user uploaded
//! the same bytes first: the server never confirms that someone else has a
//! file). Records name blobs in their type's declared `blobs` fields; a push
//! naming a blob its user lacks is rejected naming the field (`push.rs`).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::SyncError;
use crate::config::Config;
use crate::store::{Objects, Store, StoreError, Stored, now_ms};

/// Garbage object keys deleted per housekeeping run.
const COLLECT_BATCH: usize = 1000;
/// An upload still unfinished this long after it started is abandoned (its
/// body deadline is far shorter); its object key may then be collected.
const ABANDONED_UPLOAD_MS: i64 = 3_600_000;

/// True for a SHA-256 written as 64 lowercase hex digits, the only form blob ids take.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The attachment service of one server.
#[derive(Clone)]
pub struct Blobs {
    store: Store,
    objects: Objects,
    max_bytes: u64,
    quota: u64,
    grace_ms: i64,
    uploads: Arc<Semaphore>,
}

/// How an upload ended.
#[derive(Debug, PartialEq, Eq)]
pub struct PutOutcome {
    /// False when the user had this blob already (nothing stored).
    pub created: bool,
    pub size: u64,
}

/// Why an upload failed: its body (the caller's error type), or anything else.
#[derive(Debug)]
pub enum PutError<E> {
    Body(E),
    Sync(SyncError),
}

impl<E> From<SyncError> for PutError<E> {
    fn from(e: SyncError) -> Self {
        PutError::Sync(e)
    }
}

impl<E> From<StoreError> for PutError<E> {
    fn from(e: StoreError) -> Self {
        PutError::Sync(SyncError::Store(e))
    }
}

/// A blob being read: its size, the byte range served, and the bytes.
pub struct BlobRead {
    pub size: u64,
    pub range: Option<Range<u64>>,
    pub body: BoxStream<'static, Result<Bytes, StoreError>>,
}

fn bad_hash(sha256: &str) -> SyncError {
    SyncError::BadRequest(format!(
        "`{}` is not a blob id: a blob is named by the SHA-256 of its bytes, 64 lowercase hex digits",
        sha256.chars().take(80).collect::<String>()
    ))
}

impl Blobs {
    pub fn new(store: Store, objects: Objects, config: &Config) -> Blobs {
        let hours = config.blobs.gc_grace_hours.saturating_mul(3_600_000);
        Blobs {
            store,
            objects,
            max_bytes: config.blobs.max_bytes,
            quota: config.quotas.blob_bytes,
            grace_ms: i64::try_from(hours).unwrap_or(i64::MAX),
            uploads: Arc::new(Semaphore::new(config.blobs.max_uploads)),
        }
    }

    /// Where the bytes are kept (for the startup log).
    pub fn describe(&self) -> &str {
        self.objects.describe()
    }

    /// The size of blob `sha256` if `user` has it.
    pub async fn stat(&self, user: &str, sha256: &str) -> Result<Option<u64>, SyncError> {
        if !is_sha256(sha256) {
            return Err(bad_hash(sha256));
        }
        let (user, sha) = (user.to_string(), sha256.to_string());
        let row = self.store.read(move |tx| tx.blob(&user, &sha)).await?;
        Ok(row.map(|r| u64::try_from(r.size).unwrap_or(0)))
    }

    /// Stores `body` as blob `sha256` for `user`: streamed into the object
    /// store while hashed, refused on a hash mismatch (422), past
    /// `blobs.max_bytes` (413) or the user's `quotas.blob_bytes` (507).
    /// A blob the user has already is not read again.
    pub async fn put<S, E>(
        &self,
        user: &str,
        sha256: &str,
        declared: Option<u64>,
        mut body: S,
    ) -> Result<PutOutcome, PutError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        if !is_sha256(sha256) {
            return Err(bad_hash(sha256).into());
        }
        if let Some(len) = declared {
            self.check_size(len)?;
        }
        let (owner, sha) = (user.to_string(), sha256.to_string());
        let (existing, used) = self.store.read(move |tx| Ok((tx.blob(&owner, &sha)?, tx.blob_bytes(&owner)?))).await?;
        if existing.is_none()
            && let Some(len) = declared
        {
            self.check_quota(used, len)?;
        }
        let _permit = self.uploads.clone().try_acquire_owned().map_err(|_| {
            SyncError::Busy("too many blob uploads are in progress (blobs.max_uploads); retry shortly".into())
        })?;
        // A blob the user has already is read and checked, not stored again.
        let mut upload = match existing {
            Some(_) => None,
            None => {
                let key = Objects::new_key(sha256)?;
                let pending = key.clone();
                let begin = move |tx: &crate::store::WriteTx<'_>| {
                    Ok::<_, StoreError>((tx.begin_upload(&pending, now_ms())?, None))
                };
                self.store.write_for(user, 1, begin).await?;
                Some((self.objects.upload(&key).await?, key))
            }
        };
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let streamed: Result<(), PutError<E>> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(PutError::Body)?;
                size = size.saturating_add(chunk.len() as u64);
                self.check_size(size)?;
                hasher.update(&chunk);
                if let Some((upload, _)) = upload.as_mut() {
                    self.check_quota(used, size)?;
                    upload.write(&chunk).await?;
                }
            }
            Ok(())
        }
        .await;
        let actual = crate::model::hex(&hasher.finalize());
        let verdict = streamed.and_then(|()| {
            if actual == sha256 {
                Ok(())
            } else {
                Err(SyncError::Invalid(format!(
                    "the body's SHA-256 is {actual}, not the {sha256} the URL names; nothing was stored"
                ))
                .into())
            }
        });
        let Some((upload, key)) = upload else {
            verdict?;
            return Ok(PutOutcome { created: false, size });
        };
        if let Err(e) = verdict {
            upload.abort().await;
            return Err(e);
        }
        upload.finish().await?;
        let (owner, sha, quota) = (user.to_string(), sha256.to_string(), self.quota);
        let stored_size = i64::try_from(size).unwrap_or(i64::MAX);
        let stored = self
            .store
            .write_for(user, 1, move |tx| {
                Ok::<_, StoreError>((tx.store_blob(&owner, &sha, stored_size, &key, quota, now_ms())?, None))
            })
            .await?;
        match stored {
            Stored::Created => Ok(PutOutcome { created: true, size }),
            Stored::Existing => Ok(PutOutcome { created: false, size }),
            Stored::OverQuota(used, quota) => Err(over_quota(used, size, quota).into()),
        }
    }

    fn check_size(&self, size: u64) -> Result<(), SyncError> {
        if size > self.max_bytes {
            return Err(SyncError::TooLarge(format!(
                "the blob is larger than {} bytes (blobs.max_bytes); nothing was stored",
                self.max_bytes
            )));
        }
        Ok(())
    }

    fn check_quota(&self, used: i64, size: u64) -> Result<(), SyncError> {
        if self.quota > 0 && u64::try_from(used).unwrap_or(0).saturating_add(size) > self.quota {
            return Err(over_quota(used, size, self.quota));
        }
        Ok(())
    }

    /// Blob `sha256` of `user`, or its bytes `range` (clamped to the blob;
    /// `None` for the whole). `NotFound` when the user does not have it.
    pub async fn get(
        &self,
        user: &str,
        sha256: &str,
        range: impl FnOnce(u64) -> Result<Option<Range<u64>>, SyncError>,
    ) -> Result<BlobRead, SyncError> {
        if !is_sha256(sha256) {
            return Err(bad_hash(sha256));
        }
        let (owner, sha) = (user.to_string(), sha256.to_string());
        let Some(row) = self.store.read(move |tx| tx.blob(&owner, &sha)).await? else {
            return Err(not_found(sha256));
        };
        let size = u64::try_from(row.size).unwrap_or(0);
        let range = range(size)?;
        // An empty blob has no byte to ask for: read it whole.
        let fetch = if size == 0 { None } else { range.clone() };
        match self.objects.get(&row.object_key, fetch).await {
            Ok(body) => Ok(BlobRead { size, range, body }),
            Err(StoreError::NotFound) => {
                tracing::error!(user, sha256, key = row.object_key, "a blob's bytes are missing from the blob store");
                Err(SyncError::NotFound(format!(
                    "blob {sha256} is known but its bytes are missing on this server; upload it again"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Collects blobs no record names once their grace period is over, and
    /// deletes the objects of collected blobs and abandoned uploads.
    /// Returns how many objects were deleted.
    pub async fn collect(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let before = now.saturating_sub(self.grace_ms);
        let collected = self.store.write(move |tx| tx.collect_blobs(before, COLLECT_BATCH)).await?;
        let abandoned = now.saturating_sub(ABANDONED_UPLOAD_MS);
        let keys = self.store.read(move |tx| tx.blob_garbage(abandoned, COLLECT_BATCH)).await?;
        let mut deleted = Vec::with_capacity(keys.len());
        for key in keys {
            match self.objects.delete(&key).await {
                Ok(()) => deleted.push(key),
                Err(e) => tracing::warn!(error = %e, key, "could not delete a blob object; retrying next run"),
            }
        }
        let count = deleted.len();
        if count > 0 {
            self.store
                .write(move |tx| tx.forget_garbage(&deleted.iter().map(String::as_str).collect::<Vec<_>>()))
                .await?;
        }
        if collected > 0 || count > 0 {
            tracing::info!(collected, deleted = count, "collected blobs no record names (blobs.gc_grace_hours)");
        }
        Ok(count)
    }
}

fn not_found(sha256: &str) -> SyncError {
    SyncError::NotFound(format!("you have no blob {sha256}; upload it with PUT /api/blobs/{sha256}"))
}

fn over_quota(used: i64, size: u64, quota: u64) -> SyncError {
    SyncError::QuotaExceeded(format!(
        "your blobs use {used} bytes; {size} more would pass the quota of {quota} (quotas.blob_bytes). \
         Nothing was stored: delete records that name blobs first"
    ))
}

/// The blobs a stored record names: the valid hashes in its type's blob
/// fields (none for a tombstone).
pub(crate) fn named_by(ty: &super::EntityType, data: &str, deleted: bool) -> Vec<String> {
    if deleted || ty.blobs.is_empty() {
        return Vec::new();
    }
    let Ok(fields) = serde_json::from_str::<std::collections::BTreeMap<String, &serde_json::value::RawValue>>(data)
    else {
        return Vec::new();
    };
    let mut out: Vec<String> = ty
        .blobs
        .iter()
        .filter_map(|f| serde_json::from_str::<Option<String>>(fields.get(f)?.get()).ok().flatten())
        .filter(|h| is_sha256(h))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
