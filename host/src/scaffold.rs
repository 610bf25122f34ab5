//! `accord policy new NAME`: writes a policy crate that builds as it is —
//! the template's rule and cases, a copy of the SDK and the WIT contract (so
//! no path back into an Accord checkout is needed), and a lockfile (so no
//! version floats and nothing is resolved afresh).

use std::path::{Path, PathBuf};

const CARGO_TOML: &str = include_str!("../templates/policy-rust/Cargo.toml");
const CARGO_LOCK: &str = include_str!("../templates/policy-rust/Cargo.lock");
const README: &str = include_str!("../templates/policy-rust/README.md");
const GITIGNORE: &str = include_str!("../templates/policy-rust/gitignore");
const SDK_CARGO_TOML: &str = include_str!("../templates/policy-rust/sdk.Cargo.toml");
const SDK_LIB: &str = include_str!("../../plugins/sdk/src/lib.rs");
const SDK_MERGE: &str = include_str!("../../plugins/sdk/src/merge.rs");
const SDK_FIELD_MERGE: &str = include_str!("../../plugins/sdk/src/field_merge.rs");
const SDK_FIELDS: &str = include_str!("../../plugins/sdk/src/fields.rs");
const SDK_TEXT: &str = include_str!("../../plugins/sdk/src/text.rs");
const WIT: &str = include_str!("../../wit/merge.wit");
const RULE: &str = include_str!("../../examples/custom-policy/src/lib.rs");
const CASES: &str = include_str!("../../examples/custom-policy/cases.json");

/// Why a crate could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "`{0}` is not a usable policy name: use lowercase letters, digits and `-`, starting with a letter (it names the crate and the .wasm file)"
    )]
    Name(String),
    #[error("{0} already exists; choose another name or folder")]
    Exists(PathBuf),
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Writes the crate `name` into `parent/name`; returns its folder.
pub fn new_policy(parent: &Path, name: &str) -> Result<PathBuf, ScaffoldError> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(ScaffoldError::Name(name.to_string()));
    }
    let root = parent.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let file = name.replace('-', "_");
    let fill = |text: &str| text.replace("{{name}}", name).replace("{{file}}", &file);
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("Cargo.lock", CARGO_LOCK.replace("name = \"my-policy\"", &format!("name = \"{name}\""))),
        ("README.md", fill(README)),
        (".gitignore", GITIGNORE.to_string()),
        ("src/lib.rs", RULE.to_string()),
        ("cases.json", CASES.to_string()),
        ("sdk/Cargo.toml", SDK_CARGO_TOML.to_string()),
        // In the copy the contract sits beside the SDK.
        ("sdk/src/lib.rs", SDK_LIB.replace("path: \"../../wit\"", "path: \"wit\"")),
        ("sdk/src/merge.rs", SDK_MERGE.to_string()),
        ("sdk/src/field_merge.rs", SDK_FIELD_MERGE.to_string()),
        ("sdk/src/fields.rs", SDK_FIELDS.to_string()),
        ("sdk/src/text.rs", SDK_TEXT.to_string()),
        ("sdk/wit/merge.wit", WIT.to_string()),
    ];
    for (path, text) in files {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ScaffoldError::Io(dir.to_path_buf(), e))?;
        }
        std::fs::write(&path, text).map_err(|e| ScaffoldError::Io(path.clone(), e))?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_make_a_crate_and_a_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for bad in ["", "My", "1x", "a b", "../x", "a_b", "x.wasm"] {
            assert!(matches!(new_policy(dir.path(), bad), Err(ScaffoldError::Name(_))), "{bad:?}");
        }
        let root = new_policy(dir.path(), "notes-lww").unwrap_or_else(|e| panic!("{e}"));
        let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
        assert!(lock.contains("name = \"notes-lww\""));
        let sdk = std::fs::read_to_string(root.join("sdk/src/lib.rs")).unwrap_or_default();
        assert!(sdk.contains("path: \"wit\"") && !sdk.contains("../../wit"), "the copied SDK finds its WIT");
        assert!(matches!(new_policy(dir.path(), "notes-lww"), Err(ScaffoldError::Exists(_))));
        // Every file of the SDK is copied (a new module must be added above).
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk/src");
        for entry in std::fs::read_dir(sdk).unwrap_or_else(|e| panic!("{e}")) {
            let name = entry.unwrap_or_else(|e| panic!("{e}")).file_name();
            assert!(root.join("sdk/src").join(&name).is_file(), "the SDK's {name:?} is not copied by policy new");
        }
    }
}
