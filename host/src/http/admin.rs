//! `/api/admin/*`: the policy set in use, and reloading it (scope `admin`).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::schema::Problem;
use super::{ApiError, AppState};
use crate::auth::{Principal, Scope};
use crate::policy::reload;

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
