//! `/api/blobs/{sha256}`: upload (`PUT`, streamed), probe (`HEAD`) and
//! download (`GET`, with `Range`, `ETag` = the hash, long private caching).

use std::ops::Range;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::TryStreamExt as _;

use super::schema::{BlobStored, Problem};
use super::{ApiError, AppState};
use crate::auth::{Principal, Scope};
use crate::sync::SyncError;
use crate::sync::blobs::PutError;

/// Blobs never change (the URL is the hash): clients may cache them for a year.
const CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

fn etag(sha256: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{sha256}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// `PUT /api/blobs/{sha256}`: `201` when stored, `200` when the caller had it already.
#[utoipa::path(
    put,
    path = "/api/blobs/{sha256}",
    operation_id = "putBlob",
    tag = "blobs",
    summary = "Upload a blob (streamed, verified against the hash in the URL)",
    description = "Scope sync:write. The body is the raw bytes (gzip Content-Encoding accepted). 201 when stored, 200 when the caller had it already. 422 when the body's SHA-256 differs, 413 past blobs.max_bytes, 507 past quotas.blob_bytes, 429 past blobs.max_uploads_per_user, 503 past blobs.max_uploads.",
    params(("sha256" = String, Path, pattern = "^[0-9a-f]{64}$", description = "SHA-256 of the blob's bytes, 64 lowercase hex digits")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The caller had this blob already", body = BlobStored),
        (status = 201, description = "Stored", body = BlobStored),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 408, response = Problem),
        (status = 413, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem),
        (status = 503, response = Problem),
        (status = 507, response = Problem)
    )
)]
pub async fn put(
    State(state): State<AppState>,
    caller: Principal,
    Path(sha256): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::SyncWrite)?;
    let _slot = state.limits.uploads.acquire(&caller.user_id)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .filter(|_| !headers.contains_key(header::CONTENT_ENCODING))
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let stream = body.into_data_stream();
    let outcome = match state.sync.blobs().put(&caller.user_id, &sha256, declared, stream).await {
        Ok(outcome) => outcome,
        Err(PutError::Sync(e)) => return Err(e.into()),
        Err(PutError::Body(e)) => {
            if let Some(timeout) = super::limits::body_timeout(&e) {
                return Err(timeout);
            }
            tracing::info!(route = "/api/blobs", error = %e, "client aborted a blob upload");
            return Err(ApiError::BadRequest(format!("the request body could not be read: {e}")));
        }
    };
    let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
    let body = serde_json::json!({ "sha256": sha256, "size": outcome.size }).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::ETAG, etag(&sha256));
    Ok(response)
}

/// `HEAD /api/blobs/{sha256}`: `200` with its size when the caller has it, else `404`.
#[utoipa::path(
    head,
    path = "/api/blobs/{sha256}",
    operation_id = "headBlob",
    tag = "blobs",
    summary = "Whether the caller has a blob, and its size",
    description = "Scope sync:read. 404 when the caller has not uploaded it (whoever else has).",
    params(("sha256" = String, Path, pattern = "^[0-9a-f]{64}$", description = "SHA-256 of the blob's bytes, 64 lowercase hex digits")),
    responses(
        (status = 200, description = "The caller has it", headers(
            ("ETag" = String, description = "The hash, quoted"),
            ("Accept-Ranges" = String, description = "`bytes`"),
            ("Cache-Control" = String),
            ("Content-Length" = u64, description = "The blob's size"),
        )),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
        (status = 429, response = Problem),
        (status = 503, response = Problem)
    )
)]
pub async fn head(
    State(state): State<AppState>,
    caller: Principal,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::SyncRead)?;
    let Some(size) = state.sync.blobs().stat(&caller.user_id, &sha256).await? else {
        return Err(ApiError::NotFound(format!("you have no blob {sha256}")));
    };
    let mut response = Response::new(Body::empty());
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, etag(&sha256));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    Ok(response)
}

/// `GET /api/blobs/{sha256}`: the bytes, or one `Range` of them (`206`).
#[utoipa::path(
    get,
    path = "/api/blobs/{sha256}",
    operation_id = "getBlob",
    tag = "blobs",
    summary = "Download a blob, or one byte range of it",
    description = "Scope sync:read; only a user who uploaded the blob may read it. One `Range: bytes=` range is served (206); several ranges or another unit get the whole blob. `If-None-Match` with the ETag gives 304.",
    params(
        ("sha256" = String, Path, pattern = "^[0-9a-f]{64}$", description = "SHA-256 of the blob's bytes, 64 lowercase hex digits"),
        ("Range" = Option<String>, Header, description = "`bytes=first-last`, `bytes=first-` or `bytes=-suffix`"),
        ("If-None-Match" = Option<String>, Header, description = "The ETag you have: 304 when it matches"),
        ("If-Range" = Option<String>, Header, description = "Apply `Range` only if this is still the ETag"),
    ),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>, headers(
            ("ETag" = String, description = "The hash, quoted"),
            ("Accept-Ranges" = String, description = "`bytes`"),
            ("Cache-Control" = String),
        )),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>, headers(
            ("ETag" = String, description = "The hash, quoted"),
            ("Content-Range" = String, description = "`bytes first-last/size`"),
            ("Cache-Control" = String),
        )),
        (status = 304, description = "Not modified (the ETag matched)"),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
        (status = 416, response = Problem),
        (status = 429, response = Problem),
        (status = 503, response = Problem)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Principal,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Scope::SyncRead)?;
    let tag = etag(&sha256);
    let not_modified = headers.get(header::IF_NONE_MATCH).is_some_and(|v| matches_etag(v, &tag));
    // `If-Range` naming another version means "send it whole".
    let range_applies = headers.get(header::IF_RANGE).is_none_or(|v| v == tag);
    let range = headers.get(header::RANGE).filter(|_| range_applies && !not_modified).and_then(|v| v.to_str().ok());
    let read = state
        .sync
        .blobs()
        .get(&caller.user_id, &sha256, |size| range.map_or(Ok(None), |r| byte_range(r, size)))
        .await?;
    let mut response = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let body = Body::from_stream(read.body.map_err(|e| std::io::Error::other(e.to_string())));
        let mut r = Response::new(body);
        if read.range.is_some() {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        match &read.range {
            Some(range) => {
                let value = format!("bytes {}-{}/{}", range.start, range.end - 1, read.size);
                if let Ok(value) = HeaderValue::from_str(&value) {
                    h.insert(header::CONTENT_RANGE, value);
                }
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(range.end - range.start));
            }
            None => {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(read.size));
            }
        }
        r
    };
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, tag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    Ok(response)
}

/// True when an `If-None-Match` value lists `tag` (or is `*`).
fn matches_etag(value: &HeaderValue, tag: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else { return false };
    let tag = tag.to_str().unwrap_or_default();
    value.split(',').map(str::trim).any(|v| v == "*" || v.trim_start_matches("W/") == tag)
}

/// The bytes one `Range: bytes=…` header asks of a blob of `size` bytes.
/// A header this server does not serve (another unit, several ranges,
/// malformed) is ignored, as RFC 9110 allows: the whole blob is sent.
fn byte_range(header: &str, size: u64) -> Result<Option<Range<u64>>, SyncError> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Ok(None) };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => return Err(SyncError::RangeNotSatisfiable(size)),
            Some(n) => size.saturating_sub(n)..size,
            None => return Ok(None),
        },
        // `bytes=A-`: from A to the end.
        (false, true) => match number(first) {
            Some(a) => a..size,
            None => return Ok(None),
        },
        // `bytes=A-B`, inclusive.
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => a..b.saturating_add(1).min(size),
            _ => return Ok(None),
        },
        (true, true) => return Ok(None),
    };
    if range.start >= size {
        return Err(SyncError::RangeNotSatisfiable(size));
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |h: &str| byte_range(h, 100).map_err(|_| ());
        assert_eq!(r("bytes=0-9"), Ok(Some(0..10)));
        assert_eq!(r("bytes=90-"), Ok(Some(90..100)));
        assert_eq!(r("bytes=-5"), Ok(Some(95..100)));
        assert_eq!(r("bytes=-500"), Ok(Some(0..100)));
        assert_eq!(r("bytes=50-1000"), Ok(Some(50..100)));
        assert_eq!(r("bytes=100-"), Err(()));
        assert_eq!(r("bytes=-0"), Err(()));
        // Ignored: the whole blob is sent.
        for ignored in ["items=0-1", "bytes=0-1,5-6", "bytes=9-3", "bytes=x-", "bytes=-", "bytes"] {
            assert_eq!(r(ignored), Ok(None), "{ignored}");
        }
        assert!(byte_range("bytes=0-0", 0).is_err(), "an empty blob has no byte 0");
    }
}
