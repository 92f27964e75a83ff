//! The approvers' side of the desk, on the admin listener: a JSON API and the page that uses
//! it.
//!
//! - `GET /approvals`: the held calls the caller may decide, oldest first.
//! - `GET /approvals/ID`: one of them.
//! - `POST /approvals/ID/approve`, `POST /approvals/ID/deny`: a decision, with a JSON body
//!   `{"reason": "...", "arguments_digest": "sha256:..."}` (both optional; a digest that is
//!   not the held call's is refused, so an approver decides what they were shown).
//! - `GET /approvals/ui` (and its `ui.js`, `ui.css`): the page.
//!
//! Every API request is authenticated, never by a cookie: a bearer token verified with the
//! gate's JWKS (its scopes are matched against `scope:NAME` approvers), or the client
//! certificate of an admin listener served with `admin-tls` (`id:PATTERN`). A decision must
//! be `Content-Type: application/json`, which a cross-site form cannot send without a CORS
//! preflight that this listener never answers: a browser holding a client certificate cannot
//! be made to decide by another site.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use super::approval::{may_decide, Approving};
use super::refusal::json_response;
use super::Gate;

/// The largest decision body read.
const MAX_DECISION_BYTES: usize = 16 * 1024;
/// The longest reason kept (it is shown to the client and audited).
const MAX_REASON_CHARS: usize = 1000;
/// Time a decision's body gets to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

const PAGE: &str = include_str!("approvals_ui/index.html");
const SCRIPT: &str = include_str!("approvals_ui/ui.js");
const STYLE: &str = include_str!("approvals_ui/ui.css");

/// The page's policy: its own script and style only, fetches to this origin only, no frames,
/// no forms, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    reason: Option<String>,
    arguments_digest: Option<String>,
}

impl Gate {
    /// Whether this gate holds calls for approval (its admin listener then serves
    /// `/approvals`).
    pub fn takes_approvals(&self) -> bool {
        self.desk.is_some()
    }

    /// Answers an admin request under `/approvals`.
    pub async fn serve_approvals<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<super::BoxError>,
    {
        let Some(desk) = &self.desk else {
            return problem(
                StatusCode::NOT_FOUND,
                "this gate holds no calls for approval (no rule has require-approval)",
            );
        };
        let path = req.uri().path().to_owned();
        // `/approvals` or `/approvals/REST`, once: `//` or a repeated prefix is not a route.
        let rest = match path.strip_prefix("/approvals") {
            Some("") => "",
            Some(r) => match r.strip_prefix('/') {
                Some(r) if !r.is_empty() => r,
                _ => return problem(StatusCode::NOT_FOUND, "no such approvals route"),
            },
            None => return problem(StatusCode::NOT_FOUND, "no such approvals route"),
        };
        let method = req.method().clone();
        match (&method, rest) {
            (&Method::GET, "ui") => return asset("text/html; charset=utf-8", PAGE),
            (&Method::GET, "ui.js") => return asset("text/javascript; charset=utf-8", SCRIPT),
            (&Method::GET, "ui.css") => return asset("text/css; charset=utf-8", STYLE),
            _ => {}
        }
        let who = match self.approver(&req).await {
            Ok(who) => who,
            Err(r) => return r,
        };
        let approver_somewhere = self
            .rules
            .iter()
            .filter_map(|r| r.approval.as_ref())
            .any(|a| may_decide(&a.approvers, &who));
        if !approver_somewhere {
            if method == Method::POST {
                self.metrics.approval_decision_refused();
            }
            warn!(approver = %who.name(), path = %path, "Approvals API refused: not an approver of any rule");
            return problem(
                StatusCode::FORBIDDEN,
                &format!("{} is not an approver of any rule", who.name()),
            );
        }
        let parts: Vec<&str> = rest.split('/').collect();
        match (&method, parts.as_slice()) {
            (&Method::GET, [""]) => ok(json!({"approvals": desk.pending(&who).await, "approver": who.name()})),
            (&Method::GET, [id]) => match desk.get(id, &who).await {
                Ok(call) => ok(json!(call)),
                Err(e) => problem(e.status(), &e.to_string()),
            },
            (&Method::POST, [id, verb @ ("approve" | "deny")]) => {
                let id = (*id).to_owned();
                let approve = *verb == "approve";
                let body = match decision_body(req).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                match desk
                    .decide(&id, &who, approve, body.reason, body.arguments_digest.as_deref())
                    .await
                {
                    Ok(call) => ok(json!({
                        "id": id,
                        "decision": if approve { "approved" } else { "denied" },
                        "approver": who.name(),
                        "tool": call.tool,
                    })),
                    Err(e) => problem(e.status(), &e.to_string()),
                }
            }
            (&Method::GET | &Method::POST, _) => problem(
                StatusCode::NOT_FOUND,
                "try GET /approvals, GET /approvals/ID, POST /approvals/ID/approve or /deny, GET /approvals/ui",
            ),
            _ => problem(StatusCode::METHOD_NOT_ALLOWED, "GET or POST"),
        }
    }

    /// Who is asking: the admin connection's client certificate, and a bearer token verified
    /// like the MCP endpoint's (issuer, audience, JWKS).
    async fn approver<B>(&self, req: &Request<B>) -> Result<Approving, Response<Full<Bytes>>> {
        let identity = crate::tls::ConnectionInfo::of(req.extensions())
            .and_then(|i| i.client_identity.clone());
        let mut who = Approving {
            identity,
            ..Approving::default()
        };
        let has_token = req.headers().contains_key(http::header::AUTHORIZATION);
        if has_token {
            let Some(auth) = &self.auth else {
                if who.identity.is_some() {
                    return Ok(who); // the certificate says who; there is no token to check
                }
                return Err(problem(
                    StatusCode::UNAUTHORIZED,
                    "this gate has no [auth]: approvers prove who they are with a client certificate",
                ));
            };
            match auth.verify(req.headers()).await {
                Ok(p) => {
                    who.subject = Some(p.subject);
                    who.scopes = p.scopes;
                }
                Err(e) => {
                    warn!(error = %e, "Approvals API refused a token");
                    let mut r = problem(
                        StatusCode::UNAUTHORIZED,
                        &format!("the token is not accepted: {e}"),
                    );
                    r.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer error=\"invalid_token\""),
                    );
                    return Err(r);
                }
            }
        }
        if who.subject.is_none() && who.identity.is_none() {
            let mut r = problem(
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer TOKEN (a token with an approver scope), or connect with an approver's client certificate (admin-tls)",
            );
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Err(r);
        }
        Ok(who)
    }
}

async fn decision_body<B>(req: Request<B>) -> Result<DecisionBody, Response<Full<Bytes>>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<super::BoxError>,
{
    let json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a decision is sent as Content-Type: application/json (a cross-site form cannot send it)",
        ));
    }
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_DECISION_BYTES).collect(),
    )
    .await;
    let bytes = match read {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            return Err(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the decision body cannot be read (at most {MAX_DECISION_BYTES} bytes): {e}"
                ),
            ))
        }
        Err(_) => {
            return Err(problem(
                StatusCode::REQUEST_TIMEOUT,
                "the decision body did not arrive within 5 s",
            ))
        }
    };
    let body: DecisionBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            problem(
                StatusCode::BAD_REQUEST,
                &format!("the decision must be {{\"reason\": \"...\", \"arguments_digest\": \"sha256:...\"}}: {e}"),
            )
        })?
    };
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            &format!("the reason is longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok(DecisionBody {
        reason: body.reason.filter(|r| !r.trim().is_empty()),
        ..body
    })
}

fn ok(v: Value) -> Response<Full<Bytes>> {
    no_store(json_response(StatusCode::OK, v.to_string().into_bytes()))
}

fn problem(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    no_store(json_response(
        status,
        json!({"error": message}).to_string().into_bytes(),
    ))
}

fn no_store(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn asset(ctype: &'static str, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
