//! The wire shapes of the bodies `sync` writes as bytes (push, pull, conflicts,
//! resolve) and of the problem document, as types: the OpenAPI document's
//! schemas are derived from them, and a test parses every writer's output
//! into them (`deny_unknown_fields`), so the document cannot drift from the bytes.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{ToResponse, ToSchema};

/// An RFC 9457 problem document: every error the API answers.
#[derive(Debug, Deserialize, ToSchema, ToResponse)]
#[response(description = "An RFC 9457 problem document", content_type = "application/problem+json")]
#[serde(deny_unknown_fields)]
pub struct Problem {
    /// A URI naming the kind of problem (`https://accord.dev/problems/…`, listed in docs/problems.md).
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong with this request, naming the field, record or limit.
    pub detail: String,
    /// The request's `X-Request-Id`, to find it in the server's logs.
    #[serde(rename = "requestId")]
    #[schema(required = false, value_type = String)]
    pub request_id: Option<String>,
}

/// One record in a push. `data` is required unless `deleted` is true; the
/// document served lists each configured entity type's reference and blob
/// fields. Other fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncomingRecord {
    #[schema(min_length = 1, max_length = 128)]
    pub id: String,
    /// Incremented by the client on each local change.
    #[schema(minimum = 1, maximum = 9_007_199_254_740_991_i64)]
    pub version: i64,
    /// The server version this change was made on; 0, absent or null = new to me.
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    pub base_version: Option<i64>,
    /// Absent or null: false.
    pub deleted: Option<bool>,
    /// The record's fields: opaque to the server except declared reference and blob fields.
    #[schema(value_type = Object, required = false)]
    pub data: Option<Map<String, Value>>,
}

/// `POST /api/sync/push` body. Other fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushRequest {
    /// The pushing device; conflicts it caused are superseded by its later accepted versions.
    #[schema(min_length = 1, max_length = 128)]
    pub client_id: Option<String>,
    /// Makes retries safe: the same `pushId` gets the stored response, byte for byte.
    #[schema(min_length = 1, max_length = 128)]
    pub push_id: Option<String>,
    /// Entity type → records (the served document names the configured types).
    pub changes: BTreeMap<String, Vec<IncomingRecord>>,
}

/// A record as the server stores it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    pub id: String,
    #[schema(minimum = 1, maximum = 9_007_199_254_740_991_i64)]
    pub version: i64,
    pub deleted: bool,
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// Unix ms, set by the server.
    pub updated_at: i64,
}

/// What happened to one pushed record.
#[derive(Debug, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Applied,
    Unchanged,
    Merged,
    Conflict,
    Rejected,
}

/// One pushed record's result.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushResult {
    pub id: String,
    pub status: Status,
    /// Adopt this as the record's version (applied, unchanged, merged, conflict).
    #[schema(value_type = i64, required = false)]
    pub server_version: Option<i64>,
    /// The merged record, or the server's record beside a conflict.
    #[schema(required = false)]
    pub record: Option<Record>,
    /// For `conflict`: resolve it with `POST /api/sync/conflicts/{id}/resolve`.
    #[schema(value_type = String, required = false)]
    pub conflict_id: Option<String>,
    /// For `conflict` and `rejected`: why.
    #[schema(value_type = String, required = false)]
    pub reason: Option<String>,
}

/// `POST /api/sync/push` answer: one result per record, grouped by entity type.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushResponse {
    pub results: BTreeMap<String, Vec<PushResult>>,
    /// Pull from here to skip what this push wrote.
    pub cursor: String,
}

/// `GET /api/sync/pull` answer: a page of changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PullResponse {
    pub changes: BTreeMap<String, Vec<Record>>,
    /// Pass as `since` next time.
    pub cursor: String,
    /// Pull again at once: this page was cut short.
    pub has_more: bool,
}

/// Where a conflict stands.
#[derive(Debug, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConflictStatus {
    Open,
    Resolved,
    /// A later version of the record from the same client was accepted.
    Superseded,
}

/// A recorded conflict: the incoming record the server kept aside, and the server's record.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conflict {
    pub id: String,
    pub entity: String,
    pub record_id: String,
    pub incoming: IncomingRecord,
    /// The server's record when the conflict was recorded, if it existed.
    pub server: Option<Record>,
    pub reason: String,
    pub status: ConflictStatus,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
    /// The policy that decided (null for conflicts recorded before schema 7).
    pub decided_by: Option<DecidedBy>,
}

/// Which policy decided: its name and the SHA-256 of its component.
#[derive(Debug, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DecidedBy {
    pub policy: String,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
}

/// One version of a record in its history.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordVersion {
    pub id: String,
    pub version: i64,
    pub deleted: bool,
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    pub updated_at: i64,
    /// The policy that merged this version; null when stored as sent or as resolved.
    pub decided_by: Option<DecidedBy>,
}

/// `GET /api/sync/records/{entity}/{id}/history` answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordHistory {
    pub entity: String,
    pub id: String,
    /// Newest first.
    pub versions: Vec<RecordVersion>,
}

/// `GET /api/sync/conflicts` answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConflictList {
    pub conflicts: Vec<Conflict>,
    /// Pass as `after` for the next page; null on the last one.
    pub cursor: Option<String>,
    pub has_more: bool,
}

/// Which side a resolution takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Server,
    Incoming,
}

/// A record given as a conflict's resolution.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolutionRecord {
    /// The record's fields (`{}` for a delete).
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// Absent or null: false.
    pub deleted: Option<bool>,
}

/// `POST /api/sync/conflicts/{id}/resolve` body: exactly one of `take` or `record`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Resolution {
    Take(TakeSide),
    Record(TakeRecord),
}

/// Resolve by keeping one side as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeSide {
    pub take: Side,
}

/// Resolve with a record of your own (often a merge of both sides).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeRecord {
    pub record: ResolutionRecord,
}

/// `resolved`: the only status of a resolution.
#[derive(Debug, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResolvedStatus {
    Resolved,
}

/// `POST /api/sync/conflicts/{id}/resolve` answer: the record as now stored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolved {
    pub id: String,
    pub status: ResolvedStatus,
    pub record: Record,
    pub cursor: String,
}

/// `PUT /api/blobs/{sha256}` answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlobStored {
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    pub size: u64,
}

/// `POST /api/admin/policies/replay` answer (written by `sync::rehearse`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayReport {
    pub entity: String,
    /// Conflicts looked at, skipped ones included.
    pub conflicts: u64,
    pub accepted: u64,
    pub merged: u64,
    pub conflict: u64,
    pub rejected: u64,
    /// Conflicts whose server version is no longer kept (resolved long ago, history pruned).
    pub skipped: u64,
    /// The time bound stopped the replay before the last conflict.
    pub truncated: bool,
    pub samples: ReplaySamples,
}

/// Up to 5 replayed conflicts per kind of decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaySamples {
    pub accepted: Vec<ReplaySample>,
    pub merged: Vec<ReplaySample>,
    pub conflict: Vec<ReplaySample>,
    pub rejected: Vec<ReplaySample>,
}

/// One replayed conflict and the fields where the sides and the result differ.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplaySample {
    pub conflict_id: String,
    pub user_id: String,
    pub record_id: String,
    /// For conflicts and rejections.
    #[schema(value_type = String, required = false)]
    pub reason: Option<String>,
    pub fields: Vec<FieldDiff>,
}

/// A top-level field as the server had it, as the client sent it and as the
/// candidate leaves it (`result`, absent for conflicts and rejections); null when absent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldDiff {
    pub field: String,
    #[schema(value_type = Value)]
    pub server: Value,
    #[schema(value_type = Value)]
    pub incoming: Value,
    #[schema(value_type = Value, required = false)]
    pub result: Option<Value>,
}

/// `status` filter of `GET /api/sync/conflicts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConflictFilter {
    Open,
    Resolved,
    Superseded,
    All,
}

/// `GET /healthz` and `GET /readyz` answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub status: String,
    /// `readyz` only: `ok`.
    #[schema(value_type = String, required = false)]
    pub database: Option<String>,
}
