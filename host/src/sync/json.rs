//! Small JSON helpers for splicing stored JSON text into responses unparsed.

use crate::model::DecidedBy;
use crate::store::{Change, RecordRow};

/// Calls `f(i, b)` for every byte `b` at `i` of JSON text that is outside
/// string literals (their quotes included in what is skipped). String
/// contents, most of a record's bytes, are jumped over with `memchr`.
fn each_outside_strings(text: &[u8], mut f: impl FnMut(usize, u8)) {
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        if b != b'"' {
            f(i, b);
            i += 1;
            continue;
        }
        // Inside a string: on to its closing quote, stepping over escapes.
        i += 1;
        loop {
            let Some(k) = text.get(i..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) else { return };
            if text[i + k] == b'\\' {
                i += k + 2;
            } else {
                i += k + 1;
                break;
            }
        }
    }
}

/// Deepest nesting of objects and arrays in `text` (a scalar is 0, `{}` is 1).
pub fn depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    each_outside_strings(text.as_bytes(), |_, b| match b {
        b'{' | b'[' => {
            depth += 1;
            max = max.max(depth);
        }
        b'}' | b']' => depth = depth.saturating_sub(1),
        _ => {}
    });
    max
}

/// JSON text without the whitespace between tokens: `text` itself when it has none.
pub fn compact(text: &str) -> std::borrow::Cow<'_, [u8]> {
    let bytes = text.as_bytes();
    let (mut out, mut from): (Option<Vec<u8>>, usize) = (None, 0);
    each_outside_strings(bytes, |i, b| {
        if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
            out.extend_from_slice(&bytes[from..i]);
            from = i + 1;
        }
    });
    match out {
        None => std::borrow::Cow::Borrowed(bytes),
        Some(mut out) => {
            out.extend_from_slice(&bytes[from..]);
            std::borrow::Cow::Owned(out)
        }
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
    push_change(
        out,
        &Change {
            entity: &row.entity,
            id: &row.id,
            version: row.version,
            deleted: row.deleted,
            data: &row.data,
            updated_at: row.updated_at,
            seq: row.seq,
        },
    );
}

/// Appends a record lent by the store in wire form (as [`push_record`]).
pub fn push_change(out: &mut Vec<u8>, c: &Change<'_>) {
    out.extend_from_slice(b"{\"id\":");
    push_str(out, c.id);
    // Integers by itoa: `write!` went through `core::fmt` (~5 % of a pull's CPU).
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(number.format(c.version).as_bytes());
    out.extend_from_slice(if c.deleted { b",\"deleted\":true,\"data\":" } else { b",\"deleted\":false,\"data\":" });
    out.extend_from_slice(c.data.as_bytes());
    out.extend_from_slice(b",\"updatedAt\":");
    out.extend_from_slice(number.format(c.updated_at).as_bytes());
    out.push(b'}');
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
        let out = compact("{ \"a b\" : [1, \"x \\\" y\"] }");
        assert_eq!(&*out, br#"{"a b":[1,"x \" y"]}"#);
        assert!(matches!(compact(r#"{"a":"b c"}"#), std::borrow::Cow::Borrowed(_)));
        assert_eq!(&*compact("{\"a\\\\\": 1}"), br#"{"a\\":1}"#);
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
