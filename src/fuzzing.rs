//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz). Each takes arbitrary bytes,
//! runs the code that reads peer- or operator-controlled input, and panics only when an
//! invariant breaks, so libFuzzer reports the input. Not a stable API.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};

use crate::config::{Mode, SidecarConfig};
use crate::gate::jsonrpc::{self, Kind};
use crate::gate::rules::{self, Glob, Rule, Summary};
use crate::groups::{Group, GroupId, SECP384R1MLKEM1024};
use crate::policy::{ClientHelloSummary, FallbackRule, Policy, PolicyMode, RefusalReason};

/// Raw bytes as the server reads them from a socket (TLS records) → rustls's `Acceptor`, as
/// in [`crate::tls::PqAcceptor`] → our ClientHello summary → the policy decision under every
/// mode, several group lists and fallback rules. The decision must agree with what the
/// client offered.
pub fn client_hello_policy(data: &[u8]) {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = data;
    let accepted = loop {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => continue,
            Err(_) => return,
        }
    };
    let hello = accepted.client_hello();
    for peer in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    ] {
        let summary = crate::tls::summarize(&hello, SocketAddr::new(peer, 443), SystemTime::now());
        for policy in policies() {
            for groups in GROUP_LISTS {
                check_decision(&policy, groups, &summary);
            }
        }
    }
}

const GROUP_LISTS: &[&[Group]] = &[
    crate::DEFAULT_GROUPS,
    &Group::ALL,
    &[Group::SecP384r1MLKEM1024, Group::X25519],
    &[Group::X25519],
    &[Group::MLKEM1024],
];

fn policies() -> Vec<Policy> {
    let rules = |list: &[&str]| -> Vec<FallbackRule> {
        list.iter().filter_map(|r| r.parse().ok()).collect()
    };
    vec![
        Policy::new(PolicyMode::PqRequired),
        Policy::new(PolicyMode::PqPreferred),
        Policy::new(PolicyMode::ClassicalAllowed),
        Policy {
            sunset: Some(SystemTime::UNIX_EPOCH),
            ..Policy::new(PolicyMode::PqPreferred)
        },
        Policy {
            sunset: Some(SystemTime::UNIX_EPOCH),
            rules: rules(&[
                "allow-classical sni:*.example.com",
                "require-pq cidr:127.0.0.0/8",
            ]),
            ..Policy::new(PolicyMode::PqPreferred)
        },
        Policy {
            rules: rules(&[
                "require-pq sni:legacy*",
                "allow-classical cidr:2001:db8::/32",
            ]),
            ..Policy::new(PolicyMode::PqPreferred)
        },
    ]
}

/// The policy's contract (see [`crate::policy`]), checked against the offered groups.
fn check_decision(policy: &Policy, groups: &[Group], hello: &ClientHelloSummary) {
    let offered = |g: &Group| hello.offered_groups.contains(&GroupId::from(*g));
    let first_pq = groups.iter().copied().find(|g| g.is_pq() && offered(g));
    let first_any = groups.iter().copied().find(|g| offered(g));
    match policy.decide(groups, hello) {
        Ok(permit) => {
            assert!(groups.contains(&permit.group), "{permit:?} not ours");
            assert!(offered(&permit.group), "{permit:?} not offered");
            match policy.mode {
                PolicyMode::PqRequired => assert_eq!(Some(permit.group), first_pq),
                PolicyMode::ClassicalAllowed => assert_eq!(Some(permit.group), first_any),
                PolicyMode::PqPreferred => match first_pq {
                    Some(pq) => assert!(permit.group == pq && !permit.classical_fallback),
                    None => assert!(permit.classical_fallback && !permit.group.is_pq()),
                },
            }
        }
        Err(refusal) => {
            let _ = refusal.to_string();
            match policy.mode {
                PolicyMode::PqRequired => assert_eq!(first_pq, None, "{refusal}"),
                PolicyMode::ClassicalAllowed => assert_eq!(first_any, None, "{refusal}"),
                PolicyMode::PqPreferred => {
                    assert_eq!(first_pq, None, "{refusal}");
                    if first_any.is_some() {
                        assert!(
                            matches!(
                                refusal.reason,
                                RefusalReason::SunsetPassed(_) | RefusalReason::Rule(_)
                            ),
                            "{refusal}"
                        );
                    }
                }
            }
        }
    }
}

/// Our `SecP384r1MLKEM1024` with a hostile peer share. The first byte picks the case: a raw
/// share to the server side, a raw share to the client side, or a real share of the right
/// length with the rest of the input XORed into it (bad points, bad ML-KEM keys and
/// ciphertexts). Errors are fine; a panic, a wrong length, or an altered share agreeing on
/// the secret are not.
pub fn secp384r1mlkem1024_share(data: &[u8]) {
    let Some((&case, input)) = data.split_first() else {
        return;
    };
    const SECRET_LEN: usize = 48 + 32;
    const SHARE_LEN: usize = 97 + 1568;
    let Ok(client) = SECP384R1MLKEM1024.start() else {
        return;
    };
    match case % 4 {
        0 => {
            if let Ok(done) = SECP384R1MLKEM1024.start_and_complete(input) {
                assert_eq!(done.pub_key.len(), SHARE_LEN);
                assert_eq!(done.secret.secret_bytes().len(), SECRET_LEN);
            }
        }
        1 => {
            if let Ok(secret) = client.complete(input) {
                assert_eq!(secret.secret_bytes().len(), SECRET_LEN);
            }
        }
        2 => {
            let share = xor(client.pub_key(), input);
            if let Ok(done) = SECP384R1MLKEM1024.start_and_complete(&share) {
                assert_eq!(done.pub_key.len(), SHARE_LEN);
                if share != client.pub_key() {
                    let ours = client.complete(&done.pub_key);
                    // The client never agrees with a server that saw another share.
                    assert!(ours.map_or(true, |s| s.secret_bytes() != done.secret.secret_bytes()));
                }
            }
        }
        _ => {
            let Ok(server) = SECP384R1MLKEM1024.start_and_complete(client.pub_key()) else {
                return;
            };
            let share = xor(&server.pub_key, input);
            let changed = share != server.pub_key;
            match client.complete(&share) {
                Ok(secret) if changed => {
                    // ML-KEM's implicit rejection: a secret, but never the server's.
                    assert_ne!(secret.secret_bytes(), server.secret.secret_bytes());
                }
                Ok(secret) => assert_eq!(secret.secret_bytes(), server.secret.secret_bytes()),
                Err(_) => assert!(changed, "an unaltered server share was refused"),
            }
        }
    }
}

fn xor(base: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    for (i, b) in with.iter().enumerate() {
        out[i % base.len()] ^= b;
    }
    out
}

/// A sidecar config file (TOML) → parsed → validated for both modes. Every path in it is
/// pointed into a directory that does not exist first, so nothing on disk is read or
/// written: what is exercised is parsing and the checks before any file is opened.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut config) = toml::from_str::<SidecarConfig>(text) else {
        return;
    };
    let nowhere = |p: &mut Option<PathBuf>| {
        if p.is_some() {
            *p = Some(PathBuf::from("/nonexistent/mcp-pqtls-fuzz/file"));
        }
    };
    for p in [
        &mut config.cert,
        &mut config.key,
        &mut config.client_ca,
        &mut config.ca,
        &mut config.client_cert,
        &mut config.client_key,
    ] {
        nowhere(p);
    }
    if let Some(auth) = &mut config.auth {
        nowhere(&mut auth.jwks_file);
        nowhere(&mut auth.jwks_ca);
    }
    if let Some(audit) = &mut config.audit {
        nowhere(&mut audit.path);
    }
    // Without a CA the client would read the system's roots on every input: slow, not ours.
    if config.ca.is_none() && config.insecure != Some(true) {
        config.ca = Some(PathBuf::from("/nonexistent/mcp-pqtls-fuzz/ca.pem"));
    }
    for mode in [Mode::Server, Mode::Client] {
        if let Err(e) = config.clone().resolve(mode) {
            let _ = e.to_string();
        }
    }
}

/// A request body as the gate reads it, with `Mcp-Method`/`Mcp-Name` headers and rule
/// globs. Input: `METHOD-HEADER \0 NAME-HEADER \0 GLOB \0 BODY`. Checks the body reader's
/// contract (kinds, a `tools/call` always names its tool), the header comparison, and
/// `Glob` against a plain reference matcher.
pub fn jsonrpc_body(data: &[u8]) {
    let mut parts = data.splitn(4, |b| *b == 0);
    let (Some(method_h), Some(name_h), Some(glob), Some(body)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let glob = std::str::from_utf8(glob)
        .ok()
        .and_then(|g| Glob::new(g).ok());
    let parsed = match jsonrpc::parse(body) {
        Ok(parsed) => parsed,
        Err(e) => {
            assert!(matches!(
                e.code(),
                jsonrpc::PARSE_ERROR | jsonrpc::INVALID_REQUEST
            ));
            return;
        }
    };
    assert!(!parsed.messages.is_empty());
    assert!(parsed.batch || parsed.messages.len() == 1);
    let rules: Vec<Rule> = glob
        .iter()
        .map(|g| Rule {
            name: "fuzz".into(),
            method: g.clone(),
            tool: Some(g.clone()),
            deny: false,
            require_pq: true,
            allow_identities: vec![g.clone()],
            allow_subjects: vec![],
            scopes: vec![],
            approval: None,
        })
        .collect();
    for m in &parsed.messages {
        match m.kind {
            Kind::Request => assert!(m.id.is_some() && m.method.is_some()),
            Kind::Notification => assert!(m.id.is_none() && m.method.is_some()),
            Kind::Response => assert!(m.method.is_none()),
        }
        if m.method.as_deref() == Some("tools/call") {
            assert!(
                m.name.is_some(),
                "a tools/call without a tool name got through"
            );
        }
        if let Some(method) = &m.method {
            if let Some(g) = &glob {
                assert_eq!(g.matches(method), glob_reference(&g.to_string(), method));
            }
            let _ = rules::check(
                &rules,
                &Summary {
                    method,
                    tool: m.tool(),
                    group: "X25519",
                    pq: false,
                    identity: m.name.as_deref(),
                    subject: None,
                    scopes: &[],
                },
            );
        }
    }
    let mut headers = HeaderMap::new();
    for (name, value) in [("mcp-method", method_h), ("mcp-name", name_h)] {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            if !value.is_empty() {
                headers.append(name, v);
            }
        }
    }
    if let Some(why) = crate::gate::header_mismatch(&headers, &parsed) {
        assert!(!why.is_empty());
    }
}

/// `*` matches any run of characters; everything else itself. Dynamic programming over
/// chars: slow and obviously right.
fn glob_reference(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for pc in &p {
        let mut next = vec![false; t.len() + 1];
        if *pc == '*' {
            let mut any = false;
            for j in 0..=t.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = row[j - 1] && t[j - 1] == *pc;
            }
        }
        row = next;
    }
    row[t.len()]
}

/// A certificate as a server (to the probe) or a client (mTLS identities) sends it: DER in,
/// our inspection (subject, SANs, key algorithm and size, ML-DSA OIDs mapped by us) and the
/// identities the policy matches on. Errors, never panics.
pub fn certificate_der(data: &[u8]) {
    if let Ok(info) = crate::certs::CertInfo::parse(data) {
        assert!(!info.key_algorithm.is_empty());
    }
    for id in crate::certs::identities(data) {
        assert!(!id.is_empty());
    }
}
