//! `append-only`: a record is immutable once written. Writing the same
//! content again is accepted; any changed copy (including a delete) is a conflict.

use accord_policy_sdk::{Decision, MergeInput, same_json};

pub fn decide(input: &MergeInput) -> Decision {
    match input.server() {
        None => Decision::Accept,
        Some(server)
            if server.deleted == input.incoming().deleted && same_json(&server.data, &input.incoming().data) =>
        {
            Decision::Accept
        }
        Some(_) => Decision::Conflict("append-only: this record is immutable once written".into()),
    }
}

accord_policy_sdk::policy!(decide);

#[cfg(test)]
mod tests {
    use accord_policy_sdk::testing::{incoming, input, stored};

    use super::*;

    #[test]
    fn rule() {
        assert_eq!(decide(&input(None, None, incoming(1, 0, r#"{"a":1}"#))), Decision::Accept);
        assert_eq!(
            decide(&input(Some(stored(1, r#"{"a":1}"#)), None, incoming(2, 0, r#"{ "a": 1 }"#))),
            Decision::Accept
        );
        assert!(matches!(
            decide(&input(Some(stored(1, r#"{"a":1}"#)), None, incoming(2, 1, r#"{"a":2}"#))),
            Decision::Conflict(_)
        ));
    }
}
