//! Merge policies as WebAssembly components (wasmtime, component model).
//!
//! Each policy is compiled once (and its artifact cached on disk keyed by the
//! component's hash, so a restart maps it instead of recompiling), pre-linked into an
//! `InstancePre`, and called on a reused instance. Every call gets a fresh CPU
//! deadline; every instance has a memory cap and a bounded stack. A call that
//! traps, times out, runs out of memory or returns invalid output is a
//! [`PolicyFailure`]: its instance is thrown away (wasmtime will not re-enter a
//! trapped instance) and the next call builds a fresh one. Policies know WIT,
//! not HTTP, and never see the database.

mod bindings;
pub mod builtin;
pub mod cases;
pub mod reload;
mod sandbox;
mod set;
pub mod shadow;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

use crate::config::PoliciesConfig;
use crate::model::{Decision, MergeInput, hex, now_ms};
use sandbox::Sandbox;

pub use bindings::{Mode, WORLD};
pub use set::{Binding, Policies, PolicySet, cache_dir, load_all, load_named};

/// The epoch ticks once a millisecond while a call is in flight (and not at
/// all when none is, so an idle server does not wake); a call's deadline is
/// `cpu_ms` ticks.
const TICK: Duration = Duration::from_millis(1);
/// A reused instance is replaced after this many calls, so guest-side leaks stay bounded.
const CALLS_PER_INSTANCE: u64 = 10_000;
/// Longest reason text kept from a policy.
pub const MAX_REASON: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot set up the policy runtime: {0}")]
    Runtime(String),
    #[error("{what}: cannot read {path}: {source}")]
    Read { what: String, path: PathBuf, source: std::io::Error },
    #[error("{what}: {origin} is not a valid WebAssembly component: {reason}")]
    Invalid { what: String, origin: String, reason: String },
    #[error("{what}: {origin} is not an Accord merge policy: {reason}")]
    WrongWorld { what: String, origin: String, reason: String },
    #[error("{what}: no policy named `{name}` (looked for {path}; built-ins are {builtins})")]
    Unknown { what: String, name: String, path: PathBuf, builtins: String },
}

/// Why one call failed; becomes a `conflict` with reason `policy failed: …`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFailure {
    #[error("exceeded its CPU limit of {0} ms")]
    Timeout(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned invalid output: {0}")]
    InvalidOutput(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    /// The policy's own `fail(reason)` (WIT 0.2): its settings or data are not what it needs.
    #[error("{0}")]
    Failed(String),
}

/// Limits applied to every policy call, from `[policies]`.
#[derive(Clone, Debug)]
pub struct Limits {
    pub cpu_ms: u64,
    pub memory_bytes: usize,
    pub max_output_bytes: usize,
}

/// The engine, the linker (WASI sandbox) and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    limits: Limits,
    ticker: Arc<Ticker>,
    cache_dir: PathBuf,
    /// Part of every cached artifact's name: wasmtime version and engine settings.
    engine_key: String,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
        self.ticker.wake.notify_all();
    }
}

/// How long the ticker keeps ticking after the last call ended: a push's
/// calls follow each other closely, and waking a sleeping ticker costs a
/// system call per call; an idle server still sleeps.
const TICK_GRACE: Duration = Duration::from_millis(200);

/// Drives the engine's epoch while policy calls run (and `TICK_GRACE` after).
#[derive(Default)]
struct Ticker {
    in_flight: AtomicUsize,
    /// True while the ticker thread waits for a call (set before its last check).
    asleep: AtomicBool,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A call in flight: the ticker ticks until the last one ends.
struct InFlight<'a>(&'a Ticker);

impl Ticker {
    fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        // Only a sleeping ticker needs waking. It sets `asleep` before it reads
        // `in_flight` (both SeqCst): either it sees this call, or this sees it asleep.
        if self.asleep.load(Ordering::SeqCst) {
            // Under the lock, so the ticker is either before its check or waiting.
            let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.notify_one();
        }
        InFlight(self)
    }

    /// The ticker thread: ticks every `TICK` while a call runs and for
    /// `TICK_GRACE` after the last one; sleeps otherwise.
    fn run(&self, engine: &wasmtime::EngineWeak) {
        let mut last_busy = std::time::Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                last_busy = std::time::Instant::now();
            } else if last_busy.elapsed() >= TICK_GRACE {
                let mut held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
                self.asleep.store(true, Ordering::SeqCst);
                while self.in_flight.load(Ordering::SeqCst) == 0 && !self.stop.load(Ordering::Relaxed) {
                    held = match self.wake.wait_timeout(held, Duration::from_secs(1)) {
                        Ok((held, _)) => held,
                        Err(p) => p.into_inner().0,
                    };
                }
                self.asleep.store(false, Ordering::SeqCst);
                last_busy = std::time::Instant::now();
            }
            std::thread::sleep(TICK);
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Runtime {
    pub fn new(
        config: &PoliciesConfig,
        cache_dir: &Path,
        max_output_bytes: usize,
    ) -> Result<Arc<Runtime>, PolicyError> {
        let err = |e: wasmtime::Error| PolicyError::Runtime(format!("{e:#}"));
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true);
        wasm.epoch_interruption(true);
        // Policies are called synchronously, one at a time per instance: without
        // the async component machinery an empty call costs ~0.4 µs less.
        wasm.concurrency_support(false);
        wasm.max_wasm_stack(config.stack_kib * 1024);
        let engine = Engine::new(&wasm).map_err(err)?;
        std::fs::create_dir_all(cache_dir)
            .map_err(|e| PolicyError::Runtime(format!("cannot create {}: {e}", cache_dir.display())))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(err)?;
        bindings::add_to_linker(&mut linker).map_err(err)?;
        let ticker = Arc::new(Ticker::default());
        let (weak, t) = (engine.weak(), ticker.clone());
        std::thread::Builder::new()
            .name("accord-epoch".into())
            .spawn(move || t.run(&weak))
            .map_err(|e| PolicyError::Runtime(e.to_string()))?;
        let limits = Limits { cpu_ms: config.cpu_ms, memory_bytes: config.memory_mib * 1024 * 1024, max_output_bytes };
        let engine_key = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
            format!("{:016x}", std::hash::Hasher::finish(&h))
        };
        Ok(Arc::new(Runtime { engine, linker, limits, ticker, cache_dir: cache_dir.to_path_buf(), engine_key }))
    }

    /// Compiles a component, or maps its compiled artifact from the cache.
    ///
    /// Artifacts are keyed by the SHA-256 of the component and by the engine's
    /// compatibility hash (wasmtime version and settings), so a changed file or
    /// an upgraded Accord never picks up a stale artifact. Mapping a cached
    /// artifact takes a fraction of a millisecond; compiling takes ~100 ms.
    fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        let key = hex(&Sha256::digest(bytes));
        let path = self.cache_dir.join(format!("{key}-{}.cwasm", self.engine_key));
        if path.is_file() {
            match self.map_artifact(&path) {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "discarding an unusable cached artifact"),
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        match component.serialize() {
            Ok(artifact) => {
                // Write then rename, so a concurrent reader never maps half a file.
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                if std::fs::write(&tmp, artifact).and_then(|()| std::fs::rename(&tmp, &path)).is_err() {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::warn!(dir = %self.cache_dir.display(), "cannot write to the policy cache; compiling on every start");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize a compiled policy"),
        }
        Ok(component)
    }

    #[allow(unsafe_code)]
    fn map_artifact(&self, path: &Path) -> wasmtime::Result<Component> {
        // SAFETY: `deserialize_file` trusts the file to be an artifact produced
        // by `Component::serialize`. Files in this cache are written only by
        // `compile` above (atomically, via rename) into Accord's own cache
        // directory, and their name carries this engine's compatibility hash;
        // wasmtime additionally rejects an artifact whose header does not match
        // the engine. The directory must not be writable by untrusted users
        // (documented under `policies.cache_dir`).
        unsafe { Component::deserialize_file(&self.engine, path) }
    }

    /// Compiles (or loads from cache) and checks a component. `what` names the
    /// entity type or command for error messages; `source` the file or built-in.
    pub fn load(
        self: &Arc<Self>,
        name: &str,
        bytes: &[u8],
        source: &str,
        what: &str,
    ) -> Result<Arc<Policy>, PolicyError> {
        let component = self.compile(bytes).map_err(|e| PolicyError::Invalid {
            what: what.into(),
            origin: source.into(),
            reason: format!("{e:#}"),
        })?;
        let wrong = |e: wasmtime::Error| PolicyError::WrongWorld {
            what: what.into(),
            origin: source.into(),
            reason: format!("{e:#}"),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(wrong)?;
        let pre = bindings::PolicyPre::new(pre).map_err(wrong)?;
        Ok(Arc::new(Policy {
            name: name.into(),
            source: source.into(),
            bytes: bytes.to_vec(),
            sha256: OnceLock::new(),
            loaded_at: now_ms(),
            runtime: self.clone(),
            pre,
            live: Mutex::new(None),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }))
    }
}

/// A live instance and how many calls it has served.
struct Live {
    store: Store<Sandbox>,
    instance: bindings::Instance,
    calls: u64,
}

/// One loaded policy component.
pub struct Policy {
    pub name: String,
    /// The file it came from, or `built-in`.
    pub source: String,
    /// The component as loaded (kept to report its hash; hashing at load would slow reloads).
    bytes: Vec<u8>,
    sha256: OnceLock<String>,
    pub loaded_at: i64,
    runtime: Arc<Runtime>,
    pre: bindings::PolicyPre<Sandbox>,
    live: Mutex<Option<Live>>,
    calls: AtomicU64,
    failures: AtomicU64,
}

impl Policy {
    /// SHA-256 of the component file, hex.
    pub fn sha256(&self) -> &str {
        self.sha256.get_or_init(|| hex(&Sha256::digest(&self.bytes)))
    }

    /// Counts a call answered without running the component (see `PolicySet::decide`).
    pub fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn instantiate(&self) -> Result<Live, PolicyFailure> {
        let mut store = Store::new(&self.runtime.engine, Sandbox::new(self.runtime.limits.memory_bytes));
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.runtime.limits.cpu_ms.max(1));
        // When the ticks run out, the thread's CPU clock decides (see `CallClock`).
        let window = Duration::from_millis(self.runtime.limits.cpu_ms).max(sandbox::MIN_WINDOW);
        let window_ticks = u64::try_from(window.as_millis() / TICK.as_millis()).unwrap_or(u64::MAX);
        store.epoch_deadline_callback(move |mut cx| {
            Ok(if cx.data_mut().clock.expired(sandbox::thread_cpu(), window) {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Continue(window_ticks)
            })
        });
        // Instantiation runs guest code too (initializers): it needs the ticker.
        let _ticking = self.runtime.ticker.enter();
        let instance = self.pre.instantiate(&mut store).map_err(|e| PolicyFailure::Instantiate(format!("{e:#}")))?;
        Ok(Live { store, instance, calls: 0 })
    }

    /// Runs the policy on one record. Blocking; call it off the async runtime.
    pub fn decide(&self, input: &MergeInput<'_>, settings: &str, mode: Mode) -> Result<Decision, PolicyFailure> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.call(input, settings, mode);
        if let Err(failure) = &result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(policy = %self.name, source = %self.source, entity = input.entity, record = %input.incoming.id,
                error = %failure, "policy call failed; the record is kept as a conflict");
        }
        result
    }

    /// [`Policy::decide`], with a failed call as the conflict the host keeps
    /// for it (`policy failed: …`): what a push, a shadow or a replay sees.
    pub fn decide_or_conflict(&self, input: &MergeInput<'_>, settings: &str, mode: Mode) -> Decision {
        self.decide(input, settings, mode)
            .unwrap_or_else(|failure| Decision::Conflict(format!("policy failed: {failure}")))
    }

    /// The world the component implements.
    pub fn world(&self) -> &'static str {
        self.pre.world()
    }

    fn call(&self, input: &MergeInput<'_>, settings: &str, mode: Mode) -> Result<Decision, PolicyFailure> {
        // A poisoned lock only means an earlier call panicked in the host; the slot is still usable.
        let mut slot = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut live = match slot.take() {
            Some(live) if live.calls < CALLS_PER_INSTANCE => live,
            _ => self.instantiate()?,
        };
        let limits = &self.runtime.limits;
        // The deadline is set right before each call, never once per instance.
        live.store.set_epoch_deadline(limits.cpu_ms.max(1));
        live.store.data_mut().clock = sandbox::CallClock::default();
        let _ticking = self.runtime.ticker.enter();
        match live.instance.call_decide(&mut live.store, input, settings, mode) {
            Ok(answer) => {
                live.calls += 1;
                *slot = Some(live);
                match answer {
                    bindings::Answer::Decision(decision) => validate(decision, limits),
                    bindings::Answer::Fail(reason) => Err(PolicyFailure::Failed(clip(reason))),
                }
            }
            // The instance is dropped here: a trapped instance is never re-entered.
            Err(e) => {
                tracing::debug!(policy = %self.name, error = ?e, "policy trap details");
                Err(match e.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => PolicyFailure::Timeout(limits.cpu_ms),
                    Some(trap) => PolicyFailure::Trap(trap.to_string()),
                    None => PolicyFailure::Trap(e.root_cause().to_string()),
                })
            }
        }
    }
}

/// A reason cut to `MAX_REASON` bytes (on a character boundary).
fn clip(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Checks what a policy returned before the host trusts it (also the
/// `policy_output` fuzz target's subject).
pub fn validate(decision: Decision, limits: &Limits) -> Result<Decision, PolicyFailure> {
    match decision {
        Decision::Merged { data, deleted } => {
            if data.len() > limits.max_output_bytes {
                return Err(PolicyFailure::InvalidOutput(format!(
                    "merged data is {} bytes, over the limit of {}",
                    data.len(),
                    limits.max_output_bytes
                )));
            }
            match serde_json::from_str::<JsonObject>(&data) {
                Ok(JsonObject) => Ok(Decision::Merged { data, deleted }),
                Err(e) if e.is_data() => Err(PolicyFailure::InvalidOutput("merged data is not a JSON object".into())),
                Err(e) => Err(PolicyFailure::InvalidOutput(format!("merged data is not JSON: {e}"))),
            }
        }
        Decision::Conflict(r) => Ok(Decision::Conflict(clip(r))),
        Decision::Reject(r) => Ok(Decision::Reject(clip(r))),
        Decision::Accept => Ok(Decision::Accept),
    }
}

/// Proof that a text is one JSON object, checked without building it (less
/// than half the cost of parsing it into a `Value`).
struct JsonObject;

impl<'de> serde::Deserialize<'de> for JsonObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = JsonObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JsonObject, A::Error> {
                use serde::de::IgnoredAny;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(JsonObject)
            }
        }
        d.deserialize_any(Visit)
    }
}
