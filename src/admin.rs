//! The sidecar's admin listener: `/metrics` (Prometheus text format 0.0.4), `/healthz`,
//! `/readyz`.
//!
//! The exposition is written here rather than through a metrics crate: the counters are
//! already lock-free atomics in [`crate::metrics`] and [`crate::proxy`], and the text format
//! for a fixed set of families is a few lines each.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::gate::{GateMetrics, GateSnapshot};
use crate::metrics::{HistogramSnapshot, Metrics, MetricsSnapshot};
use crate::proxy::{ProxyMetrics, ProxySnapshot};

/// What the admin listener reports on.
#[derive(Debug, Default)]
pub struct AdminState {
    /// Handshake and connection counters (the acceptor's, or the connector's in client mode).
    pub tls: Arc<Metrics>,
    /// Connections on the client-facing listener, when they are not in `tls` (client mode).
    pub listener: Option<Arc<Metrics>>,
    /// HTTP counters.
    pub proxy: Arc<ProxyMetrics>,
    /// Gate counters, when the gate is on.
    pub gate: Option<Arc<GateMetrics>>,
    /// Serving and not draining: `/readyz` says 200.
    pub ready: AtomicBool,
    /// Certificate reloads that took effect.
    pub reloads_ok: AtomicU64,
    /// Certificate reloads refused (the old certificate stayed).
    pub reloads_failed: AtomicU64,
    /// Group and policy reloads from the config file that took effect.
    pub policy_reloads_ok: AtomicU64,
    /// Group and policy reloads refused (the old groups and policy stayed).
    pub policy_reloads_failed: AtomicU64,
}

impl AdminState {
    /// Answers one admin request.
    pub fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, ctype, body) = match req.uri().path() {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.render(),
            ),
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            "/readyz" if self.ready.load(Relaxed) => {
                (StatusCode::OK, "text/plain", "ready\n".to_owned())
            }
            "/readyz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready (starting or draining)\n".to_owned(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "try /metrics, /healthz or /readyz\n".to_owned(),
            ),
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(ctype),
        );
        r
    }

    /// All metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let tls = self.tls.snapshot();
        let listener = self.listener.as_ref().map(|l| l.snapshot());
        let conns = listener.as_ref().unwrap_or(&tls);
        let mut out = String::new();
        render_tls(&mut out, &tls);
        family(
            &mut out,
            "connections_active",
            "gauge",
            "Client connections open now.",
        );
        sample(&mut out, "connections_active", "", conns.connections_active);
        family(
            &mut out,
            "connections_rejected_total",
            "counter",
            "Connections closed at accept, before any TLS work, by the limit reached: max_connections or max_connections_per_ip.",
        );
        for (reason, n) in &conns.connections_rejected_by_reason {
            sample(
                &mut out,
                "connections_rejected_total",
                &format!("reason=\"{reason}\""),
                *n,
            );
        }
        family(
            &mut out,
            "connections_closed_total",
            "counter",
            "Served connections closed by the sidecar: no request head within first-request-timeout, or no request in flight for idle-timeout.",
        );
        for (reason, n) in &conns.connections_closed_by_reason {
            sample(
                &mut out,
                "connections_closed_total",
                &format!("reason=\"{reason}\""),
                *n,
            );
        }
        family(
            &mut out,
            "h2_reset_floods_total",
            "counter",
            "h2 connections sent GOAWAY and closed because most of their streams were reset before a response (rapid reset).",
        );
        sample(&mut out, "h2_reset_floods_total", "", conns.reset_floods);
        render_proxy(&mut out, &self.proxy.snapshot());
        if let Some(gate) = &self.gate {
            render_gate(&mut out, &gate.snapshot());
        }
        for (name, help, ok, failed) in [
            (
                "cert_reloads_total",
                "Certificate reloads by result (a failed reload keeps the old certificate).",
                &self.reloads_ok,
                &self.reloads_failed,
            ),
            (
                "policy_reloads_total",
                "Group and policy reloads from the config file by result (a failed reload keeps the old ones).",
                &self.policy_reloads_ok,
                &self.policy_reloads_failed,
            ),
        ] {
            family(&mut out, name, "counter", help);
            sample(&mut out, name, "result=\"ok\"", ok.load(Relaxed));
            sample(&mut out, name, "result=\"failed\"", failed.load(Relaxed));
        }
        out
    }
}

const PREFIX: &str = "mcp_pqtls_";

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} {kind}"
    );
}

fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{PREFIX}{name} {value}");
    } else {
        let _ = writeln!(out, "{PREFIX}{name}{{{labels}}} {value}");
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    family(out, name, "histogram", help);
    for (le, n) in &h.buckets {
        sample(out, &format!("{name}_bucket"), &format!("le=\"{le}\""), n);
    }
    sample(out, &format!("{name}_bucket"), "le=\"+Inf\"", h.count);
    sample(out, &format!("{name}_sum"), "", h.sum_seconds);
    sample(out, &format!("{name}_count"), "", h.count);
}

fn render_tls(out: &mut String, m: &MetricsSnapshot) {
    family(
        out,
        "handshakes_total",
        "counter",
        "TLS handshakes by result; completed ones by group and pq, refused ones by reason.",
    );
    for g in crate::groups::Group::ALL {
        sample(
            out,
            "handshakes_total",
            &format!("result=\"ok\",group=\"{}\",pq=\"{}\"", g.name(), g.is_pq()),
            m.handshakes(g),
        );
    }
    if let Some((_, n)) = m.handshakes_by_group.iter().find(|(g, _)| *g == "other") {
        sample(
            out,
            "handshakes_total",
            "result=\"ok\",group=\"other\",pq=\"false\"",
            n,
        );
    }
    for (reason, n) in &m.refusals_by_reason {
        sample(
            out,
            "handshakes_total",
            &format!("result=\"refused\",reason=\"{reason}\""),
            n,
        );
    }
    sample(
        out,
        "handshakes_total",
        "result=\"failed\"",
        m.handshake_failures,
    );
    sample(
        out,
        "handshakes_total",
        "result=\"timeout\"",
        m.handshake_timeouts,
    );
    for (name, help, v) in [
        (
            "classical_fallbacks_total",
            "Handshakes that fell back to a classical group under pq-preferred.",
            m.classical_fallbacks,
        ),
        (
            "hello_retries_total",
            "Handshakes that needed a HelloRetryRequest.",
            m.hello_retries,
        ),
        ("resumed_total", "Resumed handshakes.", m.resumed),
    ] {
        family(out, name, "counter", help);
        sample(out, name, "", v);
    }
    histogram(
        out,
        "handshake_duration_seconds",
        "Time from TCP accept to a completed or failed handshake.",
        &m.handshake_seconds,
    );
}

fn render_proxy(out: &mut String, p: &ProxySnapshot) {
    family(
        out,
        "responses_total",
        "counter",
        "HTTP responses sent to clients by status class (upstream's and the sidecar's own).",
    );
    for (class, n) in &p.responses_by_class {
        sample(out, "responses_total", &format!("class=\"{class}\""), n);
    }
    family(
        out,
        "upstream_errors_total",
        "counter",
        "Upstream requests that got no response, by kind (rejected: 503, max-upstream-requests in flight).",
    );
    for (kind, n) in &p.upstream_errors {
        sample(out, "upstream_errors_total", &format!("kind=\"{kind}\""), n);
    }
    family(
        out,
        "proxy_refusals_total",
        "counter",
        "Requests the proxy refused before the upstream, by reason: host (421, not in allowed-hosts), body_timeout (408, body not complete within request-body-timeout).",
    );
    for (reason, n) in &p.refusals {
        sample(
            out,
            "proxy_refusals_total",
            &format!("reason=\"{reason}\""),
            n,
        );
    }
    histogram(
        out,
        "upstream_duration_seconds",
        "Time from request to the upstream's response head.",
        &p.upstream_seconds,
    );
    for (name, kind, help, v) in [
        (
            "streams_active",
            "gauge",
            "SSE streams open now.",
            p.streams_active,
        ),
        ("streams_total", "counter", "SSE streams opened.", p.streams),
        (
            "origin_refused_total",
            "counter",
            "Requests refused (403) for an Origin not in allowed-origins.",
            p.origin_refused,
        ),
        (
            "body_too_large_total",
            "counter",
            "Requests refused (413) for a body over max-body-bytes.",
            p.body_too_large,
        ),
        (
            "response_bytes_total",
            "counter",
            "Response body bytes sent to clients.",
            p.response_bytes,
        ),
    ] {
        family(out, name, kind, help);
        sample(out, name, "", v);
    }
}

fn render_gate(out: &mut String, g: &GateSnapshot) {
    family(
        out,
        "gate_refusals_total",
        "counter",
        "HTTP requests the gate refused, by reason.",
    );
    for (reason, n) in &g.refusals {
        sample(
            out,
            "gate_refusals_total",
            &format!("reason=\"{reason}\""),
            n,
        );
    }
    family(
        out,
        "gate_rule_refusals_total",
        "counter",
        "JSON-RPC messages refused, by the rule that refused them.",
    );
    for (rule, n) in &g.rule_refusals {
        sample(
            out,
            "gate_rule_refusals_total",
            &format!("rule=\"{rule}\""),
            n,
        );
    }
    family(
        out,
        "gate_rate_limited_total",
        "counter",
        "HTTP requests refused with 429, by rate limit.",
    );
    for (limit, n) in &g.rate_limited {
        sample(
            out,
            "gate_rate_limited_total",
            &format!("limit=\"{limit}\""),
            n,
        );
    }
    family(
        out,
        "gate_token_failures_total",
        "counter",
        "Bearer tokens not accepted, by kind.",
    );
    for (kind, n) in &g.token_failures {
        sample(
            out,
            "gate_token_failures_total",
            &format!("kind=\"{kind}\""),
            n,
        );
    }
    family(
        out,
        "gate_jwks_refreshes_total",
        "counter",
        "JWKS loads by result (a failed one keeps the previous keys).",
    );
    sample(
        out,
        "gate_jwks_refreshes_total",
        "result=\"ok\"",
        g.jwks_refresh_ok,
    );
    sample(
        out,
        "gate_jwks_refreshes_total",
        "result=\"failed\"",
        g.jwks_refresh_failed,
    );
    for (name, help, v) in [
        (
            "gate_tokens_verified_total",
            "Bearer tokens accepted.",
            g.tokens_verified,
        ),
        (
            "gate_audit_records_total",
            "Audit records queued for writing.",
            g.audit_records,
        ),
        (
            "gate_audit_dropped_total",
            "Audit records dropped because the queue was full (the writer fell behind, or its writes fail) or closed.",
            g.audit_dropped,
        ),
        (
            "gate_audit_write_failures_total",
            "Audit log writes that failed; their records are kept and written again every second.",
            g.audit_write_failures,
        ),
    ] {
        family(out, name, "counter", help);
        sample(out, name, "", v);
    }
}
