//! The sidecar's admin listener: `/metrics` (OpenMetrics text 1.0.0), `/healthz`, `/readyz`.
//!
//! The exposition is prometheus-client's text encoder, fed by a [`Collector`] over snapshots
//! of the sidecar's counters, not by live prometheus-client metrics: those counters are
//! lock-free atomics in [`crate::metrics`], [`crate::proxy`] and [`crate::gate`], and their
//! labelled ones are arrays indexed by a label enum, one relaxed add per event. As live
//! metrics they would be `Family`s, which take a lock and hash the label set on every
//! handshake and request. Each scrape reads the atomics once into snapshots and encodes them;
//! prometheus-client's encoder writes the format (`_total` on counters, `# EOF`) and escapes
//! label values, some of which (rule and limit names) come from the config.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::gate::{Gate, GateMetrics, GateSnapshot};
use crate::groups::Group;
use crate::metrics::{HistogramSnapshot, Metrics, MetricsSnapshot};
use crate::proxy::{ProxyMetrics, ProxySnapshot};

/// What the admin listener reports on.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct AdminState {
    /// Handshake and connection counters (the acceptor's, or the connector's in client mode).
    pub tls: Arc<Metrics>,
    /// Connections on the client-facing listener, when they are not in `tls` (client mode).
    pub listener: Option<Arc<Metrics>>,
    /// HTTP counters.
    pub proxy: Arc<ProxyMetrics>,
    /// Gate counters, when the gate is on.
    pub gate: Option<Arc<GateMetrics>>,
    /// The gate whose held calls `/approvals` lists and decides (a rule has
    /// `require-approval`).
    pub approvals: Option<Arc<Gate>>,
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
    /// Answers one admin request: `/approvals` by the gate, the rest here.
    pub async fn serve(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if path == "/approvals" || path.starts_with("/approvals/") {
            if let Some(gate) = &self.approvals {
                return gate.serve_approvals(req).await;
            }
        }
        self.respond(&req)
    }

    /// Answers one admin request but `/approvals`.
    pub fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, ctype, body) = match req.uri().path() {
            "/metrics" => match self.render() {
                Ok(text) => (StatusCode::OK, OPENMETRICS, text),
                Err(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "the metrics could not be encoded\n".to_owned(),
                ),
            },
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

    /// All metrics in the OpenMetrics text format, `# EOF` last. An error comes from the
    /// encoder, not from writing to the string.
    pub fn render(&self) -> Result<String, fmt::Error> {
        // A registry per scrape: it only holds the collector of this scrape's snapshots.
        let mut registry = Registry::with_prefix("mcp_pqtls");
        registry.register_collector(Box::new(self.scrape()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }

    /// The counters now.
    fn scrape(&self) -> Scrape {
        let reloads = |ok: &AtomicU64, failed: &AtomicU64| {
            [("ok", ok.load(Relaxed)), ("failed", failed.load(Relaxed))]
        };
        Scrape {
            tls: self.tls.snapshot(),
            listener: self.listener.as_ref().map(|l| l.snapshot()),
            proxy: self.proxy.snapshot(),
            gate: self.gate.as_ref().map(|g| g.snapshot()),
            cert_reloads: reloads(&self.reloads_ok, &self.reloads_failed),
            policy_reloads: reloads(&self.policy_reloads_ok, &self.policy_reloads_failed),
        }
    }
}

/// What `/metrics` says it is: what prometheus-client's text encoder writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One scrape's snapshots, encoded by prometheus-client as a [`Collector`].
#[derive(Debug)]
struct Scrape {
    tls: MetricsSnapshot,
    /// The client-facing listener's, when not `tls` (client mode).
    listener: Option<MetricsSnapshot>,
    proxy: ProxySnapshot,
    gate: Option<GateSnapshot>,
    cert_reloads: [(&'static str, u64); 2],
    policy_reloads: [(&'static str, u64); 2],
}

impl Collector for Scrape {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let out = &mut out;
        encode_tls(out, &self.tls)?;
        let conns = self.listener.as_ref().unwrap_or(&self.tls);
        gauge(
            out,
            "connections_active",
            "Client connections open now.",
            conns.connections_active,
        )?;
        counters(
            out,
            "connections_rejected",
            "Connections closed at accept, before any TLS work, by the limit reached: max_connections or max_connections_per_ip.",
            "reason",
            conns.connections_rejected_by_reason.iter().copied(),
        )?;
        counters(
            out,
            "connections_closed",
            "Served connections closed by the sidecar: no request head within first-request-timeout, or no request in flight for idle-timeout.",
            "reason",
            conns.connections_closed_by_reason.iter().copied(),
        )?;
        counter(
            out,
            "h2_reset_floods",
            "h2 connections sent GOAWAY and closed because most of their streams were reset before a response (rapid reset).",
            conns.reset_floods,
        )?;
        encode_proxy(out, &self.proxy)?;
        if let Some(gate) = &self.gate {
            encode_gate(out, gate)?;
        }
        counters(
            out,
            "cert_reloads",
            "Certificate reloads by result (a failed reload keeps the old certificate).",
            "result",
            self.cert_reloads,
        )?;
        counters(
            out,
            "policy_reloads",
            "Group and policy reloads from the config file by result (a failed reload keeps the old ones).",
            "result",
            self.policy_reloads,
        )
    }
}

fn encode_tls(out: &mut DescriptorEncoder, m: &MetricsSnapshot) -> fmt::Result {
    let mut family = out.encode_descriptor(
        "handshakes",
        "TLS handshakes by result; completed ones by group and pq, refused ones by reason.",
        None,
        MetricType::Counter,
    )?;
    for g in Group::ALL {
        let pq = if g.is_pq() { "true" } else { "false" };
        let labels = [("result", "ok"), ("group", g.name()), ("pq", pq)];
        labelled(&mut family, labels, m.handshakes(g))?;
    }
    if let Some((_, n)) = m.handshakes_by_group.iter().find(|(g, _)| *g == "other") {
        let labels = [("result", "ok"), ("group", "other"), ("pq", "false")];
        labelled(&mut family, labels, *n)?;
    }
    for (reason, n) in &m.refusals_by_reason {
        labelled(
            &mut family,
            [("result", "refused"), ("reason", *reason)],
            *n,
        )?;
    }
    labelled(&mut family, [("result", "failed")], m.handshake_failures)?;
    labelled(&mut family, [("result", "timeout")], m.handshake_timeouts)?;
    for (name, help, v) in [
        (
            "classical_fallbacks",
            "Handshakes that fell back to a classical group under pq-preferred.",
            m.classical_fallbacks,
        ),
        (
            "hello_retries",
            "Handshakes that needed a HelloRetryRequest.",
            m.hello_retries,
        ),
        ("resumed", "Resumed handshakes.", m.resumed),
    ] {
        counter(out, name, help, v)?;
    }
    histogram(
        out,
        "handshake_duration",
        "Time from TCP accept to a completed or failed handshake.",
        &m.handshake_seconds,
    )
}

fn encode_proxy(out: &mut DescriptorEncoder, p: &ProxySnapshot) -> fmt::Result {
    counters(
        out,
        "responses",
        "HTTP responses sent to clients by status class (upstream's and the sidecar's own).",
        "class",
        p.responses_by_class.iter().copied(),
    )?;
    counters(
        out,
        "upstream_errors",
        "Upstream requests that got no response, by kind (rejected: 503, max-upstream-requests in flight).",
        "kind",
        p.upstream_errors.iter().copied(),
    )?;
    counters(
        out,
        "proxy_refusals",
        "Requests the proxy refused before the upstream, by reason: host (421, not in allowed-hosts), body_timeout (408, body not complete within request-body-timeout).",
        "reason",
        p.refusals.iter().copied(),
    )?;
    histogram(
        out,
        "upstream_duration",
        "Time from request to the upstream's response head.",
        &p.upstream_seconds,
    )?;
    gauge(
        out,
        "streams_active",
        "SSE streams open now.",
        p.streams_active,
    )?;
    for (name, help, v) in [
        ("streams", "SSE streams opened.", p.streams),
        (
            "origin_refused",
            "Requests refused (403) for an Origin not in allowed-origins.",
            p.origin_refused,
        ),
        (
            "body_too_large",
            "Requests refused (413) for a body over max-body-bytes.",
            p.body_too_large,
        ),
        (
            "response_bytes",
            "Response body bytes sent to clients.",
            p.response_bytes,
        ),
    ] {
        counter(out, name, help, v)?;
    }
    Ok(())
}

fn encode_gate(out: &mut DescriptorEncoder, g: &GateSnapshot) -> fmt::Result {
    counters(
        out,
        "gate_refusals",
        "HTTP requests the gate refused, by reason.",
        "reason",
        g.refusals.iter().map(|(r, n)| (r.label(), *n)),
    )?;
    counters(
        out,
        "gate_rule_refusals",
        "JSON-RPC messages refused, by the rule that refused them.",
        "rule",
        g.rule_refusals.iter().map(|(r, n)| (r.as_str(), *n)),
    )?;
    counters(
        out,
        "gate_rate_limited",
        "HTTP requests refused with 429, by rate limit.",
        "limit",
        g.rate_limited.iter().map(|(l, n)| (l.as_str(), *n)),
    )?;
    counters(
        out,
        "gate_token_failures",
        "Bearer tokens not accepted, by kind.",
        "kind",
        g.token_failures.iter().map(|(k, n)| (k.label(), *n)),
    )?;
    counters(
        out,
        "gate_jwks_refreshes",
        "JWKS loads by result (a failed one keeps the previous keys).",
        "result",
        [("ok", g.jwks_refresh_ok), ("failed", g.jwks_refresh_failed)],
    )?;
    counters(
        out,
        "gate_tool_changes",
        "Listed tools that differ from their pins ([tools]), each distinct change once, by kind.",
        "kind",
        g.tool_changes.iter().copied(),
    )?;
    gauge(
        out,
        "gate_approvals_pending",
        "Calls held for approval now.",
        g.approvals_pending,
    )?;
    counters(
        out,
        "gate_approval_decisions",
        "Calls held for approval that closed, by outcome (approved, denied, expired, cancelled).",
        "outcome",
        g.approval_outcomes.iter().map(|(o, n)| (o.label(), *n)),
    )?;
    if let Some((up, errors)) = g.fleet {
        gauge(
            out,
            "gate_fleet_redis_up",
            "[fleet]: 1 when the fleet's Redis answered the last call, 0 when it did not.",
            up,
        )?;
        counter(
            out,
            "gate_fleet_errors",
            "[fleet]: calls to Redis that failed or timed out (on-failure decided each).",
            errors,
        )?;
    }
    histogram(
        out,
        "gate_approval_wait",
        "How long calls held for approval waited, however they closed.",
        &g.approval_wait,
    )?;
    for (name, help, v) in [
        (
            "gate_tokens_verified",
            "Bearer tokens accepted.",
            g.tokens_verified,
        ),
        (
            "gate_audit_records",
            "Audit records queued for writing.",
            g.audit_records,
        ),
        (
            "gate_audit_dropped",
            "Audit records dropped because the queue was full (the writer fell behind, or its writes fail) or closed.",
            g.audit_dropped,
        ),
        (
            "gate_audit_write_failures",
            "Audit log writes that failed; their records are kept and written again every second.",
            g.audit_write_failures,
        ),
        (
            "gate_approval_decisions_refused",
            "Approval decisions refused: not an approver, an unknown or closed id, other arguments.",
            g.approval_decisions_refused,
        ),
    ] {
        counter(out, name, help, v)?;
    }
    Ok(())
}

/// A counter without labels. `name` is the family's, without `_total`: the encoder adds it.
fn counter(out: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(out.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// A counter family with one label, a sample per `(label value, count)`.
fn counters<'a>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut family = out.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in samples {
        labelled(&mut family, [(label, value)], n)?;
    }
    Ok(())
}

/// One labelled sample of a counter family.
fn labelled<const N: usize>(
    family: &mut MetricEncoder,
    labels: [(&'static str, &str); N],
    v: u64,
) -> fmt::Result {
    ConstCounter::new(v).encode(family.encode_family(&labels)?)
}

fn gauge(out: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstGauge::new(v).encode(out.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A histogram in seconds: `name` without the unit, which the encoder appends.
fn histogram(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> fmt::Result {
    let unit = Unit::Seconds;
    Buckets(h).encode(out.encode_descriptor(name, help, Some(&unit), MetricType::Histogram)?)
}

/// A [`HistogramSnapshot`] as prometheus-client encodes a histogram.
struct Buckets<'a>(&'a HistogramSnapshot);

impl EncodeMetric for Buckets<'_> {
    fn encode(&self, mut out: MetricEncoder) -> fmt::Result {
        // The encoder sums per-bucket counts itself, and writes `+Inf` for an infinite
        // bound; the snapshot's counts are cumulative and its `+Inf` is the total.
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .map(|&(le, cumulative)| {
                let n = cumulative.saturating_sub(below);
                below = cumulative;
                (le, n)
            })
            .collect();
        // A scrape during an observation can see its bucket counted before `count`: `+Inf`
        // and `_count` must agree, so both are the larger.
        let total = self.0.count.max(below);
        buckets.push((f64::INFINITY, total - below));
        out.encode_histogram::<NoLabelSet>(self.0.sum_seconds, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_rule_name_is_escaped_and_stays_one_sample() {
        let hostile = "x\"} 1\nmcp_pqtls_injected_total 1\n# \\";
        let state = AdminState {
            gate: Some(Arc::new(GateMetrics::new(
                vec![hostile.to_owned()],
                vec!["calls".to_owned()],
            ))),
            ..AdminState::default()
        };
        let text = state.render().unwrap();
        let escaped = r#"mcp_pqtls_gate_rule_refusals_total{rule="x\"} 1\nmcp_pqtls_injected_total 1\n# \\"} 0"#;
        assert!(text.lines().any(|l| l == escaped), "{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("mcp_pqtls_injected")),
            "{text}"
        );
    }

    #[test]
    fn samples_keep_their_names_labels_and_values() {
        let state = AdminState::default();
        state.reloads_failed.fetch_add(2, Relaxed);
        let text = state.render().unwrap();
        for line in [
            "mcp_pqtls_handshakes_total{result=\"ok\",group=\"X25519MLKEM768\",pq=\"true\"} 0",
            "mcp_pqtls_handshakes_total{result=\"refused\",reason=\"no_pq_group_offered\"} 0",
            "mcp_pqtls_handshakes_total{result=\"failed\"} 0",
            "mcp_pqtls_connections_active 0",
            "mcp_pqtls_connections_rejected_total{reason=\"max_connections_per_ip\"} 0",
            "mcp_pqtls_responses_total{class=\"5xx\"} 0",
            "mcp_pqtls_upstream_errors_total{kind=\"rejected_per_ip\"} 0",
            "mcp_pqtls_cert_reloads_total{result=\"failed\"} 2",
            "# TYPE mcp_pqtls_handshake_duration_seconds histogram",
            "mcp_pqtls_handshake_duration_seconds_bucket{le=\"+Inf\"} 0",
            "mcp_pqtls_handshake_duration_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn histogram_buckets_stay_cumulative() {
        let state = AdminState::default();
        for ms in [0, 3, 3, 20_000] {
            state
                .tls
                .handshake_duration(std::time::Duration::from_millis(ms));
        }
        let text = state.render().unwrap();
        for line in [
            "mcp_pqtls_handshake_duration_seconds_bucket{le=\"0.001\"} 1",
            "mcp_pqtls_handshake_duration_seconds_bucket{le=\"0.005\"} 3",
            "mcp_pqtls_handshake_duration_seconds_bucket{le=\"10.0\"} 3",
            "mcp_pqtls_handshake_duration_seconds_bucket{le=\"+Inf\"} 4",
            "mcp_pqtls_handshake_duration_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }
}
