//! The `bindgen!` sites: host bindings for `wit/merge.wit`
//! (`accord:merge/policy@0.3.0`) and the frozen `wit/v0.2` and `wit/v0.1`,
//! and the conversions between them and the domain types, so sync code never
//! sees generated types. An 0.3 component reads its input from the host
//! (the `input` interface, served from [`CallInput`]: a copy kept in the
//! instance's store for the call); 0.2 and 0.1 components get theirs copied
//! in whole. 0.2 and 0.1 decisions become the 0.3 decision here, in one
//! place.

use wasmtime::component::{HasSelf, Linker};

use super::sandbox::Sandbox;
use crate::model::{Decision, MergeInput, RecordRow};

mod v03 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit",
        // Reading the input outside a call traps.
        imports: { default: trappable },
    });
}

mod v02 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit/v0.2",
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
use v03::accord::merge::input as input03;
use v03::accord::merge::types as wit03;

/// The world a policy implements, newest first.
pub enum PolicyPre<T: 'static> {
    V03(v03::PolicyPre<T>),
    V02(v02::PolicyPre<T>),
    V01(v01::PolicyPre<T>),
}

/// An instance of any world.
pub enum Instance {
    V03(v03::Policy),
    V02(v02::Policy),
    V01(v01::Policy),
}

/// The world string policies implement (the newest), for messages.
pub const WORLD: &str = "accord:merge/policy@0.3.0";
/// Every world the host loads, newest first.
pub const WORLDS: [&str; 3] = [WORLD, "accord:merge/policy@0.2.0", "accord:merge/policy@0.1.0"];

/// Adds what an 0.3 component imports from the host (its input).
pub fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    input03::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |s| s)
}

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
    /// Checks the component against 0.3, 0.2, then 0.1; the error names each.
    pub fn new(pre: wasmtime::component::InstancePre<T>) -> Result<Self, wasmtime::Error> {
        let newest = match v03::PolicyPre::new(pre.clone()) {
            Ok(p) => return Ok(PolicyPre::V03(p)),
            Err(e) => e,
        };
        let second = match v02::PolicyPre::new(pre.clone()) {
            Ok(p) => return Ok(PolicyPre::V02(p)),
            Err(e) => e,
        };
        v01::PolicyPre::new(pre).map(PolicyPre::V01).map_err(|oldest| {
            wasmtime::Error::msg(format!(
                "it implements none of {} ({newest:#}), {} ({second:#}) or {} ({oldest:#})",
                WORLDS[0], WORLDS[1], WORLDS[2]
            ))
        })
    }

    pub fn instantiate(&self, store: &mut wasmtime::Store<T>) -> Result<Instance, wasmtime::Error> {
        Ok(match self {
            PolicyPre::V03(p) => Instance::V03(p.instantiate(store)?),
            PolicyPre::V02(p) => Instance::V02(p.instantiate(store)?),
            PolicyPre::V01(p) => Instance::V01(p.instantiate(store)?),
        })
    }

    /// The world this component implements.
    pub fn world(&self) -> &'static str {
        match self {
            PolicyPre::V03(_) => WORLDS[0],
            PolicyPre::V02(_) => WORLDS[1],
            PolicyPre::V01(_) => WORLDS[2],
        }
    }
}

impl Instance {
    pub fn call_decide(
        &self,
        store: &mut wasmtime::Store<Sandbox>,
        input: &MergeInput<'_>,
        settings: &str,
        mode: Mode,
    ) -> Result<Answer, wasmtime::Error> {
        let decision = match self {
            Instance::V03(p) => {
                store.data_mut().input.fill(input, settings, mode);
                let decision = p.call_decide(&mut *store);
                store.data_mut().input.end();
                decision?
            }
            Instance::V02(p) => upgrade02(p.call_decide(store, to_wit(input, settings, mode))?),
            Instance::V01(p) => upgrade01(p.call_decide(store, to_wit01(input, settings))?),
        };
        Ok(from_wit(decision))
    }
}

/// One call's input as an 0.3 component reads it: a copy in the instance's
/// store (whose data must be `'static`), refilled in place for each call so
/// its buffers are reused.
#[derive(Default)]
pub struct CallInput {
    entity: String,
    user: String,
    server: Option<RecordCopy>,
    base: Option<RecordCopy>,
    incoming: RecordCopy,
    incoming_base_version: i64,
    settings: String,
    /// `None` between calls.
    mode: Option<Mode>,
}

#[derive(Default)]
struct RecordCopy {
    id: String,
    version: i64,
    deleted: bool,
    data: String,
}

impl RecordCopy {
    fn fill(&mut self, id: &str, version: i64, deleted: bool, data: &str) {
        copy(&mut self.id, id);
        copy(&mut self.data, data);
        (self.version, self.deleted) = (version, deleted);
    }

    fn stored(&self) -> wit03::StoredRecord {
        wit03::StoredRecord {
            id: self.id.clone(),
            version: self.version,
            deleted: self.deleted,
            data: self.data.clone(),
        }
    }
}

fn copy(buf: &mut String, text: &str) {
    buf.clear();
    buf.push_str(text);
}

/// `slot` holds a copy of `row` (keeping its buffers when it held one already).
fn fill_row(slot: &mut Option<RecordCopy>, row: Option<&RecordRow>) {
    match row {
        None => *slot = None,
        Some(r) => slot.get_or_insert_with(RecordCopy::default).fill(&r.id, r.version, r.deleted, &r.data),
    }
}

impl CallInput {
    fn fill(&mut self, input: &MergeInput<'_>, settings: &str, mode: Mode) {
        copy(&mut self.entity, input.entity);
        copy(&mut self.user, input.user);
        fill_row(&mut self.server, input.server);
        fill_row(&mut self.base, input.base);
        let i = input.incoming;
        self.incoming.fill(&i.id, i.version, i.deleted, &i.data);
        self.incoming_base_version = i.base_version;
        copy(&mut self.settings, settings);
        self.mode = Some(mode);
    }

    /// After a call: reads trap again, and no record is kept until the next
    /// call (the buffers keep their capacity).
    fn end(&mut self) {
        self.mode = None;
        for text in
            [&mut self.entity, &mut self.user, &mut self.settings, &mut self.incoming.id, &mut self.incoming.data]
        {
            text.clear();
        }
        for row in [&mut self.server, &mut self.base].into_iter().flatten() {
            row.id.clear();
            row.data.clear();
        }
    }
}

impl wit03::Host for Sandbox {}

impl Sandbox {
    /// The input of the call in progress; outside a call, a trap.
    fn call_input(&self) -> wasmtime::Result<&CallInput> {
        match self.input.mode {
            Some(_) => Ok(&self.input),
            None => Err(wasmtime::Error::msg("the policy read its input outside `decide`")),
        }
    }
}

impl input03::Host for Sandbox {
    fn entity_type(&mut self) -> wasmtime::Result<String> {
        Ok(self.call_input()?.entity.clone())
    }

    fn user_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.call_input()?.user.clone())
    }

    fn server(&mut self) -> wasmtime::Result<Option<wit03::StoredRecord>> {
        Ok(self.call_input()?.server.as_ref().map(RecordCopy::stored))
    }

    fn base(&mut self) -> wasmtime::Result<Option<wit03::StoredRecord>> {
        Ok(self.call_input()?.base.as_ref().map(RecordCopy::stored))
    }

    fn incoming(&mut self) -> wasmtime::Result<wit03::IncomingRecord> {
        let input = self.call_input()?;
        let i = &input.incoming;
        Ok(wit03::IncomingRecord {
            id: i.id.clone(),
            version: i.version,
            base_version: input.incoming_base_version,
            deleted: i.deleted,
            data: i.data.clone(),
        })
    }

    fn settings(&mut self) -> wasmtime::Result<String> {
        Ok(self.call_input()?.settings.clone())
    }

    fn call_mode(&mut self) -> wasmtime::Result<wit03::Mode> {
        let input = self.call_input()?;
        Ok(match input.mode {
            Some(Mode::Replay) => wit03::Mode::Replay,
            Some(Mode::Shadow) => wit03::Mode::Shadow,
            // `call_input` answered, so a call is in progress: `Some(Live)`.
            Some(Mode::Live) | None => wit03::Mode::Live,
        })
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

/// An 0.2 decision as the 0.3 one (the same variant).
fn upgrade02(decision: wit::Decision) -> wit03::Decision {
    match decision {
        wit::Decision::Accept => wit03::Decision::Accept,
        wit::Decision::Merged(m) => wit03::Decision::Merged(wit03::MergedRecord { deleted: m.deleted, data: m.data }),
        wit::Decision::Conflict(reason) => wit03::Decision::Conflict(reason),
        wit::Decision::Reject(reason) => wit03::Decision::Reject(reason),
        wit::Decision::Fail(reason) => wit03::Decision::Fail(reason),
    }
}

/// An 0.1 decision as the 0.3 one (0.1 has no `fail`).
fn upgrade01(decision: wit01::Decision) -> wit03::Decision {
    match decision {
        wit01::Decision::Accept => wit03::Decision::Accept,
        wit01::Decision::Merged(m) => wit03::Decision::Merged(wit03::MergedRecord { deleted: m.deleted, data: m.data }),
        wit01::Decision::Conflict(reason) => wit03::Decision::Conflict(reason),
        wit01::Decision::Reject(reason) => wit03::Decision::Reject(reason),
    }
}

fn from_wit(decision: wit03::Decision) -> Answer {
    Answer::Decision(match decision {
        wit03::Decision::Accept => Decision::Accept,
        wit03::Decision::Merged(m) => Decision::Merged { data: m.data, deleted: m.deleted },
        wit03::Decision::Conflict(reason) => Decision::Conflict(reason),
        wit03::Decision::Reject(reason) => Decision::Reject(reason),
        wit03::Decision::Fail(reason) => return Answer::Fail(reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_0_3_component_reads_its_input_only_during_a_call() {
        let mut sandbox = Sandbox::new(1 << 20);
        let err = input03::Host::server(&mut sandbox).expect_err("no call in progress");
        assert!(err.to_string().contains("outside `decide`"), "{err}");
        let incoming = crate::model::Incoming {
            id: "r1".into(),
            version: 2,
            base_version: 1,
            deleted: false,
            data: "{}".into(),
            refs: vec![],
            blobs: vec![],
        };
        let input = MergeInput { entity: "pages", user: "u", server: None, base: None, incoming: &incoming };
        sandbox.input.fill(&input, "{\"a\":1}", Mode::Shadow);
        assert_eq!(input03::Host::settings(&mut sandbox).ok().as_deref(), Some("{\"a\":1}"));
        assert!(matches!(input03::Host::call_mode(&mut sandbox), Ok(wit03::Mode::Shadow)));
        assert!(matches!(input03::Host::server(&mut sandbox), Ok(None)));
        let got = input03::Host::incoming(&mut sandbox).ok().map(|i| (i.id, i.version, i.base_version));
        assert_eq!(got, Some(("r1".to_string(), 2, 1)));
        // After the call (as `call_decide` ends it, returned or trapped) reads trap again.
        sandbox.input.end();
        assert!(input03::Host::incoming(&mut sandbox).is_err(), "the input is gone after the call");
        assert!(sandbox.input.incoming.data.is_empty(), "no record is kept between calls");
    }
}
