//! Small JSON helpers for splicing stored JSON text into responses unparsed.

use std::io::Write as _;

use crate::model::DecidedBy;
use crate::store::RecordRow;

/// Tracks whether a byte of JSON text is inside a string literal.
#[derive(Default)]
struct Strings {
    inside: bool,
    escaped: bool,
}

impl Strings {
    /// Feeds one byte; true when it is structural (outside any string, not a quote).
    fn structural(&mut self, b: u8) -> bool {
        if self.inside {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.inside = false;
            }
            false
        } else if b == b'"' {
            self.inside = true;
            false
        } else {
            true
        }
    }
}

/// Deepest nesting of objects and arrays in `text` (a scalar is 0, `{}` is 1).
pub fn depth(text: &str) -> usize {
    let (mut strings, mut depth, mut max) = (Strings::default(), 0usize, 0usize);
    for &b in text.as_bytes() {
        if !strings.structural(b) {
            continue;
        }
        match b {
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Copies JSON text into `out` without the whitespace between tokens.
pub fn compact_into(text: &str, out: &mut Vec<u8>) {
    out.clear();
    let mut strings = Strings::default();
    for &b in text.as_bytes() {
        if strings.structural(b) && matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            continue;
        }
        out.push(b);
    }
}

/// True when two JSON texts denote the same value (fast path: same bytes).
pub fn same_value(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (serde_json::from_str::<serde_json::Value>(a), serde_json::from_str::<serde_json::Value>(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends a record in wire form; `data` is spliced in as stored.
pub fn push_record(out: &mut Vec<u8>, row: &RecordRow) {
    out.extend_from_slice(b"{\"id\":");
    push_str(out, &row.id);
    let _ = write!(out, ",\"version\":{},\"deleted\":{},\"data\":", row.version, row.deleted);
    out.extend_from_slice(row.data.as_bytes());
    let _ = write!(out, ",\"updatedAt\":{}}}", row.updated_at);
}

/// `{"policy": …, "sha256": …}`, or `null`.
pub fn push_decided_by(out: &mut Vec<u8>, by: Option<&DecidedBy>) {
    let Some(by) = by else { return out.extend_from_slice(b"null") };
    out.extend_from_slice(b"{\"policy\":");
    push_str(out, &by.policy);
    out.extend_from_slice(b",\"sha256\":");
    push_str(out, &by.sha256);
    out.push(b'}');
}

/// A version in a record's history: the record and `decidedBy`.
pub fn push_version(out: &mut Vec<u8>, row: &RecordRow) {
    push_record(out, row);
    out.pop();
    out.extend_from_slice(b",\"decidedBy\":");
    push_decided_by(out, row.decided_by.as_ref());
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(depth("{}"), 1);
        assert_eq!(depth(r#"{"a":[{"b":"]]}}{{\"["}]}"#), 3);
        assert_eq!(depth("3"), 0);
    }

    #[test]
    fn compaction_keeps_strings() {
        let mut out = Vec::new();
        compact_into("{ \"a b\" : [1, \"x \\\" y\"] }", &mut out);
        assert_eq!(String::from_utf8(out).expect("utf-8"), r#"{"a b":[1,"x \" y"]}"#);
    }

    #[test]
    fn same_value_ignores_layout_and_key_order() {
        assert!(same_value(r#"{"a":1,"b":[1,2]}"#, r#"{ "b": [1, 2], "a": 1 }"#));
        assert!(!same_value(r#"{"a":1}"#, r#"{"a":2}"#));
    }

    #[test]
    fn records_are_spliced_verbatim() {
        let row = RecordRow {
            entity: "t".into(),
            id: "a\"b".into(),
            version: 3,
            deleted: false,
            data: r#"{"x": 1}"#.into(),
            updated_at: 7,
            seq: 1,
            decided_by: None,
        };
        let mut out = Vec::new();
        push_record(&mut out, &row);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text, r#"{"id":"a\"b","version":3,"deleted":false,"data":{"x": 1},"updatedAt":7}"#);
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed["data"]["x"], 1);
    }
}
