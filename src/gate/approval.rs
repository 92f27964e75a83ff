//! Human approval (`require-approval` rules): the desk where a held `tools/call` waits for a
//! person, and the decision bound to exactly that call.
//!
//! A call a rule says needs approval passes every other check first (rules, tools, rate
//! limits, audit room), then is put on the [`Desk`] under a random id and not forwarded. The
//! id names that one call: its caller, tool and arguments digest are fixed when it is held,
//! the approvers of its rule decide it, once, before its deadline; the deadline passing is a
//! denial. Whoever decides is authenticated by the admin listener (`Gate::serve_approvals`,
//! on `/approvals`); nobody decides their own call.
//!
//! The desk is bounded (`max-pending`, `max-pending-per-caller`): a flood of calls needing
//! approval is refused (503) before it holds memory or connections. Held calls also keep
//! their body bytes and their connection's in-flight place, so the gate's other budgets count
//! them. Closed ids are remembered (the last [`REMEMBERED`]) so that a replayed decision is
//! told what became of its call (409) rather than "unknown".

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::glob::{Glob, GlobError};
use super::metrics::GateMetrics;
pub use super::reason::Outcome;

/// `approval-timeout` when a rule does not set it: what a held call waits before it is
/// denied.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How many closed approvals the desk remembers, for replies to late or replayed decisions.
pub const REMEMBERED: usize = 4096;

/// Who may decide a rule's held calls: an entry of its `approvers`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Approver {
    /// `scope:NAME`: a bearer token from the gate's JWKS carrying this scope.
    Scope(String),
    /// `id:PATTERN`: an mTLS client identity matching this pattern.
    Identity(Glob),
}

/// Why an `approvers` entry cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApproverError {
    /// Neither `scope:` nor `id:`.
    #[error("`{0}`: write \"scope:NAME\" (a token scope) or \"id:PATTERN\" (a client identity)")]
    Kind(String),
    /// `scope:` with nothing after it, or with whitespace in it.
    #[error("`{0}`: a scope is one non-empty word (token scopes are space-separated)")]
    BadScope(String),
    /// `id:` with a pattern that is not a glob.
    #[error("`{0}`: {1}")]
    Pattern(String, GlobError),
}

impl Approver {
    /// Parses `scope:NAME` or `id:PATTERN`.
    pub fn parse(s: &str) -> Result<Self, ApproverError> {
        if let Some(scope) = s.strip_prefix("scope:") {
            if scope.is_empty() || scope.contains(char::is_whitespace) {
                return Err(ApproverError::BadScope(s.to_owned()));
            }
            return Ok(Self::Scope(scope.to_owned()));
        }
        if let Some(pattern) = s.strip_prefix("id:") {
            return Glob::new(pattern)
                .map(Self::Identity)
                .map_err(|e| ApproverError::Pattern(s.to_owned(), e));
        }
        Err(ApproverError::Kind(s.to_owned()))
    }

    /// Whether `who` is this approver.
    pub fn admits(&self, who: &Approving) -> bool {
        match self {
            Self::Scope(s) => who.subject.is_some() && who.scopes.iter().any(|t| t == s),
            Self::Identity(g) => who.identity.as_deref().is_some_and(|i| g.matches(i)),
        }
    }
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scope(s) => write!(f, "scope:{s}"),
            Self::Identity(g) => write!(f, "id:{g}"),
        }
    }
}

/// Whether `who` is any of `approvers`.
pub fn may_decide(approvers: &[Approver], who: &Approving) -> bool {
    approvers.iter().any(|a| a.admits(who))
}

/// Who is deciding, as the admin listener authenticated them: a verified token's subject and
/// scopes, an mTLS client identity, or both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Approving {
    /// The token's subject.
    pub subject: Option<String>,
    /// The token's scopes.
    pub scopes: Vec<String>,
    /// The client certificate's identity.
    pub identity: Option<String>,
}

impl Approving {
    /// The approver as `approvers` admitted them: `id:IDENTITY` when a client-identity entry
    /// did, else `sub:SUBJECT` (a scope entry), else [`Approving::name`].
    pub fn name_for(&self, approvers: &[Approver]) -> String {
        let by = |identity: bool| {
            approvers
                .iter()
                .filter(|a| matches!(a, Approver::Identity(_)) == identity)
                .any(|a| a.admits(self))
        };
        match (&self.identity, &self.subject) {
            (Some(i), _) if by(true) => format!("id:{i}"),
            (_, Some(s)) if by(false) => format!("sub:{s}"),
            _ => self.name(),
        }
    }

    /// Whether this approver is who made `call`: nobody decides their own call.
    pub fn made(&self, call: &CallerView) -> bool {
        let same = |a: &Option<String>, b: &Option<String>| a.is_some() && a == b;
        same(&self.identity, &call.identity) || same(&self.subject, &call.subject)
    }

    /// The approver as the audit log and the client see them: `id:IDENTITY` or `sub:SUBJECT`.
    pub fn name(&self) -> String {
        match (&self.identity, &self.subject) {
            (Some(i), _) => format!("id:{i}"),
            (None, Some(s)) => format!("sub:{s}"),
            (None, None) => "anonymous".to_owned(),
        }
    }
}

/// A rule's `require-approval`, with its `approvers` and `approval-timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApprovalRule {
    /// Who may decide (any of them).
    pub approvers: Vec<Approver>,
    /// How long a held call waits before it is denied.
    pub timeout: Duration,
}

/// How many calls may wait at once (the `[approvals]` section).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApprovalLimits {
    /// `max-pending`: held calls across all callers. Default 64.
    pub max_pending: usize,
    /// `max-pending-per-caller`: held calls of one caller (identity, else subject, else
    /// address). Default 4.
    pub max_pending_per_caller: usize,
    /// `keepalive`: how often a held SSE response gets a comment. Default 15 s.
    pub keepalive: Duration,
}

impl Default for ApprovalLimits {
    fn default() -> Self {
        Self {
            max_pending: 64,
            max_pending_per_caller: 4,
            keepalive: Duration::from_secs(15),
        }
    }
}

/// Who called, as an approver sees it.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct CallerView {
    /// The mTLS client identity.
    pub identity: Option<String>,
    /// The token's subject.
    pub subject: Option<String>,
    /// The client's address.
    pub addr: String,
    /// The client's `clientInfo.name` (2026-07-28).
    pub client_name: Option<String>,
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<String>,
    /// `Mcp-Session-Id` (2025-11-25 and earlier).
    pub session_id: Option<String>,
}

/// The TLS facts of the caller's connection.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct TlsView {
    /// The key-exchange group, by IANA name.
    pub group: Option<String>,
    /// Whether it is post-quantum.
    pub pq: bool,
    /// The cipher suite, by IANA name.
    pub cipher_suite: Option<String>,
    /// `TLSv1.3`.
    pub version: Option<String>,
}

/// A held call as approvers see it (the API's JSON, the page, the CLI).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct HeldCall {
    /// The approval id.
    pub id: String,
    /// The tool called.
    pub tool: String,
    /// Its arguments, as the model wrote them.
    pub arguments: Value,
    /// SHA-256 of the arguments' canonical (RFC 8785) form, `sha256:HEX`.
    pub arguments_digest: String,
    /// The rule that asked for approval.
    pub rule: String,
    /// Who may decide, as configured.
    pub approvers: Vec<String>,
    /// Who called.
    pub caller: CallerView,
    /// Over what.
    pub tls: TlsView,
    /// When it was held (RFC 3339).
    pub created: String,
    /// When it is denied undecided (RFC 3339).
    pub expires: String,
    /// Milliseconds since it was held.
    pub age_ms: u64,
    /// Milliseconds until it expires.
    pub expires_in_ms: u64,
}

/// What became of a held call: the `approval` of its audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Decided {
    /// The approval id.
    pub id: String,
    /// `approved`, `denied`, `expired` or `cancelled`.
    pub decision: Outcome,
    /// Who decided (none when it expired or was cancelled).
    pub approver: Option<String>,
    /// The reason they gave.
    pub reason: Option<String>,
    /// Milliseconds it was held.
    pub waited_ms: u64,
}

/// Why a call cannot be held.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HoldError {
    /// `max-pending` calls are held.
    #[error("{0} calls are waiting for approval (approvals.max-pending); retry later")]
    Full(usize),
    /// `max-pending-per-caller` calls of this caller are held.
    #[error("this client has {0} calls waiting for approval (approvals.max-pending-per-caller); wait for them to be decided")]
    CallerFull(usize),
    /// The system RNG failed: no unguessable id can be made.
    #[error("no approval id can be made: the system's random number generator failed")]
    NoRandom,
}

/// Why a decision was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecideError {
    /// No held call has this id, and none had recently.
    #[error("no call is waiting for approval under id `{0}`")]
    Unknown(String),
    /// The call was already decided, expired or cancelled: an id decides one call, once.
    #[error("approval `{id}` is closed: {outcome}{}; an approval decides one call, once", by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default())]
    Closed {
        /// The id.
        id: String,
        /// What became of it.
        outcome: &'static str,
        /// Who decided it.
        by: Option<String>,
    },
    /// The decider is not among the rule's approvers.
    #[error("{who} may not decide this call: its approvers are {approvers}")]
    NotApprover {
        /// The decider.
        who: String,
        /// The rule's approvers.
        approvers: String,
    },
    /// The decider made the call: nobody approves their own.
    #[error("{0} made this call: an approver may not decide their own call")]
    OwnCall(String),
    /// The decision names other arguments than the held call's.
    #[error("the decision is for arguments {given}, the call held under this id has {held}: reload and decide what is held")]
    DigestMismatch {
        /// The digest the decider sent.
        given: String,
        /// The held call's.
        held: String,
    },
}

impl DecideError {
    /// The HTTP status of the API's answer.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::Unknown(_) => http::StatusCode::NOT_FOUND,
            Self::Closed { .. } | Self::DigestMismatch { .. } => http::StatusCode::CONFLICT,
            Self::NotApprover { .. } | Self::OwnCall(_) => http::StatusCode::FORBIDDEN,
        }
    }
}

/// An approver's decision, sent to the held call.
#[derive(Debug)]
struct Verdict {
    approve: bool,
    approver: String,
    reason: Option<String>,
}

#[derive(Debug)]
struct Entry {
    call: HeldCall,
    approvers: Vec<Approver>,
    caller_key: String,
    created: Instant,
    deadline: Instant,
    tx: oneshot::Sender<Verdict>,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<String, Entry>,
    per_caller: HashMap<String, usize>,
    closed: HashMap<String, (Outcome, Option<String>)>,
    closed_order: VecDeque<String>,
}

/// Held calls and their decisions.
#[derive(Debug)]
pub struct Desk {
    state: Mutex<State>,
    limits: ApprovalLimits,
    metrics: Arc<GateMetrics>,
}

impl Desk {
    /// An empty desk.
    pub fn new(limits: ApprovalLimits, metrics: Arc<GateMetrics>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            limits,
            metrics,
        })
    }

    /// The desk's limits.
    pub fn limits(&self) -> &ApprovalLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds `call` (its `id`, `created` and `expires` are set here) until it is decided or
    /// `rule.timeout` passes.
    pub(super) fn hold(
        self: &Arc<Self>,
        mut call: HeldCall,
        rule: &ApprovalRule,
        caller_key: String,
    ) -> Result<Hold, HoldError> {
        let created = Instant::now();
        let deadline = created + rule.timeout;
        let (tx, rx) = oneshot::channel();
        let id = new_id().ok_or(HoldError::NoRandom)?;
        {
            let mut s = self.lock();
            if s.pending.len() >= self.limits.max_pending {
                return Err(HoldError::Full(s.pending.len()));
            }
            let mine = s.per_caller.get(&caller_key).copied().unwrap_or(0);
            if mine >= self.limits.max_pending_per_caller {
                return Err(HoldError::CallerFull(mine));
            }
            let now = SystemTime::now();
            call.id = id.clone();
            call.created = rfc3339(now);
            call.expires = rfc3339(now + rule.timeout);
            *s.per_caller.entry(caller_key.clone()).or_insert(0) += 1;
            info!(approval.id = %id, tool = ?call.tool, authz.rule = ?call.rule,
                client.addr = %call.caller.addr, client.id = ?call.caller.identity.as_deref().unwrap_or(""),
                timeout_s = rule.timeout.as_secs(), "Call held for approval");
            s.pending.insert(
                id.clone(),
                Entry {
                    call,
                    approvers: rule.approvers.clone(),
                    caller_key,
                    created,
                    deadline,
                    tx,
                },
            );
            self.metrics.set_approvals_pending(s.pending.len());
        }
        Ok(Hold {
            id,
            desk: self.clone(),
            rx,
            created,
            deadline,
            decided: None,
        })
    }

    /// The held calls `who` may decide, oldest first.
    pub fn pending(&self, who: &Approving) -> Vec<HeldCall> {
        let s = self.lock();
        let mut calls: Vec<(&Instant, HeldCall)> = s
            .pending
            .values()
            .filter(|e| authorize(e, who).is_ok())
            .map(|e| (&e.created, view(e)))
            .collect();
        calls.sort_by_key(|(created, _)| **created);
        calls.into_iter().map(|(_, c)| c).collect()
    }

    /// One held call, if `who` may decide it (else it is unknown to them: an id they may not
    /// decide is not confirmed to exist).
    pub fn get(&self, id: &str, who: &Approving) -> Result<HeldCall, DecideError> {
        let s = self.lock();
        let entry = open_entry(&s, id)?;
        match authorize(entry, who) {
            Ok(()) => Ok(view(entry)),
            Err(DecideError::NotApprover { .. }) => Err(DecideError::Unknown(id.to_owned())),
            Err(e) => Err(e),
        }
    }

    /// Decides the call held under `id`. `digest`, when given, must be the held call's
    /// `arguments_digest` (what the approver was shown). Refused when `who` is not an approver
    /// of its rule, when it is closed, or when its deadline has passed.
    pub fn decide(
        &self,
        id: &str,
        who: &Approving,
        approve: bool,
        reason: Option<String>,
        digest: Option<&str>,
    ) -> Result<HeldCall, DecideError> {
        let mut s = self.lock();
        let refused = |e: DecideError| {
            self.metrics.approval_decision_refused();
            warn!(approval.id = %id, approver = %who.name(), error = %e, "Approval decision refused");
            e
        };
        let entry = open_entry(&s, id).map_err(refused)?;
        authorize(entry, who).map_err(refused)?;
        if let Some(given) = digest.filter(|d| *d != entry.call.arguments_digest) {
            return Err(refused(DecideError::DigestMismatch {
                given: given.to_owned(),
                held: entry.call.arguments_digest.clone(),
            }));
        }
        if Instant::now() >= entry.deadline {
            // Its holder will see the deadline too; it is expired, whoever is first.
            return Err(refused(DecideError::Closed {
                id: id.to_owned(),
                outcome: Outcome::Expired.label(),
                by: None,
            }));
        }
        let outcome = if approve {
            Outcome::Approved
        } else {
            Outcome::Denied
        };
        let approver = who.name_for(&entry.approvers);
        let Some(entry) = close(&mut s, &self.metrics, id, outcome, Some(approver.clone())) else {
            return Err(refused(DecideError::Unknown(id.to_owned())));
        };
        let call = entry.call.clone();
        // The holder may have gone between the lock and here: it is then cancelled.
        let _ = entry.tx.send(Verdict {
            approve,
            approver,
            reason,
        });
        Ok(call)
    }

    /// Closes `id` from its holder's side (expired or cancelled), unless a decision did first.
    fn close_held(&self, id: &str, outcome: Outcome) -> bool {
        let mut s = self.lock();
        close(&mut s, &self.metrics, id, outcome, None).is_some()
    }
}

fn open_entry<'s>(s: &'s State, id: &str) -> Result<&'s Entry, DecideError> {
    if let Some(e) = s.pending.get(id) {
        return Ok(e);
    }
    match s.closed.get(id) {
        Some((outcome, by)) => Err(DecideError::Closed {
            id: id.to_owned(),
            outcome: outcome.label(),
            by: by.clone(),
        }),
        None => Err(DecideError::Unknown(id.to_owned())),
    }
}

fn authorize(entry: &Entry, who: &Approving) -> Result<(), DecideError> {
    if may_decide(&entry.approvers, who) {
        if who.made(&entry.call.caller) {
            return Err(DecideError::OwnCall(who.name()));
        }
        return Ok(());
    }
    Err(DecideError::NotApprover {
        who: who.name(),
        approvers: entry.call.approvers.join(", "),
    })
}

/// Takes `id` off the desk and remembers how it closed; `None` if it was not pending.
fn close(
    s: &mut State,
    metrics: &GateMetrics,
    id: &str,
    outcome: Outcome,
    by: Option<String>,
) -> Option<Entry> {
    let entry = s.pending.remove(id)?;
    if let Some(n) = s.per_caller.get_mut(&entry.caller_key) {
        *n -= 1;
        if *n == 0 {
            s.per_caller.remove(&entry.caller_key);
        }
    }
    if s.closed_order.len() >= REMEMBERED {
        if let Some(old) = s.closed_order.pop_front() {
            s.closed.remove(&old);
        }
    }
    s.closed_order.push_back(id.to_owned());
    s.closed.insert(id.to_owned(), (outcome, by));
    metrics.approval_closed(outcome, entry.created.elapsed());
    metrics.set_approvals_pending(s.pending.len());
    Some(entry)
}

fn view(e: &Entry) -> HeldCall {
    let now = Instant::now();
    HeldCall {
        age_ms: millis(now.saturating_duration_since(e.created)),
        expires_in_ms: millis(e.deadline.saturating_duration_since(now)),
        ..e.call.clone()
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// 128 random bits from the system RNG, hex: an id nobody can guess (it is not a
/// credential, but a guessed id would let an approver decide a call they were never shown).
fn new_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A call on the desk, owned by the request that waits for it. Dropped undecided (the client
/// left), it is cancelled.
#[derive(Debug)]
pub struct Hold {
    id: String,
    desk: Arc<Desk>,
    rx: oneshot::Receiver<Verdict>,
    created: Instant,
    deadline: Instant,
    decided: Option<Decided>,
}

impl Hold {
    /// The approval id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits for the decision, or the deadline (a denial).
    pub async fn wait(&mut self) -> Decided {
        if let Some(d) = &self.decided {
            return d.clone();
        }
        let verdict = tokio::time::timeout_at(self.deadline.into(), &mut self.rx).await;
        let decided = match verdict {
            Ok(Ok(v)) => self.decided_by(v),
            // The deadline, or the desk dropped the sender (never while we hold the id):
            // expired, unless a decision got in first.
            _ if self.desk.close_held(&self.id, Outcome::Expired) => {
                warn!(approval.id = %self.id, waited_s = self.created.elapsed().as_secs(), "Approval expired: the call is denied");
                self.closed(
                    Outcome::Expired,
                    None,
                    Some("no approver decided in time".to_owned()),
                )
            }
            _ => match self.rx.try_recv() {
                Ok(v) => self.decided_by(v),
                Err(_) => self.closed(Outcome::Expired, None, None),
            },
        };
        self.decided = Some(decided.clone());
        decided
    }

    fn decided_by(&self, v: Verdict) -> Decided {
        let outcome = if v.approve {
            Outcome::Approved
        } else {
            Outcome::Denied
        };
        info!(approval.id = %self.id, decision = outcome.label(), approver = %v.approver,
            reason = ?v.reason.as_deref().unwrap_or(""), waited_ms = millis(self.created.elapsed()), "Approval decided");
        self.closed(outcome, Some(v.approver), v.reason)
    }

    fn closed(
        &self,
        outcome: Outcome,
        approver: Option<String>,
        reason: Option<String>,
    ) -> Decided {
        Decided {
            id: self.id.clone(),
            decision: outcome,
            approver,
            reason,
            waited_ms: millis(self.created.elapsed()),
        }
    }

    /// Cancels it (its client left), unless it was decided; what became of it, for the audit.
    pub fn cancel(&mut self) -> Decided {
        if let Some(d) = &self.decided {
            return d.clone();
        }
        let decided = if self.desk.close_held(&self.id, Outcome::Cancelled) {
            info!(approval.id = %self.id, waited_ms = millis(self.created.elapsed()), "Approval cancelled: the client left");
            self.closed(Outcome::Cancelled, None, Some("the client left".to_owned()))
        } else {
            // Decided between the client leaving and now: what was decided, never run.
            match self.rx.try_recv() {
                Ok(v) => self.decided_by(v),
                Err(_) => self.closed(Outcome::Cancelled, None, None),
            }
        };
        self.decided = Some(decided.clone());
        decided
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(sub: &str, scopes: &[&str]) -> Approving {
        Approving {
            subject: Some(sub.into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            identity: None,
        }
    }

    fn mtls(id: &str) -> Approving {
        Approving {
            identity: Some(id.into()),
            ..Approving::default()
        }
    }

    fn call(tool: &str, args: &str) -> HeldCall {
        let arguments: Value = serde_json::from_str(args).unwrap();
        HeldCall {
            id: String::new(),
            tool: tool.into(),
            arguments_digest: format!(
                "{}",
                super::super::tools::Digest::of(&serde_jcs::to_vec(&arguments).unwrap())
            ),
            arguments,
            rule: "approve".into(),
            approvers: vec!["scope:approve".into()],
            caller: CallerView::default(),
            tls: TlsView::default(),
            created: String::new(),
            expires: String::new(),
            age_ms: 0,
            expires_in_ms: 0,
        }
    }

    fn rule(timeout: Duration) -> ApprovalRule {
        ApprovalRule {
            approvers: vec![
                Approver::parse("scope:approve").unwrap(),
                Approver::parse("id:spiffe://ops/*").unwrap(),
            ],
            timeout,
        }
    }

    fn desk(limits: ApprovalLimits) -> Arc<Desk> {
        Desk::new(limits, Arc::new(GateMetrics::new(vec![], vec![])))
    }

    #[test]
    fn approvers_parse_and_admit() {
        let table: &[(&str, Approving, bool)] = &[
            ("scope:approve", token("alice", &["mcp", "approve"]), true),
            ("scope:approve", token("bob", &["mcp"]), false),
            // A scope without a verified token (an mTLS caller) is not a scope.
            ("scope:approve", mtls("spiffe://ops/alice"), false),
            ("id:spiffe://ops/*", mtls("spiffe://ops/alice"), true),
            ("id:spiffe://ops/*", mtls("spiffe://dev/alice"), false),
            ("id:spiffe://ops/*", token("spiffe://ops/alice", &[]), false),
        ];
        for (spec, who, want) in table {
            let a = Approver::parse(spec).unwrap();
            assert_eq!(a.to_string(), *spec);
            assert_eq!(a.admits(who), *want, "{spec} {who:?}");
        }
        for bad in [
            "approve",
            "scope:",
            "scope:a b",
            "id:",
            "id:a?b",
            "sub:alice",
        ] {
            assert!(Approver::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_id_decides_its_call_once_and_only_by_an_approver() {
        let desk = desk(ApprovalLimits::default());
        let mut hold = desk
            .hold(
                call("delete_file", r#"{"path":"/a"}"#),
                &rule(DEFAULT_TIMEOUT),
                "k".into(),
            )
            .unwrap();
        let id = hold.id().to_owned();
        assert_eq!(desk.pending(&token("alice", &["approve"])).len(), 1);
        // A non-approver neither sees it nor decides it.
        assert!(desk.pending(&token("mallory", &["mcp"])).is_empty());
        let e = desk
            .decide(&id, &token("mallory", &["mcp"]), true, None, None)
            .unwrap_err();
        assert_eq!(e.status(), http::StatusCode::FORBIDDEN);
        // A decision for other arguments is refused.
        let e = desk
            .decide(
                &id,
                &token("alice", &["approve"]),
                true,
                None,
                Some("sha256:00"),
            )
            .unwrap_err();
        assert!(matches!(e, DecideError::DigestMismatch { .. }), "{e}");
        let digest = desk
            .get(&id, &token("alice", &["approve"]))
            .unwrap()
            .arguments_digest;
        desk.decide(
            &id,
            &mtls("spiffe://ops/carol"),
            true,
            Some("ok".into()),
            Some(&digest),
        )
        .unwrap();
        let d = hold.wait().await;
        assert_eq!(d.decision, Outcome::Approved);
        assert_eq!(d.approver.as_deref(), Some("id:spiffe://ops/carol"));
        assert_eq!(d.reason.as_deref(), Some("ok"));
        // Replayed: closed, and says by whom.
        let e = desk
            .decide(&id, &token("alice", &["approve"]), false, None, None)
            .unwrap_err();
        assert_eq!(e.status(), http::StatusCode::CONFLICT);
        assert!(
            e.to_string().contains("approved by id:spiffe://ops/carol"),
            "{e}"
        );
        let e = desk.decide("nope", &token("alice", &["approve"]), true, None, None);
        assert_eq!(e.unwrap_err().status(), http::StatusCode::NOT_FOUND);
        assert!(desk.pending(&token("alice", &["approve"])).is_empty());
    }

    #[tokio::test]
    async fn the_deadline_denies_and_a_late_approval_does_nothing() {
        let desk = desk(ApprovalLimits::default());
        let mut hold = desk
            .hold(
                call("delete_file", "{}"),
                &rule(Duration::from_millis(50)),
                "k".into(),
            )
            .unwrap();
        let id = hold.id().to_owned();
        let d = hold.wait().await;
        assert_eq!(d.decision, Outcome::Expired);
        let e = desk
            .decide(&id, &token("alice", &["approve"]), true, None, None)
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        assert_eq!(hold.wait().await.decision, Outcome::Expired);
    }

    #[tokio::test]
    async fn nobody_approves_their_own_call() {
        let desk = desk(ApprovalLimits::default());
        let mut own = call("delete_file", "{}");
        own.caller.subject = Some("alice".into());
        own.caller.identity = Some("spiffe://ops/alice".into());
        let hold = desk.hold(own, &rule(DEFAULT_TIMEOUT), "k".into()).unwrap();
        for who in [token("alice", &["approve"]), mtls("spiffe://ops/alice")] {
            assert!(desk.pending(&who).is_empty(), "{who:?} sees its own call");
            let e = desk.decide(hold.id(), &who, true, None, None).unwrap_err();
            assert!(matches!(e, DecideError::OwnCall(_)), "{e}");
        }
        // Named by what admitted them: the identity entry, not the token's subject.
        let both = Approving {
            identity: Some("spiffe://ops/carol".into()),
            ..token("carol", &["mcp"])
        };
        assert_eq!(
            both.name_for(&rule(DEFAULT_TIMEOUT).approvers),
            "id:spiffe://ops/carol"
        );
        let scoped = Approving {
            identity: Some("spiffe://dev/dave".into()),
            ..token("dave", &["approve"])
        };
        assert_eq!(
            scoped.name_for(&rule(DEFAULT_TIMEOUT).approvers),
            "sub:dave"
        );
        desk.decide(hold.id(), &scoped, false, None, None).unwrap();
    }

    #[tokio::test]
    async fn a_dropped_hold_is_cancelled_and_frees_its_place() {
        let limits = ApprovalLimits {
            max_pending: 3,
            max_pending_per_caller: 2,
            ..ApprovalLimits::default()
        };
        let desk = desk(limits);
        let r = rule(DEFAULT_TIMEOUT);
        let a = desk.hold(call("t", "{}"), &r, "a".into()).unwrap();
        let _a2 = desk.hold(call("t", "{}"), &r, "a".into()).unwrap();
        assert_eq!(
            desk.hold(call("t", "{}"), &r, "a".into()).unwrap_err(),
            HoldError::CallerFull(2)
        );
        let _b = desk.hold(call("t", "{}"), &r, "b".into()).unwrap();
        assert_eq!(
            desk.hold(call("t", "{}"), &r, "c".into()).unwrap_err(),
            HoldError::Full(3)
        );
        let id = a.id().to_owned();
        drop(a);
        let e = desk
            .decide(&id, &token("alice", &["approve"]), true, None, None)
            .unwrap_err();
        assert!(e.to_string().contains("cancelled"), "{e}");
        desk.hold(call("t", "{}"), &r, "a".into()).unwrap();
    }
}
