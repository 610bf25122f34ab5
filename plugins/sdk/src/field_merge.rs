//! `field-merge`'s whole rule as a library, so that policies built on it
//! (`text-merge`) decide every case it covers exactly as it does.
//!
//! A rule runs in two steps: [`record_step`] settles what needs no look inside
//! `data` (new records, fast-forward edits, identical content, an unknown
//! base, deletes); when both sides edited a live record since a known base,
//! [`merge_data`] merges `data` per field with [`FieldMerge`] rules.

use serde::Deserialize;

use crate::fields::{Fields, same_as, to_text};
use crate::merge::{FieldMerge, merge_fields};
use crate::text::same_text;
use crate::{Decision, IncomingRecord, MergeInput, StoredRecord, same_json};

/// `field-merge`'s `policy_settings`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct FieldMergeSettings {
    /// Fields that never conflict; when both sides changed one, the incoming value wins.
    pub ignore: Vec<String>,
    /// Fields where, when both sides changed one, the side whose `by` field is greater wins.
    pub later_wins: Vec<String>,
    /// The timestamp field compared for `later_wins`.
    pub by: Option<String>,
}

impl FieldMergeSettings {
    /// These settings as rules for [`merge_fields`] (no `settle`).
    pub fn rules(&self) -> FieldMerge<'_> {
        FieldMerge { ignore: &self.ignore, later_wins: &self.later_wins, by: self.by.as_deref(), settle: None }
    }
}

/// What [`record_step`] found.
#[derive(Debug)]
pub enum Step<'a> {
    /// Decided without parsing `data`.
    Decided(Decision),
    /// Both sides edited a live record since `base`: merge `data` per field.
    MergeData { base: &'a StoredRecord, server: &'a StoredRecord },
}

/// The cases `field-merge` decides before looking inside `data`:
/// - new record, or a change made on the server's current version: accept;
/// - same content as the server's: accept (when the base is known and the
///   texts differ, `merge_data` finds the sameness and accepts);
/// - base unknown (`baseVersion` 0 or out of history) and the sides differ: conflict;
/// - deletes: both deleted → accept; deleted on the server and edited here →
///   conflict; deleted here with no server edit since the base → accept, else conflict.
pub fn record_step(input: &MergeInput) -> Step<'_> {
    // Cheap cases first: no parsing for new records or fast-forward edits
    // (and for a new record nothing but "no server record" is read).
    let Some(server) = input.server() else { return Step::Decided(Decision::Accept) };
    let incoming = input.incoming();
    if incoming.base_version == server.version {
        return Step::Decided(Decision::Accept);
    }
    let Some(base) = input.base() else {
        if server.deleted == incoming.deleted && same_json(&server.data, &incoming.data) {
            return Step::Decided(Decision::Accept);
        }
        return Step::Decided(Decision::Conflict(format!(
            "the change was based on version {}, which is no longer known, and the records differ",
            incoming.base_version
        )));
    };
    // With a base, content equal in value but not in text needs no check of
    // its own: merging it per field gives the incoming record, which
    // `merge_data` accepts (so the records are read once, not twice).
    if server.deleted == incoming.deleted && same_text(&server.data, &incoming.data) {
        return Step::Decided(Decision::Accept);
    }
    if server.deleted || incoming.deleted {
        return Step::Decided(match (server.deleted, incoming.deleted) {
            (true, true) => Decision::Accept,
            (true, false) => Decision::Conflict("the record was deleted on the server and edited here".into()),
            _ if same_json(&server.data, &base.data) => Decision::Accept,
            _ => Decision::Conflict("the record was edited on the server and deleted here".into()),
        });
    }
    Step::MergeData { base, server }
}

/// Merges `data` per top-level field with `rules` (see [`merge_fields`]):
/// merged, or accept when the result is the incoming record, or a conflict
/// naming the fields both sides changed; data that is not a JSON object is
/// rejected with a reason that starts with `policy`'s name.
pub fn merge_data(
    policy: &str,
    base: &StoredRecord,
    server: &StoredRecord,
    incoming: &IncomingRecord,
    rules: &FieldMerge<'_>,
) -> Decision {
    let parsed = (Fields::parse(&base.data), Fields::parse(&server.data), Fields::parse(&incoming.data));
    let (Ok(b), Ok(s), Ok(i)) = parsed else {
        return Decision::Reject(format!("{policy}: a record's data is not a JSON object"));
    };
    match merge_fields(&b, &s, &i, rules) {
        Ok(merged) if same_as(&merged, &i) => Decision::Accept,
        Ok(merged) => Decision::Merged { deleted: false, data: to_text(&merged) },
        Err(fields) => Decision::Conflict(format!("both sides changed {}", fields.join(", "))),
    }
}
