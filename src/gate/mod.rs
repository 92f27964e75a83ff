//! The MCP-aware gate of the server sidecar: bearer tokens ([`auth`]), per-method rules
//! ([`rules`]), rate limits ([`rate`]) and an audit log ([`audit`]), each off unless
//! configured. It reads request bodies only (JSON-RPC, bounded by `max-body-bytes`); a
//! refused request never reaches the upstream, and responses, SSE streams included, pass by
//! untouched.
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

pub mod audit;
pub mod auth;
mod budget;
pub mod config;
pub mod jsonrpc;
mod metrics;
pub mod rate;
pub mod rules;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use tracing::{info, warn};

pub use self::config::{GateBudgets, GateConfig};
pub use self::metrics::{GateMetrics, GateSnapshot, REFUSAL_REASONS, TOKEN_FAILURES};

use self::audit::{AuditLog, Record, Reservation};
use self::auth::{Principal, TokenError, Verifier};
use self::budget::{BodyBudget, BodyHold};
use self::jsonrpc::{Body, Kind, Message};
use self::rate::{KeyKind, Limited as RateLimited, Limiter, RefusalGuard};
use self::rules::{Denied, DenyReason, Summary};
use crate::serve::ConnectionId;
use crate::throttle::LogThrottle;
use crate::tls::ConnectionInfo;

type BoxError = Box<dyn StdError + Send + Sync>;

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
    auth: Option<Arc<Verifier>>,
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
}

impl Gate {
    /// Opens the audit log and sets up the token verifier. JWKS URLs are fetched by
    /// [`Gate::load_keys`].
    pub fn start(config: GateConfig) -> std::io::Result<Self> {
        let metrics = Arc::new(GateMetrics::new(
            config.rules.iter().map(|r| r.name.clone()).collect(),
            config.limits.iter().map(|l| l.name.clone()).collect(),
        ));
        let audit = config
            .audit
            .map(|a| AuditLog::open(a, metrics.clone()))
            .transpose()?;
        let metadata_paths = config
            .auth
            .as_ref()
            .map(|a| a.metadata_paths())
            .unwrap_or_default();
        Ok(Self {
            auth: config
                .auth
                .map(|a| Arc::new(Verifier::new(a, metrics.clone()))),
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
        })
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
        let inspect = !self.rules.is_empty() || self.limiter.is_some() || self.audit.is_some();
        if inspect && !bodiless_or_post(&req) {
            // Only POST bodies are read: a PUT carrying a tools/call, or a GET with a body,
            // would reach an upstream that accepts any method unread.
            return Err(self.refuse_whole(
                &caller,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
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
            self.charge(&caller, None)?;
            let admitted = self.admitted(&caller, None, inflight)?;
            let body = body.map_err(Into::into).boxed();
            return Ok((Request::from_parts(parts, body), admitted));
        }
        let (bytes, hold) = self.read_body(&caller, &parts.headers, body).await?;
        let parsed = jsonrpc::parse(&bytes).map_err(|e| {
            let reason = if e.code() == jsonrpc::PARSE_ERROR {
                "parse_error"
            } else {
                "invalid_request"
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
                "header_mismatch",
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
        self.check_rules(&caller, &parsed)?;
        self.charge(&caller, Some(&parsed))?;
        let admitted = self.admitted(&caller, Some(parsed), inflight)?;
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
            "inflight",
            "inflight",
            jsonrpc::INVALID_REQUEST,
            &format!("this connection has {cap} requests in flight (max-inflight-per-connection); retry when one is done"),
        );
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        Err(r)
    }

    /// Refused unread: the address is over `refusals-per-ip-per-minute`. No line and no
    /// record each: a throttled WARN line with the count, and one summary audit record per
    /// address per minute.
    fn flooded(&self, caller: &Caller, limited: &RateLimited) -> Refused {
        self.metrics.refusal("refusal_flood");
        crate::throttled!(self.flood_log, warn, client.addr = %caller.addr, client.key = ?caller.addr_key,
                "Refusing requests unread: the address caused more than refusals-per-ip-per-minute refusals");
        if let Some(n) = self.refusals.flooded(&caller.addr_key) {
            self.audit_refused(
                caller,
                None,
                "refusal-flood",
                &format!("{n} request(s) from {} refused unread since the last such record: over refusals-per-ip-per-minute", caller.addr_key),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
        let secs = limited.retry_after_secs();
        let body = json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {
                "code": RATE_LIMITED,
                "message": format!("too many refused requests from this address; retry after {secs} s"),
                "data": {"rule": "refusal-flood", "retry_after": secs},
            },
        });
        let mut r = json_response(StatusCode::TOO_MANY_REQUESTS, body.to_string().into_bytes());
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
        Box::new(r)
    }

    /// Reads the body within `request-body-timeout`, taking its bytes from the body budget
    /// (see [`budget`]) chunk by chunk before keeping them. The hold is released when the
    /// body the gate built is dropped (sent upstream).
    async fn read_body<B>(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        body: B,
    ) -> Result<(Bytes, BodyHold), Refused>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let limit = self.max_body_bytes;
        let too_big = || {
            self.refuse_whole(
                caller,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "body-size",
                jsonrpc::INVALID_REQUEST,
                &format!("request body larger than max-body-bytes ({limit} bytes)"),
            )
        };
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_big());
        }
        let no_budget = || {
            let mut r = self.refuse_whole(
                caller,
                StatusCode::SERVICE_UNAVAILABLE,
                "body_budget",
                "body-budget",
                jsonrpc::INVALID_REQUEST,
                "the gate holds as many request bodies as max-buffered-body-bytes allows; retry shortly",
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            r
        };
        let mut hold = self.body_budget.hold(caller.source);
        let read = async {
            // Not the declared length: that is only what the client says it will send.
            let mut buf: Vec<u8> = Vec::new();
            tokio::pin!(body);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    let e: BoxError = e.into();
                    if crate::deadline::BodyTimeout::in_chain(&*e) {
                        ReadError::Timeout
                    } else {
                        ReadError::Body(e)
                    }
                })?;
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                let total = (buf.len() + data.len()) as u64;
                if total > limit {
                    return Err(ReadError::TooBig);
                }
                if !hold.grow(data.len() as u64) {
                    return Err(ReadError::NoBudget);
                }
                buf.extend_from_slice(&data);
            }
            Ok(buf)
        };
        let timeout = self.budgets.request_body_timeout;
        let outcome = tokio::time::timeout(timeout, read).await;
        match outcome {
            Ok(Ok(buf)) => Ok((Bytes::from(buf), hold)),
            Ok(Err(ReadError::TooBig)) => Err(too_big()),
            Ok(Err(ReadError::NoBudget)) => Err(no_budget()),
            Ok(Err(ReadError::Body(e))) => Err(self.refuse_whole(
                caller,
                StatusCode::BAD_REQUEST,
                "parse_error",
                "parse",
                jsonrpc::PARSE_ERROR,
                &format!("could not read the request body: {e}"),
            )),
            Ok(Err(ReadError::Timeout)) | Err(_) => Err(self.refuse_whole(
                caller,
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "body-timeout",
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "the request body did not arrive whole within request-body-timeout ({})",
                    humantime::format_duration(timeout)
                ),
            )),
        }
    }

    fn check_rules(&self, caller: &Caller, body: &Body) -> Result<(), Refused> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let verdicts: Vec<Option<Refusal>> = body
            .messages
            .iter()
            .map(|m| {
                rules::check(&self.rules, &caller.summary(m)?)
                    .err()
                    .map(|d| {
                        self.metrics.rule_refusal(&d.rule);
                        Refusal::denied(d)
                    })
            })
            .collect();
        if verdicts.iter().all(Option::is_none) {
            return Ok(());
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
                "insufficient_scope",
                Some(auth.settings.challenge(
                    Some((
                        "insufficient_scope",
                        "the token lacks a scope this call needs",
                    )),
                    Some(&scope_hint(caller.scopes(), &missing)),
                )),
            ),
            _ => ("rule", None),
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
    /// from the bucket of the first limit whose method matches.
    fn charge(&self, caller: &Caller, body: Option<&Body>) -> Result<(), Refused> {
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
        let Err(limited) = limiter.charge(&charges) else {
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
                    "rate_limited",
                    None,
                )
            }
            None => self.refuse_whole(
                caller,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
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

    fn admitted(
        &self,
        caller: &Caller,
        body: Option<Body>,
        inflight: Option<Inflight>,
    ) -> Result<Admitted, Refused> {
        let mut headers = Vec::new();
        let mut strip_authorization = false;
        if let (Some(auth), Some(p)) = (&self.auth, &caller.principal) {
            strip_authorization = !auth.settings.forward_token;
            match HeaderValue::from_bytes(p.subject.as_bytes()) {
                Ok(v) => headers.push((HeaderName::from_static(SUBJECT_HEADER), v)),
                Err(_) => {
                    warn!(client.addr = %caller.addr, "Token subject is not a valid header value; not sent upstream")
                }
            }
            if let Ok(v) = HeaderValue::from_str(&p.scopes.join(" ")) {
                headers.push((HeaderName::from_static(SCOPES_HEADER), v));
            }
        }
        let ticket = match &self.audit {
            None => None,
            Some(audit) => {
                let records = self.records(caller, body.as_ref(), |_| (None, None));
                // fail-closed: the call's records get their places now, or it is not made.
                let reservation = match audit.settings.fail_closed {
                    false => None,
                    true => match audit.reserve(records.len()) {
                        Some(r) => Some(r),
                        None => {
                            let mut r = self.refuse_whole(
                                caller,
                                StatusCode::SERVICE_UNAVAILABLE,
                                "audit_full",
                                "audit",
                                jsonrpc::INVALID_REQUEST,
                                "the audit log is behind and fail-closed is set: no call is made that could not be recorded; retry shortly",
                            );
                            r.headers_mut()
                                .insert("retry-after", HeaderValue::from_static("1"));
                            return Err(r);
                        }
                    },
                };
                Some(Ticket {
                    audit: audit.clone(),
                    records,
                    reservation,
                    started: caller.started,
                })
            }
        };
        Ok(Admitted {
            headers,
            strip_authorization,
            ticket,
            _inflight: inflight,
        })
    }

    fn unauthorized(&self, caller: &Caller, e: &TokenError) -> Refused {
        let Some(auth) = &self.auth else {
            return Box::new(plain(StatusCode::UNAUTHORIZED, e.to_string()));
        };
        // RFC 6750 §3.1: a request without a token gets no error code.
        let (error, challenge) = match e {
            TokenError::Missing => (None, auth.settings.challenge(None, None)),
            other => {
                let description = other.to_string();
                let c = auth
                    .settings
                    .challenge(Some(("invalid_token", &description)), None);
                (Some(description), c)
            }
        };
        crate::throttled!(self.refusal_log, warn, client.addr = %caller.addr, reason = e.kind(),
            error = ?e.to_string(), "Refused request: bearer token not accepted");
        self.refusal(caller, "unauthorized");
        self.audit_refused(
            caller,
            None,
            &format!("auth:{}", e.kind()),
            &e.to_string(),
            StatusCode::UNAUTHORIZED,
        );
        let body = json!({
            "error": if error.is_some() { "invalid_token" } else { "unauthorized" },
            "error_description": e.to_string(),
        });
        let mut r = json_response(StatusCode::UNAUTHORIZED, body.to_string().into_bytes());
        r.headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, challenge);
        Box::new(r)
    }

    /// The token lacks `required-scopes`: refused before the body is read.
    fn insufficient_scope(&self, caller: &Caller, missing: &[String]) -> Refused {
        let description = format!("the token lacks scope {}", missing.join(" "));
        let mut r = self.refuse_whole(
            caller,
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "scope",
            POLICY_REFUSED,
            &description,
        );
        if let Some(a) = &self.auth {
            let challenge = a.settings.challenge(
                Some(("insufficient_scope", &description)),
                Some(&scope_hint(caller.scopes(), missing)),
            );
            r.headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, challenge);
        }
        r
    }

    /// Refuses a request as a whole, before (or without) its messages being known: a
    /// JSON-RPC error with `id: null`, one audit record.
    fn refuse_whole(
        &self,
        caller: &Caller,
        status: StatusCode,
        reason: &'static str,
        rule: &str,
        code: i64,
        message: &str,
    ) -> Refused {
        self.refusal(caller, reason);
        crate::throttled!(self.refusal_log, warn, client.addr = %caller.addr, gate.reason = reason,
            error = ?message, "Refused request");
        // A full queue is why it was refused: its record would only be dropped, and counted
        // as a dropped record of a call.
        if reason != "audit_full" {
            self.audit_refused(caller, None, rule, message, status);
        }
        let body = json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": code, "message": message, "data": {"rule": rule}},
        });
        Box::new(json_response(status, body.to_string().into_bytes()))
    }

    /// Refuses every message of a body: the refused ones with their reason, the others (in
    /// a batch) naming the member that sank it. One audit record per message.
    fn refuse_messages(
        &self,
        caller: &Caller,
        body: &Body,
        verdicts: Vec<Option<Refusal>>,
        status: StatusCode,
        reason: &'static str,
        challenge: Option<HeaderValue>,
    ) -> Refused {
        self.refusal(caller, reason);
        let first = verdicts
            .iter()
            .position(Option::is_some)
            .unwrap_or_default();
        let culprit = body.messages.get(first).map_or_else(String::new, describe);
        let verdicts: Vec<Refusal> = verdicts
            .into_iter()
            .map(|v| {
                v.unwrap_or_else(|| {
                    Refusal::new(
                        "batch",
                        POLICY_REFUSED,
                        format!("batch refused as a whole because of member {culprit}"),
                    )
                })
            })
            .collect();
        if let Some(first) = verdicts.get(first) {
            crate::throttled!(self.refusal_log, warn, client.addr = %caller.addr,
                client.id = ?caller.identity.as_deref().unwrap_or(""), gate.reason = reason,
                authz.rule = ?first.rule, error = ?first.message, "Refused request");
        }
        if let Some(audit) = &self.audit {
            for r in self.records(caller, Some(body), |i| {
                let v = &verdicts[i];
                (Some(v.rule.clone()), Some(v.message.clone()))
            }) {
                audit.write(&Record {
                    decision: "refused",
                    status: status.as_u16(),
                    duration_ms: ms(caller.started),
                    ..r
                });
            }
        }
        let errors: Vec<Value> = body
            .messages
            .iter()
            .zip(&verdicts)
            .filter(|(m, _)| m.kind == Kind::Request)
            .map(|(m, v)| {
                json!({
                    "jsonrpc": "2.0",
                    "id": m.id,
                    "error": {"code": v.code, "message": v.message, "data": v.data()},
                })
            })
            .collect();
        let mut response = if errors.is_empty() {
            // Notifications (and responses) cannot be answered in JSON-RPC.
            plain(status, format!("{}\n", verdicts[first].message))
        } else if body.batch {
            json_response(status, Value::Array(errors).to_string().into_bytes())
        } else {
            json_response(status, errors[0].to_string().into_bytes())
        };
        if let Some(c) = challenge {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, c);
        }
        Box::new(response)
    }

    /// Counts a refusal: by reason, and against the address, unless the gate itself is
    /// short (budget, audit queue) or the client is only busy (its connection's in-flight
    /// cap, a rate limit): neither is a hostile request, and through a tunnel every client
    /// of a host shares one address.
    fn refusal(&self, caller: &Caller, reason: &'static str) {
        self.metrics.refusal(reason);
        if !matches!(
            reason,
            "body_budget" | "audit_full" | "inflight" | "rate_limited"
        ) {
            self.refusals.refused(&caller.addr_key);
        }
    }

    fn audit_refused(
        &self,
        caller: &Caller,
        body: Option<&Body>,
        rule: &str,
        reason: &str,
        status: StatusCode,
    ) {
        let Some(audit) = &self.audit else { return };
        for r in self.records(caller, body, |_| {
            (Some(rule.to_owned()), Some(reason.to_owned()))
        }) {
            audit.write(&Record {
                decision: "refused",
                status: status.as_u16(),
                duration_ms: ms(caller.started),
                ..r
            });
        }
    }

    /// One record per message (one for a request without a body), decided `allowed` until
    /// told otherwise; `why` gives each its rule and reason.
    fn records(
        &self,
        caller: &Caller,
        body: Option<&Body>,
        why: impl Fn(usize) -> (Option<String>, Option<String>),
    ) -> Vec<Record> {
        let settings = self.audit.as_ref().map(|a| a.settings.clone());
        let (bodies, tokens) =
            settings.map_or((false, false), |s| (s.include_bodies, s.include_tokens));
        let base = Record {
            time: caller.time.clone(),
            client_identity: caller.identity.clone(),
            subject: caller.subject().map(str::to_owned),
            client_addr: caller.addr.to_string(),
            tls_group: caller.group.clone(),
            pq: caller.group.as_ref().map(|_| caller.pq),
            session_id: caller.session_id.clone(),
            http_method: caller.http_method.clone(),
            path: caller.path.clone(),
            decision: "allowed",
            token: tokens
                .then(|| caller.principal.as_ref().map(|p| p.token.clone()))
                .flatten(),
            ..Record::default()
        };
        let Some(body) = body else {
            let (rule, reason) = why(0);
            return vec![Record {
                rule,
                reason,
                ..base
            }];
        };
        body.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (rule, reason) = why(i);
                let allowed_by = self.allowed_by(caller, m);
                Record {
                    method: m.method.clone(),
                    tool: m.tool().map(str::to_owned),
                    jsonrpc_id: m.id.clone(),
                    rule: rule.or(allowed_by),
                    reason,
                    body: bodies.then(|| caller.texts.get(i).cloned()).flatten(),
                    ..base.clone()
                }
            })
            .collect()
    }

    /// The rule that allows a message, for the audit record of an allowed one.
    fn allowed_by(&self, caller: &Caller, m: &Message) -> Option<String> {
        rules::check(&self.rules, &caller.summary(m)?)
            .ok()?
            .rule
            .map(str::to_owned)
    }
}

/// What the gate let through: headers to set upstream, and the audit records to finish.
#[derive(Debug)]
pub struct Admitted {
    headers: Vec<(HeaderName, HeaderValue)>,
    strip_authorization: bool,
    ticket: Option<Ticket>,
    _inflight: Option<Inflight>,
}

impl Admitted {
    /// Sets the subject and scope headers and, unless `forward-token`, removes the token.
    /// Call after the proxy has stripped client-sent `x-mcp-pqtls-*` headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if self.strip_authorization {
            headers.remove(AUTHORIZATION);
        }
        for (n, v) in &self.headers {
            headers.insert(n.clone(), v.clone());
        }
    }

    /// Writes the audit records with the status the client got (at the response head:
    /// a stream's body is never waited for).
    pub fn finish(mut self, status: StatusCode) {
        self.write_records(status.as_u16());
    }

    fn write_records(&mut self, status: u16) {
        let Some(mut t) = self.ticket.take() else {
            return;
        };
        let duration_ms = ms(t.started);
        for r in std::mem::take(&mut t.records) {
            let r = Record {
                status,
                duration_ms,
                ..r
            };
            match &mut t.reservation {
                Some(held) => t.audit.write_reserved(&r, held),
                None => t.audit.write(&r),
            }
        }
    }
}

/// Dropped unfinished: the client went away (an h2 reset, a closed connection, the drain
/// timeout) while the request was upstream. It may have run there, so it is still audited,
/// with status 499 (nginx's "client closed request").
impl Drop for Admitted {
    fn drop(&mut self) {
        self.write_records(CLIENT_CLOSED);
    }
}

/// The audit status of a request whose client left before the response head.
pub const CLIENT_CLOSED: u16 = 499;

#[derive(Debug)]
struct Ticket {
    audit: AuditLog,
    records: Vec<Record>,
    /// With `fail-closed`: the queue places of `records`.
    reservation: Option<Reservation>,
    started: Instant,
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

/// Why a body could not be read whole.
enum ReadError {
    TooBig,
    NoBudget,
    /// The proxy's own `request-body-timeout` cut the body first.
    Timeout,
    Body(BoxError),
}

/// A body the gate read, on its way upstream, holding its share of
/// `max-buffered-body-bytes` until it is dropped.
struct Buffered {
    data: Option<Bytes>,
    _hold: BodyHold,
}

impl hyper::body::Body for Buffered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.data.take().map(|d| Ok(hyper::body::Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// A POST, or a request without a body of one of the methods MCP uses besides POST (GET
/// opens a stream, DELETE ends a session; HEAD and OPTIONS for probes and CORS preflight).
fn bodiless_or_post<B: hyper::body::Body>(req: &Request<B>) -> bool {
    let m = req.method();
    if m == Method::POST {
        return true;
    }
    let known = [Method::GET, Method::DELETE, Method::HEAD, Method::OPTIONS].contains(m);
    // The size hint is exact for Content-Length and for an h2 stream that ended with its
    // headers; a chunked HTTP/1.1 body has no upper bound.
    known && req.body().size_hint().upper() == Some(0)
}

/// Who sent a request, over what.
struct Caller {
    addr: SocketAddr,
    identity: Option<String>,
    group: Option<String>,
    pq: bool,
    session_id: Option<String>,
    http_method: String,
    path: String,
    principal: Option<Principal>,
    started: Instant,
    time: String,
    /// The address as limits count it (IPv6: its prefix).
    addr_key: String,
    /// The source its body bytes are counted under (see [`budget`]).
    source: std::net::IpAddr,
    /// The messages as JSON text, for an audit log with `include-bodies`.
    texts: Vec<String>,
}

impl Caller {
    fn new<B>(req: &Request<B>, addr: SocketAddr, ipv6_prefix: u8) -> Self {
        let info = ConnectionInfo::of(req.extensions());
        Self {
            addr_key: rate::address_key(addr.ip(), ipv6_prefix),
            source: crate::source::source_of(addr.ip(), ipv6_prefix),
            texts: Vec::new(),
            addr,
            identity: info.and_then(|i| i.client_identity.clone()),
            group: info.map(|i| i.group.clone()),
            pq: info.is_some_and(|i| i.pq),
            // Streamable HTTP's header, else legacy HTTP+SSE's `?session_id=`.
            session_id: req
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .or_else(|| {
                    req.uri()
                        .query()?
                        .split('&')
                        .find_map(|p| p.strip_prefix("session_id="))
                })
                .map(str::to_owned),
            http_method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            principal: None,
            started: Instant::now(),
            time: audit::now(),
        }
    }

    /// What the rules decide on for message `m` (none for a message without a method).
    fn summary<'a>(&'a self, m: &'a Message) -> Option<Summary<'a>> {
        Some(Summary {
            method: m.method.as_deref()?,
            tool: m.tool(),
            group: self.group.as_deref().unwrap_or("none"),
            pq: self.pq,
            identity: self.identity.as_deref(),
            subject: self.subject(),
            scopes: self.scopes(),
        })
    }

    fn subject(&self) -> Option<&str> {
        self.principal.as_ref().map(|p| p.subject.as_str())
    }

    fn scopes(&self) -> &[String] {
        self.principal.as_ref().map_or(&[], |p| &p.scopes)
    }

    /// The rate-limit key: `kind`, falling back to the subject, then the address.
    fn key(&self, kind: KeyKind) -> String {
        let ip = || format!("addr:{}", self.addr_key);
        let sub = || self.subject().map(|s| format!("sub:{s}"));
        match kind {
            KeyKind::Identity => self
                .identity
                .as_ref()
                .map(|i| format!("id:{i}"))
                .or_else(sub)
                .unwrap_or_else(ip),
            KeyKind::Subject => sub().unwrap_or_else(ip),
            KeyKind::Address => ip(),
        }
    }
}

/// Why one message was refused, as the client and the audit log see it.
#[derive(Clone, Debug)]
struct Refusal {
    rule: String,
    code: i64,
    message: String,
    denied: Option<Denied>,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(rule: &str, code: i64, message: String) -> Self {
        Self {
            rule: rule.to_owned(),
            code,
            message,
            denied: None,
            retry_after: None,
        }
    }

    fn denied(d: Denied) -> Self {
        Self {
            rule: d.rule.clone(),
            code: POLICY_REFUSED,
            message: d.to_string(),
            denied: Some(d),
            retry_after: None,
        }
    }

    fn rate(l: &RateLimited, message: String) -> Self {
        Self {
            rule: format!("rate-limit:{}", l.limit),
            code: RATE_LIMITED,
            message,
            denied: None,
            retry_after: Some(l.retry_after_secs()),
        }
    }

    fn data(&self) -> Value {
        let mut data = json!({"rule": self.rule});
        if let Some(d) = &self.denied {
            data["rule"] = json!(d.rule);
            data["reason"] = json!(d.reason.label());
        }
        if let Some(s) = self.retry_after {
            data["retry_after"] = json!(s);
        }
        data
    }
}

fn describe(m: &Message) -> String {
    let id =
        m.id.as_ref()
            .map_or_else(|| "(notification)".to_owned(), Value::to_string);
    match (&m.method, m.tool()) {
        (Some(method), Some(tool)) => format!("id {id} ({method} {tool})"),
        (Some(method), None) => format!("id {id} ({method})"),
        _ => format!("id {id}"),
    }
}

fn missing_scopes(required: &[String], held: &[String]) -> Vec<String> {
    required
        .iter()
        .filter(|s| !held.contains(s))
        .cloned()
        .collect()
}

/// The `scope` of an insufficient-scope challenge: what the client holds plus what it
/// lacks, so a step-up authorization asks for enough (MCP authorization, scope challenge).
fn scope_hint(held: &[String], missing: &[String]) -> String {
    let mut all: Vec<&String> = held.iter().chain(missing).collect();
    all.sort();
    all.dedup();
    all.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

/// Why `Mcp-Method`/`Mcp-Name` disagree with the body, if they do. The body decides; the
/// headers are only checked, so a rule cannot be dodged by a header.
pub(crate) fn header_mismatch(headers: &HeaderMap, body: &Body) -> Option<String> {
    let read = |name: &str| -> Result<Option<String>, String> {
        let mut values = headers.get_all(name).iter();
        let Some(v) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(format!("more than one {name} header"));
        }
        header_text(v)
            .map(Some)
            .ok_or_else(|| format!("{name} header is not readable text"))
    };
    let (method, name) = match (read("mcp-method"), read("mcp-name")) {
        (Ok(m), Ok(n)) => (m, n),
        (Err(e), _) | (_, Err(e)) => return Some(e),
    };
    if method.is_none() && name.is_none() {
        return None;
    }
    if body.batch {
        return Some(
            "Mcp-Method/Mcp-Name headers describe one message, but the body is a batch".into(),
        );
    }
    let m = &body.messages[0];
    // Peer strings, quoted and escaped: the message reaches a log line.
    let shown = |v: &Option<String>| {
        v.as_deref()
            .map_or_else(|| "none".to_owned(), |s| format!("{s:?}"))
    };
    if let Some(h) = &method {
        if m.method.as_deref() != Some(h) {
            return Some(format!(
                "Mcp-Method header says {h:?} but the body's method is {}",
                shown(&m.method)
            ));
        }
    }
    if let Some(h) = &name {
        if m.name.as_deref() != Some(h) {
            return Some(format!(
                "Mcp-Name header says {h:?} but the body names {}",
                shown(&m.name)
            ));
        }
    }
    None
}

/// A header's text; MCP 2026-07-28 carries values that are not plain ASCII as
/// `=?base64?...?=`.
fn header_text(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    match s
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()
        }
        None => Some(s.to_owned()),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

impl Gate {
    /// Logs what the gate does, once at start.
    pub fn log_started(&self) {
        info!(
            auth = self.auth.is_some(),
            rules = self.rules.len(),
            rate_limits = self.limiter.as_ref().map_or(0, |l| l.limits().len()),
            audit = self.audit.is_some(),
            "Gate enabled"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> Body {
        jsonrpc::parse(s.as_bytes()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        crate::proxy::headers::test_map(pairs)
    }

    #[test]
    fn mcp_method_and_name_headers_must_agree_with_the_body() {
        let call = body(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}}"#,
        );
        assert_eq!(header_mismatch(&headers(&[]), &call), None);
        assert_eq!(
            header_mismatch(
                &headers(&[("mcp-method", "tools/call"), ("mcp-name", "delete_all")]),
                &call
            ),
            None
        );
        let e = header_mismatch(
            &headers(&[("mcp-method", "tools/call"), ("mcp-name", "echo")]),
            &call,
        )
        .unwrap();
        assert_eq!(
            e,
            r#"Mcp-Name header says "echo" but the body names "delete_all""#
        );
        let e = header_mismatch(&headers(&[("mcp-method", "tools/list")]), &call).unwrap();
        assert!(
            e.contains(r#"says "tools/list" but the body's method is "tools/call""#),
            "{e}"
        );
        // A forged line in a method name stays one quoted string.
        let forged =
            body(r#"{"jsonrpc":"2.0","id":1,"method":"x\n2026-12-01T00:00:00Z  INFO forged"}"#);
        let e = header_mismatch(&headers(&[("mcp-method", "y")]), &forged).unwrap();
        assert!(!e.contains('\n') && e.contains(r#""x\n2026"#), "{e}");
        let e =
            header_mismatch(&headers(&[("mcp-method", "a"), ("mcp-method", "b")]), &call).unwrap();
        assert_eq!(e, "more than one mcp-method header");
        let batch = body(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#);
        assert!(
            header_mismatch(&headers(&[("mcp-method", "tools/list")]), &batch)
                .unwrap()
                .contains("batch")
        );
        // Non-ASCII names travel base64-encoded.
        let uni =
            body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"café"}}"#);
        let b64 = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("café")
        );
        assert_eq!(header_mismatch(&headers(&[("mcp-name", &b64)]), &uni), None);
    }

    #[test]
    fn scope_hint_lists_held_and_missing_scopes_once() {
        assert_eq!(
            scope_hint(
                &["mcp".into(), "read".into()],
                &["admin".into(), "mcp".into()]
            ),
            "admin mcp read"
        );
    }
}
