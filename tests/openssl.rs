//! Every catalogue group against OpenSSL 3.5, both directions, application data included.
//! Our SecP384r1MLKEM1024 is the point: a mis-ordered or corrupted share fails the Finished
//! check, so a completed exchange of HTTP with OpenSSL proves the layout is the standard one.
//!
//! OpenSSL 3.5 is built into a cache outside the repo by `interop/install-openssl.sh` when
//! missing (a few minutes, once per machine).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::policy::{Policy, PolicyMode};
use mcp_pqtls::probe::{probe, ProbeOptions, ProbeReport, Requirement, Target, Verdict};
use mcp_pqtls::Group;
use support::openssl::openssl;
use support::{connector, KillOnDrop, Pki, Server};

/// Runs `openssl s_client` against our server on 127.0.0.1, sends one HTTP/1.1 GET, and
/// returns everything it printed (its handshake report, then our response).
async fn s_client(openssl: &Path, port: u16, ca: PathBuf, groups: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new(openssl);
    cmd.args(["s_client", "-ign_eof", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-tls1_3", "-groups", groups])
        .args(extra)
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn our_client_negotiates_every_group_with_openssl_s_server() {
    let openssl = openssl();
    let pki = Pki::new(KeyAlg::EcdsaP256);
    for group in Group::ALL {
        let (_server, port) = s_server(&openssl, &pki, &["-tls1_3", "-groups", group.name()]);
        let client = connector(pki.client(&[group], PolicyMode::ClassicalAllowed));
        let url: http::Uri = format!("https://localhost:{port}/").parse().unwrap();
        let mut fetched = None;
        for _ in 0..100 {
            match mcp_pqtls::get(&client, url.clone()).await {
                Ok(f) => {
                    fetched = Some(f);
                    break;
                }
                Err(mcp_pqtls::tls::ClientError::Connect { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{group}: {e}"),
            }
        }
        let fetched = fetched.unwrap_or_else(|| panic!("{group}: s_server never listened"));
        assert_eq!(fetched.info.group, group.name());
        // s_server -www describes the session it served: the data flowed both ways.
        let page = String::from_utf8_lossy(&fetched.body);
        assert!(page.contains("TLSv1.3"), "{group}: {page}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn openssl_s_client_negotiates_every_group_with_our_server() {
    let openssl = openssl();
    let pki = Pki::new(KeyAlg::EcdsaP256);
    for group in Group::ALL {
        let server =
            Server::start(pki.server(&[group], Policy::new(PolicyMode::ClassicalAllowed))).await;
        let extra = ["-alpn", "http/1.1", "-verify_return_error"];
        let stdout = s_client(
            &openssl,
            server.addr.port(),
            pki.path("ca.pem"),
            group.name(),
            &extra,
        )
        .await;
        // OpenSSL's own view of the group, then our server's, reflected in the HTTP body.
        // OpenSSL names the NIST curves by their X9.62 names in "Peer Temp Key".
        let openssl_name = match group {
            Group::Secp256r1 => "ECDH, prime256v1",
            Group::Secp384r1 => "ECDH, secp384r1",
            other => other.name(),
        };
        let openssl_saw = stdout.contains(&format!("Negotiated TLS1.3 group: {}", group.name()))
            || stdout.contains(&format!("Peer Temp Key: {openssl_name}"));
        assert!(openssl_saw, "{group}: {stdout}");
        assert!(
            stdout.contains(&format!("\"group\":\"{}\"", group.name())),
            "{group}: {stdout}"
        );
        assert_eq!(server.requests(), 1);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn our_pq_preferred_server_retries_openssl_to_pq_and_pq_required_refuses_classical() {
    let openssl = openssl();
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let groups = [
        Group::SecP384r1MLKEM1024,
        Group::X25519MLKEM768,
        Group::X25519,
    ];

    // OpenSSL sends a key share for its first group only: X25519 here.
    let server = Server::start(pki.server(&groups, Policy::new(PolicyMode::PqPreferred))).await;
    let out = s_client(
        &openssl,
        server.addr.port(),
        pki.path("ca.pem"),
        "X25519:SecP384r1MLKEM1024",
        &[],
    )
    .await;
    assert!(out.contains("\"group\":\"SecP384r1MLKEM1024\""), "{out}");
    assert!(out.contains("\"hello_retry\":true"), "{out}");
    server.stop().await;

    let server = Server::start(pki.server(&groups, Policy::new(PolicyMode::PqRequired))).await;
    let out = s_client(
        &openssl,
        server.addr.port(),
        pki.path("ca.pem"),
        "X25519:secp256r1",
        &[],
    )
    .await;
    assert!(out.contains("alert handshake failure"), "{out}");
    assert_eq!(server.requests(), 0);
    assert_eq!(server.acceptor.metrics().snapshot().policy_refusals, 1);
    server.stop().await;
}

/// `openssl s_server` on a free port with these extra flags, serving the PKI's certificate.
fn s_server(openssl: &Path, pki: &Pki, extra: &[&str]) -> (KillOnDrop, u16) {
    let port = support::free_port();
    let child = Command::new(openssl)
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(port.to_string())
        .args(extra)
        .arg("-cert")
        .arg(pki.path("server.pem"))
        .arg("-key")
        .arg(pki.path("server.key"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (KillOnDrop(child), port)
}

/// Probes `localhost:port` once s_server listens.
async fn probe_openssl(pki: &Pki, port: u16) -> ProbeReport {
    let target: Target = format!("localhost:{port}").parse().unwrap();
    let mut options = ProbeOptions::default();
    options.trust = mcp_pqtls::tls::Trust::Roots(pki.roots());
    for _ in 0..100 {
        let report = probe(&target, &options).await;
        if !report
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("cannot connect")
        {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("s_server never listened on {port}");
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_findings_hold_against_openssl_s_server() {
    let openssl = openssl();
    let pki = Pki::new(KeyAlg::EcdsaP256);

    // Restricted to our own hybrid: pq-required, and OpenSSL retries a classical share to it.
    let (_server, port) = s_server(
        &openssl,
        &pki,
        &["-tls1_3", "-groups", "SecP384r1MLKEM1024"],
    );
    let mut r = probe_openssl(&pki, port).await;
    assert_eq!(r.verdict, Verdict::PqRequired, "{}", r.table());
    assert_eq!(r.accepted_groups(), ["SecP384r1MLKEM1024"]);
    for g in r.groups.iter().filter(|g| !g.accepted) {
        assert_eq!(g.alert.as_deref(), Some("handshake_failure"), "{g:?}");
    }
    assert_eq!(r.classical_fallback, Some(false));
    assert_eq!(r.upgrade_to_pq, Some(true));
    assert!(r.upgrade.as_ref().unwrap().hello_retry);
    let cert = r.certificate.as_ref().unwrap();
    assert_eq!((cert.verified, cert.chain_length), (Some(true), 1));
    assert_eq!(
        cert.signature_scheme.as_deref(),
        Some("ecdsa_secp256r1_sha256")
    );
    r.require(&[Requirement::PqOnly]);
    assert_eq!(r.exit_code(), 0);

    // X25519MLKEM768 and X25519: OpenSSL takes the key share it is given rather than retry,
    // so a classical share settles on classical.
    let (_server, port) = s_server(
        &openssl,
        &pki,
        &["-tls1_3", "-groups", "X25519MLKEM768:X25519"],
    );
    let mut r = probe_openssl(&pki, port).await;
    assert_eq!(r.verdict, Verdict::PqAvailable, "{}", r.table());
    assert_eq!(r.accepted_groups(), ["X25519MLKEM768", "X25519"]);
    assert_eq!(r.upgrade_to_pq, Some(false));
    assert_eq!(
        r.upgrade.as_ref().unwrap().chosen.as_deref(),
        Some("X25519")
    );
    assert_eq!(r.classical_fallback, Some(true));
    assert_eq!(r.server_preference.as_ref().unwrap().follows, "client");
    r.require(&[Requirement::Pq]);
    assert_eq!(r.exit_code(), 1);

    // Classical only.
    let (_server, port) = s_server(&openssl, &pki, &["-tls1_3", "-groups", "X25519"]);
    let r = probe_openssl(&pki, port).await;
    assert_eq!(r.verdict, Verdict::ClassicalOnly, "{}", r.table());
    assert_eq!(r.accepted_groups(), ["X25519"]);
    assert_eq!(r.upgrade_to_pq, None);

    // TLS 1.2 only: every TLS 1.3 offer gets protocol_version; TLS 1.2 completes.
    let (_server, port) = s_server(&openssl, &pki, &["-tls1_2"]);
    let r = probe_openssl(&pki, port).await;
    assert_eq!(r.verdict, Verdict::ClassicalOnly, "{}", r.table());
    assert_eq!(r.tls_version.as_deref(), Some("TLSv1.2"));
    for g in &r.groups {
        assert_eq!(g.alert.as_deref(), Some("protocol_version"), "{g:?}");
    }
}

/// Writes a config file whole (write, then rename), so a reload never reads half of one.
/// The server sidecar's config: pq-preferred over X25519MLKEM768 and X25519, client
/// certificates under the dev CA, and these fallback rules.
fn sidecar_policy(pki: &Pki, rules: &[&str]) -> String {
    let rules: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
    format!(
        "groups = [\"X25519MLKEM768\", \"X25519\"]\npolicy = \"pq-preferred\"\nclient-ca = {:?}\nfallback-rules = [{}]\n",
        pki.path("ca.pem").to_str().unwrap(),
        rules.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_openssl_ticket_saved_before_a_sighup_adding_an_id_rule_is_refused() {
    use support::process::{install_config, Proc};
    use support::upstream::{get_plain, Upstream};

    let openssl = openssl();
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    // Classical allowed for the dev identities, as for a legacy fleet.
    install_config(
        &config,
        &sidecar_policy(&pki, &["allow-classical id:spiffe://mcp-pqtls.dev/*"]),
    );
    let server = Proc::server_sidecar(
        pki.dir.path(),
        &upstream.url(),
        &["--config", config.to_str().unwrap()],
    );
    let session = dir.path().join("session.pem");
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let with_cert = |session_flag: &'static str| {
        vec![
            "-alpn".to_owned(),
            "http/1.1".to_owned(),
            "-cert".to_owned(),
            cert.to_str().unwrap().to_owned(),
            "-key".to_owned(),
            key.to_str().unwrap().to_owned(),
            session_flag.to_owned(),
            session.to_str().unwrap().to_owned(),
        ]
    };
    let run = |flags: Vec<String>| {
        let openssl = openssl.clone();
        let ca = pki.path("ca.pem");
        async move {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            s_client(&openssl, server.port, ca, "X25519", &flags).await
        }
    };
    let identity = "\"x-mcp-pqtls-client-identity\":\"spiffe://mcp-pqtls.dev/client\"";

    // A classical handshake with the client certificate; the ticket is saved.
    let out = run(with_cert("-sess_out")).await;
    assert!(out.contains("New, TLSv1.3"), "{out}");
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    assert!(out.contains(identity), "{out}");
    // It resumes while the policy stands, and the identity (from the ticket) still reaches
    // the upstream.
    let out = run(with_cert("-sess_in")).await;
    assert!(out.contains("Reused, TLSv1.3"), "{out}");
    assert!(out.contains(identity), "{out}");

    // The operator requires pq of this client and reloads.
    install_config(
        &config,
        &sidecar_policy(
            &pki,
            &[
                "require-pq id:spiffe://mcp-pqtls.dev/client",
                "allow-classical id:spiffe://mcp-pqtls.dev/*",
            ],
        ),
    );
    server.signal("-HUP");
    server.wait_log(&["Groups and policy reloaded", "SIGHUP"]);
    let admin = server.admin.unwrap();
    let metrics = get_plain(&format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .1;
    let reloaded = "mcp_pqtls_policy_reloads_total{result=\"ok\"} 1";
    assert!(metrics.lines().any(|l| l == reloaded), "{metrics}");

    // The same ticket: not resumed, refused by the rule, nothing reaches the upstream.
    let before = upstream.requests();
    let out = run(with_cert("-sess_in")).await;
    assert!(!out.contains("Reused"), "{out}");
    assert!(out.contains("access denied"), "{out}");
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
    assert_eq!(upstream.requests(), before);
    let line = server.wait_log(&["Handshake refused by policy", "require-pq id:spiffe://"]);
    assert!(line.contains("not_logged=0"), "{line}");
    let refused = "mcp_pqtls_handshakes_total{result=\"refused\",reason=\"fallback_rule\"} 1";
    let deadline = std::time::Instant::now() + support::upstream::GUARD;
    loop {
        let metrics = get_plain(&format!("http://127.0.0.1:{admin}/metrics"))
            .await
            .1;
        if metrics.lines().any(|l| l == refused) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{refused}\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Session-ticket keys shared by a fleet (`ticket-keys`): OpenSSL's ticket from replica A
/// resumes on replica B, over X25519MLKEM768; once the key that sealed it is rotated out of the
/// file (and B has reloaded it), it no longer resumes. A file others can read is refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_openssl_ticket_from_one_replica_resumes_on_another_until_its_key_is_retired() {
    use support::process::{bin, install_config, Proc};
    use support::upstream::Upstream;

    let openssl = openssl();
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("ticket.keys");
    let rotate = |keep: &str| {
        let out = bin()
            .args([
                "ticket-keys",
                "rotate",
                keys.to_str().unwrap(),
                "--keep",
                keep,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let made = rotate("3");
    assert!(
        made.contains("new key") && made.contains("1 keys kept"),
        "{made}"
    );
    let config = dir.path().join("server.toml");
    install_config(
        &config,
        &format!(
            "groups = [\"X25519MLKEM768\"]\npolicy = \"pq-required\"\nticket-keys = {keys:?}\nreload-interval = \"1s\"\n"
        ),
    );
    let replica = || {
        Proc::server_sidecar(
            pki.dir.path(),
            &upstream.url(),
            &["--config", config.to_str().unwrap()],
        )
    };
    let (a, b) = (replica(), replica());
    let session = dir.path().join("session.pem");
    let run = |port: u16, flag: &'static str| {
        let openssl = openssl.clone();
        let ca = pki.path("ca.pem");
        let session = session.to_str().unwrap().to_owned();
        async move {
            let flags = ["-alpn", "http/1.1", flag, &session];
            s_client(&openssl, port, ca, "X25519MLKEM768", &flags).await
        }
    };
    let out = run(a.port, "-sess_out").await;
    assert!(out.contains("New, TLSv1.3"), "{out}");
    assert!(
        out.contains("Negotiated TLS1.3 group: X25519MLKEM768"),
        "{out}"
    );
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    // Another replica, the same file: resumed, and still over the pq group.
    let out = run(b.port, "-sess_in").await;
    assert!(
        out.contains("Reused, TLSv1.3"),
        "replica B did not resume A's ticket: {out}"
    );
    assert!(
        out.contains("Negotiated TLS1.3 group: X25519MLKEM768"),
        "{out}"
    );
    assert!(out.contains("HTTP/1.1 200"), "{out}");

    // The control: a replica with its own (rustls's) ticketer cannot resume it.
    let own = Proc::server_sidecar(
        pki.dir.path(),
        &upstream.url(),
        &["--groups", "X25519MLKEM768"],
    );
    let out = run(own.port, "-sess_in").await;
    assert!(
        out.contains("New, TLSv1.3") && !out.contains("Reused"),
        "{out}"
    );

    // One rotation: the old key still decrypts (mid-rotation, nothing breaks).
    rotate("3");
    b.wait_log(&["Session-ticket keys reloaded", "file change"]);
    let out = run(b.port, "-sess_in").await;
    assert!(out.contains("Reused, TLSv1.3"), "mid-rotation: {out}");
    // Rotated out (keep 1): the key that sealed the ticket is retired; B refuses it.
    let retired = rotate("1");
    assert!(retired.contains("retired"), "{retired}");
    let deadline = std::time::Instant::now() + support::upstream::GUARD;
    let out = loop {
        let out = run(b.port, "-sess_in").await;
        if !out.contains("Reused") || std::time::Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        out.contains("New, TLSv1.3") && !out.contains("Reused"),
        "{out}"
    );
    assert!(
        out.contains("HTTP/1.1 200"),
        "a full handshake still serves: {out}"
    );
    // The reload line names the keys, never their material.
    let text = std::fs::read_to_string(&keys).unwrap();
    let first = text.lines().find(|l| !l.starts_with('#')).unwrap();
    let (name, material) = first.split_once(' ').unwrap();
    let line = b.wait_log(&["Session-ticket keys reloaded", name]);
    assert!(!line.contains(material), "{line}");

    // Readable by others: refused before anything listens, naming the fix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bin()
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.url(),
        ])
        .arg("--cert")
        .arg(pki.path("server.pem"))
        .arg("--key")
        .arg(pki.path("server.key"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ticket-keys") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}
