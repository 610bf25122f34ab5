//! Applying one push inside its write transaction (runs on the store's writer thread).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;

use super::merge::MergeRules;
use super::replay::{self, Splice};
use super::wire::PushRequest;
use super::{Entities, EntityType, SyncError, cursor, json};
use crate::config::QuotaConfig;
use crate::metrics::OutcomeCounts;
use crate::model::{DecidedBy, Decision, Incoming, MergeInput};
use crate::store::{NewConflict, RecordRow, StoreError, Usage, WriteTx};

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

/// What a push is checked against besides its records.
pub struct Context<'a> {
    pub entities: &'a Entities,
    pub rules: &'a dyn MergeRules,
    pub quotas: &'a QuotaConfig,
    pub epoch: &'a str,
    pub now: i64,
    pub metrics: &'a crate::metrics::Metrics,
}

/// Applies a push for `user`. An `Err` (a quota reached) rolls back
/// everything the push wrote.
pub fn apply(tx: &WriteTx<'_>, user: &str, cx: &Context<'_>, req: &PushRequest) -> Result<Applied, SyncError> {
    if let Some(push_id) = &req.push_id
        && let Some(logged) = tx.logged_push(user, push_id)?
    {
        if !req.same_request_as(&logged.body_hash, cx.entities) {
            return Ok(Applied::PushIdReused);
        }
        return Ok(Applied::Replay(replay::unpack(tx, user, logged.stored)?));
    }
    let (entities, rules, now) = (cx.entities, cx.rules, cx.now);
    let state = tx.user_state(user)?;
    let mut seq = state.last_seq;
    let mut delta = Usage::default();
    let mut splices: Vec<Splice> = Vec::new();
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
        // One query per type for the records the group touches, and one per
        // reference field for the parents it names (a round trip per record
        // is what a networked database pays most for).
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let mut current: HashMap<String, RecordRow> =
            tx.records_of(user, &ty.name, &ids)?.into_iter().map(|r| (r.id.clone(), r)).collect();
        let parents = known_parents(tx, user, ty, records, &fate)?;
        let blobs = held_blobs(tx, user, ty, records, now)?;
        for (i, incoming) in records.iter().enumerate() {
            let refused = check_refs(ty, incoming, &fate, &parents).or_else(|| check_blobs(ty, incoming, &blobs));
            let outcome = match refused {
                Some(reason) => Outcome::Rejected(reason),
                None => {
                    let at = Write {
                        tx,
                        metrics: cx.metrics,
                        user,
                        client: req.client_id.as_deref(),
                        ty,
                        type_index: *type_index,
                        now,
                    };
                    let server = current.remove(&incoming.id);
                    decide_and_write(&at, rules, incoming, server, &mut seq, &mut delta)?
                }
            };
            // A newer version of a record accepted from a client makes that
            // client's own open conflicts on the record moot.
            if let (Outcome::Applied(_) | Outcome::Merged(_), Some(client)) = (&outcome, &req.client_id)
                && state.usage.open_conflicts + delta.open_conflicts > 0
            {
                let (n, bytes) = tx.supersede_conflicts(user, &ty.name, &incoming.id, client, now)?;
                delta.open_conflicts -= n;
                delta.bytes -= bytes;
            }
            if !ty.blobs.is_empty() {
                // What the stored version names keeps those blobs alive.
                let named = match &outcome {
                    Outcome::Applied(_) if incoming.deleted => Some(Vec::new()),
                    Outcome::Applied(_) => Some(incoming.blobs.iter().flatten().cloned().collect()),
                    Outcome::Merged(row) => Some(super::blobs::named_by(ty, &row.data, row.deleted)),
                    _ => None,
                };
                if let Some(named) = named {
                    let named: Vec<&str> = named.iter().map(String::as_str).collect();
                    tx.set_blob_refs(user, &ty.name, &incoming.id, &named, now)?;
                }
            }
            // A child may only lean on a parent that exists once this push commits.
            let stored = !matches!(outcome, Outcome::Rejected(_) | Outcome::Conflict { server: None, .. });
            fate.insert((*type_index, incoming.id.as_str()), stored);
            counts[outcome.index()] += 1;
            if i > 0 {
                out.push(b',');
            }
            push_result(&mut out, &ty.name, &incoming.id, &outcome, &mut splices);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"cursor\":");
    json::push_str(&mut out, &cursor::encode(cx.epoch, seq));
    out.push(b'}');

    let response = String::from_utf8(out).map_err(|e| StoreError::Other(format!("response not UTF-8: {e}")))?;
    if let Some(push_id) = &req.push_id {
        delta.bytes += tx.log_push(user, push_id, &req.body_hash, &replay::store_form(&response, &splices), now)?;
    }
    check_quotas(&state.usage, &delta, cx.quotas)?;
    let wrote_up_to = (seq > state.last_seq).then_some(seq);
    tx.update_user_state(user, wrote_up_to, &delta)?;
    Ok(Applied::Fresh { response, wrote_up_to, counts })
}

/// Refuses a write that takes a user past a quota it grows; a write that
/// shrinks what is stored passes even above a (lowered) quota.
pub fn check_quotas(before: &Usage, delta: &Usage, quotas: &QuotaConfig) -> Result<(), SyncError> {
    let dimensions = [
        ("records", "quotas.records", before.records, delta.records, quotas.records),
        ("bytes", "quotas.bytes", before.bytes, delta.bytes, quotas.bytes),
        ("open conflicts", "quotas.open_conflicts", before.open_conflicts, delta.open_conflicts, quotas.open_conflicts),
    ];
    for (what, key, used, change, limit) in dimensions {
        let after = used.saturating_add(change);
        if limit > 0 && change > 0 && u64::try_from(after).unwrap_or(0) > limit {
            return Err(SyncError::QuotaExceeded(format!(
                "this write would bring your stored {what} to {after}; the quota is {limit} ({key}). \
                 Nothing was written: delete data or resolve conflicts first"
            )));
        }
    }
    Ok(())
}

/// The parents, per reference field, that the user already has among those
/// the group names and this push has not decided on (parents of earlier
/// types were decided before this group, so the answer cannot change).
fn known_parents(
    tx: &WriteTx<'_>,
    user: &str,
    ty: &EntityType,
    records: &[Incoming],
    fate: &HashMap<(usize, &str), bool>,
) -> Result<Vec<HashSet<String>>, StoreError> {
    let mut out = Vec::with_capacity(ty.refs.len());
    for (k, r) in ty.refs.iter().enumerate() {
        let mut named: Vec<&str> = records
            .iter()
            .filter_map(|rec| rec.refs.get(k).and_then(Option::as_deref))
            .filter(|p| !fate.contains_key(&(r.target_index, *p)))
            .collect();
        named.sort_unstable();
        named.dedup();
        out.push(tx.existing_ids(user, &r.target, &named)?);
    }
    Ok(out)
}

/// A reason to reject when a reference names no record of this user, or a
/// parent rejected earlier in this push; `None` when every reference holds.
fn check_refs(
    ty: &EntityType,
    incoming: &Incoming,
    fate: &HashMap<(usize, &str), bool>,
    known: &[HashSet<String>],
) -> Option<String> {
    for (k, (r, value)) in ty.refs.iter().zip(&incoming.refs).enumerate() {
        let Some(parent) = value else { continue };
        match fate.get(&(r.target_index, parent.as_str())) {
            Some(true) => continue,
            Some(false) => {
                return Some(format!(
                    "{} names {} {parent:?}, which this push did not store (rejected or in conflict)",
                    r.field, r.target
                ));
            }
            None => {}
        }
        if !known.get(k).is_some_and(|set| set.contains(parent.as_str())) {
            return Some(format!("{} names no {} record {parent:?}", r.field, r.target));
        }
    }
    None
}

/// Of the blobs the group's live records name, those the user has (touched,
/// so none of them is collected while this push names them).
fn held_blobs(
    tx: &WriteTx<'_>,
    user: &str,
    ty: &EntityType,
    records: &[Incoming],
    now: i64,
) -> Result<HashSet<String>, StoreError> {
    if ty.blobs.is_empty() {
        return Ok(HashSet::new());
    }
    let mut named: Vec<&str> =
        records.iter().filter(|r| !r.deleted).flat_map(|r| r.blobs.iter().flatten().map(String::as_str)).collect();
    named.sort_unstable();
    named.dedup();
    tx.touch_blobs(user, &named, now)
}

/// A reason to reject a live record naming a blob its user has not uploaded.
fn check_blobs(ty: &EntityType, incoming: &Incoming, held: &HashSet<String>) -> Option<String> {
    if incoming.deleted {
        return None;
    }
    ty.blobs.iter().zip(&incoming.blobs).find_map(|(field, hash)| {
        let hash = hash.as_deref()?;
        (!held.contains(hash)).then(|| {
            format!(
                "{field} names blob {hash}, which you have not uploaded: PUT /api/blobs/{hash} first, then push again"
            )
        })
    })
}

/// Where one record is written.
struct Write<'a, 't> {
    tx: &'a WriteTx<'t>,
    metrics: &'a crate::metrics::Metrics,
    user: &'a str,
    client: Option<&'a str>,
    ty: &'a EntityType,
    type_index: usize,
    now: i64,
}

/// Decides one record against `server`, its current version (if any), and writes the outcome.
fn decide_and_write(
    at: &Write<'_, '_>,
    rules: &dyn MergeRules,
    incoming: &Incoming,
    server: Option<RecordRow>,
    seq: &mut i64,
    delta: &mut Usage,
) -> Result<Outcome, StoreError> {
    let Write { tx, user, ty, type_index, now, .. } = *at;
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
    let started = std::time::Instant::now();
    let decision = rules.decide(type_index, &input);
    at.metrics.policy_call(started.elapsed().as_secs_f64());
    let version = server.as_ref().map_or(incoming.version, |s| s.version.saturating_add(1).max(incoming.version));
    let mut store_as = |data: &str, deleted: bool, decided_by: Option<DecidedBy>| -> Result<RecordRow, StoreError> {
        *seq += 1;
        match &server {
            None => {
                delta.records += 1;
                delta.bytes += data.len() as i64;
            }
            Some(old) => delta.bytes += data.len() as i64 - old.data.len() as i64,
        }
        let row = RecordRow {
            entity: ty.name.clone(),
            id: incoming.id.clone(),
            version,
            deleted,
            data: data.to_string(),
            updated_at: now,
            seq: *seq,
            decided_by,
        };
        tx.put_record(user, &row, server.as_ref(), ty.history)?;
        Ok(row)
    };
    Ok(match decision {
        Decision::Accept => Outcome::Applied(store_as(&incoming.data, incoming.deleted, None)?.version),
        Decision::Merged { data, deleted } => match &server {
            // The merge kept the server's record as it is: no new version,
            // which every device would otherwise pull as a change.
            Some(s) if s.deleted == deleted && json::same_value(&s.data, &data) => Outcome::Merged(s.clone()),
            _ => Outcome::Merged(store_as(&data, deleted, rules.decided_by(type_index))?),
        },
        Decision::Reject(reason) => Outcome::Rejected(reason),
        Decision::Conflict(reason) => {
            // Never dropped: the incoming record goes to the conflicts table.
            let conflict_id = super::new_id();
            let incoming_json = incoming_wire(incoming);
            delta.open_conflicts += 1;
            delta.bytes += incoming_json.len() as i64;
            tx.insert_conflict(
                user,
                &NewConflict {
                    id: &conflict_id,
                    entity: &ty.name,
                    record_id: &incoming.id,
                    incoming: &incoming_json,
                    server_version: server.as_ref().map(|s| s.version),
                    client_id: at.client,
                    reason: &reason,
                    created_at: now,
                    decided_by: rules.decided_by(type_index).as_ref(),
                    base: base.as_ref().map(record_wire).as_deref(),
                },
            )?;
            Outcome::Conflict { server, conflict_id, reason }
        }
    })
}

/// A stored record in wire form (a conflict's base).
fn record_wire(row: &RecordRow) -> String {
    let mut out = Vec::with_capacity(row.data.len() + 96);
    json::push_record(&mut out, row);
    String::from_utf8_lossy(&out).into_owned()
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

/// Renders one record's result. A conflict's server record is noted in
/// `splices`, so the stored copy of the response can leave it out.
fn push_result(out: &mut Vec<u8>, entity: &str, id: &str, outcome: &Outcome, splices: &mut Vec<Splice>) {
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
                let start = out.len();
                json::push_record(out, server);
                splices.push(Splice {
                    start,
                    end: out.len(),
                    entity: entity.to_string(),
                    id: id.to_string(),
                    version: server.version,
                });
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
