//! The MCP-aware gate of the server sidecar: bearer tokens ([`auth`]), per-method rules
//! ([`rules`]), rate limits ([`rate`]), an audit log ([`audit`]) and tool pinning with
//! argument validation ([`tools`]), each off unless configured. It reads request bodies
//! (JSON-RPC, bounded by `max-body-bytes`); a refused request never reaches the upstream.
//! Responses pass by untouched, except with `[tools]`, whose judge reads each answer (SSE
//! event by event) for `tools/list` results, and on legacy HTTP+SSE streams, where refusals
//! of their POSTs are delivered between events.
//!
//! Order of the checks: an address (IPv6: its prefix) over `refusals-per-ip-per-minute` is
//! refused unread (429); a connection with `max-inflight-per-connection` requests in the
//! gate gets 503; the metadata document is answered; then the token (401/403); then the body
//! is read within `request-body-timeout` (408) and `max-buffered-body-bytes` (503) and
//! parsed (413/400); `Mcp-Method`/`Mcp-Name` must agree with it (400); the rules decide each
//! message (403); the rate limits charge each (429); with `[audit] fail-closed`, the audit
//! queue must have room for the call's records (503). A batch is refused whole when any
//! member is.
//!
//! Refusal WARN lines are throttled (one per 10 s, with the count not logged); peer strings
//! in them are quoted and escaped.

mod admitted;
pub mod approval;
mod approvals_api;
pub mod audit;
pub mod auth;
mod body;
mod budget;
mod caller;
pub mod config;
#[cfg(feature = "fleet")]
pub mod fleet;
mod glob;
mod held;
pub mod jsonrpc;
mod layer;
mod legacy;
mod mcp_headers;
mod metrics;
pub mod rate;
mod reason;
mod refusal;
pub mod rules;
mod tool_checks;
pub mod tools;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tracing::info;

pub use self::admitted::{Admitted, CLIENT_CLOSED};
pub use self::audit::{AuditError, Decision};
pub use self::auth::TokenVerifier;
pub use self::config::{GateBudgets, GateConfig};
pub use self::layer::{GateLayer, GateResponseBody, GateService};
pub use self::metrics::TOOL_CHANGE_KINDS;
pub use self::metrics::{GateMetrics, GateSnapshot};
pub use self::rate::RateLimited;
pub use self::reason::{RefusalReason, TokenFailure};

pub(crate) use self::mcp_headers::header_mismatch;

use self::audit::AuditLog;
use self::auth::{missing_scopes, scope_hint};
use self::body::Buffered;
use self::budget::BodyBudget;
use self::caller::Caller;
use self::jsonrpc::Body;
use self::mcp_headers::{bodiless_or_post, client_name, stateless};
use self::rate::{Limiter, RefusalGuard};
use self::refusal::{json_response, Refusal};
use self::rules::{Denied, DenyReason};
use crate::serve::ConnectionId;
use crate::throttle::LogThrottle;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The gate's own answer to a request it does not send upstream (boxed: it is the rare,
/// large error side of every check).
pub type Refused = Box<Response<Full<Bytes>>>;

/// A request body on its way upstream: the client's stream, or the bytes the gate read.
pub type GateBody = BoxBody<Bytes, BoxError>;

/// JSON-RPC error code of a message refused by a rule (implementation-defined server range;
/// -32000/-32001 are taken by the SDKs for connection closed and request timeout).
pub const POLICY_REFUSED: i64 = -32010;
/// JSON-RPC error code of a message refused by a rate limit.
pub const RATE_LIMITED: i64 = -32011;
/// JSON-RPC error code of a request whose `Mcp-Method`/`Mcp-Name` headers disagree with its
/// body: MCP 2026-07-28's HeaderMismatch.
pub const HEADER_MISMATCH: i64 = -32020;

/// Header carrying the verified token subject upstream.
pub const SUBJECT_HEADER: &str = "x-mcp-pqtls-subject";
/// Header carrying the verified token scopes upstream (space-separated).
pub const SCOPES_HEADER: &str = "x-mcp-pqtls-scopes";

/// A running gate.
#[derive(Debug)]
pub struct Gate {
    auth: Option<Arc<TokenVerifier>>,
    rules: Vec<rules::Rule>,
    limiter: Option<Limiter>,
    audit: Option<AuditLog>,
    metadata_paths: Vec<String>,
    max_body_bytes: u64,
    budgets: GateBudgets,
    /// `max-buffered-body-bytes`, with a share per source (see [`budget`]).
    body_budget: Arc<BodyBudget>,
    /// Gated requests in the gate or upstream, by connection.
    inflight: Arc<Mutex<HashMap<u64, usize>>>,
    refusals: RefusalGuard,
    refusal_log: LogThrottle,
    flood_log: LogThrottle,
    metrics: Arc<GateMetrics>,
    /// `[tools]`: pins and schemas.
    tools: Option<Arc<tools::Registry>>,
    /// Legacy HTTP+SSE streams, where refusals of their POSTs are delivered.
    legacy: Arc<legacy::Streams>,
    /// Calls held for approval, when a rule says `require-approval`.
    desk: Option<Arc<approval::Desk>>,
    /// `[fleet]`: the rate limits charged in Redis.
    #[cfg(feature = "fleet")]
    fleet: Option<Arc<fleet::Fleet>>,
}

/// Why a gate cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The pin file cannot be read.
    #[error(transparent)]
    Pins(#[from] tools::PinsError),
    /// `[fleet] redis` is not a Redis URL the client takes.
    #[cfg(feature = "fleet")]
    #[error("fleet.redis: {0}")]
    Fleet(#[source] redis::RedisError),
}

impl Gate {
    /// Opens the audit log, reads the pins and sets up the token verifier. JWKS URLs are
    /// fetched by [`Gate::load_keys`] (nothing is started here).
    pub fn new(config: GateConfig) -> Result<Self, GateError> {
        let metrics = Arc::new(GateMetrics::new(
            config.rules.iter().map(|r| r.name.clone()).collect(),
            config.limits.iter().map(|l| l.name.clone()).collect(),
        ));
        let audit = config
            .audit
            .map(|a| AuditLog::open(a, metrics.clone()))
            .transpose()?;
        let tools = config
            .tools
            .map(tools::Registry::new)
            .transpose()?
            .map(Arc::new);
        let metadata_paths = config
            .auth
            .as_ref()
            .map(|a| a.metadata_paths())
            .unwrap_or_default();
        #[cfg(feature = "fleet")]
        let fleet = config
            .fleet
            .map(|f| fleet::Fleet::new(f, metrics.clone()))
            .transpose()
            .map_err(GateError::Fleet)?;
        #[cfg(feature = "fleet")]
        let ledger = fleet
            .clone()
            .map(|f| Arc::new(fleet::FleetLedger(f)) as Arc<dyn approval::Ledger>);
        #[cfg(not(feature = "fleet"))]
        let ledger = None;
        let desk = config.rules.iter().any(|r| r.approval.is_some()).then(|| {
            approval::Desk::with_ledger(config.approvals.clone(), metrics.clone(), ledger)
        });
        Ok(Self {
            #[cfg(feature = "fleet")]
            fleet,
            desk,
            auth: config
                .auth
                .map(|a| Arc::new(TokenVerifier::new(a, metrics.clone()))),
            rules: config.rules,
            limiter: (!config.limits.is_empty())
                .then(|| Limiter::new(config.limits, rate::DEFAULT_MAX_BUCKETS)),
            audit,
            metadata_paths,
            max_body_bytes: config.max_body_bytes,
            body_budget: BodyBudget::new(
                config.budgets.max_buffered_body_bytes,
                config.max_body_bytes,
            ),
            inflight: Arc::default(),
            refusals: RefusalGuard::new(config.budgets.refusals_per_ip_per_minute),
            refusal_log: LogThrottle::default(),
            flood_log: LogThrottle::default(),
            budgets: config.budgets,
            metrics,
            tools,
            legacy: Arc::default(),
        })
    }

    fn legacy_streams(&self) -> Arc<legacy::Streams> {
        self.legacy.clone()
    }

    /// Who a legacy stream or POST belongs to: the mTLS identity, else the bearer token (its
    /// SHA-256: a stream and the POSTs of its client carry the same one), else the address.
    fn legacy_owner<B>(&self, req: &Request<B>, peer: SocketAddr) -> String {
        let identity = crate::tls::ConnectionInfo::of(req.extensions())
            .and_then(|i| i.client_identity.as_deref());
        if let Some(id) = identity {
            return format!("id:{id}");
        }
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token {
            Some(t) => format!("token:{}", tools::Digest::of(t.as_bytes())),
            None => format!(
                "addr:{}",
                rate::address_key(peer.ip(), self.budgets.ipv6_prefix)
            ),
        }
    }

    /// A refusal of a legacy HTTP+SSE POST (`session_id` in its query): its JSON-RPC errors
    /// delivered on that session's stream and the POST answered 202, when the stream is open
    /// and the errors answer requests; else the refusal as it is.
    async fn to_legacy_stream(
        &self,
        session: &str,
        owner: &str,
        refused: Response<Full<Bytes>>,
    ) -> Response<Full<Bytes>> {
        let (parts, body) = refused.into_parts();
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(never) => match never {},
        };
        let json = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        // Errors with an id answer a request the client waits for; `id: null` answers nothing.
        let answers = json
            && match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Array(_)) => true,
                Ok(v) => v.get("id").is_some_and(|id| !id.is_null()),
                Err(_) => false,
            };
        if answers && self.legacy.deliver(session, owner, &bytes) {
            let mut accepted = Response::new(Full::new(Bytes::new()));
            *accepted.status_mut() = StatusCode::ACCEPTED;
            return accepted;
        }
        Response::from_parts(parts, Full::new(bytes))
    }

    /// The pin file, if `[tools]` names one (the sidecar watches it).
    pub fn pin_file(&self) -> Option<&std::path::Path> {
        self.tools.as_ref()?.settings().pin_file.as_deref()
    }

    /// Reads the pin file again (SIGHUP, or the file changed); on error the previous pins
    /// stay in force.
    pub fn reload_pins(&self) -> Result<(), tools::PinsError> {
        match &self.tools {
            Some(t) => t.reload(),
            None => Ok(()),
        }
    }

    /// Stops the audit log: writes and flushes what is queued and joins its writer (at most
    /// 5 s). Call after the server has drained, so that the records of calls the drain cut
    /// off (499) are in the file when the process exits.
    pub fn close(&self) {
        if let Some(a) = &self.audit {
            a.close();
        }
    }

    /// Fetches the keys of a JWKS URL once (a failure is logged; the refresh goes on), and
    /// starts the periodic refresh. Returns the refresh task, if any.
    pub async fn load_keys(&self) -> Option<tokio::task::JoinHandle<()>> {
        let auth = self.auth.clone()?;
        if matches!(auth.settings.jwks, auth::JwksSource::Url { .. }) {
            auth.refresh("start").await;
        }
        Some(tokio::spawn(auth.refresh_loop()))
    }

    /// The gate's counters.
    pub fn metrics(&self) -> &Arc<GateMetrics> {
        &self.metrics
    }

    /// Logs what the gate does, once at start.
    pub fn log_started(&self) {
        info!(
            auth = self.auth.is_some(),
            rules = self.rules.len(),
            rate_limits = self.limiter.as_ref().map_or(0, |l| l.limits().len()),
            audit = self.audit.is_some(),
            tools_pinned = self.tools.as_ref().and_then(|t| t.pinned()),
            "Gate enabled"
        );
    }

    /// Decides one request. `Ok`: send it upstream (its body, read or not) and call
    /// [`Admitted::finish`] with the status; `Err`: answer with this response instead.
    pub async fn admit<B>(
        &self,
        req: Request<B>,
        peer: SocketAddr,
    ) -> Result<(Request<GateBody>, Admitted), Refused>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let mut caller = Caller::new(&req, peer, self.budgets.ipv6_prefix);
        if let Err(limited) = self.refusals.check(&caller.addr_key) {
            return Err(self.flooded(&caller, &limited));
        }
        let inflight = self.enter(&caller, &req)?;
        if let Some(auth) = &self.auth {
            if req.method() == Method::GET
                && self.metadata_paths.iter().any(|p| p == req.uri().path())
            {
                return Err(Box::new(json_response(
                    StatusCode::OK,
                    auth.settings.metadata_document(),
                )));
            }
            match auth.verify(req.headers()).await {
                Ok(p) => {
                    self.metrics.tokens_verified.fetch_add(1, Relaxed);
                    caller.principal = Some(p);
                }
                Err(e) => {
                    self.metrics.token_failure(e.kind());
                    return Err(self.unauthorized(&caller, &e));
                }
            }
            let missing = missing_scopes(&auth.settings.required_scopes, caller.scopes());
            if !missing.is_empty() {
                return Err(self.insufficient_scope(&caller, &missing));
            }
        }
        let inspect = !self.rules.is_empty()
            || self.limiter.is_some()
            || self.audit.is_some()
            || self.tools.is_some();
        if inspect && !bodiless_or_post(&req) {
            // Only POST bodies are read: a PUT carrying a tools/call, or a GET with a body,
            // would reach an upstream that accepts any method unread.
            return Err(self.refuse_whole(
                &caller,
                StatusCode::METHOD_NOT_ALLOWED,
                RefusalReason::MethodNotAllowed,
                "http-method",
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "{} with a body is not inspected: MCP sends its messages with POST",
                    req.method()
                ),
            ));
        }
        let (parts, body) = req.into_parts();
        if !inspect || parts.method != Method::POST {
            self.charge(&caller, None).await?;
            let answers = (parts.method == Method::GET)
                .then(|| self.answers(None, None))
                .flatten();
            let admitted = self.admitted(&caller, None, inflight, answers)?;
            let body = body.map_err(Into::into).boxed();
            return Ok((Request::from_parts(parts, body), admitted));
        }
        let (bytes, hold) = self.read_body(&caller, &parts.headers, body).await?;
        let parsed = jsonrpc::parse(&bytes).map_err(|e| {
            let reason = if e.code() == jsonrpc::PARSE_ERROR {
                RefusalReason::ParseError
            } else {
                RefusalReason::InvalidRequest
            };
            self.refuse_whole(
                &caller,
                StatusCode::BAD_REQUEST,
                reason,
                "parse",
                e.code(),
                &e.to_string(),
            )
        })?;
        if let Some(mismatch) = header_mismatch(&parts.headers, &parsed) {
            let verdicts = vec![
                Some(Refusal::new("headers", HEADER_MISMATCH, mismatch));
                parsed.messages.len()
            ];
            return Err(self.refuse_messages(
                &caller,
                &parsed,
                verdicts,
                StatusCode::BAD_REQUEST,
                RefusalReason::HeaderMismatch,
                None,
            ));
        }
        if self
            .audit
            .as_ref()
            .is_some_and(|a| a.settings.include_bodies)
        {
            caller.texts = jsonrpc::message_texts(&bytes, parsed.batch);
        }
        // Who called, in place of a session: read only for the audit log and approvers.
        if (self.audit.is_some() || self.desk.is_some()) && stateless(&parts.headers) {
            caller.client_name = client_name(&bytes);
        }
        let held = self.check_rules(&caller, &parsed)?;
        self.check_tools(&caller, &parsed, &bytes, &parts.headers)?;
        self.charge(&caller, Some(&parsed)).await?;
        let held = match held {
            Some(h) => Some((
                self.held_call(&caller, &parsed, &bytes, h)?,
                h,
                parsed.clone(),
            )),
            None => None,
        };
        let answers = self.answers(Some(&parsed), Some(&bytes));
        let mut admitted = self.admitted(&caller, Some(parsed), inflight, answers)?;
        // Approval is the last step before the upstream: every other check has passed.
        if let Some((call, h, parsed)) = held {
            admitted = self.hold(&caller, &parsed, call, h, admitted)?;
        }
        let body = Buffered {
            data: Some(bytes),
            _hold: hold,
        }
        .boxed();
        Ok((Request::from_parts(parts, body), admitted))
    }

    /// Counts the request against its connection's `max-inflight-per-connection` (until the
    /// `Admitted` is finished or dropped); no connection id, no cap.
    fn enter<B>(&self, caller: &Caller, req: &Request<B>) -> Result<Option<Inflight>, Refused> {
        let Some(ConnectionId(id)) = req.extensions().get::<ConnectionId>().copied() else {
            return Ok(None);
        };
        let cap = self.budgets.max_inflight_per_connection;
        {
            let mut map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            let n = map.entry(id).or_insert(0);
            if *n < cap {
                *n += 1;
                return Ok(Some(Inflight {
                    map: self.inflight.clone(),
                    id,
                }));
            }
        }
        let mut r = self.refuse_whole(
            caller,
            StatusCode::SERVICE_UNAVAILABLE,
            RefusalReason::Inflight,
            "inflight",
            jsonrpc::INVALID_REQUEST,
            &format!("this connection has {cap} requests in flight (max-inflight-per-connection); retry when one is done"),
        );
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        Err(r)
    }

    /// Decides each message by the rules; `Ok(Some)`: the message a rule holds for approval.
    fn check_rules<'r>(
        &'r self,
        caller: &Caller,
        body: &Body,
    ) -> Result<Option<held::Held<'r>>, Refused> {
        if self.rules.is_empty() {
            return Ok(None);
        }
        let mut held = None;
        let verdicts: Vec<Option<Refusal>> = body
            .messages
            .iter()
            .enumerate()
            .map(
                |(i, m)| match rules::check(&self.rules, &caller.summary(m)?) {
                    Ok(allowed) => {
                        if let (Some(rule), Some(approval)) = (allowed.rule, allowed.approval) {
                            held.get_or_insert(held::Held {
                                index: i,
                                rule,
                                approval,
                            });
                        }
                        None
                    }
                    Err(d) => {
                        self.metrics.rule_refusal(&d.rule);
                        Some(Refusal::denied(d))
                    }
                },
            )
            .collect();
        if verdicts.iter().all(Option::is_none) {
            return match held {
                Some(h) if body.batch => Err(self.held_in_batch(caller, body, h)),
                held => Ok(held),
            };
        }
        let missing: Vec<String> = verdicts
            .iter()
            .flatten()
            .filter_map(|r| match &r.denied {
                Some(Denied {
                    reason: DenyReason::MissingScopes(s),
                    ..
                }) => Some(s.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let (reason, challenge) = match (&self.auth, missing.is_empty()) {
            (Some(auth), false) => (
                RefusalReason::InsufficientScope,
                Some(auth.settings.challenge(
                    Some((
                        "insufficient_scope",
                        "the token lacks a scope this call needs",
                    )),
                    Some(&scope_hint(caller.scopes(), &missing)),
                )),
            ),
            _ => (RefusalReason::Rule, None),
        };
        Err(self.refuse_messages(
            caller,
            body,
            verdicts,
            StatusCode::FORBIDDEN,
            reason,
            challenge,
        ))
    }

    /// Charges the rate limits: one token per message (per HTTP request without a body),
    /// from the bucket of the first limit whose method matches; in Redis with `[fleet]`.
    async fn charge(&self, caller: &Caller, body: Option<&Body>) -> Result<(), Refused> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let methods: Vec<&str> = match body {
            Some(b) => b
                .messages
                .iter()
                .map(|m| m.method.as_deref().unwrap_or(""))
                .collect(),
            None => vec![""],
        };
        let charges: Vec<(usize, String)> = methods
            .iter()
            .filter_map(|m| {
                let class = limiter.class_of(m)?;
                Some((class, caller.key(limiter.limits()[class].key)))
            })
            .collect();
        let limited = match self.fleet_charge(caller, limiter, &charges).await? {
            Some(charged) => charged,
            None => limiter.charge(&charges),
        };
        let Err(limited) = limited else {
            return Ok(());
        };
        self.metrics.rate_limited(&limited.limit);
        let message = format!(
            "rate limit `{}` reached for this client; retry after {} s",
            limited.limit,
            limited.retry_after_secs()
        );
        let mut response = match body {
            Some(b) => {
                let verdicts = vec![Some(Refusal::rate(&limited, message)); b.messages.len()];
                self.refuse_messages(
                    caller,
                    b,
                    verdicts,
                    StatusCode::TOO_MANY_REQUESTS,
                    RefusalReason::RateLimited,
                    None,
                )
            }
            None => self.refuse_whole(
                caller,
                StatusCode::TOO_MANY_REQUESTS,
                RefusalReason::RateLimited,
                &format!("rate-limit:{}", limited.limit),
                RATE_LIMITED,
                &message,
            ),
        };
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(limited.retry_after_secs()));
        Err(response)
    }
}

impl Gate {
    /// The charge in the fleet's Redis (`[fleet]`); `None`: charge the local limiter (no
    /// fleet, or Redis failed and `on-failure = "local"`).
    #[cfg(feature = "fleet")]
    async fn fleet_charge(
        &self,
        caller: &Caller,
        limiter: &Limiter,
        charges: &[(usize, String)],
    ) -> Result<Option<Result<(), RateLimited>>, Refused> {
        let Some(fleet) = &self.fleet else {
            return Ok(None);
        };
        let mut counted: Vec<(usize, &str, u32)> = Vec::new();
        for (class, key) in charges {
            match counted.iter_mut().find(|(c, k, _)| c == class && k == key) {
                Some((_, _, n)) => *n += 1,
                None => counted.push((*class, key, 1)),
            }
        }
        match fleet.charge(limiter.limits(), &counted).await {
            fleet::Charged::Allowed => Ok(Some(Ok(()))),
            fleet::Charged::Limited(l) => Ok(Some(Err(l))),
            fleet::Charged::Failed if fleet.settings().on_failure == fleet::OnFailure::Refuse => {
                let mut r = self.refuse_whole(
                    caller,
                    StatusCode::SERVICE_UNAVAILABLE,
                    RefusalReason::FleetUnavailable,
                    "fleet",
                    jsonrpc::INVALID_REQUEST,
                    "the fleet's shared rate limits cannot be checked (Redis does not answer) and [fleet] on-failure is refuse; retry shortly",
                );
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
                Err(r)
            }
            fleet::Charged::Failed => Ok(None),
        }
    }

    #[cfg(not(feature = "fleet"))]
    async fn fleet_charge(
        &self,
        _: &Caller,
        _: &Limiter,
        _: &[(usize, String)],
    ) -> Result<Option<Result<(), RateLimited>>, Refused> {
        Ok(None)
    }

    /// The fleet's Redis, with `[fleet]`.
    #[cfg(feature = "fleet")]
    pub fn fleet(&self) -> Option<&Arc<fleet::Fleet>> {
        self.fleet.as_ref()
    }

    /// The replica is shutting down: calls held for approval end now for their clients to
    /// retry (see [`approval::Desk::release`]).
    pub async fn release_held(&self) {
        if let Some(desk) = &self.desk {
            desk.release().await;
        }
    }

    /// Joins the fleet (`[fleet]`; else nothing): connects to its Redis in the background
    /// (never waited for) and shares this gate's approvals and first-use tool pins with the
    /// other replicas. Call it once, inside the runtime, before serving: the sidecar does; a
    /// server built on [`GateLayer`] must too, or its held calls are never woken by decisions
    /// taken through other replicas.
    pub fn join_fleet(&self) {
        #[cfg(feature = "fleet")]
        if let Some(f) = &self.fleet {
            f.connect();
            if let Some(desk) = &self.desk {
                f.share_approvals(desk);
            }
            if let Some(tools) = &self.tools {
                f.share_pins(tools);
            }
        }
    }
}

/// One request counted against its connection's `max-inflight-per-connection`.
#[derive(Debug)]
struct Inflight {
    map: Arc<Mutex<HashMap<u64, usize>>>,
    id: u64,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.id);
            }
        }
    }
}
