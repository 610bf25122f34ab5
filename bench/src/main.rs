//! `accord-bench`: measures the Accord server over real HTTP on 127.0.0.1.
//!
//! Each scenario starts the server as a child process (this same binary in
//! its hidden `server` mode) on a fresh temporary database, so the server's
//! peak RSS can be read from /proc. Every loop is bounded in count and time.
//! With `--url URL --key KEY` the first-sync and concurrent scenarios drive
//! an already running server that speaks the same wire format instead (any
//! Accord, or another server to compare side by side); figures that need the
//! process (RSS, database size) are then not reported.
#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should stop loudly

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use accord::auth::{Scope, apikey};
use accord::config::Config;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, BufReader};

mod attacks;
mod metrics_cost;
mod policy;
mod streams;

#[derive(Parser)]
#[command(about = "Benchmarks for the Accord sync server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Drive this running server (its base URL, e.g. http://127.0.0.1:8080) instead of starting one.
    #[arg(long, global = true, requires = "key")]
    url: Option<String>,
    /// The API key (or bearer token) to use with `--url`.
    #[arg(long, global = true, requires = "url")]
    key: Option<String>,
}

/// The server given with `--url` and `--key`, if any.
static EXTERNAL: std::sync::OnceLock<Option<(String, String)>> = std::sync::OnceLock::new();

#[derive(Subcommand)]
enum Command {
    /// First sync: push N records of ~1 KB in pushes of `batch`, then pull them in pages of `page`.
    /// The records are the notes app's eight types with references (parents first), unless `--pages-only`.
    FirstSync {
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        records: Vec<usize>,
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[arg(long, default_value_t = 1000)]
        page: usize,
        /// Only `pages` records (the figures before 2026-11-29 afternoon), not
        /// the notes app's eight types with references.
        #[arg(long)]
        pages_only: bool,
    },
    /// Concurrent clients each pushing small batches of new records; a list
    /// (`--clients 1,4,16,64`) runs each count on a fresh server, in turn.
    Concurrent {
        #[arg(long, value_delimiter = ',', default_value = "16")]
        clients: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 10)]
        records_per_push: usize,
        /// Servers on one database (more than one needs ACCORD_BENCH_PG); clients are spread over them.
        #[arg(long, default_value_t = 1)]
        hosts: usize,
        /// Every client is a user of its own (default: all clients are one user's devices).
        #[arg(long)]
        distinct_users: bool,
    },
    /// The ceiling: raw rusqlite writing and reading the same rows, no HTTP.
    RawSqlite {
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// Per-call cost of a policy on ~1 KB records, WebAssembly vs the same rule natively,
    /// and the time to load a cached compiled component.
    Policy {
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
    },
    /// Per-call cost of one rule (the Rust template's last-writer-wins) in Rust, TypeScript and
    /// Python components, next to the same rule natively. Build the components first
    /// (docs/writing-a-policy.md); the memory limit is raised to `--memory-mib` for the interpreters.
    PolicyLanguages {
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
        #[arg(long, default_value_t = 64)]
        memory_mib: usize,
        /// The Rust template's component (`cargo build -p custom-policy --release --target wasm32-wasip2`).
        #[arg(long, default_value = "target/wasm32-wasip2/release/custom_policy.wasm")]
        rust: std::path::PathBuf,
        #[arg(long, default_value = "examples/policy-ts/dist/policy.wasm")]
        ts: std::path::PathBuf,
        #[arg(long, default_value = "examples/policy-py/dist/policy.wasm")]
        py: std::path::PathBuf,
    },
    /// Update-heavy pushes: N records, then two rounds of concurrent edits that field-merge must merge.
    Updates {
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// Issue 7's attacks: gzip memory amplification, conflict disk amplification, fairness between users;
    /// and large blob uploads at once (issue 11).
    Attacks {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Run one attack only: half-sent, memory, disk, blobs or fairness.
        #[arg(long)]
        only: Option<String>,
    },
    /// Many idle event streams across many users: server memory, and push latency with and without them.
    Streams {
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        #[arg(long, default_value_t = 1_000)]
        users: usize,
        #[arg(long, default_value_t = 500)]
        pushes: usize,
    },
    /// The cost of one metrics observation: hand-written against prometheus-client.
    Metrics {
        #[arg(long, default_value_t = 10_000_000)]
        observations: usize,
    },
    /// Everything above with default arguments.
    All,
    /// (internal) run the server on a database (a SQLite path or a postgres:// URL) and print its address.
    #[command(hide = true)]
    Server { db: String },
}

fn main() {
    let cli = Cli::parse();
    let _ = EXTERNAL.set(cli.url.clone().zip(cli.key.clone()).map(|(u, k)| (u.trim_end_matches('/').to_string(), k)));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        match cli.command {
            Command::Server { db } => run_server(db).await,
            Command::FirstSync { records, batch, page, pages_only } => {
                for n in records {
                    first_sync(n, batch, page, pages_only).await;
                }
            }
            Command::Concurrent { clients, seconds, records_per_push, hosts, distinct_users } => {
                for n in clients {
                    concurrent(n, seconds, records_per_push, hosts, distinct_users).await;
                }
            }
            Command::RawSqlite { records, batch } => {
                raw_sqlite(&mix(records), batch);
            }
            Command::Policy { calls } => policy::per_call(calls),
            Command::PolicyLanguages { calls, memory_mib, rust, ts, py } => {
                policy::languages(calls, memory_mib, &[("Rust", rust), ("TypeScript", ts), ("Python", py)]);
            }
            Command::Metrics { observations } => metrics_cost::compare(observations),
            Command::Streams { streams, users, pushes } => streams::idle_streams(streams, users, pushes).await,
            Command::Updates { records, batch } => updates(records, batch).await,
            Command::Attacks { seconds, only } => {
                let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
                if run("half-sent") {
                    attacks::half_sent(500).await;
                }
                if run("memory") {
                    attacks::memory().await;
                }
                if run("disk") {
                    attacks::disk().await;
                }
                if run("blobs") {
                    attacks::blobs().await;
                }
                if run("fairness") {
                    attacks::fairness(seconds).await;
                }
            }
            Command::All => {
                first_sync(10_000, 500, 1000, false).await;
                first_sync(100_000, 500, 1000, false).await;
                concurrent(16, 10, 10, 1, false).await;
                policy::per_call(20_000);
                updates(20_000, 500).await;
                attacks::memory().await;
                attacks::disk().await;
                attacks::fairness(10).await;
            }
        }
    });
}

async fn run_server(db: String) {
    // Defaults, with ACCORD_* variables over them (scenarios that need other limits set them).
    let mut config = Config::load(None).unwrap();
    if db.starts_with("postgres") {
        config.database.url = Some(db);
    } else {
        config.database.path = PathBuf::from(db);
    }
    let store = accord::server::open_store(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening {}", listener.local_addr().unwrap());
    accord::server::serve_on(config, store, listener, accord::server::shutdown_signal()).await.unwrap();
}

/// The database of a bench server: a SQLite file in `dir`, or, when
/// `ACCORD_BENCH_PG` names a PostgreSQL server (an admin URL such as
/// `postgres://postgres@127.0.0.1:5432/postgres`), a fresh database there.
fn bench_config(dir: &Path) -> Config {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut config = Config::default();
    config.database.path = dir.join("bench.db");
    if let Ok(admin) = std::env::var("ACCORD_BENCH_PG") {
        let name =
            format!("accord_bench_{}_{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let create = format!("CREATE DATABASE {name}");
        let admin_url = admin.clone();
        // The synchronous client must not run on the async runtime's threads.
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap();
            client.batch_execute(&create).unwrap();
        })
        .join()
        .unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        config.database.url = Some(format!("{base}/{name}"));
    }
    config
}

/// A server child process on a fresh database, with a key for user `bench`;
/// with `hosts > 1` (PostgreSQL), more servers on the same database.
struct Server {
    /// `None` for a server given with `--url`.
    child: Option<tokio::process::Child>,
    base: String,
    key: String,
    db: PathBuf,
    config: Config,
    others: Vec<(tokio::process::Child, String)>,
    _dir: tempfile::TempDir,
}

async fn spawn_server(target: &str, env: &[(&str, String)]) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .arg("server")
        .arg(target)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let addr = line.strip_prefix("listening ").unwrap().to_string();
    let base = format!("http://{addr}");
    // The port is bound before the policies are loaded (compiled, on a cold
    // cache): no scenario's clock may start before the server answers.
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

impl Server {
    async fn start() -> Server {
        Server::start_hosts(1).await
    }

    /// One server with `ACCORD_*` variables set for it.
    async fn start_with_env(env: &[(&str, String)]) -> Server {
        Server::start_hosts_env(1, env).await
    }

    async fn start_hosts(hosts: usize) -> Server {
        Server::start_hosts_env(hosts, &[]).await
    }

    async fn start_hosts_env(hosts: usize, env: &[(&str, String)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        if let Some(Some((base, key))) = EXTERNAL.get() {
            let mut config = Config::default();
            config.database.path = dir.path().join("external");
            let db = config.database.path.clone();
            return Server {
                child: None,
                base: base.clone(),
                key: key.clone(),
                db,
                config,
                others: Vec::new(),
                _dir: dir,
            };
        }
        let config = bench_config(dir.path());
        let db = config.database.path.clone();
        let store = accord::server::open_store(&config).await.unwrap();
        let (_, key) =
            apikey::issue(&store, "bench", "bench", &[Scope::SyncRead, Scope::SyncWrite], None).await.unwrap();
        store.close().await;
        let target = config.database.url.clone().unwrap_or_else(|| db.display().to_string());
        let (child, base) = spawn_server(&target, env).await;
        let mut others = Vec::new();
        for _ in 1..hosts {
            others.push(spawn_server(&target, env).await);
        }
        Server { child: Some(child), base, key, db, config, others, _dir: dir }
    }

    /// Every host's base URL.
    fn bases(&self) -> Vec<String> {
        std::iter::once(self.base.clone()).chain(self.others.iter().map(|(_, b)| b.clone())).collect()
    }

    /// The backend, for reports.
    fn backend(&self) -> &'static str {
        match (&self.child, &self.config.database.url) {
            (None, _) => "external",
            (_, Some(_)) => "postgres",
            _ => "sqlite",
        }
    }

    /// A key for another user, made through the HTTP API's CLI twin (the store, while the server runs).
    async fn key_for(&self, user: &str) -> String {
        if self.child.is_none() {
            // A server given with --url: its one key (distinct users need keys made there).
            return self.key.clone();
        }
        let store = accord::server::open_store(&self.config).await.unwrap();
        let (_, key) = apikey::issue(&store, user, user, &[Scope::SyncRead, Scope::SyncWrite], None).await.unwrap();
        store.close().await;
        key
    }

    /// The database file with its WAL, in bytes.
    fn db_bytes(&self) -> u64 {
        [self.db.clone(), self.db.with_extension("db-wal")]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Peak resident set size of the server process so far, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let pid = self.child.as_ref().and_then(|c| c.id()).unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }
}

/// A ~1 KB record body.
pub(crate) fn record(id: &str, n: usize) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "version": 1,
        "data": {
            "title": format!("Record number {n}"),
            "body": "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. ".repeat(11),
            "n": n,
            "tags": ["alpha", "beta", "gamma"],
        }
    })
}

/// Reference fields of a type: (field, parent type).
type Refs = &'static [(&'static str, &'static str)];

/// The notes app's eight types (the default `[entities]`), in dependency order,
/// with each type's share of a first sync and its references: (type, share in
/// thousandths, reference fields as (field, parent type)).
const NOTES_MIX: [(&str, usize, Refs); 8] = [
    ("contexts", 10, &[]),
    ("notebooks", 20, &[]),
    ("pages", 200, &[]),
    ("topics", 200, &[("contextId", "contexts")]),
    ("ratings", 100, &[("topicId", "topics")]),
    ("historyEntries", 300, &[("topicId", "topics")]),
    ("imageBlobs", 20, &[]),
    ("pageNotebooks", 150, &[("pageId", "pages"), ("notebookId", "notebooks")]),
];

/// `n` records of a first sync as (type, id, ~1 KB `data` text), parents
/// before children: the eight types of the notes app, each reference naming
/// a record of an earlier type. Children come in their parents' order (as a
/// client's store lists them): topic `i` of 20,000 belongs to context
/// `i / 20`, and so on.
fn mix(n: usize) -> Vec<(&'static str, String, String)> {
    // Every type gets a record (so every reference has a parent); `pages` takes the rest.
    let mut counts: Vec<usize> = NOTES_MIX.iter().map(|(_, share, _)| (n * share / 1000).max(1)).collect();
    counts[2] = (counts[2] + n).saturating_sub(counts.iter().sum::<usize>()).max(1);
    let mut out = Vec::with_capacity(n);
    for (t, (ty, _, refs)) in NOTES_MIX.iter().enumerate() {
        for i in 0..counts[t] {
            let mut data = record("x", i)["data"].clone();
            for (field, parent) in refs.iter() {
                let p = NOTES_MIX.iter().position(|(name, _, _)| name == parent).unwrap();
                data[*field] = format!("{parent}-{:08}", i * counts[p] / counts[t]).into();
            }
            out.push((*ty, format!("{ty}-{i:08}"), data.to_string()));
        }
    }
    out
}

/// A first sync's records: the notes mix, or `pages` only.
fn first_sync_rows(n: usize, pages_only: bool) -> Vec<(&'static str, String, String)> {
    if pages_only {
        (0..n).map(|i| ("pages", format!("pages-{i:08}"), record("x", i)["data"].to_string())).collect()
    } else {
        mix(n)
    }
}

/// Push bodies of `batch` records each.
fn push_bodies(prefix: &str, rows: &[(&str, String, String)], batch: usize) -> Vec<String> {
    rows.chunks(batch)
        .enumerate()
        .map(|(b, chunk)| {
            let mut changes = serde_json::Map::new();
            for (ty, id, data) in chunk {
                let data: serde_json::Value = serde_json::from_str(data).unwrap();
                let list = changes.entry(*ty).or_insert_with(|| serde_json::Value::Array(Vec::new()));
                list.as_array_mut().unwrap().push(serde_json::json!({"id": id, "version": 1, "data": data}));
            }
            serde_json::json!({"clientId": "bench", "pushId": format!("{prefix}-push-{b}"), "changes": changes})
                .to_string()
        })
        .collect()
}

/// POSTs one push body; panics unless it is a 200. Returns the response body.
pub(crate) async fn post_push(client: &reqwest::Client, base: &str, key: &str, body: String) -> Vec<u8> {
    let r = client
        .post(format!("{base}/api/sync/push"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "push failed");
    r.bytes().await.unwrap().to_vec()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullPage<'a> {
    #[serde(borrow)]
    changes: HashMap<String, Vec<&'a RawValue>>,
    cursor: String,
    has_more: bool,
}

async fn first_sync(n: usize, batch: usize, page: usize, pages_only: bool) {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let rows = first_sync_rows(n, pages_only);
    // (The mix gives every type a record: a tiny `n` grows a little.)
    let n = rows.len();
    let bodies = push_bodies("fs", &rows, batch);
    let bytes: usize = bodies.iter().map(String::len).sum();

    let started = Instant::now();
    for body in bodies {
        post_push(&client, &server.base, &server.key, body).await;
    }
    let push_secs = started.elapsed().as_secs_f64();

    // The fastest of three full pulls, as the raw read is the fastest of
    // three: one pass takes ~0.25 s, where this machine's noise is ±30 %.
    let mut pull_secs = f64::MAX;
    for _ in 0..PASSES {
        let started = Instant::now();
        let (mut cursor, mut pulled) = (String::new(), 0usize);
        for _ in 0..(n / page + 10) {
            let url = format!("{}/api/sync/pull?since={cursor}&limit={page}", server.base);
            let body = client.get(url).bearer_auth(&server.key).send().await.unwrap().bytes().await.unwrap();
            let parsed: PullPage<'_> = serde_json::from_slice(&body).unwrap();
            pulled += parsed.changes.values().map(Vec::len).sum::<usize>();
            cursor = parsed.cursor;
            if !parsed.has_more {
                break;
            }
        }
        pull_secs = pull_secs.min(started.elapsed().as_secs_f64());
        assert_eq!(pulled, n, "pulled back every record");
    }
    // Its own ceiling, measured in the same run: only ratios compare across runs.
    let (raw_insert, raw_read) = raw_sqlite(&rows, batch);
    println!(
        "first-sync ratio n={n}: push {:.0} % of raw insert, pull {:.0} % of raw read",
        100.0 * n as f64 / push_secs / raw_insert,
        100.0 * n as f64 / pull_secs / raw_read
    );
    println!(
        "first-sync {} {} n={n} batch={batch} page={page} body={:.1} MB: push {:.0} records/s ({push_secs:.2} s), \
         pull {:.0} records/s ({pull_secs:.2} s, best of {PASSES}), server peak RSS {:.0} MiB",
        server.backend(),
        if pages_only { "pages" } else { "notes-mix" },
        bytes as f64 / 1e6,
        n as f64 / push_secs,
        n as f64 / pull_secs,
        server.peak_rss_mib()
    );
}

async fn concurrent(clients: usize, seconds: u64, per_push: usize, hosts: usize, distinct_users: bool) {
    let server = Server::start_hosts(hosts).await;
    let bases = server.bases();
    let mut keys = Vec::new();
    for c in 0..clients {
        keys.push(if distinct_users { server.key_for(&format!("user{c}")).await } else { server.key.clone() });
    }
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, base, key) = (client.clone(), bases[c % bases.len()].clone(), keys[c].clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            // Bounded by time and by count.
            for n in 0..1_000_000usize {
                if Instant::now() >= deadline {
                    break;
                }
                let records: Vec<_> = (0..per_push).map(|i| record(&format!("c{c}-{n}-{i}"), i)).collect();
                let body =
                    serde_json::json!({"pushId": format!("c{c}-{n}"), "changes": {"pages": records}}).to_string();
                let t = Instant::now();
                post_push(&client, &base, &key, body).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "concurrent {} hosts={hosts} clients={clients} distinct_users={distinct_users} records/push={per_push} {secs:.1} s: {:.0} pushes/s, \
         p50 {:.1} ms, p99 {:.1} ms, server peak RSS {:.0} MiB",
        server.backend(),
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.99),
        server.peak_rss_mib()
    );
}

/// Full reads (raw, and pulls) timed per run; the fastest counts.
const PASSES: usize = 3;

/// The ceiling: raw rusqlite inserting the same rows (type, id, data) in
/// transactions of `batch`, as Accord stores them, and reading them back in
/// pages of 1,000; prints and returns (insert, read) rows/s. The insert ceiling is the better of two runs: SQLite's automatic WAL
/// checkpoints inside the timed commits, and none until the clock stops
/// (Accord checkpoints on a thread beside its writer, so the ceiling must
/// not pay for checkpoints that Accord does not wait for).
fn raw_sqlite(rows: &[(&str, String, String)], batch: usize) -> (f64, f64) {
    let n = rows.len();
    let dir = tempfile::tempdir().unwrap();
    let run = |path: &Path, per_tx: usize, checkpoints: bool| -> f64 {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        if !checkpoints {
            conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE records (user_id TEXT NOT NULL, entity TEXT NOT NULL, id TEXT NOT NULL,
               version INTEGER NOT NULL, deleted INTEGER NOT NULL, data TEXT NOT NULL,
               updated_at INTEGER NOT NULL, seq INTEGER NOT NULL) STRICT;
             CREATE UNIQUE INDEX records_key ON records (user_id, entity, id);
             CREATE UNIQUE INDEX records_by_seq ON records (user_id, seq);",
        )
        .unwrap();
        let started = Instant::now();
        for (b, chunk) in rows.chunks(per_tx).enumerate() {
            let tx = conn.unchecked_transaction().unwrap();
            {
                let mut stmt =
                    tx.prepare_cached("INSERT INTO records VALUES ('bench', ?1, ?2, 1, 0, ?3, 0, ?4)").unwrap();
                for (i, (ty, id, data)) in chunk.iter().enumerate() {
                    stmt.execute((ty, id, data, (b * per_tx + i) as i64)).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        started.elapsed().as_secs_f64()
    };
    let batched = run(&dir.path().join("batched.db"), batch, true);
    let deferred = run(&dir.path().join("deferred.db"), batch, false);
    let single = run(&dir.path().join("single.db"), n, true);

    let conn = rusqlite::Connection::open(dir.path().join("batched.db")).unwrap();
    let mut read_secs = f64::MAX;
    for _ in 0..PASSES {
        let started = Instant::now();
        let (mut after, mut read) = (-1i64, 0usize);
        for _ in 0..(n / 1000 + 10) {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, version, data, seq FROM records WHERE user_id = 'bench' AND seq > ?1 ORDER BY seq LIMIT 1000",
                )
                .unwrap();
            let mut rows = stmt.query([after]).unwrap();
            let mut got = 0;
            while let Some(row) = rows.next().unwrap() {
                let _id: String = row.get(0).unwrap();
                let _data: String = row.get(2).unwrap();
                after = row.get(3).unwrap();
                got += 1;
            }
            read += got;
            if got == 0 {
                break;
            }
        }
        assert_eq!(read, n, "read back every row");
        read_secs = read_secs.min(started.elapsed().as_secs_f64());
    }
    println!(
        "raw-sqlite n={n}: insert {:.0} rows/s (transactions of {batch}), {:.0} rows/s (the same, checkpoints after \
         the clock), {:.0} rows/s (one transaction), read {:.0} rows/s (pages of 1000, best of {PASSES})",
        n as f64 / batched,
        n as f64 / deferred,
        n as f64 / single,
        n as f64 / read_secs
    );
    (n as f64 / batched.min(deferred), n as f64 / read_secs)
}

/// Pushes `n` records, then edits every one on "device A" (based on v1), then
/// edits a different field of every one on "device B" (also based on v1), so
/// the last round runs a real three-way merge per record.
async fn updates(n: usize, batch: usize) {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let round = |tag: &str, version: i64, base: i64, field: &str| -> Vec<String> {
        (0..n)
            .collect::<Vec<_>>()
            .chunks(batch)
            .enumerate()
            .map(|(b, chunk)| {
                let records: Vec<_> = chunk
                    .iter()
                    .map(|&i| {
                        let mut r = record(&format!("up-{i:08}"), i);
                        r["version"] = version.into();
                        r["baseVersion"] = base.into();
                        if !field.is_empty() {
                            r["data"][field] = format!("edited by {tag}").into();
                        }
                        r
                    })
                    .collect();
                serde_json::json!({"pushId": format!("{tag}-{b}"), "changes": {"pages": records}}).to_string()
            })
            .collect()
    };
    let mut report = Vec::new();
    for (tag, bodies) in [
        ("insert", round("insert", 1, 0, "")),
        ("fast-forward edit", round("a", 2, 1, "title")),
        ("three-way merge", round("b", 2, 1, "body")),
    ] {
        let started = Instant::now();
        let mut statuses: HashMap<String, usize> = HashMap::new();
        for body in bodies {
            let response = post_push(&client, &server.base, &server.key, body).await;
            let v: serde_json::Value = serde_json::from_slice(&response).unwrap();
            for res in v["results"]["pages"].as_array().unwrap() {
                *statuses.entry(res["status"].as_str().unwrap().to_string()).or_default() += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        report.push(format!("{tag}: {:.0} records/s {statuses:?}", n as f64 / secs));
    }
    println!("updates n={n} batch={batch} (pages, field-merge): {}", report.join("; "));
}
