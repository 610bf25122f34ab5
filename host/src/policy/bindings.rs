//! The `bindgen!` sites: host bindings for `wit/merge.wit`
//! (`accord:merge/policy@0.2.0`) and the frozen `wit/v0.1/merge.wit`
//! (`@0.1.0`), and the conversions between them and the domain types, so sync
//! code never sees generated types. An 0.1 component is served through 0.2:
//! its input is the 0.2 input without `mode`, its decision becomes the 0.2
//! decision here, in one place.

use crate::model::{Decision, MergeInput, RecordRow};

mod v02 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit",
        // Inputs are lowered straight from borrowed host strings: no copies
        // of the records before they are written into guest memory.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

mod v01 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit/v0.1",
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

use v01::accord::merge::types as wit01;
use v02::accord::merge::types as wit;

/// The world a policy implements, newest first.
pub enum PolicyPre<T: 'static> {
    V02(v02::PolicyPre<T>),
    V01(v01::PolicyPre<T>),
}

/// An instance of either world.
pub enum Instance {
    V02(v02::Policy),
    V01(v01::Policy),
}

/// The world string policies implement (the newest), for messages.
pub const WORLD: &str = "accord:merge/policy@0.2.0";
/// Every world the host loads, newest first.
pub const WORLDS: [&str; 2] = [WORLD, "accord:merge/policy@0.1.0"];

/// Why the host calls: only a `Live` decision is written and answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Live,
    /// A candidate tried on recorded conflicts (`policy replay`).
    Replay,
    /// Beside the live policy (`shadow_policy`).
    Shadow,
}

/// What a call answered: a decision, or the policy's own `fail(reason)`.
pub enum Answer {
    Decision(Decision),
    Fail(String),
}

impl<T: Send + 'static> PolicyPre<T> {
    /// Checks the component against 0.2, then 0.1; the error names both.
    pub fn new(pre: wasmtime::component::InstancePre<T>) -> Result<Self, wasmtime::Error> {
        let newest = match v02::PolicyPre::new(pre.clone()) {
            Ok(p) => return Ok(PolicyPre::V02(p)),
            Err(e) => e,
        };
        v01::PolicyPre::new(pre).map(PolicyPre::V01).map_err(|older| {
            wasmtime::Error::msg(format!(
                "it implements neither {} ({newest:#}) nor {} ({older:#})",
                WORLDS[0], WORLDS[1]
            ))
        })
    }

    pub fn instantiate(&self, store: &mut wasmtime::Store<T>) -> Result<Instance, wasmtime::Error> {
        Ok(match self {
            PolicyPre::V02(p) => Instance::V02(p.instantiate(store)?),
            PolicyPre::V01(p) => Instance::V01(p.instantiate(store)?),
        })
    }

    /// The world this component implements.
    pub fn world(&self) -> &'static str {
        match self {
            PolicyPre::V02(_) => WORLDS[0],
            PolicyPre::V01(_) => WORLDS[1],
        }
    }
}

impl Instance {
    pub fn call_decide<T: Send>(
        &self,
        store: &mut wasmtime::Store<T>,
        input: &MergeInput<'_>,
        settings: &str,
        mode: Mode,
    ) -> Result<Answer, wasmtime::Error> {
        let decision = match self {
            Instance::V02(p) => p.call_decide(store, to_wit(input, settings, mode))?,
            Instance::V01(p) => upgrade(p.call_decide(store, to_wit01(input, settings))?),
        };
        Ok(from_wit(decision))
    }
}

fn stored(row: &RecordRow) -> wit::StoredRecord<'_> {
    wit::StoredRecord { id: &row.id, version: row.version, deleted: row.deleted, data: &row.data }
}

fn to_wit<'a>(input: &MergeInput<'a>, settings: &'a str, mode: Mode) -> wit::MergeInput<'a> {
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
        mode: match mode {
            Mode::Live => wit::Mode::Live,
            Mode::Replay => wit::Mode::Replay,
            Mode::Shadow => wit::Mode::Shadow,
        },
    }
}

fn stored01(row: &RecordRow) -> wit01::StoredRecord<'_> {
    wit01::StoredRecord { id: &row.id, version: row.version, deleted: row.deleted, data: &row.data }
}

fn to_wit01<'a>(input: &MergeInput<'a>, settings: &'a str) -> wit01::MergeInput<'a> {
    let i = input.incoming;
    wit01::MergeInput {
        entity_type: input.entity,
        user_id: input.user,
        server: input.server.map(stored01),
        base: input.base.map(stored01),
        incoming: wit01::IncomingRecord {
            id: &i.id,
            version: i.version,
            base_version: i.base_version,
            deleted: i.deleted,
            data: &i.data,
        },
        settings,
    }
}

/// An 0.1 decision as the 0.2 one (0.1 has no `fail`).
fn upgrade(decision: wit01::Decision) -> wit::Decision {
    match decision {
        wit01::Decision::Accept => wit::Decision::Accept,
        wit01::Decision::Merged(m) => wit::Decision::Merged(wit::MergedRecord { deleted: m.deleted, data: m.data }),
        wit01::Decision::Conflict(reason) => wit::Decision::Conflict(reason),
        wit01::Decision::Reject(reason) => wit::Decision::Reject(reason),
    }
}

fn from_wit(decision: wit::Decision) -> Answer {
    Answer::Decision(match decision {
        wit::Decision::Accept => Decision::Accept,
        wit::Decision::Merged(m) => Decision::Merged { data: m.data, deleted: m.deleted },
        wit::Decision::Conflict(reason) => Decision::Conflict(reason),
        wit::Decision::Reject(reason) => Decision::Reject(reason),
        wit::Decision::Fail(reason) => return Answer::Fail(reason),
    })
}
