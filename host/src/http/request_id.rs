//! Request ids: `X-Request-Id` taken from the client or generated, echoed on
//! every response, recorded on every log line of the request (a field of its
//! tracing span) and in every problem document.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;

/// The request id header, in and out.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id that is kept; longer ones are replaced.
const MAX_LEN: usize = 128;

/// The id of the request being handled (in the request's extensions).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

tokio::task_local! {
    static CURRENT: RequestId;
}

/// The id of the request whose future is running on this task, if any
/// (problem documents carry it without every handler passing it along).
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.0.clone()).ok()
}

/// A client's id is kept when it is 1–128 printable ASCII characters
/// (space to `~`); anything else is replaced by a generated one.
fn acceptable(value: &HeaderValue) -> Option<String> {
    let bytes = value.as_bytes();
    let printable = !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| (0x20..=0x7e).contains(b));
    if !printable {
        return None;
    }
    let id = std::str::from_utf8(bytes).ok()?.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// 16 random bytes as 32 lowercase hex digits.
fn generate() -> String {
    let mut bytes = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut bytes) {
        // Without OS randomness an id is still useful for correlation, just not unique.
        tracing::warn!(error = %e, "no randomness for a request id");
    }
    crate::model::hex(&bytes)
}

/// Middleware (outermost): settles the id, puts it in the request's extensions
/// and headers, runs the request with it as the task's current id, and sets it
/// on the response.
pub async fn request_id(mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let id = request.headers().get(&HEADER).and_then(acceptable).unwrap_or_else(generate);
    let header = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    request.headers_mut().insert(HEADER.clone(), header.clone());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = CURRENT.scope(RequestId(id), next.run(request)).await;
    response.headers_mut().insert(HEADER.clone(), header);
    response
}

/// The span of one request (used by the trace layer): every log line inside
/// the request names its id and the peer address (`ConnectInfo`, set per
/// connection by the accept loop).
pub fn make_span<B>(request: &Request<B>) -> tracing::Span {
    let id = request.extensions().get::<RequestId>().map_or("", |id| id.0.as_str());
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr);
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
        peer = peer.map(tracing::field::display),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_printable_and_short() {
        let keep = |s: &str| acceptable(&HeaderValue::from_str(s).expect("header value"));
        assert_eq!(keep("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(keep(&"x".repeat(128)).map(|s| s.len()), Some(128));
        assert_eq!(keep(&"x".repeat(129)), None);
        assert_eq!(keep(""), None);
        assert_eq!(keep("   "), None);
        assert_eq!(keep("tab\there"), None);
        assert_eq!(acceptable(&HeaderValue::from_bytes(b"caf\xc3\xa9").expect("header value")), None);
        let generated = generate();
        assert_eq!(generated.len(), 32);
        assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(generated, generate());
    }
}
