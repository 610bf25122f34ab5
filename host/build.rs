//! Build steps for the host:
//! - embeds `migrations/NNNN_name.sql` (SQLite) and `migrations/postgres/NNNN_name.sql`
//!   into the binary, in numeric order;
//! - compiles every policy component under `plugins/` (and the custom-policy
//!   template) for `wasm32-wasip2`, so the built-ins can be embedded and the
//!   tests load real components built from source.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Components built from source: (cargo package, file name under OUT_DIR/policies).
const COMPONENTS: &[(&str, &str)] = &[
    ("accord-policy-field-merge", "field-merge"),
    ("accord-policy-compare-and-set", "compare-and-set"),
    ("accord-policy-version-wins", "version-wins"),
    ("accord-policy-append-only", "append-only"),
    ("accord-policy-tombstone-wins", "tombstone-wins"),
    ("accord-policy-max-wins", "max-wins"),
    ("accord-policy-text-merge", "text-merge"),
    ("accord-fixture-hostile", "fixture-hostile"),
    ("accord-fixture-wrong-world", "fixture-wrong-world"),
    ("accord-fixture-v01", "fixture-v01"),
    ("accord-fixture-v02", "fixture-v02"),
    ("custom-policy", "custom-policy"),
];

fn main() {
    migrations();
    components();
}

fn migrations() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let mut out = embed(&manifest.join("../migrations"), "MIGRATIONS");
    out.push_str(&embed(&manifest.join("../migrations/postgres"), "PG_MIGRATIONS"));
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    std::fs::write(dest, out).expect("write migrations.rs");
}

/// The `NNNN_name.sql` files of `dir` as a Rust constant named `name`.
fn embed(dir: &Path, constant: &str) -> String {
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut found: Vec<(u32, String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).expect("migrations folder exists") {
        let path = entry.expect("readable migrations entry").path();
        if path.is_dir() {
            continue;
        }
        println!("cargo::rerun-if-changed={}", path.display());
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = file.strip_suffix(".sql") else { continue };
        let (num, name) = stem.split_once('_').unwrap_or_else(|| panic!("migration {file}: expected NNNN_name.sql"));
        let version: u32 = num.parse().unwrap_or_else(|_| panic!("migration {file}: {num} is not a number"));
        found.push((version, name.to_string(), path.canonicalize().expect("canonical migration path")));
    }
    found.sort();
    for pair in found.windows(2) {
        assert!(pair[0].0 != pair[1].0, "two migrations share number {}", pair[0].0);
    }
    let mut out = format!("pub(crate) const {constant}: &[Migration] = &[\n");
    for (version, name, path) in &found {
        writeln!(
            out,
            "    Migration {{ version: {version}, name: {name:?}, sql: include_str!({:?}) }},",
            path.display().to_string()
        )
        .expect("write to String");
    }
    out.push_str("];\n");
    out
}

fn components() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("host/ is inside the workspace").to_path_buf();
    for watched in ["plugins", "wit", "examples/custom-policy", "Cargo.lock"] {
        println!("cargo::rerun-if-changed={}", root.join(watched).display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // `cargo fuzz` builds on nightly, which may lack the wasm target: it reuses
    // the components a stable build made (fuzz/README.md).
    println!("cargo::rerun-if-env-changed=ACCORD_PREBUILT_COMPONENTS");
    if let Ok(prebuilt) = std::env::var("ACCORD_PREBUILT_COMPONENTS") {
        copy_components(Path::new(&prebuilt), &out.join("policies"));
        return;
    }
    // A target dir of its own: the outer build holds the lock on the usual one.
    let target = wasm_target_dir(&out);
    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--locked", "--profile", "plugin", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER");
    for (package, _) in COMPONENTS {
        cmd.args(["-p", package]);
    }
    let status = cmd.status().expect("run cargo to build the policy components");
    assert!(status.success(), "building the policy components for wasm32-wasip2 failed (see the output above)");
    copy_components(&target.join("wasm32-wasip2/plugin"), &out.join("policies"));
}

/// Copies the built components from `built` (cargo's output folder) into `dest`
/// under their policy names, and tells the crate where they are.
fn copy_components(built: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("create OUT_DIR/policies");
    for (package, name) in COMPONENTS {
        let file = built.join(format!("{}.wasm", package.replace('-', "_")));
        std::fs::copy(&file, dest.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    }
    println!("cargo::rustc-env=BUILT_COMPONENTS_DIR={}", dest.display());
}

/// `<target>/wasm-plugins`, next to the profile folders of the outer build, so
/// debug, release and clippy builds share one set of compiled components.
fn wasm_target_dir(out: &Path) -> PathBuf {
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    out.ancestors().nth(4).map_or_else(|| out.join("wasm-target"), |t| t.join("wasm-plugins"))
}

/// Installs the wasm32-wasip2 target with rustup when it is missing, so the
/// README's commands work on a fresh machine.
fn ensure_wasm_target() {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") => {}
        Ok(_) => {
            println!("cargo::warning=installing the wasm32-wasip2 target with rustup");
            let ok =
                Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status().is_ok_and(|s| s.success());
            assert!(ok, "`rustup target add wasm32-wasip2` failed; install the target and build again");
        }
        Err(_) => println!("cargo::warning=rustup not found; assuming the wasm32-wasip2 target is installed"),
    }
}
