//! A new policy author's path: `accord policy new` writes a crate that builds
//! as it is (locked), `policy test` passes its cases without leaving a cache in
//! the crate, and a config file's relative paths resolve against its folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{cli, run_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_accord");

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_new_policy_builds_tests_and_deploys_from_a_config_elsewhere() {
    if crate::support::sqlite_only("no server is involved") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = cli(&["policy", "new", "notes-lww", "--dir", tmp.path().to_str().unwrap()], &[], None);
    assert!(out.status.success(), "{}", text(&out));
    let krate = tmp.path().join("notes-lww");
    assert!(text(&out).contains("policy test target/wasm32-wasip2/release/notes_lww.wasm cases.json"));
    let again = cli(&["policy", "new", "notes-lww", "--dir", tmp.path().to_str().unwrap()], &[], None);
    assert!(!again.status.success() && text(&again).contains("already exists"));

    // Builds as written, with the versions its lockfile pins.
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "--release", "--target", "wasm32-wasip2", "--locked"])
        .env("CARGO_TARGET_DIR", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-new-target"));
    let (ok, output) = run_bounded(build, &krate, Duration::from_secs(900));
    assert!(ok, "the new crate does not build:\n{output}");
    let wasm =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-new-target/wasm32-wasip2/release/notes_lww.wasm");
    assert!(wasm.is_file());

    // Its cases pass through the real runtime; nothing is cached inside the crate.
    let home = tempfile::tempdir().unwrap();
    let mut test = Command::new(BIN);
    test.args(["policy", "test"]).arg(&wasm).arg("cases.json").current_dir(&krate);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ACCORD_") || k == "XDG_CACHE_HOME") {
        test.env_remove(k);
    }
    test.env("HOME", home.path());
    let out = test.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(" 0 failed"), "{}", text(&out));
    assert!(!krate.join("data").exists(), "policy test left a cache in the author's crate");
    assert!(home.path().join(".cache/accord/policy-cache").is_dir(), "the cache goes to the user's cache folder");

    // Deployed next to a config file in another folder than the working directory.
    let conf = tmp.path().join("server");
    std::fs::create_dir_all(conf.join("policies")).unwrap();
    std::fs::copy(&wasm, conf.join("policies/notes-lww.wasm")).unwrap();
    let config = |policy: &str| {
        format!(
            "[database]\npath = \"db/accord.db\"\n[policies]\ndir = \"policies\"\n[entities.notes]\npolicy = \"{policy}\"\n"
        )
    };
    std::fs::write(conf.join("config.toml"), config("notes-lww")).unwrap();
    let elsewhere = tmp.path();
    let check = |cwd: &Path| cli(&["check-config", "--config", "server/config.toml"], &[], Some(cwd));
    let out = check(elsewhere);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    let expected = conf.join("policies/notes-lww.wasm");
    assert!(shown.contains(&format!("notes: notes-lww ({})", expected.display())), "{shown}");
    assert!(shown.contains(&conf.join("db/accord.db").display().to_string()), "{shown}");
    // A policy that is not there is named with the full path looked at.
    std::fs::write(conf.join("config.toml"), config("notes-typo")).unwrap();
    let out = check(elsewhere);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let missing = std::path::absolute(conf.join("policies/notes-typo.wasm")).unwrap();
    assert!(text(&out).contains(&missing.display().to_string()), "{}", text(&out));

    // `keys create` says which database it wrote to.
    std::fs::write(conf.join("config.toml"), config("notes-lww")).unwrap();
    let out = cli(
        &["keys", "create", "--config", "server/config.toml", "--user", "ana", "--name", "k"],
        &[],
        Some(elsewhere),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&conf.join("db/accord.db").display().to_string()));
}
