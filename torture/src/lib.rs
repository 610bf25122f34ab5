//! `accord-torture`: drives a real Accord server (a spawned `accord` binary)
//! over HTTP on 127.0.0.1 and checks what it promises: convergence of
//! offline replicas, crash safety, exactly-once pushes through network
//! faults, and steady latency and memory under an open-loop load.
//!
//! Every loop is bounded in count and in time; nothing leaves loopback.

pub mod api;
pub mod converge;
pub mod crash;
pub mod load;
pub mod model;
pub mod proxy;
pub mod rng;
pub mod server;

/// What a torture run found: `Err` carries a readable description.
pub type Outcome<T> = Result<T, String>;
