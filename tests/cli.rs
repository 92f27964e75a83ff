//! The real binary: bad input gets a clear error naming the fix; the reflect server logs
//! classical fallback at warn; certs init writes what it says.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};

use mcp_pqtls::certs::KeyAlg;
use support::process::bin;
use support::{KillOnDrop, Pki};

fn run(args: &[&str]) -> Output {
    bin().args(args).env("RUST_LOG", "warn").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `reflect` with these extra flags and returns its exit code and stderr.
fn reflect_with(pki: &Pki, cert: &str, key: &str, extra: &[&str]) -> Output {
    let cert = pki.path(cert);
    let key = pki.path(key);
    let mut args = vec![
        "reflect",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn certs_init_writes_the_dev_pki_with_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "certs",
        "init",
        dir.path().to_str().unwrap(),
        "--key-alg",
        "ml-dsa-65",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
        "approver.pem",
        "approver.key",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    for key in ["server.key", "client.key", "approver.key"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let chain = mcp_pqtls::certs::load_chain(&dir.path().join("server.pem")).unwrap();
    assert_eq!(chain.len(), 2, "server.pem is the chain: leaf then CA");
    let info = mcp_pqtls::certs::CertInfo::parse(&chain[0]).unwrap();
    assert_eq!(info.key_algorithm, "ml-dsa-65");
    assert_eq!(info.signature_algorithm, "ml-dsa-65");
    assert_eq!(info.sans, ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]);

    let out = run(&[
        "certs",
        "init",
        dir.path().to_str().unwrap(),
        "--key-alg",
        "dsa",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown key algorithm `dsa`; use one of: ecdsa-p256"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_group_names_the_flag_and_lists_known_groups() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let out = reflect_with(
        &pki,
        "server.pem",
        "server.key",
        &["--groups", "X25519MLKEM768,X448"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("invalid value 'X25519MLKEM768,X448' for '--groups <GROUPS>': unknown group `X448`; known groups: X25519MLKEM768, SecP256r1MLKEM768, SecP384r1MLKEM1024"), "{err}");
}

#[test]
fn empty_group_list_is_refused() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let out = reflect_with(&pki, "server.pem", "server.key", &["--groups", ""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("'--groups <GROUPS>': group list is empty"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pq_required_without_a_pq_group_is_refused() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let out = reflect_with(
        &pki,
        "server.pem",
        "server.key",
        &["--policy", "pq-required", "--groups", "X25519,secp256r1"],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("policy pq-required needs a post-quantum group, but groups has none (X25519, secp256r1); add X25519MLKEM768"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_certificate_file_names_the_file() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let out = reflect_with(&pki, "nope.pem", "server.key", &[]);
    assert_eq!(out.status.code(), Some(64));
    let err = stderr(&out);
    assert!(
        err.contains("cert/key: cannot read certificate from") && err.contains("nope.pem"),
        "{err}"
    );
}

#[test]
fn key_that_does_not_match_the_certificate_is_refused() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let out = reflect_with(&pki, "server.pem", "client.key", &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("private key does not match the certificate"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn expired_certificate_is_refused() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(pki.path("expired.pem"), cert.pem()).unwrap();
    std::fs::write(pki.path("expired.key"), key.serialize_pem()).unwrap();
    let out = reflect_with(&pki, "expired.pem", "expired.key", &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("expired at 2021-01-01T00:00:00Z; renew it"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_fallback_rule_and_policy_are_refused() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let out = reflect_with(
        &pki,
        "server.pem",
        "server.key",
        &["--fallback-rule", "allow-classical cidr:10.0.0.300/8"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("'--fallback-rule <FALLBACK_RULES>': invalid fallback rule `allow-classical cidr:10.0.0.300/8`: not a CIDR"), "{}", stderr(&out));
    let out = reflect_with(&pki, "server.pem", "server.key", &["--policy", "strict"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("'--policy <POLICY>': unknown policy mode `strict`; use pq-required, pq-preferred or classical-allowed"), "{}", stderr(&out));
}

/// Starts `reflect` on an ephemeral port; returns the child and the port it printed.
fn spawn_reflect(
    pki: &Pki,
    extra: &[&str],
) -> (KillOnDrop, u16, BufReader<std::process::ChildStderr>) {
    let mut child = KillOnDrop(
        bin()
            .args(["reflect", "--listen", "127.0.0.1:0", "--cert"])
            .arg(pki.path("server.pem"))
            .arg("--key")
            .arg(pki.path("server.key"))
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "reflect exited before listening"
        );
        if let Some(rest) = line.split("listen=127.0.0.1:").nth(1) {
            let port = rest.split_whitespace().next().unwrap().parse().unwrap();
            return (child, port, stderr);
        }
    }
}

#[test]
fn reflect_logs_classical_fallback_at_warn_and_connect_reports_refusals() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let (child, port, mut log) = spawn_reflect(&pki, &["--policy", "pq-preferred"]);
    let url = format!("https://localhost:{port}/");
    let ca = pki.path("ca.pem");
    let connect = |extra: &[&str]| {
        bin()
            .args(["connect", &url, "--ca", ca.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };

    let out = connect(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"group\": \"X25519MLKEM768\""), "{stdout}");

    let out = connect(&["--groups", "X25519", "--policy", "classical-allowed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut line = String::new();
    let warned = loop {
        line.clear();
        if log.read_line(&mut line).unwrap() == 0 {
            break false;
        }
        if line.contains("WARN")
            && line.contains("Classical key exchange")
            && line.contains("tls.group=X25519")
        {
            break true;
        }
    };
    drop(child);
    assert!(warned, "no warn line for the classical fallback");
}

#[test]
fn connect_fails_with_the_reason_when_pq_required_server_refuses() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let (child, port, _log) = spawn_reflect(&pki, &["--policy", "pq-required"]);
    let out = bin()
        .args(["connect", &format!("https://localhost:{port}/"), "--ca"])
        .arg(pki.path("ca.pem"))
        .args(["--groups", "X25519", "--policy", "classical-allowed"])
        .output()
        .unwrap();
    drop(child);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("handshake with localhost failed: received fatal alert: HandshakeFailure (the server accepts none of the groups we offered (X25519), or its policy refused them)"), "{err}");
}

#[test]
fn demo_runs_mcp_through_the_whole_tunnel_and_shows_each_hop() {
    let out = run(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", stderr(&out));
    for line in [
        "initialize                  HTTP 200",
        "notifications/initialized   HTTP 202",
        "tools: echo, tls_info",
        "\"hello over post-quantum TLS\"",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    // Both ends of the TLS hop agree it was post-quantum.
    assert_eq!(
        stdout.matches("x-mcp-pqtls-group: X25519MLKEM768").count(),
        2,
        "{stdout}"
    );
    assert_eq!(stdout.matches("x-mcp-pqtls-pq: true").count(), 2);
}

#[test]
fn demo_prints_its_own_lines_and_logs_only_when_asked() {
    let quiet = bin().arg("demo").env_remove("RUST_LOG").output().unwrap();
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    let stdout = String::from_utf8_lossy(&quiet.stdout);
    assert!(stdout.contains("tools: echo, tls_info"), "{stdout}");
    // No sidecar log line interleaved: stderr stays empty without -v or RUST_LOG.
    assert_eq!(stderr(&quiet), "", "stdout:\n{stdout}");
    // The dev keys lived in a private directory that is gone once the demo ends.
    let dir = stdout
        .lines()
        .find_map(|l| l.split_once(") in ").map(|(_, d)| d.to_owned()))
        .unwrap_or_else(|| panic!("no key directory in:\n{stdout}"));
    assert!(dir.contains("mcp-pqtls-demo-"), "{dir}");
    assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");

    let verbose = bin()
        .args(["demo", "-v"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(verbose.status.success(), "{}", stderr(&verbose));
    let logs = stderr(&verbose);
    assert!(logs.contains("Server sidecar started"), "{logs}");
    assert!(logs.contains("Client sidecar started"), "{logs}");
}
