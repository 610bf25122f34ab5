//! Accord: a self-hostable sync server for offline-first apps.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod auth;
pub mod cli;
pub mod config;
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod scaffold;
pub mod server;
pub mod store;
pub mod sync;
