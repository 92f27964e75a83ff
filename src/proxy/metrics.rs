//! Counters of the HTTP hop: responses by status class, upstream errors and latency, open
//! streams. Exported by the sidecar's admin listener.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::metrics::{Histogram, HistogramSnapshot};

/// Labels of [`ProxySnapshot::upstream_errors`]. `rejected`: refused (503) before it was
/// sent, `max-upstream-requests` being in flight; `rejected_per_ip`: the same for the
/// client's source, `max-upstream-requests-per-ip`.
pub const UPSTREAM_ERRORS: [&str; 5] = [
    "connect",
    "request",
    "timeout",
    "rejected",
    "rejected_per_ip",
];

/// Labels of [`ProxySnapshot::refusals`]: `host` (421, not in `allowed-hosts`),
/// `body_timeout` (408, body not complete within `request-body-timeout`).
pub const PROXY_REFUSALS: [&str; 2] = ["host", "body_timeout"];

/// Counters of one [`super::Proxy`].
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    responses: [AtomicU64; 5],
    upstream_errors: [AtomicU64; UPSTREAM_ERRORS.len()],
    upstream_seconds: Histogram,
    origin_refused: AtomicU64,
    body_too_large: AtomicU64,
    refusals: [AtomicU64; PROXY_REFUSALS.len()],
    response_bytes: AtomicU64,
    streams_active: AtomicI64,
    streams: AtomicU64,
}

impl ProxyMetrics {
    pub(super) fn response(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
    }

    pub(super) fn upstream_error(&self, kind: &'static str) {
        if let Some(i) = UPSTREAM_ERRORS.iter().position(|k| *k == kind) {
            self.upstream_errors[i].fetch_add(1, Relaxed);
        }
    }

    pub(super) fn upstream_latency(&self, d: Duration) {
        self.upstream_seconds.observe(d);
    }

    pub(super) fn origin_refused(&self) {
        self.origin_refused.fetch_add(1, Relaxed);
    }

    pub(super) fn refused(&self, reason: &'static str) {
        if let Some(i) = PROXY_REFUSALS.iter().position(|r| *r == reason) {
            self.refusals[i].fetch_add(1, Relaxed);
        }
    }

    pub(super) fn body_too_large(&self) {
        self.body_too_large.fetch_add(1, Relaxed);
    }

    pub(super) fn response_bytes(&self, n: u64) {
        self.response_bytes.fetch_add(n, Relaxed);
    }

    pub(super) fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.streams_active.fetch_add(1, Relaxed);
        self.streams.fetch_add(1, Relaxed);
        StreamGuard(self.clone())
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProxySnapshot {
        ProxySnapshot {
            responses_by_class: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .into_iter()
                .zip(&self.responses)
                .map(|(c, n)| (c, n.load(Relaxed)))
                .collect(),
            upstream_errors: UPSTREAM_ERRORS
                .into_iter()
                .zip(&self.upstream_errors)
                .map(|(k, n)| (k, n.load(Relaxed)))
                .collect(),
            upstream_seconds: self.upstream_seconds.snapshot(),
            origin_refused: self.origin_refused.load(Relaxed),
            body_too_large: self.body_too_large.load(Relaxed),
            refusals: PROXY_REFUSALS
                .into_iter()
                .zip(&self.refusals)
                .map(|(r, n)| (r, n.load(Relaxed)))
                .collect(),
            response_bytes: self.response_bytes.load(Relaxed),
            streams_active: self.streams_active.load(Relaxed).max(0) as u64,
            streams: self.streams.load(Relaxed),
        }
    }
}

/// Keeps an SSE stream counted as open.
#[derive(Debug)]
pub(super) struct StreamGuard(Arc<ProxyMetrics>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams_active.fetch_sub(1, Relaxed);
    }
}

/// A copy of the proxy counters.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ProxySnapshot {
    /// Responses sent to clients, by status class (upstream's and our own).
    pub responses_by_class: Vec<(&'static str, u64)>,
    /// Upstream requests that got no response, by kind (the `kind` labels of `upstream_errors_total`).
    pub upstream_errors: Vec<(&'static str, u64)>,
    /// Time from request to the upstream's response head (or error).
    pub upstream_seconds: HistogramSnapshot,
    /// Requests refused (403) for an Origin not on the allow list.
    pub origin_refused: u64,
    /// Requests refused (413) for a body over the limit.
    pub body_too_large: u64,
    /// Requests refused by the proxy, by reason (see [`PROXY_REFUSALS`]).
    pub refusals: Vec<(&'static str, u64)>,
    /// Response body bytes sent to clients.
    pub response_bytes: u64,
    /// SSE streams open now.
    pub streams_active: u64,
    /// SSE streams opened in total.
    pub streams: u64,
}
