//! Process-wide counters and histograms, rendered for `GET /metrics` in the
//! Prometheus text format.
//!
//! Hand-written rather than `prometheus-client`: every label value is known
//! at startup (routes, outcomes), so an observation is a few relaxed atomic
//! adds at fixed indexes — no lock, no label hashing (BENCHMARKS.md,
//! "Metrics", compares the two). Nothing here locks.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// One entity type's merge-policy counters, as [`Metrics::render`] prints them.
/// Whoever renders the metrics (`http::ops`) reads them from the active policy set.
pub struct PolicyCounts<'a> {
    pub entity: &'a str,
    pub policy: &'a str,
    pub calls: u64,
    pub failures: u64,
    /// The shadow policy, if one runs: its name, and per kind of live decision
    /// (accept, merged, conflict, reject) its agreements and disagreements.
    pub shadow: Option<(&'a str, [u64; 4], [u64; 4])>,
}

/// Per-record push outcomes, in the order of [`Metrics::OUTCOMES`].
pub type OutcomeCounts = [u64; 5];

/// The routes request durations are kept for (`other` is everything else).
pub const ROUTES: [&str; 13] = [
    "/api/sync/push",
    "/api/sync/pull",
    "/api/sync/events",
    "/api/sync/conflicts",
    "/api/sync/conflicts/{id}/resolve",
    "/api/blobs/{sha256}",
    "/api/api-keys",
    "/api/api-keys/{id}",
    "/api/admin/policies",
    "/api/admin/reload",
    "/healthz",
    "/readyz",
    "other",
];

/// Upper bounds of the duration buckets, in seconds.
const SECONDS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];
/// Upper bounds of the push-size buckets, in records.
const RECORDS: [f64; 8] = [1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0];
/// Upper bounds of the push-size buckets, in bytes.
const BYTES: [f64; 9] = [1e3, 1e4, 1e5, 5e5, 1e6, 4e6, 16e6, 32e6, 64e6];

/// A Prometheus histogram with fixed buckets: per-bucket counts (not
/// cumulative; summed when rendered), a count and a sum.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum of observations, in millionths (of a second, a record, a byte).
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((value.max(0.0) * 1e6) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count.load(Relaxed));
    }
}

/// Sizes of the database, read when the metrics are rendered.
#[derive(Default)]
pub struct StoreSize {
    pub database_bytes: Option<u64>,
    /// SQLite's write-ahead log; `None` on PostgreSQL.
    pub wal_bytes: Option<u64>,
}

pub struct Metrics {
    /// HTTP responses by status class (index 0 = 1xx … 4 = 5xx).
    responses: [AtomicU64; 5],
    client_aborts: AtomicU64,
    pushes: AtomicU64,
    push_replays: AtomicU64,
    outcomes: [AtomicU64; 5],
    pulls: AtomicU64,
    pulled_records: AtomicU64,
    event_streams: AtomicI64,
    long_polls: AtomicI64,
    /// Request durations by route, in the order of [`ROUTES`].
    durations: Box<[Histogram]>,
    push_records: Histogram,
    push_bytes: Histogram,
    policy_calls: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            responses: Default::default(),
            client_aborts: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
            push_replays: AtomicU64::new(0),
            outcomes: Default::default(),
            pulls: AtomicU64::new(0),
            pulled_records: AtomicU64::new(0),
            event_streams: AtomicI64::new(0),
            long_polls: AtomicI64::new(0),
            durations: ROUTES.iter().map(|_| Histogram::new(&SECONDS)).collect(),
            push_records: Histogram::new(&RECORDS),
            push_bytes: Histogram::new(&BYTES),
            policy_calls: Histogram::new(&SECONDS),
        }
    }
}

/// Decrements an open-request gauge (event streams, long polls) when the request ends.
pub struct StreamGuard(Arc<Metrics>, fn(&Metrics) -> &AtomicI64);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Relaxed);
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

impl Metrics {
    pub const OUTCOMES: [&'static str; 5] = ["applied", "unchanged", "merged", "conflict", "rejected"];

    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
    }

    pub fn client_abort(&self) {
        self.client_aborts.fetch_add(1, Relaxed);
    }

    pub fn push(&self, counts: &OutcomeCounts) {
        self.pushes.fetch_add(1, Relaxed);
        for (slot, n) in self.outcomes.iter().zip(counts) {
            slot.fetch_add(*n, Relaxed);
        }
    }

    pub fn push_replayed(&self) {
        self.push_replays.fetch_add(1, Relaxed);
    }

    pub fn pull(&self, records: usize) {
        self.pulls.fetch_add(1, Relaxed);
        self.pulled_records.fetch_add(records as u64, Relaxed);
    }

    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.event_streams.fetch_add(1, Relaxed);
        StreamGuard(self.clone(), |m| &m.event_streams)
    }

    pub fn long_poll_started(self: &Arc<Self>) -> StreamGuard {
        self.long_polls.fetch_add(1, Relaxed);
        StreamGuard(self.clone(), |m| &m.long_polls)
    }

    /// A request to `route` (a [`ROUTES`] entry; anything else counts as `other`) took `seconds`.
    pub fn request(&self, route: &str, seconds: f64) {
        let i = ROUTES.iter().position(|r| *r == route).unwrap_or(ROUTES.len() - 1);
        self.durations[i].observe(seconds);
    }

    /// A push body of `bytes` holding `records` records arrived.
    pub fn push_size(&self, records: usize, bytes: usize) {
        self.push_records.observe(records as f64);
        self.push_bytes.observe(bytes as f64);
    }

    /// One merge-policy decision took `seconds`.
    pub fn policy_call(&self, seconds: f64) {
        self.policy_calls.observe(seconds);
    }

    /// The Prometheus text exposition of every counter, plus per-policy calls
    /// and failures and the database's size.
    pub fn render(&self, policies: &[PolicyCounts<'_>], size: &StoreSize) -> String {
        let mut out = String::with_capacity(2048);
        family(&mut out, "accord_info", "gauge", "Build information.");
        let _ = writeln!(out, "accord_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        family(&mut out, "accord_http_responses_total", "counter", "HTTP responses by status class.");
        for (i, n) in self.responses.iter().enumerate() {
            let _ = writeln!(out, "accord_http_responses_total{{class=\"{}xx\"}} {}", i + 1, n.load(Relaxed));
        }
        family(
            &mut out,
            "accord_client_aborts_total",
            "counter",
            "Requests whose client went away before the response.",
        );
        let _ = writeln!(out, "accord_client_aborts_total {}", self.client_aborts.load(Relaxed));
        family(&mut out, "accord_pushes_total", "counter", "Pushes applied.");
        let _ = writeln!(out, "accord_pushes_total {}", self.pushes.load(Relaxed));
        family(&mut out, "accord_push_replays_total", "counter", "Pushes answered from the pushId log.");
        let _ = writeln!(out, "accord_push_replays_total {}", self.push_replays.load(Relaxed));
        family(&mut out, "accord_push_records_total", "counter", "Pushed records by outcome.");
        for (name, n) in Self::OUTCOMES.iter().zip(&self.outcomes) {
            let _ = writeln!(out, "accord_push_records_total{{status=\"{name}\"}} {}", n.load(Relaxed));
        }
        family(&mut out, "accord_pulls_total", "counter", "Pull pages served.");
        let _ = writeln!(out, "accord_pulls_total {}", self.pulls.load(Relaxed));
        family(&mut out, "accord_pulled_records_total", "counter", "Records returned by pulls.");
        let _ = writeln!(out, "accord_pulled_records_total {}", self.pulled_records.load(Relaxed));
        family(&mut out, "accord_event_streams", "gauge", "Open /api/sync/events streams.");
        let _ = writeln!(out, "accord_event_streams {}", self.event_streams.load(Relaxed));
        family(&mut out, "accord_long_polls", "gauge", "Pulls with wait > 0 in progress.");
        let _ = writeln!(out, "accord_long_polls {}", self.long_polls.load(Relaxed));
        let name = "accord_http_request_duration_seconds";
        family(&mut out, name, "histogram", "Time from request to response headers, by route.");
        for (route, h) in ROUTES.iter().zip(self.durations.iter()) {
            h.render(&mut out, name, &format!("route=\"{route}\""));
        }
        family(&mut out, "accord_push_records", "histogram", "Records per push body.");
        self.push_records.render(&mut out, "accord_push_records", "");
        family(&mut out, "accord_push_bytes", "histogram", "Bytes per push body (as received, decompressed).");
        self.push_bytes.render(&mut out, "accord_push_bytes", "");
        let name = "accord_policy_call_duration_seconds";
        family(&mut out, name, "histogram", "Time of one merge-policy decision (WebAssembly call included).");
        self.policy_calls.render(&mut out, name, "");
        if let Some(bytes) = size.database_bytes {
            family(
                &mut out,
                "accord_database_bytes",
                "gauge",
                "Size of the database (SQLite file, or PostgreSQL database).",
            );
            let _ = writeln!(out, "accord_database_bytes {bytes}");
        }
        if let Some(bytes) = size.wal_bytes {
            family(&mut out, "accord_database_wal_bytes", "gauge", "Size of SQLite's write-ahead log.");
            let _ = writeln!(out, "accord_database_wal_bytes {bytes}");
        }
        family(&mut out, "accord_policy_calls_total", "counter", "Merge-policy calls by entity type and policy.");
        for p in policies {
            let _ = writeln!(
                out,
                "accord_policy_calls_total{{entity=\"{}\",policy=\"{}\"}} {}",
                p.entity, p.policy, p.calls
            );
        }
        family(
            &mut out,
            "accord_policy_failures_total",
            "counter",
            "Merge-policy calls that failed (trap, limit, bad output).",
        );
        for p in policies {
            let _ = writeln!(
                out,
                "accord_policy_failures_total{{entity=\"{}\",policy=\"{}\"}} {}",
                p.entity, p.policy, p.failures
            );
        }
        family(
            &mut out,
            "accord_shadow_decisions_total",
            "counter",
            "Shadow-policy decisions by entity type, the live decision's kind, and whether the shadow agreed.",
        );
        for p in policies {
            let Some((shadow, agree, disagree)) = p.shadow else { continue };
            for (i, live) in ["accept", "merged", "conflict", "reject"].iter().enumerate() {
                for (outcome, n) in [("agree", agree[i]), ("disagree", disagree[i])] {
                    let _ = writeln!(
                        out,
                        "accord_shadow_decisions_total{{entity=\"{}\",shadow=\"{shadow}\",live=\"{live}\",outcome=\"{outcome}\"}} {n}",
                        p.entity
                    );
                }
            }
        }
        out
    }
}
