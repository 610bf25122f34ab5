//! Domain types shared by the layers: a stored record, an incoming record,
//! and what a merge rule sees and answers.
//!
//! This module sits below every other one and imports nothing of the crate:
//! `store` stores these types, `sync` produces and consumes them, `policy`
//! converts them to and from WIT. Plain data only — no I/O, no behaviour.

/// One version of a record as stored. `data` is JSON object text, kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRow {
    pub entity: String,
    pub id: String,
    pub version: i64,
    pub deleted: bool,
    pub data: String,
    pub updated_at: i64,
    /// The change sequence of the write that produced this version (0 in history).
    pub seq: i64,
    /// The policy that merged this version; `None` for a version stored as
    /// sent (or as a conflict's resolution said).
    pub decided_by: Option<DecidedBy>,
}

/// Which policy decided: its name and the SHA-256 of its component (an audit
/// trail that survives hot swaps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecidedBy {
    pub policy: String,
    pub sha256: String,
}

/// One incoming record, validated (produced by `sync::wire`).
#[derive(Clone, Debug)]
pub struct Incoming {
    pub id: String,
    pub version: i64,
    /// 0 when absent: the client believes the record is new.
    pub base_version: i64,
    pub deleted: bool,
    /// The `data` object, as the client's JSON text.
    pub data: String,
    /// Values of the type's reference fields, in the order of `sync::EntityType::refs`
    /// (`None` when absent or null).
    pub refs: Vec<Option<String>>,
    /// Values of the type's blob fields, in the order of `sync::EntityType::blobs`
    /// (`None` when absent or null; otherwise a valid SHA-256).
    pub blobs: Vec<Option<String>>,
}

/// What a merge rule sees for one record: (server, base, incoming).
pub struct MergeInput<'a> {
    pub entity: &'a str,
    pub user: &'a str,
    /// The server's current version, if the record exists (tombstones included).
    pub server: Option<&'a RecordRow>,
    /// The version the client started from, if history still holds it.
    pub base: Option<&'a RecordRow>,
    pub incoming: &'a Incoming,
}

/// A merge rule's verdict on one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Store the incoming record as sent.
    Accept,
    /// Store this record instead (the host picks the version).
    Merged { data: String, deleted: bool },
    /// Keep the server's record; keep the incoming one in the conflicts table.
    Conflict(String),
    /// Invalid input; store nothing.
    Reject(String),
}

/// Milliseconds since the Unix epoch (0 before it, saturating far after).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `bytes` as lowercase hex digits (ids, epochs, hashes).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `30d`, `12h`, `90m` or `45s` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text.len().saturating_sub(1);
    let (number, unit) = (text.get(..split).unwrap_or(""), text.get(split..).unwrap_or(""));
    let unit_ms: i64 = match unit {
        "s" => 1000,
        "m" => 60 * 1000,
        "h" => 3600 * 1000,
        "d" => 86_400 * 1000,
        _ => return Err(format!("`{text}`: expected a number followed by s, m, h or d (e.g. 30d)")),
    };
    let count: i64 = number
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}`: expected a positive whole number before `{unit}`"))?;
    count.checked_mul(unit_ms).filter(|ms| *ms < i64::MAX / 2).ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations_take_s_m_h_d_suffixes() {
        assert_eq!(parse_duration_ms("45s"), Ok(45_000));
        assert_eq!(parse_duration_ms("90m"), Ok(90 * 60_000));
        assert_eq!(parse_duration_ms("12h"), Ok(12 * 3_600_000));
        assert_eq!(parse_duration_ms("30d"), Ok(30 * 86_400_000));
        for bad in ["", "d", "30", "30w", "-1d", "0d", "1.5h", "99999999999999999d", "3 d"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?}");
        }
    }
}
