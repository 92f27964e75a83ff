//! Counters of the gate: refusals by reason and by rule, rate-limited requests by limit,
//! token failures by kind, JWKS refreshes, audit records. Exported by the admin listener.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Labels of [`GateSnapshot::refusals`]: why an HTTP request was refused.
pub const REFUSAL_REASONS: [&str; 13] = [
    "unauthorized",
    "insufficient_scope",
    "rule",
    "header_mismatch",
    "parse_error",
    "invalid_request",
    "body_too_large",
    "rate_limited",
    // 408: the body did not arrive whole within request-body-timeout.
    "body_timeout",
    // 503: max-buffered-body-bytes is taken by other requests.
    "body_budget",
    // 503: max-inflight-per-connection requests of this connection are in the gate.
    "inflight",
    // 429, unread: the address caused more than refusals-per-ip-per-minute refusals.
    "refusal_flood",
    // 503: [audit] fail-closed and the audit queue has no room for the call's records.
    "audit_full",
];

/// Labels of [`GateSnapshot::token_failures`]: why a bearer token was not accepted.
pub const TOKEN_FAILURES: [&str; 14] = [
    "missing",
    "malformed",
    "algorithm_not_allowed",
    "unknown_kid",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "no_keys",
    "wrong_type",
    "crit",
    "bad_scope",
];

/// Counters of one gate.
#[derive(Debug)]
pub struct GateMetrics {
    refusals: [AtomicU64; REFUSAL_REASONS.len()],
    token_failures: [AtomicU64; TOKEN_FAILURES.len()],
    rule_names: Vec<String>,
    rule_refusals: Vec<AtomicU64>,
    limit_names: Vec<String>,
    rate_limited: Vec<AtomicU64>,
    pub(super) tokens_verified: AtomicU64,
    pub(super) jwks_refresh_ok: AtomicU64,
    pub(super) jwks_refresh_failed: AtomicU64,
    pub(super) audit_records: AtomicU64,
    pub(super) audit_dropped: AtomicU64,
    pub(super) audit_write_failures: AtomicU64,
}

impl GateMetrics {
    /// Counters for a gate with these rule and limit names (the label values).
    pub fn new(rule_names: Vec<String>, limit_names: Vec<String>) -> Self {
        Self {
            refusals: Default::default(),
            token_failures: Default::default(),
            rule_refusals: rule_names.iter().map(|_| AtomicU64::new(0)).collect(),
            rule_names,
            rate_limited: limit_names.iter().map(|_| AtomicU64::new(0)).collect(),
            limit_names,
            tokens_verified: AtomicU64::new(0),
            jwks_refresh_ok: AtomicU64::new(0),
            jwks_refresh_failed: AtomicU64::new(0),
            audit_records: AtomicU64::new(0),
            audit_dropped: AtomicU64::new(0),
            audit_write_failures: AtomicU64::new(0),
        }
    }

    pub(super) fn refusal(&self, reason: &'static str) {
        bump(&REFUSAL_REASONS, &self.refusals, reason);
    }

    pub(super) fn token_failure(&self, kind: &'static str) {
        bump(&TOKEN_FAILURES, &self.token_failures, kind);
    }

    pub(super) fn rule_refusal(&self, rule: &str) {
        if let Some(i) = self.rule_names.iter().position(|n| n == rule) {
            self.rule_refusals[i].fetch_add(1, Relaxed);
        }
    }

    pub(super) fn rate_limited(&self, limit: &str) {
        if let Some(i) = self.limit_names.iter().position(|n| n == limit) {
            self.rate_limited[i].fetch_add(1, Relaxed);
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> GateSnapshot {
        let pairs = |names: &[&'static str], counters: &[AtomicU64]| {
            names
                .iter()
                .zip(counters)
                .map(|(n, c)| (*n, c.load(Relaxed)))
                .collect()
        };
        let named = |names: &[String], counters: &[AtomicU64]| {
            names
                .iter()
                .zip(counters)
                .map(|(n, c)| (n.clone(), c.load(Relaxed)))
                .collect()
        };
        GateSnapshot {
            refusals: pairs(&REFUSAL_REASONS, &self.refusals),
            token_failures: pairs(&TOKEN_FAILURES, &self.token_failures),
            rule_refusals: named(&self.rule_names, &self.rule_refusals),
            rate_limited: named(&self.limit_names, &self.rate_limited),
            tokens_verified: self.tokens_verified.load(Relaxed),
            jwks_refresh_ok: self.jwks_refresh_ok.load(Relaxed),
            jwks_refresh_failed: self.jwks_refresh_failed.load(Relaxed),
            audit_records: self.audit_records.load(Relaxed),
            audit_dropped: self.audit_dropped.load(Relaxed),
            audit_write_failures: self.audit_write_failures.load(Relaxed),
        }
    }
}

fn bump(names: &[&str], counters: &[AtomicU64], label: &str) {
    if let Some(i) = names.iter().position(|n| *n == label) {
        counters[i].fetch_add(1, Relaxed);
    }
}

/// A copy of the gate counters.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct GateSnapshot {
    /// HTTP requests refused, by reason (see [`REFUSAL_REASONS`]).
    pub refusals: Vec<(&'static str, u64)>,
    /// Bearer tokens not accepted, by kind (see [`TOKEN_FAILURES`]).
    pub token_failures: Vec<(&'static str, u64)>,
    /// JSON-RPC messages refused, by rule name.
    pub rule_refusals: Vec<(String, u64)>,
    /// HTTP requests refused with 429, by limit name.
    pub rate_limited: Vec<(String, u64)>,
    /// Bearer tokens verified.
    pub tokens_verified: u64,
    /// JWKS loads that replaced the keys.
    pub jwks_refresh_ok: u64,
    /// JWKS loads that failed (the previous keys stayed).
    pub jwks_refresh_failed: u64,
    /// Audit records queued for writing.
    pub audit_records: u64,
    /// Audit records dropped because the queue was full (the writer fell behind or its
    /// writes fail) or closed.
    pub audit_dropped: u64,
    /// Audit writes that failed (their records are kept and written again).
    pub audit_write_failures: u64,
}
