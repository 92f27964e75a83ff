//! A call held for approval, from the client's side: put on the [`Desk`](super::approval::Desk)
//! once every other check has passed, and the pieces of its wait that the layer's `respond`
//! puts together (the refusal, the SSE answer and its relay).
//!
//! When the request's `Accept` allows `text/event-stream`, the client gets an SSE response at
//! once: a comment now and every `keepalive` (so that no proxy's idle timer closes it), then
//! the upstream's answer (its events as they come, or its JSON answer as one `message`
//! event), or the refusal. Otherwise the POST waits for the decision. Either way a client
//! that leaves cancels the approval: its SSE body is dropped, which the waiting task sees at
//! once, or its request future is.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as HttpBody, Frame};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::admitted::{Admitted, Holding};
use super::approval::{
    ApprovalRule, CallerView, Decided, HeldCall, HoldError, Outcome, TlsView, RELEASED,
};
use super::caller::Caller;
use super::jsonrpc::{self, Body};
use super::rate::KeyKind;
use super::reason::RefusalReason;
use super::refusal::Refusal;
use super::tool_checks::params_of;
use super::tools::Digest;
use super::{BoxError, Gate, Refused, POLICY_REFUSED};
use crate::sse::is_event_stream;

/// The largest JSON answer of an approved call carried as one event (a stream is relayed
/// as it comes, unbounded).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Why arguments that are not JSON cannot be shown.
const ARGUMENTS_UNREADABLE: &str = "they are not readable JSON";

/// The largest integer JSON numbers keep exactly everywhere an approver reads them (the page's
/// `JSON.parse`, the digest's RFC 8785 form): 2^53.
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Whether `v` reads the same to an approver as to the upstream: integers within ±2^53 and
/// other numbers that are not integers beyond it (those are rounded by every IEEE-double
/// reader, so the upstream could run a number the approver never saw).
fn exact(v: &Value) -> Result<(), &'static str> {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::INFINITY);
            if f.abs() > EXACT_INTEGER {
                return Err("a number beyond ±2^53 reads differently in a browser, the digest and the upstream; send it as a string");
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(exact),
        Value::Object(map) => map.values().try_for_each(exact),
        _ => Ok(()),
    }
}

/// The message of a body that a rule holds for approval.
#[derive(Clone, Copy, Debug)]
pub(super) struct Held<'r> {
    pub(super) index: usize,
    pub(super) rule: &'r str,
    pub(super) approval: &'r ApprovalRule,
}

impl Gate {
    /// What approvers will be shown of message `held.index` of `body`: refused (400) when its
    /// arguments cannot be shown exactly as they are sent.
    pub(super) fn held_call(
        &self,
        caller: &Caller,
        body: &Body,
        bytes: &[u8],
        held: Held<'_>,
    ) -> Result<HeldCall, Refused> {
        let m = &body.messages[held.index];
        let arguments = params_of(bytes, body.batch)
            .ok()
            .and_then(|p| p.into_iter().nth(held.index).flatten())
            .map(|mut p| {
                p.get_mut("arguments")
                    .map(Value::take)
                    .unwrap_or(Value::Null)
            });
        let shown = arguments.as_ref().map_or(Err(ARGUMENTS_UNREADABLE), exact);
        let canonical = arguments.as_ref().and_then(|a| serde_jcs::to_vec(a).ok());
        let (Some(arguments), Ok(()), Some(canonical)) = (arguments, shown, canonical) else {
            let why = shown.err().unwrap_or(ARGUMENTS_UNREADABLE);
            return Err(self.refuse_held(
                caller,
                body,
                held,
                StatusCode::BAD_REQUEST,
                RefusalReason::InvalidRequest,
                jsonrpc::INVALID_PARAMS,
                format!("the arguments of a call that needs approval must be shown to an approver exactly as they are sent: {why}"),
            ));
        };
        Ok(HeldCall {
            id: String::new(),
            tool: m.tool().unwrap_or_default().to_owned(),
            arguments,
            arguments_digest: Digest::of(&canonical).to_string(),
            rule: held.rule.to_owned(),
            approvers: held
                .approval
                .approvers
                .iter()
                .map(ToString::to_string)
                .collect(),
            caller: CallerView {
                identity: caller.identity.clone(),
                subject: caller.subject().map(str::to_owned),
                addr: caller.addr.to_string(),
                client_name: caller.client_name.clone(),
                protocol_version: caller.protocol_version.clone(),
                session_id: caller.session_id.clone(),
            },
            tls: TlsView {
                group: caller.group.clone(),
                pq: caller.pq,
                cipher_suite: caller.tls.as_ref().map(|i| i.cipher_suite.clone()),
                version: caller.tls.as_ref().map(|i| i.tls_version.clone()),
            },
            created: String::new(),
            expires: String::new(),
            age_ms: 0,
            expires_in_ms: 0,
        })
    }

    /// Puts `call` on the desk, once the call is admitted (the last step before the
    /// upstream); a full desk refuses it (503) and `admitted` is discarded unrecorded (the
    /// refusal is the call's record).
    pub(super) fn hold(
        &self,
        caller: &Caller,
        body: &Body,
        call: HeldCall,
        held: Held<'_>,
        mut admitted: Admitted,
    ) -> Result<Admitted, Refused> {
        let Some(desk) = &self.desk else {
            // A rule holds calls only when the gate has a desk (see `Gate::new`).
            admitted.discard();
            return Err(self.refuse_held(
                caller,
                body,
                held,
                StatusCode::SERVICE_UNAVAILABLE,
                RefusalReason::ApprovalsFull,
                jsonrpc::INTERNAL_ERROR,
                "this gate takes no approvals".to_owned(),
            ));
        };
        let id = body.messages[held.index].id.clone();
        match desk.hold(call, held.approval, caller.key(KeyKind::Identity)) {
            Ok(hold) => {
                admitted.hold(Holding {
                    hold,
                    id,
                    rule: held.rule.to_owned(),
                    keepalive: desk.limits().keepalive,
                });
                Ok(admitted)
            }
            Err(e) => {
                admitted.discard();
                let reason = match e {
                    HoldError::Unshared => RefusalReason::FleetUnavailable,
                    HoldError::ShuttingDown => RefusalReason::ShuttingDown,
                    _ => RefusalReason::ApprovalsFull,
                };
                let mut r = self.refuse_held(
                    caller,
                    body,
                    held,
                    StatusCode::SERVICE_UNAVAILABLE,
                    reason,
                    POLICY_REFUSED,
                    e.to_string(),
                );
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("5"));
                Err(r)
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // one refusal, said in full at each of its three sites
    fn refuse_held(
        &self,
        caller: &Caller,
        body: &Body,
        held: Held<'_>,
        status: StatusCode,
        reason: RefusalReason,
        code: i64,
        message: String,
    ) -> Refused {
        let mut verdicts = vec![None; body.messages.len()];
        verdicts[held.index] = Some(Refusal::new(held.rule, code, message));
        self.refuse_messages(caller, body, verdicts, status, reason, None)
    }

    /// A batch with a member a rule holds: refused whole, as a held call waits alone.
    pub(super) fn held_in_batch(&self, caller: &Caller, body: &Body, held: Held<'_>) -> Refused {
        let mut verdicts = vec![None; body.messages.len()];
        verdicts[held.index] = Some(Refusal::new(
            held.rule,
            POLICY_REFUSED,
            format!(
                "rule `{}` holds this call for approval: send it alone, not in a batch",
                held.rule
            ),
        ));
        self.refuse_messages(
            caller,
            body,
            verdicts,
            StatusCode::BAD_REQUEST,
            RefusalReason::Rule,
            None,
        )
    }

    /// The JSON-RPC error of a held call that was not approved; its records are written
    /// (refused, 403) and the refusal counted.
    pub(super) fn not_approved(&self, admitted: Admitted, decided: &Decided) -> Value {
        let (id, rule) = admitted
            .holding()
            .map(|h| (h.id.clone(), h.rule.clone()))
            .unwrap_or_default();
        let (reason, message) = match decided.decision {
            Outcome::Denied => (
                RefusalReason::ApprovalDenied,
                format!(
                    "denied by {}{}",
                    decided.approver.as_deref().unwrap_or("an approver"),
                    decided
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            ),
            Outcome::Cancelled => (
                RefusalReason::ShuttingDown,
                decided
                    .reason
                    .clone()
                    .unwrap_or_else(|| RELEASED.to_owned()),
            ),
            _ => (
                RefusalReason::ApprovalExpired,
                format!(
                    "not approved within its approval-timeout ({} s of waiting): denied",
                    decided.waited_ms / 1000
                ),
            ),
        };
        let message = format!("rule `{rule}` holds this call for approval; {message}");
        self.metrics.refusal(reason);
        let status = match reason {
            RefusalReason::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        };
        admitted.refuse(status, &rule, &message);
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": POLICY_REFUSED,
                "message": message,
                "data": {"rule": rule, "approval": decided},
            },
        })
    }
}

pub(super) fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.split(';').next().unwrap_or_default().trim();
            t.eq_ignore_ascii_case("text/event-stream")
        })
}

/// The upstream's answer to an approved call, onto the held SSE response: a stream's events
/// as they come, a JSON answer (of any status) as one `message` event.
pub(super) async fn relay<B>(response: Response<B>, id: Option<Value>, tx: &mpsc::Sender<Bytes>)
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    if parts.status.is_success() && is_event_stream(&parts.headers) {
        let mut body = std::pin::pin!(body);
        loop {
            // The client leaving ends the relay (and, dropping the body, the upstream stream).
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = tx.closed() => return,
            };
            let Some(frame) = frame else { return };
            let Ok(data) = frame.map(|f| f.into_data()) else {
                return;
            };
            if let Ok(data) = data {
                if tx.send(data).await.is_err() {
                    return;
                }
            }
        }
    }
    let status = parts.status;
    let answer = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .ok()
        .and_then(|c| serde_json::from_slice::<Value>(&c.to_bytes()).ok())
        .filter(|v| v.get("jsonrpc").is_some());
    let message = answer.unwrap_or_else(|| {
        jsonrpc_error(
            id,
            jsonrpc::INTERNAL_ERROR,
            &format!("the upstream answered the approved call with HTTP {status} and no JSON-RPC message"),
        )
    });
    let _ = tx.send(event(&message)).await;
}

pub(super) fn jsonrpc_error(id: Option<Value>, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// One SSE `message` event (compact JSON has no line breaks: strings escape them).
pub(super) fn event(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

/// The held SSE response's body: what the waiting task sends.
pub(super) struct Events {
    pub(super) rx: mpsc::Receiver<Bytes>,
}

impl HttpBody for Events {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
