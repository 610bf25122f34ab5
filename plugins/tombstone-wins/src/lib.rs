//! `tombstone-wins`: a delete beats any concurrent edit. An incoming delete is
//! always applied; an edit of a record the server has deleted is a conflict
//! unless it was made on that tombstone (an explicit undelete). Other edits
//! follow compare-and-set.

use accord_policy_sdk::{Decision, MergeInput};

pub fn decide(input: &MergeInput) -> Decision {
    let Some(server) = input.server() else { return Decision::Accept };
    let incoming = input.incoming();
    match server {
        _ if incoming.deleted => Decision::Accept,
        server if incoming.base_version == server.version => Decision::Accept,
        server if server.deleted => {
            Decision::Conflict("tombstone-wins: the record was deleted concurrently; the delete stands".into())
        }
        server => Decision::Conflict(format!(
            "the change was based on version {}, but the server is at version {}",
            incoming.base_version, server.version
        )),
    }
}

accord_policy_sdk::policy!(decide);

#[cfg(test)]
mod tests {
    use accord_policy_sdk::testing::{incoming, input, stored, tombstone};

    use super::*;

    #[test]
    fn rule() {
        let mut delete = incoming(3, 1, "{}");
        delete.deleted = true;
        assert_eq!(decide(&input(Some(stored(2, "{}")), None, delete)), Decision::Accept);
        assert!(matches!(decide(&input(Some(tombstone(2)), None, incoming(3, 1, "{}"))), Decision::Conflict(_)));
        assert_eq!(decide(&input(Some(tombstone(2)), None, incoming(3, 2, "{}"))), Decision::Accept);
    }
}
