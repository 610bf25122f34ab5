//! `/api/admin/*`: the policy set in use, and reloading it (scope `admin`).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::schema::{Problem, ReplayReport};
use super::{ApiError, AppState};
use crate::auth::{Principal, Scope};
use crate::policy::reload;
use crate::policy::shadow::Shadow;

/// One entity type's merge policy.
#[derive(Serialize, ToSchema)]
#[schema(as = Policy)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    entity: String,
    /// The policy's name (a built-in's, or a component file's stem).
    policy: String,
    /// `builtin` or the component's path.
    source: String,
    /// SHA-256 of the component's bytes.
    sha256: String,
    /// Unix ms.
    loaded_at: i64,
    calls: u64,
    failures: u64,
    /// The entity type's `policy_settings`.
    #[schema(value_type = Object)]
    settings: Box<RawValue>,
    /// The `shadow_policy` deciding beside it, with its agreement so far (since the set was loaded).
    shadow: Option<ShadowView>,
}

/// A shadow policy and how often it agreed with the live one.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowView {
    policy: String,
    source: String,
    sha256: String,
    /// Per kind of live decision: calls where the shadow decided the same (merged: the same data).
    agreements: KindCounts,
    /// Per kind of live decision: calls where it did not (or failed).
    disagreements: KindCounts,
}

/// Counts per kind of live decision.
#[derive(Serialize, ToSchema)]
pub struct KindCounts {
    accept: u64,
    merged: u64,
    conflict: u64,
    reject: u64,
}

impl From<[u64; 4]> for KindCounts {
    fn from([accept, merged, conflict, reject]: [u64; 4]) -> Self {
        KindCounts { accept, merged, conflict, reject }
    }
}

fn shadow_view(shadow: &Shadow) -> ShadowView {
    let (agree, disagree) = shadow.counts();
    ShadowView {
        policy: shadow.policy.name.clone(),
        source: shadow.policy.source.clone(),
        sha256: shadow.policy.sha256().to_string(),
        agreements: agree.into(),
        disagreements: disagree.into(),
    }
}

/// The active policy set.
#[derive(Serialize, ToSchema)]
#[schema(as = PolicySet)]
pub struct PoliciesView {
    policies: Vec<PolicyView>,
}

fn view(state: &AppState) -> PoliciesView {
    let set = state.policies.current();
    let policies = set
        .bindings
        .iter()
        .map(|(entity, b)| PolicyView {
            entity: entity.clone(),
            policy: b.policy.name.clone(),
            source: b.policy.source.clone(),
            sha256: b.policy.sha256().to_string(),
            loaded_at: b.policy.loaded_at,
            calls: b.policy.calls(),
            failures: b.policy.failures(),
            settings: RawValue::from_string(b.settings.clone())
                .unwrap_or_else(|_| RawValue::from_string("{}".into()).unwrap_or_default()),
            shadow: b.shadow.as_deref().map(shadow_view),
        })
        .collect();
    PoliciesView { policies }
}

/// `GET /api/admin/policies`: each entity type's policy, file hash, load time, call and failure counts.
#[utoipa::path(
    get,
    path = "/api/admin/policies",
    operation_id = "listPolicies",
    tag = "admin",
    summary = "Each entity type's merge policy, file hash, load time, calls and failures",
    description = "Scope admin.",
    responses(
        (status = 200, description = "The active policy set", body = PoliciesView),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 429, response = Problem)
    )
)]
pub async fn policies(State(state): State<AppState>, caller: Principal) -> Result<Json<PoliciesView>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(view(&state)))
}

/// `POST /api/admin/reload`: re-read config.toml and the policy dir; switch only if all load.
#[utoipa::path(
    post,
    path = "/api/admin/reload",
    operation_id = "reloadPolicies",
    tag = "admin",
    summary = "Reload config.toml's policies and the policy folder; switch only if all load",
    description = "Scope admin. 422 names what failed to load; the previous policies stay active.",
    responses(
        (status = 200, description = "The new active policy set", body = PoliciesView),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem)
    )
)]
pub async fn reload(State(state): State<AppState>, caller: Principal) -> Result<Json<PoliciesView>, ApiError> {
    caller.require(Scope::Admin)?;
    reload::reload_logged(state.policies.clone(), state.config.clone(), "POST /api/admin/reload")
        .await
        .map_err(|e| ApiError::Unprocessable(format!("reload refused, the previous policies stay active: {e}")))?;
    Ok(Json(view(&state)))
}

/// Most conflicts one replay looks at.
const MAX_REPLAY: u64 = 10_000;
/// Wall-clock bound of one replay (each call also has `policies.cpu_ms`).
const REPLAY_BUDGET: Duration = Duration::from_secs(30);

/// `POST /api/admin/policies/replay` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    entity: String,
    since: Option<String>,
    limit: Option<u64>,
}

/// `POST /api/admin/policies/replay?entity=&since=&limit=` with a component as the body.
#[utoipa::path(
    post,
    path = "/api/admin/policies/replay",
    operation_id = "replayPolicy",
    tag = "admin",
    summary = "Replay recorded conflicts through a candidate policy (nothing is written)",
    description = "Scope admin. The body is the candidate component (.wasm, at most server.max_body_bytes). Each conflict recorded on `entity` is decided again with the incoming, server and base records as they were and the entity type's policy_settings; the answer counts what the candidate would have accepted, merged, left in conflict or rejected, with up to 5 samples of each (ids and field-level differences). At most `limit` conflicts (default 1000, at most 10000), oldest first, within 30 s (`truncated` says the bound stopped it). One replay runs at a time (429 while another does). 422 when the component does not load.",
    params(
        ("entity" = String, Query, description = "The entity type whose conflicts to replay"),
        ("since" = Option<String>, Query, pattern = "^[1-9][0-9]{0,8}[smhd]$", description = "Only conflicts recorded within this long, e.g. 7d; absent = all"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "At most this many conflicts (default 1000)"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "What the candidate would have decided", body = ReplayReport),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 413, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem)
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<ReplayQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Json<crate::sync::rehearse::ReplayReport>, ApiError> {
    caller.require(Scope::Admin)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let since = match query.since.as_deref() {
        None => 0,
        Some(text) => {
            // Exactly the document's pattern: 1 to 9 digits, no leading zero, then s, m, h or d.
            let digits = text.get(..text.len().saturating_sub(1)).unwrap_or("");
            let shaped = (1..=9).contains(&digits.len())
                && !digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit());
            let ms = crate::model::parse_duration_ms(text).ok().filter(|_| shaped).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`since` must be like 7d (1 to 9 digits, then s, m, h or d), not `{text}`"
                ))
            })?;
            crate::model::now_ms().saturating_sub(ms)
        }
    };
    let limit = match query.limit {
        None => 1000,
        Some(n) if (1..=MAX_REPLAY).contains(&n) => n,
        Some(_) => return Err(ApiError::BadRequest(format!("`limit` must be from 1 to {MAX_REPLAY}"))),
    };
    let Some(entity) = state.config.entities.get(&query.entity) else {
        return Err(ApiError::Unprocessable(format!("no entity type `{}`", query.entity)));
    };
    if body.is_empty() {
        return Err(ApiError::Unprocessable("the body must be the candidate policy component (.wasm)".into()));
    }
    let Ok(_running) = state.limits.replays.try_acquire() else {
        return Err(ApiError::TooManyRequests {
            detail: "another policy replay is running; retry when it ends".into(),
            retry_after_secs: Some(REPLAY_BUDGET.as_secs()),
        });
    };
    let settings = entity.settings_json();
    let runtime = state.policies.runtime().clone();
    let candidate =
        tokio::task::spawn_blocking(move || runtime.load("candidate", &body, "replay request", "candidate"))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Unprocessable(format!("the candidate does not load: {e}")))?;
    let decide = move |input: &crate::model::MergeInput<'_>| {
        candidate.decide_or_conflict(input, &settings, crate::policy::Mode::Replay)
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    Ok(Json(state.sync.replay_policy(&query.entity, since, limit, REPLAY_BUDGET, decide).await?))
}

/// `GET /api/admin/policies/{entity}/shadow` answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowReport {
    entity: String,
    #[serde(flatten)]
    shadow: ShadowView,
    /// The latest disagreements (at most 50), oldest first.
    sample: Vec<DisagreementView>,
}

/// One call where the shadow decided otherwise.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisagreementView {
    /// Unix ms.
    at: i64,
    user_id: String,
    record_id: String,
    /// The live decision's kind: accept, merged, conflict or reject.
    live: String,
    /// The shadow's: the same kinds, or `failed`.
    shadow: String,
    /// The shadow's reason (conflict, reject, failure).
    reason: Option<String>,
}

/// `GET /api/admin/policies/{entity}/shadow`.
#[utoipa::path(
    get,
    path = "/api/admin/policies/{entity}/shadow",
    operation_id = "shadowReport",
    tag = "admin",
    summary = "How an entity type's shadow policy compares with the live one, with recent disagreements",
    description = "Scope admin. 404 when the entity type has no shadow_policy. Counts start when the policy set is loaded (startup or reload).",
    params(("entity" = String, Path, description = "The entity type")),
    responses(
        (status = 200, description = "Agreement counts and the latest disagreements", body = ShadowReport),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
        (status = 429, response = Problem)
    )
)]
pub async fn shadow(
    State(state): State<AppState>,
    caller: Principal,
    axum::extract::Path(entity): axum::extract::Path<String>,
) -> Result<Json<ShadowReport>, ApiError> {
    caller.require(Scope::Admin)?;
    let set = state.policies.current();
    let Some(shadow) = set.bindings.iter().find(|(e, _)| *e == entity).and_then(|(_, b)| b.shadow.clone()) else {
        return Err(ApiError::NotFound(format!("entity type `{entity}` has no shadow_policy")));
    };
    let sample = shadow
        .disagreements()
        .into_iter()
        .map(|d| DisagreementView {
            at: d.at,
            user_id: d.user,
            record_id: d.record_id,
            live: d.live.to_string(),
            shadow: d.shadow.to_string(),
            reason: d.reason,
        })
        .collect();
    Ok(Json(ShadowReport { entity, shadow: shadow_view(&shadow), sample }))
}
