//! The merge-policy interface: (server, base, incoming, settings) → decision.
//!
//! Sync code calls only [`Rule::decide`]; the rules here are the built-in
//! native ones. WebAssembly policies plug in behind the same call.

use crate::store::RecordRow;

use super::wire::Incoming;

/// What a policy sees for one record.
pub struct MergeInput<'a> {
    pub entity: &'a str,
    pub user: &'a str,
    /// The server's current version, if the record exists (tombstones included).
    pub server: Option<&'a RecordRow>,
    /// The version the client started from, if history still holds it.
    pub base: Option<&'a RecordRow>,
    pub incoming: &'a Incoming,
}

/// A policy's verdict on one record.
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

/// A built-in merge rule, chosen per entity type in config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The old service's rule: insert if new; replace if `version` is higher; else conflict.
    VersionWins,
    /// Apply only if `baseVersion` equals the server's version (or the record is new); else conflict.
    CompareAndSet,
}

impl Rule {
    pub fn from_name(name: &str) -> Option<Rule> {
        match name {
            "version-wins" => Some(Rule::VersionWins),
            "compare-and-set" => Some(Rule::CompareAndSet),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Rule::VersionWins => "version-wins",
            Rule::CompareAndSet => "compare-and-set",
        }
    }

    /// Whether the rule looks at `base` (so the host only fetches it when needed).
    pub fn needs_base(self) -> bool {
        false
    }

    pub fn decide(self, input: &MergeInput<'_>) -> Decision {
        let Some(server) = input.server else { return Decision::Accept };
        let incoming = input.incoming;
        match self {
            Rule::VersionWins if incoming.version > server.version => Decision::Accept,
            Rule::VersionWins => Decision::Conflict(format!(
                "version {} is not newer than the server's version {}",
                incoming.version, server.version
            )),
            Rule::CompareAndSet if incoming.base_version == server.version => Decision::Accept,
            Rule::CompareAndSet => Decision::Conflict(format!(
                "the change was based on version {}, but the server is at version {}",
                incoming.base_version, server.version
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: i64) -> RecordRow {
        RecordRow {
            entity: "t".into(),
            id: "a".into(),
            version,
            deleted: false,
            data: "{}".into(),
            updated_at: 0,
            seq: 1,
        }
    }

    fn incoming(version: i64, base_version: i64) -> Incoming {
        Incoming { id: "a".into(), version, base_version, deleted: false, data: "{}".into(), refs: vec![] }
    }

    fn decide(rule: Rule, server: Option<i64>, version: i64, base: i64) -> Decision {
        let server = server.map(row);
        let inc = incoming(version, base);
        rule.decide(&MergeInput { entity: "t", user: "u", server: server.as_ref(), base: None, incoming: &inc })
    }

    #[test]
    fn version_wins() {
        assert_eq!(decide(Rule::VersionWins, None, 1, 0), Decision::Accept);
        assert_eq!(decide(Rule::VersionWins, Some(2), 3, 0), Decision::Accept);
        assert!(matches!(decide(Rule::VersionWins, Some(3), 3, 0), Decision::Conflict(_)));
        assert!(matches!(decide(Rule::VersionWins, Some(5), 2, 0), Decision::Conflict(_)));
    }

    #[test]
    fn compare_and_set() {
        assert_eq!(decide(Rule::CompareAndSet, None, 1, 0), Decision::Accept);
        assert_eq!(decide(Rule::CompareAndSet, None, 4, 3), Decision::Accept);
        assert_eq!(decide(Rule::CompareAndSet, Some(2), 3, 2), Decision::Accept);
        assert!(matches!(decide(Rule::CompareAndSet, Some(3), 9, 2), Decision::Conflict(_)));
    }
}
