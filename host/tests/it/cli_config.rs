//! Configuration layering and the `serve` process lifecycle.

use std::process::Command;
use std::time::Duration;

use crate::support::{cli, spawn_serve};

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn defaults_apply_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&["check-config"], &[], Some(dir.path()));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("server.bind = 127.0.0.1:8080"), "{text}");
    assert!(text.contains("database.path = ./data/accord.db"), "{text}");
}

#[test]
fn file_then_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "[server]\nbind = \"127.0.0.1:9001\"\n[database]\npath = \"/tmp/from-file.db\"\n").unwrap();
    // ./config.toml in the working directory is found on its own.
    let out = cli(&["check-config"], &[], Some(dir.path()));
    assert!(stdout_of(&out).contains("127.0.0.1:9001"), "{}", stdout_of(&out));
    // The environment beats the file.
    let out = cli(&["check-config"], &[("ACCORD_SERVER__BIND", "127.0.0.1:9002")], Some(dir.path()));
    let text = stdout_of(&out);
    assert!(text.contains("127.0.0.1:9002") && text.contains("/tmp/from-file.db"), "{text}");
    // ACCORD_CONFIG and --config name the file explicitly.
    let other = tempfile::tempdir().unwrap();
    let path = file.to_str().unwrap();
    let out = cli(&["check-config"], &[("ACCORD_CONFIG", path)], Some(other.path()));
    assert!(stdout_of(&out).contains("127.0.0.1:9001"));
    let out = cli(&["check-config", "--config", path], &[], Some(other.path()));
    assert!(stdout_of(&out).contains("127.0.0.1:9001"));
}

#[test]
fn a_wrong_key_or_value_stops_startup_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accord.toml");
    let path = file.to_str().unwrap();

    std::fs::write(&file, "[server]\nbnid = \"127.0.0.1:9001\"\n").unwrap();
    for cmd in ["check-config", "serve", "migrate"] {
        let out = cli(&[cmd, "--config", path], &[], Some(dir.path()));
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = stderr_of(&out);
        assert!(err.contains("bnid") && err.contains("accord.toml"), "{err}");
    }

    std::fs::write(&file, "[database]\nsynchronous = \"sometimes\"\n").unwrap();
    let out = cli(&["check-config", "--config", path], &[], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("database.synchronous"), "{}", stderr_of(&out));

    std::fs::write(&file, "[sevrer]\n").unwrap();
    let out = cli(&["check-config", "--config", path], &[], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("sevrer"));

    let out = cli(&["check-config"], &[("ACCORD_SERVER__BIND", "not-an-address")], Some(dir.path()));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("server.bind") && err.contains("ACCORD_"), "{err}");

    let out = cli(&["check-config", "--config", "/nonexistent/accord.toml"], &[], None);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn serve_on_defaults_then_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = spawn_serve(dir.path(), &[("ACCORD_SERVER__BIND", "127.0.0.1:0")]);
    let r = reqwest::get(format!("http://{}/healthz", served.addr)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(dir.path().join("data/accord.db").exists(), "default database created under ./data");
    let status = Command::new("kill").args(["-TERM", &served.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = served.child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn entity_declarations_are_checked_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accord.toml");
    let path = file.to_str().unwrap();
    let cases = [
        ("[entities.a]\nrefs = { bId = \"b\" }\n[entities.b]\nrefs = { aId = \"a\" }\n", "cycle"),
        ("[entities.a]\nrefs = { bId = \"nowhere\" }\n", "entities.a.refs.bId"),
        ("[entities.a]\npolicy = \"coin-flip\"\n", "entities.a.policy"),
        ("[entities.a]\nrefz = {}\n", "refz"),
    ];
    for (text, needle) in cases {
        std::fs::write(&file, text).unwrap();
        let out = cli(&["check-config", "--config", path], &[], None);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(stderr_of(&out).contains(needle), "{text}: {}", stderr_of(&out));
    }
    // A file that declares entities replaces the built-in eight.
    std::fs::write(&file, "[entities.notes]\n[entities.tags]\nrefs = { noteId = \"notes\" }\n").unwrap();
    let out = cli(&["check-config", "--config", path], &[], None);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("entities = notes, tags"), "{}", stdout_of(&out));
    let out = cli(&["check-config"], &[], Some(dir.path()));
    assert!(stdout_of(&out).contains("contexts, imageBlobs, notebooks, pages"), "{}", stdout_of(&out));
}

/// The shipped `config.toml` documents the built-in defaults: loading it
/// changes nothing, section by section (entity declarations included).
#[test]
fn the_shipped_config_toml_is_the_built_in_defaults() {
    let shipped = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml"));
    let mut loaded = accord::config::Config::load(Some(shipped)).unwrap();
    let defaults = accord::config::Config::default();
    // Relative paths in the file are taken relative to its folder.
    let folder = std::path::absolute(shipped.parent().unwrap()).unwrap();
    for (path, default) in
        [(&mut loaded.database.path, &defaults.database.path), (&mut loaded.policies.dir, &defaults.policies.dir)]
    {
        assert_eq!(*path, folder.join(default));
        path.clone_from(default);
    }
    let (loaded, defaults) = (serde_json::to_value(&loaded).unwrap(), serde_json::to_value(&defaults).unwrap());
    for (section, value) in defaults.as_object().unwrap() {
        assert_eq!(&loaded[section], value, "config.toml's [{section}] differs from the built-in defaults");
    }
}
