//! Per-method rules: first match wins, decided by a pure function over a small summary of
//! one JSON-RPC message and who sent it over what.

use std::fmt;

use super::approval::ApprovalRule;
pub use super::glob::{Glob, GlobError};

/// One `[[rules]]` entry, validated. A rule matches a message by `method` and `tool`; the
/// first rule that matches decides: the message is refused when the rule says `deny`, or
/// when any of its conditions fails (all must hold: AND); otherwise it is allowed and no
/// later rule is consulted. A message no rule matches is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rule {
    /// `name`, or `rules[N]`: what refusals, the audit log and the metrics call it.
    pub name: String,
    /// The JSON-RPC method.
    pub method: Glob,
    /// `tools/call` only: the tool's name.
    pub tool: Option<Glob>,
    /// Refuse every message that matches.
    pub deny: bool,
    /// Refuse over a classical key-exchange group.
    pub require_pq: bool,
    /// When not empty: only these mTLS client identities.
    pub allow_identities: Vec<Glob>,
    /// When not empty: only these token subjects.
    pub allow_subjects: Vec<Glob>,
    /// Scopes the token must carry (all of them).
    pub scopes: Vec<String>,
    /// `require-approval`: a call the rule allows is held until an approver decides it.
    pub approval: Option<ApprovalRule>,
}

/// What a rule decides on: one message, and who sent it over what.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Summary<'a> {
    /// The JSON-RPC method.
    pub method: &'a str,
    /// The tool a `tools/call` calls.
    pub tool: Option<&'a str>,
    /// The TLS group, by IANA name.
    pub group: &'a str,
    /// Whether the group is post-quantum.
    pub pq: bool,
    /// The mTLS client identity.
    pub identity: Option<&'a str>,
    /// The verified token's subject.
    pub subject: Option<&'a str>,
    /// The verified token's scopes.
    pub scopes: &'a [String],
}

/// A message allowed: by which rule, if one matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Allowed<'r> {
    /// The rule that matched and allowed it.
    pub rule: Option<&'r str>,
    /// The rule holds it for approval (the last step before the upstream).
    pub approval: Option<&'r ApprovalRule>,
}

/// A message refused by a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Denied {
    /// The rule's name.
    pub rule: String,
    /// Why.
    pub reason: DenyReason,
}

/// Why a rule refused a message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// The rule says `deny`.
    Denied,
    /// The rule says `require-pq` and the connection's group is classical.
    ClassicalGroup(String),
    /// The client identity (if any) is not in `allow-identities`.
    Identity(Option<String>),
    /// The token subject (if any) is not in `allow-subjects`.
    Subject(Option<String>),
    /// The token lacks these of the rule's `scopes`.
    MissingScopes(Vec<String>),
}

impl DenyReason {
    /// A short label for the audit log and the `data` of the JSON-RPC error.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Denied => "deny",
            Self::ClassicalGroup(_) => "require-pq",
            Self::Identity(_) => "allow-identities",
            Self::Subject(_) => "allow-subjects",
            Self::MissingScopes(_) => "scopes",
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = &self.rule;
        let anon = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
        match &self.reason {
            DenyReason::Denied => write!(f, "unauthorized: denied by rule `{rule}`"),
            DenyReason::ClassicalGroup(g) => write!(
                f,
                "unauthorized: rule `{rule}` requires a post-quantum key exchange, this connection uses {g}"
            ),
            DenyReason::Identity(id) => write!(
                f,
                "unauthorized: rule `{rule}` does not allow client identity {}",
                anon(id)
            ),
            DenyReason::Subject(s) => write!(
                f,
                "unauthorized: rule `{rule}` does not allow token subject {}",
                anon(s)
            ),
            DenyReason::MissingScopes(s) => write!(
                f,
                "unauthorized: rule `{rule}` needs scope {}",
                s.join(" ")
            ),
        }
    }
}

impl Rule {
    fn matches(&self, m: &Summary<'_>) -> bool {
        self.method.matches(m.method)
            && self
                .tool
                .as_ref()
                .is_none_or(|t| m.tool.is_some_and(|tool| t.matches(tool)))
    }
}

/// Decides one message: the first rule that matches it decides (see [`Rule`]).
pub fn check<'r>(rules: &'r [Rule], m: &Summary<'_>) -> Result<Allowed<'r>, Denied> {
    let Some(rule) = rules.iter().find(|r| r.matches(m)) else {
        return Ok(Allowed {
            rule: None,
            approval: None,
        });
    };
    let deny = |reason| {
        Err(Denied {
            rule: rule.name.clone(),
            reason,
        })
    };
    if rule.deny {
        return deny(DenyReason::Denied);
    }
    if rule.require_pq && !m.pq {
        return deny(DenyReason::ClassicalGroup(m.group.to_owned()));
    }
    let listed = |list: &[Glob], v: Option<&str>| {
        list.is_empty() || v.is_some_and(|v| list.iter().any(|g| g.matches(v)))
    };
    if !listed(&rule.allow_identities, m.identity) {
        return deny(DenyReason::Identity(m.identity.map(str::to_owned)));
    }
    if !listed(&rule.allow_subjects, m.subject) {
        return deny(DenyReason::Subject(m.subject.map(str::to_owned)));
    }
    let missing: Vec<String> = rule
        .scopes
        .iter()
        .filter(|s| !m.scopes.contains(s))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return deny(DenyReason::MissingScopes(missing));
    }
    Ok(Allowed {
        rule: Some(&rule.name),
        approval: rule.approval.as_ref(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(s: &str) -> Glob {
        Glob::new(s).unwrap()
    }

    fn rule(name: &str, method: &str) -> Rule {
        Rule {
            name: name.into(),
            method: glob(method),
            tool: None,
            deny: false,
            require_pq: false,
            allow_identities: vec![],
            allow_subjects: vec![],
            scopes: vec![],
            approval: None,
        }
    }

    fn call<'a>(tool: &'a str) -> Summary<'a> {
        Summary {
            method: "tools/call",
            tool: Some(tool),
            group: "X25519MLKEM768",
            pq: true,
            identity: None,
            subject: None,
            scopes: &[],
        }
    }

    #[test]
    fn globs_match_whole_strings_with_star_for_any_run() {
        for (pattern, yes, no) in [
            (
                "tools/call",
                &["tools/call"][..],
                &["tools/call2", "tools/cal", "x"][..],
            ),
            ("*", &["", "anything/at all"], &[]),
            (
                "delete_*",
                &["delete_", "delete_file"],
                &["undelete_file", "delete"],
            ),
            ("*_admin", &["x_admin", "_admin"], &["x_admin2"]),
            (
                "a*b*c",
                &["abc", "aXbYc", "abbc", "acbc"],
                &["ab", "acb", "abcx"],
            ),
            (
                "spiffe://example/*",
                &["spiffe://example/agent-a"],
                &["spiffe://other/a"],
            ),
            ("a*a", &["aa", "aba"], &["a"]),
        ] {
            let g = glob(pattern);
            for t in yes {
                assert!(g.matches(t), "{pattern} should match {t}");
            }
            for t in no {
                assert!(!g.matches(t), "{pattern} should not match {t}");
            }
        }
    }

    #[test]
    fn globs_refuse_unsupported_wildcards_and_empty_patterns() {
        assert!(Glob::new("").unwrap_err().to_string().contains("empty"));
        assert!(Glob::new("delete_?")
            .unwrap_err()
            .to_string()
            .contains("`?` is not supported"));
        assert!(Glob::new("[a-z]*")
            .unwrap_err()
            .to_string()
            .contains("only wildcard is `*`"));
    }

    #[test]
    fn no_matching_rule_allows() {
        let rules = [rule("r", "resources/*")];
        assert_eq!(
            check(&rules, &call("x")),
            Ok(Allowed {
                rule: None,
                approval: None
            })
        );
    }

    #[test]
    fn first_match_wins_so_an_early_allow_shadows_a_later_deny() {
        let mut deny_all = rule("deny-calls", "tools/call");
        deny_all.deny = true;
        let mut allow_echo = rule("allow-echo", "tools/call");
        allow_echo.tool = Some(glob("echo"));
        let rules = [allow_echo, deny_all];
        assert_eq!(
            check(&rules, &call("echo")),
            Ok(Allowed {
                rule: Some("allow-echo"),
                approval: None
            })
        );
        let denied = check(&rules, &call("delete_file")).unwrap_err();
        assert_eq!(denied.rule, "deny-calls");
        assert_eq!(denied.reason, DenyReason::Denied);
        assert_eq!(
            denied.to_string(),
            "unauthorized: denied by rule `deny-calls`"
        );
    }

    #[test]
    fn tool_narrows_only_messages_with_a_tool() {
        let mut r = rule("r", "*");
        r.tool = Some(glob("delete_*"));
        r.deny = true;
        let rules = [r];
        assert!(check(&rules, &call("delete_x")).is_err());
        let list = Summary {
            method: "tools/list",
            tool: None,
            ..call("")
        };
        assert!(check(&rules, &list).is_ok());
    }

    #[test]
    fn require_pq_refuses_a_classical_group_and_names_it() {
        let mut r = rule("pq-calls", "tools/call");
        r.require_pq = true;
        let rules = [r];
        assert!(check(&rules, &call("x")).is_ok());
        let classical = Summary {
            pq: false,
            group: "X25519",
            ..call("x")
        };
        let denied = check(&rules, &classical).unwrap_err();
        assert_eq!(denied.reason, DenyReason::ClassicalGroup("X25519".into()));
        assert!(denied.to_string().contains("this connection uses X25519"));
    }

    #[test]
    fn identities_and_subjects_must_be_listed_when_lists_are_given() {
        let mut r = rule("admins", "tools/call");
        r.tool = Some(glob("delete_*"));
        r.allow_identities = vec![glob("spiffe://example/agent-*")];
        let rules = [r.clone()];
        let agent = Summary {
            identity: Some("spiffe://example/agent-a"),
            ..call("delete_x")
        };
        assert!(check(&rules, &agent).is_ok());
        let other = Summary {
            identity: Some("spiffe://example/intruder"),
            ..call("delete_x")
        };
        assert_eq!(
            check(&rules, &other).unwrap_err().reason,
            DenyReason::Identity(Some("spiffe://example/intruder".into()))
        );
        // No client certificate at all: refused, not waved through.
        assert_eq!(
            check(&rules, &call("delete_x")).unwrap_err().reason,
            DenyReason::Identity(None)
        );
        r.allow_identities = vec![];
        r.allow_subjects = vec![glob("alice")];
        let rules = [r];
        let alice = Summary {
            subject: Some("alice"),
            ..call("delete_x")
        };
        assert!(check(&rules, &alice).is_ok());
        assert!(check(&rules, &call("delete_x")).is_err());
    }

    #[test]
    fn scopes_must_all_be_held_and_the_missing_ones_are_named() {
        let mut r = rule("admin-tools", "tools/call");
        r.scopes = vec!["mcp".into(), "admin".into()];
        let rules = [r];
        let held = ["mcp".to_owned()];
        let m = Summary {
            scopes: &held,
            ..call("x")
        };
        let denied = check(&rules, &m).unwrap_err();
        assert_eq!(
            denied.reason,
            DenyReason::MissingScopes(vec!["admin".into()])
        );
        assert_eq!(denied.reason.label(), "scopes");
        let both = ["admin".to_owned(), "mcp".to_owned()];
        assert!(check(
            &rules,
            &Summary {
                scopes: &both,
                ..call("x")
            }
        )
        .is_ok());
    }

    #[test]
    fn conditions_are_checked_in_order_deny_first() {
        let mut r = rule("r", "*");
        r.deny = true;
        r.require_pq = true;
        let m = Summary {
            pq: false,
            ..call("x")
        };
        assert_eq!(check(&[r], &m).unwrap_err().reason, DenyReason::Denied);
    }
}
