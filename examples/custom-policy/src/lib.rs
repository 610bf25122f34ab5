//! Example policy: last writer wins by a client-side timestamp.
//!
//! The record whose `data.<field>` (default `editedAt`, unix ms) is greater
//! wins; on a tie the incoming record wins. Records without the field are
//! rejected, so clients that forget it hear about it.

use accord_policy_sdk::{Decision, MergeInput, object, settings};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default)]
struct Settings {
    /// Which field of `data` holds the edit time.
    field: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { field: "editedAt".into() }
    }
}

pub fn decide(input: &MergeInput) -> Decision {
    // New records need no parsing at all.
    let Some(server) = input.server() else { return Decision::Accept };
    let field = match settings::<Settings>(input) {
        Ok(s) => s.field,
        // A configuration mistake is the server's, not the client's: keep the record as a conflict.
        Err(e) => return Decision::Fail(e),
    };
    let stamp = |data: &str| object(data).ok().and_then(|m| m.get(&field).and_then(serde_json::Value::as_i64));
    let Some(mine) = stamp(&input.incoming().data) else {
        return Decision::Reject(format!("data.{field} must be a number (unix ms)"));
    };
    match stamp(&server.data) {
        // The server's copy is newer: the client adopts it.
        Some(theirs) if theirs > mine => Decision::Merged { deleted: server.deleted, data: server.data.clone() },
        _ => Decision::Accept,
    }
}

accord_policy_sdk::policy!(decide);

#[cfg(test)]
mod tests {
    use accord_policy_sdk::testing::{incoming, input, stored};

    use super::*;

    #[test]
    fn newer_edit_wins() {
        let server = Some(stored(3, r#"{"editedAt": 200, "t": "server"}"#));
        assert_eq!(decide(&input(server.clone(), None, incoming(2, 1, r#"{"editedAt": 300}"#))), Decision::Accept);
        assert!(matches!(
            decide(&input(server.clone(), None, incoming(2, 1, r#"{"editedAt": 100}"#))),
            Decision::Merged { .. }
        ));
        assert!(matches!(decide(&input(server, None, incoming(2, 1, "{}"))), Decision::Reject(_)));
    }
}
