//! `/api/sync/*`: push, pull, change events and conflicts.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::schema::{
    ConflictFilter, ConflictList, Problem, PullResponse, PushRequest, PushResponse, RecordHistory, Resolved,
};
use super::{ApiError, ApiJson, AppState};
use crate::auth::{Principal, Scope};
use crate::sync::{ConflictQuery, PullQuery, Resolution};

fn json_response(body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `POST /api/sync/push`. The body is read here (not by an extractor) so that
/// an upload cut short is logged as a client abort with the bytes received.
#[utoipa::path(
    post,
    path = "/api/sync/push",
    operation_id = "push",
    tag = "sync",
    summary = "Push local changes (one transaction; idempotent by pushId)",
    description = "Scope sync:write. Records are applied parents first. Each record gets one result: applied, unchanged, merged, conflict or rejected. Retry a failed push (429, 503, other 5xx, dropped connection) with the same pushId. Content-Encoding: gzip is accepted.",
    request_body = PushRequest,
    responses(
        (status = 200, description = "One result per record, grouped by entity type", body = PushResponse),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 408, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem),
        (status = 503, response = Problem),
        (status = 507, response = Problem)
    )
)]
pub async fn push(State(state): State<AppState>, caller: Principal, body: Body) -> Result<Response, ApiError> {
    caller.require(Scope::SyncWrite)?;
    let limit = state.config.server.max_body_bytes;
    let mut stream = body.into_data_stream();
    let budget = state.sync.body_budget();
    let mut buf = budget.start();
    let mut since_yield = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if let Some(timeout) = super::limits::body_timeout(&e) {
                tracing::info!(route = "/api/sync/push", bytes = buf.len(), "the upload timed out");
                return timeout;
            }
            tracing::info!(route = "/api/sync/push", bytes = buf.len(), error = %e, "client aborted the upload");
            ApiError::BadRequest(format!("the request body could not be read: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the request body is larger than {limit} bytes (server.max_body_bytes)"
            )));
        }
        budget.extend(&mut buf, &chunk, limit)?;
        // A gzip body inflates without ever waiting on the socket: give other
        // requests on this worker a turn every 256 KiB.
        since_yield += chunk.len();
        if since_yield >= 256 * 1024 {
            since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
    let response = state.sync.push(&caller.user_id, buf).await?;
    Ok(json_response(response))
}

/// `GET /api/sync/pull?since=&limit=&types=&wait=`.
#[utoipa::path(
    get,
    path = "/api/sync/pull",
    operation_id = "pull",
    tag = "sync",
    summary = "Pull changes after a cursor, a page at a time",
    description = "Scope sync:read. Loop with since=<cursor> while hasMore is true. wait=S turns an empty pull into a long poll (429 with Retry-After beyond sync.max_long_polls_per_user waiting at once). 410 means: discard the cursor and pull from the beginning.",
    params(
        ("since" = Option<String>, Query, description = "Cursor of a previous response (opaque); absent = from the beginning"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 2147483647, description = "Most records in the page: sync.default_pull_limit (1000) when absent, values above sync.max_pull_limit (10000) are capped"),
        ("types" = Option<String>, Query, description = "Comma-separated entity types, no spaces; absent or empty = all"),
        ("wait" = Option<u32>, Query, minimum = 0, maximum = 2147483647, description = "Seconds to wait for a change when there is none (a long poll); capped at sync.max_wait_secs (30)"),
    ),
    responses(
        (status = 200, description = "A page of changes", body = PullResponse),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 410, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem),
        (status = 503, response = Problem)
    )
)]
pub async fn pull(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<PullQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::SyncRead)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    // A long poll holds one of the user's slots until it answers or its client goes away.
    let _slot = match query.wait {
        Some(wait) if wait > 0 => {
            Some((state.limits.long_polls.acquire(&caller.user_id)?, state.metrics.long_poll_started()))
        }
        _ => None,
    };
    Ok(json_response(state.sync.pull(&caller.user_id, query).await?))
}

/// `GET /api/sync/events`: Server-Sent Events, `change` after each commit
/// touching the caller's data, `resync` when this stream fell behind.
#[utoipa::path(
    get,
    path = "/api/sync/events",
    operation_id = "events",
    tag = "sync",
    summary = "Server-Sent Events: `change` with {\"cursor\"} after each commit touching your data, `resync` if the stream fell behind",
    description = "Scope sync:read. Heartbeat comments keep proxies from closing the stream. 429 (with Retry-After) when the user already holds sync.max_streams_per_user streams.",
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 429, response = Problem)
    )
)]
pub async fn events(
    State(state): State<AppState>,
    caller: Principal,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Scope::SyncRead)?;
    let slot = state.limits.streams.acquire(&caller.user_id)?;
    // Only this user's commits (and resyncs) reach this stream.
    let notices = state.sync.subscribe(&caller.user_id);
    let user = caller.user_id;
    let sync = state.sync.clone();
    let open = state.metrics.stream_opened();
    let changes = BroadcastStream::new(notices).filter_map(move |notice| {
        // The gauge and the user's stream slot are released when the stream is dropped.
        let _held = (&open, &slot);
        let event = match notice {
            // Notices may have been missed (another host's listener reconnected).
            Ok(n) if n.is_resync() => Some(Event::default().event("resync").data("{}")),
            Ok(n) if n.user == user => {
                let cursor = sync.cursor_at(n.seq);
                Some(Event::default().event("change").data(format!("{{\"cursor\":\"{cursor}\"}}")))
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(_)) => Some(Event::default().event("resync").data("{}")),
        };
        std::future::ready(event.map(Ok))
    });
    let heartbeat = Duration::from_secs(state.config.sync.heartbeat_secs);
    let mut shutdown = state.shutdown.clone();
    let (store, key_id, expires_at) = (state.store.clone(), caller.key_id, caller.expires_at);
    // The stream ends on shutdown, when the API key it was opened with is
    // revoked (checked every heartbeat), and when the JWT it was opened with
    // expires: a credential that stops working stops its streams too.
    let stream = changes.take_until(async move {
        let revoked = async {
            let Some(id) = key_id else {
                let Some(exp) = expires_at else { return std::future::pending::<()>().await };
                let left = exp.saturating_sub(crate::store::now_ms().max(0) as u64 / 1000);
                return tokio::time::sleep(Duration::from_secs(left)).await;
            };
            loop {
                tokio::time::sleep(heartbeat).await;
                let id = id.clone();
                if let Ok(false) = store.read(move |tx| tx.api_key_active(&id)).await {
                    return;
                }
            }
        };
        tokio::select! {
            _ = shutdown.wait_for(|stopping| *stopping) => {}
            () = revoked => {}
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}

/// `GET /api/sync/conflicts?status=&entity=&limit=&after=`.
#[utoipa::path(
    get,
    path = "/api/sync/conflicts",
    operation_id = "listConflicts",
    tag = "sync",
    summary = "Recorded conflicts, oldest first",
    description = "Scope sync:read.",
    params(
        ("status" = inline(Option<ConflictFilter>), Query, description = "Absent: open"),
        ("entity" = Option<String>, Query, description = "Only this entity type"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 2147483647, description = "Most conflicts in the page: 100 when absent, values above 1000 are capped"),
        ("after" = Option<String>, Query, description = "`cursor` of the previous page (opaque)"),
    ),
    responses(
        (status = 200, description = "A page of conflicts", body = ConflictList),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem),
        (status = 503, response = Problem)
    )
)]
pub async fn conflicts(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<ConflictQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::SyncRead)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(json_response(state.sync.conflicts(&caller.user_id, query).await?))
}

/// `GET /api/sync/records/{entity}/{id}/history`.
#[utoipa::path(
    get,
    path = "/api/sync/records/{entity}/{id}/history",
    operation_id = "recordHistory",
    tag = "sync",
    summary = "A record's versions, newest first, each with the policy that merged it",
    description = "Scope sync:read. The current version and the earlier ones history still holds (`history = N` per entity type). `decidedBy` names the policy and the SHA-256 of its component for versions a policy merged; null for versions stored as sent or as a resolution said.",
    params(
        ("entity" = String, Path, description = "The entity type"),
        ("id" = String, Path, description = "The record's id"),
    ),
    responses(
        (status = 200, description = "The record's versions", body = RecordHistory),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
        (status = 429, response = Problem),
        (status = 503, response = Problem)
    )
)]
pub async fn history(
    State(state): State<AppState>,
    caller: Principal,
    Path((entity, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Scope::SyncRead)?;
    Ok(json_response(state.sync.history(&caller.user_id, &entity, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    take: Option<String>,
    record: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ResolveRecord<'a> {
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    deleted: Option<bool>,
}

/// `POST /api/sync/conflicts/{id}/resolve` with `{"take":"server"|"incoming"}` or `{"record":{…}}`.
#[utoipa::path(
    post,
    path = "/api/sync/conflicts/{id}/resolve",
    operation_id = "resolveConflict",
    tag = "sync",
    summary = "Resolve a conflict as a new version of the record",
    description = "Scope sync:write. Exactly one of take or record.",
    params(("id" = String, Path, description = "The conflict's id")),
    request_body = super::schema::Resolution,
    responses(
        (status = 200, description = "The record as now stored", body = Resolved),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
        (status = 409, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem),
        (status = 503, response = Problem),
        (status = 507, response = Problem)
    )
)]
pub async fn resolve(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Response, ApiError> {
    caller.require(Scope::SyncWrite)?;
    let resolution = match (body.take.as_deref(), &body.record) {
        (Some("server"), None) => Resolution::Server,
        (Some("incoming"), None) => Resolution::Incoming,
        (None, Some(raw)) => {
            let record: ResolveRecord<'_> = serde_json::from_str(raw.get())
                .map_err(|e| ApiError::Unprocessable(format!("`record` must be a record object: {e}")))?;
            let data = match record.data {
                Some(d) => d.get().to_string(),
                None => return Err(ApiError::Unprocessable("`record.data` is missing (`{}` for a delete)".into())),
            };
            Resolution::Record { data, deleted: record.deleted.unwrap_or(false) }
        }
        _ => {
            return Err(ApiError::Unprocessable(
                "give exactly one of {\"take\": \"server\"}, {\"take\": \"incoming\"} or {\"record\": {…}}".into(),
            ));
        }
    };
    Ok(json_response(state.sync.resolve(&caller.user_id, &id, resolution).await?))
}
