//! Opaque pull cursors: base64url of `<database epoch>.<sequence>`.
//!
//! The epoch identifies the database, so a cursor from a restored or reset
//! server is recognised (410) instead of silently skipping or repeating data.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub fn encode(epoch: &str, seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{epoch}.{seq}"))
}

/// Splits a cursor into epoch and sequence; `None` when it is not one of ours.
pub fn decode(cursor: &str) -> Option<(String, i64)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (epoch, seq) = text.split_once('.')?;
    let seq: i64 = seq.parse().ok()?;
    (seq >= 0 && !epoch.is_empty()).then(|| (epoch.to_string(), seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        assert_eq!(decode(&encode("ab12", 42)), Some(("ab12".into(), 42)));
        assert_eq!(decode("not a cursor!"), None);
        assert_eq!(decode(&URL_SAFE_NO_PAD.encode("ab12.-1")), None);
        assert_eq!(decode(&URL_SAFE_NO_PAD.encode("nodot")), None);
    }
}
