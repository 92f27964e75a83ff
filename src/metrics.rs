//! Counters the library keeps, so that every classical fallback and refusal is visible.
//!
//! Plain atomics: the hot path pays one relaxed increment. Exporters (Prometheus, logs) read
//! a [`MetricsSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::groups::{Group, GroupId};

/// Handshake counters of one acceptor or connector.
#[derive(Debug, Default)]
pub struct Metrics {
    by_group: [AtomicU64; Group::ALL.len()],
    other_group: AtomicU64,
    hello_retries: AtomicU64,
    resumed: AtomicU64,
    classical_fallbacks: AtomicU64,
    policy_refusals: AtomicU64,
    handshake_failures: AtomicU64,
    handshake_timeouts: AtomicU64,
}

impl Metrics {
    /// Counts a completed handshake.
    pub(crate) fn handshake(
        &self,
        group: GroupId,
        hello_retry: bool,
        resumed: bool,
        fallback: bool,
    ) {
        match Group::ALL.iter().position(|g| GroupId::from(*g) == group) {
            Some(i) => self.by_group[i].fetch_add(1, Relaxed),
            None => self.other_group.fetch_add(1, Relaxed),
        };
        for (flag, counter) in [
            (hello_retry, &self.hello_retries),
            (resumed, &self.resumed),
            (fallback, &self.classical_fallbacks),
        ] {
            if flag {
                counter.fetch_add(1, Relaxed);
            }
        }
    }

    pub(crate) fn policy_refusal(&self) {
        self.policy_refusals.fetch_add(1, Relaxed);
    }

    pub(crate) fn handshake_failure(&self) {
        self.handshake_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn handshake_timeout(&self) {
        self.handshake_timeouts.fetch_add(1, Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            handshakes_by_group: Group::ALL
                .iter()
                .zip(&self.by_group)
                .map(|(g, c)| (g.name(), c.load(Relaxed)))
                .chain([("other", self.other_group.load(Relaxed))])
                .filter(|(_, n)| *n > 0)
                .collect(),
            hello_retries: self.hello_retries.load(Relaxed),
            resumed: self.resumed.load(Relaxed),
            classical_fallbacks: self.classical_fallbacks.load(Relaxed),
            policy_refusals: self.policy_refusals.load(Relaxed),
            handshake_failures: self.handshake_failures.load(Relaxed),
            handshake_timeouts: self.handshake_timeouts.load(Relaxed),
        }
    }
}

/// A copy of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Completed handshakes per negotiated group (IANA name), groups with none left out.
    pub handshakes_by_group: Vec<(&'static str, u64)>,
    /// Handshakes that needed a HelloRetryRequest.
    pub hello_retries: u64,
    /// Resumed handshakes.
    pub resumed: u64,
    /// Handshakes that fell back to a classical group under `pq-preferred`.
    pub classical_fallbacks: u64,
    /// Handshakes refused by policy.
    pub policy_refusals: u64,
    /// Handshakes that failed for another reason (bad certificate, garbage, peer abort).
    pub handshake_failures: u64,
    /// Handshakes cut off by the handshake timeout.
    pub handshake_timeouts: u64,
}

impl MetricsSnapshot {
    /// Completed handshakes on `group`.
    pub fn handshakes(&self, group: Group) -> u64 {
        self.handshakes_by_group
            .iter()
            .find(|(n, _)| *n == group.name())
            .map_or(0, |(_, c)| *c)
    }
}
