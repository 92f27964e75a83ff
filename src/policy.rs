//! Policy modes, fallback rules and the decisions they make: pure functions over plain data.
//!
//! The server asks [`Policy::decide`] once per ClientHello: which group the handshake ends on
//! (the server's preference among what the client offered and the policy allows), or a
//! [`Refusal`] with a reason a human can act on. Nothing here does I/O or touches rustls
//! connection types, so every rule is tested without sockets.
//!
//! # Semantics
//! - `pq-required`: only post-quantum groups; a client offering none is refused.
//! - `pq-preferred`: a post-quantum group whenever the client *lists* one the server has (even
//!   when the client's first key share is classical: the server then asks for a retry);
//!   otherwise classical, as a visible fallback refined by the sunset and the fallback rules.
//! - `classical-allowed`: the server's first group that the client offered, pq or not.
//!
//! Fallback rules are checked in order and the **first matching rule wins**; when none matches,
//! classical is allowed until the sunset and refused after it. A rule on the client-certificate
//! identity cannot be decided from the ClientHello: the [`Permit`] then carries an
//! [`IdentityCheck`] that the server applies to the certificate during the handshake.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::groups::{display_list, display_list_capped, Group, GroupId};
use crate::label::label_enum;

/// What the server learns from a ClientHello, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHelloSummary {
    /// Server name indication, if sent.
    pub sni: Option<String>,
    /// `supported_groups`, in the client's order (unknown code points kept).
    pub offered_groups: Vec<GroupId>,
    /// ALPN protocols offered, in the client's order.
    pub alpn: Vec<String>,
    /// The client's address.
    pub peer: IpAddr,
    /// When the ClientHello arrived.
    pub time: SystemTime,
}

/// How strict the endpoint is about post-quantum key exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PolicyMode {
    /// Only post-quantum groups are offered and accepted.
    PqRequired,
    /// Post-quantum whenever the peer supports it; classical otherwise, visibly.
    #[default]
    PqPreferred,
    /// Any group the endpoint has, in its order of preference.
    ClassicalAllowed,
}

impl PolicyMode {
    /// The name used in flags, config and logs: `pq-required`, `pq-preferred`, `classical-allowed`.
    pub fn name(self) -> &'static str {
        match self {
            Self::PqRequired => "pq-required",
            Self::PqPreferred => "pq-preferred",
            Self::ClassicalAllowed => "classical-allowed",
        }
    }

    /// The groups a client with this policy offers, in order: pq-required offers only its pq
    /// groups; pq-preferred puts its pq groups first; classical-allowed keeps the given order.
    pub fn client_offer(self, groups: &[Group]) -> Vec<Group> {
        let pq = groups.iter().copied().filter(|g| g.is_pq());
        let classical = groups.iter().copied().filter(|g| !g.is_pq());
        match self {
            Self::PqRequired => pq.collect(),
            Self::PqPreferred => pq.chain(classical).collect(),
            Self::ClassicalAllowed => groups.to_vec(),
        }
    }

    /// The client's check after its handshake: a pq-required client refuses a classical
    /// result. `Ok(true)` means the result was a classical fallback the caller must make
    /// visible (pq-preferred).
    pub fn check_negotiated(self, negotiated: GroupId) -> Result<bool, Refusal> {
        match (self, negotiated.is_pq()) {
            (_, true) => Ok(false),
            (Self::PqRequired, false) => Err(Refusal {
                mode: self,
                offered: vec![negotiated],
                reason: RefusalReason::ServerChoseClassical,
            }),
            (Self::PqPreferred, false) => Ok(true),
            (Self::ClassicalAllowed, false) => Ok(false),
        }
    }
}

impl fmt::Display for PolicyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyMode {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::PqRequired, Self::PqPreferred, Self::ClassicalAllowed]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| PolicyError::UnknownMode(s.trim().to_owned()))
    }
}

/// A policy: a mode, refined (in `pq-preferred`) by a sunset and fallback rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// The policy mode. Default is `pq-preferred`.
    pub mode: PolicyMode,
    /// After this instant, classical fallback is refused unless a rule allows it.
    /// Default is none (no sunset).
    pub sunset: Option<SystemTime>,
    /// Exceptions, checked in order; the first match wins. Default is none.
    pub rules: Vec<FallbackRule>,
}

impl Policy {
    /// A policy of this mode with no sunset and no rules.
    pub fn new(mode: PolicyMode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// This policy with `sunset` (see [`Policy::sunset`]).
    pub fn with_sunset(self, sunset: Option<SystemTime>) -> Self {
        Self { sunset, ..self }
    }

    /// This policy with these fallback rules, checked in order (see [`Policy::rules`]).
    pub fn with_rules(self, rules: impl IntoIterator<Item = FallbackRule>) -> Self {
        Self {
            rules: rules.into_iter().collect(),
            ..self
        }
    }

    /// Checks the policy can work with these server groups, before anything listens.
    ///
    /// `client_certs` says whether the server asks for client certificates (identity rules
    /// need them).
    pub fn validate(&self, groups: &[Group], client_certs: bool) -> Result<(), PolicyError> {
        crate::groups::check_list(groups).map_err(PolicyError::Groups)?;
        if self.mode != PolicyMode::ClassicalAllowed && !groups.iter().any(|g| g.is_pq()) {
            return Err(PolicyError::NoPqGroup {
                mode: self.mode,
                groups: groups.to_vec(),
            });
        }
        if self.mode != PolicyMode::PqPreferred && (self.sunset.is_some() || !self.rules.is_empty())
        {
            return Err(PolicyError::RulesNeedPqPreferred(self.mode));
        }
        if !client_certs {
            if let Some(rule) = self
                .rules
                .iter()
                .find(|r| matches!(r.matcher, Matcher::Identity(_)))
            {
                return Err(PolicyError::IdentityRuleWithoutClientCerts(
                    rule.to_string(),
                ));
            }
        }
        Ok(())
    }

    /// Decides a ClientHello: the group the handshake must end on, or a refusal.
    ///
    /// `groups` is the server's list in its order of preference; the chosen group is the
    /// first of them that the client offered and the policy allows.
    pub fn decide(&self, groups: &[Group], hello: &ClientHelloSummary) -> Result<Permit, Refusal> {
        let offered = |g: &&Group| hello.offered_groups.contains(&GroupId::from(**g));
        let refuse = |reason| Refusal {
            mode: self.mode,
            offered: hello.offered_groups.clone(),
            reason,
        };
        let first_pq = groups.iter().filter(|g| g.is_pq()).find(offered).copied();
        let first_any = groups.iter().find(offered).copied();
        let pq_groups = || groups.iter().copied().filter(|g| g.is_pq()).collect();

        match self.mode {
            PolicyMode::ClassicalAllowed => first_any
                .map(|group| Permit::new(group, GroupSet::Any))
                .ok_or_else(|| {
                    refuse(RefusalReason::NoCommonGroup {
                        allowed: groups.to_vec(),
                    })
                }),
            PolicyMode::PqRequired => first_pq
                .map(|group| Permit::new(group, GroupSet::PqOnly))
                .ok_or_else(|| refuse(no_pq_reason(hello, pq_groups()))),
            PolicyMode::PqPreferred => {
                if let Some(group) = first_pq {
                    return Ok(Permit::new(group, GroupSet::PqOnly));
                }
                let Some(group) = first_any else {
                    return Err(refuse(RefusalReason::NoCommonGroup {
                        allowed: groups.to_vec(),
                    }));
                };
                let check = self.fallback(hello);
                let permit = Permit {
                    group,
                    groups: GroupSet::Any,
                    classical_fallback: true,
                    rule: None,
                    identity_check: None,
                };
                match check.decided() {
                    Some(Ok(rule)) => Ok(Permit { rule, ..permit }),
                    Some(Err(reason)) => Err(refuse(reason)),
                    None => Ok(Permit {
                        identity_check: Some(check),
                        ..permit
                    }),
                }
            }
        }
    }

    /// The fallback outcome for a client that offered no usable pq group.
    fn fallback(&self, hello: &ClientHelloSummary) -> IdentityCheck {
        let mut pending = Vec::new();
        let mut decided = None;
        for rule in &self.rules {
            match rule.matcher.matches_hello(hello) {
                Some(true) => {
                    decided = Some(rule.clone());
                    break;
                }
                Some(false) => {}
                None => pending.push(rule.clone()),
            }
        }
        let default = match decided {
            Some(rule) => rule.outcome(),
            None => match self.sunset {
                Some(sunset) if hello.time >= sunset => Err(RefusalReason::SunsetPassed(sunset)),
                _ => Ok(None),
            },
        };
        IdentityCheck {
            rules: pending,
            default,
            mode: self.mode,
            offered: hello.offered_groups.clone(),
        }
    }
}

fn no_pq_reason(hello: &ClientHelloSummary, pq_groups: Vec<Group>) -> RefusalReason {
    if hello.offered_groups.iter().any(|g| g.is_pq()) {
        RefusalReason::NoCommonGroup { allowed: pq_groups }
    } else {
        RefusalReason::NoPqGroupOffered
    }
}

/// The set of groups a decision lets the handshake use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupSet {
    /// Post-quantum groups only.
    PqOnly,
    /// Post-quantum and classical groups.
    Any,
}

/// A ClientHello the policy lets through.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Permit {
    /// The group the handshake must end on (the server asks for a retry if the client sent
    /// no key share for it).
    pub group: Group,
    /// The set the decision allowed the group from.
    pub groups: GroupSet,
    /// Whether this is a classical fallback under `pq-preferred`: to be logged and counted.
    pub classical_fallback: bool,
    /// The fallback rule that allowed classical, if one did.
    pub rule: Option<FallbackRule>,
    /// A check still to apply to the client certificate, when an identity rule decides.
    pub identity_check: Option<IdentityCheck>,
}

impl Permit {
    fn new(group: Group, groups: GroupSet) -> Self {
        Self {
            group,
            groups,
            classical_fallback: false,
            rule: None,
            identity_check: None,
        }
    }
}

/// The part of a fallback decision that depends on the client certificate's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityCheck {
    /// Identity rules before the first decided rule, in order.
    rules: Vec<FallbackRule>,
    /// The outcome when no identity rule matches.
    default: Result<Option<FallbackRule>, RefusalReason>,
    mode: PolicyMode,
    offered: Vec<GroupId>,
}

impl IdentityCheck {
    /// Applies the check to the identities (SAN URIs and DNS names) of a client certificate;
    /// an empty slice means the client sent none. Returns the rule that allowed, if any.
    pub fn check(&self, identities: &[String]) -> Result<Option<FallbackRule>, Refusal> {
        let matched = self.rules.iter().find(|rule| match &rule.matcher {
            Matcher::Identity(p) => identities.iter().any(|id| p.matches(id)),
            _ => false,
        });
        match matched {
            Some(rule) => rule.outcome(),
            None => self.default.clone(),
        }
        .map_err(|reason| Refusal {
            mode: self.mode,
            offered: self.offered.clone(),
            reason,
        })
    }

    /// Whether a client without a certificate is refused (so the server must demand one).
    pub fn requires_certificate(&self) -> bool {
        self.default.is_err()
    }

    /// The outcome when it does not depend on the identity after all.
    fn decided(&self) -> Option<Result<Option<FallbackRule>, RefusalReason>> {
        let same = |r: &FallbackRule| r.outcome().is_ok() == self.default.is_ok();
        self.rules.iter().all(same).then(|| self.default.clone())
    }
}

/// An exception to `pq-preferred`'s default fallback behaviour.
///
/// Written `ACTION KIND:VALUE`, e.g. `allow-classical cidr:10.0.0.0/8`,
/// `require-pq sni:*.prod.example.com`, `allow-classical id:spiffe://corp/legacy/*`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FallbackRule {
    /// What the rule does when it matches.
    pub action: RuleAction,
    /// Which clients it matches.
    pub matcher: Matcher,
}

impl FallbackRule {
    fn outcome(&self) -> Result<Option<FallbackRule>, RefusalReason> {
        match self.action {
            RuleAction::AllowClassical => Ok(Some(self.clone())),
            RuleAction::RequirePq => Err(RefusalReason::Rule(self.clone())),
        }
    }
}

impl fmt::Display for FallbackRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.matcher)
    }
}

impl FromStr for FallbackRule {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| PolicyError::BadRule {
            rule: s.trim().to_owned(),
            why: why.to_owned(),
        };
        let (action, matcher) = s
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("expected `ACTION KIND:VALUE`"))?;
        let action = match action {
            "allow-classical" => RuleAction::AllowClassical,
            "require-pq" => RuleAction::RequirePq,
            _ => return Err(bad("action must be `allow-classical` or `require-pq`")),
        };
        let (kind, value) = matcher
            .trim()
            .split_once(':')
            .ok_or_else(|| bad("expected `cidr:`, `sni:` or `id:` before the value"))?;
        let matcher = match kind {
            "cidr" => Matcher::Address(parse_net(value).ok_or_else(|| {
                bad("not a CIDR or address (e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)")
            })?),
            "sni" => Matcher::Sni(NamePattern::parse(value).ok_or_else(|| bad("empty name"))?),
            "id" => {
                Matcher::Identity(NamePattern::parse(value).ok_or_else(|| bad("empty identity"))?)
            }
            _ => return Err(bad("kind must be `cidr`, `sni` or `id`")),
        };
        Ok(Self { action, matcher })
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// What a fallback rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuleAction {
    /// Allow classical key exchange (even after the sunset).
    AllowClassical,
    /// Refuse classical key exchange (even before the sunset).
    RequirePq,
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AllowClassical => "allow-classical",
            Self::RequirePq => "require-pq",
        })
    }
}

/// Which clients a fallback rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Matcher {
    /// The client's address is in this network (IPv4 or IPv6).
    Address(IpNet),
    /// The SNI name matches.
    Sni(NamePattern),
    /// A SAN URI or DNS name of the client certificate matches (e.g. a SPIFFE ID).
    Identity(NamePattern),
}

impl Matcher {
    /// Whether the ClientHello matches; `None` when only the client certificate can tell.
    fn matches_hello(&self, hello: &ClientHelloSummary) -> Option<bool> {
        match self {
            Self::Address(net) => Some(net.contains(&canonical(hello.peer))),
            Self::Sni(p) => Some(hello.sni.as_deref().is_some_and(|sni| p.matches(sni))),
            Self::Identity(_) => None,
        }
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack listener) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(net) => write!(f, "cidr:{net}"),
            Self::Sni(p) => write!(f, "sni:{p}"),
            Self::Identity(p) => write!(f, "id:{p}"),
        }
    }
}

/// A name pattern: exact (case-insensitive), `*.example.com` (exactly one more label), or
/// `prefix*` (for URIs such as `spiffe://corp/ns/legacy/*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    /// Parses a pattern; `None` if it is empty.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        (!s.is_empty()).then(|| Self(s.to_ascii_lowercase()))
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let p = self.0.as_str();
        if let Some(suffix) = p.strip_prefix("*.") {
            return name
                .strip_suffix(suffix)
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.'));
        }
        if let Some(prefix) = p.strip_suffix('*') {
            return name.starts_with(prefix);
        }
        name == p
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A handshake the policy refuses, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
// `offered` is the peer's list: capped, so that a refusal line stays short.
#[error("{reason} (offered: {offered}); policy {mode}", offered = display_list_capped(offered))]
#[non_exhaustive]
pub struct Refusal {
    /// The policy mode that refused.
    pub mode: PolicyMode,
    /// What the client offered (or, on the client side, what the server chose).
    pub offered: Vec<GroupId>,
    /// Why.
    pub reason: RefusalReason,
}

/// Why a handshake was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The client offered no post-quantum group at all.
    #[error("client offered no post-quantum group")]
    NoPqGroupOffered,
    /// The client offered nothing this server allows.
    #[error("no group in common: server allows {}", display_list(allowed))]
    NoCommonGroup {
        /// The groups the server would have accepted.
        allowed: Vec<Group>,
    },
    /// Classical fallback after the sunset.
    #[error("classical key exchange is no longer allowed: sunset {} has passed and the client offered no post-quantum group", humantime::format_rfc3339_seconds(*.0))]
    SunsetPassed(SystemTime),
    /// A `require-pq` fallback rule matched.
    #[error("classical key exchange refused by fallback rule `{0}`")]
    Rule(FallbackRule),
    /// The server picked a classical group for a pq-required client.
    #[error("server chose a classical group")]
    ServerChoseClassical,
}

impl RefusalReason {
    /// The reason without its details: the `reason` label of a refusal. An exhaustive match,
    /// so that a reason added here without a kind (and so without a counter) does not compile.
    pub fn kind(&self) -> RefusalKind {
        match self {
            Self::NoPqGroupOffered => RefusalKind::NoPqGroupOffered,
            Self::NoCommonGroup { .. } => RefusalKind::NoCommonGroup,
            Self::SunsetPassed(_) => RefusalKind::SunsetPassed,
            Self::Rule(_) => RefusalKind::Rule,
            Self::ServerChoseClassical => RefusalKind::ServerChoseClassical,
        }
    }
}

label_enum! {
    /// What kind of [`RefusalReason`] refused a handshake: the `reason` label of
    /// `handshakes_total{result="refused"}`, one per variant of [`RefusalReason`].
    #[non_exhaustive]
    pub enum RefusalKind {
        /// [`RefusalReason::NoPqGroupOffered`].
        NoPqGroupOffered => "no_pq_group_offered",
        /// [`RefusalReason::NoCommonGroup`].
        NoCommonGroup => "no_common_group",
        /// [`RefusalReason::SunsetPassed`].
        SunsetPassed => "sunset_passed",
        /// [`RefusalReason::Rule`].
        Rule => "fallback_rule",
        /// [`RefusalReason::ServerChoseClassical`].
        ServerChoseClassical => "server_chose_classical",
    }
}

/// An invalid policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not a policy mode.
    #[error("unknown policy mode `{0}`; use pq-required, pq-preferred or classical-allowed")]
    UnknownMode(String),
    /// A rule that does not parse.
    #[error("invalid fallback rule `{rule}`: {why}")]
    BadRule {
        /// The rule as written.
        rule: String,
        /// What is wrong with it.
        why: String,
    },
    /// The group list is unusable.
    #[error("groups: {0}")]
    Groups(crate::groups::GroupError),
    /// A pq mode with no pq group to use.
    #[error(
        "policy {mode} needs a post-quantum group, but groups has none ({}); add X25519MLKEM768",
        display_list(groups)
    )]
    NoPqGroup {
        /// The policy mode.
        mode: PolicyMode,
        /// The configured groups.
        groups: Vec<Group>,
    },
    /// Sunset or rules outside pq-preferred.
    #[error("a sunset and fallback rules refine pq-preferred only, but the policy is {0}; use pq-preferred (a past sunset plus allow-classical rules acts as pq-required with exceptions)")]
    RulesNeedPqPreferred(PolicyMode),
    /// An identity rule on a server that does not ask for client certificates.
    #[error("fallback rule `{0}` matches client-certificate identities, but client certificates are not requested; configure a client CA")]
    IdentityRuleWithoutClientCerts(String),
}

#[cfg(test)]
mod tests;
