//! `version-wins`: the old service's rule. Insert if new; replace if the
//! incoming `version` is higher than the server's; otherwise a conflict.
//! For clients that send no `baseVersion`.

use accord_policy_sdk::{Decision, MergeInput};

pub fn decide(input: &MergeInput) -> Decision {
    match input.server() {
        None => Decision::Accept,
        Some(server) if input.incoming().version > server.version => Decision::Accept,
        Some(server) => Decision::Conflict(format!(
            "version {} is not newer than the server's version {}",
            input.incoming().version,
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
        assert_eq!(decide(&input(Some(stored(2, "{}")), None, incoming(3, 0, "{}"))), Decision::Accept);
        assert!(matches!(decide(&input(Some(stored(3, "{}")), None, incoming(3, 0, "{}"))), Decision::Conflict(_)));
    }
}
