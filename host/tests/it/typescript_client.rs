//! Runs the TypeScript client's own suite (clients/typescript: `npm test`, Node tests and headless
//! Chromium) against the `accord` binary built with this test, so `cargo test --workspace` covers it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::run_bounded as run;

#[test]
fn typescript_client_suite_passes_against_this_accord() {
    if crate::support::sqlite_only("the TypeScript suite starts its own SQLite servers; one run covers it") {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript");
    let node = Command::new("node").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let major: u32 = node
        .as_deref()
        .unwrap_or("")
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .unwrap_or("")
        .parse()
        .unwrap_or(0);
    assert!(
        major >= 20,
        "the TypeScript client tests need Node.js 20+ as `node` on PATH (found {node:?}); .ci/run installs what is missing"
    );
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the TypeScript client's browser test needs Debian's chromium at {chromium} (apt-get install chromium, or set CHROMIUM_BIN)"
    );
    if !dir.join("node_modules").exists() {
        let mut ci = Command::new("npm");
        ci.args(["ci", "--no-audit", "--no-fund"]).env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
        let (ok, output) = run(ci, &dir, Duration::from_secs(300));
        assert!(ok, "npm ci in {} failed:\n{output}", dir.display());
    }
    let mut test = Command::new("npm");
    test.arg("test").env("ACCORD_BIN", env!("CARGO_BIN_EXE_accord")).env("CHROMIUM_BIN", &chromium);
    let (ok, output) = run(test, &dir, Duration::from_secs(600));
    assert!(ok, "npm test in {} failed:\n{output}", dir.display());
    assert!(output.contains("# fail 0") && !output.contains("\nnot ok"), "unexpected npm test output:\n{output}");
}
