//! The merge-policy interface as sync code sees it: (server, base, incoming) →
//! decision. The `policy` module runs these through WebAssembly components
//! and converts to and from the WIT types; sync code never sees those.

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
