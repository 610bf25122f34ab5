//! Blob bytes, kept outside the database through `object_store`: a local
//! folder by default, an S3-compatible bucket when hosts scale out.
//!
//! Every upload writes its own object key (`ab/abcd…-<random>`), so objects
//! are written once and never changed; deleting one user's copy never races
//! another upload of the same content.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};

use super::StoreError;

/// Parts in flight per upload (each at most one chunk).
const PARTS_IN_FLIGHT: usize = 2;

/// Where blob bytes live.
#[derive(Clone)]
pub struct Objects {
    inner: Arc<dyn ObjectStore>,
    /// Bytes buffered per part (S3 needs at least 5 MiB except for the last part).
    chunk: usize,
    /// The local folder, when that is the store (backups copy from it).
    folder: Option<PathBuf>,
    describe: String,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

fn object_error(e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound,
        e => StoreError::Unavailable(format!("blob store: {e}")),
    }
}

impl Objects {
    /// A local folder (created if missing).
    pub fn folder(dir: PathBuf) -> Result<Objects, StoreError> {
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Open { path: dir.clone(), source })?;
        let inner = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| StoreError::Other(format!("blob folder {}: {e}", dir.display())))?;
        Ok(Objects {
            inner: Arc::new(inner),
            chunk: 1024 * 1024,
            describe: format!("folder {}", dir.display()),
            folder: Some(dir),
        })
    }

    /// An S3-compatible bucket, `s3://bucket/prefix`, configured from `AWS_*` variables.
    pub fn s3(url: &str) -> Result<Objects, StoreError> {
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_url(url)
            .build()
            .map_err(|e| StoreError::Other(format!("blobs.url {url}: {e}")))?;
        let prefix = url.trim_start_matches("s3://").split_once('/').map_or("", |(_, p)| p).trim_matches('/');
        let inner: Arc<dyn ObjectStore> =
            if prefix.is_empty() { Arc::new(s3) } else { Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)) };
        Ok(Objects { inner, chunk: 5 * 1024 * 1024, folder: None, describe: format!("bucket {url}") })
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The local folder, if blobs are kept in one.
    pub fn local_folder(&self) -> Option<&std::path::Path> {
        self.folder.as_deref()
    }

    /// A fresh object key for an upload of `sha256`.
    pub fn new_key(sha256: &str) -> Result<String, StoreError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| StoreError::Other(format!("no randomness: {e}")))?;
        let tag = crate::model::hex(&bytes);
        Ok(format!("{}/{sha256}-{tag}", sha256.get(..2).unwrap_or("00")))
    }

    /// Starts writing object `key`; nothing is visible under it until [`Upload::finish`].
    pub async fn upload(&self, key: &str) -> Result<Upload, StoreError> {
        let multipart = self.inner.put_multipart(&ObjectPath::from(key)).await.map_err(object_error)?;
        Ok(Upload { writer: WriteMultipart::new_with_chunk_size(multipart, self.chunk) })
    }

    /// Object `key`, or the bytes `range` of it, as a stream of chunks.
    pub async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..GetOptions::default() };
        let got = self.inner.get_opts(&ObjectPath::from(key), options).await.map_err(object_error)?;
        Ok(got.into_stream().map_err(object_error).boxed())
    }

    /// Deletes object `key`; one already gone counts as deleted.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(object_error(e)),
        }
    }
}

/// An object being written, part by part.
pub struct Upload {
    writer: WriteMultipart,
}

impl Upload {
    /// Adds bytes; waits while too many parts are in flight.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(object_error)?;
        self.writer.write(bytes);
        Ok(())
    }

    /// Makes the object visible under its key.
    pub async fn finish(self) -> Result<(), StoreError> {
        self.writer.finish().await.map(|_| ()).map_err(object_error)
    }

    /// Discards what was written.
    pub async fn abort(self) {
        if let Err(e) = self.writer.abort().await {
            tracing::warn!(error = %e, "could not discard an unfinished blob upload");
        }
    }
}
