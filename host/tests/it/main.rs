//! The one integration-test binary: real servers on 127.0.0.1, temporary databases.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

mod auth_limit;
mod backups;
mod blobs;
mod cli_config;
mod compaction;
mod connections;
mod fuzz_regressions;
mod hardening;
mod http_basics;
mod jwt;
mod keys;
mod migrate_store;
mod migrations;
mod multi_host;
mod policies;
mod policy_languages;
mod policy_new;
mod request_ids;
mod schemathesis;
mod sync_crash;
mod sync_pull;
mod sync_push;
mod text_merge;
mod tidy;
mod typescript_client;
mod wire_shapes;
