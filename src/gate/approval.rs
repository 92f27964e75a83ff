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
//!
//! In a fleet (`[fleet]`), a `Ledger` shares the desk: each held call is also written to the
//! fleet's store, where any replica lists it and decides it, once (single use and expiry are
//! the store's, not the replica's), and the holding replica is woken by the store. The desk
//! stays the truth for the calls its own clients wait on; when the store does not answer, it
//! holds and decides them alone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
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
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// The replica is shutting down: it holds no new calls.
    #[error("this replica is shutting down and holds no new calls; retry (another replica will take it)")]
    ShuttingDown,
    /// The system RNG failed: no unguessable id can be made.
    #[error("no approval id can be made: the system's random number generator failed")]
    NoRandom,
    /// The fleet's store does not answer and `[fleet] on-failure = "refuse"`: a call held
    /// here alone could not be decided through the other replicas.
    #[error("approvals are shared by the fleet and its Redis does not answer ([fleet] on-failure is refuse); retry shortly")]
    Unshared,
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
    /// The fleet's store did not answer (in time) for a call this replica does not hold:
    /// whether it exists, or whether the decision was taken, is not known.
    #[error("approval `{0}` is not held on this replica and the fleet's Redis did not answer in time (the decision may or may not have been taken): retry shortly")]
    Unreachable(String),
    /// The replica holding the call is not alive in the fleet's store (stopped, killed, or
    /// cut off from Redis): nobody is there to send it now.
    #[error("the replica holding approval `{0}` is not alive (stopped, or cut off from the fleet's Redis): it cannot be decided now")]
    HolderGone(String),
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
            Self::Closed { .. } | Self::DigestMismatch { .. } | Self::HolderGone(_) => {
                http::StatusCode::CONFLICT
            }
            Self::NotApprover { .. } | Self::OwnCall(_) => http::StatusCode::FORBIDDEN,
            Self::Unreachable(_) => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An approver's decision, sent to the held call (by the desk, or by the fleet's store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Verdict {
    pub(super) approve: bool,
    pub(super) approver: String,
    pub(super) reason: Option<String>,
}

impl Verdict {
    /// `approved` or `denied`.
    pub(super) fn outcome(&self) -> Outcome {
        if self.approve {
            Outcome::Approved
        } else {
            Outcome::Denied
        }
    }
}

/// The fleet's store did not answer (in time): the desk goes on alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Unreachable;

/// What a [`Ledger`] answers, later.
pub(super) type Later<'a, T> = Pin<Box<dyn Future<Output = Result<T, Unreachable>> + Send + 'a>>;

/// The fleet's shared record of held calls (`[fleet]`: Redis). Every replica's desk writes its
/// held calls there and reads the others'; a decision is taken there, once, before the
/// deadline the store keeps; the holder learns of it from the store (see
/// [`Desk::apply`]).
pub(super) trait Ledger: Send + Sync + fmt::Debug {
    /// Records a call just held, pending until `timeout` passes.
    fn share<'a>(&'a self, call: &'a HeldCall, timeout: Duration) -> Later<'a, ()>;
    /// The calls pending on any replica, with `age_ms` and `expires_in_ms` set.
    fn list(&self) -> Later<'_, Vec<HeldCall>>;
    /// One call; `Err(DecideError)` for an unknown or closed id.
    fn get<'a>(&'a self, id: &'a str) -> Later<'a, Result<HeldCall, DecideError>>;
    /// Takes `verdict` for `id` unless it is closed or past its deadline.
    fn decide<'a>(
        &'a self,
        id: &'a str,
        verdict: &'a Verdict,
    ) -> Later<'a, Result<(), DecideError>>;
    /// Closes `id` from its holder's side (expired, cancelled) unless a decision got there
    /// first, which is then returned.
    fn close<'a>(&'a self, id: &'a str, outcome: Outcome) -> Later<'a, Option<Verdict>>;
    /// This replica is stopping: it is no longer alive in the store, so that no decision is
    /// taken there for a call it is about to end.
    fn leave(&self) -> Later<'_, ()>;
    /// Whether a call must not be held now: the store is down and the fleet is configured to
    /// refuse rather than hold calls only this replica can see.
    fn refuses_alone(&self) -> bool;
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
    ledger: Option<Arc<dyn Ledger>>,
    /// Shutting down: see [`Desk::release`].
    releasing: AtomicBool,
}

/// What a held call's client is told when its replica shuts down before it was decided.
pub const RELEASED: &str = "this replica is shutting down and the call was not run: retry it";

impl Desk {
    /// An empty desk.
    pub fn new(limits: ApprovalLimits, metrics: Arc<GateMetrics>) -> Arc<Self> {
        Self::with_ledger(limits, metrics, None)
    }

    /// An empty desk sharing its calls with a fleet through `ledger`.
    pub(super) fn with_ledger(
        limits: ApprovalLimits,
        metrics: Arc<GateMetrics>,
        ledger: Option<Arc<dyn Ledger>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            limits,
            metrics,
            ledger,
            releasing: AtomicBool::new(false),
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
        if self.releasing.load(Relaxed) {
            return Err(HoldError::ShuttingDown);
        }
        if self.ledger.as_ref().is_some_and(|l| l.refuses_alone()) {
            return Err(HoldError::Unshared);
        }
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
            if let Some(ledger) = &self.ledger {
                self.share(ledger.clone(), call.clone(), rule.timeout);
            }
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

    /// Writes a held call to the fleet's ledger, in the background (the client's wait does
    /// not depend on it). Closed before it was written (its client left, or it was decided
    /// here at once), it is closed there too, so that no other replica lists or decides it.
    fn share(self: &Arc<Self>, ledger: Arc<dyn Ledger>, call: HeldCall, timeout: Duration) {
        let desk = self.clone();
        tokio::spawn(async move {
            if ledger.share(&call, timeout).await.is_err() {
                return;
            }
            let outcome = desk.lock().closed.get(&call.id).map(|(o, _)| *o);
            if let Some(outcome) = outcome {
                let _ = ledger.close(&call.id, outcome).await;
            }
        });
    }

    /// The held calls `who` may decide, oldest first: this replica's, and in a fleet every
    /// replica's.
    pub async fn pending(&self, who: &Approving) -> Vec<HeldCall> {
        let (mut calls, local) = {
            let s = self.lock();
            let calls: Vec<(u64, HeldCall)> = s
                .pending
                .values()
                .filter(|e| authorize(&e.call, &e.approvers, who).is_ok())
                .map(|e| (millis(e.created.elapsed()), view(e)))
                .collect();
            let local: HashSet<String> = s.pending.keys().cloned().collect();
            (calls, local)
        };
        if let Some(ledger) = &self.ledger {
            if let Ok(remote) = ledger.list().await {
                calls.extend(
                    remote
                        .into_iter()
                        .filter(|c| !local.contains(&c.id))
                        .filter(|c| authorize(c, &approvers_of(c), who).is_ok())
                        .map(|c| (c.age_ms, c)),
                );
            }
        }
        calls.sort_by_key(|(age, _)| std::cmp::Reverse(*age));
        calls.into_iter().map(|(_, c)| c).collect()
    }

    /// One held call, if `who` may decide it (else it is unknown to them: an id they may not
    /// decide is not confirmed to exist).
    pub async fn get(&self, id: &str, who: &Approving) -> Result<HeldCall, DecideError> {
        let (call, approvers) = match self.find(id).await? {
            Found::Here(call, approvers) | Found::Elsewhere(call, approvers) => (call, approvers),
        };
        match authorize(&call, &approvers, who) {
            Ok(()) => Ok(call),
            Err(DecideError::NotApprover { .. }) => Err(DecideError::Unknown(id.to_owned())),
            Err(e) => Err(e),
        }
    }

    /// The call under `id`: on this desk, or (in a fleet) held by another replica.
    async fn find(&self, id: &str) -> Result<Found, DecideError> {
        let local = {
            let s = self.lock();
            match open_entry(&s, id) {
                Ok(e) => Ok(Found::Here(view(e), e.approvers.clone())),
                Err(e) => Err(e),
            }
        };
        match (local, &self.ledger) {
            (Err(DecideError::Unknown(_)), Some(ledger)) => match ledger.get(id).await {
                Ok(Ok(call)) => {
                    let approvers = approvers_of(&call);
                    Ok(Found::Elsewhere(call, approvers))
                }
                Ok(Err(e)) => Err(e),
                Err(Unreachable) => Err(DecideError::Unreachable(id.to_owned())),
            },
            (found, _) => found,
        }
    }

    /// Decides the call held under `id`. `digest`, when given, must be the held call's
    /// `arguments_digest` (what the approver was shown). Refused when `who` is not an approver
    /// of its rule, when it is closed, or when its deadline has passed. In a fleet the
    /// decision is taken in the fleet's store (once, fleet-wide) and reaches whichever replica
    /// holds the call.
    pub async fn decide(
        &self,
        id: &str,
        who: &Approving,
        approve: bool,
        reason: Option<String>,
        digest: Option<&str>,
    ) -> Result<HeldCall, DecideError> {
        let refused = |e: DecideError| {
            self.metrics.approval_decision_refused();
            warn!(approval.id = %id, approver = %who.name(), error = %e, "Approval decision refused");
            e
        };
        let found = self.find(id).await.map_err(refused)?;
        let (Found::Here(call, approvers) | Found::Elsewhere(call, approvers)) = &found;
        authorize(call, approvers, who).map_err(refused)?;
        if let Some(given) = digest.filter(|d| *d != call.arguments_digest) {
            return Err(refused(DecideError::DigestMismatch {
                given: given.to_owned(),
                held: call.arguments_digest.clone(),
            }));
        }
        let verdict = Verdict {
            approve,
            approver: who.name_for(approvers),
            reason,
        };
        let here = matches!(found, Found::Here(..));
        if here && self.is_past_deadline(id) {
            // Its holder will see the deadline too; it is expired, whoever is first.
            return Err(refused(DecideError::Closed {
                id: id.to_owned(),
                outcome: Outcome::Expired.label(),
                by: None,
            }));
        }
        if let Some(ledger) = &self.ledger {
            match ledger.decide(id, &verdict).await {
                Ok(Ok(())) => {}
                // Held here a moment ago, not yet written there (see `Desk::share`).
                Ok(Err(DecideError::Unknown(_))) if here => {}
                Ok(Err(e)) => return Err(refused(e)),
                // Held here: decided here alone (the fleet's other replicas cannot see it
                // while the store is down, so none decides it too).
                Err(Unreachable) if here => {
                    warn!(approval.id = %id, "Approval decided on this replica alone: the fleet's Redis does not answer");
                }
                Err(Unreachable) => return Err(refused(DecideError::Unreachable(id.to_owned()))),
            }
        }
        match found {
            Found::Here(call, _) => {
                let (outcome, by) = (verdict.outcome(), verdict.approver.clone());
                if self.apply(id, verdict) {
                    return Ok(call);
                }
                // Closed between our look and here. By this very decision, announced by the
                // fleet's store and applied by its subscriber first: taken. Otherwise (its
                // deadline, its client leaving) say what became of it.
                let s = self.lock();
                match s.closed.get(id) {
                    Some((o, b)) if *o == outcome && b.as_deref() == Some(by.as_str()) => Ok(call),
                    _ => Err(refused(
                        open_entry(&s, id)
                            .err()
                            .unwrap_or_else(|| DecideError::Unknown(id.to_owned())),
                    )),
                }
            }
            Found::Elsewhere(call, _) => {
                info!(approval.id = %id, decision = verdict.outcome().label(), approver = %verdict.approver,
                    "Approval decided for a call held by another replica");
                Ok(call)
            }
        }
    }

    fn is_past_deadline(&self, id: &str) -> bool {
        self.lock()
            .pending
            .get(id)
            .is_some_and(|e| Instant::now() >= e.deadline)
    }

    /// Gives `verdict` to the call held here under `id`, if it is still pending (a decision
    /// through this replica, or one the fleet's store announced); false if it is not here or
    /// already closed.
    pub(super) fn apply(&self, id: &str, verdict: Verdict) -> bool {
        let mut s = self.lock();
        let by = Some(verdict.approver.clone());
        let Some(entry) = close(&mut s, &self.metrics, id, verdict.outcome(), by) else {
            return false;
        };
        // The holder may have gone between the lock and here: it is then cancelled.
        let _ = entry.tx.send(verdict);
        true
    }

    /// The replica is shutting down: every held call ends now, undecided and never sent, so
    /// that its client hears so at once and retries (on another replica, behind a balancer)
    /// instead of waiting out the drain; no new call is held.
    pub async fn release(&self) {
        self.releasing.store(true, Relaxed);
        // First out of the fleet's sight: a decision another replica would take from here on
        // would be for a call never sent.
        if let Some(ledger) = &self.ledger {
            let _ = ledger.leave().await;
        }
        let mut s = self.lock();
        let ids: Vec<String> = s.pending.keys().cloned().collect();
        if !ids.is_empty() {
            info!(
                held = ids.len(),
                "Shutting down: calls held for approval are ended for their clients to retry"
            );
        }
        for id in ids {
            // Dropping the sender wakes the holder (see `Hold::wait`).
            drop(close(&mut s, &self.metrics, &id, Outcome::Cancelled, None));
        }
    }

    /// The ids of the calls held here, pending.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub(super) fn pending_ids(&self) -> Vec<String> {
        self.lock().pending.keys().cloned().collect()
    }

    /// Closes `id` from its holder's side (expired or cancelled), unless a decision did first.
    fn close_held(&self, id: &str, outcome: Outcome) -> bool {
        let mut s = self.lock();
        close(&mut s, &self.metrics, id, outcome, None).is_some()
    }
}

/// Where a call was found.
enum Found {
    /// On this desk: its holder is here.
    Here(HeldCall, Vec<Approver>),
    /// In the fleet's store, held by another replica.
    Elsewhere(HeldCall, Vec<Approver>),
}

/// A shared call's approvers, as its holder wrote them (each was parsed there from the same
/// fleet-wide config; one that does not parse admits nobody).
fn approvers_of(call: &HeldCall) -> Vec<Approver> {
    call.approvers
        .iter()
        .filter_map(|a| Approver::parse(a).ok())
        .collect()
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

fn authorize(call: &HeldCall, approvers: &[Approver], who: &Approving) -> Result<(), DecideError> {
    if may_decide(approvers, who) {
        if who.made(&call.caller) {
            return Err(DecideError::OwnCall(who.name()));
        }
        return Ok(());
    }
    Err(DecideError::NotApprover {
        who: who.name(),
        approvers: call.approvers.join(", "),
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
            Ok(Err(_)) if self.desk.releasing.load(Relaxed) => {
                let _ = self.ledger_close(Outcome::Cancelled).await;
                self.closed(Outcome::Cancelled, None, Some(RELEASED.to_owned()))
            }
            // The deadline, or the desk dropped the sender (never while we hold the id):
            // expired, unless a decision got in first, here or in the fleet's store (which
            // is asked first: a decision it took before the deadline stands).
            _ => match self.ledger_close(Outcome::Expired).await {
                Some(v) if self.desk.apply(&self.id, v.clone()) => self.decided_by(v),
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
            },
        };
        self.decided = Some(decided.clone());
        decided
    }

    /// Closes the call in the fleet's store; the decision it had, if one got in first. Tried
    /// three times (each within the fleet's `timeout`): an approver told that a decision was
    /// taken must not find the call expired because one answer was slow.
    async fn ledger_close(&self, outcome: Outcome) -> Option<Verdict> {
        let ledger = self.desk.ledger.as_ref()?;
        for _ in 0..3 {
            if let Ok(v) = ledger.close(&self.id, outcome).await {
                return v;
            }
        }
        None
    }

    fn decided_by(&self, v: Verdict) -> Decided {
        let outcome = v.outcome();
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
            if let Some(ledger) = self.desk.ledger.clone() {
                // Off the dropping task: no other replica should list a call nobody waits
                // for. A decision the store took meanwhile is moot: the call is never sent.
                let id = self.id.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move { ledger.close(&id, Outcome::Cancelled).await });
                }
            }
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
        assert_eq!(desk.pending(&token("alice", &["approve"])).await.len(), 1);
        // A non-approver neither sees it nor decides it.
        assert!(desk.pending(&token("mallory", &["mcp"])).await.is_empty());
        let e = desk
            .decide(&id, &token("mallory", &["mcp"]), true, None, None)
            .await
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
            .await
            .unwrap_err();
        assert!(matches!(e, DecideError::DigestMismatch { .. }), "{e}");
        let digest = desk
            .get(&id, &token("alice", &["approve"]))
            .await
            .unwrap()
            .arguments_digest;
        desk.decide(
            &id,
            &mtls("spiffe://ops/carol"),
            true,
            Some("ok".into()),
            Some(&digest),
        )
        .await
        .unwrap();
        let d = hold.wait().await;
        assert_eq!(d.decision, Outcome::Approved);
        assert_eq!(d.approver.as_deref(), Some("id:spiffe://ops/carol"));
        assert_eq!(d.reason.as_deref(), Some("ok"));
        // Replayed: closed, and says by whom.
        let e = desk
            .decide(&id, &token("alice", &["approve"]), false, None, None)
            .await
            .unwrap_err();
        assert_eq!(e.status(), http::StatusCode::CONFLICT);
        assert!(
            e.to_string().contains("approved by id:spiffe://ops/carol"),
            "{e}"
        );
        let e = desk
            .decide("nope", &token("alice", &["approve"]), true, None, None)
            .await;
        assert_eq!(e.unwrap_err().status(), http::StatusCode::NOT_FOUND);
        assert!(desk.pending(&token("alice", &["approve"])).await.is_empty());
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
            .await
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
            assert!(
                desk.pending(&who).await.is_empty(),
                "{who:?} sees its own call"
            );
            let e = desk
                .decide(hold.id(), &who, true, None, None)
                .await
                .unwrap_err();
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
        desk.decide(hold.id(), &scoped, false, None, None)
            .await
            .unwrap();
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
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cancelled"), "{e}");
        desk.hold(call("t", "{}"), &r, "a".into()).unwrap();
    }
}
