//! The probe report: its JSON schema (`docs/probe-schema.md`), the verdict and requirement
//! checks (pure functions over the findings), and the table a person reads.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::Serialize;

use crate::certs::CertInfo;
use crate::groups::{Group, GroupError};

/// The `schema` field of every JSON report. Bumped on any incompatible change.
pub const SCHEMA: &str = "mcp-pqtls.probe/v1";

/// The endpoint's post-quantum posture in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Verdict {
    /// Accepts pq groups and refuses a client that offers only classical ones.
    PqRequired,
    /// Accepts classical-only clients, but moves a client that lists a pq group onto it
    /// (with a HelloRetryRequest when its key share was classical).
    PqPreferred,
    /// Accepts pq groups, but settles for classical when the client's key share is classical.
    PqAvailable,
    /// Accepts no pq group.
    ClassicalOnly,
    /// No TLS handshake completed: nothing listening, not TLS, or every offer refused.
    Unreachable,
}

impl Verdict {
    /// The word, as in the JSON and the table.
    pub fn name(self) -> &'static str {
        match self {
            Self::PqRequired => "pq-required",
            Self::PqPreferred => "pq-preferred",
            Self::PqAvailable => "pq-available",
            Self::ClassicalOnly => "classical-only",
            Self::Unreachable => "unreachable",
        }
    }

    /// The verdict the findings support.
    ///
    /// `pq_accepted`: some pq group completed a handshake. `classical_accepted`: a client
    /// offering only classical groups completed one (TLS 1.2 included), `Some(false)` only when
    /// the server positively refused it (an alert or a hang-up), `None` when the trial failed
    /// in a way that says nothing. `upgrade_to_pq`: a client listing a pq group behind a
    /// classical key share ended on pq. `pq-required` is never claimed on a doubt.
    pub fn from_findings(
        pq_accepted: bool,
        classical_accepted: Option<bool>,
        upgrade_to_pq: Option<bool>,
    ) -> Self {
        match (pq_accepted, classical_accepted) {
            (false, Some(true)) => Self::ClassicalOnly,
            (false, _) => Self::Unreachable,
            (true, Some(false)) => Self::PqRequired,
            (true, _) if upgrade_to_pq == Some(true) => Self::PqPreferred,
            (true, _) => Self::PqAvailable,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the endpoint must show for `--require` to be met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Requirement {
    /// `pq`: the verdict is `pq-required` or `pq-preferred`.
    Pq,
    /// `pq-only`: the verdict is `pq-required`.
    PqOnly,
    /// A group name: that group is accepted when offered alone.
    Group(Group),
}

impl FromStr for Requirement {
    type Err = GroupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "pq" => Ok(Self::Pq),
            "pq-only" => Ok(Self::PqOnly),
            other => other.parse().map(Self::Group),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pq => f.write_str("pq"),
            Self::PqOnly => f.write_str("pq-only"),
            Self::Group(g) => f.write_str(g.name()),
        }
    }
}

/// Everything the probe found out about one endpoint. Serialized as the JSON report.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ProbeReport {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// The target as given.
    pub target: String,
    /// The address probed (the first one the name resolved to).
    pub address: Option<String>,
    /// The server name sent (none for an IP address without `--sni`).
    pub sni: Option<String>,
    /// The one-word posture.
    pub verdict: Verdict,
    /// Why, in a sentence.
    pub summary: String,
    /// Why the probe could not run, when the verdict is `unreachable`.
    pub error: Option<String>,
    /// Each group offered alone.
    pub groups: Vec<GroupFinding>,
    /// Whether a client listing a pq group behind a classical key share ended on pq.
    /// `null` when not testable (no pq group accepted).
    pub upgrade_to_pq: Option<bool>,
    /// The trial behind `upgrade_to_pq`.
    pub upgrade: Option<Trial>,
    /// Whether a client offering only classical groups is accepted.
    pub classical_fallback: Option<bool>,
    /// The trial behind `classical_fallback`.
    pub classical: Option<Trial>,
    /// Whose order decides the group, and the order revealed.
    pub server_preference: Option<ServerPreference>,
    /// The group a client offering every probed group (in catalogue order) ends on.
    pub default_group: Option<String>,
    /// The server's certificate and how it authenticated.
    pub certificate: Option<Certificate>,
    /// `TLSv1.3` (or `TLSv1.2` for a server without 1.3).
    pub tls_version: Option<String>,
    /// The suite chosen when all were offered.
    pub cipher_suite: Option<String>,
    /// Each TLS 1.3 suite offered alone.
    pub cipher_suites: Vec<SuiteFinding>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// Bytes on the wire for a pq and a classical handshake.
    pub wire: Wire,
    /// `--require` checks, in the order given.
    pub requirements: Vec<RequirementResult>,
}

/// One group offered alone.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct GroupFinding {
    /// IANA name.
    pub name: String,
    /// Post-quantum.
    pub pq: bool,
    /// The handshake completed on this group.
    pub accepted: bool,
    /// The server sent a HelloRetryRequest (never expected for a group offered alone).
    pub hello_retry: bool,
    /// From ClientHello to a completed handshake (accepted only).
    pub handshake_ms: Option<f64>,
    /// The alert's RFC 8446 name, when refused with one.
    pub alert: Option<String>,
    /// Why it was refused.
    pub error: Option<String>,
    /// Our ClientHello's size on the wire.
    pub client_hello_bytes: Option<usize>,
    /// The server's flight up to its Finished.
    pub server_flight_bytes: Option<usize>,
}

/// One handshake made to test a behaviour.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Trial {
    /// `supported_groups` sent, in order.
    pub offered: Vec<String>,
    /// The groups our ClientHello carried key shares for.
    pub key_shares: Vec<String>,
    /// The negotiated group.
    pub chosen: Option<String>,
    /// The server sent a HelloRetryRequest.
    pub hello_retry: bool,
    /// Why it failed.
    pub error: Option<String>,
}

/// Whose order decides the group.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ServerPreference {
    /// `server`: the same group whatever our order (the server's own order decides);
    /// `client`: the group of our first key share each time; `mixed`: neither.
    pub follows: String,
    /// The server's order of preference among the accepted groups, revealed by offering
    /// what remains after each pick (`follows = server` only).
    pub order: Vec<String>,
    /// The handshakes behind it.
    pub trials: Vec<Trial>,
}

/// The server's certificate chain and authentication.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Certificate {
    /// End-entity first, as sent.
    pub chain: Vec<CertInfo>,
    /// Number of certificates the server sent.
    pub chain_length: usize,
    /// `true` verified, `false` failed, `null` not checked (`--insecure`).
    pub verified: Option<bool>,
    /// What it was verified against: the `--ca` file or `system roots`.
    pub verified_against: Option<String>,
    /// Why verification failed.
    pub verify_error: Option<String>,
    /// The CertificateVerify signature scheme (IANA name).
    pub signature_scheme: Option<String>,
    /// The server sent a CertificateRequest (it asks for client certificates).
    pub client_cert_requested: bool,
}

/// One suite offered alone.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SuiteFinding {
    /// IANA name.
    pub name: String,
    /// The handshake completed with it.
    pub accepted: bool,
    /// Why it was refused.
    pub error: Option<String>,
}

/// Handshake sizes.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Wire {
    /// The first accepted pq group (else the first probed).
    pub pq: Option<WireSize>,
    /// The first accepted classical group (else the first probed).
    pub classical: Option<WireSize>,
}

/// Bytes of one handshake.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct WireSize {
    /// The group.
    pub group: String,
    /// Our ClientHello.
    pub client_hello_bytes: Option<usize>,
    /// The server's flight up to its Finished.
    pub server_flight_bytes: Option<usize>,
}

/// The outcome of one `--require`.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RequirementResult {
    /// As written: `pq`, `pq-only` or a group name.
    pub require: String,
    /// Whether the endpoint meets it.
    pub met: bool,
    /// The finding that decided it.
    pub finding: String,
}

impl ProbeReport {
    /// Checks one requirement against the findings.
    pub fn check(&self, requirement: Requirement) -> RequirementResult {
        let (met, finding) = match requirement {
            Requirement::Pq => self.verdict_finding(matches!(
                self.verdict,
                Verdict::PqRequired | Verdict::PqPreferred
            )),
            Requirement::PqOnly => self.verdict_finding(self.verdict == Verdict::PqRequired),
            Requirement::Group(g) => match self.groups.iter().find(|f| f.name == g.name()) {
                Some(f) if f.accepted => (true, format!("{g} accepted")),
                Some(f) => (
                    false,
                    format!(
                        "{g} refused: {}",
                        f.error.as_deref().unwrap_or("no reason given")
                    ),
                ),
                None => (false, format!("{g} was not probed")),
            },
        };
        RequirementResult {
            require: requirement.to_string(),
            met,
            finding,
        }
    }

    fn verdict_finding(&self, met: bool) -> (bool, String) {
        let why = match (met, &self.error) {
            (true, _) => String::new(),
            (false, Some(e)) => format!(": {e}"),
            (false, None) => format!(": {}", self.summary),
        };
        (met, format!("verdict {}{why}", self.verdict))
    }

    /// The groups accepted when offered alone, in probe order.
    pub fn accepted_groups(&self) -> Vec<&str> {
        let accepted = self.groups.iter().filter(|g| g.accepted);
        accepted.map(|g| g.name.as_str()).collect()
    }

    /// Records the outcome of each requirement in the report.
    pub fn require(&mut self, requirements: &[Requirement]) {
        self.requirements = requirements.iter().map(|r| self.check(*r)).collect();
    }

    /// The exit code: 2 when the probe could not run, 1 when a requirement is not met, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.verdict == Verdict::Unreachable {
            2
        } else if self.requirements.iter().any(|r| !r.met) {
            1
        } else {
            0
        }
    }

    /// The report as a table for a terminal, verdict first.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let sni = self
            .sni
            .as_deref()
            .map(|s| format!(" (sni {s})"))
            .unwrap_or_default();
        let addr = match &self.address {
            Some(a) if *a != self.target => format!(" [{a}]"),
            _ => String::new(),
        };
        let _ = writeln!(out, "{}{addr}{sni}", self.target);
        let _ = writeln!(out, "  verdict             {}", self.verdict);
        let _ = writeln!(out, "                      {}", clean(&self.summary));
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  error               {}", clean(e));
        }
        for r in &self.requirements {
            let met = if r.met { "met" } else { "NOT MET" };
            let _ = writeln!(
                out,
                "  require {:<11} {met}: {}",
                r.require,
                clean(&r.finding)
            );
        }
        if self.groups.is_empty() {
            return out;
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  {:<20} {:<3} {:<9} {:<3} {:>8} {:>11} {:>13}",
            "group", "pq", "result", "hrr", "ms", "ClientHello", "server flight"
        );
        for g in &self.groups {
            let bytes = |b: Option<usize>| b.map_or_else(|| "-".to_owned(), |b| b.to_string());
            let ms = g
                .handshake_ms
                .map_or_else(|| "-".to_owned(), |m| format!("{m:.1}"));
            let result = if g.accepted { "accepted" } else { "refused" };
            let _ = write!(
                out,
                "  {:<20} {:<3} {:<9} {:<3} {:>8} {:>11} {:>13}",
                g.name,
                yes_no(g.pq),
                result,
                yes_no(g.hello_retry),
                ms,
                bytes(g.client_hello_bytes),
                bytes(g.server_flight_bytes),
            );
            match &g.error {
                Some(e) if !g.accepted => {
                    let _ = writeln!(out, "  {}", clean(e));
                }
                _ => out.push('\n'),
            }
        }
        let _ = writeln!(out);
        let trial = |t: &Trial| match (&t.chosen, &t.error) {
            (Some(c), _) if t.hello_retry => format!("HelloRetryRequest to {c}"),
            (Some(c), _) => format!("{c} (no HelloRetryRequest)"),
            (None, Some(e)) => format!("refused: {}", clean(e)),
            (None, None) => "refused".to_owned(),
        };
        if let Some(t) = &self.upgrade {
            let _ = writeln!(
                out,
                "  upgrade to pq       {}: offered {}, key share {} -> {}",
                opt_yes_no(self.upgrade_to_pq),
                t.offered.join(","),
                t.key_shares.join("+"),
                trial(t)
            );
        }
        if let Some(t) = &self.classical {
            let _ = writeln!(
                out,
                "  classical fallback  {}: offered {} -> {}",
                opt_yes_no(self.classical_fallback),
                t.offered.join(","),
                trial(t)
            );
        }
        if let Some(p) = &self.server_preference {
            let detail = match p.follows.as_str() {
                "server" => format!("its own order: {}", p.order.join(" > ")),
                "client" => "the client's key share / order".to_owned(),
                _ => "neither order consistently".to_owned(),
            };
            let _ = writeln!(out, "  server preference   follows {detail}");
        }
        if let Some(g) = &self.default_group {
            let _ = writeln!(out, "  default client      ends on {g}");
        }
        let tls = [&self.tls_version, &self.cipher_suite]
            .into_iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if !tls.is_empty() {
            let alpn = self.alpn.as_deref().unwrap_or("none");
            let _ = writeln!(out, "  TLS                 {tls}, ALPN {alpn}");
        }
        if !self.cipher_suites.is_empty() {
            let suites = self
                .cipher_suites
                .iter()
                .map(|s| format!("{} {}", s.name, yes_no(s.accepted)))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(out, "  cipher suites       {suites}");
        }
        for (label, w) in [("pq", &self.wire.pq), ("classical", &self.wire.classical)] {
            if let Some(w) = w {
                let b = |b: Option<usize>| b.map_or_else(|| "-".to_owned(), |b| format!("{b} B"));
                let _ = writeln!(
                    out,
                    "  {:<19} {}: ClientHello {}, server flight {}",
                    format!("bytes, {label}"),
                    w.group,
                    b(w.client_hello_bytes),
                    b(w.server_flight_bytes)
                );
            }
        }
        if let Some(c) = &self.certificate {
            let verified = match (c.verified, &c.verified_against, &c.verify_error) {
                (Some(true), Some(a), _) => format!("verified against {a}"),
                (Some(false), Some(a), e) => format!(
                    "NOT verified against {a}: {}",
                    clean(e.as_deref().unwrap_or("unknown error"))
                ),
                _ => "not verified (--insecure)".to_owned(),
            };
            // TLS 1.2 has no CertificateVerify from the server: ServerKeyExchange is signed.
            let signed = match self.tls_version.as_deref() {
                Some("TLSv1.2") => "ServerKeyExchange",
                _ => "CertificateVerify",
            };
            let _ = writeln!(
                out,
                "  certificate         {verified}; chain of {}; {signed} {}{}",
                c.chain_length,
                c.signature_scheme.as_deref().unwrap_or("-"),
                if c.client_cert_requested {
                    "; asks for a client certificate"
                } else {
                    ""
                }
            );
            for (i, cert) in c.chain.iter().enumerate() {
                let sans = if cert.sans.is_empty() {
                    String::new()
                } else {
                    format!(", SANs {}", clean(&cert.sans.join(" ")))
                };
                let _ = writeln!(
                    out,
                    "    [{i}] {} ({} {} bits, signed {}){sans}",
                    clean(&cert.subject),
                    cert.key_algorithm,
                    cert.key_bits,
                    cert.signature_algorithm
                );
                let _ = writeln!(
                    out,
                    "        issuer {}, valid {} to {}",
                    clean(&cert.issuer),
                    cert.not_before,
                    cert.not_after
                );
            }
        }
        out
    }
}

/// A string from the peer (certificate names, errors) made safe for a terminal: a hostile
/// certificate must not move the cursor or add lines to the report a person reads.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c.is_control() {
            true => c.escape_debug().to_string(),
            false => c.to_string(),
        })
        .collect()
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn opt_yes_no(b: Option<bool>) -> &'static str {
    b.map_or("untested", yes_no)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_findings() {
        use Verdict::*;
        assert_eq!(
            Verdict::from_findings(false, Some(false), None),
            Unreachable
        );
        assert_eq!(Verdict::from_findings(false, None, None), Unreachable);
        assert_eq!(
            Verdict::from_findings(false, Some(true), None),
            ClassicalOnly
        );
        assert_eq!(
            Verdict::from_findings(true, Some(false), Some(true)),
            PqRequired
        );
        assert_eq!(Verdict::from_findings(true, Some(false), None), PqRequired);
        assert_eq!(
            Verdict::from_findings(true, Some(true), Some(true)),
            PqPreferred
        );
        assert_eq!(
            Verdict::from_findings(true, Some(true), Some(false)),
            PqAvailable
        );
        assert_eq!(Verdict::from_findings(true, Some(true), None), PqAvailable);
        // A classical trial that timed out is no proof of refusal.
        assert_eq!(Verdict::from_findings(true, None, Some(false)), PqAvailable);
        assert_eq!(Verdict::from_findings(true, None, Some(true)), PqPreferred);
    }

    #[test]
    fn peer_strings_cannot_drive_the_terminal() {
        assert_eq!(
            clean("CN=a\x1b[2A\nverdict pq-required"),
            "CN=a\\u{1b}[2A\\nverdict pq-required"
        );
        assert_eq!(clean("name \"x\", O=Ex"), "name \"x\", O=Ex");
    }

    #[test]
    fn requirements_parse() {
        assert_eq!("pq".parse(), Ok(Requirement::Pq));
        assert_eq!("pq-only".parse(), Ok(Requirement::PqOnly));
        assert_eq!(
            "x25519mlkem768".parse(),
            Ok(Requirement::Group(Group::X25519MLKEM768))
        );
        assert!("pq-maybe".parse::<Requirement>().is_err());
    }
}
