//! Counters of the gate: refusals by reason and by rule, rate-limited requests by limit,
//! token failures by kind, JWKS refreshes, audit records. Exported by the admin listener.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::reason::{Outcome, RefusalReason, TokenFailure};
use crate::metrics::{Histogram, HistogramSnapshot};

/// Upper bounds (seconds) of `gate_approval_wait_seconds`: a person takes seconds to minutes.
pub const APPROVAL_WAIT_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Counters of one gate.
#[derive(Debug)]
pub struct GateMetrics {
    refusals: [AtomicU64; RefusalReason::COUNT],
    token_failures: [AtomicU64; TokenFailure::COUNT],
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
    tool_changes: [AtomicU64; TOOL_CHANGE_KINDS.len()],
    approvals_pending: AtomicU64,
    approval_outcomes: [AtomicU64; Outcome::COUNT],
    approval_decisions_refused: AtomicU64,
    approval_wait: Histogram,
    /// `[fleet]`: 0 none, 1 configured; whether Redis answered last; calls that failed.
    fleet: AtomicU64,
    fleet_up: AtomicU64,
    fleet_errors: AtomicU64,
}

/// The `kind` labels of `gate_tool_changes_total`.
pub const TOOL_CHANGE_KINDS: [&str; 3] = ["added", "changed", "removed"];

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
            tool_changes: Default::default(),
            approvals_pending: AtomicU64::new(0),
            approval_outcomes: Default::default(),
            approval_decisions_refused: AtomicU64::new(0),
            approval_wait: Histogram::with_bounds(&APPROVAL_WAIT_BUCKETS),
            fleet: AtomicU64::new(0),
            fleet_up: AtomicU64::new(0),
            fleet_errors: AtomicU64::new(0),
        }
    }

    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub(super) fn fleet_configured(&self) {
        self.fleet.store(1, Relaxed);
    }

    /// A call to the fleet's Redis failed (and so it is down).
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub(super) fn fleet_error(&self) {
        self.fleet_errors.fetch_add(1, Relaxed);
        self.fleet_up.store(0, Relaxed);
    }

    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub(super) fn fleet_up(&self, up: bool) {
        self.fleet_up.store(u64::from(up), Relaxed);
    }

    pub(super) fn set_approvals_pending(&self, n: usize) {
        self.approvals_pending
            .store(n.try_into().unwrap_or(u64::MAX), Relaxed);
    }

    pub(super) fn approval_closed(&self, outcome: Outcome, waited: std::time::Duration) {
        self.approval_outcomes[outcome as usize].fetch_add(1, Relaxed);
        self.approval_wait.observe(waited);
    }

    pub(super) fn approval_decision_refused(&self) {
        self.approval_decisions_refused.fetch_add(1, Relaxed);
    }

    pub(super) fn tool_change(&self, kind: &str) {
        if let Some(i) = TOOL_CHANGE_KINDS.iter().position(|k| *k == kind) {
            self.tool_changes[i].fetch_add(1, Relaxed);
        }
    }

    pub(super) fn refusal(&self, reason: RefusalReason) {
        self.refusals[reason as usize].fetch_add(1, Relaxed);
    }

    pub(super) fn token_failure(&self, kind: TokenFailure) {
        self.token_failures[kind as usize].fetch_add(1, Relaxed);
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
        fn pairs<T: Copy>(names: &[T], counters: &[AtomicU64]) -> Vec<(T, u64)> {
            names
                .iter()
                .zip(counters)
                .map(|(n, c)| (*n, c.load(Relaxed)))
                .collect()
        }
        let named = |names: &[String], counters: &[AtomicU64]| {
            names
                .iter()
                .zip(counters)
                .map(|(n, c)| (n.clone(), c.load(Relaxed)))
                .collect()
        };
        GateSnapshot {
            refusals: pairs(&RefusalReason::ALL, &self.refusals),
            token_failures: pairs(&TokenFailure::ALL, &self.token_failures),
            rule_refusals: named(&self.rule_names, &self.rule_refusals),
            rate_limited: named(&self.limit_names, &self.rate_limited),
            tokens_verified: self.tokens_verified.load(Relaxed),
            jwks_refresh_ok: self.jwks_refresh_ok.load(Relaxed),
            jwks_refresh_failed: self.jwks_refresh_failed.load(Relaxed),
            audit_records: self.audit_records.load(Relaxed),
            audit_dropped: self.audit_dropped.load(Relaxed),
            audit_write_failures: self.audit_write_failures.load(Relaxed),
            tool_changes: pairs(&TOOL_CHANGE_KINDS, &self.tool_changes),
            approvals_pending: self.approvals_pending.load(Relaxed),
            approval_outcomes: pairs(&Outcome::ALL, &self.approval_outcomes),
            approval_decisions_refused: self.approval_decisions_refused.load(Relaxed),
            approval_wait: self.approval_wait.snapshot(),
            fleet: (self.fleet.load(Relaxed) == 1)
                .then(|| (self.fleet_up.load(Relaxed), self.fleet_errors.load(Relaxed))),
        }
    }
}

/// A copy of the gate counters.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct GateSnapshot {
    /// HTTP requests refused, by reason (every one of [`RefusalReason::ALL`]).
    pub refusals: Vec<(RefusalReason, u64)>,
    /// Bearer tokens not accepted, by kind (every one of [`TokenFailure::ALL`]).
    pub token_failures: Vec<(TokenFailure, u64)>,
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
    /// Listed tools that differ from their pins, each distinct change once, by kind (every
    /// one of [`TOOL_CHANGE_KINDS`]).
    pub tool_changes: Vec<(&'static str, u64)>,
    /// Calls held for approval now.
    pub approvals_pending: u64,
    /// Held calls closed, by outcome (every one of [`Outcome::ALL`]).
    pub approval_outcomes: Vec<(Outcome, u64)>,
    /// Decisions refused: not an approver, closed, expired, unknown id or other arguments.
    pub approval_decisions_refused: u64,
    /// How long held calls waited, however they closed.
    pub approval_wait: HistogramSnapshot,
    /// With `[fleet]`: whether Redis answered the last call (1) or not (0), and the calls
    /// that failed or timed out.
    pub fleet: Option<(u64, u64)>,
}
