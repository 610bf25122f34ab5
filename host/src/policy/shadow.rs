//! Shadow runs: a second policy decides beside the live one on every call,
//! after the live decision is made; only agreement is counted (per kind of
//! live decision) and a bounded sample of disagreements kept. What is written
//! and answered is always the live decision; a failing shadow is a
//! disagreement, and its cost is bounded by its own CPU limit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Policy;
use crate::model::{Decision, MergeInput};

/// Disagreements kept per entity type (the oldest go first).
pub const SAMPLE: usize = 50;

/// The kinds of decision, in the order counters are kept.
pub const KINDS: [&str; 4] = ["accept", "merged", "conflict", "reject"];

/// A shadow policy bound to an entity type, with what it has seen so far
/// (since the policy set was loaded).
pub struct Shadow {
    pub policy: Arc<Policy>,
    agree: [AtomicU64; 4],
    disagree: [AtomicU64; 4],
    sample: Mutex<VecDeque<Disagreement>>,
}

/// One call where the shadow decided otherwise than the live policy.
#[derive(Clone, Debug)]
pub struct Disagreement {
    pub at: i64,
    pub user: String,
    pub record_id: String,
    /// `accept`, `merged`, `conflict` or `reject`.
    pub live: &'static str,
    /// The same kinds, or `failed` when the shadow's call failed.
    pub shadow: &'static str,
    /// The shadow's reason (conflict, reject, failure), if any.
    pub reason: Option<String>,
}

fn kind(d: &Decision) -> usize {
    match d {
        Decision::Accept => 0,
        Decision::Merged { .. } => 1,
        Decision::Conflict(_) => 2,
        Decision::Reject(_) => 3,
    }
}

fn same(a: &Decision, b: &Decision) -> bool {
    match (a, b) {
        (Decision::Merged { data: x, deleted: dx }, Decision::Merged { data: y, deleted: dy }) => {
            dx == dy
                && (x == y
                    || serde_json::from_str::<serde_json::Value>(x).ok()
                        == serde_json::from_str::<serde_json::Value>(y).ok())
        }
        _ => kind(a) == kind(b),
    }
}

impl Shadow {
    pub fn new(policy: Arc<Policy>) -> Shadow {
        Shadow { policy, agree: Default::default(), disagree: Default::default(), sample: Mutex::new(VecDeque::new()) }
    }

    /// Runs the shadow on `input` and compares it with the live `decision`.
    pub fn observe(&self, input: &MergeInput<'_>, settings: &str, live: &Decision) {
        let k = kind(live);
        let (agrees, shadow, reason) = match self.policy.decide(input, settings, super::Mode::Shadow) {
            Ok(d) => {
                let reason = match &d {
                    Decision::Conflict(r) | Decision::Reject(r) => Some(r.clone()),
                    _ => None,
                };
                (same(live, &d), KINDS[kind(&d)], reason)
            }
            Err(failure) => (false, "failed", Some(failure.to_string())),
        };
        if agrees {
            self.agree[k].fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.disagree[k].fetch_add(1, Ordering::Relaxed);
        let d = Disagreement {
            at: crate::model::now_ms(),
            user: input.user.to_string(),
            record_id: input.incoming.id.clone(),
            live: KINDS[k],
            shadow,
            reason,
        };
        if let Ok(mut sample) = self.sample.lock() {
            if sample.len() >= SAMPLE {
                sample.pop_front();
            }
            sample.push_back(d);
        }
    }

    /// Agreements and disagreements per kind of live decision ([`KINDS`] order).
    pub fn counts(&self) -> ([u64; 4], [u64; 4]) {
        let read = |c: &[AtomicU64; 4]| std::array::from_fn(|i| c[i].load(Ordering::Relaxed));
        (read(&self.agree), read(&self.disagree))
    }

    /// The kept disagreements, oldest first.
    pub fn disagreements(&self) -> Vec<Disagreement> {
        self.sample.lock().map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}
