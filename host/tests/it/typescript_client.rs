//! Runs the TypeScript client's own suite (clients/typescript: `npm test`, Node tests and headless
//! Chromium) against the `accord` binary built with this test, so `cargo test --workspace` covers it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` in `dir`, killing it after `limit`; returns whether it succeeded and its output.
fn run(mut cmd: Command, dir: &Path, limit: Duration) -> (bool, String) {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = format!("{}\n{}", out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) => (status.success(), output),
        None => (false, format!("{what} did not finish within {limit:?}\n{output}")),
    }
}

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
