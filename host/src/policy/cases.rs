//! `accord policy test`: run a policy component on recorded cases and compare
//! each decision with the expected one.

use serde::Deserialize;
use serde_json::Value;

use super::Policy;
use crate::model::{Decision, Incoming, MergeInput, RecordRow};

/// One case of a cases file (a JSON array of these).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default = "default_entity")]
    pub entity_type: String,
    #[serde(default = "default_user")]
    pub user_id: String,
    #[serde(default)]
    pub settings: Option<Value>,
    #[serde(default)]
    pub server: Option<CaseRecord>,
    #[serde(default)]
    pub base: Option<CaseRecord>,
    pub incoming: CaseRecord,
    /// `"accept"`, `"merged"`, `"conflict"`, `"reject"`, or `{"merged": <data>}`,
    /// `{"conflict": "<reason contains>"}`, `{"reject": "<reason contains>"}`.
    #[serde(default)]
    pub expect: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaseRecord {
    pub id: String,
    pub version: i64,
    #[serde(default)]
    pub base_version: i64,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default = "empty_object")]
    pub data: Value,
    #[serde(default)]
    pub updated_at: i64,
}

fn default_entity() -> String {
    "things".into()
}
fn default_user() -> String {
    "user".into()
}
fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

impl CaseRecord {
    fn row(&self, entity: &str) -> RecordRow {
        RecordRow {
            entity: entity.into(),
            id: self.id.clone(),
            version: self.version,
            deleted: self.deleted,
            data: self.data.to_string(),
            updated_at: self.updated_at,
            seq: 0,
            decided_by: None,
        }
    }
}

/// The outcome of one case.
pub struct Outcome {
    pub name: String,
    pub decision: String,
    /// `None` when the case states no expectation.
    pub passed: Option<bool>,
    pub why: String,
}

fn describe(decision: &Result<Decision, super::PolicyFailure>) -> String {
    match decision {
        Ok(Decision::Accept) => "accept".into(),
        Ok(Decision::Merged { data, deleted }) => format!("merged{} {data}", if *deleted { " (deleted)" } else { "" }),
        Ok(Decision::Conflict(r)) => format!("conflict: {r}"),
        Ok(Decision::Reject(r)) => format!("reject: {r}"),
        Err(f) => format!("conflict: policy failed: {f}"),
    }
}

fn check(expect: &Value, decision: &Result<Decision, super::PolicyFailure>) -> Result<(), String> {
    let (kind, detail) = match expect {
        Value::String(kind) => (kind.as_str(), None),
        Value::Object(map) if map.len() == 1 => {
            let (k, v) = map.iter().next().map(|(k, v)| (k.as_str(), Some(v))).unwrap_or(("", None));
            (k, v)
        }
        _ => return Err("`expect` must be a string or a one-key object".into()),
    };
    let contains = |reason: &str| match detail {
        Some(Value::String(s)) if !reason.contains(s.as_str()) => Err(format!("reason does not contain {s:?}")),
        _ => Ok(()),
    };
    match (kind, decision) {
        ("accept", Ok(Decision::Accept)) => Ok(()),
        ("merged", Ok(Decision::Merged { data, .. })) => match detail {
            Some(want) if serde_json::from_str::<Value>(data).ok().as_ref() != Some(want) => {
                Err(format!("merged data differs from {want}"))
            }
            _ => Ok(()),
        },
        ("conflict", Ok(Decision::Conflict(r))) => contains(r),
        ("conflict", Err(f)) => contains(&format!("policy failed: {f}")),
        ("reject", Ok(Decision::Reject(r))) => contains(r),
        (other, _) if !["accept", "merged", "conflict", "reject"].contains(&other) => {
            Err(format!("unknown expectation `{other}`"))
        }
        (other, _) => Err(format!("expected {other}")),
    }
}

/// Runs every case through `policy`.
pub fn run(policy: &Policy, cases: &[Case]) -> Vec<Outcome> {
    cases
        .iter()
        .map(|case| {
            let server = case.server.as_ref().map(|r| r.row(&case.entity_type));
            let base = case.base.as_ref().map(|r| r.row(&case.entity_type));
            let i = &case.incoming;
            let incoming = Incoming {
                id: i.id.clone(),
                version: i.version,
                base_version: i.base_version,
                deleted: i.deleted,
                data: i.data.to_string(),
                refs: Vec::new(),
                blobs: Vec::new(),
            };
            let input = MergeInput {
                entity: &case.entity_type,
                user: &case.user_id,
                server: server.as_ref(),
                base: base.as_ref(),
                incoming: &incoming,
            };
            let settings = case.settings.as_ref().map_or_else(|| "{}".to_string(), Value::to_string);
            let decision = policy.decide(&input, &settings, super::Mode::Live);
            let (passed, why) = match &case.expect {
                None => (None, String::new()),
                Some(expect) => match check(expect, &decision) {
                    Ok(()) => (Some(true), String::new()),
                    Err(why) => (Some(false), why),
                },
            };
            Outcome { name: case.name.clone(), decision: describe(&decision), passed, why }
        })
        .collect()
}
