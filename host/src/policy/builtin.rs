//! The built-in policies, compiled from `plugins/` by host/build.rs and embedded in the binary.

/// The `source` of a policy loaded from the binary (not from `policies.dir`).
pub const SOURCE: &str = "built-in";

/// Names of the built-in policies.
pub const NAMES: [&str; 7] =
    ["field-merge", "compare-and-set", "version-wins", "append-only", "tombstone-wins", "max-wins", "text-merge"];

/// The component bytes of a built-in policy.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "field-merge" => include_bytes!(concat!(env!("OUT_DIR"), "/policies/field-merge.wasm")),
        "compare-and-set" => include_bytes!(concat!(env!("OUT_DIR"), "/policies/compare-and-set.wasm")),
        "version-wins" => include_bytes!(concat!(env!("OUT_DIR"), "/policies/version-wins.wasm")),
        "append-only" => include_bytes!(concat!(env!("OUT_DIR"), "/policies/append-only.wasm")),
        "tombstone-wins" => include_bytes!(concat!(env!("OUT_DIR"), "/policies/tombstone-wins.wasm")),
        "max-wins" => include_bytes!(concat!(env!("OUT_DIR"), "/policies/max-wins.wasm")),
        "text-merge" => include_bytes!(concat!(env!("OUT_DIR"), "/policies/text-merge.wasm")),
        _ => return None,
    })
}
