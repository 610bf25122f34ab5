//! Pull: one page of a user's changes after a cursor, as response JSON.

use std::io::Write as _;

use serde::Deserialize;

use super::{Entities, SyncError, cursor, json};
use crate::store::ReadTx;

/// Query parameters of `GET /api/sync/pull`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullQuery {
    /// Cursor from a previous pull; absent means from the beginning.
    pub since: Option<String>,
    /// Most records in this page (default `sync.default_pull_limit`, capped at `sync.max_pull_limit`).
    pub limit: Option<u64>,
    /// Comma-separated entity types; absent means all.
    pub types: Option<String>,
    /// Seconds to wait for a change when there is none (capped at `sync.max_wait_secs`).
    pub wait: Option<u64>,
}

/// Largest value an integer query parameter takes (`limit`, `wait`): the
/// document's `int32` bound. Larger values are refused, not capped, so that the
/// server takes exactly what the document says; within it, `limit` and `wait`
/// are capped by configuration.
pub const MAX_QUERY_INT: u64 = i32::MAX as u64;

/// `value` of query parameter `name`, refused outside `min..=MAX_QUERY_INT`.
pub fn query_int(name: &str, value: Option<u64>, min: u64) -> Result<Option<u64>, SyncError> {
    match value {
        Some(v) if !(min..=MAX_QUERY_INT).contains(&v) => {
            Err(SyncError::BadRequest(format!("`{name}` must be an integer from {min} to {MAX_QUERY_INT}")))
        }
        v => Ok(v),
    }
}

pub struct Page {
    pub body: Vec<u8>,
    pub records: usize,
}

pub fn since(cursor: Option<&str>) -> Result<Option<(String, i64)>, SyncError> {
    match cursor.filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => cursor::decode(c).map(Some).ok_or_else(|| {
            SyncError::BadRequest(
                "`since` is not a cursor this server issued; pass the `cursor` of a previous response".into(),
            )
        }),
    }
}

pub fn types(list: &Option<String>, entities: &Entities) -> Result<Vec<String>, SyncError> {
    let Some(list) = list.as_deref().filter(|l| !l.is_empty()) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for name in list.split(',') {
        if entities.index_of(name).is_none() {
            return Err(SyncError::Invalid(format!("`types` names unknown entity type `{name}`")));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// What a page is read against: the database's epoch and the user's latest
/// change sequence in this snapshot.
pub struct Snapshot<'a> {
    pub epoch: &'a str,
    pub last_seq: i64,
    /// Cursors below this may have missed a compacted delete.
    pub purged_seq: i64,
}

/// Reads one page inside a single read snapshot and renders it.
#[allow(clippy::too_many_arguments)] // one call site; the query's parts
pub fn page(
    tx: &ReadTx<'_>,
    user: &str,
    entities: &Entities,
    state: &Snapshot<'_>,
    since: Option<&(String, i64)>,
    types: &[String],
    limit: usize,
    max_bytes: usize,
) -> Result<Page, SyncError> {
    let from = match since {
        None => 0,
        Some((epoch, _)) if *epoch != state.epoch => {
            return Err(SyncError::CursorGone(
                "this cursor comes from another database (the server was reset or restored); \
                 discard it and pull again from the beginning"
                    .into(),
            ));
        }
        Some((_, seq)) if *seq > state.last_seq => {
            return Err(SyncError::CursorGone(
                "this cursor is ahead of the server's history; discard it and pull again from the beginning".into(),
            ));
        }
        Some((_, seq)) if *seq < state.purged_seq => {
            return Err(SyncError::CursorGone(
                "this cursor is older than deletes that were compacted away (sync.tombstone_retention_days); \
                 discard it and pull again from the beginning"
                    .into(),
            ));
        }
        Some((_, seq)) => *seq,
    };
    // Rendered as read, one buffer per type (rows come in sequence order),
    // then the types in dependency order (unknown types last, by name).
    let mut groups: Vec<(usize, String, Vec<u8>)> = Vec::new();
    let (mut records, mut last) = (0usize, None);
    let has_more = tx.changes_since(user, from, types, (limit, max_bytes), |c| {
        let g = match groups.iter().position(|(_, name, _)| name == c.entity) {
            Some(g) => g,
            None => {
                let order = entities.index_of(c.entity).unwrap_or(usize::MAX);
                groups.push((order, c.entity.to_string(), Vec::with_capacity(64 * 1024)));
                groups.len() - 1
            }
        };
        let out = &mut groups[g].2;
        if !out.is_empty() {
            out.push(b',');
        }
        json::push_change(out, c);
        records += 1;
        last = Some(c.seq);
    })?;
    // With nothing more to send, the cursor may move to the end of this
    // snapshot: every change of this user up to there has been returned.
    let next = match last {
        Some(seq) if has_more => seq,
        Some(seq) => seq.max(state.last_seq),
        None => state.last_seq.max(from),
    };
    groups.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut out =
        Vec::with_capacity(groups.iter().map(|(_, name, text)| name.len() + text.len() + 8).sum::<usize>() + 160);
    out.extend_from_slice(b"{\"changes\":{");
    for (i, (_, name, text)) in groups.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::push_str(&mut out, name);
        out.extend_from_slice(b":[");
        out.extend_from_slice(text);
        out.push(b']');
    }
    out.extend_from_slice(b"},\"cursor\":");
    json::push_str(&mut out, &cursor::encode(state.epoch, next));
    let _ = write!(out, ",\"hasMore\":{has_more}}}");
    Ok(Page { body: out, records })
}
