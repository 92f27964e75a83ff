//! Counters of the HTTP hop: responses by status class, upstream errors and latency, open
//! streams. Exported by the sidecar's admin listener.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::label::label_enum;
use crate::metrics::{Histogram, HistogramSnapshot};

label_enum! {
    /// Why an upstream request got no response: the `kind` label of `upstream_errors_total`.
    #[non_exhaustive]
    pub enum UpstreamErrorKind {
        /// The upstream connection could not be made.
        Connect => "connect",
        /// The request failed after the connection was made.
        Request => "request",
        /// No response head within `upstream-timeout`.
        Timeout => "timeout",
        /// Refused (503) before it was sent: `max-upstream-requests` were in flight.
        Rejected => "rejected",
        /// Refused (503) before it was sent: `max-upstream-requests-per-ip` were in flight
        /// for the client's source.
        RejectedPerIp => "rejected_per_ip",
    }
}

label_enum! {
    /// Why the proxy refused a request before the upstream: the `reason` label of
    /// `proxy_refusals_total`.
    #[non_exhaustive]
    pub enum ProxyRefusal {
        /// 421: the Host is not in `allowed-hosts`.
        Host => "host",
        /// 408: the body was not complete within `request-body-timeout`.
        BodyTimeout => "body_timeout",
    }
}

label_enum! {
    /// The class of a response status: the `class` label of `responses_total`.
    #[non_exhaustive]
    pub enum StatusClass {
        /// 1xx.
        Informational => "1xx",
        /// 2xx.
        Success => "2xx",
        /// 3xx.
        Redirection => "3xx",
        /// 4xx.
        ClientError => "4xx",
        /// 5xx (and anything above 599).
        ServerError => "5xx",
    }
}

impl StatusClass {
    /// The class of `status`.
    pub fn of(status: StatusCode) -> Self {
        match status.as_u16() / 100 {
            0 | 1 => Self::Informational,
            2 => Self::Success,
            3 => Self::Redirection,
            4 => Self::ClientError,
            _ => Self::ServerError,
        }
    }
}

/// Labels of [`ProxySnapshot::refusals`]: `host` (421, not in `allowed-hosts`),
/// `body_timeout` (408, body not complete within `request-body-timeout`); one per
/// `ProxyRefusal`.
pub const PROXY_REFUSALS: [&str; ProxyRefusal::COUNT] = ProxyRefusal::LABELS;

/// Counters of one [`super::Proxy`].
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    responses: [AtomicU64; StatusClass::COUNT],
    upstream_errors: [AtomicU64; UpstreamErrorKind::COUNT],
    upstream_seconds: Histogram,
    origin_refused: AtomicU64,
    body_too_large: AtomicU64,
    refusals: [AtomicU64; ProxyRefusal::COUNT],
    response_bytes: AtomicU64,
    streams_active: AtomicI64,
    streams: AtomicU64,
}

impl ProxyMetrics {
    pub(super) fn response(&self, status: StatusCode) {
        self.responses[StatusClass::of(status) as usize].fetch_add(1, Relaxed);
    }

    /// Counts an upstream request that got no response.
    pub(super) fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].fetch_add(1, Relaxed);
    }

    pub(super) fn upstream_latency(&self, d: Duration) {
        self.upstream_seconds.observe(d);
    }

    pub(super) fn origin_refused(&self) {
        self.origin_refused.fetch_add(1, Relaxed);
    }

    /// Counts a request refused before the upstream.
    pub(super) fn refusal(&self, reason: ProxyRefusal) {
        self.refusals[reason as usize].fetch_add(1, Relaxed);
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
            responses_by_class: StatusClass::ALL
                .into_iter()
                .map(|c| (c.label(), self.responses[c as usize].load(Relaxed)))
                .collect(),
            upstream_errors: UpstreamErrorKind::ALL
                .into_iter()
                .map(|k| (k.label(), self.upstream_errors[k as usize].load(Relaxed)))
                .collect(),
            upstream_seconds: self.upstream_seconds.snapshot(),
            origin_refused: self.origin_refused.load(Relaxed),
            body_too_large: self.body_too_large.load(Relaxed),
            refusals: ProxyRefusal::ALL
                .into_iter()
                .map(|r| (r.label(), self.refusals[r as usize].load(Relaxed)))
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
#[non_exhaustive]
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
