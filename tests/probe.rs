//! `mcp-pqtls probe` against our own server in each policy mode, a one-group server, an mTLS
//! and ML-DSA server, a TLS 1.2-only server, a plain-HTTP port, a silent port and a closed
//! port: every finding checked, verdicts and exit codes exact.

mod support;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::policy::{Policy, PolicyMode};
use mcp_pqtls::probe::{probe, ProbeOptions, ProbeReport, Requirement, Target, Verdict};
use mcp_pqtls::tls::Trust;
use mcp_pqtls::Group;
use rustls::pki_types::pem::PemObject;
use support::process::bin;
use support::upstream::Upstream;
use support::{Pki, Server};

fn options(pki: &Pki) -> ProbeOptions {
    let mut options = ProbeOptions::default();
    options.trust = Trust::Roots(pki.roots());
    options.ca_name = Some("ca.pem".to_owned());
    options
}

async fn probe_server(server: &Server, options: &ProbeOptions) -> ProbeReport {
    let target: Target = format!("localhost:{}", server.addr.port()).parse().unwrap();
    probe(&target, options).await
}

/// Every group the server does not have is refused with the alert rustls sends for it.
fn assert_refused_with_alert(report: &ProbeReport, alert: &str) {
    for g in report.groups.iter().filter(|g| !g.accepted) {
        assert_eq!(g.alert.as_deref(), Some(alert), "{}: {g:?}", g.name);
        assert!(g.error.as_deref().unwrap().contains(alert), "{g:?}");
        assert!(g.handshake_ms.is_none() && !g.hello_retry, "{g:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pq_preferred_server() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(
        &[Group::X25519MLKEM768, Group::X25519],
        Policy::new(PolicyMode::PqPreferred),
    ))
    .await;
    let mut r = probe_server(&server, &options(&pki)).await;

    assert_eq!(r.verdict, Verdict::PqPreferred, "{}", r.table());
    assert_eq!(r.schema, "mcp-pqtls.probe/v1");
    assert_eq!(r.sni.as_deref(), Some("localhost"));
    assert_eq!(r.error, None);
    assert_eq!(r.groups.len(), Group::ALL.len());
    assert_eq!(r.accepted_groups(), ["X25519MLKEM768", "X25519"]);
    assert_refused_with_alert(&r, "handshake_failure");
    for g in r.groups.iter().filter(|g| g.accepted) {
        assert!(
            !g.hello_retry && g.handshake_ms.is_some() && g.error.is_none(),
            "{g:?}"
        );
    }

    // A classical key share with X25519MLKEM768 listed: retried to it.
    assert_eq!(r.upgrade_to_pq, Some(true));
    let up = r.upgrade.as_ref().unwrap();
    assert_eq!(up.offered, ["X25519", "X25519MLKEM768"]);
    assert_eq!(up.key_shares, ["X25519"]);
    assert_eq!(up.chosen.as_deref(), Some("X25519MLKEM768"));
    assert!(up.hello_retry);

    assert_eq!(r.classical_fallback, Some(true));
    let cl = r.classical.as_ref().unwrap();
    assert_eq!(cl.offered, ["X25519", "secp256r1", "secp384r1"]);
    assert_eq!(cl.chosen.as_deref(), Some("X25519"));

    let pref = r.server_preference.as_ref().unwrap();
    assert_eq!(pref.follows, "server");
    assert_eq!(pref.order, ["X25519MLKEM768", "X25519"]);
    assert_eq!(r.default_group.as_deref(), Some("X25519MLKEM768"));

    let cert = r.certificate.as_ref().unwrap();
    assert_eq!(cert.verified, Some(true));
    assert_eq!(cert.verified_against.as_deref(), Some("ca.pem"));
    assert_eq!(
        cert.signature_scheme.as_deref(),
        Some("ecdsa_secp256r1_sha256")
    );
    assert_eq!(cert.chain_length, 2);
    assert_eq!(cert.chain[0].key_algorithm, "ecdsa-p256");
    assert!(cert.chain[0].sans.contains(&"DNS:localhost".to_owned()));
    assert_eq!(cert.chain[1].subject, cert.chain[0].issuer);
    assert!(!cert.client_cert_requested);

    assert_eq!(r.tls_version.as_deref(), Some("TLSv1.3"));
    assert_eq!(r.alpn.as_deref(), Some("h2"));
    assert_eq!(r.cipher_suite.as_deref(), Some("TLS_AES_256_GCM_SHA384"));
    assert_eq!(r.cipher_suites.len(), 3);
    assert!(
        r.cipher_suites.iter().all(|s| s.accepted),
        "{:?}",
        r.cipher_suites
    );

    // The ML-KEM-768 share (1184 B) and ciphertext (1088 B) are on the wire.
    let (pq, cl) = (
        r.wire.pq.as_ref().unwrap(),
        r.wire.classical.as_ref().unwrap(),
    );
    assert_eq!(
        (pq.group.as_str(), cl.group.as_str()),
        ("X25519MLKEM768", "X25519")
    );
    assert!(pq.client_hello_bytes.unwrap() >= cl.client_hello_bytes.unwrap() + 1184);
    // The ECDSA signature's DER length varies by a few bytes between handshakes.
    assert!(pq.server_flight_bytes.unwrap() + 8 >= cl.server_flight_bytes.unwrap() + 1088);

    r.require(&[Requirement::Pq, Requirement::Group(Group::X25519MLKEM768)]);
    assert_eq!(r.exit_code(), 0, "{:?}", r.requirements);
    r.require(&[Requirement::PqOnly]);
    assert_eq!(r.exit_code(), 1);
    assert!(r.requirements[0].finding.contains("verdict pq-preferred"));
    r.require(&[Requirement::Group(Group::MLKEM1024)]);
    assert_eq!(r.exit_code(), 1);
    assert!(
        r.requirements[0].finding.contains("MLKEM1024 refused"),
        "{:?}",
        r.requirements
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pq_required_server() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(
        &[Group::SecP384r1MLKEM1024, Group::X25519MLKEM768],
        Policy::new(PolicyMode::PqRequired),
    ))
    .await;
    let mut r = probe_server(&server, &options(&pki)).await;
    assert_eq!(r.verdict, Verdict::PqRequired, "{}", r.table());
    assert_eq!(
        r.accepted_groups(),
        ["X25519MLKEM768", "SecP384r1MLKEM1024"]
    );
    assert_refused_with_alert(&r, "handshake_failure");
    assert_eq!(r.classical_fallback, Some(false));
    let cl = r.classical.as_ref().unwrap();
    assert!(
        cl.error.as_deref().unwrap().contains("handshake_failure"),
        "{cl:?}"
    );
    // Listed pq behind a classical share: retried to the server's first choice.
    assert_eq!(r.upgrade_to_pq, Some(true));
    let up = r.upgrade.as_ref().unwrap();
    assert_eq!(up.chosen.as_deref(), Some("SecP384r1MLKEM1024"));
    assert!(up.hello_retry);
    let pref = r.server_preference.as_ref().unwrap();
    assert_eq!(pref.follows, "server");
    assert_eq!(pref.order, ["SecP384r1MLKEM1024", "X25519MLKEM768"]);
    assert_eq!(r.default_group.as_deref(), Some("SecP384r1MLKEM1024"));
    r.require(&[Requirement::PqOnly, Requirement::Pq]);
    assert_eq!(r.exit_code(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn classical_allowed_server_settles_for_classical() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(
        &[Group::X25519, Group::X25519MLKEM768],
        Policy::new(PolicyMode::ClassicalAllowed),
    ))
    .await;
    let mut r = probe_server(&server, &options(&pki)).await;
    assert_eq!(r.verdict, Verdict::PqAvailable, "{}", r.table());
    assert_eq!(r.accepted_groups(), ["X25519MLKEM768", "X25519"]);
    assert_eq!(r.upgrade_to_pq, Some(false));
    let up = r.upgrade.as_ref().unwrap();
    assert_eq!(up.chosen.as_deref(), Some("X25519"));
    assert!(!up.hello_retry);
    assert_eq!(r.classical_fallback, Some(true));
    // Its own order, classical first, even against our X25519MLKEM768-first offer.
    let pref = r.server_preference.as_ref().unwrap();
    assert_eq!(pref.follows, "server");
    assert_eq!(pref.order, ["X25519", "X25519MLKEM768"]);
    assert_eq!(r.default_group.as_deref(), Some("X25519"));
    r.require(&[Requirement::Pq]);
    assert_eq!(r.exit_code(), 1);
    assert!(
        r.requirements[0].finding.contains("settles for X25519"),
        "{:?}",
        r.requirements
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_group_server() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(
        &[Group::MLKEM1024],
        Policy::new(PolicyMode::ClassicalAllowed),
    ))
    .await;
    let r = probe_server(&server, &options(&pki)).await;
    assert_eq!(r.verdict, Verdict::PqRequired, "{}", r.table());
    assert_eq!(r.accepted_groups(), ["MLKEM1024"]);
    assert_refused_with_alert(&r, "handshake_failure");
    assert_eq!(r.classical_fallback, Some(false));
    assert_eq!(r.upgrade_to_pq, Some(true));
    assert!(r.server_preference.is_none(), "one group: nothing to order");
    assert_eq!(r.default_group.as_deref(), Some("MLKEM1024"));
    server.stop().await;

    let server = Server::start(pki.server(
        &[Group::Secp384r1],
        Policy::new(PolicyMode::ClassicalAllowed),
    ))
    .await;
    let mut r = probe_server(&server, &options(&pki)).await;
    assert_eq!(r.verdict, Verdict::ClassicalOnly, "{}", r.table());
    assert_eq!(r.accepted_groups(), ["secp384r1"]);
    assert_eq!(r.upgrade_to_pq, None);
    assert_eq!(r.classical_fallback, Some(true));
    assert_eq!(
        r.classical.as_ref().unwrap().chosen.as_deref(),
        Some("secp384r1")
    );
    assert!(
        r.classical.as_ref().unwrap().hello_retry,
        "share was X25519"
    );
    r.require(&[Requirement::Pq]);
    assert_eq!(r.exit_code(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ml_dsa_mtls_server_and_a_chain_that_does_not_verify() {
    let pki = Pki::new(KeyAlg::MlDsa65);
    let server = Server::start(pki.mtls_server(
        &[Group::X25519MLKEM768, Group::X25519],
        Policy::new(PolicyMode::PqPreferred),
    ))
    .await;
    let mut opts = options(&pki);
    opts.client_identity = Some(pki.client_identity());
    opts.groups = vec![Group::X25519MLKEM768];
    let r = probe_server(&server, &opts).await;
    assert_eq!(r.verdict, Verdict::PqPreferred, "{}", r.table());
    let cert = r.certificate.as_ref().unwrap();
    assert_eq!(cert.signature_scheme.as_deref(), Some("mldsa65"));
    assert_eq!(cert.chain[0].key_algorithm, "ml-dsa-65");
    assert!(cert.client_cert_requested);
    // Only the probed group is listed; the policy findings still use the catalogue's
    // classical groups.
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.classical_fallback, Some(true));
    // An ML-DSA-65 certificate (~5.5 KB) and signature (3309 B) in the server's flight.
    assert!(r.wire.pq.as_ref().unwrap().server_flight_bytes.unwrap() > 8000);

    // Verified against another CA: a finding, and the probe goes on.
    let other = Pki::new(KeyAlg::EcdsaP256);
    let r = probe_server(&server, &options(&other)).await;
    assert_eq!(r.verdict, Verdict::PqPreferred);
    let cert = r.certificate.as_ref().unwrap();
    assert_eq!(cert.verified, Some(false));
    // (Both dev CAs are named alike, so webpki gets as far as the signature.)
    let error = cert.verify_error.as_deref().unwrap();
    assert!(error.contains("invalid peer certificate"), "{error}");

    let mut insecure = ProbeOptions::default();
    insecure.trust = mcp_pqtls::tls::danger::insecure_skip_verify();
    let r = probe_server(&server, &insecure).await;
    let cert = r.certificate.as_ref().unwrap();
    assert_eq!(
        (cert.verified, cert.verified_against.as_deref()),
        (None, None)
    );
    assert_eq!(cert.signature_scheme.as_deref(), Some("mldsa65"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls12_only_server_is_classical_only() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let chain = mcp_pqtls::certs::load_chain(&pki.path("server.pem")).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move { acceptor.accept(tcp).await.map(drop) });
        }
    });
    let target: Target = format!("localhost:{port}").parse().unwrap();
    let mut r = probe(&target, &options(&pki)).await;
    assert_eq!(r.verdict, Verdict::ClassicalOnly, "{}", r.table());
    assert_eq!(r.tls_version.as_deref(), Some("TLSv1.2"));
    assert_eq!(r.classical_fallback, Some(true));
    assert_eq!(
        r.classical.as_ref().unwrap().chosen.as_deref(),
        Some("X25519")
    );
    assert!(r.accepted_groups().is_empty());
    for g in &r.groups {
        let e = g.error.as_deref().unwrap();
        assert!(
            e.contains("no TLS 1.3") && e.contains("protocol_version"),
            "{e}"
        );
    }
    assert_eq!(r.certificate.as_ref().unwrap().verified, Some(true));
    assert!(r.summary.contains("TLSv1.2"), "{}", r.summary);
    r.require(&[Requirement::Pq]);
    assert_eq!(r.exit_code(), 1);
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_plain_http_and_silent_ports_are_unreachable() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target: Target = format!("127.0.0.1:{closed}").parse().unwrap();
    let mut r = probe(&target, &ProbeOptions::default()).await;
    assert_eq!(r.verdict, Verdict::Unreachable);
    assert!(
        r.error.as_deref().unwrap().contains("cannot connect"),
        "{r:?}"
    );
    assert!(r.groups.is_empty());
    r.require(&[Requirement::Pq]);
    assert_eq!(r.exit_code(), 2);

    let http = Upstream::start().await;
    let target: Target = http.addr.to_string().parse().unwrap();
    let r = probe(&target, &ProbeOptions::default()).await;
    assert_eq!(r.verdict, Verdict::Unreachable);
    let e = r.error.as_deref().unwrap();
    assert!(
        e.contains("not a TLS server") && e.contains("HTTP/1.1 400"),
        "{e}"
    );
    assert_eq!(r.exit_code(), 2);

    // Accepts TCP and never answers: every handshake times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target: Target = silent.local_addr().unwrap().to_string().parse().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            open.push(tcp);
        }
    });
    let mut opts = ProbeOptions::default();
    opts.timeout = Duration::from_millis(200);
    opts.groups = vec![Group::X25519MLKEM768, Group::X25519];
    let r = probe(&target, &opts).await;
    assert_eq!(r.verdict, Verdict::Unreachable, "{}", r.table());
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("no completed handshake within"),
        "{r:?}"
    );
    assert_eq!(r.exit_code(), 2);
    held.abort();
}

// The binary: formats, exit codes, several targets.

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || bin().arg("probe").args(args).output().unwrap())
        .await
        .unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_exit_codes_formats_and_several_targets() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(
        &[Group::X25519MLKEM768, Group::X25519],
        Policy::new(PolicyMode::PqPreferred),
    ))
    .await;
    let target = format!("localhost:{}", server.addr.port());
    let ca = pki.path("ca.pem").display().to_string();
    let args = |extra: &[&str]| {
        let mut a = vec![target.clone(), "--ca".to_owned(), ca.clone()];
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };

    // Not a terminal: JSON by default.
    let out = run(args(&["--require", "pq"])).await;
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["schema"], "mcp-pqtls.probe/v1");
    assert_eq!(json["verdict"], "pq-preferred");
    assert_eq!(json["requirements"][0]["met"], true);
    assert_eq!(json["groups"][0]["name"], "X25519MLKEM768");
    assert_eq!(json["certificate"]["verified"], true);

    let out = run(args(&["--require", "pq-only", "--format", "table"])).await;
    assert_eq!(code(&out), 1);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .contains("verdict             pq-preferred"),
        "{table}"
    );
    assert!(
        table.contains("require pq-only     NOT MET: verdict pq-preferred"),
        "{table}"
    );
    assert!(
        table.contains("HelloRetryRequest to X25519MLKEM768"),
        "{table}"
    );

    let out = run(args(&["--require", "X25519MLKEM768,SecP384r1MLKEM1024"])).await;
    assert_eq!(code(&out), 1);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["requirements"][0]["met"], true);
    assert_eq!(json["requirements"][1]["met"], false);
    let finding = json["requirements"][1]["finding"].as_str().unwrap();
    assert!(
        finding.contains("SecP384r1MLKEM1024 refused") && finding.contains("handshake_failure"),
        "{finding}"
    );

    // Could not run: bad requirement, missing CA file, unreachable.
    let out = run(args(&["--require", "pq-maybe"])).await;
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown group `pq-maybe`"));
    let out = run(vec![
        target.clone(),
        "--ca".into(),
        "/nonexistent/ca.pem".into(),
    ])
    .await;
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));
    let out = run(args(&["--timeout", "0s"])).await;
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timeout 0s"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(vec![
        format!("127.0.0.1:{closed}"),
        "--require".into(),
        "pq".into(),
    ])
    .await;
    assert_eq!(code(&out), 2);

    // Several targets, some from a file: JSON Lines in order; the worst exit code wins.
    let list = pki.path("targets.txt");
    std::fs::write(
        &list,
        format!("# probe list\n{target}\n\n127.0.0.1:{closed}  # down\n"),
    )
    .unwrap();
    let out = run(vec![
        target.clone(),
        "--targets-file".into(),
        list.display().to_string(),
        "--ca".into(),
        ca.clone(),
        "--parallel".into(),
        "2".into(),
    ])
    .await;
    assert_eq!(code(&out), 2);
    let reports: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verdicts: Vec<_> = reports
        .iter()
        .map(|r| r["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["pq-preferred", "pq-preferred", "unreachable"]);
    server.stop().await;
}

/// A server that is pq-only over TLS 1.3 but still completes TLS 1.2 with X25519: a
/// classical-only client gets in, so the probe must not call it pq-required.
#[tokio::test(flavor = "multi_thread")]
async fn tls12_back_door_is_classical_fallback() {
    use rustls::server::{Acceptor, ServerConfig};
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let chain = mcp_pqtls::certs::load_chain(&pki.path("server.pem")).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let config = |groups: &[Group], version: &'static rustls::SupportedProtocolVersion| {
        let provider = rustls::crypto::CryptoProvider {
            kx_groups: groups.iter().map(|g| g.kx_group()).collect(),
            ..rustls::crypto::aws_lc_rs::default_provider()
        };
        Arc::new(
            ServerConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain.clone(), key.clone_key())
                .unwrap(),
        )
    };
    let tls13 = config(&[Group::X25519MLKEM768], &rustls::version::TLS13);
    let tls12 = config(&[Group::X25519], &rustls::version::TLS12);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (tls13, tls12) = (tls13.clone(), tls12.clone());
            tokio::spawn(async move {
                let start = tokio_rustls::LazyConfigAcceptor::new(Acceptor::default(), tcp).await?;
                // A client offering a TLS 1.3 suite gets the pq-only 1.3 config.
                let offers_tls13 = start
                    .client_hello()
                    .cipher_suites()
                    .iter()
                    .any(|s| format!("{s:?}").starts_with("TLS13_"));
                let config = if offers_tls13 { tls13 } else { tls12 };
                start.into_stream(config).await.map(drop)
            });
        }
    });
    let target: Target = format!("localhost:{port}").parse().unwrap();
    let r = probe(&target, &options(&pki)).await;
    assert_eq!(r.accepted_groups(), ["X25519MLKEM768"], "{}", r.table());
    assert_eq!(r.classical_fallback, Some(true), "{}", r.table());
    let cl = r.classical.as_ref().unwrap();
    assert_eq!(cl.chosen.as_deref(), Some("X25519"));
    assert!(
        cl.key_shares.is_empty(),
        "TLS 1.2 has no key shares: {cl:?}"
    );
    assert_ne!(r.verdict, Verdict::PqRequired);
    assert_eq!(r.verdict, Verdict::PqPreferred, "HRR to pq over TLS 1.3");
    assert!(r.summary.contains("over TLS 1.2"), "{}", r.summary);
    server.abort();
}

/// `--groups` narrows the rows, never the policy findings: the classical trial offers every
/// catalogue classical group, so a server that takes X25519 is not pq-required even when only
/// X25519MLKEM768 and secp384r1 are probed.
#[tokio::test(flavor = "multi_thread")]
async fn narrowed_groups_do_not_change_the_verdict() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(
        &[Group::X25519MLKEM768, Group::X25519],
        Policy::new(PolicyMode::PqPreferred),
    ))
    .await;
    let mut opts = options(&pki);
    opts.groups = vec![Group::X25519MLKEM768, Group::Secp384r1];
    let mut r = probe_server(&server, &opts).await;
    assert_eq!(r.accepted_groups(), ["X25519MLKEM768"]);
    assert_eq!(r.classical_fallback, Some(true));
    assert_eq!(r.verdict, Verdict::PqPreferred, "{}", r.table());
    r.require(&[Requirement::PqOnly]);
    assert_eq!(r.exit_code(), 1);
    server.stop().await;
}
