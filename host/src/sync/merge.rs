//! The merge rules as sync sees them: (server, base, incoming) → decision.
//!
//! Sync owns this interface and never sees what implements it. `server`
//! wires in the `policy` module's WebAssembly components; tests may wire in
//! plain Rust. The inputs and the verdict are `model` types.

use std::sync::Arc;

use crate::model::{DecidedBy, Decision, MergeInput};

/// The merge rule of every entity type, fixed for the duration of a push.
pub trait MergeRules: Send + Sync {
    /// Decides one record of the entity type at `type_index` in `sync::Entities`.
    /// Infallible: a rule that fails answers `Decision::Conflict("policy failed: …")`.
    /// Blocking; called on the writer thread inside the push transaction.
    fn decide(&self, type_index: usize, input: &MergeInput<'_>) -> Decision;
    /// Which policy decides for that entity type (recorded with what it merges and its conflicts).
    fn decided_by(&self, type_index: usize) -> Option<DecidedBy>;
}

/// The active rules, which may be swapped (a reload) while the server runs.
pub trait ActiveRules: Send + Sync {
    /// A snapshot: a push finishes on the rules it started with.
    fn current(&self) -> Arc<dyn MergeRules>;
}
