//! Applying one push inside its write transaction (runs on the store's writer thread).

use std::collections::HashMap;
use std::io::Write as _;

use super::policy::{Decision, MergeInput};
use super::wire::{Incoming, PushRequest};
use super::{Entities, EntityType, cursor, json};
use crate::metrics::OutcomeCounts;
use crate::policy::PolicySet;
use crate::store::{NewConflict, RecordRow, StoreError, Tx};

/// How a push ended inside the transaction.
pub enum Applied {
    /// A new push: its response, and the last sequence it wrote (if it wrote any).
    Fresh { response: String, wrote_up_to: Option<i64>, counts: OutcomeCounts },
    /// The same `pushId` and body were seen before: the stored response.
    Replay(String),
    /// The same `pushId` with a different body.
    PushIdReused,
}

enum Outcome {
    Applied(i64),
    Unchanged(i64),
    Merged(RecordRow),
    Conflict { server: Option<RecordRow>, conflict_id: String, reason: String },
    Rejected(String),
}

impl Outcome {
    /// Position in `Metrics::OUTCOMES`.
    fn index(&self) -> usize {
        match self {
            Outcome::Applied(_) => 0,
            Outcome::Unchanged(_) => 1,
            Outcome::Merged(_) => 2,
            Outcome::Conflict { .. } => 3,
            Outcome::Rejected(_) => 4,
        }
    }
}

pub fn apply(
    tx: &Tx<'_>,
    user: &str,
    entities: &Entities,
    policies: &PolicySet,
    req: &PushRequest,
    now: i64,
) -> Result<Applied, StoreError> {
    if let Some(push_id) = &req.push_id
        && let Some((hash, response)) = tx.logged_push(user, push_id)?
    {
        return Ok(if hash == req.body_hash { Applied::Replay(response) } else { Applied::PushIdReused });
    }
    let state = tx.sync_state()?;
    let mut seq = state.last_seq;
    // (type index, id) → whether the record exists once this push commits.
    let mut fate: HashMap<(usize, &str), bool> = HashMap::with_capacity(req.record_count);
    let mut counts: OutcomeCounts = [0; 5];
    let mut out = Vec::with_capacity(req.record_count * 64 + 64);
    out.extend_from_slice(b"{\"results\":{");
    for (g, (type_index, records)) in req.groups.iter().enumerate() {
        let ty = &entities.types[*type_index];
        if g > 0 {
            out.push(b',');
        }
        json::push_str(&mut out, &ty.name);
        out.extend_from_slice(b":[");
        for (i, incoming) in records.iter().enumerate() {
            let outcome = match check_refs(tx, user, ty, incoming, &fate)? {
                Some(reason) => Outcome::Rejected(reason),
                None => decide_and_write(tx, user, ty, *type_index, policies, incoming, now, &mut seq)?,
            };
            // A child may only lean on a parent that exists once this push commits.
            let stored = !matches!(outcome, Outcome::Rejected(_) | Outcome::Conflict { server: None, .. });
            fate.insert((*type_index, incoming.id.as_str()), stored);
            counts[outcome.index()] += 1;
            if i > 0 {
                out.push(b',');
            }
            push_result(&mut out, &incoming.id, &outcome);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"cursor\":");
    json::push_str(&mut out, &cursor::encode(&state.epoch, seq));
    out.push(b'}');
    let response = String::from_utf8(out).map_err(|e| StoreError::Commit(format!("response not UTF-8: {e}")))?;

    let wrote_up_to = (seq > state.last_seq).then_some(seq);
    if wrote_up_to.is_some() {
        tx.set_last_seq(seq)?;
    }
    if let Some(push_id) = &req.push_id {
        tx.log_push(user, push_id, &req.body_hash, &response, now)?;
    }
    Ok(Applied::Fresh { response, wrote_up_to, counts })
}

/// A reason to reject when a reference names no record of this user, or a
/// parent rejected earlier in this push; `None` when every reference holds.
fn check_refs(
    tx: &Tx<'_>,
    user: &str,
    ty: &EntityType,
    incoming: &Incoming,
    fate: &HashMap<(usize, &str), bool>,
) -> Result<Option<String>, StoreError> {
    for (r, value) in ty.refs.iter().zip(&incoming.refs) {
        let Some(parent) = value else { continue };
        match fate.get(&(r.target_index, parent.as_str())) {
            Some(true) => continue,
            Some(false) => {
                return Ok(Some(format!(
                    "{} names {} {parent:?}, which this push did not store (rejected or in conflict)",
                    r.field, r.target
                )));
            }
            None => {}
        }
        if !tx.record_exists(user, &r.target, parent)? {
            return Ok(Some(format!("{} names no {} record {parent:?}", r.field, r.target)));
        }
    }
    Ok(None)
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
fn decide_and_write(
    tx: &Tx<'_>,
    user: &str,
    ty: &EntityType,
    type_index: usize,
    policies: &PolicySet,
    incoming: &Incoming,
    now: i64,
    seq: &mut i64,
) -> Result<Outcome, StoreError> {
    let server = tx.record(user, &ty.name, &incoming.id)?;
    if let Some(s) = &server
        && s.version == incoming.version
        && s.deleted == incoming.deleted
        && json::same_value(&s.data, &incoming.data)
    {
        return Ok(Outcome::Unchanged(s.version));
    }
    let base = match &server {
        Some(s) if incoming.base_version > 0 => {
            if s.version == incoming.base_version {
                Some(s.clone())
            } else {
                tx.record_version(user, &ty.name, &incoming.id, incoming.base_version)?
            }
        }
        _ => None,
    };
    let input = MergeInput { entity: &ty.name, user, server: server.as_ref(), base: base.as_ref(), incoming };
    let decision = policies.decide(type_index, &input);
    let version = server.as_ref().map_or(incoming.version, |s| s.version.saturating_add(1).max(incoming.version));
    let mut store_as = |data: &str, deleted: bool| -> Result<RecordRow, StoreError> {
        *seq += 1;
        let row = RecordRow {
            entity: ty.name.clone(),
            id: incoming.id.clone(),
            version,
            deleted,
            data: data.to_string(),
            updated_at: now,
            seq: *seq,
        };
        tx.put_record(user, &row, server.as_ref(), ty.history)?;
        Ok(row)
    };
    Ok(match decision {
        Decision::Accept => Outcome::Applied(store_as(&incoming.data, incoming.deleted)?.version),
        Decision::Merged { data, deleted } => Outcome::Merged(store_as(&data, deleted)?),
        Decision::Reject(reason) => Outcome::Rejected(reason),
        Decision::Conflict(reason) => {
            // Never dropped: the incoming record goes to the conflicts table.
            let conflict_id = super::new_id();
            let incoming_json = incoming_wire(incoming);
            let server_json = server.as_ref().map(|s| {
                let mut out = Vec::new();
                json::push_record(&mut out, s);
                String::from_utf8_lossy(&out).into_owned()
            });
            tx.insert_conflict(
                user,
                &NewConflict {
                    id: &conflict_id,
                    entity: &ty.name,
                    record_id: &incoming.id,
                    incoming: &incoming_json,
                    server: server_json.as_deref(),
                    reason: &reason,
                    created_at: now,
                },
            )?;
            Outcome::Conflict { server, conflict_id, reason }
        }
    })
}

/// The incoming record in wire form, as kept in the conflicts table.
fn incoming_wire(incoming: &Incoming) -> String {
    let mut out = Vec::with_capacity(incoming.data.len() + 96);
    out.extend_from_slice(b"{\"id\":");
    json::push_str(&mut out, &incoming.id);
    let _ = write!(
        out,
        ",\"version\":{},\"baseVersion\":{},\"deleted\":{},\"data\":",
        incoming.version, incoming.base_version, incoming.deleted
    );
    out.extend_from_slice(incoming.data.as_bytes());
    out.push(b'}');
    String::from_utf8_lossy(&out).into_owned()
}

fn push_result(out: &mut Vec<u8>, id: &str, outcome: &Outcome) {
    out.extend_from_slice(b"{\"id\":");
    json::push_str(out, id);
    match outcome {
        Outcome::Applied(v) => {
            let _ = write!(out, ",\"status\":\"applied\",\"serverVersion\":{v}");
        }
        Outcome::Unchanged(v) => {
            let _ = write!(out, ",\"status\":\"unchanged\",\"serverVersion\":{v}");
        }
        Outcome::Merged(row) => {
            let _ = write!(out, ",\"status\":\"merged\",\"serverVersion\":{},\"record\":", row.version);
            json::push_record(out, row);
        }
        Outcome::Conflict { server, conflict_id, reason } => {
            out.extend_from_slice(b",\"status\":\"conflict\"");
            if let Some(server) = server {
                let _ = write!(out, ",\"serverVersion\":{},\"record\":", server.version);
                json::push_record(out, server);
            }
            out.extend_from_slice(b",\"conflictId\":");
            json::push_str(out, conflict_id);
            out.extend_from_slice(b",\"reason\":");
            json::push_str(out, reason);
        }
        Outcome::Rejected(reason) => {
            out.extend_from_slice(b",\"status\":\"rejected\",\"reason\":");
            json::push_str(out, reason);
        }
    }
    out.push(b'}');
}
