//! `field-merge`: accept when the server's record is still the client's base;
//! otherwise merge per top-level JSON field against the base the client
//! started from, and conflict only when both sides changed the same field
//! differently — or when the base is no longer known and the sides differ.
//!
//! Settings: `ignore` (fields that never conflict; the incoming value wins),
//! `later_wins` + `by` (fields where the side with the greater `by` timestamp wins).
//!
//! The rule lives in the SDK (`accord_policy_sdk::field_merge`), so policies
//! built on it decide every case it covers exactly as it does.

use accord_policy_sdk::field_merge::{FieldMergeSettings, Step, merge_data, record_step};
use accord_policy_sdk::{Decision, MergeInput, settings};

pub fn decide(input: &MergeInput) -> Decision {
    let (base, server) = match record_step(input) {
        Step::Decided(decision) => return decision,
        Step::MergeData { base, server } => (base, server),
    };
    let rules: FieldMergeSettings = match settings(input) {
        Ok(s) => s,
        // A configuration mistake must not make the client drop its record: keep it as a conflict.
        Err(e) => return Decision::Fail(e),
    };
    merge_data("field-merge", base, server, input.incoming(), &rules.rules())
}

accord_policy_sdk::policy!(decide);

#[cfg(test)]
mod tests {
    use accord_policy_sdk::testing::{incoming, input, stored};

    use super::*;

    #[test]
    fn fast_paths() {
        assert_eq!(decide(&input(None, None, incoming(1, 0, "{}"))), Decision::Accept);
        assert_eq!(decide(&input(Some(stored(2, r#"{"a":1}"#)), None, incoming(3, 2, r#"{"a":2}"#))), Decision::Accept);
    }

    #[test]
    fn the_same_content_spelled_differently_is_accepted() {
        let (base, server) = (Some(stored(1, r#"{"a":0,"b":"x"}"#)), Some(stored(2, r#"{"a":1,"b":"x"}"#)));
        let same = incoming(2, 1, r#"{ "b": "\u0078", "a": 1 }"#);
        assert_eq!(decide(&input(server.clone(), base.clone(), same.clone())), Decision::Accept);
        assert_eq!(decide(&input(server, None, same)), Decision::Accept, "also with the base unknown");
    }

    #[test]
    fn merges_disjoint_fields_and_conflicts_on_the_same_field() {
        let base = Some(stored(1, r#"{"title":"t","body":"b"}"#));
        let server = Some(stored(2, r#"{"title":"T2","body":"b"}"#));
        let merged = decide(&input(server.clone(), base.clone(), incoming(2, 1, r#"{"title":"t","body":"B2"}"#)));
        let Decision::Merged { data, .. } = merged else { panic!("expected merged, got {merged:?}") };
        let v: serde_json::Value = serde_json::from_str(&data).expect("json");
        assert_eq!(v, serde_json::json!({"title": "T2", "body": "B2"}));
        let clash = decide(&input(server, base, incoming(2, 1, r#"{"title":"mine","body":"b"}"#)));
        assert!(matches!(clash, Decision::Conflict(r) if r.contains("title")));
    }

    #[test]
    fn deletes_settings_and_bad_data() {
        use accord_policy_sdk::testing::tombstone;
        let base = Some(stored(1, r#"{"a":1,"t":"x","at":1}"#));
        let mut delete = incoming(2, 1, "{}");
        delete.deleted = true;
        // Deleted on both sides; deleted on the server and edited here; edited there and deleted here.
        assert_eq!(decide(&input(Some(tombstone(2)), base.clone(), delete.clone())), Decision::Accept);
        let edit = incoming(2, 1, r#"{"a":2,"t":"x","at":1}"#);
        assert!(
            matches!(decide(&input(Some(tombstone(2)), base.clone(), edit)), Decision::Conflict(r) if r.contains("deleted on the server"))
        );
        let edited = Some(stored(2, r#"{"a":5,"t":"x","at":1}"#));
        assert!(
            matches!(decide(&input(edited, base.clone(), delete.clone())), Decision::Conflict(r) if r.contains("deleted here"))
        );
        let unchanged = Some(stored(2, r#"{"a":1,"t":"x","at":1}"#));
        assert_eq!(decide(&input(unchanged, base.clone(), delete)), Decision::Accept);
        // later_wins + by, and ignore.
        let server = Some(stored(2, r#"{"a":1,"t":"server","at":5}"#));
        let mut later = input(server.clone(), base.clone(), incoming(2, 1, r#"{"a":1,"t":"mine","at":9}"#));
        later.set_settings(r#"{"later_wins":["t"],"ignore":["at"],"by":"at"}"#);
        assert_eq!(decide(&later), Decision::Accept);
        let mut earlier = input(server.clone(), base.clone(), incoming(2, 1, r#"{"a":2,"t":"mine","at":3}"#));
        earlier.set_settings(r#"{"later_wins":["t"],"ignore":["at"],"by":"at"}"#);
        let Decision::Merged { data, deleted: false } = decide(&earlier) else { panic!("expected merged") };
        let v: serde_json::Value = serde_json::from_str(&data).expect("json");
        assert_eq!(v, serde_json::json!({"a": 2, "t": "server", "at": 3}));
        // Settings that do not parse keep the record as a conflict; data that is no object is rejected.
        let mut bad = input(server.clone(), base.clone(), incoming(2, 1, r#"{"a":3}"#));
        bad.set_settings(r#"{"ignore":"a"}"#);
        assert!(matches!(decide(&bad), Decision::Fail(r) if r.starts_with("invalid policy_settings")));
        assert_eq!(
            decide(&input(server, base, incoming(2, 1, "[1]"))),
            Decision::Reject("field-merge: a record's data is not a JSON object".into())
        );
    }

    #[test]
    fn unknown_base_conflicts_only_when_the_sides_differ() {
        let server = Some(stored(5, r#"{"a":1}"#));
        assert!(matches!(decide(&input(server.clone(), None, incoming(2, 1, r#"{"a":2}"#))), Decision::Conflict(_)));
        assert_eq!(decide(&input(server, None, incoming(2, 1, r#"{"a":1}"#))), Decision::Accept);
    }
}
