use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use super::*;
use crate::groups::Group::*;

const SERVER: &[Group] = &[X25519MLKEM768, SecP256r1MLKEM768, X25519, Secp256r1];

fn hello(offered: &[Group], peer: IpAddr, sni: Option<&str>) -> ClientHelloSummary {
    ClientHelloSummary {
        sni: sni.map(str::to_owned),
        offered_groups: offered.iter().map(|g| GroupId::from(*g)).collect(),
        alpn: vec!["h2".into()],
        peer,
        time: now(),
    }
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn policy(mode: PolicyMode, sunset_passed: Option<bool>, rules: &[&str]) -> Policy {
    Policy {
        mode,
        sunset: sunset_passed.map(|passed| {
            if passed {
                now() - Duration::from_secs(1)
            } else {
                now() + Duration::from_secs(86_400)
            }
        }),
        rules: rules.iter().map(|r| r.parse().unwrap()).collect(),
    }
}

/// What a decision should come to.
#[derive(Debug, PartialEq)]
enum Want {
    /// Ends on this group; `true` if it is a classical fallback.
    Ends(Group, bool),
    /// Refused for this kind of reason.
    NoPq,
    NoCommon,
    Sunset,
    Rule,
    /// Depends on the client certificate.
    Identity,
}
use Want::*;

fn outcome(p: &Policy, h: &ClientHelloSummary) -> Want {
    match p.decide(SERVER, h) {
        Ok(permit) if permit.identity_check.is_some() => Identity,
        Ok(permit) => {
            assert_eq!(
                permit.groups == GroupSet::PqOnly,
                permit.group.is_pq() && p.mode != PolicyMode::ClassicalAllowed
            );
            Ends(permit.group, permit.classical_fallback)
        }
        Err(r) => match r.reason {
            RefusalReason::NoPqGroupOffered => NoPq,
            RefusalReason::NoCommonGroup { .. } => NoCommon,
            RefusalReason::SunsetPassed(_) => Sunset,
            RefusalReason::Rule(_) => Rule,
            RefusalReason::ServerChoseClassical => unreachable!(),
        },
    }
}

const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
const V4_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));

// Offers, in client order.
const PQ_FIRST: &[Group] = &[X25519MLKEM768, X25519];
const CLASSICAL_FIRST_LISTS_PQ: &[Group] = &[X25519, Secp256r1, SecP256r1MLKEM768];
const CLASSICAL_ONLY: &[Group] = &[Secp256r1, X25519];
const PQ_ONLY_FOREIGN: &[Group] = &[MLKEM1024];
const NOTHING_KNOWN: &[Group] = &[];

#[test]
fn every_mode_against_every_offer() {
    use PolicyMode::*;
    let table: &[(PolicyMode, &[Group], Want)] = &[
        // The server's order wins among what the client offered.
        (PqRequired, PQ_FIRST, Ends(X25519MLKEM768, false)),
        (
            PqRequired,
            CLASSICAL_FIRST_LISTS_PQ,
            Ends(SecP256r1MLKEM768, false),
        ),
        (PqRequired, CLASSICAL_ONLY, NoPq),
        (PqRequired, PQ_ONLY_FOREIGN, NoCommon),
        (PqRequired, NOTHING_KNOWN, NoPq),
        (PqPreferred, PQ_FIRST, Ends(X25519MLKEM768, false)),
        (
            PqPreferred,
            CLASSICAL_FIRST_LISTS_PQ,
            Ends(SecP256r1MLKEM768, false),
        ),
        (PqPreferred, CLASSICAL_ONLY, Ends(X25519, true)),
        (PqPreferred, PQ_ONLY_FOREIGN, NoCommon),
        (PqPreferred, NOTHING_KNOWN, NoCommon),
        (ClassicalAllowed, PQ_FIRST, Ends(X25519MLKEM768, false)),
        (
            ClassicalAllowed,
            CLASSICAL_FIRST_LISTS_PQ,
            Ends(SecP256r1MLKEM768, false),
        ),
        (ClassicalAllowed, CLASSICAL_ONLY, Ends(X25519, false)),
        (ClassicalAllowed, PQ_ONLY_FOREIGN, NoCommon),
        (ClassicalAllowed, NOTHING_KNOWN, NoCommon),
    ];
    for (mode, offer, want) in table {
        let got = outcome(&policy(*mode, None, &[]), &hello(offer, V4, None));
        assert_eq!(&got, want, "{mode} with offer {offer:?}");
    }
}

#[test]
fn classical_allowed_follows_server_order_not_pq() {
    let server = [X25519, X25519MLKEM768];
    let p = Policy::new(PolicyMode::ClassicalAllowed);
    assert_eq!(
        p.decide(&server, &hello(PQ_FIRST, V4, None)).unwrap().group,
        X25519
    );
    // pq-preferred overrides the order: pq whenever the client lists one.
    let p = Policy::new(PolicyMode::PqPreferred);
    assert_eq!(
        p.decide(&server, &hello(PQ_FIRST, V4, None)).unwrap().group,
        X25519MLKEM768
    );
}

#[test]
fn every_rule_against_every_offer() {
    // (sunset passed?, rules, peer, sni, offer, want)
    type Row<'a> = (
        Option<bool>,
        &'a [&'a str],
        IpAddr,
        Option<&'a str>,
        &'a [Group],
        Want,
    );
    let legacy = "allow-classical sni:legacy.example.com";
    let prod = "require-pq sni:*.prod.example.com";
    let table: &[Row] = &[
        // Sunset.
        (
            Some(false),
            &[],
            V4,
            None,
            CLASSICAL_ONLY,
            Ends(X25519, true),
        ),
        (Some(true), &[], V4, None, CLASSICAL_ONLY, Sunset),
        (
            Some(true),
            &[],
            V4,
            None,
            PQ_FIRST,
            Ends(X25519MLKEM768, false),
        ),
        (
            Some(true),
            &[],
            V4,
            None,
            CLASSICAL_FIRST_LISTS_PQ,
            Ends(SecP256r1MLKEM768, false),
        ),
        // CIDR exceptions, IPv4 and IPv6.
        (
            Some(true),
            &["allow-classical cidr:10.0.0.0/8"],
            V4,
            None,
            CLASSICAL_ONLY,
            Ends(X25519, true),
        ),
        (
            Some(true),
            &["allow-classical cidr:10.0.0.0/8"],
            V4_OTHER,
            None,
            CLASSICAL_ONLY,
            Sunset,
        ),
        (
            Some(true),
            &["allow-classical cidr:2001:db8::/32"],
            V6,
            None,
            CLASSICAL_ONLY,
            Ends(X25519, true),
        ),
        (
            Some(true),
            &["allow-classical cidr:2001:db8::/32"],
            V4,
            None,
            CLASSICAL_ONLY,
            Sunset,
        ),
        (
            None,
            &["require-pq cidr:10.1.2.3"],
            V4,
            None,
            CLASSICAL_ONLY,
            Rule,
        ),
        (
            None,
            &["require-pq cidr:10.1.2.3"],
            V4_OTHER,
            None,
            CLASSICAL_ONLY,
            Ends(X25519, true),
        ),
        (
            None,
            &["require-pq cidr:10.0.0.0/8"],
            V4,
            None,
            PQ_FIRST,
            Ends(X25519MLKEM768, false),
        ),
        // SNI exceptions, exact and wildcard.
        (
            Some(true),
            &[legacy],
            V4,
            Some("LEGACY.example.com"),
            CLASSICAL_ONLY,
            Ends(X25519, true),
        ),
        (
            Some(true),
            &[legacy],
            V4,
            Some("other.example.com"),
            CLASSICAL_ONLY,
            Sunset,
        ),
        (Some(true), &[legacy], V4, None, CLASSICAL_ONLY, Sunset),
        (
            None,
            &[prod],
            V4,
            Some("api.prod.example.com"),
            CLASSICAL_ONLY,
            Rule,
        ),
        (
            None,
            &[prod],
            V4,
            Some("a.b.prod.example.com"),
            CLASSICAL_ONLY,
            Ends(X25519, true),
        ),
        (
            None,
            &[prod],
            V4,
            Some("prod.example.com"),
            CLASSICAL_ONLY,
            Ends(X25519, true),
        ),
        (
            None,
            &[prod],
            V4,
            Some("api.prod.example.com"),
            PQ_FIRST,
            Ends(X25519MLKEM768, false),
        ),
        // First match wins.
        (
            Some(true),
            &[
                "require-pq cidr:10.1.0.0/16",
                "allow-classical cidr:10.0.0.0/8",
            ],
            V4,
            None,
            CLASSICAL_ONLY,
            Rule,
        ),
        (
            Some(true),
            &[
                "allow-classical cidr:10.0.0.0/8",
                "require-pq cidr:10.1.0.0/16",
            ],
            V4,
            None,
            CLASSICAL_ONLY,
            Ends(X25519, true),
        ),
        // Identity rules: undecidable from the ClientHello when they could change the outcome.
        (
            Some(true),
            &["allow-classical id:spiffe://corp/legacy/*"],
            V4,
            None,
            CLASSICAL_ONLY,
            Identity,
        ),
        (
            None,
            &["require-pq id:spiffe://corp/prod/*"],
            V4,
            None,
            CLASSICAL_ONLY,
            Identity,
        ),
        (
            None,
            &["allow-classical id:spiffe://corp/legacy/*"],
            V4,
            None,
            CLASSICAL_ONLY,
            Ends(X25519, true),
        ),
        (
            Some(true),
            &["require-pq id:spiffe://corp/prod/*"],
            V4,
            None,
            CLASSICAL_ONLY,
            Sunset,
        ),
        (
            Some(true),
            &["allow-classical cidr:10.0.0.0/8", "require-pq id:x"],
            V4,
            None,
            CLASSICAL_ONLY,
            Ends(X25519, true),
        ),
        (
            Some(true),
            &["allow-classical id:spiffe://corp/legacy/*"],
            V4,
            None,
            PQ_FIRST,
            Ends(X25519MLKEM768, false),
        ),
        // No common group stays a refusal whatever the rules say.
        (
            None,
            &["allow-classical cidr:0.0.0.0/0"],
            V4,
            None,
            NOTHING_KNOWN,
            NoCommon,
        ),
    ];
    for (sunset, rules, peer, sni, offer, want) in table {
        let p = policy(PolicyMode::PqPreferred, *sunset, rules);
        let got = outcome(&p, &hello(offer, *peer, *sni));
        assert_eq!(
            &got, want,
            "sunset passed {sunset:?}, rules {rules:?}, peer {peer}, sni {sni:?}, offer {offer:?}"
        );
    }
}

#[test]
fn identity_check_applies_rules_then_default() {
    let p = policy(
        PolicyMode::PqPreferred,
        Some(true),
        &[
            "require-pq id:spiffe://corp/legacy/bad",
            "allow-classical id:spiffe://corp/legacy/*",
        ],
    );
    let permit = p.decide(SERVER, &hello(CLASSICAL_ONLY, V4, None)).unwrap();
    let check = permit.identity_check.unwrap();
    assert!(check.requires_certificate());
    let allowed = check.check(&["spiffe://corp/legacy/ok".into()]).unwrap();
    assert_eq!(
        allowed.unwrap().to_string(),
        "allow-classical id:spiffe://corp/legacy/*"
    );
    let refused = check
        .check(&["spiffe://corp/legacy/bad".into()])
        .unwrap_err();
    assert!(matches!(refused.reason, RefusalReason::Rule(_)));
    let refused = check.check(&[]).unwrap_err();
    assert!(matches!(refused.reason, RefusalReason::SunsetPassed(_)));

    let p = policy(
        PolicyMode::PqPreferred,
        None,
        &["require-pq id:*.prod.corp"],
    );
    let permit = p.decide(SERVER, &hello(CLASSICAL_ONLY, V4, None)).unwrap();
    let check = permit.identity_check.unwrap();
    assert!(!check.requires_certificate());
    assert_eq!(check.check(&[]), Ok(None));
    assert_eq!(check.check(&["db.dev.corp".into()]), Ok(None));
    assert!(check.check(&["db.prod.corp".into()]).is_err());
}

#[test]
fn ipv4_mapped_peers_match_ipv4_rules() {
    let p = policy(
        PolicyMode::PqPreferred,
        Some(true),
        &["allow-classical cidr:10.0.0.0/8"],
    );
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 9, 9, 9).to_ipv6_mapped());
    assert_eq!(
        outcome(&p, &hello(CLASSICAL_ONLY, mapped, None)),
        Ends(X25519, true)
    );
}

#[test]
fn refusals_say_what_to_fix() {
    let p = Policy::new(PolicyMode::PqRequired);
    let err = p
        .decide(SERVER, &hello(&[X25519, Secp256r1], V4, None))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "client offered no post-quantum group (offered: X25519, secp256r1); policy pq-required"
    );
    let err = p
        .decide(SERVER, &hello(PQ_ONLY_FOREIGN, V4, None))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no group in common: server allows X25519MLKEM768, SecP256r1MLKEM768 (offered: MLKEM1024); policy pq-required"
    );
    let p = policy(
        PolicyMode::PqPreferred,
        None,
        &["require-pq sni:*.prod.example.com"],
    );
    let err = p
        .decide(
            SERVER,
            &hello(CLASSICAL_ONLY, V4, Some("a.prod.example.com")),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "classical key exchange refused by fallback rule `require-pq sni:*.prod.example.com` (offered: secp256r1, X25519); policy pq-preferred"
    );
    let p = Policy {
        sunset: Some(humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap()),
        ..Policy::default()
    };
    let err = p.decide(SERVER, &hello(&[X25519], V4, None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "classical key exchange is no longer allowed: sunset 2026-01-01T00:00:00Z has passed and the client offered no post-quantum group (offered: X25519); policy pq-preferred"
    );
}

#[test]
fn a_refusal_names_at_most_sixteen_offered_groups() {
    // A 64 KiB ClientHello can list ~32k groups; the refusal line must not echo them all.
    let mut h = hello(&[], V4, None);
    h.offered_groups = (0..32_000u16).map(|i| GroupId(0x8000 + i)).collect();
    let err = Policy::new(PolicyMode::PqRequired)
        .decide(SERVER, &h)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(" ... and 31984 more); policy pq-required"),
        "{err}"
    );
    assert!(err.len() < 400, "{} bytes: {err}", err.len());
}

#[test]
fn client_offer_and_check_follow_the_mode() {
    let groups = [X25519, X25519MLKEM768, Secp256r1, MLKEM1024];
    assert_eq!(
        PolicyMode::PqRequired.client_offer(&groups),
        [X25519MLKEM768, MLKEM1024]
    );
    assert_eq!(
        PolicyMode::PqPreferred.client_offer(&groups),
        [X25519MLKEM768, MLKEM1024, X25519, Secp256r1]
    );
    assert_eq!(PolicyMode::ClassicalAllowed.client_offer(&groups), groups);

    let x25519 = GroupId::from(X25519);
    assert!(PolicyMode::PqRequired.check_negotiated(x25519).is_err());
    assert_eq!(PolicyMode::PqPreferred.check_negotiated(x25519), Ok(true));
    assert_eq!(
        PolicyMode::ClassicalAllowed.check_negotiated(x25519),
        Ok(false)
    );
    assert_eq!(
        PolicyMode::PqRequired.check_negotiated(X25519MLKEM768.into()),
        Ok(false)
    );
}

#[test]
fn validation_names_the_fix() {
    let p = Policy::new(PolicyMode::PqRequired);
    let err = p.validate(&[X25519, Secp256r1], false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "policy pq-required needs a post-quantum group, but groups has none (X25519, secp256r1); add X25519MLKEM768"
    );
    assert!(matches!(
        p.validate(&[], false),
        Err(PolicyError::Groups(_))
    ));
    assert!(Policy::new(PolicyMode::ClassicalAllowed)
        .validate(&[X25519], false)
        .is_ok());

    let p = policy(PolicyMode::PqRequired, Some(true), &[]);
    assert!(matches!(
        p.validate(SERVER, false),
        Err(PolicyError::RulesNeedPqPreferred(_))
    ));

    let p = policy(
        PolicyMode::PqPreferred,
        None,
        &["allow-classical id:spiffe://x/*"],
    );
    assert!(matches!(
        p.validate(SERVER, false),
        Err(PolicyError::IdentityRuleWithoutClientCerts(_))
    ));
    assert!(p.validate(SERVER, true).is_ok());
}

#[test]
fn rules_parse_and_print_back() {
    for s in [
        "allow-classical cidr:10.0.0.0/8",
        "require-pq cidr:2001:db8::/32",
        "require-pq sni:*.prod.example.com",
        "allow-classical id:spiffe://corp/legacy/*",
    ] {
        assert_eq!(s.parse::<FallbackRule>().unwrap().to_string(), s);
    }
    assert_eq!(
        "allow-classical cidr:192.0.2.7"
            .parse::<FallbackRule>()
            .unwrap()
            .to_string(),
        "allow-classical cidr:192.0.2.7/32"
    );
    for bad in [
        "allow-classical",
        "deny cidr:1.2.3.4",
        "allow-classical cidr:nope",
        "allow-classical host:x",
        "require-pq sni:",
    ] {
        let err = bad.parse::<FallbackRule>().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid fallback rule `{bad}`")),
            "{err}"
        );
    }
    assert_eq!("PQ-Required".parse(), Ok(PolicyMode::PqRequired));
    assert!("strict"
        .parse::<PolicyMode>()
        .unwrap_err()
        .to_string()
        .contains("pq-preferred"));
}
