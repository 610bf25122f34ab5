//! Per-call cost of a policy: the same rule as a WebAssembly component
//! (through the host's runtime, CPU bound on) and as native Rust; and one rule
//! written in Rust, TypeScript and Python.

use std::time::Instant;

use accord::config::Config;
use accord::model::{Decision, Incoming, MergeInput, RecordRow};
use accord::policy::{Runtime, cache_dir, load_named};
use accord_policy_sdk as sdk;

/// Median nanoseconds per call over batches of 100 calls.
fn median_ns(calls: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..calls.min(1000) {
        f(); // warm up
    }
    let mut per_batch: Vec<f64> = (0..(calls / 100).max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..100 {
                f();
            }
            t.elapsed().as_nanos() as f64 / 100.0
        })
        .collect();
    per_batch.sort_by(f64::total_cmp);
    per_batch[per_batch.len() / 2]
}

fn data(title: &str, body: &str) -> String {
    let mut v = super::record("x", 1)["data"].clone();
    v["title"] = title.into();
    v["body"] = format!("{body} {}", v["body"].as_str().unwrap_or("")).into();
    v.to_string()
}

pub fn per_call(calls: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.path = dir.path().join("bench.db");
    config.policies.dir = dir.path().join("none");
    let runtime = Runtime::new(&config.policies, &cache_dir(&config), config.sync.max_record_bytes).unwrap();
    let t = Instant::now();
    let field_merge = load_named(&runtime, &config.policies.dir, "field-merge", "bench").unwrap();
    let first_load = t.elapsed();
    let t = Instant::now();
    let field_merge_again = load_named(&runtime, &config.policies.dir, "field-merge", "bench").unwrap();
    let cached_load = t.elapsed();
    drop(field_merge_again);
    let version_wins = load_named(&runtime, &config.policies.dir, "version-wins", "bench").unwrap();

    let row = |version: i64, data: String| RecordRow {
        entity: "pages".into(),
        id: "r1".into(),
        version,
        deleted: false,
        data,
        updated_at: 0,
        seq: 0,
        decided_by: None,
    };
    let base = row(1, data("t", "b"));
    let server = row(2, data("server title", "b"));
    let incoming = Incoming {
        id: "r1".into(),
        version: 2,
        base_version: 1,
        deleted: false,
        data: data("t", "client body"),
        refs: vec![],
        blobs: vec![],
    };
    let merge_input =
        MergeInput { entity: "pages", user: "u", server: Some(&server), base: Some(&base), incoming: &incoming };
    let new_input = MergeInput { entity: "pages", user: "u", server: None, base: None, incoming: &incoming };

    let sdk_row = |r: &RecordRow| sdk::StoredRecord {
        id: r.id.clone(),
        version: r.version,
        deleted: r.deleted,
        data: r.data.clone(),
    };
    let sdk_incoming = sdk::IncomingRecord {
        id: incoming.id.clone(),
        version: incoming.version,
        base_version: incoming.base_version,
        deleted: false,
        data: incoming.data.clone(),
    };
    let sdk_merge =
        sdk::MergeInput::new("pages", "u", Some(sdk_row(&server)), Some(sdk_row(&base)), sdk_incoming.clone());
    let sdk_new = sdk::MergeInput::new("pages", "u", None, None, sdk_incoming);

    // Sanity: both sides decide the same.
    let wasm = field_merge.decide(&merge_input, "{}", accord::policy::Mode::Live).unwrap();
    assert!(matches!(wasm, Decision::Merged { .. }), "{wasm:?}");
    assert!(matches!(accord_policy_field_merge::decide(&sdk_merge), sdk::Decision::Merged { .. }));

    let wasm_merge = median_ns(calls, || {
        std::hint::black_box(field_merge.decide(&merge_input, "{}", accord::policy::Mode::Live).ok());
    });
    let native_merge = median_ns(calls, || {
        std::hint::black_box(accord_policy_field_merge::decide(std::hint::black_box(&sdk_merge)));
    });
    let wasm_new = median_ns(calls, || {
        std::hint::black_box(field_merge.decide(&new_input, "{}", accord::policy::Mode::Live).ok());
    });
    let native_new = median_ns(calls, || {
        std::hint::black_box(accord_policy_field_merge::decide(std::hint::black_box(&sdk_new)));
    });
    let wasm_empty = median_ns(calls, || {
        std::hint::black_box(version_wins.decide(&new_input, "{}", accord::policy::Mode::Live).ok());
    });
    // The boundary for the merge's input: a rule that reads no record's data
    // (version-wins: versions only) on the same three ~1 KB records.
    let wasm_boundary = median_ns(calls, || {
        std::hint::black_box(version_wins.decide(&merge_input, "{}", accord::policy::Mode::Live).ok());
    });
    let native_empty = median_ns(calls, || {
        std::hint::black_box(accord_policy_version_wins::decide(std::hint::black_box(&sdk_new)));
    });
    println!(
        "policy calls={calls} (~1 KB records, epoch CPU bound on, reused instance):\n  \
         field-merge three-way merge: wasm {wasm_merge:.0} ns, native {native_merge:.0} ns, ratio {:.2}x\n  \
         field-merge new record:      wasm {wasm_new:.0} ns, native {native_new:.0} ns\n  \
         version-wins new record (empty-call price): wasm {wasm_empty:.0} ns, native {native_empty:.0} ns\n  \
         version-wins on the merge's three records (the boundary's price for that input): wasm {wasm_boundary:.0} ns\n  \
         load field-merge: first {:.1} ms (compile or disk cache), cached {:.2} ms",
        wasm_merge / native_merge,
        first_load.as_secs_f64() * 1000.0,
        cached_load.as_secs_f64() * 1000.0,
    );
}

/// The Rust template's rule (last writer wins by `data.editedAt`) as components
/// written in several languages, and natively: per-call cost on ~1 KB records.
pub fn languages(calls: usize, memory_mib: usize, components: &[(&str, std::path::PathBuf)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.path = dir.path().join("bench.db");
    config.policies.memory_mib = memory_mib;
    let runtime = Runtime::new(&config.policies, &cache_dir(&config), config.sync.max_record_bytes).unwrap();
    let stamped = |stamp: i64, who: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&data(who, who)).unwrap();
        v["editedAt"] = stamp.into();
        v.to_string()
    };
    let server = RecordRow {
        entity: "notes".into(),
        id: "r1".into(),
        version: 3,
        deleted: false,
        data: stamped(200, "server"),
        updated_at: 0,
        seq: 0,
        decided_by: None,
    };
    let incoming = |stamp: i64| Incoming {
        id: "r1".into(),
        version: 2,
        base_version: 1,
        deleted: false,
        data: stamped(stamp, "client"),
        refs: vec![],
        blobs: vec![],
    };
    // An older edit gets the server's copy back (both records parsed, one returned);
    // a later one is accepted.
    let (older, newer) = (incoming(100), incoming(300));
    let input = |incoming| MergeInput { entity: "notes", user: "u", server: Some(&server), base: None, incoming };
    let sdk_input = |incoming: &Incoming| {
        let server = sdk::StoredRecord {
            id: server.id.clone(),
            version: server.version,
            deleted: false,
            data: server.data.clone(),
        };
        let incoming = sdk::IncomingRecord {
            id: incoming.id.clone(),
            version: incoming.version,
            base_version: incoming.base_version,
            deleted: false,
            data: incoming.data.clone(),
        };
        sdk::MergeInput::new("notes", "u", Some(server), None, incoming)
    };
    let (sdk_older, sdk_newer) = (sdk_input(&older), sdk_input(&newer));
    assert!(matches!(custom_policy::decide(&sdk_older), sdk::Decision::Merged { .. }));
    let native_older = median_ns(calls, || {
        std::hint::black_box(custom_policy::decide(std::hint::black_box(&sdk_older)));
    });
    let native_newer = median_ns(calls, || {
        std::hint::black_box(custom_policy::decide(std::hint::black_box(&sdk_newer)));
    });
    println!(
        "policy-languages calls={calls} (last writer wins by editedAt, ~1 KB records, epoch CPU bound on, \
         reused instance, policies.memory_mib={memory_mib}):"
    );
    println!("  native Rust:  older edit (merged) {native_older:.0} ns, newer edit (accept) {native_newer:.0} ns");
    for (language, path) in components {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                println!("  {language}: skipped, cannot read {}: {e}", path.display());
                continue;
            }
        };
        let t = Instant::now();
        let policy = runtime.load(language, &bytes, &path.display().to_string(), "bench").unwrap();
        let first_load = t.elapsed();
        let t = Instant::now();
        let first = policy.decide(&input(&older), "{}", accord::policy::Mode::Live);
        let first_call = t.elapsed();
        // A component the sandbox cannot run (too many memories or instances) is reported, not measured.
        if !matches!(first, Ok(Decision::Merged { .. }))
            || !matches!(policy.decide(&input(&newer), "{}", accord::policy::Mode::Live), Ok(Decision::Accept))
        {
            println!("  {language}: not measured, the first call gave {first:?}");
            continue;
        }
        let merged = median_ns(calls, || {
            std::hint::black_box(policy.decide(&input(&older), "{}", accord::policy::Mode::Live).ok());
        });
        let accepted = median_ns(calls, || {
            std::hint::black_box(policy.decide(&input(&newer), "{}", accord::policy::Mode::Live).ok());
        });
        println!(
            "  {language:<11} component {:.1} MB: older edit (merged) {merged:.0} ns ({:.1}x native), \
             newer edit (accept) {accepted:.0} ns; load {:.0} ms (compile or disk cache), first call \
             (instantiation) {:.1} ms",
            bytes.len() as f64 / 1e6,
            merged / native_older,
            first_load.as_secs_f64() * 1000.0,
            first_call.as_secs_f64() * 1000.0,
        );
    }
}
