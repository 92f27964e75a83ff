//! How the gate answers what it refuses: the refusal reasons (metric labels), the JSON-RPC
//! errors and `WWW-Authenticate` challenges, one audit record per refused message, and
//! the throttled WARN line.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use super::audit::ms;
use super::audit::{Decision, Record};
use super::auth::{scope_hint, TokenError};
use super::caller::Caller;
use super::jsonrpc::{Body, Kind, Message};
use super::rate::RateLimited;
pub use super::reason::RefusalReason;
use super::rules::Denied;
use super::{Gate, Refused, POLICY_REFUSED, RATE_LIMITED};

impl Gate {
    /// Refused unread: the address is over `refusals-per-ip-per-minute`. No line and no
    /// record each: a throttled WARN line with the count, and one summary audit record per
    /// address per minute.
    pub(super) fn flooded(&self, caller: &Caller, limited: &RateLimited) -> Refused {
        self.metrics.refusal(RefusalReason::RefusalFlood);
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

    pub(super) fn unauthorized(&self, caller: &Caller, e: &TokenError) -> Refused {
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
        crate::throttled!(self.refusal_log, warn, client.addr = %caller.addr, reason = e.kind().label(),
            error = ?e.to_string(), "Refused request: bearer token not accepted");
        self.refusal(caller, RefusalReason::Unauthorized);
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
    pub(super) fn insufficient_scope(&self, caller: &Caller, missing: &[String]) -> Refused {
        let description = format!("the token lacks scope {}", missing.join(" "));
        let mut r = self.refuse_whole(
            caller,
            StatusCode::FORBIDDEN,
            RefusalReason::InsufficientScope,
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
    pub(super) fn refuse_whole(
        &self,
        caller: &Caller,
        status: StatusCode,
        reason: RefusalReason,
        rule: &str,
        code: i64,
        message: &str,
    ) -> Refused {
        self.refusal(caller, reason);
        crate::throttled!(self.refusal_log, warn, client.addr = %caller.addr, gate.reason = reason.label(),
            error = ?message, "Refused request");
        // A full queue is why it was refused: its record would only be dropped, and counted
        // as a dropped record of a call.
        if reason != RefusalReason::AuditFull {
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
    pub(super) fn refuse_messages(
        &self,
        caller: &Caller,
        body: &Body,
        verdicts: Vec<Option<Refusal>>,
        status: StatusCode,
        reason: RefusalReason,
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
                client.id = ?caller.identity.as_deref().unwrap_or(""), gate.reason = reason.label(),
                authz.rule = ?first.rule, error = ?first.message, "Refused request");
        }
        if let Some(audit) = &self.audit {
            for r in self.records(caller, Some(body), |i| {
                let v = &verdicts[i];
                (Some(v.rule.clone()), Some(v.message.clone()))
            }) {
                audit.write(&Record {
                    decision: Decision::Refused,
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

    /// Counts a refusal: by reason, and against the address if the reason
    /// [counts against it](RefusalReason::counts_against_address).
    pub(super) fn refusal(&self, caller: &Caller, reason: RefusalReason) {
        self.metrics.refusal(reason);
        if reason.counts_against_address() {
            self.refusals.refused(&caller.addr_key);
        }
    }
}

/// Why one message was refused, as the client and the audit log see it.
#[derive(Clone, Debug)]
pub(super) struct Refusal {
    rule: String,
    code: i64,
    message: String,
    pub(super) denied: Option<Denied>,
    retry_after: Option<u64>,
    /// More of the error's `data` (an object's keys, merged in).
    detail: Option<Value>,
}

impl Refusal {
    pub(super) fn new(rule: &str, code: i64, message: String) -> Self {
        Self {
            rule: rule.to_owned(),
            code,
            message,
            denied: None,
            retry_after: None,
            detail: None,
        }
    }

    /// Adds `detail`'s keys to the error's `data`.
    pub(super) fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub(super) fn denied(d: Denied) -> Self {
        Self {
            rule: d.rule.clone(),
            code: POLICY_REFUSED,
            message: d.to_string(),
            denied: Some(d),
            retry_after: None,
            detail: None,
        }
    }

    pub(super) fn rate(l: &RateLimited, message: String) -> Self {
        Self {
            rule: format!("rate-limit:{}", l.limit),
            code: RATE_LIMITED,
            message,
            denied: None,
            retry_after: Some(l.retry_after_secs()),
            detail: None,
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
        if let Some(Value::Object(more)) = &self.detail {
            for (k, v) in more {
                data[k] = v.clone();
            }
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

pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
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
