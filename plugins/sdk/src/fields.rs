//! A JSON object's top-level fields, read lazily: each value is kept as the
//! raw text it was sent as (or a borrowed parsed value) and is parsed only
//! when a rule must look inside it. Most fields of a merged record are equal
//! on every side and are compared and copied as text.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::text::{contains_byte, same_text};

/// One field's value: raw JSON text from a record, or an already parsed value.
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    Raw(&'a RawValue),
    Parsed(&'a Value),
}

impl Field<'_> {
    /// The value, parsed (or cloned).
    pub fn value(self) -> Value {
        match self {
            // Raw text was checked JSON when it was read: parsing it again cannot fail.
            Field::Raw(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            Field::Parsed(v) => v.clone(),
        }
    }

    /// True when both denote the same JSON value (`serde_json::Value` equality),
    /// parsing only when the texts differ and could still mean the same.
    pub fn same(self, other: Field<'_>) -> bool {
        match (self, other) {
            (Field::Parsed(a), Field::Parsed(b)) => a == b,
            (Field::Raw(a), Field::Raw(b)) if same_text(a.get(), b.get()) => true,
            (Field::Raw(a), Field::Raw(b)) if canonical(a.get()) && canonical(b.get()) => false,
            _ => self.value() == other.value(),
        }
    }

    /// Appends the value as JSON text.
    fn write(self, out: &mut String) {
        match self {
            Field::Raw(raw) => out.push_str(raw.get()),
            Field::Parsed(v) => out.push_str(&v.to_string()),
        }
    }
}

/// True for JSON text that has one spelling per value, so two different texts
/// are two different values: a string without escapes, an integer, a literal.
fn canonical(text: &str) -> bool {
    let b = text.as_bytes();
    match b.first() {
        Some(b'"') => !contains_byte(text, b'\\'),
        Some(b't' | b'f' | b'n') => true,
        // Integers up to 18 digits are exact in `Value`; longer ones become floats.
        Some(b'1'..=b'9') => b.len() <= 18 && b.iter().all(u8::is_ascii_digit),
        Some(b'-') => (2..=19).contains(&b.len()) && b[1] != b'0' && b[1..].iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// A JSON object's fields by name (a repeated name keeps its last value, as
/// `serde_json` does).
#[derive(Clone, Debug, Default)]
pub struct Fields<'a>(pub BTreeMap<Cow<'a, str>, Field<'a>>);

impl<'a> Fields<'a> {
    /// Reads a JSON object's fields without parsing their values.
    pub fn parse(text: &'a str) -> Result<Fields<'a>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = de.deserialize_map(ObjectVisitor)?;
        de.end()?;
        Ok(fields)
    }

    /// The fields of an already parsed object.
    pub fn of(map: &'a serde_json::Map<String, Value>) -> Fields<'a> {
        Fields(map.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), Field::Parsed(v))).collect())
    }

    pub fn get(&self, name: &str) -> Option<Field<'a>> {
        self.0.get(name).copied()
    }

    /// True when both objects have the same names with the same values.
    pub fn same(&self, other: &Fields<'_>) -> bool {
        self.0.len() == other.0.len() && self.0.iter().all(|(k, v)| other.0.get(k.as_ref()).is_some_and(|w| v.same(*w)))
    }
}

/// A field in a merge result: from one of the sides, or made by a rule.
#[derive(Clone, Debug)]
pub enum Merged<'a> {
    Kept(Field<'a>),
    Made(Value),
}

impl Merged<'_> {
    pub fn value(&self) -> Value {
        match self {
            Merged::Kept(f) => f.value(),
            Merged::Made(v) => v.clone(),
        }
    }

    fn same(&self, other: Field<'_>) -> bool {
        match self {
            Merged::Kept(f) => f.same(other),
            Merged::Made(v) => Field::Parsed(v).same(other),
        }
    }
}

/// True when a merge result has exactly `fields`' names and values.
pub fn same_as(merged: &BTreeMap<Cow<'_, str>, Merged<'_>>, fields: &Fields<'_>) -> bool {
    merged.len() == fields.0.len() && merged.iter().all(|(k, v)| fields.0.get(k.as_ref()).is_some_and(|f| v.same(*f)))
}

/// A merge result as compact JSON object text (names in sorted order).
pub fn to_text(merged: &BTreeMap<Cow<'_, str>, Merged<'_>>) -> String {
    let mut out = String::with_capacity(64 * merged.len());
    out.push('{');
    for (n, (k, v)) in merged.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(k.as_ref()).to_string());
        out.push(':');
        match v {
            Merged::Kept(f) => f.write(&mut out),
            Merged::Made(v) => out.push_str(&v.to_string()),
        }
    }
    out.push('}');
    out
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = BTreeMap::new();
        while let Some(key) = map.next_key_seed(Name)? {
            let value: &'de RawValue = map.next_value()?;
            fields.insert(key, Field::Raw(value));
        }
        Ok(Fields(fields))
    }
}

/// A field name, borrowed from the text unless it had escapes.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_as_text_and_compares_as_json() {
        let a =
            Fields::parse(r#" {"t": "x", "n": 1.0, "o": {"k": [1, 2]}, "e": "\u00e9", "t": "last"} "#).expect("object");
        let b = Fields::parse(r#"{"e":"é","o":{"k":[1,2]},"n":1.0,"t":"last"}"#).expect("object");
        assert_eq!(a.0.len(), 4, "a repeated name keeps one entry");
        assert!(a.same(&b));
        assert!(!a.get("n").expect("n").same(Field::Raw(&RawValue::from_string("1".into()).expect("raw"))));
        let c = Fields::parse(r#"{"e":"é","o":{"k":[1,3]},"n":1.0,"t":"last"}"#).expect("object");
        assert!(!a.same(&c));
        let escaped_key = Fields::parse(r#"{"a\"b": 1}"#).expect("object");
        assert!(escaped_key.get("a\"b").is_some());
        for bad in ["[1]", "1", "{\"a\":}", "{} {}", ""] {
            assert!(Fields::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_texts_are_unequal_without_parsing() {
        for (a, b, same) in [("\"a\"", "\"b\"", false), ("1", "2", false), ("-1", "1", false), ("true", "false", false)]
        {
            let (ra, rb) =
                (RawValue::from_string(a.into()).expect("raw"), RawValue::from_string(b.into()).expect("raw"));
            assert_eq!(Field::Raw(&ra).same(Field::Raw(&rb)), same);
        }
        for text in ["\"a\\n\"", "1.0", "1e3", "-0", "0", "[1]", "{}", "1000000000000000000000"] {
            assert!(!canonical(text), "{text}");
        }
        // Different texts, same value: decided by parsing.
        let (a, b) = (
            RawValue::from_string("\"\\u0041\"".into()).expect("raw"),
            RawValue::from_string("\"A\"".into()).expect("raw"),
        );
        assert!(Field::Raw(&a).same(Field::Raw(&b)));
    }

    #[test]
    fn writes_compact_sorted_json() {
        let s = Fields::parse(r#"{"b": [1, 2], "a\"x": "é"}"#).expect("object");
        let merged: BTreeMap<_, _> = s.0.iter().map(|(k, v)| (k.clone(), Merged::Kept(*v))).collect();
        let text = to_text(&merged);
        let back: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(back, serde_json::json!({"a\"x": "é", "b": [1, 2]}));
        assert!(same_as(&merged, &s));
    }
}
