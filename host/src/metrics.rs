//! Process-wide counters, rendered for `GET /metrics` in the Prometheus text format.
//!
//! Counting is a relaxed atomic add on the request path; nothing here locks.

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
}

/// Per-record push outcomes, in the order of [`Metrics::OUTCOMES`].
pub type OutcomeCounts = [u64; 5];

#[derive(Default)]
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
}

/// Decrements the open-stream gauge when the stream ends.
pub struct StreamGuard(Arc<Metrics>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.event_streams.fetch_sub(1, Relaxed);
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
        StreamGuard(self.clone())
    }

    /// The Prometheus text exposition of every counter, plus per-policy calls and failures.
    pub fn render(&self, policies: &[PolicyCounts<'_>]) -> String {
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
        out
    }
}
