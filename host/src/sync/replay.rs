//! pushId responses in stored form: deflate-compressed, with the server
//! records of conflicts cut out and put back on replay, byte for byte.
//!
//! A conflict's server record can be as large as a record gets, and an
//! attacker can make many small pushes conflict with one large record; so the
//! log keeps only (entity, id, version) for each. Open conflicts keep that
//! version in history, so the replay renders the same bytes again.

use std::io::{Read as _, Write as _};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use serde::{Deserialize, Serialize};

use super::json;
use crate::store::{ReadTx, StoreError, StoredResponse};

/// A server record rendered at `start..end` of a response.
#[derive(Debug)]
pub struct Splice {
    pub start: usize,
    pub end: usize,
    pub entity: String,
    pub id: String,
    pub version: i64,
}

/// Where a cut-out record goes back: offset in the packed text, and which record.
#[derive(Serialize, Deserialize)]
struct Hole(usize, String, String, i64);

/// The response without its spliced records, compressed; and the holes as JSON.
pub fn pack(response: &[u8], splices: &[Splice]) -> (Vec<u8>, Option<String>) {
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(response.len() / 4 + 64), Compression::fast());
    let mut holes = Vec::with_capacity(splices.len());
    let (mut from, mut written) = (0usize, 0usize);
    for s in splices {
        let _ = encoder.write_all(&response[from..s.start]);
        written += s.start - from;
        holes.push(Hole(written, s.entity.clone(), s.id.clone(), s.version));
        from = s.end;
    }
    let _ = encoder.write_all(&response[from..]);
    // Writing into a Vec cannot fail.
    let packed = encoder.finish().unwrap_or_default();
    let holes = (!holes.is_empty()).then(|| serde_json::to_string(&holes).unwrap_or_default());
    (packed, holes)
}

/// The response exactly as first sent. A record version that history no
/// longer holds (only possible after its conflict was resolved) comes back
/// as `null`.
pub fn unpack(tx: &ReadTx<'_>, user: &str, stored: StoredResponse) -> Result<String, StoreError> {
    let (packed, holes) = match stored {
        StoredResponse::Text(text) => return Ok(text),
        StoredResponse::Packed { packed, splices } => (packed, splices),
    };
    let unreadable = |e: String| StoreError::Other(format!("stored push response unreadable: {e}"));
    let mut text = Vec::new();
    DeflateDecoder::new(packed.as_slice()).read_to_end(&mut text).map_err(|e| unreadable(e.to_string()))?;
    let Some(holes) = holes else {
        return String::from_utf8(text).map_err(|e| unreadable(e.to_string()));
    };
    let holes: Vec<Hole> = serde_json::from_str(&holes).map_err(|e| unreadable(e.to_string()))?;
    let mut out = Vec::with_capacity(text.len() + holes.len() * 256);
    let mut from = 0usize;
    for Hole(at, entity, id, version) in holes {
        let at = at.clamp(from, text.len());
        out.extend_from_slice(&text[from..at]);
        match tx.record_at(user, &entity, &id, version)? {
            Some(row) => json::push_record(&mut out, &row),
            None => {
                tracing::warn!(%entity, %id, version, "replayed push names a record version history no longer holds");
                out.extend_from_slice(b"null");
            }
        }
        from = at;
    }
    out.extend_from_slice(&text[from..]);
    String::from_utf8(out).map_err(|e| unreadable(e.to_string()))
}
