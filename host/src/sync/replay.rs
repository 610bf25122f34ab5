//! pushId responses in stored form: deflate-compressed, with the server
//! records of conflicts cut out and put back on replay, byte for byte; a
//! small response with nothing cut out is kept as it is (compressing it cost
//! a sixth of the writer's time with 16 clients pushing 10 records each).
//!
//! A conflict's server record can be as large as a record gets, and an
//! attacker can make many small pushes conflict with one large record; so the
//! log keeps only (entity, id, version) for each. Open conflicts keep that
//! version in history, so the replay renders the same bytes again.

use std::cell::RefCell;
use std::io::Read as _;

use flate2::read::DeflateDecoder;
use flate2::{Compress, Compression, FlushCompress, Status};
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

thread_local! {
    /// One raw-deflate compressor per thread (the writer's), reset after each
    /// use: a new one allocates and zeroes ~300 KiB of tables for every push.
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

/// Compresses `input` onward into `out`; with `FlushCompress::Finish`, to the end of the stream.
fn deflate(c: &mut Compress, mut input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) {
    // Every round has room to write, so each one makes progress; the bound is a backstop.
    for _ in 0..1_000_000 {
        if out.capacity() - out.len() < 1024 {
            out.reserve(input.len() / 2 + 4096);
        }
        let before = c.total_in();
        let status = c.compress_vec(input, out, flush);
        let used = usize::try_from(c.total_in() - before).unwrap_or(input.len()).min(input.len());
        input = &input[used..];
        match status {
            Ok(Status::StreamEnd) | Err(_) => return,
            Ok(_) if input.is_empty() && !matches!(flush, FlushCompress::Finish) => return,
            Ok(_) => {}
        }
    }
}

/// Responses up to this size with no record cut out are stored as text.
const PACK_FROM: usize = 2048;

/// The response in stored form: as text when small and whole, else without
/// its spliced records, compressed, with the holes as JSON.
pub fn store_form(response: &str, splices: &[Splice]) -> StoredResponse {
    if splices.is_empty() && response.len() <= PACK_FROM {
        return StoredResponse::Text(response.to_owned());
    }
    let (packed, splices) = pack(response.as_bytes(), splices);
    StoredResponse::Packed { packed, splices }
}

/// The response without its spliced records, compressed; and the holes as JSON.
fn pack(response: &[u8], splices: &[Splice]) -> (Vec<u8>, Option<String>) {
    let mut packed = Vec::with_capacity(response.len() / 4 + 64);
    let mut holes = Vec::with_capacity(splices.len());
    DEFLATE.with_borrow_mut(|c| {
        c.reset();
        let (mut from, mut written) = (0usize, 0usize);
        for s in splices {
            deflate(c, &response[from..s.start], &mut packed, FlushCompress::None);
            written += s.start - from;
            holes.push(Hole(written, s.entity.clone(), s.id.clone(), s.version));
            from = s.end;
        }
        deflate(c, &response[from..], &mut packed, FlushCompress::Finish);
        c.reset();
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the reused compressor writes inflates to the response without
    /// its spliced parts, push after push (large and small, with holes or not).
    #[test]
    fn packed_responses_inflate_to_what_was_cut() {
        let big: String = (0..20_000).map(|i| format!("{{\"id\":\"r{i}\",\"status\":\"applied\"}},")).collect();
        for text in [big.as_str(), "{\"results\":{}}", "", big.as_str()] {
            let cut = text.len() / 3;
            let splices = if text.len() > 10 {
                vec![Splice { start: cut, end: cut + 5, entity: "t".into(), id: "a".into(), version: 2 }]
            } else {
                Vec::new()
            };
            let (packed, holes) = pack(text.as_bytes(), &splices);
            let mut inflated = Vec::new();
            DeflateDecoder::new(packed.as_slice()).read_to_end(&mut inflated).expect("inflates");
            let expected = match splices.first() {
                Some(s) => [&text.as_bytes()[..s.start], &text.as_bytes()[s.end..]].concat(),
                None => text.as_bytes().to_vec(),
            };
            assert_eq!(inflated, expected);
            assert_eq!(holes.is_some(), !splices.is_empty());
        }
    }

    /// Small whole responses are kept as text; large ones and ones with
    /// records cut out are packed.
    #[test]
    fn only_small_whole_responses_stay_text() {
        let small = "{\"results\":{\"t\":[{\"id\":\"a\",\"status\":\"applied\",\"version\":1}]}}";
        assert!(matches!(store_form(small, &[]), StoredResponse::Text(t) if t == small));
        let large = small.repeat(100);
        assert!(matches!(store_form(&large, &[]), StoredResponse::Packed { splices: None, .. }));
        let cut = [Splice { start: 1, end: 2, entity: "t".into(), id: "a".into(), version: 1 }];
        assert!(matches!(store_form(small, &cut), StoredResponse::Packed { splices: Some(_), .. }));
    }
}
