//! `mcp-pqtls probe`: what a TLS endpoint accepts, prefers and refuses, learnt by real
//! handshakes, one finding per handshake (or a few), in a [`ProbeReport`].
//!
//! The probe is an ordinary rustls client with one group list per handshake. rustls sends one
//! key share (two when a hybrid leads and its classical component is listed too), so
//! preferences are revealed through the server's choice and its HelloRetryRequests: offered
//! a classical key share with a pq group listed behind it, a pq-preferring server retries to
//! the pq group, a merely pq-capable one settles for the classical share.
//!
//! # Example
//! ```no_run
//! # async fn run() {
//! use mcp_pqtls::probe::{probe, ProbeOptions, Requirement};
//! let target = "mcp.example.com:443".parse().unwrap();
//! let mut report = probe(&target, &ProbeOptions::default()).await;
//! report.require(&[Requirement::Pq]);
//! println!("{}", report.table());
//! std::process::exit(report.exit_code().into());
//! # }
//! ```

mod attempt;
mod report;
mod target;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;

use crate::certs::{CertInfo, Identity};
use crate::crypto::{provider, tls12_provider, CipherSuite};
use crate::groups::{display_list, Group, GroupId};
use crate::tls::Trust;
use attempt::{Attempt, Dialer, Verification};

pub use report::{
    Certificate, GroupFinding, ProbeReport, Requirement, RequirementResult, ServerPreference,
    SuiteFinding, Trial, Verdict, Wire, WireSize, SCHEMA,
};
pub use target::{Target, TargetError, TargetsFileError};

/// Time allowed for each handshake (TCP connect included) by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the probe connects and what it tries.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProbeOptions {
    /// The server name to send and verify instead of the target's host. Default: the host
    /// (none for an IP address).
    pub sni: Option<String>,
    /// What the chain is verified against. Verification failure is a finding, not an end:
    /// the probe goes on. Default is [`Trust::System`].
    pub trust: Trust,
    /// How to name the trust in the report when it is [`Trust::Roots`] (e.g. the CA file).
    pub ca_name: Option<String>,
    /// A client certificate for servers that ask for one. Default: none.
    pub client_identity: Option<Identity>,
    /// The groups probed one by one, in this order. Default: the whole catalogue.
    pub groups: Vec<Group>,
    /// ALPN protocols offered. Default: h2, http/1.1.
    pub alpn: Vec<Vec<u8>>,
    /// Time for each handshake. Default: [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            sni: None,
            trust: Trust::System,
            ca_name: None,
            client_identity: None,
            groups: Group::ALL.to_vec(),
            alpn: crate::tls::DEFAULT_ALPN
                .iter()
                .map(|p| p.to_vec())
                .collect(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Probes each target, at most `parallel` at once; one report per target, in order.
pub async fn probe_all(
    targets: &[Target],
    options: &ProbeOptions,
    parallel: usize,
) -> Vec<ProbeReport> {
    let options = Arc::new(options.clone());
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let tasks: Vec<_> = targets
        .iter()
        .cloned()
        .map(|target| {
            let options = options.clone();
            let permits = permits.clone();
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                probe(&target, &options).await
            })
        })
        .collect();
    let mut reports = Vec::with_capacity(tasks.len());
    for (task, target) in tasks.into_iter().zip(targets) {
        reports.push(match task.await {
            Ok(report) => report,
            Err(e) => ProbeReport::empty(target).unreachable(format!("probe failed: {e}")),
        });
    }
    reports
}

/// Probes one endpoint. Never fails: what could not be learnt is in the report (verdict
/// `unreachable` with an `error` when nothing could).
pub async fn probe(target: &Target, options: &ProbeOptions) -> ProbeReport {
    let mut report = ProbeReport::empty(target);
    let addr = match reachable_address(target, options.timeout).await {
        Ok(addr) => addr,
        Err(e) => return report.unreachable(e),
    };
    report.address = Some(addr.to_string());
    let name = options.sni.as_deref().unwrap_or(&target.host);
    let server_name = match ServerName::try_from(name.to_owned()) {
        Ok(n) => n,
        Err(_) => {
            return report.unreachable(format!(
                "`{name}` is not a valid server name (DNS name or IP address)"
            ))
        }
    };
    report.sni = match &server_name {
        ServerName::DnsName(d) => Some(d.as_ref().to_owned()),
        _ => None,
    };
    let (verifier, verified_against) = match verifier(options) {
        Ok(Some((v, label))) => (Some(v), Some(label)),
        Ok(None) => (None, None),
        Err(e) => return report.unreachable(e),
    };
    let dialer = Dialer {
        addr,
        server_name,
        verifier,
        client_cert: options
            .client_identity
            .as_ref()
            .map(|i| i.certified_key().clone()),
        alpn: options.alpn.clone(),
        timeout: options.timeout,
    };
    Prober {
        dialer,
        options,
        report,
        verified_against,
    }
    .run()
    .await
}

/// The first of the target's addresses that accepts TCP (a dual-stack name may resolve to an
/// address this host cannot reach first). Every attempt then uses that one address.
async fn reachable_address(target: &Target, timeout: Duration) -> Result<SocketAddr, String> {
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => return Err(format!("cannot resolve {}: {e}", target.host)),
        Err(_) => return Err(format!("cannot resolve {} within {timeout:?}", target.host)),
    };
    let mut errors = Vec::new();
    for addr in &addrs {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(*addr),
            Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
            Err(_) => errors.push(format!("{addr}: no TCP connection within {timeout:?}")),
        }
    }
    match errors.is_empty() {
        true => Err(format!("{} has no address", target.host)),
        false => Err(format!("cannot connect: {}", errors.join("; "))),
    }
}

/// A chain verifier and how the report names what it trusts.
type Verifier = (Arc<dyn ServerCertVerifier>, String);

/// The chain verifier; `None` with `--insecure`.
fn verifier(options: &ProbeOptions) -> Result<Option<Verifier>, String> {
    let (roots, label) = match &options.trust {
        Trust::InsecureSkipVerify(_) => return Ok(None),
        Trust::Roots(roots) => (
            roots.clone(),
            options
                .ca_name
                .clone()
                .unwrap_or_else(|| "the given CA".to_owned()),
        ),
        Trust::System => (
            Arc::new(crate::certs::system_roots().map_err(|e| e.to_string())?),
            "system roots".to_owned(),
        ),
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(
        roots,
        provider(&Group::ALL, &CipherSuite::ALL),
    )
    .build()
    .map_err(|e| format!("CA: {e}"))?;
    Ok(Some((verifier, label)))
}

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// One target's probing, step by step.
struct Prober<'a> {
    dialer: Dialer,
    options: &'a ProbeOptions,
    report: ProbeReport,
    verified_against: Option<String>,
}

impl Prober<'_> {
    async fn tls13(&self, groups: &[Group]) -> Attempt {
        self.dialer
            .attempt(groups, provider(groups, &CipherSuite::ALL), TLS13)
            .await
    }

    async fn run(mut self) -> ProbeReport {
        if self.options.groups.is_empty() {
            return self.report.unreachable("no groups to probe".to_owned());
        }
        // Each group alone. A port with nothing (or no TLS) behind it fails the same way for
        // every group: stop if the first attempt finds no TLS server there.
        let mut alone = Vec::new();
        for &group in &self.options.groups {
            let attempt = self.tls13(&[group]).await;
            if let Err(e) = &attempt.result {
                if alone.is_empty() && e.is_unreachable() {
                    return self.report.unreachable(e.to_string());
                }
            }
            alone.push(attempt);
        }
        let accepted: Vec<Group> = alone
            .iter()
            .filter(|a| a.ok().is_some())
            .map(|a| a.offered[0])
            .collect();
        let pq_accepted: Vec<Group> = accepted.iter().copied().filter(|g| g.is_pq()).collect();

        // A client offering only classical groups: always the catalogue's, whatever
        // `--groups` probes, so that the verdict does not depend on it.
        let classical: Vec<Group> = Group::ALL.into_iter().filter(|g| !g.is_pq()).collect();
        let mut classical_trial = self.tls13(&classical).await;
        if classical_trial
            .result
            .as_ref()
            .is_err_and(|e| !e.is_refusal())
        {
            // A timeout or a reset says nothing about policy: ask once more.
            classical_trial = self.tls13(&classical).await;
        }
        let mut classical_fallback = match &classical_trial.result {
            Ok(_) => Some(true),
            Err(e) if e.is_refusal() => Some(false),
            Err(_) => None,
        };
        // Refused over TLS 1.3: does TLS 1.2 let a classical client in?
        if classical_fallback == Some(false) {
            let tls12 = self
                .dialer
                .attempt(&classical, tls12_provider(&classical), TLS12)
                .await;
            match &tls12.result {
                Ok(_) => {
                    classical_fallback = Some(true);
                    if accepted.is_empty() {
                        // A TLS 1.2-only server: say so on each version refusal.
                        for a in &mut alone {
                            if let Err(e) = &mut a.result {
                                if e.alert().as_deref() == Some("protocol_version") {
                                    let refusal = std::mem::replace(e, attempt::Failure::Closed);
                                    *e = attempt::Failure::NoTls13(Box::new(refusal));
                                }
                            }
                        }
                    }
                    classical_trial = tls12;
                }
                Err(e) if e.is_refusal() => {}
                Err(_) => classical_fallback = None,
            }
        }

        // Upgrade: a classical key share with the accepted pq groups listed behind it.
        let upgrade = if pq_accepted.is_empty() {
            None
        } else {
            let first_classical = accepted
                .iter()
                .copied()
                .find(|g| !g.is_pq())
                .unwrap_or(classical[0]);
            let offer: Vec<Group> = std::iter::once(first_classical)
                .chain(pq_accepted.iter().copied())
                .collect();
            Some(self.tls13(&offer).await)
        };
        let upgrade_to_pq = upgrade.as_ref().and_then(|t| match &t.result {
            Ok(h) => Some(h.group.is_pq()),
            Err(e) if e.is_refusal() => Some(false),
            Err(_) => None,
        });

        let preference = self.server_preference(&accepted).await;
        let default = self.tls13(&self.options.groups).await;

        // The handshake the certificate, version, suite and ALPN are reported from.
        let main = [Some(&default)]
            .into_iter()
            .chain(alone.iter().map(Some))
            .chain([Some(&classical_trial)])
            .flatten()
            .find(|a| a.ok().is_some());
        let suites = match main.and_then(|m| m.chosen()).and_then(GroupId::group) {
            Some(group)
                if main
                    .and_then(|m| m.ok())
                    .is_some_and(|h| h.info.tls_version == "TLSv1.3") =>
            {
                let mut found = Vec::new();
                for suite in CipherSuite::ALL {
                    let a = self
                        .dialer
                        .attempt(&[group], provider(&[group], &[suite]), TLS13)
                        .await;
                    found.push(SuiteFinding {
                        name: suite.name().to_owned(),
                        accepted: a.ok().is_some(),
                        error: a.result.as_ref().err().map(ToString::to_string),
                    });
                }
                found
            }
            _ => Vec::new(),
        };

        let r = &mut self.report;
        r.groups = alone.iter().map(group_finding).collect();
        r.classical_fallback = classical_fallback;
        r.classical = Some(trial(&classical_trial));
        r.upgrade_to_pq = upgrade_to_pq;
        r.upgrade = upgrade.as_ref().map(trial);
        r.server_preference = preference;
        r.default_group = default.chosen().map(|g| g.to_string());
        r.cipher_suites = suites;
        r.wire = Wire {
            pq: wire(&alone, true),
            classical: wire(&alone, false),
        };
        if let Some(h) = main.and_then(Attempt::ok) {
            r.tls_version = Some(h.info.tls_version.clone());
            r.cipher_suite = Some(h.info.cipher_suite.clone());
            r.alpn = h.info.alpn.clone();
            r.certificate = Some(Certificate {
                chain: h
                    .chain
                    .iter()
                    .filter_map(|c| CertInfo::parse(c).ok())
                    .collect(),
                chain_length: h.chain.len(),
                verified: match h.verification {
                    Verification::Verified => Some(true),
                    Verification::Failed(_) => Some(false),
                    Verification::NotChecked => None,
                },
                verified_against: self.verified_against.clone(),
                verify_error: match &h.verification {
                    Verification::Failed(e) => Some(e.clone()),
                    _ => None,
                },
                signature_scheme: h.info.signature_scheme.clone(),
                client_cert_requested: h.client_cert_requested,
            });
        }
        // A classical group accepted alone counts too, should the combined trial have failed.
        let classical_accepted = match classical_fallback {
            None if accepted.iter().any(|g| !g.is_pq()) => Some(true),
            other => other,
        };
        r.verdict =
            Verdict::from_findings(!pq_accepted.is_empty(), classical_accepted, upgrade_to_pq);
        r.summary = summary(r, &pq_accepted, &classical_trial, upgrade.as_ref());
        if r.verdict == Verdict::Unreachable {
            r.error = Some(format!(
                "no offer completed a handshake; the first, {}: {}",
                display_list(&alone[0].offered),
                alone[0]
                    .result
                    .as_ref()
                    .err()
                    .map_or_else(String::new, ToString::to_string)
            ));
        }
        self.report
    }

    /// Offers the accepted groups in our order and reversed: the same pick both times means
    /// the server's order decides, and then offering what remains after each pick reveals it.
    async fn server_preference(&self, accepted: &[Group]) -> Option<ServerPreference> {
        if accepted.len() < 2 {
            return None;
        }
        let reversed: Vec<Group> = accepted.iter().rev().copied().collect();
        let first = self.tls13(accepted).await;
        let second = self.tls13(&reversed).await;
        let mut trials = vec![trial(&first), trial(&second)];
        let (Some(a), Some(b)) = (first.chosen(), second.chosen()) else {
            return Some(ServerPreference {
                follows: "unknown".to_owned(),
                order: Vec::new(),
                trials,
            });
        };
        let follows = if a == b {
            "server"
        } else if a == GroupId::from(accepted[0]) && b == GroupId::from(reversed[0]) {
            "client"
        } else {
            "mixed"
        };
        let mut order = Vec::new();
        if follows == "server" {
            let mut remaining: Vec<Group> = accepted
                .iter()
                .copied()
                .filter(|g| GroupId::from(*g) != a)
                .collect();
            order.push(a.to_string());
            while remaining.len() > 1 {
                // Reversed, so that the server's pick is not just our key share.
                let offer: Vec<Group> = remaining.iter().rev().copied().collect();
                let t = self.tls13(&offer).await;
                trials.push(trial(&t));
                let Some(pick) = t
                    .chosen()
                    .and_then(GroupId::group)
                    .filter(|g| remaining.contains(g))
                else {
                    break;
                };
                order.push(pick.name().to_owned());
                remaining.retain(|g| *g != pick);
            }
            if let [last] = remaining.as_slice() {
                order.push(last.name().to_owned());
            }
        }
        Some(ServerPreference {
            follows: follows.to_owned(),
            order,
            trials,
        })
    }
}

impl ProbeReport {
    fn empty(target: &Target) -> Self {
        Self {
            schema: SCHEMA,
            target: target.to_string(),
            address: None,
            sni: None,
            verdict: Verdict::Unreachable,
            summary: String::new(),
            error: None,
            groups: Vec::new(),
            upgrade_to_pq: None,
            upgrade: None,
            classical_fallback: None,
            classical: None,
            server_preference: None,
            default_group: None,
            certificate: None,
            tls_version: None,
            cipher_suite: None,
            cipher_suites: Vec::new(),
            alpn: None,
            wire: Wire::default(),
            requirements: Vec::new(),
        }
    }

    fn unreachable(mut self, error: String) -> Self {
        self.verdict = Verdict::Unreachable;
        self.summary = "no TLS handshake completed".to_owned();
        self.error = Some(error);
        self
    }
}

fn names(groups: &[Group]) -> Vec<String> {
    groups.iter().map(|g| g.name().to_owned()).collect()
}

fn trial(a: &Attempt) -> Trial {
    Trial {
        offered: names(&a.offered),
        key_shares: a.key_shares.iter().map(ToString::to_string).collect(),
        chosen: a.chosen().map(|g| g.to_string()),
        hello_retry: a.ok().is_some_and(|h| h.info.hello_retry),
        error: a.result.as_ref().err().map(ToString::to_string),
    }
}

fn group_finding(a: &Attempt) -> GroupFinding {
    let group = a.offered[0];
    GroupFinding {
        name: group.name().to_owned(),
        pq: group.is_pq(),
        accepted: a.ok().is_some(),
        hello_retry: a.ok().is_some_and(|h| h.info.hello_retry),
        handshake_ms: a.handshake_ms.map(|ms| (ms * 100.0).round() / 100.0),
        alert: a.result.as_ref().err().and_then(attempt::Failure::alert),
        error: a.result.as_ref().err().map(ToString::to_string),
        client_hello_bytes: a.client_hello_bytes,
        server_flight_bytes: a.server_flight_bytes,
    }
}

/// The bytes of the first accepted group of the kind, else of the first probed.
fn wire(alone: &[Attempt], pq: bool) -> Option<WireSize> {
    let of_kind = || alone.iter().filter(|a| a.offered[0].is_pq() == pq);
    let a = of_kind()
        .find(|a| a.ok().is_some())
        .or_else(|| of_kind().next())?;
    Some(WireSize {
        group: a.offered[0].name().to_owned(),
        client_hello_bytes: a.client_hello_bytes,
        server_flight_bytes: a.server_flight_bytes,
    })
}

fn summary(
    r: &ProbeReport,
    pq: &[Group],
    classical: &Attempt,
    upgrade: Option<&Attempt>,
) -> String {
    let err = |a: &Attempt| {
        a.result
            .as_ref()
            .err()
            .map_or_else(String::new, ToString::to_string)
    };
    let pq = display_list(pq);
    let classical_part = match &classical.result {
        Ok(h) if h.info.tls_version == "TLSv1.2" => {
            format!("accepts a classical-only client over TLS 1.2 ({})", h.group)
        }
        Ok(h) => format!("accepts classical-only clients ({})", h.group),
        Err(e) if r.classical_fallback == Some(false) => {
            format!("refuses a client offering only classical groups ({e})")
        }
        Err(e) => format!("classical fallback could not be determined ({e})"),
    };
    let upgrade_part = match upgrade.map(|u| &u.result) {
        Some(Ok(h)) if h.group.is_pq() && h.info.hello_retry => {
            format!(
                "moves a client listing a pq group onto {} (HelloRetryRequest)",
                h.group
            )
        }
        Some(Ok(h)) if h.group.is_pq() => {
            format!("moves a client listing a pq group onto {}", h.group)
        }
        Some(Ok(h)) => format!(
            "settles for {} when the client's key share is classical",
            h.group
        ),
        Some(Err(e)) => format!("a client listing pq behind a classical key share fails ({e})"),
        None => String::new(),
    };
    match r.verdict {
        Verdict::PqRequired => format!("accepts {pq}; {classical_part}"),
        Verdict::PqPreferred | Verdict::PqAvailable => {
            format!("accepts {pq}; {classical_part}; {upgrade_part}")
        }
        Verdict::ClassicalOnly => match &classical.result {
            Ok(h) => format!(
                "accepts no post-quantum group; classical {} over {}",
                h.group, h.info.tls_version
            ),
            Err(_) => format!("accepts no post-quantum group; {}", err(classical)),
        },
        Verdict::Unreachable => "no TLS handshake completed".to_owned(),
    }
}
