//! One convergence run (one seed): simulated offline devices of one user with
//! local replicas, a ledger of every record version the server ever showed,
//! and the checker that compares them all at the end.
//!
//! Within a seed everything is sequential and drawn from the seed's
//! generator, so a seed replays the same requests in the same order.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use crate::Outcome;
use crate::api::{Api, Resp};
use crate::rng::Rng;

/// How the shipped config decides for a type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Policy {
    FieldMerge,
    AppendOnly,
    VersionWins,
    TombstoneWins,
}

/// One of the eight shipped entity types: its name, reference fields
/// (field, index of the parent type) and policy.
pub struct Ty {
    pub name: &'static str,
    pub refs: &'static [(&'static str, usize)],
    pub policy: Policy,
}

/// The shipped `config.toml`'s entity types, in dependency order.
pub const TYPES: [Ty; 8] = [
    Ty { name: "contexts", refs: &[], policy: Policy::FieldMerge },
    Ty { name: "topics", refs: &[("contextId", 0)], policy: Policy::FieldMerge },
    Ty { name: "historyEntries", refs: &[("topicId", 1)], policy: Policy::AppendOnly },
    Ty { name: "ratings", refs: &[("topicId", 1)], policy: Policy::VersionWins },
    Ty { name: "imageBlobs", refs: &[], policy: Policy::AppendOnly },
    Ty { name: "pages", refs: &[], policy: Policy::FieldMerge },
    Ty { name: "notebooks", refs: &[], policy: Policy::FieldMerge },
    Ty { name: "pageNotebooks", refs: &[("pageId", 5), ("notebookId", 6)], policy: Policy::TombstoneWins },
];

fn type_index(name: &str) -> Option<usize> {
    TYPES.iter().position(|t| t.name == name)
}

/// A record as the server holds it.
#[derive(Clone, PartialEq, Debug)]
pub struct State {
    pub version: u64,
    pub deleted: bool,
    pub data: Value,
}

impl State {
    /// A record as pull and push answers show it.
    pub fn from_wire_pub(r: &Value) -> Option<State> {
        State::from_wire(r)
    }

    fn from_wire(r: &Value) -> Option<State> {
        Some(State {
            version: r.get("version")?.as_u64()?,
            deleted: r.get("deleted")?.as_bool()?,
            data: r.get("data").cloned().unwrap_or_else(|| json!({})),
        })
    }
}

pub type Key = (usize, String);

fn show(key: &Key) -> String {
    format!("{}/{}", TYPES[key.0].name, key.1)
}

/// A local change not yet acknowledged.
#[derive(Clone, Debug)]
struct Change {
    version: u64,
    base: u64,
    deleted: bool,
    data: Value,
    omit_data: bool,
}

impl Change {
    fn wire(&self, id: &str) -> Value {
        let mut r = json!({"id": id, "version": self.version, "baseVersion": self.base, "deleted": self.deleted});
        if !self.omit_data {
            r["data"] = self.data.clone();
        }
        r
    }

    /// What the server stores when it takes this change as sent.
    fn stored(&self, version: u64) -> State {
        State { version, deleted: self.deleted, data: if self.omit_data { json!({}) } else { self.data.clone() } }
    }
}

#[derive(Default, Debug)]
struct Local {
    /// The newest server state this device has seen.
    known: Option<State>,
    /// A local edit not yet sent.
    pending: Option<Change>,
    /// Part of the push in the outbox (sent, answer not yet seen): not edited meanwhile.
    inflight: bool,
}

impl Local {
    /// What the device shows: its pending edit, else the server's state.
    fn view(&self) -> Option<(bool, &Value)> {
        match (&self.pending, &self.known) {
            (Some(p), _) => Some((p.deleted, &p.data)),
            (None, Some(k)) => Some((k.deleted, &k.data)),
            (None, None) => None,
        }
    }
}

#[derive(Clone)]
struct Sent {
    key: Key,
    change: Change,
}

/// A push sent whose answer the device has not (yet) taken in.
struct Outbox {
    push_id: String,
    body: String,
    sent: Vec<Sent>,
    /// The answer the device "lost": a retry must return exactly it.
    stashed: Option<Vec<u8>>,
    /// What the lost answer told, for when the retry's answer arrives.
    adopt: Vec<(Key, Option<State>)>,
}

struct Device {
    name: String,
    api: Api,
    recs: BTreeMap<Key, Local>,
    cursor: Option<String>,
    outbox: Option<Outbox>,
    pushes: u64,
}

struct ConflictRec {
    device: String,
    key: Key,
    incoming: Value,
    server: Option<Value>,
    expect: &'static str,
}

/// Counters of one or many runs.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub requests: u64,
    pub pushes: u64,
    pub records: u64,
    pub applied: u64,
    pub merged: u64,
    pub conflicts: u64,
    pub replays: u64,
    pub lost_answers: u64,
    pub mismatched_push_ids: u64,
    pub pulls: u64,
    pub resolutions: u64,
    pub gone: u64,
    pub transport_retries: u64,
    pub acked_writes: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.requests += o.requests;
        self.pushes += o.pushes;
        self.records += o.records;
        self.applied += o.applied;
        self.merged += o.merged;
        self.conflicts += o.conflicts;
        self.replays += o.replays;
        self.lost_answers += o.lost_answers;
        self.mismatched_push_ids += o.mismatched_push_ids;
        self.pulls += o.pulls;
        self.resolutions += o.resolutions;
        self.gone += o.gone;
        self.transport_retries += o.transport_retries;
        self.acked_writes += o.acked_writes;
    }
}

/// Parameters of one seed.
#[derive(Clone, Debug)]
pub struct SimOpts {
    pub seed: u64,
    pub devices: usize,
    pub ops: usize,
    /// The user all devices sync as (distinct per seed).
    pub user: String,
    /// Retry transport failures (through the fault proxy); otherwise one is a failure.
    pub faults: bool,
}

/// One seed's simulation.
pub struct Sim {
    opts: SimOpts,
    rng: Rng,
    devices: Vec<Device>,
    /// Every (record, version) the server ever showed, with where it was seen.
    ledger: HashMap<(Key, u64), (State, String)>,
    /// The highest version acknowledged per record.
    acked: HashMap<Key, u64>,
    conflicts: BTreeMap<String, ConflictRec>,
    /// pushId → the answer first received.
    pub answers: HashMap<String, Vec<u8>>,
    next_id: u64,
    pub stats: Stats,
    trace: Vec<String>,
}

/// Url-encodes a cursor.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const WORDS: [&str; 6] = ["alpha", "beta", "gamma", "delta", "eps", "zeta"];

impl Sim {
    pub fn new(opts: SimOpts, apis: Vec<Api>) -> Sim {
        let devices = apis
            .into_iter()
            .enumerate()
            .map(|(i, api)| Device {
                name: format!("d{i}"),
                api,
                recs: BTreeMap::new(),
                cursor: None,
                outbox: None,
                pushes: 0,
            })
            .collect();
        Sim {
            rng: Rng::new(opts.seed),
            opts,
            devices,
            ledger: HashMap::new(),
            acked: HashMap::new(),
            conflicts: BTreeMap::new(),
            answers: HashMap::new(),
            next_id: 0,
            stats: Stats::default(),
            trace: Vec::new(),
        }
    }

    /// The last actions, for a failure report.
    pub fn trace_tail(&self) -> String {
        self.trace[self.trace.len().saturating_sub(12)..].join("\n  ")
    }

    fn note(&mut self, s: String) {
        if self.trace.len() >= 4096 {
            self.trace.drain(..2048);
        }
        self.trace.push(s);
    }

    /// Runs the random phase, the final sync and the checks.
    pub async fn run(&mut self) -> Outcome<()> {
        for step in 0..self.opts.ops {
            let d = self.rng.index(self.devices.len());
            let roll = self.rng.below(100);
            let r = match roll {
                0..=29 => self.create(d),
                30..=49 => self.edit(d),
                50..=57 => self.delete(d),
                58..=76 => self.push(d).await,
                77..=92 => self.pull(d).await,
                _ => self.resolve(d).await,
            };
            r.map_err(|e| format!("step {step} (device d{d}): {e}"))?;
        }
        self.sync_all().await?;
        self.check().await
    }

    async fn call(&mut self, d: usize, method: &str, path: &str, body: Option<&str>) -> Outcome<(Resp, u32)> {
        let api = self.devices[d].api.clone();
        let mut failures = 0u32;
        loop {
            self.stats.requests += 1;
            let r = match body {
                Some(b) => api.post(path, b.to_string()).await,
                None => api.get(path).await,
            };
            match r {
                Ok(resp) if resp.status >= 500 => {
                    return Err(format!("{method} {path} answered {}: {}", resp.status, resp.text()));
                }
                Ok(resp) => return Ok((resp, failures)),
                Err(e) if self.opts.faults && failures < 40 => {
                    failures += 1;
                    self.stats.transport_retries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => return Err(format!("{method} {path}: {e} (after {failures} retries)")),
            }
        }
    }

    fn fresh_id(&mut self, d: usize) -> String {
        self.next_id += 1;
        format!("{}-{}", self.devices[d].name, self.next_id)
    }

    /// A reference value for `field` pointing at a record of `parent` this device knows.
    fn pick_ref(&mut self, d: usize, parent: usize) -> Value {
        // Live parents; a deleted one now and then (tombstones still count as parents).
        let candidates: Vec<(String, bool)> = self.devices[d]
            .recs
            .iter()
            .filter(|(k, _)| k.0 == parent)
            .filter_map(|(k, l)| l.view().map(|(deleted, _)| (k.1.clone(), deleted)))
            .collect();
        let mut live = Vec::new();
        for (id, deleted) in candidates {
            if !deleted || self.rng.chance(0.1) {
                live.push(id);
            }
        }
        if live.is_empty() || self.rng.chance(0.05) { Value::Null } else { json!(live[self.rng.index(live.len())]) }
    }

    fn fresh_data(&mut self, d: usize, t: usize) -> Value {
        let mut data = match TYPES[t].policy {
            Policy::VersionWins => json!({"stars": self.rng.range(1, 5)}),
            Policy::TombstoneWins => json!({"pos": self.rng.below(4)}),
            Policy::AppendOnly => json!({"text": WORDS[self.rng.index(6)], "n": self.rng.below(1000)}),
            Policy::FieldMerge => json!({
                "title": WORDS[self.rng.index(6)],
                "body": WORDS[self.rng.index(6)],
                "n": self.rng.below(5),
                "tags": [WORDS[self.rng.index(6)]],
            }),
        };
        for &(field, parent) in TYPES[t].refs {
            let v = self.pick_ref(d, parent);
            if !v.is_null() || self.rng.chance(0.5) {
                data[field] = v;
            }
        }
        data
    }

    fn create(&mut self, d: usize) -> Outcome<()> {
        // Parents more often than children, so children have something to name.
        let t = [0, 0, 1, 1, 2, 3, 4, 5, 5, 6, 6, 7, 7][self.rng.index(13)];
        let id = self.fresh_id(d);
        let data = self.fresh_data(d, t);
        self.note(format!("d{d} create {}/{id}", TYPES[t].name));
        let local = Local {
            known: None,
            pending: Some(Change { version: 1, base: 0, deleted: false, data, omit_data: false }),
            inflight: false,
        };
        self.devices[d].recs.insert((t, id), local);
        Ok(())
    }

    /// A record this device may change now (not in flight), alive or (rarely) deleted.
    fn pick_editable(&mut self, d: usize, deleted_ok: bool) -> Option<Key> {
        let keys: Vec<Key> = self.devices[d]
            .recs
            .iter()
            .filter(|(_, l)| !l.inflight && l.view().is_some_and(|(del, _)| deleted_ok || !del))
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() { None } else { Some(keys[self.rng.index(keys.len())].clone()) }
    }

    fn change(&mut self, d: usize, key: &Key, deleted: bool, data: Value, omit_data: bool) {
        let bump = if TYPES[key.0].policy == Policy::VersionWins && self.rng.chance(0.3) { 2 } else { 1 };
        let Some(local) = self.devices[d].recs.get_mut(key) else { return };
        let known_v = local.known.as_ref().map_or(0, |k| k.version);
        let (version, base) = match &local.pending {
            Some(p) => (p.version.max(known_v) + bump, p.base),
            None => (known_v + bump, known_v),
        };
        local.pending = Some(Change { version, base, deleted, data, omit_data });
    }

    fn edit(&mut self, d: usize) -> Outcome<()> {
        let undelete = self.rng.chance(0.08);
        let Some(key) = self.pick_editable(d, undelete) else { return Ok(()) };
        let t = key.0;
        // Append-only records are meant to stay as written: edit them rarely (a conflict).
        if TYPES[t].policy == Policy::AppendOnly && !self.rng.chance(0.15) {
            return Ok(());
        }
        let Some((_, current)) = self.devices[d].recs.get(&key).and_then(Local::view) else { return Ok(()) };
        let mut data = current.clone();
        if !data.is_object() {
            data = json!({});
        }
        match TYPES[t].policy {
            Policy::VersionWins => data["stars"] = json!(self.rng.range(1, 5)),
            Policy::TombstoneWins => data["pos"] = json!(self.rng.below(4)),
            Policy::AppendOnly => data["text"] = json!(format!("edited {}", self.rng.below(3))),
            Policy::FieldMerge => {
                for _ in 0..self.rng.range(1, 2) {
                    match self.rng.below(4) {
                        0 => data["title"] = json!(WORDS[self.rng.index(6)]),
                        1 => data["body"] = json!(WORDS[self.rng.index(6)]),
                        2 => data["n"] = json!(self.rng.below(5)),
                        _ => data["tags"] = json!([WORDS[self.rng.index(6)], WORDS[self.rng.index(6)]]),
                    }
                }
            }
        }
        if self.rng.chance(0.15) {
            for &(field, parent) in TYPES[t].refs {
                data[field] = self.pick_ref(d, parent);
            }
        }
        self.note(format!("d{d} edit {}", show(&key)));
        self.change(d, &key, false, data, false);
        Ok(())
    }

    fn delete(&mut self, d: usize) -> Outcome<()> {
        let Some(key) = self.pick_editable(d, false) else { return Ok(()) };
        if TYPES[key.0].policy == Policy::AppendOnly && !self.rng.chance(0.15) {
            return Ok(());
        }
        let Some((_, current)) = self.devices[d].recs.get(&key).and_then(Local::view) else { return Ok(()) };
        let data = current.clone();
        let omit = self.rng.chance(0.3);
        self.note(format!("d{d} delete {}", show(&key)));
        self.change(d, &key, true, data, omit);
        Ok(())
    }

    /// Pushes the outbox if any (the same pushId and body), else every pending change.
    async fn push(&mut self, d: usize) -> Outcome<()> {
        if self.devices[d].outbox.is_none() {
            let dev = &mut self.devices[d];
            let mut changes: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
            let mut sent = Vec::new();
            for (key, local) in dev.recs.iter_mut() {
                if local.inflight {
                    continue;
                }
                if let Some(change) = local.pending.take() {
                    changes.entry(key.0).or_default().push(change.wire(&key.1));
                    local.inflight = true;
                    sent.push(Sent { key: key.clone(), change });
                }
            }
            if sent.is_empty() {
                return Ok(());
            }
            dev.pushes += 1;
            let push_id = format!("{}-s{}-{}-p{}", self.opts.user, self.opts.seed, dev.name, dev.pushes);
            // Types in a shuffled order: the server must order them by references itself.
            let mut order: Vec<usize> = changes.keys().copied().collect();
            for i in (1..order.len()).rev() {
                let j = self.rng.index(i + 1);
                order.swap(i, j);
            }
            let mut body = format!(r#"{{"clientId":"{}","pushId":"{push_id}","changes":{{"#, dev.name);
            for (n, t) in order.iter().enumerate() {
                if n > 0 {
                    body.push(',');
                }
                body.push_str(&format!(r#""{}":{}"#, TYPES[*t].name, Value::Array(changes[t].clone())));
            }
            body.push_str("}}");
            dev.outbox = Some(Outbox { push_id, body, sent, stashed: None, adopt: Vec::new() });
        }
        let Some(outbox) = self.devices[d].outbox.as_ref() else { return Ok(()) };
        let (push_id, body, stashed) = (outbox.push_id.clone(), outbox.body.clone(), outbox.stashed.clone());
        self.note(format!("d{d} push {push_id}{}", if stashed.is_some() { " (retry)" } else { "" }));
        let (resp, _) = self.call(d, "POST", "/api/sync/push", Some(&body)).await?;
        self.stats.pushes += 1;
        if resp.status != 200 {
            return Err(format!("push {push_id} answered {}: {}", resp.status, resp.text()));
        }
        if let Some(first) = stashed {
            self.stats.replays += 1;
            if first != resp.body {
                return Err(format!(
                    "pushId {push_id} repeated: answer differs\n first: {}\n again: {}",
                    String::from_utf8_lossy(&first),
                    resp.text()
                ));
            }
        }
        let adopt = match self.devices[d].outbox.as_mut() {
            Some(o) if o.stashed.is_some() => std::mem::take(&mut o.adopt),
            Some(o) => {
                let sent = o.sent.clone();
                self.outcome(d, &sent, &push_id, &resp)?
            }
            None => return Ok(()),
        };
        self.answers.entry(push_id.clone()).or_insert_with(|| resp.body.clone());
        // Sometimes the answer is lost on the way: keep the outbox, retry later.
        if self.rng.chance(0.15) {
            self.stats.lost_answers += 1;
            if let Some(o) = self.devices[d].outbox.as_mut() {
                o.stashed = Some(resp.body);
                o.adopt = adopt;
            }
            return Ok(());
        }
        // Sometimes the device sends it again at once, or sends other records under the same pushId.
        if self.rng.chance(0.1) {
            let (again, _) = self.call(d, "POST", "/api/sync/push", Some(&body)).await?;
            self.stats.replays += 1;
            if again.status != 200 || again.body != resp.body {
                return Err(format!(
                    "pushId {push_id} repeated at once: answer differs\n first: {}\n again: {} {}",
                    resp.text(),
                    again.status,
                    again.text()
                ));
            }
        } else if self.rng.chance(0.05) {
            let other = body.replacen(r#""version":"#, r#""version":9"#, 1);
            let (bad, _) = self.call(d, "POST", "/api/sync/push", Some(&other)).await?;
            self.stats.mismatched_push_ids += 1;
            if bad.status != 422 {
                return Err(format!(
                    "pushId {push_id} reused with other records: expected 422, got {} {}",
                    bad.status,
                    bad.text()
                ));
            }
        }
        self.take_answer(d, adopt);
        Ok(())
    }

    /// The device takes in an answer: adopts the server's records, forgets what was in flight.
    fn take_answer(&mut self, d: usize, adopt: Vec<(Key, Option<State>)>) {
        self.devices[d].outbox = None;
        for (key, state) in adopt {
            if let Some(state) = state {
                self.adopt(d, &key, state);
            }
            if let Some(local) = self.devices[d].recs.get_mut(&key) {
                local.inflight = false;
                if local.known.is_none() && local.pending.is_none() {
                    // A new record the server did not keep (a conflict without a server record).
                    self.devices[d].recs.remove(&key);
                }
            }
        }
    }

    /// What the server did with a push, as its answer says (the first time it is received):
    /// the ledger, acknowledged writes and conflicts learn it at once, and the
    /// device's share is returned for when it takes the answer in.
    fn outcome(
        &mut self,
        d: usize,
        sent_list: &[Sent],
        push_id: &str,
        resp: &Resp,
    ) -> Outcome<Vec<(Key, Option<State>)>> {
        let v = resp.json("push")?;
        let results = v.get("results").and_then(Value::as_object).ok_or_else(|| format!("push: no results: {v}"))?;
        let mut count = 0;
        for list in results.values() {
            count += list.as_array().map_or(0, Vec::len);
        }
        if count != sent_list.len() {
            return Err(format!("push {push_id}: {count} results for {} records: {v}", sent_list.len()));
        }
        let device = self.devices[d].name.clone();
        let mut adopt_list = Vec::new();
        for sent in sent_list.iter().cloned() {
            let (t, id) = &sent.key;
            let r = results
                .get(TYPES[*t].name)
                .and_then(Value::as_array)
                .and_then(|l| l.iter().find(|r| r.get("id").and_then(Value::as_str) == Some(id.as_str())))
                .ok_or_else(|| format!("push {push_id}: no result for {}", show(&sent.key)))?;
            let status = r.get("status").and_then(Value::as_str).unwrap_or("");
            let server_version = r.get("serverVersion").and_then(Value::as_u64);
            self.stats.records += 1;
            let source = format!("push {push_id} answer");
            let adopted = match status {
                "applied" | "unchanged" => {
                    let sv = server_version.ok_or_else(|| format!("{source}: {status} without serverVersion: {r}"))?;
                    if sv < sent.change.version {
                        return Err(format!("{source}: serverVersion {sv} below the pushed version: {r}"));
                    }
                    self.stats.applied += 1;
                    Some(sent.change.stored(sv))
                }
                "merged" => {
                    self.stats.merged += 1;
                    let rec = r.get("record").and_then(State::from_wire);
                    let rec = rec.ok_or_else(|| format!("{source}: merged without a record: {r}"))?;
                    if Some(rec.version) != server_version {
                        return Err(format!("{source}: merged record's version is not serverVersion: {r}"));
                    }
                    Some(rec)
                }
                "conflict" => {
                    self.stats.conflicts += 1;
                    let cid = r.get("conflictId").and_then(Value::as_str);
                    let cid = cid.ok_or_else(|| format!("{source}: conflict without conflictId: {r}"))?;
                    let server = r.get("record").cloned();
                    let server_state = server.as_ref().and_then(State::from_wire);
                    if let Some(s) = &server_state {
                        self.observe(&sent.key, s, &source)?;
                    }
                    adopt_list.push((sent.key.clone(), server_state));
                    let mut incoming = sent.change.wire(id);
                    if sent.change.omit_data {
                        incoming["data"] = json!({});
                    }
                    let rec =
                        ConflictRec { device: device.clone(), key: sent.key.clone(), incoming, server, expect: "open" };
                    if self.conflicts.insert(cid.to_string(), rec).is_some() {
                        return Err(format!("{source}: conflictId {cid} given twice"));
                    }
                    None
                }
                _ => return Err(format!("{source}: unexpected status for {}: {r}", show(&sent.key))),
            };
            if let Some(state) = adopted {
                self.observe(&sent.key, &state, &source)?;
                let top = self.acked.entry(sent.key.clone()).or_insert(0);
                *top = (*top).max(state.version);
                self.stats.acked_writes += 1;
                // A newer version from this device supersedes its open conflicts on the record.
                for c in self.conflicts.values_mut() {
                    if status != "unchanged" && c.device == device && c.key == sent.key && c.expect == "open" {
                        c.expect = "superseded";
                    }
                }
                adopt_list.push((sent.key.clone(), Some(state)));
            }
        }
        Ok(adopt_list)
    }

    /// Records that the server showed `state` for `key`; a different record under a version seen before is a failure.
    fn observe(&mut self, key: &Key, state: &State, source: &str) -> Outcome<()> {
        match self.ledger.get(&(key.clone(), state.version)) {
            Some((seen, from)) if seen != state => Err(format!(
                "{} version {}: two different records: {:?} (from {from}) and {:?} (from {source})",
                show(key),
                state.version,
                seen,
                state
            )),
            Some(_) => Ok(()),
            None => {
                self.ledger.insert((key.clone(), state.version), (state.clone(), source.to_string()));
                Ok(())
            }
        }
    }

    /// The device learns a server state (never an older one).
    fn adopt(&mut self, d: usize, key: &Key, state: State) {
        let local = self.devices[d].recs.entry(key.clone()).or_default();
        if local.known.as_ref().is_none_or(|k| k.version <= state.version) {
            local.known = Some(state);
        }
    }

    /// One small page from the device's own cursor. Returns whether more remain.
    async fn pull_page(&mut self, d: usize, limit: u64) -> Outcome<bool> {
        let mut path = format!("/api/sync/pull?limit={limit}");
        if let Some(c) = &self.devices[d].cursor {
            path.push_str(&format!("&since={}", enc(c)));
        }
        let (resp, _) = self.call(d, "GET", &path, None).await?;
        self.stats.pulls += 1;
        if resp.status == 410 {
            self.stats.gone += 1;
            self.devices[d].cursor = None;
            return Ok(true);
        }
        if resp.status != 200 {
            return Err(format!("GET {path} answered {}: {}", resp.status, resp.text()));
        }
        let v = resp.json("pull")?;
        let changes = v.get("changes").and_then(Value::as_object).ok_or_else(|| format!("pull: no changes: {v}"))?;
        let mut n = 0;
        for (ty, list) in changes {
            let t = type_index(ty).ok_or_else(|| format!("pull: unknown type {ty}"))?;
            for r in list.as_array().into_iter().flatten() {
                n += 1;
                let id = r.get("id").and_then(Value::as_str).ok_or_else(|| format!("pull: record without id: {r}"))?;
                let state = State::from_wire(r).ok_or_else(|| format!("pull: malformed record: {r}"))?;
                let key = (t, id.to_string());
                self.observe(&key, &state, "pull")?;
                if let Some(k) = self.devices[d].recs.get(&key).and_then(|l| l.known.as_ref())
                    && k.version > state.version
                {
                    return Err(format!(
                        "pull returned {} version {} but this device already saw version {}",
                        show(&key),
                        state.version,
                        k.version
                    ));
                }
                self.adopt(d, &key, state);
            }
        }
        if n as u64 > limit {
            return Err(format!("pull with limit {limit} returned {n} records"));
        }
        let cursor = v.get("cursor").and_then(Value::as_str).ok_or_else(|| format!("pull: no cursor: {v}"))?;
        self.devices[d].cursor = Some(cursor.to_string());
        v.get("hasMore").and_then(Value::as_bool).ok_or_else(|| format!("pull: no hasMore: {v}"))
    }

    async fn pull(&mut self, d: usize) -> Outcome<()> {
        let limit = self.rng.range(1, 8);
        self.note(format!("d{d} pull limit {limit}"));
        for _ in 0..self.rng.range(1, 3) {
            if !self.pull_page(d, limit).await? {
                break;
            }
        }
        Ok(())
    }

    /// Every conflict of `status`, paging in small pages.
    async fn list_conflicts(&mut self, d: usize, status: &str) -> Outcome<Vec<Value>> {
        let limit = self.rng.range(1, 7);
        let mut after: Option<String> = None;
        let mut all = Vec::new();
        for _ in 0..10_000 {
            let mut path = format!("/api/sync/conflicts?status={status}&limit={limit}");
            if let Some(a) = &after {
                path.push_str(&format!("&after={}", enc(a)));
            }
            let (resp, _) = self.call(d, "GET", &path, None).await?;
            if resp.status != 200 {
                return Err(format!("GET {path} answered {}: {}", resp.status, resp.text()));
            }
            let v = resp.json("conflicts")?;
            let page = v.get("conflicts").and_then(Value::as_array).ok_or_else(|| format!("conflicts: {v}"))?;
            all.extend(page.iter().cloned());
            if !v.get("hasMore").and_then(Value::as_bool).unwrap_or(false) {
                return Ok(all);
            }
            after = v.get("cursor").and_then(Value::as_str).map(str::to_string);
            if after.is_none() {
                return Err(format!("conflicts: hasMore without a cursor: {v}"));
            }
        }
        Err("conflicts: more than 10,000 pages".into())
    }

    async fn resolve(&mut self, d: usize) -> Outcome<()> {
        let open = self.list_conflicts(d, "open").await?;
        if open.is_empty() {
            return Ok(());
        }
        for c in &open {
            let id = c.get("id").and_then(Value::as_str).unwrap_or("");
            match self.conflicts.get(id) {
                Some(rec) if rec.expect == "open" => {}
                Some(rec) => return Err(format!("conflict {id} listed open, expected {}: {c}", rec.expect)),
                None => return Err(format!("conflict {id} listed open but no push answer named it: {c}")),
            }
        }
        let c = &open[self.rng.index(open.len())];
        let id = c.get("id").and_then(Value::as_str).unwrap_or("").to_string();
        let Some(key) = self.conflicts.get(&id).map(|r| r.key.clone()) else { return Ok(()) };
        let body = match self.rng.below(3) {
            0 => json!({"take": "server"}),
            1 => json!({"take": "incoming"}),
            _ => {
                let mut data = c.pointer("/incoming/data").cloned().unwrap_or_else(|| json!({}));
                if !data.is_object() {
                    data = json!({});
                }
                data["resolvedBy"] = json!(format!("d{d}"));
                json!({"record": {"data": data, "deleted": false}})
            }
        };
        self.note(format!("d{d} resolve {id} ({}) with {body}", show(&key)));
        let path = format!("/api/sync/conflicts/{id}/resolve");
        let (resp, retried) = self.call(d, "POST", &path, Some(&body.to_string())).await?;
        if resp.status == 409 && retried > 0 {
            // The first attempt went through; its answer was lost.
            if let Some(r) = self.conflicts.get_mut(&id) {
                r.expect = "resolved";
            }
            return Ok(());
        }
        if resp.status != 200 {
            return Err(format!("POST {path} answered {}: {}", resp.status, resp.text()));
        }
        self.stats.resolutions += 1;
        let v = resp.json("resolve")?;
        if v.get("status").and_then(Value::as_str) != Some("resolved") {
            return Err(format!("resolve {id}: {v}"));
        }
        let state =
            v.get("record").and_then(State::from_wire).ok_or_else(|| format!("resolve {id}: no record: {v}"))?;
        self.observe(&key, &state, &format!("resolution of {id}"))?;
        let top = self.acked.entry(key.clone()).or_insert(0);
        *top = (*top).max(state.version);
        if let Some(r) = self.conflicts.get_mut(&id) {
            r.expect = "resolved";
        }
        self.adopt(d, &key, state);
        Ok(())
    }

    /// Every device sends what it has (outbox first), then pulls to the end.
    pub async fn sync_all(&mut self) -> Outcome<()> {
        for d in 0..self.devices.len() {
            for _ in 0..4 {
                let busy = self.devices[d].outbox.is_some()
                    || self.devices[d].recs.values().any(|l| l.pending.is_some() || l.inflight);
                if !busy {
                    break;
                }
                self.push(d).await?;
                // A lost answer in the final sync is retried at once.
                if self.devices[d].outbox.is_some() {
                    self.push(d).await?;
                }
            }
        }
        for d in 0..self.devices.len() {
            let limit = self.rng.range(2, 20);
            let mut done = false;
            for _ in 0..100_000 {
                if !self.pull_page(d, limit).await? {
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(format!("d{d}: pull never ended"));
            }
        }
        Ok(())
    }

    /// The checker: replicas, acknowledged writes, conflicts.
    pub async fn check(&mut self) -> Outcome<()> {
        // The server's state, read from the beginning by a fresh reader.
        let reader = self.devices.len();
        let api = self.devices[0].api.clone();
        self.devices.push(Device {
            name: "checker".into(),
            api,
            recs: BTreeMap::new(),
            cursor: None,
            outbox: None,
            pushes: 0,
        });
        let mut ended = false;
        for _ in 0..100_000 {
            if !self.pull_page(reader, 1000).await? {
                ended = true;
                break;
            }
        }
        if !ended {
            return Err("checker: pull never ended".into());
        }
        let Some(checker) = self.devices.pop() else { return Err("checker vanished".into()) };
        let server: BTreeMap<Key, State> =
            checker.recs.into_iter().filter_map(|(k, l)| l.known.map(|s| (k, s))).collect();
        for dev in &self.devices {
            if dev.outbox.is_some() {
                return Err(format!("{}: outbox not empty after the final sync", dev.name));
            }
            for (key, local) in &dev.recs {
                if local.pending.is_some() || local.inflight {
                    return Err(format!("{}: {} still pending after the final sync", dev.name, show(key)));
                }
                match (&local.known, server.get(key)) {
                    (Some(mine), Some(theirs)) if mine == theirs => {}
                    (mine, theirs) => {
                        return Err(format!(
                            "replica {} differs from the server on {}: device {:?}, server {:?}",
                            dev.name,
                            show(key),
                            mine,
                            theirs
                        ));
                    }
                }
            }
            if let Some(key) = server.keys().find(|k| !dev.recs.contains_key(*k)) {
                return Err(format!("replica {} lacks {} that the server holds", dev.name, show(key)));
            }
        }
        for (key, v) in &self.acked {
            match server.get(key) {
                Some(s) if s.version >= *v => {}
                other => {
                    return Err(format!(
                        "acknowledged {} version {v} is gone: server holds {:?}",
                        show(key),
                        other.map(|s| s.version)
                    ));
                }
            }
        }
        let listed = self.list_conflicts(0, "all").await?;
        let mut seen = std::collections::BTreeSet::new();
        for c in &listed {
            let id = c.get("id").and_then(Value::as_str).unwrap_or("").to_string();
            let Some(rec) = self.conflicts.get(&id) else {
                return Err(format!("conflict {id} listed but no push answer named it: {c}"));
            };
            let status = c.get("status").and_then(Value::as_str).unwrap_or("");
            if status != rec.expect {
                return Err(format!("conflict {id} on {} is {status}, expected {}: {c}", show(&rec.key), rec.expect));
            }
            if c.get("entity").and_then(Value::as_str) != Some(TYPES[rec.key.0].name)
                || c.get("recordId").and_then(Value::as_str) != Some(rec.key.1.as_str())
            {
                return Err(format!("conflict {id}: wrong entity or recordId: {c}"));
            }
            if c.get("incoming") != Some(&rec.incoming) {
                return Err(format!("conflict {id}: incoming differs from what was pushed {}: {c}", rec.incoming));
            }
            let listed_server = c.get("server").and_then(State::from_wire);
            let answered = rec.server.as_ref().and_then(State::from_wire);
            if listed_server != answered && !(listed_server.is_none() && status != "open") {
                return Err(format!("conflict {id}: server record differs from the push answer's {:?}: {c}", answered));
            }
            seen.insert(id);
        }
        if let Some(missing) = self.conflicts.keys().find(|id| !seen.contains(*id)) {
            return Err(format!("conflict {missing} answered to a push is not listed"));
        }
        Ok(())
    }
}
