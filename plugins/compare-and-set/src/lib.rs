//! `compare-and-set`: apply a change only if it was made on the server's
//! current version (or the record is new); anything else is a conflict.

use accord_policy_sdk::{Decision, MergeInput};

pub fn decide(input: &MergeInput) -> Decision {
    match input.server() {
        None => Decision::Accept,
        Some(server) if input.incoming().base_version == server.version => Decision::Accept,
        Some(server) => Decision::Conflict(format!(
            "the change was based on version {}, but the server is at version {}",
            input.incoming().base_version,
            server.version
        )),
    }
}

accord_policy_sdk::policy!(decide);

#[cfg(test)]
mod tests {
    use accord_policy_sdk::testing::{incoming, input, stored};

    use super::*;

    #[test]
    fn rule() {
        assert_eq!(decide(&input(None, None, incoming(1, 0, "{}"))), Decision::Accept);
        assert_eq!(decide(&input(Some(stored(2, "{}")), None, incoming(3, 2, "{}"))), Decision::Accept);
        assert!(matches!(decide(&input(Some(stored(3, "{}")), None, incoming(9, 2, "{}"))), Decision::Conflict(_)));
    }
}
