//! The gate's side of `[tools]` (the decisions are [`super::tools::Registry`]'s): `tools/call`s
//! refused before they reach the upstream, and the judge of `tools/list` answers on their
//! way back, which logs, counts and audits each change.
//!
//! Status of a refused call: a tool hidden by its pin is a policy refusal (403, -32010, as a
//! rule's); an unknown tool or invalid arguments is -32602 (invalid params, as MCP's tools
//! page says), with the status the Python SDK's servers give it: 400 for a 2026-07-28
//! request, 200 for the session protocols (rmcp 3.11 answers 200 for both; the SDK clients
//! read the error from the body either way).

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use tracing::warn;

use super::audit::{AuditLog, Decision, Record};
use super::caller::Caller;
use super::jsonrpc::{Body, Kind};
use super::mcp_headers::{param_mismatch, stateless};
use super::metrics::GateMetrics;
use super::reason::RefusalReason;
use super::refusal::Refusal;
use super::tools::{Answers, CallRefused, Change, Judge, OnChange, Registry};
use super::{Gate, Refused, HEADER_MISMATCH, POLICY_REFUSED};

use super::jsonrpc::INVALID_PARAMS;

impl Gate {
    /// Refuses the body when a `tools/call` in it is to a tool the registry refuses.
    pub(super) fn check_tools(
        &self,
        caller: &Caller,
        body: &Body,
        bytes: &[u8],
        headers: &HeaderMap,
    ) -> Result<(), Refused> {
        let Some(registry) = &self.tools else {
            return Ok(());
        };
        if !body.messages.iter().any(|m| m.tool().is_some()) {
            return Ok(());
        }
        let modern = stateless(headers);
        // Mirrored parameters are checked for 2026-07-28 requests with validation on, or
        // whenever one is sent.
        let params_mirrored = modern
            && (registry.settings().validate_arguments
                || headers.keys().any(|k| k.as_str().starts_with("mcp-param-")));
        // The loose reader skips `arguments`; the tree is built only for calls.
        let params = if registry.settings().validate_arguments || params_mirrored {
            match params_of(bytes, body.batch) {
                Ok(p) => p,
                Err(e) => {
                    // Arguments that cannot be read are not passed unvalidated.
                    let message = format!("the arguments cannot be read for validation: {e}");
                    let verdicts = body
                        .messages
                        .iter()
                        .map(|m| {
                            m.tool().map(|_| {
                                Refusal::new("tools:arguments", INVALID_PARAMS, message.clone())
                            })
                        })
                        .collect();
                    let status = if modern {
                        StatusCode::BAD_REQUEST
                    } else {
                        StatusCode::OK
                    };
                    return Err(self.refuse_messages(
                        caller,
                        body,
                        verdicts,
                        status,
                        RefusalReason::InvalidArguments,
                        None,
                    ));
                }
            }
        } else {
            Vec::new()
        };
        let status_invalid = if modern {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        let mut status = StatusCode::OK;
        let mut reason = None;
        let verdicts: Vec<Option<Refusal>> = body
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let tool = m.tool()?;
                let arguments = params
                    .get(i)
                    .and_then(|p| p.as_ref())
                    .and_then(|p| p.get("arguments"));
                let (refusal, s, r) = match registry.check_call(tool, arguments) {
                    Err(refused) => {
                        let (code, s, r) = match &refused {
                            CallRefused::Added { .. } | CallRefused::Changed { .. } => (
                                POLICY_REFUSED,
                                StatusCode::FORBIDDEN,
                                RefusalReason::ToolPin,
                            ),
                            CallRefused::Unknown { .. } => {
                                (INVALID_PARAMS, status_invalid, RefusalReason::UnknownTool)
                            }
                            _ => (
                                INVALID_PARAMS,
                                status_invalid,
                                RefusalReason::InvalidArguments,
                            ),
                        };
                        let refusal = Refusal::new(refused.rule(), code, refused.to_string())
                            .with_detail(detail(&refused));
                        (refusal, s, r)
                    }
                    Ok(()) if params_mirrored && !body.batch => {
                        let schema = registry.input_schema(tool)?;
                        let mismatch = param_mismatch(headers, &schema, arguments)?;
                        let refusal = Refusal::new("headers", HEADER_MISMATCH, mismatch)
                            .with_detail(json!({"tool": tool}));
                        (
                            refusal,
                            StatusCode::BAD_REQUEST,
                            RefusalReason::HeaderMismatch,
                        )
                    }
                    Ok(()) => return None,
                };
                // A batch takes the strongest status of its refusals.
                if reason.is_none() || s == StatusCode::FORBIDDEN {
                    status = s;
                    reason = Some(r);
                }
                Some(refusal)
            })
            .collect();
        let Some(reason) = reason else {
            return Ok(());
        };
        Err(self.refuse_messages(caller, body, verdicts, status, reason, None))
    }

    /// With `[tools]`, every answer is judged (a list may come on any stream); this says
    /// which of the request's ids asked for a first page of `tools/list`.
    pub(super) fn answers(&self, body: Option<&Body>, bytes: Option<&[u8]>) -> Option<Answers> {
        self.tools.as_ref()?;
        let Some(body) = body else {
            return Some(Answers::default());
        };
        let lists: Vec<usize> = body
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind == Kind::Request && m.method.as_deref() == Some("tools/list"))
            .map(|(i, _)| i)
            .collect();
        if lists.is_empty() {
            return Some(Answers::default());
        }
        let params = bytes
            .and_then(|b| params_of(b, body.batch).ok())
            .unwrap_or_default();
        let ids = lists
            .into_iter()
            .filter_map(|i| {
                let id = body.messages[i].id.as_ref()?.to_string();
                let cursor = params
                    .get(i)
                    .and_then(|p| p.as_ref())
                    .and_then(|p| p.get("cursor"))
                    .is_some_and(|c| !c.is_null());
                Some((id, !cursor))
            })
            .collect();
        Some(Answers(ids))
    }

    /// The judge of the `tools/list` answers to `caller`'s request.
    pub(super) fn judge(&self, caller: &Caller) -> Option<Arc<dyn Judge>> {
        let registry = self.tools.clone()?;
        // One record for a request without a body: the base of the change records.
        let base = self
            .records(caller, None, |_| (None, None))
            .pop()
            .unwrap_or_default();
        Some(Arc::new(ListJudge {
            registry,
            metrics: self.metrics.clone(),
            audit: self.audit.clone(),
            base,
        }))
    }
}

/// The `data` of a refused call: the tool, and what changed or failed.
fn detail(r: &CallRefused) -> Value {
    match r {
        CallRefused::Added { name } => json!({"tool": name, "change": "added"}),
        CallRefused::Changed { name, fields } => {
            json!({"tool": name, "change": "changed", "fields": fields})
        }
        CallRefused::Unknown { name } => json!({"tool": name}),
        CallRefused::Uncallable { name, reason } => json!({"tool": name, "schema": reason}),
        CallRefused::Invalid { name, invalid } => json!({
            "tool": name,
            "keyword": invalid.keyword,
            "path": invalid.path,
        }),
    }
}

/// The `params` of each message of a body [`super::jsonrpc::parse`] accepted; `Err` when
/// the tree cannot be built (the loose reader skips values it does not keep, so a lone
/// surrogate or a deep nesting in `arguments` passes it and fails here).
pub(super) fn params_of(
    bytes: &[u8],
    batch: bool,
) -> Result<Vec<Option<Value>>, serde_json::Error> {
    let value = serde_json::from_slice::<Value>(bytes)?;
    let mut take = |mut m: Value| m.get_mut("params").map(Value::take);
    Ok(match (value, batch) {
        (Value::Array(items), true) => items.into_iter().map(&mut take).collect(),
        (m, _) => vec![take(m)],
    })
}

/// Judges `tools/list` answers with the registry, and reports each new change once: a WARN
/// line, `gate_tool_changes_total{kind}`, an audit record (`method` tools/list, `tool`, `rule`
/// `tools:pin`, `decision` refused when the tool was hidden).
#[derive(Debug)]
struct ListJudge {
    registry: Arc<Registry>,
    metrics: Arc<GateMetrics>,
    audit: Option<AuditLog>,
    base: Record,
}

impl Judge for ListJudge {
    fn judge(&self, result: &mut Value, first_page: bool) -> bool {
        let obs = self.registry.observe(result, first_page);
        let hiding = self.registry.settings().on_change == OnChange::Refuse;
        for change in &obs.new_changes {
            self.metrics.tool_change(change.kind());
            let what = describe(change);
            let hidden = hiding && !matches!(change, Change::Removed { .. });
            warn!(tool = %change.name(), change = change.kind(), hidden, detail = %what,
                "Tool differs from its pin");
            if let Some(audit) = &self.audit {
                audit.write(&Record {
                    method: Some("tools/list".to_owned()),
                    tool: Some(change.name().to_owned()),
                    decision: if hidden {
                        Decision::Refused
                    } else {
                        Decision::Allowed
                    },
                    rule: Some("tools:pin".to_owned()),
                    reason: Some(what),
                    status: 200,
                    ..self.base.clone()
                });
            }
        }
        !obs.hidden.is_empty()
    }
}

/// A change in words, for the log and the audit record.
fn describe(c: &Change) -> String {
    match c {
        Change::Added { .. } => "added: listed, not pinned".to_owned(),
        Change::Removed { .. } => "removed: pinned, no longer listed".to_owned(),
        Change::Changed { fields, .. } => format!(
            "changed: {}",
            fields
                .iter()
                .map(|f| f.field)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
