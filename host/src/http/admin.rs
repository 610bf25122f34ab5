//! `/api/admin/*`: the policy set in use, and reloading it (scope `admin`).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{ApiError, AppState};
use crate::auth::{Principal, Scope};
use crate::policy::reload;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    entity: String,
    policy: String,
    source: String,
    sha256: String,
    loaded_at: i64,
    calls: u64,
    failures: u64,
    settings: Box<RawValue>,
}

#[derive(Serialize)]
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
pub async fn policies(State(state): State<AppState>, caller: Principal) -> Result<Json<PoliciesView>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(view(&state)))
}

/// `POST /api/admin/reload`: re-read config.toml and the policy dir; switch only if all load.
pub async fn reload(State(state): State<AppState>, caller: Principal) -> Result<Json<PoliciesView>, ApiError> {
    caller.require(Scope::Admin)?;
    reload::reload_logged(state.policies.clone(), state.config.clone(), "POST /api/admin/reload")
        .await
        .map_err(|e| ApiError::Unprocessable(format!("reload refused, the previous policies stay active: {e}")))?;
    Ok(Json(view(&state)))
}
