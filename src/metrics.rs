//! Counters the library keeps, so that every classical fallback and refusal is visible.
//!
//! Plain atomics: the hot path pays one relaxed increment. Counters by reason are arrays
//! indexed by a label enum ([`Rejection`], [`Closed`], [`RefusalKind`]), whose variants,
//! `ALL` and labels are one list, so a reason cannot lack its counter or its label. Exporters
//! (the sidecar's Prometheus endpoint, logs, tests) read a [`MetricsSnapshot`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::groups::{Group, GroupId};
use crate::label::label_enum;
use crate::policy::{RefusalKind, RefusalReason};

/// Handshake and connection counters of one acceptor or connector.
#[derive(Debug, Default)]
pub struct Metrics {
    by_group: [AtomicU64; Group::ALL.len()],
    other_group: AtomicU64,
    hello_retries: AtomicU64,
    resumed: AtomicU64,
    classical_fallbacks: AtomicU64,
    refusals: [AtomicU64; RefusalKind::COUNT],
    handshake_failures: AtomicU64,
    handshake_timeouts: AtomicU64,
    handshake_seconds: Histogram,
    connections_active: AtomicI64,
    connections_rejected: [AtomicU64; Rejection::COUNT],
    connections_closed: [AtomicU64; Closed::COUNT],
    reset_floods: AtomicU64,
}

label_enum! {
    /// Why a connection was closed at accept, before any TLS work: the
    /// `connections_rejected_total{reason}` label.
    #[non_exhaustive]
    pub enum Rejection {
        /// `max-connections` connections were open.
        MaxConnections => "max_connections",
        /// `max-connections-per-ip` connections were open from the same source.
        MaxConnectionsPerIp => "max_connections_per_ip",
    }
}

label_enum! {
    /// Why a served connection was closed by us: the `connections_closed_total{reason}` label.
    #[non_exhaustive]
    pub enum Closed {
        /// No request head within `first-request-timeout` of the handshake.
        FirstRequestTimeout => "first_request_timeout",
        /// No request in flight for `idle-timeout`.
        IdleTimeout => "idle_timeout",
    }
}

/// The `reason` label of a policy refusal, one per [`RefusalKind`], in its order.
pub const REFUSAL_REASONS: [&str; RefusalKind::COUNT] = RefusalKind::LABELS;

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

    pub(crate) fn policy_refusal(&self, reason: &RefusalReason) {
        self.refusals[reason.kind() as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn handshake_failure(&self) {
        self.handshake_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn handshake_timeout(&self) {
        self.handshake_timeouts.fetch_add(1, Relaxed);
    }

    /// Records how long a handshake (successful or not) took from TCP accept.
    pub(crate) fn handshake_duration(&self, d: Duration) {
        self.handshake_seconds.observe(d);
    }

    /// Counts an open connection until the guard drops.
    pub fn connection_opened(self: &std::sync::Arc<Self>) -> ConnectionGuard {
        self.connections_active.fetch_add(1, Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Counts a connection closed unserved because a connection limit was reached.
    pub fn connection_rejected(&self, why: Rejection) {
        self.connections_rejected[why as usize].fetch_add(1, Relaxed);
    }

    /// Counts a served connection we closed.
    pub fn connection_closed(&self, why: Closed) {
        self.connections_closed[why as usize].fetch_add(1, Relaxed);
    }

    /// Counts a connection sent GOAWAY and closed because most of its streams were reset before their
    /// response (h2 rapid reset).
    pub(crate) fn reset_flood(&self) {
        self.reset_floods.fetch_add(1, Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let refusals_by_reason: Vec<_> = RefusalKind::ALL
            .iter()
            .map(|k| (k.label(), self.refusals[*k as usize].load(Relaxed)))
            .collect();
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
            policy_refusals: refusals_by_reason.iter().map(|(_, n)| n).sum(),
            refusals_by_reason,
            handshake_failures: self.handshake_failures.load(Relaxed),
            handshake_timeouts: self.handshake_timeouts.load(Relaxed),
            handshake_seconds: self.handshake_seconds.snapshot(),
            connections_active: self.connections_active.load(Relaxed).max(0) as u64,
            connections_rejected: self
                .connections_rejected
                .iter()
                .map(|c| c.load(Relaxed))
                .sum(),
            connections_rejected_by_reason: Rejection::ALL
                .iter()
                .map(|r| {
                    (
                        r.label(),
                        self.connections_rejected[*r as usize].load(Relaxed),
                    )
                })
                .collect(),
            connections_closed_by_reason: Closed::ALL
                .iter()
                .map(|r| {
                    (
                        r.label(),
                        self.connections_closed[*r as usize].load(Relaxed),
                    )
                })
                .collect(),
            reset_floods: self.reset_floods.load(Relaxed),
        }
    }
}

/// Keeps a connection counted as active; see [`Metrics::connection_opened`].
#[derive(Debug)]
pub struct ConnectionGuard(std::sync::Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Relaxed);
    }
}

/// A copy of the counters.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
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
    /// Policy refusals by reason (see [`RefusalKind`]), every reason listed.
    pub refusals_by_reason: Vec<(&'static str, u64)>,
    /// Handshakes that failed for another reason (bad certificate, garbage, peer abort).
    pub handshake_failures: u64,
    /// Handshakes cut off by the handshake timeout.
    pub handshake_timeouts: u64,
    /// Handshake durations, from TCP accept to done or failed.
    pub handshake_seconds: HistogramSnapshot,
    /// Connections open now (served by [`crate::serve`]).
    pub connections_active: u64,
    /// Connections closed unserved because a connection limit was reached.
    pub connections_rejected: u64,
    /// The same, by reason (see [`Rejection`]).
    pub connections_rejected_by_reason: Vec<(&'static str, u64)>,
    /// Served connections we closed, by reason (see [`Closed`]).
    pub connections_closed_by_reason: Vec<(&'static str, u64)>,
    /// Connections sent GOAWAY and closed because most of their streams were reset before their
    /// response (h2 rapid reset).
    pub reset_floods: u64,
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

/// Upper bounds (seconds) of the latency histogram buckets: 1 ms to 10 s, handshakes and
/// upstream responses alike.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A fixed-bucket histogram (Prometheus semantics: cumulative on export); by default over
/// [`LATENCY_BUCKETS`].
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::with_bounds(&LATENCY_BUCKETS)
    }
}

impl Histogram {
    /// A histogram over these upper bounds (seconds, ascending).
    pub fn with_bounds(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().try_into().unwrap_or(u64::MAX), Relaxed);
    }

    /// The histogram now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        HistogramSnapshot {
            buckets: self
                .bounds
                .iter()
                .zip(self.buckets.iter())
                .map(|(b, c)| {
                    cumulative += c.load(Relaxed);
                    (*b, cumulative)
                })
                .collect(),
            count: self.count.load(Relaxed),
            sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// A copy of a [`Histogram`], buckets cumulative.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations <= bound)`.
    pub buckets: Vec<(f64, u64)>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of all observations.
    pub sum_seconds: f64,
}
