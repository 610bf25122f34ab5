//! What a policy instance gets from the host: WASI with nothing behind it.
//!
//! A `wasm32-wasip2` guest imports WASI interfaces even when it uses none, so
//! they are linked — to a context with no files, no environment, no network,
//! empty stdin, discarded stdout/stderr, a clock frozen at the Unix epoch and
//! a random source that yields zeros. Policies stay pure and deterministic.

use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Per-instance host state.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: Limits,
    /// The input of the call in flight, for an 0.3 component to read.
    pub input: super::bindings::CallInput,
    /// The call in flight's use of its CPU limit.
    pub clock: CallClock,
}

/// What one instance may hold. `memory_bytes` bounds all its linear memories
/// together (a TypeScript or Python component brings several: its engine's,
/// its libraries', its stubs'), and the counts are generous enough for such
/// components while still bounded. Growth past the bound traps the call.
pub struct Limits {
    memory_bytes: usize,
    memory_used: usize,
}

/// Core instances, memories and tables per store: a componentize-py policy
/// needs 38 instances, a componentize-qjs one 3 memories.
const MAX_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 8;
const MAX_TABLES: usize = 64;
/// Elements per table (function references).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        if self.memory_used.saturating_add(grow) > self.memory_bytes {
            wasmtime::bail!(
                "memory limit exceeded: {} bytes across its memories (policies.memory_mib)",
                self.memory_bytes
            );
        }
        self.memory_used += grow;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            wasmtime::bail!("table limit exceeded: {desired} elements");
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl Sandbox {
    pub fn new(memory_bytes: usize) -> Sandbox {
        let wasi = WasiCtxBuilder::new()
            .wall_clock(Frozen)
            .monotonic_clock(Frozen)
            .secure_random(Zeros)
            .insecure_random(Zeros)
            .insecure_random_seed(0)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Sandbox {
            wasi,
            table: ResourceTable::new(),
            limits: Limits { memory_bytes, memory_used: 0 },
            input: Default::default(),
            clock: CallClock::default(),
        }
    }
}

/// A clock that always reads zero.
struct Frozen;

impl HostWallClock for Frozen {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A "random" source that yields zeros.
struct Zeros;

impl rand_core::TryRng for Zeros {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(0)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        dst.fill(0);
        Ok(())
    }
}

/// A call's CPU limit, measured on the calling thread's CPU clock. The
/// engine's epoch ticks with wall time; each time a call's window of ticks
/// runs out, [`CallClock::expired`] decides. A call that kept a CPU busy for
/// at least half of the last window is stopped; one that mostly waited for a
/// CPU (a loaded machine) gets another window, at most `MAX_WINDOWS` in all —
/// so load alone does not turn a quick call into a spurious "policy failed"
/// conflict. Nothing is read on a call that ends within its first window.
#[derive(Default)]
pub struct CallClock {
    /// The thread's CPU time when the last window ran out.
    cpu_at_last: Option<Duration>,
    windows: u32,
}

/// Windows a call may be given in all, however little CPU it got.
const MAX_WINDOWS: u32 = 20;

/// Shortest window after the first: a thread's CPU clock advances in
/// scheduler ticks (a few ms), too coarse for shorter ones.
pub const MIN_WINDOW: Duration = Duration::from_millis(20);

impl CallClock {
    /// Whether the call must stop now that a window of length `window` ran
    /// out, with the thread's CPU time `cpu_now` (`None`: unreadable, and
    /// wall time decides as it would without this clock).
    pub fn expired(&mut self, cpu_now: Option<Duration>, window: Duration) -> bool {
        let Some(now) = cpu_now else { return true };
        if self.windows >= MAX_WINDOWS {
            return true;
        }
        self.windows += 1;
        match self.cpu_at_last.replace(now) {
            // The first window: no baseline yet, so measure the next one.
            None => false,
            Some(before) => now.saturating_sub(before) >= window / 2,
        }
    }
}

/// CPU time the calling thread has used (Linux: `/proc/thread-self/schedstat`).
pub fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(50);

    #[test]
    fn a_busy_call_stops_after_a_measured_window_and_a_starved_one_waits() {
        let ms = Duration::from_millis;
        // Busy: the first window only sets the baseline, the second stops it.
        let mut busy = CallClock::default();
        assert!(!busy.expired(Some(ms(1_000)), W));
        assert!(busy.expired(Some(ms(1_049)), W));
        // Starved: little CPU per window, more windows — up to the cap.
        let mut starved = CallClock::default();
        let stopped_at = (0..100u64).find(|i| starved.expired(Some(ms(1_000 + i)), W));
        assert_eq!(stopped_at, Some(u64::from(MAX_WINDOWS)));
        // No CPU clock: the wall-time deadline stands.
        assert!(CallClock::default().expired(None, W));
    }

    #[test]
    fn this_thread_has_a_cpu_clock_that_advances() {
        let Some(before) = thread_cpu() else { panic!("no /proc/thread-self/schedstat on this machine") };
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = thread_cpu().unwrap_or_default();
        assert!(after > before, "{before:?} → {after:?}");
    }
}
