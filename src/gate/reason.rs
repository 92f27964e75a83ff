//! The labels the gate counts by: why a request was refused and why a token was not
//! accepted. A leaf, so that the metrics, the refusals and the token checks all name the
//! same enums without importing one another.

/// Why the gate refused an HTTP request: the `reason` label of `gate_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// 401: no token, or one not accepted.
    Unauthorized,
    /// 403: the token lacks a scope (`required-scopes`, or a rule's).
    InsufficientScope,
    /// 403: a rule refused a message.
    Rule,
    /// 400: `Mcp-Method`/`Mcp-Name` disagree with the body.
    HeaderMismatch,
    /// 400: the body is not JSON (or could not be read).
    ParseError,
    /// 400: the body is JSON but not JSON-RPC.
    InvalidRequest,
    /// 413: the body is larger than `max-body-bytes`.
    BodyTooLarge,
    /// 429: a rate limit.
    RateLimited,
    /// 408: the body did not arrive whole within `request-body-timeout`.
    BodyTimeout,
    /// 503: `max-buffered-body-bytes` is taken by other requests.
    BodyBudget,
    /// 503: `max-inflight-per-connection` requests of this connection are in the gate.
    Inflight,
    /// 429, unread: the address caused more than `refusals-per-ip-per-minute` refusals.
    RefusalFlood,
    /// 503: `[audit] fail-closed` and the audit queue has no room for the call's records.
    AuditFull,
    /// 405: a method other than POST with a body, which the gate does not inspect.
    MethodNotAllowed,
}

impl RefusalReason {
    /// Every reason, in label order.
    pub const ALL: [RefusalReason; 14] = [
        Self::Unauthorized,
        Self::InsufficientScope,
        Self::Rule,
        Self::HeaderMismatch,
        Self::ParseError,
        Self::InvalidRequest,
        Self::BodyTooLarge,
        Self::RateLimited,
        Self::BodyTimeout,
        Self::BodyBudget,
        Self::Inflight,
        Self::RefusalFlood,
        Self::AuditFull,
        Self::MethodNotAllowed,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::InsufficientScope => "insufficient_scope",
            Self::Rule => "rule",
            Self::HeaderMismatch => "header_mismatch",
            Self::ParseError => "parse_error",
            Self::InvalidRequest => "invalid_request",
            Self::BodyTooLarge => "body_too_large",
            Self::RateLimited => "rate_limited",
            Self::BodyTimeout => "body_timeout",
            Self::BodyBudget => "body_budget",
            Self::Inflight => "inflight",
            Self::RefusalFlood => "refusal_flood",
            Self::AuditFull => "audit_full",
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// Whether the refusal counts against the address (`refusals-per-ip-per-minute`): not
    /// when the gate itself is short (body budget, audit queue) or the client is only busy
    /// (its connection's in-flight cap, a rate limit): neither is a hostile request, and
    /// through a tunnel every client of a host shares one address.
    pub(super) fn counts_against_address(self) -> bool {
        !matches!(
            self,
            Self::BodyBudget | Self::AuditFull | Self::Inflight | Self::RateLimited
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

/// Why a bearer token was not accepted, as a label: the `kind` of
/// `gate_token_failures_total`, one per [`TokenError`](super::auth::TokenError) variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenFailure {
    /// `missing`: no bearer token.
    Missing,
    /// `malformed`: not a JWT.
    Malformed,
    /// `algorithm_not_allowed`.
    AlgorithmNotAllowed,
    /// `unknown_kid`.
    UnknownKid,
    /// `bad_signature`.
    BadSignature,
    /// `expired`.
    Expired,
    /// `not_yet_valid`.
    NotYetValid,
    /// `wrong_issuer`.
    WrongIssuer,
    /// `wrong_audience`.
    WrongAudience,
    /// `missing_claim`.
    MissingClaim,
    /// `no_keys`.
    NoKeys,
    /// `wrong_type`.
    WrongType,
    /// `crit`.
    Crit,
    /// `bad_scope`.
    BadScope,
}

impl TokenFailure {
    /// Every kind, in label order.
    pub const ALL: [TokenFailure; 14] = [
        Self::Missing,
        Self::Malformed,
        Self::AlgorithmNotAllowed,
        Self::UnknownKid,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::MissingClaim,
        Self::NoKeys,
        Self::WrongType,
        Self::Crit,
        Self::BadScope,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::UnknownKid => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
            Self::NoKeys => "no_keys",
            Self::WrongType => "wrong_type",
            Self::Crit => "crit",
            Self::BadScope => "bad_scope",
        }
    }
}

impl std::fmt::Display for TokenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}
