//! The one `bindgen!` site: host bindings for `wit/` (`accord:merge/policy@0.1.0`),
//! and conversions between them and the domain types, so sync code never sees
//! generated types.

use crate::store::RecordRow;
use crate::sync::policy::{Decision, MergeInput};

mod generated {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit",
    });
}

use generated::accord::merge::types as wit;
pub use generated::{Policy, PolicyPre};

/// The world string policies must implement, for messages.
pub const WORLD: &str = "accord:merge/policy@0.1.0";

fn stored(row: &RecordRow) -> wit::StoredRecord {
    wit::StoredRecord { id: row.id.clone(), version: row.version, deleted: row.deleted, data: row.data.clone() }
}

pub fn to_wit(input: &MergeInput<'_>, settings: &str) -> wit::MergeInput {
    let i = input.incoming;
    wit::MergeInput {
        entity_type: input.entity.to_string(),
        user_id: input.user.to_string(),
        server: input.server.map(stored),
        base: input.base.map(stored),
        incoming: wit::IncomingRecord {
            id: i.id.clone(),
            version: i.version,
            base_version: i.base_version,
            deleted: i.deleted,
            data: i.data.clone(),
        },
        settings: settings.to_string(),
    }
}

pub fn from_wit(decision: wit::Decision) -> Decision {
    match decision {
        wit::Decision::Accept => Decision::Accept,
        wit::Decision::Merged(m) => Decision::Merged { data: m.data, deleted: m.deleted },
        wit::Decision::Conflict(reason) => Decision::Conflict(reason),
        wit::Decision::Reject(reason) => Decision::Reject(reason),
    }
}
