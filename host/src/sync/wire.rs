//! Parsing and validating a push body. Every problem names the record and field;
//! a body that fails here writes nothing.

use std::collections::HashSet;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3Default;

use super::{Entities, SyncError, json};
use crate::config::SyncConfig;
use crate::model::Incoming;

/// Longest record id, `pushId` or `clientId`, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Largest accepted `version`/`baseVersion`: the largest integer every JSON
/// client (JavaScript included) represents exactly.
pub const MAX_VERSION: i64 = (1 << 53) - 1;

/// A validated push: records grouped by entity type, in dependency order.
pub struct PushRequest {
    pub push_id: Option<String>,
    /// The pushing client's `clientId`, if it sent one.
    pub client_id: Option<String>,
    /// [`PushRequest::fingerprint`]'s 128-bit XXH3 form, logged with the response.
    pub body_hash: [u8; 16],
    /// (index into `Entities::types`, records in body order)
    pub groups: Vec<(usize, Vec<Incoming>)>,
    pub record_count: usize,
}

/// The top level of a push body. Every field is borrowed raw text, read
/// into a typed value only once its shape is known: a body never becomes a
/// tree of generic JSON values, whatever it holds (a 30 KiB gzip body can
/// inflate to 32 MiB of `[0,0,0,…]`). Records are read in the same pass,
/// each field kept as raw text.
struct PushBody<'a> {
    client_id: Option<&'a RawValue>,
    push_id: Option<&'a RawValue>,
    /// `changes` in body order.
    changes: Vec<(String, Vec<RecordBody<'a>>)>,
}

/// Where the reader is in a body, so that an error can name the record.
#[derive(Default)]
struct Reading {
    /// Past `max_records`, reading stopped.
    too_many: std::cell::Cell<bool>,
    /// The entity type whose records are being read.
    entity: std::cell::RefCell<String>,
    /// The index of the record being read in that type's list.
    record: std::cell::Cell<Option<usize>>,
}

/// Reads a push body, counting records as it goes: past `max_records` it
/// stops (`too_many` set) instead of collecting an unbounded list.
struct BodySeed<'c> {
    max_records: usize,
    at: &'c Reading,
}

impl<'de, 'c> DeserializeSeed<'de> for BodySeed<'c> {
    type Value = PushBody<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<PushBody<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, 'c> Visitor<'de> for BodySeed<'c> {
    type Value = PushBody<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a push object with `changes`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PushBody<'de>, A::Error> {
        let (mut client_id, mut push_id, mut changes) = (None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "clientId" => client_id = Some(map.next_value::<&'de RawValue>()?),
                "pushId" => push_id = Some(map.next_value::<&'de RawValue>()?),
                "changes" if changes.is_some() => return Err(de::Error::duplicate_field("changes")),
                "changes" => {
                    let mut left = self.max_records;
                    changes = Some(map.next_value_seed(ChangesSeed { left: &mut left, at: self.at })?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let changes = changes.ok_or_else(|| de::Error::missing_field("changes"))?;
        Ok(PushBody { client_id, push_id, changes })
    }
}

/// `changes`: entity type → records, in body order; an entity type named
/// twice is an error rather than silently keeping only the last list.
struct ChangesSeed<'l, 'c> {
    left: &'l mut usize,
    at: &'c Reading,
}

impl<'de> DeserializeSeed<'de> for ChangesSeed<'_, '_> {
    type Value = Vec<(String, Vec<RecordBody<'de>>)>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChangesSeed<'_, '_> {
    type Value = Vec<(String, Vec<RecordBody<'de>>)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object mapping entity types to arrays of records")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Self::Value = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("entity type `{key}` appears twice in `changes`")));
            }
            self.at.entity.replace(key.clone());
            let records = map.next_value_seed(RecordsSeed { left: &mut *self.left, at: self.at })?;
            out.push((key, records));
        }
        Ok(out)
    }
}

/// One type's array of records, each field kept as raw text.
struct RecordsSeed<'l, 'c> {
    left: &'l mut usize,
    at: &'c Reading,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_, '_> {
    type Value = Vec<RecordBody<'de>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_, '_> {
    type Value = Vec<RecordBody<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        loop {
            self.at.record.set(Some(out.len()));
            let Some(record) = seq.next_element::<RecordBody<'de>>()? else { break };
            if *self.left == 0 {
                self.at.too_many.set(true);
                return Err(de::Error::custom("too many records"));
            }
            *self.left -= 1;
            out.push(record);
        }
        self.at.record.set(None);
        Ok(out)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", expecting = "a record (a JSON object)")]
struct RecordBody<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    version: Option<&'a RawValue>,
    #[serde(default, borrow)]
    base_version: Option<&'a RawValue>,
    #[serde(default, borrow)]
    deleted: Option<&'a RawValue>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Reads raw JSON text as a `T`, `null` and absence as `None`; `Err` when it is something else.
fn typed<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Result<Option<T>, ()> {
    match raw {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<Option<T>>(raw.get()).map_err(|_| ()),
    }
}

pub fn parse_push(body: &[u8], entities: &Entities, limits: &SyncConfig) -> Result<PushRequest, SyncError> {
    let at = Reading::default();
    let seed = BodySeed { max_records: limits.max_records_per_push, at: &at };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = seed.deserialize(&mut deserializer).and_then(|b| deserializer.end().map(|()| b)).map_err(|e| {
        if at.too_many.get() {
            SyncError::TooLarge(format!(
                "the push holds more than {} records (sync.max_records_per_push) — split it",
                limits.max_records_per_push
            ))
        } else if let Some(i) = at.record.get().filter(|_| e.is_data()) {
            SyncError::Invalid(format!("changes.{}[{i}]: a record must be a JSON object: {e}", at.entity.borrow()))
        } else {
            body_error(&e)
        }
    })?;
    let push_id = optional_id(parsed.push_id, "pushId")?;
    let client_id = optional_id(parsed.client_id, "clientId")?;

    let record_count: usize = parsed.changes.iter().map(|(_, r)| r.len()).sum();
    let mut groups = Vec::with_capacity(parsed.changes.len());
    for (name, records) in &parsed.changes {
        let index = entities
            .index_of(name)
            .ok_or_else(|| SyncError::Invalid(format!("changes.{name}: unknown entity type `{name}`")))?;
        let ty = &entities.types[index];
        let mut seen = HashSet::with_capacity(records.len());
        let mut out = Vec::with_capacity(records.len());
        for (i, body) in records.iter().enumerate() {
            let at = format!("changes.{name}[{i}]");
            let record = parse_record(body, &at, ty, limits)?;
            if !seen.insert(record.id.clone()) {
                return Err(SyncError::Invalid(format!("{at}: id {:?} appears twice in this push", record.id)));
            }
            out.push(record);
        }
        groups.push((index, out));
    }
    groups.sort_by_key(|(index, _)| *index);
    let body_hash = request_hash(push_id.as_deref(), &groups, entities);
    Ok(PushRequest { push_id, client_id, body_hash, groups, record_count })
}

impl PushRequest {
    /// True when `logged` (the fingerprint a push with this `pushId` was
    /// logged with) is this request's: its XXH3 form, or the SHA-256 form
    /// earlier releases logged (such entries stay within retention for a
    /// while after an upgrade, and a client may retry across it).
    pub fn same_request_as(&self, logged: &[u8], entities: &Entities) -> bool {
        if logged.len() == 32 {
            let mut sha = Sha256::new();
            fingerprint(self.push_id.as_deref(), &self.groups, entities, |b| sha.update(b));
            return logged == sha.finalize().as_slice();
        }
        logged == self.body_hash
    }
}

/// Feeds a push's fingerprint to `update`: the records and their fields, with
/// JSON whitespace ignored, so a retry that re-encodes the same body
/// differently still matches (key order inside `data` does count).
///
/// It guards a user's own `pushId`s against accidental reuse, never one user
/// from another, so a fast non-cryptographic hash is enough: SHA-256 was 7 %
/// of a 500-record push's time, XXH3 is a tenth of that.
fn fingerprint(
    push_id: Option<&str>,
    groups: &[(usize, Vec<Incoming>)],
    entities: &Entities,
    mut update: impl FnMut(&[u8]),
) {
    let mut field = |bytes: &[u8]| {
        update(&(bytes.len() as u64).to_le_bytes());
        update(bytes);
    };
    field(push_id.unwrap_or("").as_bytes());
    for (index, records) in groups {
        field(entities.types[*index].name.as_bytes());
        for r in records {
            field(r.id.as_bytes());
            field(&r.version.to_le_bytes());
            field(&r.base_version.to_le_bytes());
            field(&[u8::from(r.deleted)]);
            field(&json::compact(&r.data));
        }
    }
}

fn request_hash(push_id: Option<&str>, groups: &[(usize, Vec<Incoming>)], entities: &Entities) -> [u8; 16] {
    let mut hasher = Xxh3Default::new();
    fingerprint(push_id, groups, entities, |b| hasher.update(b));
    hasher.digest128().to_le_bytes()
}

fn body_error(e: &serde_json::Error) -> SyncError {
    let message = e.to_string();
    if message.contains("recursion limit") {
        SyncError::Invalid(format!("the body is nested too deeply: {message}"))
    } else if e.is_data() {
        SyncError::Invalid(format!("the push body does not have the expected shape: {message}"))
    } else {
        SyncError::BadRequest(format!("the body is not valid JSON: {message}"))
    }
}

fn optional_id(value: Option<&RawValue>, field: &str) -> Result<Option<String>, SyncError> {
    match typed::<String>(value) {
        Ok(None) => Ok(None),
        Ok(Some(s)) if !s.is_empty() && s.chars().count() <= MAX_ID_CHARS => Ok(Some(s)),
        _ => Err(SyncError::Invalid(format!("`{field}` must be a string of 1 to {MAX_ID_CHARS} characters"))),
    }
}

fn parse_record(
    body: &RecordBody<'_>,
    at: &str,
    ty: &super::EntityType,
    limits: &SyncConfig,
) -> Result<Incoming, SyncError> {
    let invalid = |what: String| SyncError::Invalid(format!("{at}: {what}"));
    let id = match typed::<String>(body.id) {
        Ok(Some(s)) if !s.is_empty() && s.chars().count() <= MAX_ID_CHARS => s,
        Ok(Some(s)) if s.is_empty() => return Err(invalid("field `id` must not be empty".into())),
        Ok(Some(_)) => return Err(invalid(format!("field `id` is longer than {MAX_ID_CHARS} characters"))),
        Ok(None) => return Err(invalid("field `id` is missing".into())),
        Err(()) => return Err(invalid("field `id` must be a string".into())),
    };
    let at_id = |what: &str| SyncError::Invalid(format!("{at} (id {id:?}): {what}"));
    let version = match typed::<i64>(body.version) {
        Ok(Some(v)) if v > 0 && v <= MAX_VERSION => v,
        _ => return Err(at_id("field `version` must be an integer from 1 to 2^53-1")),
    };
    let base_version = match typed::<i64>(body.base_version) {
        Ok(None) => 0,
        Ok(Some(b)) if (0..=MAX_VERSION).contains(&b) => b,
        _ => return Err(at_id("field `baseVersion` must be an integer from 0 to 2^53-1")),
    };
    let deleted = match typed::<bool>(body.deleted) {
        Ok(b) => b.unwrap_or(false),
        Err(()) => return Err(at_id("field `deleted` must be true or false")),
    };
    let data = match body.data {
        None if deleted => "{}".to_string(),
        None => return Err(at_id("field `data` is missing (only a tombstone may omit it)")),
        Some(raw) => raw.get().to_string(),
    };
    let Named { refs, blobs } = check_data(&data, ty, limits).map_err(|e| at_id(&e))?;
    Ok(Incoming { id, version, base_version, deleted, data, refs, blobs })
}

/// The values of a record's reference and blob fields (see [`Incoming::refs`]).
#[derive(Debug, Default)]
pub(crate) struct Named {
    pub refs: Vec<Option<String>>,
    pub blobs: Vec<Option<String>>,
}

/// Checks a record's `data` text against the limits and the type's
/// reference and blob fields; returns their values.
pub(crate) fn check_data(data: &str, ty: &super::EntityType, limits: &SyncConfig) -> Result<Named, String> {
    if !data.starts_with('{') {
        return Err("field `data` must be a JSON object".into());
    }
    if data.len() > limits.max_record_bytes {
        return Err(format!(
            "field `data` is {} bytes; the limit is {} (sync.max_record_bytes)",
            data.len(),
            limits.max_record_bytes
        ));
    }
    if json::depth(data) > limits.max_json_depth {
        return Err(format!(
            "field `data` is nested deeper than {} levels (sync.max_json_depth)",
            limits.max_json_depth
        ));
    }
    // `data` is valid JSON already: callers take it from a parsed body.
    if ty.refs.is_empty() && ty.blobs.is_empty() { Ok(Named::default()) } else { named_values(data, ty) }
}

/// Reads the type's reference and blob fields out of `data`, in one pass
/// that skips every other field unparsed.
fn named_values(data: &str, ty: &super::EntityType) -> Result<Named, String> {
    let names: Vec<&str> =
        ty.refs.iter().map(|r| r.field.as_str()).chain(ty.blobs.iter().map(String::as_str)).collect();
    let mut de = serde_json::Deserializer::from_str(data);
    let raw = Picked(&names)
        .deserialize(&mut de)
        .and_then(|raw| de.end().map(|()| raw))
        .map_err(|e| format!("field `data` is not a valid object: {e}"))?;
    let string = |raw: Option<&RawValue>| -> Result<Option<String>, ()> {
        raw.map_or(Ok(None), |raw| serde_json::from_str::<Option<String>>(raw.get()).map_err(|_| ()))
    };
    let (refs_raw, blobs_raw) = raw.split_at(ty.refs.len());
    let refs = ty
        .refs
        .iter()
        .zip(refs_raw)
        .map(|(r, raw)| {
            string(*raw).map_err(|()| format!("reference field `data.{}` must be a string id or null", r.field))
        })
        .collect::<Result<_, _>>()?;
    let blobs = ty
        .blobs
        .iter()
        .zip(blobs_raw)
        .map(|(field, raw)| {
            match string(*raw) {
                Ok(Some(hash)) if !super::blobs::is_sha256(&hash) => Err(()),
                other => other,
            }
            .map_err(|()| format!("blob field `data.{field}` must be a SHA-256 (64 lowercase hex digits) or null"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Named { refs, blobs })
}

/// The raw values of the fields `names` of a JSON object, in that order (the
/// last of repeated keys, as a parsed map would keep); other fields are skipped.
struct Picked<'n>(&'n [&'n str]);

impl<'de> DeserializeSeed<'de> for Picked<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Picked<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = vec![None; self.0.len()];
        while let Some(at) = map.next_key_seed(KeyIn(self.0))? {
            match at {
                Some(i) => {
                    let value = Some(map.next_value::<&'de RawValue>()?);
                    // A name listed twice (as a reference and as a blob field) gets the value twice.
                    for (slot, name) in out.iter_mut().zip(self.0).skip(i) {
                        if *name == self.0[i] {
                            *slot = value;
                        }
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A key's position among the wanted names (escaped keys are unescaped first).
struct KeyIn<'n>(&'n [&'n str]);

impl<'de> DeserializeSeed<'de> for KeyIn<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIn<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|name| *name == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Reference and blob fields are read in one pass: the last of repeated
    /// keys counts, escaped keys match, other fields are skipped, and a value
    /// of the wrong kind is refused by name.
    #[test]
    fn named_fields_are_picked_out_of_data() {
        let config = Config::default();
        let entities = Entities::from_config(&config).expect("the default entities");
        let ty = |name: &str| &entities.types[entities.index_of(name).expect("a default type")];
        let check = |name: &str, data: &str| check_data(data, ty(name), &config.sync);
        // (The type's references in its order: notebookId, pageId.)
        let named =
            check("pageNotebooks", r#"{"pageId":"p0","x":{"pageId":"no"},"notebook\u0049d":"n1","pageId":"p1"}"#);
        assert_eq!(named.map(|n| n.refs), Ok(vec![Some("n1".to_string()), Some("p1".to_string())]));
        assert_eq!(check("topics", r#"{"title":"t"}"#).map(|n| n.refs), Ok(vec![None]));
        assert_eq!(check("topics", r#"{"contextId":null}"#).map(|n| n.refs), Ok(vec![None]));
        let err = check("topics", r#"{"contextId":7}"#).expect_err("a number is no id");
        assert!(err.contains("data.contextId"), "{err}");
        let err = check("imageBlobs", r#"{"sha256":"abc"}"#).expect_err("not a SHA-256");
        assert!(err.contains("data.sha256"), "{err}");
        let hash = "a".repeat(64);
        let named = check("imageBlobs", &format!(r#"{{"sha256":"{hash}","n":[1,{{"a":2}}]}}"#));
        assert_eq!(named.map(|n| n.blobs), Ok(vec![Some(hash)]));
    }

    /// A retry matches the fingerprint it was logged with, in either form
    /// (XXH3 now, SHA-256 from earlier releases); another body matches neither.
    #[test]
    fn fingerprints_match_in_both_forms() {
        let config = Config::default();
        let entities = Entities::from_config(&config).expect("the default entities");
        let parse = |body: &str| parse_push(body.as_bytes(), &entities, &config.sync).expect("a valid push");
        let ty = &entities.types[0].name;
        let push =
            |data: &str| format!(r#"{{"pushId":"p1","changes":{{"{ty}":[{{"id":"a","version":1,"data":{data}}}]}}}}"#);
        let first = parse(&push(r#"{"t":"x"}"#));
        let retry = parse(&push(r#"{ "t" : "x" }"#));
        let other = parse(&push(r#"{"t":"y"}"#));
        let mut sha = Sha256::new();
        fingerprint(first.push_id.as_deref(), &first.groups, &entities, |b| sha.update(b));
        let legacy: [u8; 32] = sha.finalize().into();
        assert!(retry.same_request_as(&first.body_hash, &entities));
        assert!(retry.same_request_as(&legacy, &entities));
        assert!(!other.same_request_as(&first.body_hash, &entities));
        assert!(!other.same_request_as(&legacy, &entities));
        assert!(!retry.same_request_as(&[0u8; 7], &entities), "an unknown form never matches");
    }
}
