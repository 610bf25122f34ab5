//! Policies in TypeScript and Python: examples/policy-ts (componentize-qjs, QuickJS)
//! and examples/policy-py (componentize-py) are built with their documented commands
//! and must pass `accord policy test` on the Rust template's own cases
//! (examples/custom-policy/cases.json), in the host's sandbox as it is.
//!
//! Each example is copied into the target dir and built there (npm ci / a
//! virtualenv with pinned packages), so the source tree stays clean; the
//! packages, the built component (keyed by the SHA-256 of the example's
//! sources) and the compiled artifacts are kept there, so a second run only
//! runs the cases.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::run_bounded;

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/custom-policy/cases.json");
/// The examples implement the 0.2 contract (the host loads 0.1, 0.2 and 0.3).
const WIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/v0.2/merge.wit");

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

fn work_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-languages").join(name)
}

/// Holds an exclusive lock on `name`'s build for as long as it lives: two
/// tests (threads of `cargo test`, or processes of nextest) need the same
/// component, and only one may stage and build it.
fn build_lock(name: &str) -> std::fs::File {
    let path = work_dir(name).with_extension("lock");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(&path).unwrap();
    file.lock().unwrap();
    file
}

/// Every file under `root` named by `entries` (files or folders), sorted, without caches.
fn sources(root: &Path, entries: &[&str]) -> Vec<PathBuf> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let path = root.join(rel);
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                let name = entry.unwrap().file_name();
                if name != "__pycache__" {
                    walk(root, &rel.join(name), out);
                }
            }
        } else {
            out.push(rel.to_path_buf());
        }
    }
    let mut out = Vec::new();
    for entry in entries {
        walk(root, Path::new(entry), &mut out);
    }
    out.sort();
    out
}

/// SHA-256 of the example's sources (names and contents).
fn digest(name: &str, entries: &[&str]) -> String {
    let src = example(name);
    let mut hash = Sha256::new();
    for rel in sources(&src, entries) {
        hash.update(rel.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update(std::fs::read(src.join(&rel)).unwrap());
        hash.update([0]);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies the example's sources into its work dir and returns their digest, or
/// `None` when the component built from exactly these sources is there already.
fn stage(name: &str, entries: &[&str]) -> Option<String> {
    let (src, work) = (example(name), work_dir(name));
    let stamp = work.join("dist/.sources-sha256");
    let digest = digest(name, entries);
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == digest) && work.join("dist/policy.wasm").is_file() {
        return None;
    }
    for entry in entries {
        let _ = std::fs::remove_dir_all(work.join(entry));
    }
    for rel in sources(&src, entries) {
        let to = work.join(&rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(&rel), &to).unwrap();
    }
    let _ = std::fs::remove_file(&stamp);
    Some(digest)
}

/// Records that `dist/policy.wasm` is built from the sources `digest` names.
fn mark_built(name: &str, digest: &str) {
    std::fs::write(work_dir(name).join("dist/.sources-sha256"), digest).unwrap();
}

/// `accord policy test COMPONENT CASES`, with the compiled-artifact cache in the target dir.
fn policy_test(component: &Path) -> String {
    let mut test = Command::new(env!("CARGO_BIN_EXE_accord"));
    test.args(["policy", "test"])
        .arg(component)
        .arg(CASES)
        .env_remove("ACCORD_CONFIG")
        .env("ACCORD_POLICIES__CACHE_DIR", work_dir("policy-cache"))
        // What the cases check is the decisions, not this machine's speed: under a
        // parallel test run the interpreters' first calls (lazy initialisation)
        // can pass the default 50 ms. BENCHMARKS.md has their cost per call.
        .env("ACCORD_POLICIES__CPU_MS", "5000");
    // Run from a folder without a config.toml: defaults plus the settings above.
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_bounded(test, dir.path(), Duration::from_secs(600));
    let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(CASES).unwrap()).unwrap();
    assert!(ok, "accord policy test {} failed:\n{out}", component.display());
    assert!(out.contains(&format!("{} cases, 0 failed", cases.len())), "unexpected output:\n{out}");
    assert_eq!(out.matches("PASS ").count(), cases.len(), "every case must state and meet an expectation:\n{out}");
    out
}

/// The names a component imports at its top level (its import section), read
/// from the binary: the component-model encoding's `importname'` and `externdesc`.
fn imports(component: &Path) -> Vec<String> {
    fn leb(b: &[u8], i: &mut usize) -> usize {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let byte = b[*i];
            *i += 1;
            value |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte < 0x80 {
                return value;
            }
        }
    }
    let b = std::fs::read(component).unwrap();
    assert_eq!(&b[..8], b"\0asm\x0d\0\x01\0", "{} is not a component", component.display());
    let (mut i, mut names) = (8, Vec::new());
    while i < b.len() {
        let id = b[i];
        i += 1;
        let size = leb(&b, &mut i);
        let end = i + size;
        if id == 10 {
            for _ in 0..leb(&b, &mut i) {
                let form = b[i];
                i += 1;
                let len = leb(&b, &mut i);
                names.push(String::from_utf8_lossy(&b[i..i + len]).into_owned());
                i += len;
                if form == 0x01 {
                    // A version suffix follows the name.
                    let len = leb(&b, &mut i);
                    i += len;
                }
                let kind = b[i];
                i += 1;
                match (kind, b[i]) {
                    // A core module (0x00 0x11 idx), a type equal to one (0x03 0x00 idx).
                    (0x00, _) | (0x03, 0x00) => {
                        i += 1;
                        leb(&b, &mut i);
                    }
                    // A new resource type (0x03 0x01).
                    (0x03, _) => i += 1,
                    // A function, value, component or instance: one index.
                    _ => {
                        leb(&b, &mut i);
                    }
                }
            }
        }
        i = end;
    }
    names
}

/// WASI is stubbed inside the component: it imports only the contract's types.
fn imports_nothing_but_the_contract(component: &Path) {
    let names = imports(component);
    assert!(
        names.iter().all(|n| n.starts_with("accord:merge/") || !n.contains(':')),
        "{} imports more than the contract: {names:?}",
        component.display()
    );
}

/// The examples carry a copy of the contract (so a copied folder builds); it must be the contract.
fn same_wit(name: &str) {
    let copy = std::fs::read_to_string(example(name).join("wit/merge.wit")).unwrap();
    assert_eq!(
        copy,
        std::fs::read_to_string(WIT).unwrap(),
        "examples/{name}/wit/merge.wit differs from wit/v0.2/merge.wit"
    );
}

// The sandbox (host/src/policy/sandbox.rs) bounds memory across all of an
// instance's memories and allows the core-instance and memory counts such
// components bring: componentize-qjs output has 3 memories (the engine's, plus
// empty ones in its module-loader and WASI stubs); componentize-py output
// instantiates 38 core modules (CPython, libc and its shared libraries, stubs).
// Both pass every case at the default `memory_mib` and `cpu_ms`.

/// examples/policy-ts built with `npm ci && npm run build`, in the target dir.
fn typescript_component() -> PathBuf {
    same_wit("policy-ts");
    let _building = build_lock("policy-ts");
    let entries = ["package.json", "package-lock.json", "tsconfig.json", "src", "wit"];
    let work = work_dir("policy-ts");
    if let Some(digest) = stage("policy-ts", &entries) {
        let lock = std::fs::read(work.join("package-lock.json")).unwrap();
        let installed = work.join("node_modules/.package-lock-source.json");
        if std::fs::read(&installed).ok().as_deref() != Some(&lock[..]) {
            let _ = std::fs::remove_dir_all(work.join("node_modules"));
            let mut ci = Command::new("npm");
            ci.args(["ci", "--no-audit", "--no-fund"]);
            let (ok, out) = run_bounded(ci, &work, Duration::from_secs(600));
            assert!(
                ok,
                "npm ci in {} failed (Node.js 20+ and npm needed; .ci/run installs them):\n{out}",
                work.display()
            );
            std::fs::write(&installed, &lock).unwrap();
        }
        let mut build = Command::new("npm");
        build.args(["run", "build"]);
        let (ok, out) = run_bounded(build, &work, Duration::from_secs(600));
        assert!(ok, "npm run build in {} failed:\n{out}", work.display());
        mark_built("policy-ts", &digest);
    }
    work.join("dist/policy.wasm")
}

/// examples/policy-py built with `./build.sh` (a virtualenv, pinned componentize-py), in the target dir.
fn python_component() -> PathBuf {
    same_wit("policy-py");
    let _building = build_lock("policy-py");
    let entries = ["build.sh", "requirements.txt", "src", "wit"];
    let work = work_dir("policy-py");
    if let Some(digest) = stage("policy-py", &entries) {
        let requirements = std::fs::read(work.join("requirements.txt")).unwrap();
        let installed = work.join(".venv/requirements-installed.txt");
        if std::fs::read(&installed).ok().as_deref() != Some(&requirements[..]) {
            let _ = std::fs::remove_dir_all(work.join(".venv"));
        }
        let mut build = Command::new("sh");
        build.arg("build.sh");
        let (ok, out) = run_bounded(build, &work, Duration::from_secs(900));
        assert!(ok, "build.sh in {} failed (Debian: apt-get install python3-venv):\n{out}", work.display());
        std::fs::write(&installed, &requirements).unwrap();
        mark_built("policy-py", &digest);
    }
    work.join("dist/policy.wasm")
}

#[test]
fn typescript_policy_builds_and_imports_nothing_but_the_contract() {
    if crate::support::sqlite_only("builds a component; no store involved") {
        return;
    }
    imports_nothing_but_the_contract(&typescript_component());
}

#[test]
fn python_policy_builds_and_imports_nothing_but_the_contract() {
    if crate::support::sqlite_only("builds a component; no store involved") {
        return;
    }
    imports_nothing_but_the_contract(&python_component());
}

#[test]
fn typescript_policy_passes_the_rust_templates_cases() {
    if crate::support::sqlite_only("runs a component; no store involved") {
        return;
    }
    policy_test(&typescript_component());
}

#[test]
fn python_policy_passes_the_rust_templates_cases() {
    if crate::support::sqlite_only("runs a component; no store involved") {
        return;
    }
    policy_test(&python_component());
}
