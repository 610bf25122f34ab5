//! `crash`: devices push continuously while the supervisor SIGKILLs the server
//! at random moments and restarts it on the same database. After every
//! restart: `PRAGMA integrity_check` is `ok`, every acknowledged push is
//! fully present, a push whose answer never came is all there or not at all,
//! and every device's cursor still works; at the end every replica equals the
//! server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock};

use crate::Outcome;
use crate::api::Api;
use crate::model::{State, TYPES};
use crate::rng::Rng;
use crate::server::{Server, ServerOpts, token};

#[derive(Clone, Debug)]
pub struct CrashOpts {
    pub cycles: u64,
    pub clients: usize,
    pub seed: u64,
    /// Longest time the server runs between kills, in ms.
    pub max_uptime_ms: u64,
    pub max_secs: u64,
}

#[derive(Debug, Default)]
pub struct CrashReport {
    pub cycles: u64,
    pub kills_during_startup: u64,
    pub pushes_acked: u64,
    pub records_acked: u64,
    pub in_flight_at_kill: u64,
    pub in_flight_committed: u64,
    pub integrity_checks: u64,
    pub secs: f64,
    pub db_bytes: u64,
    pub timed_out: bool,
}

impl CrashReport {
    pub fn print(&self, opts: &CrashOpts) {
        println!(
            "crash: {} cycles ({} of them killed again during startup) in {:.1} s, {} clients, seed {}",
            self.cycles, self.kills_during_startup, self.secs, opts.clients, opts.seed
        );
        println!(
            "  {} pushes acknowledged ({} records), all present after every restart; {} pushes in flight at a kill: \
             {} found committed whole, {} not at all, none partly; {} integrity checks ok; database {:.1} MiB",
            self.pushes_acked,
            self.records_acked,
            self.in_flight_at_kill,
            self.in_flight_committed,
            self.in_flight_at_kill - self.in_flight_committed,
            self.integrity_checks,
            self.db_bytes as f64 / 1048576.0
        );
        if self.timed_out {
            println!("  stopped early: --max-secs reached");
        }
        println!("lost acknowledged writes: 0");
    }
}

/// One push: `units` groups of one record of every type, plus the device's counter.
struct Push {
    n: u64,
    push_id: String,
    body: String,
    keys: Vec<(usize, String)>,
}

struct Device {
    name: String,
    api: Api,
    next: u64,
    units: BTreeMap<u64, u64>,
    outbox: Option<Push>,
    last_acked: u64,
    unchecked: Vec<u64>,
    counter_version: u64,
    cursor: Option<String>,
    replica: BTreeMap<(usize, String), State>,
    rng: Rng,
}

fn keys_of(name: &str, n: u64, units: u64) -> Vec<(usize, String)> {
    let mut keys = Vec::new();
    for u in 0..units {
        for (t, ty) in TYPES.iter().enumerate() {
            keys.push((t, format!("{name}-{n}-{u}-{}", ty.name)));
        }
    }
    keys
}

impl Device {
    fn build(&mut self) -> Push {
        self.next += 1;
        let n = self.next;
        let units = self.rng.range(1, 3);
        self.units.insert(n, units);
        let keys = keys_of(&self.name, n, units);
        let mut changes: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for (t, id) in &keys {
            let unit = id.rsplit('-').nth(1).unwrap_or("0");
            let prefix = format!("{}-{n}-{unit}-", self.name);
            let mut data = json!({"n": n, "text": "x".repeat(self.rng.range(10, 60) as usize)});
            for (field, parent) in TYPES[*t].refs {
                data[*field] = json!(format!("{prefix}{}", TYPES[*parent].name));
            }
            changes.entry(TYPES[*t].name).or_default().push(json!({"id": id, "version": 1, "data": data}));
        }
        let counter = json!({
            "id": format!("{}-counter", self.name),
            "version": self.counter_version + 1,
            "baseVersion": self.counter_version,
            "data": {"n": n},
        });
        changes.entry("pages").or_default().push(counter);
        let push_id = format!("{}-{n}", self.name);
        let body = json!({"clientId": self.name, "pushId": push_id, "changes": changes}).to_string();
        Push { n, push_id, body, keys }
    }
}

struct Shared {
    devices: Vec<Arc<Mutex<Device>>>,
    gate: RwLock<()>,
    stop: AtomicBool,
    error: std::sync::Mutex<Option<String>>,
    pushes_acked: AtomicU64,
    records_acked: AtomicU64,
}

impl Shared {
    fn fail(&self, e: String) {
        let mut slot = self.error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(e);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A device pushing until told to stop, retrying its outbox through outages.
async fn device_loop(shared: Arc<Shared>, i: usize) {
    for _ in 0..10_000_000u64 {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let ok = {
            let _open = shared.gate.read().await;
            let mut dev = shared.devices[i].lock().await;
            if dev.outbox.is_none() {
                let p = dev.build();
                dev.outbox = Some(p);
            }
            let Some(push) = dev.outbox.as_ref() else { return };
            let (body, push_id, n, records) = (push.body.clone(), push.push_id.clone(), push.n, push.keys.len());
            match dev.api.post("/api/sync/push", body).await {
                Ok(r) if r.status == 200 => match counter_version(&r.body, &dev.name) {
                    Ok(v) => {
                        dev.counter_version = v;
                        dev.last_acked = n;
                        dev.unchecked.push(n);
                        dev.outbox = None;
                        shared.pushes_acked.fetch_add(1, Ordering::Relaxed);
                        shared.records_acked.fetch_add(records as u64 + 1, Ordering::Relaxed);
                        true
                    }
                    Err(e) => {
                        shared.fail(format!("push {push_id}: {e}"));
                        return;
                    }
                },
                Ok(r) => {
                    shared.fail(format!("push {push_id} answered {}: {}", r.status, r.text()));
                    return;
                }
                Err(_) => false,
            }
        };
        // A device pushes every few milliseconds (and retries as often through an outage).
        let pause = if ok { 10 + (i as u64 * 7 + shared.pushes_acked.load(Ordering::Relaxed)) % 20 } else { 5 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Checks that every record of the answer was applied; returns the counter's new version.
fn counter_version(body: &[u8], device: &str) -> Outcome<u64> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    let results = v.get("results").and_then(Value::as_object).ok_or_else(|| format!("no results: {v}"))?;
    let mut counter = None;
    for list in results.values() {
        for r in list.as_array().into_iter().flatten() {
            if r.get("status").and_then(Value::as_str) != Some("applied") {
                return Err(format!("a record was not applied: {r}"));
            }
            if r.get("id").and_then(Value::as_str) == Some(&format!("{device}-counter")) {
                counter = r.get("serverVersion").and_then(Value::as_u64);
            }
        }
    }
    counter.ok_or_else(|| format!("no counter result: {v}"))
}

/// Pulls from `cursor` to the end into `replica`; a 410 is a failure (the database is the same).
async fn pull_into(
    api: &Api,
    cursor: &mut Option<String>,
    replica: &mut BTreeMap<(usize, String), State>,
) -> Outcome<()> {
    for _ in 0..1_000_000 {
        let mut path = "/api/sync/pull?limit=1000".to_string();
        if let Some(c) = cursor.as_ref() {
            path.push_str("&since=");
            path.push_str(&c.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"));
        }
        let r = api.get(&path).await.map_err(|e| format!("pull: {e}"))?;
        if r.status != 200 {
            return Err(format!("pull from the cursor held before the crash answered {}: {}", r.status, r.text()));
        }
        let v = r.json("pull")?;
        for (ty, list) in v.get("changes").and_then(Value::as_object).into_iter().flatten() {
            let t = TYPES.iter().position(|x| x.name == ty).ok_or_else(|| format!("pull: unknown type {ty}"))?;
            for rec in list.as_array().into_iter().flatten() {
                let id = rec.get("id").and_then(Value::as_str).ok_or_else(|| format!("pull: no id: {rec}"))?;
                let s = State::from_wire_pub(rec).ok_or_else(|| format!("pull: malformed record: {rec}"))?;
                replica.insert((t, id.to_string()), s);
            }
        }
        *cursor = v.get("cursor").and_then(Value::as_str).map(str::to_string);
        if !v.get("hasMore").and_then(Value::as_bool).unwrap_or(false) {
            return Ok(());
        }
    }
    Err("pull never ended".into())
}

/// `PRAGMA integrity_check` on the database of the dead server, read-only
/// (nothing is checkpointed: the server recovers the WAL itself), with the
/// `sqlite3` command-line shell when installed, else the bundled SQLite.
pub fn integrity_check(path: &std::path::Path) -> Outcome<()> {
    use rusqlite::OpenFlags;
    if let Ok(out) =
        std::process::Command::new("sqlite3").arg("-readonly").arg(path).arg("PRAGMA integrity_check;").output()
        && out.status.success()
    {
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return if text == "ok" { Ok(()) } else { Err(format!("PRAGMA integrity_check: {text}")) };
    }
    let conn = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .or_else(|_| rusqlite::Connection::open(path))
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| format!("integrity_check: {e}"))?;
    if rows == ["ok"] { Ok(()) } else { Err(format!("PRAGMA integrity_check: {}", rows.join("; "))) }
}

/// After a restart: every acknowledged push whole, the push in flight whole or absent.
async fn verify(
    shared: &Shared,
    checker: &Api,
    cursor: &mut Option<String>,
    state: &mut BTreeMap<(usize, String), State>,
    report: &mut CrashReport,
) -> Outcome<()> {
    pull_into(checker, cursor, state).await?;
    for d in &shared.devices {
        let mut dev = d.lock().await;
        let counter = state.get(&(5, format!("{}-counter", dev.name))).cloned();
        let counter_n = counter.as_ref().and_then(|c| c.data.get("n")).and_then(Value::as_u64).unwrap_or(0);
        for n in std::mem::take(&mut dev.unchecked) {
            let units = dev.units.get(&n).copied().unwrap_or(0);
            for key in keys_of(&dev.name, n, units) {
                if !state.get(&key).is_some_and(|s| s.version == 1 && !s.deleted) {
                    return Err(format!("acknowledged push {}-{n} lost {}/{}", dev.name, TYPES[key.0].name, key.1));
                }
            }
        }
        if counter_n < dev.last_acked {
            return Err(format!(
                "{}: counter shows push {counter_n}, but push {} was acknowledged",
                dev.name, dev.last_acked
            ));
        }
        if let Some(p) = &dev.outbox {
            report.in_flight_at_kill += 1;
            let present = p.keys.iter().filter(|k| state.contains_key(*k)).count();
            let expect_counter = if present == 0 {
                dev.last_acked
            } else {
                report.in_flight_committed += 1;
                p.n
            };
            if present != 0 && present != p.keys.len() {
                return Err(format!(
                    "push {} partly present: {present} of {} records (plus counter {counter_n})",
                    p.push_id,
                    p.keys.len()
                ));
            }
            if counter_n != expect_counter {
                return Err(format!(
                    "push {}: {present} of {} records present but the counter shows push {counter_n} (expected {expect_counter})",
                    p.push_id,
                    p.keys.len()
                ));
            }
        } else if counter_n != dev.last_acked && dev.next > 0 {
            return Err(format!("{}: counter shows push {counter_n}, last acknowledged {}", dev.name, dev.last_acked));
        }
        let Device { api, cursor, replica, .. } = &mut *dev;
        pull_into(api, cursor, replica).await?;
    }
    Ok(())
}

pub async fn run(server_opts: ServerOpts, opts: CrashOpts) -> Outcome<CrashReport> {
    let sqlite = server_opts.database_url.is_none();
    let mut server = Server::start(server_opts).await?;
    let r = run_on(&mut server, &opts, sqlite).await;
    if r.is_err() {
        server.scratch.keep();
        eprintln!("server data and log kept in {}", server.scratch.path.display());
    }
    server.kill().await?;
    r
}

async fn run_on(server: &mut Server, opts: &CrashOpts, sqlite: bool) -> Outcome<CrashReport> {
    let started = Instant::now();
    let user = format!(
        "crash-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
    );
    let mut rng = Rng::new(opts.seed);
    let mut devices = Vec::new();
    for i in 0..opts.clients {
        let api = Api::new(&server.base, token(&user), Duration::from_secs(10), false)?;
        devices.push(Arc::new(Mutex::new(Device {
            name: format!("k{i}"),
            api,
            next: 0,
            units: BTreeMap::new(),
            outbox: None,
            last_acked: 0,
            unchecked: Vec::new(),
            counter_version: 0,
            cursor: None,
            replica: BTreeMap::new(),
            rng: Rng::new(opts.seed.wrapping_mul(31).wrapping_add(i as u64)),
        })));
    }
    let shared = Arc::new(Shared {
        devices,
        gate: RwLock::new(()),
        stop: AtomicBool::new(false),
        error: std::sync::Mutex::new(None),
        pushes_acked: AtomicU64::new(0),
        records_acked: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..opts.clients).map(|i| tokio::spawn(device_loop(shared.clone(), i))).collect();
    let checker = Api::new(&server.base, token(&user), Duration::from_secs(30), false)?;
    let (mut cursor, mut state) = (None, BTreeMap::new());
    let mut report = CrashReport::default();
    let result: Outcome<()> = async {
        for cycle in 0..opts.cycles {
            if started.elapsed().as_secs() >= opts.max_secs {
                report.timed_out = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.below(opts.max_uptime_ms + 1))).await;
            if let Some(e) = shared.error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
                return Err(e);
            }
            if let Some(status) = server.exited() {
                return Err(format!("the server exited by itself ({status}); log:\n{}", server.log_tail()));
            }
            server.kill().await?;
            let _closed = shared.gate.write().await;
            let mut restarts = 1;
            if rng.chance(0.2) {
                restarts += 1;
                report.kills_during_startup += 1;
            }
            for r in 0..restarts {
                if sqlite {
                    integrity_check(&server.db_path()).map_err(|e| format!("cycle {cycle}: {e}"))?;
                    report.integrity_checks += 1;
                }
                server.spawn()?;
                if r + 1 < restarts {
                    tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
                    server.kill().await?;
                }
            }
            server.wait_ready(Duration::from_secs(120)).await.map_err(|e| format!("cycle {cycle}: {e}"))?;
            verify(&shared, &checker, &mut cursor, &mut state, &mut report)
                .await
                .map_err(|e| format!("cycle {cycle}: {e}"))?;
            report.cycles += 1;
        }
        Ok(())
    }
    .await;
    shared.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    result?;
    if let Some(e) = shared.error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
        return Err(e);
    }
    // The end: whatever was in flight is sent, then every replica must equal a full read.
    for d in &shared.devices {
        let mut dev = d.lock().await;
        if let Some(p) = dev.outbox.take() {
            let r = dev.api.post("/api/sync/push", p.body.clone()).await.map_err(|e| format!("final push: {e}"))?;
            if r.status != 200 {
                return Err(format!("final push {} answered {}: {}", p.push_id, r.status, r.text()));
            }
            dev.counter_version = counter_version(&r.body, &dev.name)?;
            dev.last_acked = p.n;
            dev.unchecked.push(p.n);
        }
    }
    verify(&shared, &checker, &mut cursor, &mut state, &mut report).await?;
    let (mut fresh_cursor, mut full) = (None, BTreeMap::new());
    pull_into(&checker, &mut fresh_cursor, &mut full).await?;
    if full != state {
        return Err("a full read differs from the state read incrementally across restarts".into());
    }
    for d in &shared.devices {
        let dev = d.lock().await;
        if dev.replica != full {
            return Err(format!("replica {} differs from the server after the final pull", dev.name));
        }
        for (&n, &units) in &dev.units {
            if n <= dev.last_acked {
                for key in keys_of(&dev.name, n, units) {
                    if !full.contains_key(&key) {
                        return Err(format!("acknowledged push {}-{n} lost {}", dev.name, key.1));
                    }
                }
            }
        }
    }
    if sqlite {
        server.kill().await?;
        integrity_check(&server.db_path())?;
        report.integrity_checks += 1;
        report.db_bytes = ["accord.db", "accord.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(server.db_path().with_file_name(f)).ok())
            .map(|m| m.len())
            .sum();
    }
    report.pushes_acked = shared.pushes_acked.load(Ordering::Relaxed);
    report.records_acked = shared.records_acked.load(Ordering::Relaxed);
    report.secs = started.elapsed().as_secs_f64();
    Ok(report)
}
