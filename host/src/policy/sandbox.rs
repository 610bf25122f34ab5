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
