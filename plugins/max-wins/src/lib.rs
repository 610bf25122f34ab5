//! `max-wins`: keep the record whose numeric `field` (setting) is greater,
//! e.g. a counter or a high score. When the server's is greater or equal, the
//! client gets the server's record back as the merge result.

use accord_policy_sdk::{Decision, MergeInput, object, settings};
use serde::Deserialize;

#[derive(Deserialize)]
struct Settings {
    field: String,
}

pub fn decide(input: &MergeInput) -> Decision {
    let Some(server) = input.server() else { return Decision::Accept };
    if input.incoming().deleted {
        return Decision::Accept;
    }
    let field = match settings::<Settings>(input) {
        Ok(s) => s.field,
        // A configuration mistake must not make the client drop its record: keep it as a conflict.
        Err(e) => return Decision::Fail(format!("max-wins needs policy_settings.field: {e}")),
    };
    let number = |data: &str| object(data).ok().and_then(|m| m.get(&field).and_then(serde_json::Value::as_f64));
    let Some(mine) = number(&input.incoming().data) else {
        return Decision::Reject(format!("max-wins: data.{field} must be a number"));
    };
    match number(&server.data) {
        Some(theirs) if theirs >= mine => Decision::Merged { deleted: server.deleted, data: server.data.clone() },
        _ => Decision::Accept,
    }
}

accord_policy_sdk::policy!(decide);

#[cfg(test)]
mod tests {
    use accord_policy_sdk::testing::{incoming, input, stored};

    use super::*;

    #[test]
    fn rule() {
        let with = |i| {
            let mut i: MergeInput = i;
            i.set_settings(r#"{"field":"score"}"#);
            i
        };
        let server = Some(stored(1, r#"{"score":10}"#));
        assert_eq!(decide(&with(input(server.clone(), None, incoming(2, 0, r#"{"score":11}"#)))), Decision::Accept);
        assert!(matches!(
            decide(&with(input(server.clone(), None, incoming(2, 0, r#"{"score":3}"#)))),
            Decision::Merged { .. }
        ));
        assert!(matches!(
            decide(&with(input(server.clone(), None, incoming(2, 0, r#"{"score":"x"}"#)))),
            Decision::Reject(_)
        ));
        let mut delete = incoming(2, 1, "{}");
        delete.deleted = true;
        assert_eq!(decide(&with(input(server.clone(), None, delete))), Decision::Accept);
        assert!(matches!(decide(&input(server, None, incoming(2, 0, r#"{"score":1}"#))), Decision::Fail(_)));
    }
}
