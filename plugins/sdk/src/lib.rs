//! The Accord policy SDK: plain Rust types for the `accord:merge` contract,
//! JSON and merge helpers, and [`policy!`] which exports a rule as a component.
//!
//! Write the rule as `fn decide(input: &MergeInput) -> Decision`, test it
//! natively with `cargo test`, then `accord_policy_sdk::policy!(decide);` and
//! build with `cargo build --release --target wasm32-wasip2`.

pub mod field_merge;
pub mod fields;
pub mod merge;
pub mod text;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[allow(unsafe_code)] // generated ABI glue
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "accord_policy_sdk::bindings",
    });
}

use std::cell::OnceCell;

#[cfg(target_arch = "wasm32")]
use bindings::accord::merge::input as host;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use fields::Fields;
pub use merge::{FieldMerge, Settle, merge_fields, three_way};

/// One stored version of a record; `data` is a JSON object as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub id: String,
    pub version: i64,
    pub deleted: bool,
    pub data: String,
}

/// The change a client pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingRecord {
    pub id: String,
    pub version: i64,
    /// The server version the change was made on; 0 means "new to me".
    pub base_version: i64,
    pub deleted: bool,
    pub data: String,
}

/// Everything a policy sees for one record. In a component each part is read
/// from the host the first time the rule asks for it (`accord:merge@0.3.0`),
/// so a rule pays only for what it reads (one that accepts a new record on
/// seeing `server()` is `None` copies no record data at all). Natively
/// (tests, benchmarks) every part is given up front.
#[derive(Clone, Debug)]
pub struct MergeInput {
    entity_type: OnceCell<String>,
    user_id: OnceCell<String>,
    server: OnceCell<Option<StoredRecord>>,
    base: OnceCell<Option<StoredRecord>>,
    incoming: OnceCell<IncomingRecord>,
    settings: OnceCell<String>,
    mode: OnceCell<Mode>,
}

/// A part of the input: given, or read from the host once.
macro_rules! part {
    ($input:ident . $cell:ident, $read:expr) => {{
        #[cfg(target_arch = "wasm32")]
        let value = $input.$cell.get_or_init(|| $read);
        // Natively `MergeInput::new` gives every part.
        #[cfg(not(target_arch = "wasm32"))]
        let value = $input.$cell.get().expect("MergeInput::new gives every part");
        value
    }};
}

impl MergeInput {
    /// An input with every part given; settings `{}`, mode `Live` (see the setters).
    pub fn new(
        entity_type: impl Into<String>,
        user_id: impl Into<String>,
        server: Option<StoredRecord>,
        base: Option<StoredRecord>,
        incoming: IncomingRecord,
    ) -> MergeInput {
        MergeInput {
            entity_type: OnceCell::from(entity_type.into()),
            user_id: OnceCell::from(user_id.into()),
            server: OnceCell::from(server),
            base: OnceCell::from(base),
            incoming: OnceCell::from(incoming),
            settings: OnceCell::from("{}".to_string()),
            mode: OnceCell::from(Mode::Live),
        }
    }

    /// The input of the call in progress, read from the host as the rule asks
    /// (the `policy!` glue).
    #[cfg(target_arch = "wasm32")]
    #[doc(hidden)]
    pub fn from_host() -> MergeInput {
        MergeInput {
            entity_type: OnceCell::new(),
            user_id: OnceCell::new(),
            server: OnceCell::new(),
            base: OnceCell::new(),
            incoming: OnceCell::new(),
            settings: OnceCell::new(),
            mode: OnceCell::new(),
        }
    }

    /// The record's entity type (`pages`, `topics`, …).
    pub fn entity_type(&self) -> &str {
        part!(self.entity_type, host::entity_type())
    }

    /// The user whose data this is.
    pub fn user_id(&self) -> &str {
        part!(self.user_id, host::user_id())
    }

    /// The server's current record, if it exists (tombstones included).
    pub fn server(&self) -> Option<&StoredRecord> {
        part!(self.server, host::server().map(wasm::stored)).as_ref()
    }

    /// The version the client started from, if history still holds it.
    pub fn base(&self) -> Option<&StoredRecord> {
        part!(self.base, host::base().map(wasm::stored)).as_ref()
    }

    /// The change the client pushed.
    pub fn incoming(&self) -> &IncomingRecord {
        part!(self.incoming, wasm::incoming(host::incoming()))
    }

    /// This entity type's `policy_settings`, as JSON object text (`{}` if none).
    pub fn settings(&self) -> &str {
        part!(self.settings, host::settings())
    }

    /// Why the host calls: only a `Live` decision is written and answered.
    pub fn mode(&self) -> Mode {
        *part!(self.mode, wasm::mode(host::call_mode()))
    }

    /// Replaces the settings (for tests: `{}` unless set).
    pub fn set_settings(&mut self, settings: impl Into<String>) {
        self.settings = OnceCell::from(settings.into());
    }

    /// Replaces the mode (for tests: `Live` unless set).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = OnceCell::from(mode);
    }
}

/// Why the host calls a policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// A push: the decision is written and answered.
    #[default]
    Live,
    /// A candidate tried on recorded conflicts (`accord policy replay`): only counted.
    Replay,
    /// Beside the live policy (`shadow_policy`): only compared.
    Shadow,
}

/// A policy's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Store the incoming record as sent.
    Accept,
    /// Store this record instead; the host picks the version.
    Merged { deleted: bool, data: String },
    /// Keep the server's record; the incoming one goes to the conflicts table.
    Conflict(String),
    /// The incoming record is invalid in itself; store nothing.
    Reject(String),
    /// The policy cannot decide (bad settings, stored data it cannot read):
    /// the host keeps the record as a conflict, reason `policy failed: <text>`,
    /// and counts a policy failure.
    Fail(String),
}

/// Parses a record's `data` into a JSON object.
pub fn object(data: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(data) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("data is not a JSON object".into()),
        Err(e) => Err(format!("data is not valid JSON: {e}")),
    }
}

/// Parses the policy's settings into `T` (use `#[serde(default)]` for optional keys).
pub fn settings<T: DeserializeOwned>(input: &MergeInput) -> Result<T, String> {
    serde_json::from_str(input.settings()).map_err(|e| format!("invalid policy_settings: {e}"))
}

/// True when the two JSON texts denote the same value (byte-equal texts skip parsing).
pub fn same_json(a: &str, b: &str) -> bool {
    if text::same_text(a, b) {
        return true;
    }
    // Objects field by field, parsing only the fields whose texts differ.
    if let (Ok(x), Ok(y)) = (Fields::parse(a), Fields::parse(b)) {
        return x.same(&y);
    }
    matches!((serde_json::from_str::<Value>(a), serde_json::from_str::<Value>(b)), (Ok(x), Ok(y)) if x == y)
}

/// Serializes a merged object back to text.
pub fn to_text(map: &Map<String, Value>) -> String {
    Value::Object(map.clone()).to_string()
}

/// Exports `decide` (a `fn(&MergeInput) -> Decision`) as the component's
/// `accord:merge/policy` implementation. Does nothing in native builds, so the
/// same crate can be unit-tested and benchmarked natively.
#[macro_export]
macro_rules! policy {
    ($decide:path) => {
        #[cfg(target_arch = "wasm32")]
        struct __AccordPolicy;

        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::Guest for __AccordPolicy {
            fn decide() -> $crate::bindings::accord::merge::types::Decision {
                $crate::wasm::into_wit($decide(&$crate::MergeInput::from_host()))
            }
        }

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)] // generated ABI glue
        const _: () = {
    $crate::bindings::export!(__AccordPolicy with_types_in $crate::bindings);
        };
    };
}

/// Conversions between the generated WIT types and the SDK's types.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm {
    use super::bindings::accord::merge::types as wit;
    use super::{Decision, IncomingRecord, Mode, StoredRecord};

    pub fn stored(r: wit::StoredRecord) -> StoredRecord {
        StoredRecord { id: r.id, version: r.version, deleted: r.deleted, data: r.data }
    }

    pub fn incoming(i: wit::IncomingRecord) -> IncomingRecord {
        IncomingRecord { id: i.id, version: i.version, base_version: i.base_version, deleted: i.deleted, data: i.data }
    }

    pub fn mode(mode: wit::Mode) -> Mode {
        match mode {
            wit::Mode::Live => Mode::Live,
            wit::Mode::Replay => Mode::Replay,
            wit::Mode::Shadow => Mode::Shadow,
        }
    }

    pub fn into_wit(decision: Decision) -> wit::Decision {
        match decision {
            Decision::Accept => wit::Decision::Accept,
            Decision::Merged { deleted, data } => wit::Decision::Merged(wit::MergedRecord { deleted, data }),
            Decision::Conflict(reason) => wit::Decision::Conflict(reason),
            Decision::Reject(reason) => wit::Decision::Reject(reason),
            Decision::Fail(reason) => wit::Decision::Fail(reason),
        }
    }
}

/// Builders for unit tests of policies.
pub mod testing {
    use super::{IncomingRecord, MergeInput, StoredRecord};

    pub fn stored(version: i64, data: &str) -> StoredRecord {
        StoredRecord { id: "r1".into(), version, deleted: false, data: data.into() }
    }

    pub fn tombstone(version: i64) -> StoredRecord {
        StoredRecord { id: "r1".into(), version, deleted: true, data: "{}".into() }
    }

    pub fn incoming(version: i64, base_version: i64, data: &str) -> IncomingRecord {
        IncomingRecord { id: "r1".into(), version, base_version, deleted: false, data: data.into() }
    }

    pub fn input(server: Option<StoredRecord>, base: Option<StoredRecord>, incoming: IncomingRecord) -> MergeInput {
        MergeInput::new("things", "u1", server, base, incoming)
    }
}
