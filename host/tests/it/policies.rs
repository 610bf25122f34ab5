//! Merge policies through the real WebAssembly runtime: built-ins, hostile
//! components, hot swap, and the author tools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use accord::config::{Config, EntityConfig};
use serde_json::{Value, json};

use crate::support::{TestServer, cli, expect_problem, pull_all, push_ok, results, test_config};

/// Where host/build.rs put the components it built from plugins/.
fn component(name: &str) -> PathBuf {
    Path::new(env!("BUILT_COMPONENTS_DIR")).join(format!("{name}.wasm"))
}

fn entity(policy: &str, settings: Value) -> EntityConfig {
    EntityConfig {
        policy: Some(policy.into()),
        policy_settings: settings.as_object().cloned(),
        ..EntityConfig::default()
    }
}

fn rec(id: &str, version: i64, base: i64, data: Value) -> Value {
    json!({"id": id, "version": version, "baseVersion": base, "data": data})
}

async fn push_one(server: &TestServer, key: &str, ty: &str, record: Value) -> Value {
    let r = push_ok(server, key, &json!({"changes": {ty: [record]}})).await;
    results(&r, ty)[0].clone()
}

#[tokio::test]
async fn built_in_policies_decide_as_documented() {
    let server = TestServer::start_with(|c| {
        c.entities = BTreeMap::from([
            ("notes".to_string(), entity("field-merge", json!({}))),
            ("logs".to_string(), entity("append-only", json!({}))),
            ("links".to_string(), entity("tombstone-wins", json!({}))),
            ("scores".to_string(), entity("max-wins", json!({"field": "score"}))),
            ("strict".to_string(), entity("compare-and-set", json!({}))),
            ("legacy".to_string(), entity("version-wins", json!({}))),
        ]);
    })
    .await;
    let key = server.cli_key("alice", &[]);

    // field-merge: disjoint edits merge, the same field edited twice conflicts.
    assert_eq!(
        push_one(&server, &key, "notes", rec("n1", 1, 0, json!({"title": "t", "body": "b"}))).await["status"],
        "applied"
    );
    assert_eq!(
        push_one(&server, &key, "notes", rec("n1", 2, 1, json!({"title": "T", "body": "b"}))).await["status"],
        "applied"
    );
    let r = push_one(&server, &key, "notes", rec("n1", 2, 1, json!({"title": "t", "body": "B"}))).await;
    assert_eq!(r["status"], "merged", "{r}");
    assert_eq!(r["record"]["data"], json!({"title": "T", "body": "B"}));
    assert_eq!(r["serverVersion"], 3);
    let r = push_one(&server, &key, "notes", rec("n1", 2, 1, json!({"title": "mine", "body": "b"}))).await;
    assert_eq!(r["status"], "conflict");
    assert!(r["reason"].as_str().unwrap().contains("title"), "{r}");
    // Unknown base (never seen) and different data: conflict.
    let r = push_one(&server, &key, "notes", rec("n1", 9, 0, json!({"title": "other"}))).await;
    assert_eq!(r["status"], "conflict");

    // append-only: the same content again is fine, a changed copy is a conflict.
    push_one(&server, &key, "logs", rec("l1", 1, 0, json!({"line": "started"}))).await;
    assert_eq!(
        push_one(&server, &key, "logs", rec("l1", 1, 0, json!({"line": "started"}))).await["status"],
        "unchanged"
    );
    assert_eq!(push_one(&server, &key, "logs", rec("l1", 2, 1, json!({"line": "edited"}))).await["status"], "conflict");

    // tombstone-wins: a stale delete still wins; a stale edit of a deleted record loses.
    push_one(&server, &key, "links", rec("k1", 1, 0, json!({"a": 1}))).await;
    push_one(&server, &key, "links", rec("k1", 2, 1, json!({"a": 2}))).await;
    let r =
        push_one(&server, &key, "links", json!({"id": "k1", "version": 2, "baseVersion": 1, "deleted": true})).await;
    assert_eq!(r["status"], "applied");
    assert_eq!(push_one(&server, &key, "links", rec("k1", 3, 2, json!({"a": 3}))).await["status"], "conflict");

    // max-wins: the greater score stays; a lower one gets the server's record back.
    push_one(&server, &key, "scores", rec("s1", 1, 0, json!({"score": 10}))).await;
    let r = push_one(&server, &key, "scores", rec("s1", 2, 0, json!({"score": 4}))).await;
    assert_eq!(r["status"], "merged");
    assert_eq!(r["record"]["data"]["score"], 10);
    // A merge that keeps the server's record as it is writes no new version
    // (no change for every device to pull).
    assert_eq!(r["serverVersion"], 1, "{r}");
    assert_eq!(r["record"]["version"], 1, "{r}");
    let r = push_one(&server, &key, "scores", rec("s1", 2, 1, json!({"score": 7}))).await;
    assert_eq!((r["status"].as_str(), r["serverVersion"].as_i64()), (Some("merged"), Some(1)), "{r}");
    assert_eq!(push_one(&server, &key, "scores", rec("s1", 2, 0, json!({"score": 40}))).await["status"], "applied");

    // compare-and-set and version-wins.
    push_one(&server, &key, "strict", rec("c1", 1, 0, json!({"v": 1}))).await;
    assert_eq!(push_one(&server, &key, "strict", rec("c1", 5, 0, json!({"v": 2}))).await["status"], "conflict");
    assert_eq!(push_one(&server, &key, "strict", rec("c1", 2, 1, json!({"v": 2}))).await["status"], "applied");
    push_one(&server, &key, "legacy", rec("v1", 3, 0, json!({"v": 1}))).await;
    assert_eq!(push_one(&server, &key, "legacy", rec("v1", 2, 0, json!({"v": 2}))).await["status"], "conflict");
    assert_eq!(push_one(&server, &key, "legacy", rec("v1", 7, 0, json!({"v": 2}))).await["status"], "applied");
}

/// A server whose `evil_<mode>` entity types run the hostile fixture in that mode.
async fn hostile_server(modes: &[&str]) -> TestServer {
    let modes: Vec<String> = modes.iter().map(|m| m.to_string()).collect();
    TestServer::start_with(move |c| {
        let dir = c.database.path.parent().unwrap().join("policies");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(component("fixture-hostile"), dir.join("hostile.wasm")).unwrap();
        c.policies.dir = dir;
        // The CPU bound is wall time between epoch ticks: on a loaded machine the
        // memory fixture could meet a tight one before its memory limit.
        c.policies.cpu_ms = 1000;
        c.entities = modes
            .iter()
            .map(|m| (format!("evil_{}", m.replace('-', "_")), entity("hostile", json!({"mode": m}))))
            .collect();
    })
    .await
}

#[tokio::test]
async fn hostile_policies_are_bounded_and_lose_nothing() {
    let modes = ["loop", "memory", "recursion", "huge", "trap", "invalid-json", "not-object"];
    let server = hostile_server(&modes).await;
    let key = server.cli_key("alice", &[]);
    for mode in modes {
        let ty = format!("evil_{}", mode.replace('-', "_"));
        // The misbehaving record is aimed by its data; the two around it are normal.
        let body = json!({"changes": {ty.clone(): [
            rec("before", 1, 0, json!({"n": 1})),
            rec("bad", 1, 0, json!({"hostile": true})),
            rec("after", 1, 0, json!({"n": 2})),
        ]}});
        let started = Instant::now();
        let r = push_ok(&server, &key, &body).await;
        let res = results(&r, &ty);
        assert_eq!(res[0]["status"], "applied", "{mode}: {r}");
        assert_eq!(res[2]["status"], "applied", "{mode}: {r}");
        assert_eq!(res[1]["status"], "conflict", "{mode}: {r}");
        let reason = res[1]["reason"].as_str().unwrap();
        assert!(reason.starts_with("policy failed: "), "{mode}: {reason}");
        eprintln!("{mode}: {reason} ({} ms)", started.elapsed().as_millis());
        let expected = match mode {
            "loop" => "CPU limit",
            "memory" => "memory",
            "recursion" => "stack",
            "huge" => "over the limit",
            "trap" => "unreachable",
            _ => "invalid output",
        };
        assert!(reason.contains(expected), "{mode}: {reason}");
        // The next call on the same policy works: the failed instance was replaced.
        let r = push_ok(&server, &key, &json!({"changes": {ty.clone(): [rec("next", 1, 0, json!({}))]}})).await;
        assert_eq!(results(&r, &ty)[0]["status"], "applied", "{mode}: {r}");
    }
    // Each failed record is kept in the conflicts table, never dropped.
    let list: Value = server.get("/api/sync/conflicts?limit=100", &key).send().await.unwrap().json().await.unwrap();
    let conflicts = list["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), modes.len());
    assert!(conflicts.iter().all(|c| c["incoming"]["data"]["hostile"] == true && c["server"].is_null()));
    assert_eq!(pull_all(&server, &key).await.len(), modes.len() * 3);
    let r = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The admin view counts calls and failures per policy.
    let admin = server.cli_key("alice", &["admin"]);
    let view: Value = server.get("/api/admin/policies", &admin).send().await.unwrap().json().await.unwrap();
    let first = &view["policies"][0];
    assert_eq!(first["policy"], "hostile");
    assert_eq!(first["failures"], modes.len() as u64);
    assert!(first["calls"].as_u64().unwrap() >= 4 * modes.len() as u64);
    assert_eq!(first["sha256"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn policies_get_no_files_clock_or_environment() {
    let server = hostile_server(&["always-snoop"]).await;
    let key = server.cli_key("alice", &[]);
    let r = push_one(&server, &key, "evil_always_snoop", rec("x", 1, 0, json!({}))).await;
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("file=Err"), "a file was readable: {reason}");
    assert!(reason.contains("clock=Some(0)"), "the clock is not frozen at the epoch: {reason}");
    assert!(reason.contains("env=0"), "environment variables leaked: {reason}");
}

#[tokio::test]
async fn broken_components_stop_startup_naming_the_entity_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(component("fixture-wrong-world"), policies.join("other.wasm")).unwrap();
    std::fs::write(policies.join("garbage.wasm"), b"\0asm not really").unwrap();
    for (name, needle) in [
        ("other", "implements none of accord:merge/policy@0.3.0"),
        ("garbage", "not a valid"),
        ("absent", "no policy named"),
    ] {
        let mut config: Config = test_config(dir.path());
        config.policies.dir = policies.clone();
        config.entities = BTreeMap::from([("things".to_string(), entity(name, json!({})))]);
        let err = accord::server::load_policies(&config).await.err().expect("must fail").to_string();
        assert!(err.contains("entities.things.policy") && err.contains(needle), "{err}");
    }
    // `accord policy check` says the same, with exit code 2.
    let out = cli(&["policy", "check", component("fixture-wrong-world").to_str().unwrap()], &[], None);
    assert_eq!(out.status.code(), Some(2));
    let out = cli(&["policy", "check", component("field-merge").to_str().unwrap()], &[], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_template_passes_its_cases() {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/custom-policy/cases.json");
    let out =
        cli(&["policy", "test", component("custom-policy").to_str().unwrap(), cases.to_str().unwrap()], &[], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("5 cases, 0 failed"), "{stdout}");
    // A wrong expectation fails with exit code 1.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"name": "wrong", "incoming": {"id": "a", "version": 1, "data": {}}, "expect": "reject"}]"#,
    )
    .unwrap();
    let out = cli(&["policy", "test", component("custom-policy").to_str().unwrap(), bad.to_str().unwrap()], &[], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
}

fn config_text(dir: &Path, pages_policy: &str) -> String {
    format!(
        "[policies]\ndir = {:?}\n[entities.pages]\npolicy = {pages_policy:?}\n",
        dir.join("policies").display().to_string()
    )
}

#[tokio::test]
async fn hot_swap_under_load_and_refusing_a_broken_component() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    let file = dir.path().join("accord.toml");
    std::fs::write(&file, config_text(dir.path(), "field-merge")).unwrap();
    let mut config = Config::load(Some(&file)).unwrap();
    config.database.path = dir.path().join("accord.db");
    let server = TestServer::start_in(dir, config).await;
    let key = server.cli_key("alice", &[]);
    let admin = server.cli_key("alice", &["admin"]);
    let r = server.get("/api/admin/policies", &key).send().await.unwrap();
    expect_problem(r, 403).await;

    // A stale edit with a higher version: field-merge (unknown base) says conflict, version-wins applies it.
    push_one(&server, &key, "pages", rec("probe", 1, 0, json!({"v": 0}))).await;
    let probe = |n: i64| rec("probe", 100 + n, 0, json!({"v": n}));

    let pusher = {
        let (client, url, key) = (server.client.clone(), server.url("/api/sync/push"), key.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut statuses = Vec::new();
            for i in 0..300 {
                if Instant::now() > deadline {
                    break;
                }
                let body = json!({"changes": {"pages": [{"id": format!("load-{i}"), "version": 1, "data": {"i": i}}]}});
                statuses
                    .push(client.post(&url).bearer_auth(&key).json(&body).send().await.map(|r| r.status().as_u16()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(push_one(&server, &key, "pages", probe(1)).await["status"], "conflict");

    // Switch pages to version-wins by editing the config file; the watcher or the endpoint reloads.
    std::fs::write(
        server.config.file.as_ref().unwrap(),
        config_text(server.config.file.as_ref().unwrap().parent().unwrap(), "version-wins"),
    )
    .unwrap();
    let r = server.post("/api/admin/reload", &admin, &json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    let pages = view["policies"].as_array().unwrap().iter().find(|p| p["entity"] == "pages").unwrap().clone();
    assert_eq!(pages["policy"], "version-wins");
    assert_eq!(push_one(&server, &key, "pages", probe(2)).await["status"], "applied", "decisions switched");

    // A corrupt component dropped into the policy dir is refused; the old policy keeps serving.
    let policy_dir = server.config.policies.dir.clone();
    std::fs::write(policy_dir.join("version-wins.wasm"), b"\0asm\x0d\0\x01\0 broken").unwrap();
    let r = server.post("/api/admin/reload", &admin, &json!({})).send().await.unwrap();
    let p = expect_problem(r, 422).await;
    assert!(p["detail"].as_str().unwrap().contains("version-wins.wasm"), "{p}");
    let view: Value = server.get("/api/admin/policies", &admin).send().await.unwrap().json().await.unwrap();
    let pages = view["policies"].as_array().unwrap().iter().find(|p| p["entity"] == "pages").unwrap().clone();
    assert_eq!(pages["source"], "built-in");
    assert_eq!(push_one(&server, &key, "pages", probe(3)).await["status"], "applied");

    let statuses = pusher.await.unwrap();
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|s| matches!(s, Ok(200))), "a push failed during the swap: {statuses:?}");
}

#[tokio::test]
async fn a_dropped_in_component_is_picked_up_by_the_file_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("policies");
    std::fs::create_dir_all(&policy_dir).unwrap();
    let mut config = test_config(dir.path());
    config.policies.dir = policy_dir.clone();
    config.entities = BTreeMap::from([("notes".to_string(), entity("house-rule", json!({})))]);
    // Start on a component file, then replace it with a different one.
    std::fs::copy(component("compare-and-set"), policy_dir.join("house-rule.wasm")).unwrap();
    let server = TestServer::start_in(dir, config).await;
    let key = server.cli_key("alice", &[]);
    let admin = server.cli_key("alice", &["admin"]);
    push_one(&server, &key, "notes", rec("n", 1, 0, json!({"v": 0}))).await;
    assert_eq!(push_one(&server, &key, "notes", rec("n", 5, 0, json!({"v": 1}))).await["status"], "conflict");

    std::fs::copy(component("version-wins"), policy_dir.join("house-rule.wasm")).unwrap();
    let expected = {
        use sha2::Digest as _;
        let bytes = std::fs::read(component("version-wins")).unwrap();
        sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view: Value = server.get("/api/admin/policies", &admin).send().await.unwrap().json().await.unwrap();
        if view["policies"][0]["sha256"] == expected.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "the watcher never reloaded: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(push_one(&server, &key, "notes", rec("n", 6, 0, json!({"v": 2}))).await["status"], "applied");
}

#[tokio::test]
async fn compiled_components_are_cached_and_a_bad_artifact_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let mut config: Config = test_config(dir.path());
    let cache = dir.path().join("cache");
    config.policies.cache_dir = Some(cache.clone());
    let artifacts = || {
        let mut names: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cwasm"))
            .collect();
        names.sort();
        names
    };
    accord::server::load_policies(&config).await.unwrap();
    let first = artifacts();
    // The default entities use four distinct built-ins.
    assert_eq!(first.len(), 4, "{first:?}");
    let stamp = |name: &str| std::fs::metadata(cache.join(name)).unwrap().modified().unwrap();
    let before: Vec<_> = first.iter().map(|n| stamp(n)).collect();
    accord::server::load_policies(&config).await.unwrap();
    assert_eq!(artifacts(), first, "a restart reuses the artifacts");
    assert_eq!(first.iter().map(|n| stamp(n)).collect::<Vec<_>>(), before, "nothing was recompiled");

    // A damaged artifact is discarded and rebuilt; the policies still load and work.
    std::fs::write(cache.join(&first[0]), b"not an artifact").unwrap();
    let policies = accord::server::load_policies(&config).await.unwrap();
    assert!(std::fs::metadata(cache.join(&first[0])).unwrap().len() > 1000);
    assert_eq!(policies.current().bindings.len(), 8);
}

#[tokio::test]
async fn sighup_reloads_the_policies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accord.toml");
    let db = crate::support::fresh_database(&dir.path().join("accord.db"));
    let write = |policy: &str| {
        let text = format!(
            "[database]\n{}\n[policies]\nwatch = false\ncache_dir = {:?}\n[entities.pages]\npolicy = {policy:?}\n",
            db.toml(),
            std::env::temp_dir().join("accord-test-policy-cache").display().to_string()
        );
        std::fs::write(&file, text).unwrap();
    };
    write("field-merge");
    let config = file.to_str().unwrap();
    let out = cli(
        &["keys", "create", "--user", "root", "--name", "admin", "--scope", "admin", "--config", config],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let served =
        crate::support::spawn_serve(dir.path(), &[("ACCORD_CONFIG", config), ("ACCORD_SERVER__BIND", "127.0.0.1:0")]);
    let client = reqwest::Client::new();
    let policy = || async {
        let view: Value = client
            .get(format!("http://{}/api/admin/policies", served.addr))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        view["policies"][0]["policy"].as_str().unwrap().to_string()
    };
    assert_eq!(policy().await, "field-merge");
    write("version-wins");
    std::process::Command::new("kill").args(["-HUP", &served.child.id().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while policy().await != "version-wins" {
        assert!(Instant::now() < deadline, "SIGHUP did not reload the policies");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn merges_and_conflicts_name_the_policy_that_decided_them_across_a_swap() {
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("policies");
    std::fs::create_dir_all(&policy_dir).unwrap();
    let mut config = test_config(dir.path());
    config.policies.dir = policy_dir.clone();
    config.entities = BTreeMap::from([("notes".to_string(), entity("house-rule", json!({})))]);
    std::fs::copy(component("field-merge"), policy_dir.join("house-rule.wasm")).unwrap();
    let server = TestServer::start_in(dir, config).await;
    let key = server.cli_key("alice", &[]);
    let admin = server.cli_key("alice", &["admin"]);
    let sha = |name: &str| {
        use sha2::Digest as _;
        let bytes = std::fs::read(component(name)).unwrap();
        sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let (field_merge, cas) = (sha("field-merge"), sha("compare-and-set"));
    let decided = |policy_sha: &str| json!({"policy": "house-rule", "sha256": policy_sha});

    push_one(&server, &key, "notes", rec("n", 1, 0, json!({"a": 1, "b": 1}))).await;
    push_one(&server, &key, "notes", rec("n", 2, 1, json!({"a": 2, "b": 1}))).await;
    let r = push_one(&server, &key, "notes", rec("n", 2, 1, json!({"a": 1, "b": 2}))).await;
    assert_eq!(r["status"], "merged", "{r}");
    let r = push_one(&server, &key, "notes", rec("n", 2, 1, json!({"a": 9, "b": 1}))).await;
    assert_eq!(r["status"], "conflict", "{r}");

    // The record's history: the merged version names the policy, the ones stored as sent do not.
    let h: Value = server.get("/api/sync/records/notes/n/history", &key).send().await.unwrap().json().await.unwrap();
    let versions = h["versions"].as_array().unwrap();
    assert_eq!(versions.iter().map(|v| v["version"].as_i64().unwrap()).collect::<Vec<_>>(), [3, 2, 1], "{h}");
    assert_eq!(versions[0]["decidedBy"], decided(&field_merge), "{h}");
    assert!(versions[1]["decidedBy"].is_null() && versions[2]["decidedBy"].is_null(), "{h}");
    for missing in ["/api/sync/records/notes/nope/history", "/api/sync/records/gadgets/n/history"] {
        expect_problem(server.get(missing, &key).send().await.unwrap(), 404).await;
    }
    // Another user's record is not there for them.
    let bob = server.cli_key("bob", &[]);
    expect_problem(server.get("/api/sync/records/notes/n/history", &bob).send().await.unwrap(), 404).await;

    // Swap the component; conflicts name the policy as it was when each was recorded.
    std::fs::copy(component("compare-and-set"), policy_dir.join("house-rule.wasm")).unwrap();
    let r = server.post("/api/admin/reload", &admin, &json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = push_one(&server, &key, "notes", rec("n", 3, 1, json!({"a": 5, "b": 1}))).await;
    assert_eq!(r["status"], "conflict", "{r}");
    let list: Value = server.get("/api/sync/conflicts?status=all", &key).send().await.unwrap().json().await.unwrap();
    let by: Vec<&Value> = list["conflicts"].as_array().unwrap().iter().map(|c| &c["decidedBy"]).collect();
    assert_eq!(by, [&decided(&field_merge), &decided(&cas)], "{list}");
}

#[tokio::test]
async fn a_candidate_policy_is_replayed_on_recorded_conflicts_from_the_cli_and_over_http() {
    let server = TestServer::start_with(|c| {
        c.entities = BTreeMap::from([("notes".to_string(), entity("field-merge", json!({})))]);
    })
    .await;
    let key = server.cli_key("alice", &[]);
    let admin = server.cli_key("alice", &["admin"]);
    push_one(&server, &key, "notes", rec("n", 1, 0, json!({"a": 1, "b": 1}))).await;
    push_one(&server, &key, "notes", rec("n", 2, 1, json!({"a": 2, "b": 1}))).await;
    // Two stale edits of `a`: conflicts under field-merge.
    for (version, a) in [(5, 3), (2, 4)] {
        let r = push_one(&server, &key, "notes", rec("n", version, 1, json!({"a": a, "b": 1}))).await;
        assert_eq!(r["status"], "conflict", "{r}");
    }
    // version-wins would have taken the higher version and kept the server's record against the lower.
    let wasm = std::fs::read(component("version-wins")).unwrap();
    let r = server
        .client
        .post(server.url("/api/admin/policies/replay?entity=notes&since=1d"))
        .bearer_auth(&admin)
        .body(wasm.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let report: accord::http::schema::ReplayReport = serde_json::from_str(&text).unwrap();
    assert_eq!((report.conflicts, report.skipped, report.truncated), (2, 0, false), "{text}");
    assert_eq!(report.accepted, 1, "{text}");
    assert_eq!(report.accepted + report.merged + report.conflict + report.rejected, 2, "{text}");
    let taken = &report.samples.accepted[0];
    assert_eq!(taken.record_id, "n");
    let a: Vec<_> = taken.fields.iter().map(|f| (f.field.as_str(), &f.server, &f.incoming)).collect();
    assert_eq!(a, [("a", &json!(2), &json!(3))], "{text}");
    assert_eq!(taken.fields[0].result, Some(json!(3)));
    // Nothing was written: the conflicts are still open, the record unchanged.
    let list: Value = server.get("/api/sync/conflicts", &key).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["conflicts"].as_array().unwrap().len(), 2);

    // Refusals: not admin, a body that is not a component, bad query values.
    let post = |url: &str, k: &str, body: Vec<u8>| {
        server.client.post(server.url(url)).bearer_auth(k.to_string()).body(body).send()
    };
    expect_problem(post("/api/admin/policies/replay?entity=notes", &key, wasm.clone()).await.unwrap(), 403).await;
    expect_problem(post("/api/admin/policies/replay?entity=notes", &admin, b"not wasm".to_vec()).await.unwrap(), 422)
        .await;
    expect_problem(post("/api/admin/policies/replay?entity=gadgets", &admin, wasm.clone()).await.unwrap(), 422).await;
    for bad in ["?entity=notes&limit=0", "?entity=notes&since=soon", "?since=1d"] {
        let url = format!("/api/admin/policies/replay{bad}");
        expect_problem(post(&url, &admin, wasm.clone()).await.unwrap(), 400).await;
    }

    // The same report from the CLI, on the server's database.
    let conf = tempfile::tempdir().unwrap();
    let file = conf.path().join("config.toml");
    let db = server.db_env().toml();
    std::fs::write(&file, format!("[database]\n{db}\n[entities.notes]\npolicy = \"field-merge\"\n")).unwrap();
    let path = component("version-wins");
    let args = ["policy", "replay", path.to_str().unwrap(), "--entity", "notes", "--since", "7d"];
    let out = cli(&[&args[..], &["--config", file.to_str().unwrap()]].concat(), &[], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("on 2 conflicts of `notes`") && stdout.contains("accepted 1,"), "{stdout}");
    assert!(stdout.contains("a: server 2 / incoming 3 -> 3"), "{stdout}");
}

#[tokio::test]
async fn a_shadow_policy_is_counted_beside_the_live_one_and_never_changes_the_answer() {
    let server = TestServer::start_with(|c| {
        let dir = c.database.path.parent().unwrap().join("policies");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(component("fixture-hostile"), dir.join("hostile.wasm")).unwrap();
        c.policies.dir = dir;
        let mut notes = entity("field-merge", json!({}));
        notes.shadow_policy = Some("compare-and-set".into());
        // The hostile fixture loops on records carrying `"hostile": true` (field-merge ignores `mode`).
        let mut logs = entity("field-merge", json!({"mode": "loop"}));
        logs.shadow_policy = Some("hostile".into());
        c.entities = BTreeMap::from([("notes".to_string(), notes), ("logs".to_string(), logs)]);
    })
    .await;
    let key = server.cli_key("alice", &[]);
    let admin = server.cli_key("alice", &["admin"]);

    // New record: both accept. Disjoint stale edit: field-merge merges, compare-and-set would conflict.
    push_one(&server, &key, "notes", rec("n", 1, 0, json!({"a": 1, "b": 1}))).await;
    push_one(&server, &key, "notes", rec("n", 2, 1, json!({"a": 2, "b": 1}))).await;
    let r = push_one(&server, &key, "notes", rec("n", 2, 1, json!({"a": 1, "b": 2}))).await;
    assert_eq!(r["status"], "merged", "the live decision is the answer: {r}");

    let view: Value = server.get("/api/admin/policies", &admin).send().await.unwrap().json().await.unwrap();
    let notes = view["policies"].as_array().unwrap().iter().find(|p| p["entity"] == "notes").unwrap().clone();
    assert_eq!(notes["shadow"]["policy"], "compare-and-set", "{notes}");
    assert_eq!(notes["shadow"]["agreements"], json!({"accept": 2, "merged": 0, "conflict": 0, "reject": 0}));
    assert_eq!(notes["shadow"]["disagreements"], json!({"accept": 0, "merged": 1, "conflict": 0, "reject": 0}));
    let report: Value =
        server.get("/api/admin/policies/notes/shadow", &admin).send().await.unwrap().json().await.unwrap();
    let sample = report["sample"].as_array().unwrap();
    assert_eq!(sample.len(), 1, "{report}");
    assert_eq!((sample[0]["live"].as_str(), sample[0]["shadow"].as_str()), (Some("merged"), Some("conflict")));
    assert_eq!((sample[0]["recordId"].as_str(), sample[0]["userId"].as_str()), (Some("n"), Some("alice")));
    assert!(sample[0]["reason"].is_string(), "{report}");

    // A shadow that runs away is stopped at its CPU bound and counted; the push is the live decision.
    let r = push_one(&server, &key, "logs", rec("l", 1, 0, json!({"hostile": true}))).await;
    assert_eq!(r["status"], "applied", "{r}");
    let report: Value =
        server.get("/api/admin/policies/logs/shadow", &admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(report["disagreements"]["accept"], 1, "{report}");
    assert_eq!(report["sample"][0]["shadow"], "failed", "{report}");
    assert!(report["sample"][0]["reason"].as_str().unwrap().contains("CPU"), "{report}");
    // The shadow's metric, and no report for a type without a shadow.
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line =
        r#"accord_shadow_decisions_total{entity="notes",shadow="compare-and-set",live="merged",outcome="disagree"} 1"#;
    assert!(metrics.contains(line), "{metrics}");
    expect_problem(server.get("/api/admin/policies/nothing/shadow", &admin).send().await.unwrap(), 404).await;
    expect_problem(server.get("/api/admin/policies/notes/shadow", &key).send().await.unwrap(), 403).await;
}

#[tokio::test]
async fn frozen_contracts_keep_loading_0_2_adds_mode_and_fail_0_3_reads_input_on_demand() {
    let server = TestServer::start_with(|c| {
        let dir = c.database.path.parent().unwrap().join("policies");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(component("fixture-v01"), dir.join("old.wasm")).unwrap();
        std::fs::copy(component("fixture-v02"), dir.join("two.wasm")).unwrap();
        std::fs::copy(component("fixture-hostile"), dir.join("hostile.wasm")).unwrap();
        c.policies.dir = dir;
        // field-merge ignores `mode`; its shadow, the fixture, answers with the mode it was called in.
        let mut watched = entity("field-merge", json!({"mode": "echo-mode"}));
        watched.shadow_policy = Some("hostile".into());
        let mut watched_by_two = entity("field-merge", json!({"k": 1}));
        watched_by_two.shadow_policy = Some("two".into());
        c.entities = BTreeMap::from([
            ("olds".to_string(), entity("old", json!({}))),
            ("echoes".to_string(), entity("hostile", json!({"mode": "echo-mode"}))),
            ("watched".to_string(), watched),
            ("fails".to_string(), entity("hostile", json!({"mode": "fail"}))),
            ("inputs".to_string(), entity("hostile", json!({"mode": "echo-input"}))),
            ("twos".to_string(), entity("two", json!({"k": 1}))),
            ("twoshadowed".to_string(), watched_by_two),
        ]);
    })
    .await;
    let key = server.cli_key("alice", &[]);
    let admin = server.cli_key("alice", &["admin"]);

    // A 0.1 component (built against wit/v0.1) decides as it always did.
    assert_eq!(push_one(&server, &key, "olds", rec("o", 1, 0, json!({"t": 1}))).await["status"], "applied");
    let r = push_one(&server, &key, "olds", rec("o", 2, 1, json!({"t": 2}))).await;
    assert_eq!((r["status"].as_str(), &r["record"]["data"]), (Some("merged"), &json!({"t": 2, "via": "0.1"})), "{r}");
    let r = push_one(&server, &key, "olds", rec("o2", 1, 0, json!({"reject": true}))).await;
    assert_eq!(r["status"], "rejected", "{r}");
    let out = cli(&["policy", "check", component("fixture-v01").to_str().unwrap()], &[], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("implements accord:merge/policy@0.1.0"), "{out:?}");
    let out = cli(&["policy", "check", component("field-merge").to_str().unwrap()], &[], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("implements accord:merge/policy@0.3.0"), "{out:?}");
    // A 0.2 component (built against wit/v0.2) gets its whole input copied in, mode and all.
    let out = cli(&["policy", "check", component("fixture-v02").to_str().unwrap()], &[], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("implements accord:merge/policy@0.2.0"), "{out:?}");
    let r = push_one(&server, &key, "twos", rec("t", 1, 0, json!({"a": 1}))).await;
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("0.2 twos alice server=None base=None incoming=1 settings="), "{r}");
    assert!(reason.contains("\"k\":1") && reason.ends_with("mode=Mode::Live"), "{r}");
    let r = push_one(&server, &key, "twos", rec("t2", 1, 0, json!({"fail": true}))).await;
    assert_eq!(r["reason"], "policy failed: the 0.2 fixture was told to fail", "{r}");
    push_one(&server, &key, "twoshadowed", rec("s", 1, 0, json!({"a": 1}))).await;
    let shadow: Value =
        server.get("/api/admin/policies/twoshadowed/shadow", &admin).send().await.unwrap().json().await.unwrap();
    let reason = shadow["sample"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.ends_with("mode=Mode::Shadow"), "{shadow}");
    // (The TypeScript and Python examples are 0.2 components too: policy_languages.rs.)

    // 0.3: the policy reads each part of its input from the host, as it asks.
    let r = push_one(&server, &key, "inputs", rec("i", 1, 0, json!({"hostile": true}))).await;
    assert_eq!(r["reason"], "inputs alice server=None base=None incoming=1/0", "{r}");
    assert_eq!(push_one(&server, &key, "inputs", rec("i", 1, 0, json!({"t": 1}))).await["status"], "applied");
    let r = push_one(&server, &key, "inputs", rec("i", 2, 1, json!({"hostile": true}))).await;
    assert_eq!(r["reason"], "inputs alice server=Some(1) base=Some(1) incoming=2/1", "{r}");

    // 0.2 and later: the policy knows why it is called — live, as a shadow, in a replay.
    let r = push_one(&server, &key, "echoes", rec("e", 1, 0, json!({"hostile": true}))).await;
    assert_eq!((r["status"].as_str(), r["reason"].as_str()), (Some("conflict"), Some("called Live")), "{r}");
    push_one(&server, &key, "watched", rec("w", 1, 0, json!({"hostile": true}))).await;
    let shadow: Value =
        server.get("/api/admin/policies/watched/shadow", &admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(shadow["sample"][0]["reason"], "called Shadow", "{shadow}");
    let wasm = std::fs::read(component("fixture-hostile")).unwrap();
    let r = server
        .client
        .post(server.url("/api/admin/policies/replay?entity=echoes"))
        .bearer_auth(&admin)
        .body(wasm)
        .send()
        .await
        .unwrap();
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["samples"]["conflict"][0]["reason"], "called Replay", "{report}");

    // 0.2 `fail`: the host keeps the record as a conflict and counts a policy failure.
    push_one(&server, &key, "fails", rec("f", 1, 0, json!({"hostile": true}))).await;
    let r = push_one(&server, &key, "fails", rec("f2", 1, 0, json!({"hostile": true}))).await;
    assert_eq!(r["status"], "conflict", "{r}");
    assert_eq!(r["reason"], "policy failed: the fixture was told to fail", "{r}");
    let view: Value = server.get("/api/admin/policies", &admin).send().await.unwrap().json().await.unwrap();
    let fails = view["policies"].as_array().unwrap().iter().find(|p| p["entity"] == "fails").unwrap().clone();
    assert_eq!(fails["failures"], 2, "{fails}");
}
