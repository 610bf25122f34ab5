//! Listing recorded conflicts and resolving them as a new version of the record.

use serde::Deserialize;
use serde_json::value::RawValue;

use std::sync::Arc;

use super::{Entities, SyncError, cursor, json};
use crate::config::{QuotaConfig, SyncConfig};
use crate::store::{ConflictRow, ConflictStatus, Notice, ReadTx, RecordRow, Store, StoreError, Usage, now_ms};

/// Largest page of `GET /api/sync/conflicts`.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// Query parameters of `GET /api/sync/conflicts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictQuery {
    /// `open` (default), `resolved` or `all`.
    pub status: Option<String>,
    /// Only conflicts of this entity type.
    pub entity: Option<String>,
    /// At most this many (default 100, max 1000).
    pub limit: Option<u64>,
    /// `cursor` of the previous page.
    pub after: Option<String>,
}

/// How to resolve a conflict.
#[derive(Debug)]
pub enum Resolution {
    /// Keep the server's current record (written again as a new version).
    Server,
    /// Store the incoming record that lost.
    Incoming,
    /// Store this record (`data`, `deleted`).
    Record { data: String, deleted: bool },
}

/// One page of conflicts, capped at `limit` rows and about `max_bytes`.
pub async fn list(store: &Store, user: &str, query: ConflictQuery, max_bytes: usize) -> Result<Vec<u8>, SyncError> {
    let status = match query.status.as_deref().unwrap_or("open") {
        "open" => Some(ConflictStatus::Open),
        "resolved" => Some(ConflictStatus::Resolved),
        "superseded" => Some(ConflictStatus::Superseded),
        "all" => None,
        other => {
            return Err(SyncError::Invalid(format!(
                "`status` must be open, resolved, superseded or all, not `{other}`"
            )));
        }
    };
    // Like pull: outside 1..=2^31-1 is refused (the document's bounds), more than the page maximum is capped.
    let limit = super::pull::query_int("limit", query.limit, 1)?
        .map_or(DEFAULT_PAGE, |l| usize::try_from(l).unwrap_or(usize::MAX))
        .min(MAX_PAGE);
    let after = match query.after.as_deref().filter(|a| !a.is_empty()) {
        None => 0,
        Some(a) => match cursor::decode(a) {
            Some((tag, n)) if tag == "conflicts" => n,
            _ => return Err(SyncError::BadRequest("`after` is not a cursor from a previous conflicts page".into())),
        },
    };
    let (user, entity) = (user.to_string(), query.entity);
    store
        .read(move |tx| {
            let (rows, mut has_more) = tx.conflicts(&user, status, entity.as_deref(), after, limit, max_bytes)?;
            let mut out = Vec::with_capacity(rows.iter().map(|r| r.incoming.len() + 256).sum::<usize>() + 64);
            out.extend_from_slice(b"{\"conflicts\":[");
            let mut last = None;
            for (i, row) in rows.iter().enumerate() {
                // The server records rendered beside them count towards the cap too.
                if i > 0 && out.len() >= max_bytes {
                    has_more = true;
                    break;
                }
                if i > 0 {
                    out.push(b',');
                }
                let server = match row.server_version {
                    Some(v) => tx.record_at(&user, &row.entity, &row.record_id, v)?,
                    None => None,
                };
                push_conflict(&mut out, row, server.as_ref());
                last = Some(row.n);
            }
            out.extend_from_slice(b"],\"cursor\":");
            match last {
                Some(n) if has_more => json::push_str(&mut out, &cursor::encode("conflicts", n)),
                _ => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(format!(",\"hasMore\":{has_more}}}").as_bytes());
            Ok(out)
        })
        .await
        .map_err(SyncError::from)
}

/// Renders a conflict; `server` is the record version it met, `null` when
/// there was none (or, long after resolution, history no longer holds it).
fn push_conflict(out: &mut Vec<u8>, row: &ConflictRow, server: Option<&RecordRow>) {
    out.extend_from_slice(b"{\"id\":");
    json::push_str(out, &row.id);
    out.extend_from_slice(b",\"entity\":");
    json::push_str(out, &row.entity);
    out.extend_from_slice(b",\"recordId\":");
    json::push_str(out, &row.record_id);
    out.extend_from_slice(b",\"incoming\":");
    out.extend_from_slice(row.incoming.as_bytes());
    out.extend_from_slice(b",\"server\":");
    match server {
        Some(record) => json::push_record(out, record),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"reason\":");
    json::push_str(out, &row.reason);
    let status = row.status.as_str();
    let resolved = row.resolved_at.map_or("null".to_string(), |t| t.to_string());
    out.extend_from_slice(
        format!(",\"status\":\"{status}\",\"createdAt\":{},\"resolvedAt\":{resolved}", row.created_at).as_bytes(),
    );
    out.extend_from_slice(b",\"decidedBy\":");
    json::push_decided_by(out, row.decided_by.as_ref());
    out.push(b'}');
}

/// The `data` and `deleted` of a stored wire record.
fn data_of(wire: &str) -> Result<(String, bool), StoreError> {
    #[derive(Deserialize)]
    struct Stored<'a> {
        #[serde(borrow)]
        data: &'a RawValue,
        #[serde(default)]
        deleted: bool,
    }
    let stored: Stored<'_> =
        serde_json::from_str(wire).map_err(|e| StoreError::Other(format!("stored conflict unreadable: {e}")))?;
    Ok((stored.data.get().to_string(), stored.deleted))
}

/// What a resolution is checked against.
pub struct Setting {
    pub entities: Arc<Entities>,
    pub limits: Arc<SyncConfig>,
    pub quotas: Arc<QuotaConfig>,
    pub epoch: Arc<str>,
}

/// Stores the chosen record as a new version. A hand-written record is
/// validated like a pushed one (size, depth, reference fields) and its
/// references must name records the user has.
pub async fn resolve(
    store: &Store,
    cx: Setting,
    user: &str,
    conflict_id: &str,
    resolution: Resolution,
) -> Result<String, SyncError> {
    let (owner, id) = (user.to_string(), conflict_id.to_string());
    store
        .write_for(user, 1, move |tx| {
            let user = owner;
            let Some(conflict) = tx.conflict(&user, &id)? else {
                return Err(SyncError::NotFound("no conflict with this id".into()));
            };
            if conflict.status != ConflictStatus::Open {
                return Err(SyncError::Conflict(format!("this conflict is already {}", conflict.status.as_str())));
            }
            let ty = cx.entities.types.iter().find(|t| t.name == conflict.entity);
            let current = tx.record(&user, &conflict.entity, &conflict.record_id)?;
            let (data, deleted) = match resolution {
                Resolution::Server => match &current {
                    Some(c) => (c.data.clone(), c.deleted),
                    None => {
                        let why = "the server has no record to keep; take the incoming one or give a record";
                        return Err(SyncError::Conflict(why.into()));
                    }
                },
                Resolution::Incoming => data_of(&conflict.incoming)?,
                Resolution::Record { data, deleted } => {
                    if let Some(ty) = ty {
                        let named = super::wire::check_data(&data, ty, &cx.limits)
                            .map_err(|e| SyncError::Invalid(format!("record: {e}")))?;
                        check_parents(tx, &user, ty, &named.refs)?;
                    }
                    (data, deleted)
                }
            };
            let now = now_ms();
            let blobs = ty.map_or_else(Vec::new, |ty| super::blobs::named_by(ty, &data, deleted));
            let blobs: Vec<&str> = blobs.iter().map(String::as_str).collect();
            let held = tx.touch_blobs(&user, &blobs, now)?;
            if let Some(missing) = blobs.iter().find(|h| !held.contains(**h)) {
                return Err(SyncError::Invalid(format!(
                    "the record names blob {missing}, which you have not uploaded (or which was collected): \
                     PUT /api/blobs/{missing} first, then resolve again"
                )));
            }
            let state = tx.user_state(&user)?;
            let seq = state.last_seq + 1;
            let row = RecordRow {
                entity: conflict.entity.clone(),
                id: conflict.record_id.clone(),
                version: current.as_ref().map_or(1, |c| c.version.saturating_add(1)),
                deleted,
                data,
                updated_at: now,
                seq,
                decided_by: None,
            };
            let delta = Usage {
                records: i64::from(current.is_none()),
                bytes: row.data.len() as i64
                    - current.as_ref().map_or(0, |c| c.data.len() as i64)
                    - conflict.incoming.len() as i64,
                open_conflicts: -1,
            };
            super::push::check_quotas(&state.usage, &delta, &cx.quotas)?;
            // Resolve first, so the version it named is no longer held in history for it.
            tx.mark_conflict_resolved(&user, &id, now)?;
            tx.put_record(&user, &row, current.as_ref(), ty.map_or(0, |t| t.history))?;
            if ty.is_some_and(|t| !t.blobs.is_empty()) {
                tx.set_blob_refs(&user, &row.entity, &row.id, &blobs, now)?;
            }
            tx.update_user_state(&user, Some(seq), &delta)?;
            let mut out = Vec::new();
            out.extend_from_slice(b"{\"id\":");
            json::push_str(&mut out, &id);
            out.extend_from_slice(b",\"status\":\"resolved\",\"record\":");
            json::push_record(&mut out, &row);
            out.extend_from_slice(b",\"cursor\":");
            json::push_str(&mut out, &cursor::encode(&cx.epoch, seq));
            out.push(b'}');
            let body = String::from_utf8_lossy(&out).into_owned();
            Ok((body, Some(Notice { user, seq })))
        })
        .await
}

/// Refuses a record whose references name records the user does not have.
fn check_parents(
    tx: &ReadTx<'_>,
    user: &str,
    ty: &super::EntityType,
    refs: &[Option<String>],
) -> Result<(), SyncError> {
    for (r, value) in ty.refs.iter().zip(refs) {
        let Some(parent) = value else { continue };
        if !tx.record_exists(user, &r.target, parent)? {
            return Err(SyncError::Invalid(format!("record.data.{} names no {} record {parent:?}", r.field, r.target)));
        }
    }
    Ok(())
}
