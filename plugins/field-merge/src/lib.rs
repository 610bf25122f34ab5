//! `field-merge`: accept when the server's record is still the client's base;
//! otherwise merge per top-level JSON field against the base the client
//! started from, and conflict only when both sides changed the same field
//! differently — or when the base is no longer known and the sides differ.
//!
//! Settings: `ignore` (fields that never conflict; the incoming value wins),
//! `later_wins` + `by` (fields where the side with the greater `by` timestamp wins).

use accord_policy_sdk::{Decision, FieldMerge, MergeInput, object, same_json, settings, three_way, to_text};
use serde::Deserialize;

#[derive(Default, Deserialize)]
#[serde(default)]
struct Settings {
    ignore: Vec<String>,
    later_wins: Vec<String>,
    by: Option<String>,
}

pub fn decide(input: &MergeInput) -> Decision {
    let incoming = &input.incoming;
    // Cheap cases first: no parsing for new records or fast-forward edits.
    let Some(server) = &input.server else { return Decision::Accept };
    if incoming.base_version == server.version {
        return Decision::Accept;
    }
    if server.deleted == incoming.deleted && same_json(&server.data, &incoming.data) {
        return Decision::Accept;
    }
    let Some(base) = &input.base else {
        return Decision::Conflict(format!(
            "the change was based on version {}, which is no longer known, and the records differ",
            incoming.base_version
        ));
    };
    if server.deleted || incoming.deleted {
        return match (server.deleted, incoming.deleted) {
            (true, true) => Decision::Accept,
            (true, false) => Decision::Conflict("the record was deleted on the server and edited here".into()),
            _ if same_json(&server.data, &base.data) => Decision::Accept,
            _ => Decision::Conflict("the record was edited on the server and deleted here".into()),
        };
    }
    let rules: Settings = match settings(input) {
        Ok(s) => s,
        // A configuration mistake must not make the client drop its record: keep it as a conflict.
        Err(e) => return Decision::Conflict(format!("policy failed: {e}")),
    };
    let parsed = (object(&base.data), object(&server.data), object(&incoming.data));
    let (Ok(b), Ok(s), Ok(i)) = parsed else {
        return Decision::Reject("field-merge: a record's data is not a JSON object".into());
    };
    let field_rules = FieldMerge { ignore: &rules.ignore, later_wins: &rules.later_wins, by: rules.by.as_deref() };
    match three_way(&b, &s, &i, &field_rules) {
        Ok(merged) if merged == i => Decision::Accept,
        Ok(merged) => Decision::Merged { deleted: false, data: to_text(&merged) },
        Err(fields) => Decision::Conflict(format!("both sides changed {}", fields.join(", "))),
    }
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
    fn unknown_base_conflicts_only_when_the_sides_differ() {
        let server = Some(stored(5, r#"{"a":1}"#));
        assert!(matches!(decide(&input(server.clone(), None, incoming(2, 1, r#"{"a":2}"#))), Decision::Conflict(_)));
        assert_eq!(decide(&input(server, None, incoming(2, 1, r#"{"a":1}"#))), Decision::Accept);
    }
}
