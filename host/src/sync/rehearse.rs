//! Replaying recorded conflicts through a candidate rule before deploying it
//! (`accord policy replay`, `POST /api/admin/policies/replay`): each conflict
//! is decided again with the incoming, server and base records as they were,
//! and the decisions are counted, with a few samples of each kind.
//!
//! The rule is handed in as a function: `sync` runs no WebAssembly itself.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use std::sync::Arc;

use super::{Entities, EntityType, SyncError};
use crate::config::SyncConfig;
use crate::model::{Decision, Incoming, MergeInput, RecordRow};
use crate::store::{ConflictRow, ReadTx, Store};

/// Samples kept per kind of decision.
const SAMPLES: usize = 5;

/// What a candidate rule would have decided on the recorded conflicts.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    pub entity: String,
    /// Conflicts looked at (skipped ones included).
    pub conflicts: usize,
    pub accepted: usize,
    pub merged: usize,
    pub conflict: usize,
    pub rejected: usize,
    /// Conflicts that cannot be replayed as they were: the server version they
    /// met is no longer kept (resolved long ago, history pruned).
    pub skipped: usize,
    /// True when the time bound stopped the replay before the last conflict.
    pub truncated: bool,
    pub samples: Samples,
}

#[derive(Debug, Default, Serialize)]
pub struct Samples {
    pub accepted: Vec<Sample>,
    pub merged: Vec<Sample>,
    pub conflict: Vec<Sample>,
    pub rejected: Vec<Sample>,
}

/// One replayed conflict: which record, why (conflict, reject), and each
/// top-level field where the result differs from the server's record.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub conflict_id: String,
    pub user_id: String,
    pub record_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub fields: Vec<FieldDiff>,
}

/// A field as the server had it, as the client sent it, and as the rule leaves it
/// (`null` when absent; `result` absent for conflicts and rejections).
#[derive(Debug, Serialize)]
pub struct FieldDiff {
    pub field: String,
    pub server: Value,
    pub incoming: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Which conflicts to replay: those on `entity` recorded since `since` (unix
/// ms), at most `limit`, within `budget` of time.
pub struct Scope {
    pub entity: String,
    pub since: i64,
    pub limit: usize,
    pub budget: Duration,
}

/// Replays the stored conflicts `scope` names with `decide` (on a reader thread).
pub async fn replay_stored(
    store: &Store,
    entities: Arc<Entities>,
    limits: Arc<SyncConfig>,
    scope: Scope,
    mut decide: impl FnMut(&MergeInput<'_>) -> Decision + Send + 'static,
) -> Result<ReplayReport, SyncError> {
    let Some(index) = entities.index_of(&scope.entity) else {
        return Err(SyncError::Invalid(format!("no entity type `{}`", scope.entity)));
    };
    store
        .read(move |tx| {
            let conflicts = tx.conflicts_since(&scope.entity, scope.since, scope.limit)?;
            Ok(replay(tx, &entities.types[index], &limits, &conflicts, scope.budget, &mut decide))
        })
        .await?
}

/// Decides each of `conflicts` again with `decide`, within `budget` of time.
pub fn replay(
    tx: &ReadTx<'_>,
    ty: &EntityType,
    limits: &SyncConfig,
    conflicts: &[(String, ConflictRow)],
    budget: Duration,
    decide: &mut dyn FnMut(&MergeInput<'_>) -> Decision,
) -> Result<ReplayReport, SyncError> {
    let started = Instant::now();
    let mut report = ReplayReport { entity: ty.name.clone(), ..ReplayReport::default() };
    for (user, c) in conflicts {
        if started.elapsed() > budget {
            report.truncated = true;
            break;
        }
        report.conflicts += 1;
        let server = match c.server_version {
            Some(v) => match tx.record_at(user, &ty.name, &c.record_id, v)? {
                Some(row) => Some(row),
                None => {
                    report.skipped += 1;
                    continue;
                }
            },
            None => None,
        };
        let incoming = incoming_of(&c.incoming, ty, limits)?;
        let base = c.base.as_deref().map(|b| record_of(b, &ty.name, &c.record_id)).transpose()?;
        let input =
            MergeInput { entity: &ty.name, user, server: server.as_ref(), base: base.as_ref(), incoming: &incoming };
        let decision = decide(&input);
        let server_data = server.as_ref().map_or("{}", |s| s.data.as_str());
        let (kind, reason, result) = match &decision {
            Decision::Accept => (&mut report.accepted, None, Some(incoming.data.as_str())),
            Decision::Merged { data, .. } => (&mut report.merged, None, Some(data.as_str())),
            Decision::Conflict(why) => (&mut report.conflict, Some(why.clone()), None),
            Decision::Reject(why) => (&mut report.rejected, Some(why.clone()), None),
        };
        *kind += 1;
        let samples = match decision {
            Decision::Accept => &mut report.samples.accepted,
            Decision::Merged { .. } => &mut report.samples.merged,
            Decision::Conflict(_) => &mut report.samples.conflict,
            Decision::Reject(_) => &mut report.samples.rejected,
        };
        if samples.len() < SAMPLES {
            samples.push(Sample {
                conflict_id: c.id.clone(),
                user_id: user.clone(),
                record_id: c.record_id.clone(),
                reason,
                fields: diff(server_data, &incoming.data, result),
            });
        }
    }
    Ok(report)
}

/// The report for a terminal: counts, then each kind's samples with their field diffs.
pub fn render_text(r: &ReplayReport, candidate: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{candidate} on {} conflicts of `{}`:", r.conflicts, r.entity);
    let _ = writeln!(
        out,
        "  accepted {}, merged {}, conflict {}, rejected {}, skipped {} (server version no longer kept){}",
        r.accepted,
        r.merged,
        r.conflict,
        r.rejected,
        r.skipped,
        if r.truncated { "; stopped by the time bound" } else { "" }
    );
    let kinds = [
        ("accepted", &r.samples.accepted),
        ("merged", &r.samples.merged),
        ("conflict", &r.samples.conflict),
        ("rejected", &r.samples.rejected),
    ];
    for (kind, samples) in kinds {
        for s in samples {
            let why = s.reason.as_deref().map_or(String::new(), |r| format!(": {r}"));
            let _ = writeln!(out, "{kind} {} (record {}, user {}){why}", s.conflict_id, s.record_id, s.user_id);
            for f in &s.fields {
                let result = f.result.as_ref().map_or(String::new(), |v| format!(" -> {v}"));
                let _ = writeln!(out, "    {}: server {} / incoming {}{result}", f.field, f.server, f.incoming);
            }
        }
    }
    out
}

/// The fields where `server`, `incoming` and `result` (when there is one) do not all agree.
fn diff(server: &str, incoming: &str, result: Option<&str>) -> Vec<FieldDiff> {
    let object = |text: &str| serde_json::from_str::<Map<String, Value>>(text).unwrap_or_default();
    let (server, incoming, result) = (object(server), object(incoming), result.map(object));
    let fields: BTreeSet<&String> =
        server.keys().chain(incoming.keys()).chain(result.iter().flat_map(Map::keys)).collect();
    let get = |m: &Map<String, Value>, f: &str| m.get(f).cloned().unwrap_or(Value::Null);
    fields
        .into_iter()
        .filter_map(|f| {
            let (s, i) = (get(&server, f), get(&incoming, f));
            let r = result.as_ref().map(|r| get(r, f));
            let same = s == i && r.as_ref().is_none_or(|r| *r == s);
            (!same).then(|| FieldDiff { field: f.clone(), server: s, incoming: i, result: r })
        })
        .collect()
}

fn unreadable(e: impl std::fmt::Display) -> SyncError {
    SyncError::Store(crate::store::StoreError::Other(format!("stored conflict unreadable: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(default)]
    version: i64,
    #[serde(default)]
    base_version: i64,
    #[serde(default)]
    deleted: bool,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    updated_at: i64,
}

/// A conflict's incoming record (wire JSON) as the push saw it.
fn incoming_of(wire: &str, ty: &EntityType, limits: &SyncConfig) -> Result<Incoming, SyncError> {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let w: Wire<'_> = serde_json::from_str(wire).map_err(unreadable)?;
    let Id { id } = serde_json::from_str(wire).map_err(unreadable)?;
    let data = w.data.get().to_string();
    let named = super::wire::check_data(&data, ty, limits).map_err(unreadable)?;
    Ok(Incoming {
        id,
        version: w.version,
        base_version: w.base_version,
        deleted: w.deleted,
        data,
        refs: named.refs,
        blobs: named.blobs,
    })
}

/// A conflict's base record (wire JSON).
fn record_of(wire: &str, entity: &str, id: &str) -> Result<RecordRow, SyncError> {
    let w: Wire<'_> = serde_json::from_str(wire).map_err(unreadable)?;
    Ok(RecordRow {
        entity: entity.to_string(),
        id: id.to_string(),
        version: w.version,
        deleted: w.deleted,
        data: w.data.get().to_string(),
        updated_at: w.updated_at,
        seq: 0,
        decided_by: None,
    })
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn diffs_name_only_fields_that_differ() {
        let d = diff(r#"{"a":1,"b":2,"c":3}"#, r#"{"a":1,"b":5,"c":3}"#, Some(r#"{"a":1,"b":5,"c":3,"d":0}"#));
        let fields: Vec<&str> = d.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["b", "d"]);
        assert_eq!(d[0].result, Some(serde_json::json!(5)));
        let d = diff(r#"{"a":1}"#, r#"{"a":2}"#, None);
        assert_eq!((d.len(), d[0].result.is_none()), (1, true));
    }
}
