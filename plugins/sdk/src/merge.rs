//! Field-level three-way merge of JSON objects.

use serde_json::{Map, Value};

/// How fields that both sides changed are settled.
#[derive(Clone, Debug, Default)]
pub struct FieldMerge<'a> {
    /// Fields that never cause a conflict: when both sides changed them, the incoming value wins.
    pub ignore: &'a [String],
    /// Fields where, when both sides changed them, the side whose `by` field is greater wins.
    pub later_wins: &'a [String],
    /// The timestamp field compared for `later_wins` (numbers or ISO-8601 strings).
    pub by: Option<&'a str>,
}

/// Merges `incoming` into `server` against their common `base`, per top-level
/// field. Returns the merged object, or the fields both sides changed differently.
pub fn three_way(
    base: &Map<String, Value>,
    server: &Map<String, Value>,
    incoming: &Map<String, Value>,
    rules: &FieldMerge<'_>,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut merged = server.clone();
    let mut conflicts = Vec::new();
    let keys = base.keys().chain(server.keys()).chain(incoming.keys());
    let mut seen = std::collections::BTreeSet::new();
    for key in keys {
        if !seen.insert(key) {
            continue;
        }
        let (b, s, i) = (base.get(key), server.get(key), incoming.get(key));
        let take_incoming = if s == i || i == b {
            false
        } else if s == b || rules.ignore.iter().any(|f| f == key) {
            true
        } else if rules.later_wins.iter().any(|f| f == key) {
            let stamp = |m: &Map<String, Value>| rules.by.and_then(|by| m.get(by)).cloned();
            later(stamp(incoming).as_ref(), stamp(server).as_ref())
        } else {
            conflicts.push(key.clone());
            false
        };
        if take_incoming {
            match i {
                Some(v) => merged.insert(key.clone(), v.clone()),
                None => merged.remove(key),
            };
        }
    }
    if conflicts.is_empty() { Ok(merged) } else { Err(conflicts) }
}

/// True when timestamp `a` is later than `b` (absent is earliest).
fn later(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64().unwrap_or(0.0) > y.as_f64().unwrap_or(0.0),
        (Some(Value::String(x)), Some(Value::String(y))) => x > y,
        (Some(_), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn disjoint_changes_merge() {
        let base = obj(json!({"a": 1, "b": 1, "c": 1}));
        let server = obj(json!({"a": 2, "b": 1, "c": 1}));
        let incoming = obj(json!({"a": 1, "b": 3}));
        let merged = three_way(&base, &server, &incoming, &FieldMerge::default()).expect("no conflict");
        assert_eq!(Value::Object(merged), json!({"a": 2, "b": 3}));
    }

    #[test]
    fn same_field_changed_differently_conflicts_unless_ruled() {
        let base = obj(json!({"t": "x", "at": 1}));
        let server = obj(json!({"t": "server", "at": 5}));
        let incoming = obj(json!({"t": "mine", "at": 9}));
        assert_eq!(three_way(&base, &server, &incoming, &FieldMerge::default()), Err(vec!["at".into(), "t".into()]));
        let fields = ["t".to_string()];
        let ignore = ["at".to_string()];
        let rules = FieldMerge { ignore: &ignore, later_wins: &fields, by: Some("at") };
        let merged = three_way(&base, &server, &incoming, &rules).expect("ruled");
        assert_eq!(merged["t"], "mine");
    }
}
