//! The gate's sections of the server sidecar's TOML (`[auth]`, `[[rules]]`,
//! `[[rate-limit]]`, `[audit]`) as written, and their validation into a [`GateConfig`].
//! Every error names the field (`rules[2].tool`) and what would be accepted.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::Uri;
use serde::Deserialize;

use super::approval::{self, ApprovalLimits, ApprovalRule, Approver};
use super::audit::AuditSettings;
use super::auth::{AuthSettings, JwksSource, KeySet, DEFAULT_JWKS_REFRESH, DEFAULT_LEEWAY};
use super::rate::{KeyKind, Limit};
use super::rules::{Glob, Rule};
use super::tools::{OnChange, PinsError, Registry, ToolsSettings, UnknownTools};
use crate::certs::load_roots;
use crate::policy::PolicyMode;
use crate::tls::{ClientTlsConfig, PqConnector, Trust};
use crate::value::Dur;

/// `[auth]` as written: OAuth 2.1 resource-server checks.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthSection {
    /// A JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (`https://`, or `http://` on loopback).
    pub jwks_url: Option<String>,
    /// Time between JWKS refreshes. Default is 5m.
    pub jwks_refresh: Option<Dur>,
    /// CAs to trust for `jwks-url` (default: system roots).
    pub jwks_ca: Option<PathBuf>,
    /// The `iss` tokens must carry.
    pub issuer: Option<String>,
    /// This server's resource URI; `aud` must contain it.
    pub audience: Option<String>,
    /// `authorization_servers` of the metadata document. Default is `[issuer]`.
    pub authorization_servers: Option<Vec<String>>,
    /// Public URL of the metadata document. Default is derived from `audience`.
    pub resource_metadata_url: Option<String>,
    /// Scopes every token must carry. Default is none.
    pub required_scopes: Option<Vec<String>>,
    /// Clock-skew allowance on `exp`/`nbf`. Default is 60s.
    pub leeway: Option<Dur>,
    /// Send the client's `Authorization` upstream. Default is false.
    pub forward_token: Option<bool>,
    /// The JOSE `typ` tokens must carry (RFC 9068 access tokens: `at+jwt`), compared
    /// without case and with or without `application/`. Default is none (not checked).
    pub required_typ: Option<String>,
}

/// One `[[rules]]` entry as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RuleSection {
    /// Name in refusals, audit records and metrics. Default is `rules[N]`.
    pub name: Option<String>,
    /// JSON-RPC method glob. Default is `tools/call` when `tool` is set.
    pub method: Option<String>,
    /// Tool name glob (tools/call only).
    pub tool: Option<String>,
    /// Refuse every match.
    pub deny: Option<bool>,
    /// Refuse over a classical group.
    pub require_pq: Option<bool>,
    /// Only these mTLS identities (globs).
    pub allow_identities: Option<Vec<String>>,
    /// Only these token subjects (globs).
    pub allow_subjects: Option<Vec<String>>,
    /// Scopes the token must carry.
    pub scopes: Option<Vec<String>>,
    /// Hold each matching call until an approver approves it. Default is false.
    pub require_approval: Option<bool>,
    /// Who may approve: `scope:NAME` (a token scope), `id:PATTERN` (a client identity).
    pub approvers: Option<Vec<String>>,
    /// How long a held call waits before it is denied. Default is 5m.
    pub approval_timeout: Option<Dur>,
}

/// `[fleet]` as written: the rate limits a fleet of replicas shares on Redis.
#[cfg(feature = "fleet")]
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FleetSection {
    /// `redis://[user:password@]host:port[/db]`. Required.
    pub redis: Option<String>,
    /// What one charge may take. Default is 50ms.
    pub timeout: Option<Dur>,
    /// `local` or `refuse`. Default is `local`.
    pub on_failure: Option<super::fleet::OnFailure>,
    /// Prefix of every key the fleet writes. Default is `mcp-pqtls`.
    pub key_prefix: Option<String>,
}

/// `[approvals]` as written: how many calls may wait for approval.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ApprovalsSection {
    /// Calls held at once, all callers. Default is 64.
    pub max_pending: Option<usize>,
    /// Calls held at once for one caller. Default is 4.
    pub max_pending_per_caller: Option<usize>,
    /// How often a held SSE response gets a keep-alive comment. Default is 15s.
    pub keepalive: Option<Dur>,
}

/// One `[[rate-limit]]` entry as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RateLimitSection {
    /// Name in 429s, audit records and metrics. Default is `rate-limit[N]`.
    pub name: Option<String>,
    /// Method glob: the class this limit counts. Default is `*`.
    pub method: Option<String>,
    /// `identity`, `subject` or `address`. Default is `identity`.
    pub key: Option<KeyKind>,
    /// Sustained rate. Required.
    pub per_minute: Option<u32>,
    /// Bucket size. Default is `per-minute`.
    pub burst: Option<u32>,
}

/// `[audit]` as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuditSection {
    /// A JSON-lines file, or `-` for stdout. Required.
    pub path: Option<PathBuf>,
    /// Record each JSON-RPC message. Default is false.
    pub include_bodies: Option<bool>,
    /// Record bearer tokens. Default is false.
    pub include_tokens: Option<bool>,
    /// Refuse calls (503) rather than let their records be dropped when the writer is
    /// behind. Default is false (records are dropped, with an ERROR line and a metric).
    pub fail_closed: Option<bool>,
    /// Records queued for the writer at most. Default is 8192.
    pub queue_records: Option<usize>,
}

/// `[tools]` as written: tool pinning and argument validation.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ToolsSection {
    /// The approved tools, as `mcp-pqtls tools pin` writes them.
    pub pin_file: Option<PathBuf>,
    /// `refuse` or `warn`. Default is `refuse`.
    pub on_change: Option<OnChange>,
    /// Pin the first listing into `pin-file` when it does not exist. Default is false.
    pub trust_on_first_use: Option<bool>,
    /// `refuse` or `allow`. Default is `refuse`.
    pub unknown_tools: Option<UnknownTools>,
    /// Validate `tools/call` arguments against the tool's inputSchema. Default is false.
    pub validate_arguments: Option<bool>,
}

/// A TOML value that may be one table or an array of tables (`[rate-limit]` or
/// `[[rate-limit]]`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|t| OneOrMany(vec![t]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany)
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// The gate's sections as written, borrowed from the sidecar config.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sections<'a> {
    /// `[auth]`.
    pub auth: Option<&'a AuthSection>,
    /// `[[rules]]`.
    pub rules: Option<&'a [RuleSection]>,
    /// `[[rate-limit]]`.
    pub rate_limit: Option<&'a [RateLimitSection]>,
    /// `[audit]`.
    pub audit: Option<&'a AuditSection>,
    /// `[tools]`.
    pub tools: Option<&'a ToolsSection>,
    /// `[approvals]`.
    pub approvals: Option<&'a ApprovalsSection>,
    /// `[fleet]`.
    #[cfg(feature = "fleet")]
    pub fleet: Option<&'a FleetSection>,
}

/// The gate, validated: what [`super::Gate::new`] runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GateConfig {
    /// Token checks.
    pub auth: Option<AuthSettings>,
    /// Per-method rules, first match wins.
    pub rules: Vec<Rule>,
    /// Rate limits, first match per message.
    pub limits: Vec<Limit>,
    /// The audit log.
    pub audit: Option<AuditSettings>,
    /// Tool pinning and argument validation.
    pub tools: Option<ToolsSettings>,
    /// How many calls may wait for approval (`require-approval` rules).
    pub approvals: ApprovalLimits,
    /// The rate limits shared by a fleet on Redis.
    #[cfg(feature = "fleet")]
    pub fleet: Option<super::fleet::FleetSettings>,
    /// Largest request body the gate reads (the sidecar's `max-body-bytes`).
    pub max_body_bytes: u64,
    /// What the gate may hold and how long it waits, whatever the sections say.
    pub budgets: GateBudgets,
}

/// The gate's budgets against hostile clients, each on by default (the sidecar's top-level
/// keys of the same names).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateBudgets {
    /// `max-buffered-body-bytes`: request-body bytes the gate holds across all connections,
    /// taken before reading; beyond it 503 with `Retry-After`. Default 64 MiB.
    pub max_buffered_body_bytes: u64,
    /// `request-body-timeout`: time a request body gets to arrive whole; beyond it 408.
    /// Default 30 s.
    pub request_body_timeout: std::time::Duration,
    /// `max-inflight-per-connection`: gated requests of one connection between admission
    /// and response head; beyond it 503. Default 256; the sidecar's default is its
    /// `max-concurrent-streams`,
    /// so a tunnel that fills its connection is not refused before it opens another.
    pub max_inflight_per_connection: usize,
    /// `refusals-per-ip-per-minute`: refused requests an address (IPv6: its
    /// `ipv6-prefix`) may cause per minute before its next ones are refused unread (429),
    /// with neither a log line nor an audit record each. Default 600.
    pub refusals_per_ip_per_minute: u32,
    /// `ipv6-prefix`: the prefix an IPv6 client is keyed under, by the rate limits too.
    /// Default 64.
    pub ipv6_prefix: u8,
}

impl Default for GateBudgets {
    fn default() -> Self {
        Self {
            max_buffered_body_bytes: 64 * 1024 * 1024,
            request_body_timeout: std::time::Duration::from_secs(30),
            max_inflight_per_connection: 256,
            refusals_per_ip_per_minute: 600,
            ipv6_prefix: 64,
        }
    }
}

impl GateConfig {
    /// Validates the sections; `None` when none is present (the gate is off). `mtls` says
    /// whether client certificates are required (`client-ca`), which identities need.
    pub fn resolve(
        s: Sections<'_>,
        mtls: bool,
        max_body_bytes: u64,
    ) -> Result<Option<Self>, GateConfigError> {
        if s.auth.is_none()
            && s.rules.is_none()
            && s.rate_limit.is_none()
            && s.audit.is_none()
            && s.tools.is_none()
            && s.approvals.is_none()
            && !s.has_fleet()
        {
            return Ok(None);
        }
        let has_auth = s.auth.is_some();
        let rules = s
            .rules
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, r)| rule(i, r, has_auth, mtls))
            .collect::<Result<Vec<_>, _>>()?;
        unique_names(rules.iter().map(|r| r.name.as_str()), "rules")?;
        let limits = s
            .rate_limit
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, l)| limit(i, l, has_auth))
            .collect::<Result<Vec<_>, _>>()?;
        unique_names(limits.iter().map(|l| l.name.as_str()), "rate-limit")?;
        let auth = s.auth.map(|a| auth(a, &rules)).transpose()?;
        let audit = s.audit.map(audit).transpose()?;
        let tools = s.tools.map(tools).transpose()?;
        let approvals = approvals(s.approvals)?;
        #[cfg(feature = "fleet")]
        let holds = rules.iter().any(|r| r.approval.is_some())
            || tools.as_ref().is_some_and(|t| t.trust_on_first_use);
        #[cfg(feature = "fleet")]
        let fleet = s.fleet.map(|f| fleet(f, &limits, holds)).transpose()?;
        Ok(Some(Self {
            #[cfg(feature = "fleet")]
            fleet,
            auth,
            rules,
            limits,
            audit,
            tools,
            approvals,
            max_body_bytes,
            budgets: GateBudgets::default(),
        }))
    }

    /// One line on what the gate does, for `check-config` and the start-up line.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = &self.auth {
            parts.push(format!("auth (audience {})", a.audience));
        }
        let held = self.rules.iter().filter(|r| r.approval.is_some()).count();
        match (self.rules.len(), held) {
            (0, _) => {}
            (n, 0) => parts.push(format!("{n} rules")),
            (n, held) => parts.push(format!("{n} rules ({held} requiring approval)")),
        }
        if !self.limits.is_empty() {
            parts.push(format!("{} rate limits", self.limits.len()));
        }
        #[cfg(feature = "fleet")]
        if let Some(f) = &self.fleet {
            parts.push(format!(
                "rate limits shared on {} (on-failure {})",
                f.shown(),
                f.on_failure.name()
            ));
        }
        if let Some(a) = &self.audit {
            parts.push(format!("audit to {}", a.path.display()));
        }
        if let Some(t) = &self.tools {
            parts.push(match &t.pin_file {
                Some(p) => format!(
                    "tools pinned by {} (on-change {})",
                    p.display(),
                    t.on_change.name()
                ),
                None => "tools (unpinned)".to_owned(),
            });
            if t.validate_arguments {
                parts.push("arguments validated".to_owned());
            }
        }
        format!("gate: {}", parts.join(", "))
    }
}

/// A gate section that cannot be used: the field, with its section and index
/// (`rules[2].tool`, `auth.jwks-url`), and what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
#[non_exhaustive]
pub struct GateConfigError {
    /// The field, with its section and index.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn field(field: impl Into<String>, message: impl Into<String>) -> GateConfigError {
    GateConfigError {
        field: field.into(),
        message: message.into(),
    }
}

fn glob(f: &str, pattern: &str) -> Result<Glob, GateConfigError> {
    Glob::new(pattern).map_err(|e| field(f, e.to_string()))
}

fn globs(f: &str, patterns: &Option<Vec<String>>) -> Result<Vec<Glob>, GateConfigError> {
    patterns.iter().flatten().map(|p| glob(f, p)).collect()
}

fn name(f: String, written: &Option<String>, default: String) -> Result<String, GateConfigError> {
    match written {
        None => Ok(default),
        Some(n) if n.is_empty() || n.chars().any(|c| c.is_control() || c == '"' || c == '\\') => {
            Err(field(f, format!("{n:?}: a name must be non-empty, without quotes, backslashes or control characters")))
        }
        Some(n) => Ok(n.clone()),
    }
}

fn unique_names<'a>(
    names: impl Iterator<Item = &'a str>,
    section: &str,
) -> Result<(), GateConfigError> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(field(
                format!("{section}.name"),
                format!("`{n}` is used twice; names must be unique"),
            ));
        }
    }
    Ok(())
}

fn scopes(f: &str, list: &Option<Vec<String>>) -> Result<Vec<String>, GateConfigError> {
    let list = list.clone().unwrap_or_default();
    if let Some(bad) = list
        .iter()
        .find(|s| s.is_empty() || s.contains(char::is_whitespace) || s.contains('"'))
    {
        return Err(field(
            f,
            format!("{bad:?} is not a scope (no spaces, quotes or empty strings)"),
        ));
    }
    Ok(list)
}

fn rule(i: usize, r: &RuleSection, has_auth: bool, mtls: bool) -> Result<Rule, GateConfigError> {
    let at = |k: &str| format!("rules[{i}].{k}");
    let method = match (&r.method, &r.tool) {
        (Some(m), _) => glob(&at("method"), m)?,
        (None, Some(_)) => glob(&at("method"), "tools/call")?,
        (None, None) => {
            return Err(field(
                format!("rules[{i}]"),
                "set method (\"*\" for every method) or tool",
            ))
        }
    };
    let tool = r
        .tool
        .as_deref()
        .map(|t| glob(&at("tool"), t))
        .transpose()?;
    if tool.is_some() && !method.matches("tools/call") {
        return Err(field(at("tool"), format!("only tools/call has a tool, and method `{method}` does not match it; drop tool or set method = \"tools/call\"")));
    }
    let scopes = scopes(&at("scopes"), &r.scopes)?;
    if !has_auth && !scopes.is_empty() {
        return Err(field(
            at("scopes"),
            "scopes come from bearer tokens: add an [auth] section, or remove scopes",
        ));
    }
    let allow_subjects = globs(&at("allow-subjects"), &r.allow_subjects)?;
    if !has_auth && !allow_subjects.is_empty() {
        return Err(field(
            at("allow-subjects"),
            "subjects come from bearer tokens: add an [auth] section, or remove allow-subjects",
        ));
    }
    let allow_identities = globs(&at("allow-identities"), &r.allow_identities)?;
    if !mtls && !allow_identities.is_empty() {
        return Err(field(at("allow-identities"), "client identities come from client certificates: set client-ca, or remove allow-identities"));
    }
    let approval = approval(i, r, has_auth, mtls, r.deny.unwrap_or(false), &method)?;
    Ok(Rule {
        name: name(at("name"), &r.name, format!("rules[{i}]"))?,
        method,
        tool,
        deny: r.deny.unwrap_or(false),
        require_pq: r.require_pq.unwrap_or(false),
        allow_identities,
        allow_subjects,
        scopes,
        approval,
    })
}

fn approval(
    i: usize,
    r: &RuleSection,
    has_auth: bool,
    mtls: bool,
    deny: bool,
    method: &Glob,
) -> Result<Option<ApprovalRule>, GateConfigError> {
    let at = |k: &str| format!("rules[{i}].{k}");
    if !r.require_approval.unwrap_or(false) {
        for (key, set) in [
            ("approvers", r.approvers.is_some()),
            ("approval-timeout", r.approval_timeout.is_some()),
        ] {
            if set {
                return Err(field(at(key), "only a rule with require-approval = true has approvers; set it, or remove this key"));
            }
        }
        return Ok(None);
    }
    if deny {
        return Err(field(
            at("require-approval"),
            "a deny rule refuses every call; remove deny or require-approval",
        ));
    }
    if !method.matches("tools/call") || method.to_string() != "tools/call" {
        return Err(field(at("require-approval"), "approval holds tools/call only (a person decides a tool call, with its arguments); set tool, or method = \"tools/call\""));
    }
    let written = r.approvers.as_deref().unwrap_or_default();
    if written.is_empty() {
        return Err(field(at("approvers"), "say who may approve: [\"scope:NAME\"] (a bearer token from the gate's JWKS with that scope) or [\"id:PATTERN\"] (an mTLS client identity)"));
    }
    let approvers = written
        .iter()
        .map(|a| Approver::parse(a).map_err(|e| field(at("approvers"), e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    for a in &approvers {
        match a {
            Approver::Scope(_) if !has_auth => return Err(field(at("approvers"), format!("`{a}`: approvers' scopes come from bearer tokens verified with the gate's JWKS: add an [auth] section, or use id:PATTERN"))),
            Approver::Identity(_) if !mtls => return Err(field(at("approvers"), format!("`{a}`: approvers' identities come from client certificates: set client-ca (and admin-tls), or use scope:NAME"))),
            _ => {}
        }
    }
    let timeout = r
        .approval_timeout
        .map_or(approval::DEFAULT_TIMEOUT, |d| d.0);
    if timeout.is_zero() || timeout > std::time::Duration::from_secs(24 * 3600) {
        return Err(field(
            at("approval-timeout"),
            "must be more than 0s and at most 24h: a held call holds a connection",
        ));
    }
    Ok(Some(ApprovalRule { approvers, timeout }))
}

impl Sections<'_> {
    fn has_fleet(&self) -> bool {
        #[cfg(feature = "fleet")]
        return self.fleet.is_some();
        #[cfg(not(feature = "fleet"))]
        return false;
    }
}

#[cfg(feature = "fleet")]
fn fleet(
    f: &FleetSection,
    limits: &[Limit],
    holds: bool,
) -> Result<super::fleet::FleetSettings, GateConfigError> {
    let url = f.redis.clone().ok_or_else(|| {
        field(
            "fleet.redis",
            "required: redis://HOST:PORT of the Redis the replicas share",
        )
    })?;
    if url.starts_with("rediss://") {
        return Err(field("fleet.redis", "TLS to Redis is not built in: use a Redis on the replica's host or private network (redis://), or a TLS tunnel to it"));
    }
    if !url.starts_with("redis://") && !url.starts_with("unix://") {
        return Err(field(
            "fleet.redis",
            format!("`{url}`: give redis://[user:password@]HOST:PORT[/DB] or unix:///PATH"),
        ));
    }
    if let Err(e) = redis::Client::open(url.as_str()) {
        return Err(field("fleet.redis", format!("not a Redis URL: {e}")));
    }
    if limits.is_empty() && !holds {
        return Err(field(
            "fleet",
            "the fleet shares rate limits, approvals and first-use tool pins: add a [[rate-limit]], a require-approval rule or [tools] trust-on-first-use, or remove [fleet]",
        ));
    }
    let timeout = f.timeout.map_or(super::fleet::DEFAULT_TIMEOUT, |d| d.0);
    if timeout.is_zero() || timeout > std::time::Duration::from_secs(5) {
        return Err(field("fleet.timeout", "must be more than 0s and at most 5s: every rate-limited request waits for it when Redis is slow"));
    }
    let key_prefix = f
        .key_prefix
        .clone()
        .unwrap_or_else(|| "mcp-pqtls".to_owned());
    if key_prefix.is_empty() || key_prefix.contains(char::is_whitespace) {
        return Err(field(
            "fleet.key-prefix",
            "one non-empty word: every key the fleet writes starts with it",
        ));
    }
    Ok(super::fleet::FleetSettings {
        redis: url,
        timeout,
        on_failure: f.on_failure.unwrap_or(super::fleet::OnFailure::Local),
        key_prefix,
    })
}

fn approvals(a: Option<&ApprovalsSection>) -> Result<ApprovalLimits, GateConfigError> {
    let d = ApprovalLimits::default();
    let Some(a) = a else { return Ok(d) };
    let positive = |v: Option<usize>, default: usize, key: &str| {
        match v {
        Some(0) => Err(field(
            format!("approvals.{key}"),
            "must be at least 1 (no calls at all can be held otherwise); remove require-approval from the rules instead",
        )),
        Some(n) => Ok(n),
        None => Ok(default),
    }
    };
    let keepalive = a.keepalive.map_or(d.keepalive, |k| k.0);
    if keepalive < std::time::Duration::from_secs(1) {
        return Err(field(
            "approvals.keepalive",
            "must be at least 1s (a comment a second keeps any proxy's idle timer from firing)",
        ));
    }
    Ok(ApprovalLimits {
        max_pending: positive(a.max_pending, d.max_pending, "max-pending")?,
        max_pending_per_caller: positive(
            a.max_pending_per_caller,
            d.max_pending_per_caller,
            "max-pending-per-caller",
        )?,
        keepalive,
    })
}

fn limit(i: usize, l: &RateLimitSection, has_auth: bool) -> Result<Limit, GateConfigError> {
    let at = |k: &str| format!("rate-limit[{i}].{k}");
    let per_minute = match l.per_minute {
        None => {
            return Err(field(
                at("per-minute"),
                "required: requests per minute, e.g. per-minute = 120",
            ))
        }
        Some(0) => return Err(field(at("per-minute"), "must be greater than 0")),
        Some(n) => n,
    };
    let burst = match l.burst {
        Some(0) => return Err(field(at("burst"), "must be greater than 0")),
        b => b.unwrap_or(per_minute),
    };
    let key = l.key.unwrap_or(KeyKind::Identity);
    if key == KeyKind::Subject && !has_auth {
        return Err(field(at("key"), "subject comes from bearer tokens: add an [auth] section, or use key = \"identity\" or \"address\""));
    }
    Ok(Limit {
        name: name(at("name"), &l.name, format!("rate-limit[{i}]"))?,
        method: glob(&at("method"), l.method.as_deref().unwrap_or("*"))?,
        key,
        per_minute,
        burst,
    })
}

fn tools(t: &ToolsSection) -> Result<ToolsSettings, GateConfigError> {
    let trust_on_first_use = t.trust_on_first_use.unwrap_or(false);
    let settings = ToolsSettings {
        pin_file: t.pin_file.clone(),
        on_change: t.on_change.unwrap_or_default(),
        trust_on_first_use,
        unknown_tools: t.unknown_tools.unwrap_or_default(),
        validate_arguments: t.validate_arguments.unwrap_or(false),
    };
    if trust_on_first_use && t.pin_file.is_none() {
        return Err(field(
            "tools.trust-on-first-use",
            "pins what it first sees into pin-file: set pin-file = \"/var/lib/mcp-pqtls/tools.pin.json\", say",
        ));
    }
    // Read now, so that check-config and the start refuse a file the gate could not use.
    Registry::new(settings.clone()).map_err(|e| match e {
        PinsError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => field(
            "tools.pin-file",
            format!("{}: no such file; write it with `mcp-pqtls tools pin URL > FILE`, or set trust-on-first-use = true to pin the first listing", t.pin_file.as_deref().unwrap_or(Path::new("")).display()),
        ),
        e => field("tools.pin-file", e.to_string()),
    })?;
    Ok(settings)
}

fn audit(a: &AuditSection) -> Result<AuditSettings, GateConfigError> {
    let path = a.path.clone().ok_or_else(|| {
        field(
            "audit.path",
            "required: a file to append JSON lines to, or \"-\" for stdout",
        )
    })?;
    if path != Path::new("-") {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(field(
                "audit.path",
                format!(
                    "{}: directory {} does not exist",
                    path.display(),
                    dir.display()
                ),
            ));
        }
    }
    Ok(AuditSettings {
        path,
        include_bodies: a.include_bodies.unwrap_or(false),
        include_tokens: a.include_tokens.unwrap_or(false),
        fail_closed: a.fail_closed.unwrap_or(false),
        queue: match a.queue_records {
            Some(0) => return Err(field("audit.queue-records", "must be greater than 0")),
            n => n.unwrap_or(super::audit::DEFAULT_QUEUE),
        },
    })
}

fn absolute_url(f: &str, s: &str) -> Result<Uri, GateConfigError> {
    let uri: Uri = s
        .parse()
        .map_err(|_| field(f, format!("`{s}` is not a URL")))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("https" | "http"), Some(_)) => Ok(uri),
        _ => Err(field(
            f,
            format!("`{s}`: give an absolute http(s) URL such as https://mcp.example.com/mcp"),
        )),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = crate::tls::bare_host(host);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn auth(a: &AuthSection, rules: &[Rule]) -> Result<AuthSettings, GateConfigError> {
    let issuer = match &a.issuer {
        Some(i) if !i.is_empty() => i.clone(),
        _ => return Err(field("auth.issuer", "required: the `iss` your identity provider puts in tokens, e.g. issuer = \"https://idp.example.com\"")),
    };
    let audience_text = a.audience.clone().ok_or_else(|| {
        field(
            "auth.audience",
            "required: this server's resource URI, e.g. audience = \"https://mcp.example.com/mcp\"",
        )
    })?;
    let audience = absolute_url("auth.audience", &audience_text)?;
    let resource_metadata_url = match &a.resource_metadata_url {
        Some(u) => absolute_url("auth.resource-metadata-url", u)?.to_string(),
        None => AuthSettings::default_metadata_url(&audience),
    };
    let (jwks, initial_keys) = match (&a.jwks_file, &a.jwks_url) {
        (Some(_), Some(_)) => return Err(field("auth.jwks-file", "give jwks-file or jwks-url, not both")),
        (None, None) => return Err(field("auth", "set jwks-file (a JWKS on disk) or jwks-url (where your identity provider publishes it)")),
        (Some(path), None) => {
            if a.jwks_ca.is_some() {
                return Err(field("auth.jwks-ca", "only applies to jwks-url; remove it"));
            }
            let bytes = std::fs::read(path)
                .map_err(|e| field("auth.jwks-file", format!("{}: {e}", path.display())))?;
            let keys = KeySet::parse(&bytes)
                .map_err(|e| field("auth.jwks-file", format!("{}: {e}", path.display())))?;
            (JwksSource::File(path.clone()), Some(keys))
        }
        (None, Some(url)) => {
            let uri = absolute_url("auth.jwks-url", url)?;
            let connector = match uri.scheme_str() {
                Some("https") => Some(jwks_connector(a.jwks_ca.as_deref())?),
                _ if is_loopback(uri.host().unwrap_or_default()) => {
                    if a.jwks_ca.is_some() {
                        return Err(field("auth.jwks-ca", "only applies to an https:// jwks-url; remove it"));
                    }
                    None
                }
                _ => return Err(field("auth.jwks-url", format!("`{url}`: keys fetched in plain HTTP could be swapped on the way; use https:// (http:// only on loopback)"))),
            };
            (JwksSource::Url { url: uri, connector }, None)
        }
    };
    let refresh = a.jwks_refresh.map_or(DEFAULT_JWKS_REFRESH, |d| d.0);
    if refresh.is_zero() {
        return Err(field("auth.jwks-refresh", "must be greater than 0s"));
    }
    let required_scopes = scopes("auth.required-scopes", &a.required_scopes)?;
    let mut supported: BTreeSet<String> = required_scopes.iter().cloned().collect();
    supported.extend(rules.iter().flat_map(|r| r.scopes.iter().cloned()));
    let authorization_servers = match &a.authorization_servers {
        Some(list) => {
            for s in list {
                absolute_url("auth.authorization-servers", s)?;
            }
            list.clone()
        }
        None => vec![issuer.clone()],
    };
    Ok(AuthSettings {
        jwks,
        initial_keys,
        refresh,
        issuer,
        audience: audience_text,
        authorization_servers,
        resource_metadata_url,
        required_scopes,
        scopes_supported: supported.into_iter().collect(),
        leeway: a.leeway.map_or(DEFAULT_LEEWAY, |d| d.0),
        forward_token: a.forward_token.unwrap_or(false),
        required_typ: match &a.required_typ {
            Some(t) if t.trim().is_empty() || !t.is_ascii() => {
                return Err(field(
                    "auth.required-typ",
                    format!("{t:?}: give a media type such as \"at+jwt\""),
                ))
            }
            t => t.clone(),
        },
    })
}

fn jwks_connector(ca: Option<&Path>) -> Result<PqConnector, GateConfigError> {
    let trust = match ca {
        Some(ca) => Trust::Roots(Arc::new(
            load_roots(ca).map_err(|e| field("auth.jwks-ca", e.to_string()))?,
        )),
        None => Trust::System,
    };
    PqConnector::new(ClientTlsConfig {
        trust,
        policy: PolicyMode::PqPreferred,
        ..ClientTlsConfig::default()
    })
    .map_err(|e| field("auth.jwks-url", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Option<GateConfig>, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct File {
            auth: Option<AuthSection>,
            rules: Option<Vec<RuleSection>>,
            rate_limit: Option<OneOrMany<RateLimitSection>>,
            audit: Option<AuditSection>,
            tools: Option<ToolsSection>,
            approvals: Option<ApprovalsSection>,
            fleet: Option<FleetSection>,
        }
        let f: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        GateConfig::resolve(
            Sections {
                auth: f.auth.as_ref(),
                rules: f.rules.as_deref(),
                rate_limit: f.rate_limit.as_ref().map(|r| r.0.as_slice()),
                audit: f.audit.as_ref(),
                tools: f.tools.as_ref(),
                approvals: f.approvals.as_ref(),
                fleet: f.fleet.as_ref(),
            },
            false,
            1024,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn no_sections_no_gate() {
        assert!(parse("").unwrap().is_none());
    }

    #[test]
    fn rate_limit_is_a_table_or_an_array_of_tables() {
        let one = parse("[rate-limit]\nkey = \"address\"\nper-minute = 120\nburst = 20\n")
            .unwrap()
            .unwrap();
        assert_eq!(one.limits.len(), 1);
        assert_eq!((one.limits[0].per_minute, one.limits[0].burst), (120, 20));
        assert_eq!(one.limits[0].name, "rate-limit[0]");
        let two = parse("[[rate-limit]]\nmethod = \"tools/call\"\nper-minute = 10\n[[rate-limit]]\nper-minute = 100\nkey = \"address\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(two.limits.len(), 2);
        assert_eq!(two.limits[0].burst, 10, "burst defaults to per-minute");
        assert_eq!(two.limits[1].key, KeyKind::Address);
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        for (text, expected) in [
            ("[[rules]]\ndeny = true\n", "rules[0]: set method"),
            ("[[rules]]\nmethod = \"tools/[a]\"\n", "rules[0].method: `tools/[a]`: `[` is not supported"),
            ("[[rules]]\nmethod = \"resources/read\"\ntool = \"x\"\n", "rules[0].tool: only tools/call has a tool"),
            ("[[rules]]\ntool = \"x\"\nscopes = [\"admin\"]\n", "rules[0].scopes: scopes come from bearer tokens: add an [auth] section"),
            ("[[rules]]\ntool = \"x\"\nallow-identities = [\"spiffe://a\"]\n", "rules[0].allow-identities: client identities come from client certificates: set client-ca"),
            ("[[rules]]\nname = \"a\"\nmethod = \"x\"\n[[rules]]\nname = \"a\"\nmethod = \"y\"\n", "rules.name: `a` is used twice"),
            ("[rate-limit]\nper-minute = 0\n", "rate-limit[0].per-minute: must be greater than 0"),
            ("[rate-limit]\nburst = 3\n", "rate-limit[0].per-minute: required"),
            ("[rate-limit]\nper-minute = 5\nkey = \"subject\"\n", "rate-limit[0].key: subject comes from bearer tokens"),
            ("[rate-limit]\nper-minute = 5\nkey = \"ip\"\n", "unknown variant `ip`, expected one of `identity`, `subject`, `address`"),
            ("[audit]\ninclude-bodies = true\n", "audit.path: required"),
            ("[audit]\npath = \"/nonexistent-dir/a.jsonl\"\n", "audit.path: /nonexistent-dir/a.jsonl: directory /nonexistent-dir does not exist"),
            ("[auth]\nissuer = \"https://idp\"\naudience = \"https://mcp/mcp\"\n", "auth: set jwks-file (a JWKS on disk) or jwks-url"),
            ("[auth]\nissuer = \"https://idp\"\naudience = \"https://mcp/mcp\"\njwks-file = \"a\"\njwks-url = \"https://idp/jwks\"\n", "auth.jwks-file: give jwks-file or jwks-url, not both"),
            ("[auth]\nissuer = \"https://idp\"\naudience = \"https://mcp/mcp\"\njwks-url = \"http://idp.example.com/jwks\"\n", "auth.jwks-url: `http://idp.example.com/jwks`: keys fetched in plain HTTP"),
            ("[auth]\naudience = \"https://mcp/mcp\"\njwks-url = \"https://idp/jwks\"\n", "auth.issuer: required"),
            ("[auth]\nissuer = \"https://idp\"\naudience = \"mcp\"\njwks-url = \"https://idp/jwks\"\n", "auth.audience: `mcp`: give an absolute http(s) URL"),
            ("[auth]\nissuer = \"https://idp\"\naudience = \"https://mcp/mcp\"\njwks-url = \"https://idp/jwks\"\njwks_refresh = \"1m\"\n", "unknown field `jwks_refresh`, expected one of"),
        ] {
            let e = parse(text).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(e.contains(expected), "{text}\nexpected `{expected}` in: {e}");
        }
    }

    #[test]
    fn fleet_errors_name_the_field_and_the_fix() {
        let limit = "[rate-limit]\nkey = \"address\"\nper-minute = 60\n";
        for (text, expected) in [
            (
                "[fleet]\ntimeout = \"10ms\"\n".to_owned(),
                "fleet.redis: required",
            ),
            (
                format!("[fleet]\nredis = \"rediss://r:6380\"\n{limit}"),
                "fleet.redis: TLS to Redis is not built in",
            ),
            (
                format!("[fleet]\nredis = \"http://r\"\n{limit}"),
                "fleet.redis: `http://r`: give redis://",
            ),
            (
                "[fleet]\nredis = \"redis://127.0.0.1:6379\"\n".to_owned(),
                "fleet: the fleet shares rate limits, approvals and first-use tool pins",
            ),
            (
                format!("[fleet]\nredis = \"redis://127.0.0.1:6379\"\ntimeout = \"10s\"\n{limit}"),
                "fleet.timeout: must be more than 0s and at most 5s",
            ),
            (
                format!(
                    "[fleet]\nredis = \"redis://127.0.0.1:6379\"\non-failure = \"ignore\"\n{limit}"
                ),
                "unknown variant `ignore`, expected `local` or `refuse`",
            ),
        ] {
            let e = parse(&text)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(
                e.contains(expected),
                "{text}\nexpected `{expected}` in: {e}"
            );
        }
        let ok = parse(&format!(
            "[fleet]\nredis = \"redis://:secret@127.0.0.1:6379\"\n{limit}"
        ))
        .unwrap()
        .unwrap();
        let f = ok.fleet.as_ref().unwrap();
        assert_eq!(
            (f.timeout, f.on_failure),
            (
                super::super::fleet::DEFAULT_TIMEOUT,
                super::super::fleet::OnFailure::Local
            )
        );
        assert!(!ok.summary().contains("secret"), "{}", ok.summary());
        assert!(
            ok.summary()
                .contains("rate limits shared on redis://***@127.0.0.1:6379 (on-failure local)"),
            "{}",
            ok.summary()
        );
    }

    #[test]
    fn approval_errors_name_the_field_and_the_fix() {
        let auth = "[auth]\nissuer = \"https://idp\"\naudience = \"https://mcp/mcp\"\njwks-url = \"https://idp/jwks\"\n";
        for (text, expected) in [
            ("[[rules]]\ntool = \"x\"\napprovers = [\"scope:a\"]\n", "rules[0].approvers: only a rule with require-approval = true has approvers"),
            ("[[rules]]\ntool = \"x\"\nrequire-approval = true\n", "rules[0].approvers: say who may approve"),
            ("[[rules]]\nmethod = \"resources/read\"\nrequire-approval = true\napprovers = [\"id:*\"]\n", "rules[0].require-approval: approval holds tools/call only"),
            ("[[rules]]\ntool = \"x\"\ndeny = true\nrequire-approval = true\napprovers = [\"id:*\"]\n", "rules[0].require-approval: a deny rule refuses every call"),
            ("[[rules]]\ntool = \"x\"\nrequire-approval = true\napprovers = [\"scope:approve\"]\n", "rules[0].approvers: `scope:approve`: approvers' scopes come from bearer tokens"),
            ("[[rules]]\ntool = \"x\"\nrequire-approval = true\napprovers = [\"id:spiffe://ops/*\"]\n", "rules[0].approvers: `id:spiffe://ops/*`: approvers' identities come from client certificates"),
            ("[[rules]]\ntool = \"x\"\nrequire-approval = true\napprovers = [\"alice\"]\n", "rules[0].approvers: `alice`: write \"scope:NAME\""),
            ("[approvals]\nmax-pending = 0\n", "approvals.max-pending: must be at least 1"),
            ("[approvals]\nkeepalive = \"0s\"\n", "approvals.keepalive: must be at least 1s"),
        ] {
            let e = parse(text).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(e.contains(expected), "{text}\nexpected `{expected}` in: {e}");
        }
        let timeout = format!("{auth}[[rules]]\ntool = \"x\"\nrequire-approval = true\napprovers = [\"scope:a\"]\napproval-timeout = \"2d\"\n");
        assert!(parse(&timeout)
            .unwrap_err()
            .contains("rules[0].approval-timeout: must be more than 0s and at most 24h"));
        let ok = parse(&format!("{auth}[[rules]]\ntool = \"delete_*\"\nrequire-approval = true\napprovers = [\"scope:approve\"]\n")).unwrap().unwrap();
        let a = ok.rules[0].approval.as_ref().unwrap();
        assert_eq!(a.timeout, approval::DEFAULT_TIMEOUT);
        assert_eq!(a.approvers, vec![Approver::Scope("approve".into())]);
        assert_eq!(ok.approvals, ApprovalLimits::default());
        assert!(
            ok.summary().contains("1 rules (1 requiring approval)"),
            "{}",
            ok.summary()
        );
    }

    #[test]
    fn auth_defaults_follow_the_audience_and_issuer() {
        let g = parse("[auth]\nissuer = \"https://idp.example.com\"\naudience = \"https://mcp.example.com/mcp\"\njwks-url = \"http://127.0.0.1:9/jwks\"\nrequired-scopes = [\"mcp\"]\n[[rules]]\ntool = \"admin_*\"\nscopes = [\"admin\"]\n")
            .unwrap()
            .unwrap();
        let a = g.auth.unwrap();
        assert_eq!(a.authorization_servers, ["https://idp.example.com"]);
        assert_eq!(
            a.resource_metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(a.scopes_supported, ["admin", "mcp"]);
        assert_eq!(a.leeway, DEFAULT_LEEWAY);
        assert!(!a.forward_token);
        assert_eq!(g.rules[0].method.to_string(), "tools/call");
    }
}
