//! Field-level three-way merge of JSON objects.

use serde_json::{Map, Value};

/// Settles a field both sides changed differently: given the field's name and
/// its value in base, server and incoming (absent = `None`), returns the value
/// to keep, or `None` to leave the field to the rules below it.
pub type Settle<'a> = &'a dyn Fn(&str, Option<&Value>, Option<&Value>, Option<&Value>) -> Option<Value>;

/// How fields that both sides changed are settled.
#[derive(Clone, Default)]
pub struct FieldMerge<'a> {
    /// Fields that never cause a conflict: when both sides changed them, the incoming value wins.
    pub ignore: &'a [String],
    /// Fields where, when both sides changed them, the side whose `by` field is greater wins.
    pub later_wins: &'a [String],
    /// The timestamp field compared for `later_wins` (numbers or ISO-8601 strings).
    pub by: Option<&'a str>,
    /// Tried first for a field both sides changed differently (e.g. a text
    /// merge); when it returns `None`, `ignore` and `later_wins` apply as usual.
    pub settle: Option<Settle<'a>>,
}

impl std::fmt::Debug for FieldMerge<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldMerge")
            .field("ignore", &self.ignore)
            .field("later_wins", &self.later_wins)
            .field("by", &self.by)
            .field("settle", &self.settle.map(|_| "fn"))
            .finish()
    }
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
        } else if s == b {
            true
        } else if let Some(value) = rules.settle.and_then(|settle| settle(key, b, s, i)) {
            merged.insert(key.clone(), value);
            false
        } else if rules.ignore.iter().any(|f| f == key) {
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
        let rules = FieldMerge { ignore: &ignore, later_wins: &fields, by: Some("at"), settle: None };
        let merged = three_way(&base, &server, &incoming, &rules).expect("ruled");
        assert_eq!(merged["t"], "mine");
    }

    #[test]
    fn settle_is_tried_first_and_falls_back_to_the_rules() {
        let base = obj(json!({"t": "x", "n": 1, "only_server": 1}));
        let server = obj(json!({"t": "server", "n": 2, "only_server": 2}));
        let incoming = obj(json!({"t": "mine", "n": 3, "only_server": 1}));
        // Settles `t` only; is never asked about fields one side alone changed.
        let settle = |key: &str, _: Option<&Value>, s: Option<&Value>, i: Option<&Value>| {
            assert_ne!(key, "only_server");
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
            (key == "t").then(|| json!(format!("{}+{}", text(s), text(i))))
        };
        let ignore = ["t".to_string()];
        let rules = FieldMerge { ignore: &ignore, settle: Some(&settle), ..FieldMerge::default() };
        assert_eq!(three_way(&base, &server, &incoming, &rules), Err(vec!["n".to_string()]));
        let ignore = ["t".to_string(), "n".to_string()];
        let rules = FieldMerge { ignore: &ignore, settle: Some(&settle), ..FieldMerge::default() };
        let merged = three_way(&base, &server, &incoming, &rules).expect("settled");
        assert_eq!(Value::Object(merged), json!({"t": "server+mine", "n": 3, "only_server": 2}));
    }
}
