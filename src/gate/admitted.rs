//! What the gate let through: the headers it sets upstream and the audit records of the
//! call, written with the status the client got (or 499 when it left first), and the
//! records of refused calls.

use std::sync::Arc;
use std::time::Instant;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_LENGTH,
};
use http::StatusCode;
use tracing::warn;

use super::approval::{Decided, Hold};
use super::audit::{ms, AuditLog, Decision, Record, Reservation};
use super::caller::Caller;
use super::jsonrpc::{self, Body, Message};
use super::reason::RefusalReason;
use super::tools::{Answers, Judge, Listing};
use super::{rules, Gate, Inflight, Refused, SCOPES_HEADER, SUBJECT_HEADER};

impl Gate {
    pub(super) fn admitted(
        &self,
        caller: &Caller,
        body: Option<Body>,
        inflight: Option<Inflight>,
        answers: Option<Answers>,
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
                                RefusalReason::AuditFull,
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
        let listing = answers.and_then(|a| Some((a, self.judge(caller)?)));
        Ok(Admitted {
            headers,
            strip_authorization,
            ticket,
            listing,
            approval: None,
            sent: false,
            _inflight: inflight,
        })
    }

    pub(super) fn audit_refused(
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
                decision: Decision::Refused,
                status: status.as_u16(),
                duration_ms: ms(caller.started),
                ..r
            });
        }
    }

    /// One record per message (one for a request without a body), decided `allowed` until
    /// told otherwise; `why` gives each its rule and reason.
    pub(super) fn records(
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
            protocol_version: caller.protocol_version.clone(),
            client_name: caller.client_name.clone(),
            http_method: caller.http_method.clone(),
            path: caller.path.clone(),
            decision: Decision::Allowed,
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
    pub(super) fn allowed_by(&self, caller: &Caller, m: &Message) -> Option<String> {
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
    /// `[tools]`: which answers are `tools/list` results, and their judge.
    listing: Option<(Answers, Arc<dyn Judge>)>,
    /// `require-approval`: the call on the desk, then what became of it.
    approval: Option<(Holding, Option<Decided>)>,
    /// Sent upstream (it may have run).
    sent: bool,
    _inflight: Option<Inflight>,
}

/// A call held for approval (`require-approval`), as [`Admitted`] keeps it: what to wait for
/// and whom to answer.
#[derive(Debug)]
pub(super) struct Holding {
    pub(super) hold: Hold,
    pub(super) id: Option<serde_json::Value>,
    pub(super) rule: String,
    pub(super) keepalive: std::time::Duration,
}

impl Admitted {
    /// Sets the subject and scope headers (removing any the client sent under those names)
    /// and, unless `forward-token`, removes the token.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.remove(SUBJECT_HEADER);
        headers.remove(SCOPES_HEADER);
        if self.strip_authorization {
            headers.remove(AUTHORIZATION);
        }
        // A list the gate judges must come unencoded.
        if self.listing.is_some() {
            headers.remove(ACCEPT_ENCODING);
        }
        for (n, v) in &self.headers {
            headers.insert(n.clone(), v.clone());
        }
    }

    /// The response body, judged when it may carry `tools/list` results (`[tools]`); `Err`:
    /// as it is. An encoded one (the upstream ignored the missing `Accept-Encoding`) ends in
    /// an error.
    pub fn listing<B>(
        &mut self,
        status: http::StatusCode,
        headers: &mut HeaderMap,
        body: B,
    ) -> Result<Listing<B>, B> {
        let Some((answers, judge)) = self.listing.take() else {
            return Err(body);
        };
        // The judged body may shrink.
        headers.remove(CONTENT_LENGTH);
        Ok(Listing::new(body, status, headers, answers, judge))
    }

    pub(super) fn hold(&mut self, holding: Holding) {
        self.approval = Some((holding, None));
    }

    /// The call held for approval, if it is.
    pub(super) fn holding(&self) -> Option<&Holding> {
        self.approval.as_ref().map(|(h, _)| h)
    }

    /// Drops the call unrecorded: it was refused after all, and its refusal is its record.
    pub(super) fn discard(mut self) {
        self.ticket = None;
    }

    /// The call is being sent upstream: from here its client leaving does not mean it did
    /// not run.
    pub(super) fn sending(&mut self) {
        self.sent = true;
    }

    /// Whether the call is held for approval: [`Admitted::approval`] decides whether it is sent.
    pub fn is_held(&self) -> bool {
        self.approval.is_some()
    }

    /// Waits for the approvers' decision on a held call (none if it is not held).
    pub async fn approval(&mut self) -> Option<Decided> {
        let (holding, decided) = self.approval.as_mut()?;
        let d = holding.hold.wait().await;
        *decided = Some(d.clone());
        Some(d)
    }

    /// Writes the audit records of a held call that was not approved: refused, by `rule`,
    /// with `status`.
    pub fn refuse(mut self, status: StatusCode, rule: &str, reason: &str) {
        if let Some(t) = &mut self.ticket {
            for r in &mut t.records {
                r.decision = Decision::Refused;
                r.rule = Some(rule.to_owned());
                r.reason = Some(reason.to_owned());
            }
        }
        self.write_records(status.as_u16());
    }

    /// Writes the audit records with the status the client got (at the response head:
    /// a stream's body is never waited for).
    pub fn finish(mut self, status: StatusCode) {
        self.write_records(status.as_u16());
    }

    fn write_records(&mut self, status: u16) {
        // Written while still held: the client left, which cancels it.
        let approval = self.approval.as_mut().map(|(h, decided)| {
            let d = match decided {
                Some(d) => d.clone(),
                None => h.hold.cancel(),
            };
            (d, h.rule.clone())
        });
        // A held call that was never sent did not run, whatever was decided.
        let unsent = approval.as_ref().filter(|_| !self.sent);
        let Some(mut t) = self.ticket.take() else {
            return;
        };
        let duration_ms = ms(t.started);
        for r in std::mem::take(&mut t.records) {
            let mut r = Record {
                status,
                duration_ms,
                approval: approval.as_ref().map(|(d, _)| d.clone()),
                ..r
            };
            if let Some((d, rule)) = unsent {
                r.decision = Decision::Refused;
                r.rule = Some(rule.clone());
                r.reason.get_or_insert_with(|| match d.decision {
                    super::approval::Outcome::Approved => {
                        "approved, but the client left before it was sent".to_owned()
                    }
                    _ => "the client left while the call was held for approval".to_owned(),
                });
            }
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
