//! Listing recorded conflicts and resolving them as a new version of the record.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Entities, SyncError, cursor, json};
use crate::config::SyncConfig;
use crate::store::{ConflictRow, ConflictStatus, Notice, RecordRow, Store, StoreError, now_ms};

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
    pub limit: Option<usize>,
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

pub async fn list(store: &Store, user: &str, query: ConflictQuery) -> Result<Vec<u8>, SyncError> {
    let status = match query.status.as_deref().unwrap_or("open") {
        "open" => Some(ConflictStatus::Open),
        "resolved" => Some(ConflictStatus::Resolved),
        "all" => None,
        other => {
            return Err(SyncError::Invalid(format!("`status` must be open, resolved or all, not `{other}`")));
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let after = match query.after.as_deref().filter(|a| !a.is_empty()) {
        None => 0,
        Some(a) => match cursor::decode(a) {
            Some((tag, n)) if tag == "conflicts" => n,
            _ => return Err(SyncError::BadRequest("`after` is not a cursor from a previous conflicts page".into())),
        },
    };
    let (user, entity) = (user.to_string(), query.entity);
    let rows = store.read(move |tx| tx.conflicts(&user, status, entity.as_deref(), after, limit + 1)).await?;
    let has_more = rows.len() > limit;
    let rows = &rows[..rows.len().min(limit)];
    let mut out = Vec::with_capacity(rows.iter().map(|r| r.incoming.len() * 2 + 256).sum::<usize>() + 64);
    out.extend_from_slice(b"{\"conflicts\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_conflict(&mut out, row);
    }
    out.extend_from_slice(b"],\"cursor\":");
    match rows.last() {
        Some(last) if has_more => json::push_str(&mut out, &cursor::encode("conflicts", last.n)),
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(format!(",\"hasMore\":{has_more}}}").as_bytes());
    Ok(out)
}

fn push_conflict(out: &mut Vec<u8>, row: &ConflictRow) {
    out.extend_from_slice(b"{\"id\":");
    json::push_str(out, &row.id);
    out.extend_from_slice(b",\"entity\":");
    json::push_str(out, &row.entity);
    out.extend_from_slice(b",\"recordId\":");
    json::push_str(out, &row.record_id);
    out.extend_from_slice(b",\"incoming\":");
    out.extend_from_slice(row.incoming.as_bytes());
    out.extend_from_slice(b",\"server\":");
    out.extend_from_slice(row.server.as_deref().unwrap_or("null").as_bytes());
    out.extend_from_slice(b",\"reason\":");
    json::push_str(out, &row.reason);
    let status = if row.status == ConflictStatus::Open { "open" } else { "resolved" };
    let resolved = row.resolved_at.map_or("null".to_string(), |t| t.to_string());
    out.extend_from_slice(
        format!(",\"status\":\"{status}\",\"createdAt\":{},\"resolvedAt\":{resolved}}}", row.created_at).as_bytes(),
    );
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
        serde_json::from_str(wire).map_err(|e| StoreError::Commit(format!("stored conflict unreadable: {e}")))?;
    Ok((stored.data.get().to_string(), stored.deleted))
}

pub async fn resolve(
    store: &Store,
    entities: &Entities,
    limits: &SyncConfig,
    user: &str,
    conflict_id: &str,
    resolution: Resolution,
) -> Result<String, SyncError> {
    if let Resolution::Record { data, .. } = &resolution {
        if !data.starts_with('{') {
            return Err(SyncError::Invalid("`record.data` must be a JSON object".into()));
        }
        if data.len() > limits.max_record_bytes || json::depth(data) > limits.max_json_depth {
            return Err(SyncError::Invalid("`record.data` exceeds the record size or depth limit".into()));
        }
    }
    let (user, id) = (user.to_string(), conflict_id.to_string());
    let types = entities.types.clone();
    store
        .write_notifying(move |tx| {
            let Some(conflict) = tx.conflict(&user, &id)? else {
                return Ok((Err(SyncError::NotFound("no conflict with this id".into())), None));
            };
            if conflict.status == ConflictStatus::Resolved {
                return Ok((Err(SyncError::Conflict("this conflict is already resolved".into())), None));
            }
            let current = tx.record(&user, &conflict.entity, &conflict.record_id)?;
            let (data, deleted) = match resolution {
                Resolution::Server => match &current {
                    Some(c) => (c.data.clone(), c.deleted),
                    None => {
                        let why = "the server has no record to keep; take the incoming one or give a record";
                        return Ok((Err(SyncError::Conflict(why.into())), None));
                    }
                },
                Resolution::Incoming => data_of(&conflict.incoming)?,
                Resolution::Record { data, deleted } => {
                    // A hand-written record gets the same reference check as a push.
                    if let Some(ty) = types.iter().find(|t| t.name == conflict.entity) {
                        let values = super::wire::reference_values(&data, ty).unwrap_or_default();
                        for (r, value) in ty.refs.iter().zip(values) {
                            let Some(parent) = value else { continue };
                            if !tx.record_exists(&user, &r.target, &parent)? {
                                let why = format!("record.data.{} names no {} record {parent:?}", r.field, r.target);
                                return Ok((Err(SyncError::Invalid(why)), None));
                            }
                        }
                    }
                    (data, deleted)
                }
            };
            let state = tx.sync_state()?;
            let seq = state.last_seq + 1;
            let now = now_ms();
            let row = RecordRow {
                entity: conflict.entity.clone(),
                id: conflict.record_id.clone(),
                version: current.as_ref().map_or(1, |c| c.version.saturating_add(1)),
                deleted,
                data,
                updated_at: now,
                seq,
            };
            let keep = types.iter().find(|t| t.name == conflict.entity).map_or(0, |t| t.history);
            tx.put_record(&user, &row, current.as_ref(), keep)?;
            tx.set_last_seq(seq)?;
            tx.mark_conflict_resolved(&user, &id, now)?;
            let mut out = Vec::new();
            out.extend_from_slice(b"{\"id\":");
            json::push_str(&mut out, &id);
            out.extend_from_slice(b",\"status\":\"resolved\",\"record\":");
            json::push_record(&mut out, &row);
            out.extend_from_slice(b",\"cursor\":");
            json::push_str(&mut out, &cursor::encode(&state.epoch, seq));
            out.push(b'}');
            let body = String::from_utf8_lossy(&out).into_owned();
            Ok((Ok(body), Some(Notice { user, seq })))
        })
        .await?
}
