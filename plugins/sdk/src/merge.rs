//! Field-level three-way merge of JSON objects.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::fields::{Field, Fields, Merged};

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
    let merged = merge_fields(&Fields::of(base), &Fields::of(server), &Fields::of(incoming), rules)?;
    Ok(merged.into_iter().map(|(k, v)| (k.into_owned(), v.value())).collect())
}

/// [`three_way`] on lazily read fields: only the fields that differ between
/// the sides are ever parsed.
pub fn merge_fields<'a>(
    base: &Fields<'a>,
    server: &Fields<'a>,
    incoming: &Fields<'a>,
    rules: &FieldMerge<'_>,
) -> Result<BTreeMap<Cow<'a, str>, Merged<'a>>, Vec<String>> {
    let mut merged: BTreeMap<Cow<'a, str>, Merged<'a>> =
        server.0.iter().map(|(k, v)| (k.clone(), Merged::Kept(*v))).collect();
    let mut conflicts = Vec::new();
    let keys = base.0.keys().chain(server.0.keys()).chain(incoming.0.keys());
    let mut seen = std::collections::BTreeSet::new();
    let same = |a: Option<Field>, b: Option<Field>| match (a, b) {
        (Some(a), Some(b)) => a.same(b),
        (a, b) => a.is_none() && b.is_none(),
    };
    for key in keys {
        if !seen.insert(key) {
            continue;
        }
        let (b, s, i) = (base.get(key), server.get(key), incoming.get(key));
        let take_incoming = if same(s, i) || same(i, b) {
            false
        } else if same(s, b) {
            true
        } else if let Some(value) = rules.settle.and_then(|settle| {
            let (b, s, i) = (b.map(Field::value), s.map(Field::value), i.map(Field::value));
            settle(key, b.as_ref(), s.as_ref(), i.as_ref())
        }) {
            merged.insert(key.clone(), Merged::Made(value));
            false
        } else if rules.ignore.iter().any(|f| f == key) {
            true
        } else if rules.later_wins.iter().any(|f| f == key) {
            let stamp = |side: &Fields| rules.by.and_then(|by| side.get(by)).map(Field::value);
            later(stamp(incoming).as_ref(), stamp(server).as_ref())
        } else {
            conflicts.push(key.to_string());
            false
        };
        if take_incoming {
            match i {
                Some(v) => merged.insert(key.clone(), Merged::Kept(v)),
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

    /// The rule as it was written on parsed values, before fields were read lazily.
    fn reference(
        base: &Map<String, Value>,
        server: &Map<String, Value>,
        incoming: &Map<String, Value>,
        rules: &FieldMerge<'_>,
    ) -> Result<Map<String, Value>, Vec<String>> {
        let mut merged = server.clone();
        let mut conflicts = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for key in base.keys().chain(server.keys()).chain(incoming.keys()) {
            if !seen.insert(key) {
                continue;
            }
            let (b, s, i) = (base.get(key), server.get(key), incoming.get(key));
            let take = if s == i || i == b {
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
            if take {
                match i {
                    Some(v) => merged.insert(key.clone(), v.clone()),
                    None => merged.remove(key),
                };
            }
        }
        if conflicts.is_empty() { Ok(merged) } else { Err(conflicts) }
    }

    #[test]
    fn lazy_fields_merge_exactly_as_parsed_values() {
        // Texts with several spellings of one value, so "different text, same value" is common.
        let pool = [
            "1",
            "1.0",
            "2",
            "-3",
            "1e0",
            "\"x\"",
            "\"\\u0078\"",
            "\"y\"",
            "{\"k\":1}",
            "{ \"k\" : 1 }",
            "[1,2]",
            "[1, 2]",
            "null",
            "true",
            "false",
            "\"2026-01-02\"",
            "\"2026-01-03\"",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (names, ignore, later_wins) = (["a", "b", "c", "at"], ["b".to_string()], ["c".to_string()]);
        for round in 0..3000 {
            let mut side = || {
                let mut fields = Vec::new();
                for name in names {
                    if next(4) != 0 {
                        fields.push(format!("\"{name}\": {}", pool[next(pool.len())]));
                    }
                }
                format!("{{{}}}", fields.join(", "))
            };
            let (b, s, i) = (side(), side(), side());
            let rules = match round % 3 {
                0 => FieldMerge::default(),
                1 => FieldMerge { ignore: &ignore, ..FieldMerge::default() },
                _ => FieldMerge { later_wins: &later_wins, by: Some("at"), ..FieldMerge::default() },
            };
            let parse = |t: &str| obj(serde_json::from_str(t).expect("json"));
            let expected = reference(&parse(&b), &parse(&s), &parse(&i), &rules);
            let (fb, fs, fi) =
                (Fields::parse(&b).expect("b"), Fields::parse(&s).expect("s"), Fields::parse(&i).expect("i"));
            let lazy = merge_fields(&fb, &fs, &fi, &rules).map(|m| {
                let text = crate::fields::to_text(&m);
                assert_eq!(crate::fields::same_as(&m, &fi), Ok(&parse(&i)) == expected.as_ref(), "{b} {s} {i}");
                obj(serde_json::from_str(&text).expect("merged text is JSON"))
            });
            assert_eq!(lazy, expected, "base {b}, server {s}, incoming {i}");
            assert_eq!(three_way(&parse(&b), &parse(&s), &parse(&i), &rules), expected);
        }
    }
}
