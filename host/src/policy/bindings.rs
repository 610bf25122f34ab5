//! The one `bindgen!` site: host bindings for `wit/` (`accord:merge/policy@0.1.0`),
//! and conversions between them and the domain types, so sync code never sees
//! generated types.

use crate::model::{Decision, MergeInput, RecordRow};

mod generated {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit",
        // Inputs are lowered straight from borrowed host strings: no copies
        // of the records before they are written into guest memory.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

use generated::accord::merge::types as wit;
pub use generated::{Policy, PolicyPre};

/// The world string policies must implement, for messages.
pub const WORLD: &str = "accord:merge/policy@0.1.0";

fn stored(row: &RecordRow) -> wit::StoredRecord<'_> {
    wit::StoredRecord { id: &row.id, version: row.version, deleted: row.deleted, data: &row.data }
}

pub fn to_wit<'a>(input: &MergeInput<'a>, settings: &'a str) -> wit::MergeInput<'a> {
    let i = input.incoming;
    wit::MergeInput {
        entity_type: input.entity,
        user_id: input.user,
        server: input.server.map(stored),
        base: input.base.map(stored),
        incoming: wit::IncomingRecord {
            id: &i.id,
            version: i.version,
            base_version: i.base_version,
            deleted: i.deleted,
            data: &i.data,
        },
        settings,
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
