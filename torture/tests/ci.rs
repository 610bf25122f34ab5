//! The CI-sized torture run, against the debug `accord` binary: 200 small
//! convergence seeds (plus the regression seeds), 20 crash cycles and a run
//! through the fault proxy. `ACCORD_BIN` picks another binary.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use accord_torture::converge::{self, ConvergeOpts, REGRESSION_OPS, REGRESSION_SEEDS};
use accord_torture::crash::{self, CrashOpts};
use accord_torture::server::ServerOpts;

/// The accord binary: `ACCORD_BIN`, else `debug/accord` in this test's target
/// directory, built with `cargo build -p accord` if it is missing.
fn accord_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("ACCORD_BIN") {
            return PathBuf::from(bin);
        }
        // target/debug/deps/ci-<hash> → target/debug/accord
        let exe = std::env::current_exe().expect("test executable path");
        let debug = exe.parent().and_then(|deps| deps.parent()).expect("target/debug");
        let bin = debug.join("accord");
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status =
                Command::new(cargo).args(["build", "-p", "accord"]).status().expect("run cargo build -p accord");
            assert!(status.success(), "cargo build -p accord failed");
        }
        assert!(bin.exists(), "no accord binary at {}", bin.display());
        bin
    })
    .clone()
}

/// One scenario at a time: each restarts servers and opens thousands of
/// connections, and run side by side on a small machine they would measure
/// each other (and could race for a just-freed port) rather than the server.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

fn converge_opts(seeds: std::ops::Range<u64>, faults: bool) -> ConvergeOpts {
    ConvergeOpts { seeds, devices: 3, ops: 60, jobs: 4, faults, max_secs: 240, max_failures: 5 }
}

#[test]
fn converge_200_seeds() {
    let _serial = one_at_a_time();
    let opts = converge_opts(0..200, false);
    let report = runtime()
        .block_on(converge::run(ServerOpts::new(accord_bin(), None), opts.clone()))
        .unwrap_or_else(|e| panic!("converge: {e}"));
    report.print(&opts, &accord_bin().display().to_string());
    assert!(report.failures.is_empty(), "{} seeds failed (see above)", report.failures.len());
    assert_eq!(report.seeds_run, 200, "every seed ran");
}

#[test]
fn converge_regression_seeds() {
    let _serial = one_at_a_time();
    for &seed in REGRESSION_SEEDS {
        let opts = ConvergeOpts { ops: REGRESSION_OPS, ..converge_opts(seed..seed + 1, false) };
        let report = runtime()
            .block_on(converge::run(ServerOpts::new(accord_bin(), None), opts.clone()))
            .unwrap_or_else(|e| panic!("converge: {e}"));
        report.print(&opts, &accord_bin().display().to_string());
        assert!(report.failures.is_empty(), "regression seed {seed} failed");
    }
}

#[test]
fn crash_20_cycles() {
    let _serial = one_at_a_time();
    let opts = CrashOpts { cycles: 20, clients: 3, seed: 7, max_uptime_ms: 400, max_secs: 240 };
    let report = runtime()
        .block_on(crash::run(ServerOpts::new(accord_bin(), None), opts.clone()))
        .unwrap_or_else(|e| panic!("crash: {e}"));
    report.print(&opts);
    assert_eq!(report.cycles, 20, "every cycle ran");
    assert!(report.pushes_acked > 0, "devices pushed between kills");
}

#[test]
fn faults_exactly_once() {
    let _serial = one_at_a_time();
    let opts = converge_opts(1000..1060, true);
    let report = runtime()
        .block_on(converge::run(ServerOpts::new(accord_bin(), None), opts.clone()))
        .unwrap_or_else(|e| panic!("faults: {e}"));
    report.print(&opts, &accord_bin().display().to_string());
    assert!(report.failures.is_empty(), "{} seeds failed through the fault proxy", report.failures.len());
    assert!(report.faults_injected > 0, "the proxy injected faults");
}
