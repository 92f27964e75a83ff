//! The labels the gate counts by: why a request was refused, why a token was not accepted,
//! how a call held for approval ended. A leaf, so that the metrics, the refusals and the token checks all name the
//! same enums without importing one another. Each is declared by `label_enum!`, so its
//! `ALL`, `COUNT` and labels come from the one list of variants.

use crate::label::label_enum;

label_enum! {
    /// Why the gate refused an HTTP request: the `reason` label of `gate_refusals_total`.
    #[non_exhaustive]
    pub enum RefusalReason {
        /// 401: no token, or one not accepted.
        Unauthorized => "unauthorized",
        /// 403: the token lacks a scope (`required-scopes`, or a rule's).
        InsufficientScope => "insufficient_scope",
        /// 403: a rule refused a message.
        Rule => "rule",
        /// 400: `Mcp-Method`/`Mcp-Name` disagree with the body.
        HeaderMismatch => "header_mismatch",
        /// 400: the body is not JSON (or could not be read).
        ParseError => "parse_error",
        /// 400: the body is JSON but not JSON-RPC.
        InvalidRequest => "invalid_request",
        /// 413: the body is larger than `max-body-bytes`.
        BodyTooLarge => "body_too_large",
        /// 429: a rate limit.
        RateLimited => "rate_limited",
        /// 408: the body did not arrive whole within `request-body-timeout`.
        BodyTimeout => "body_timeout",
        /// 503: `max-buffered-body-bytes` is taken by other requests.
        BodyBudget => "body_budget",
        /// 503: `max-inflight-per-connection` requests of this connection are in the gate.
        Inflight => "inflight",
        /// 429, unread: the address caused more than `refusals-per-ip-per-minute` refusals.
        RefusalFlood => "refusal_flood",
        /// 503: `[audit] fail-closed` and the audit queue has no room for the call's records.
        AuditFull => "audit_full",
        /// 405: a method other than POST with a body, which the gate does not inspect.
        MethodNotAllowed => "method_not_allowed",
        /// 403: a `tools/call` to a tool that is new or differs from its pin (`[tools]`).
        ToolPin => "tool_pin",
        /// -32602: a `tools/call` to a tool neither pinned nor listed (`unknown-tools`).
        UnknownTool => "unknown_tool",
        /// -32602: `tools/call` arguments that fail the tool's inputSchema, or a tool whose
        /// schema the gate will not compile (`validate-arguments`).
        InvalidArguments => "invalid_arguments",
        /// 503: `[approvals] max-pending` (or `max-pending-per-caller`) calls are held.
        ApprovalsFull => "approvals_full",
        /// -32010: an approver denied a held call.
        ApprovalDenied => "approval_denied",
        /// -32010: no approver decided a held call within its `approval-timeout`.
        ApprovalExpired => "approval_expired",
        /// 503: `[fleet] on-failure = "refuse"` and Redis did not answer in time.
        FleetUnavailable => "fleet_unavailable",
        /// -32010: the replica is shutting down; a held call, never sent, is ended for its
        /// client to retry elsewhere.
        ShuttingDown => "shutting_down",
    }
}

impl RefusalReason {
    /// Whether the refusal counts against the address (`refusals-per-ip-per-minute`): not
    /// when the gate itself is short (body budget, audit queue) or the client is only busy
    /// (its connection's in-flight cap, a rate limit): neither is a hostile request, and
    /// through a tunnel every client of a host shares one address.
    pub(super) fn counts_against_address(self) -> bool {
        !matches!(
            self,
            Self::BodyBudget
                | Self::AuditFull
                | Self::Inflight
                | Self::RateLimited
                | Self::ApprovalsFull
                | Self::ApprovalDenied
                | Self::ApprovalExpired
                | Self::FleetUnavailable
                | Self::ShuttingDown
        )
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl serde::Serialize for RefusalReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

label_enum! {
    /// Why a bearer token was not accepted, as a label: the `kind` of
    /// `gate_token_failures_total`, one per [`TokenError`](super::auth::TokenError) variant.
    #[non_exhaustive]
    pub enum TokenFailure {
        /// `missing`: no bearer token.
        Missing => "missing",
        /// `malformed`: not a JWT.
        Malformed => "malformed",
        /// `algorithm_not_allowed`.
        AlgorithmNotAllowed => "algorithm_not_allowed",
        /// `unknown_kid`.
        UnknownKid => "unknown_kid",
        /// `bad_signature`.
        BadSignature => "bad_signature",
        /// `expired`.
        Expired => "expired",
        /// `not_yet_valid`.
        NotYetValid => "not_yet_valid",
        /// `wrong_issuer`.
        WrongIssuer => "wrong_issuer",
        /// `wrong_audience`.
        WrongAudience => "wrong_audience",
        /// `missing_claim`.
        MissingClaim => "missing_claim",
        /// `no_keys`.
        NoKeys => "no_keys",
        /// `wrong_type`.
        WrongType => "wrong_type",
        /// `crit`.
        Crit => "crit",
        /// `bad_scope`.
        BadScope => "bad_scope",
    }
}

impl std::fmt::Display for TokenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

label_enum! {
    /// How a call held for approval ended: the `outcome` label of
    /// `gate_approval_decisions_total`.
    #[non_exhaustive]
    pub enum Outcome {
        /// An approver approved it: it went upstream.
        Approved => "approved",
        /// An approver denied it.
        Denied => "denied",
        /// Its deadline passed undecided: denied.
        Expired => "expired",
        /// Its client left while it was held.
        Cancelled => "cancelled",
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}
