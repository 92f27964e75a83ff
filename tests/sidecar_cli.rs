//! The sidecar binary as operators run it: certificate reload under an open SSE stream,
//! SIGTERM drain, config files and `check-config`.

mod support;

use std::path::Path;
use std::time::Duration;

use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::{Group, PolicyMode};
use support::process::{bin, install_config, Proc};
use support::upstream::{get_plain, read_until, Upstream, GUARD};
use support::Pki;

/// A `pq-required` client trusting `pki`'s CA.
fn client_of(pki: &Pki) -> mcp_pqtls::tls::PqConnector {
    support::connector(pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired))
}

fn url(port: u16, path: &str) -> http::Uri {
    format!("https://localhost:{port}{path}").parse().unwrap()
}

/// Opens a streaming GET through a fresh connection and returns its body.
async fn open_stream(
    connector: mcp_pqtls::tls::PqConnector,
    port: u16,
    path: &str,
) -> hyper::body::Incoming {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Full<bytes::Bytes>>(connector);
    let res = client.get(url(port, path)).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body()
}

fn copy_identity(from: &Pki, to: &Path) {
    for f in ["server.pem", "server.key"] {
        std::fs::copy(from.path(f), to.join(f)).unwrap();
    }
}

#[tokio::test]
async fn certificate_reload_keeps_open_streams_and_refuses_a_bad_certificate() {
    let old = Pki::new(KeyAlg::EcdsaP256);
    let new = Pki::new(KeyAlg::MlDsa65);
    let live = tempfile::tempdir().unwrap();
    copy_identity(&old, live.path());
    let upstream = Upstream::start().await;
    let server = Proc::server_sidecar(
        live.path(),
        &upstream.url(),
        &["--reload-interval", "100ms"],
    );

    let mut stream = open_stream(client_of(&old), server.port, "/sse").await;
    read_until(&mut stream, "data: one").await;

    // A file change: new handshakes get the new certificate.
    copy_identity(&new, live.path());
    server.wait_log(&["Certificate reloaded", "ml-dsa-65"]);
    let fetched = mcp_pqtls::get(&client_of(&new), url(server.port, "/headers"))
        .await
        .unwrap();
    assert_eq!(fetched.info.signature_scheme.as_deref(), Some("mldsa65"));
    let refused = mcp_pqtls::get(&client_of(&old), url(server.port, "/headers")).await;
    assert!(refused.is_err(), "the old CA still verifies");

    // The stream opened under the old certificate keeps going.
    upstream.release.notify_one();
    read_until(&mut stream, "data: two").await;

    // A broken certificate is refused; the new one stays in use.
    std::fs::write(live.path().join("server.pem"), "not a certificate").unwrap();
    server.signal("-HUP");
    server.wait_log(&["Certificate reload refused"]);
    let fetched = mcp_pqtls::get(&client_of(&new), url(server.port, "/headers"))
        .await
        .unwrap();
    assert!(fetched.status.is_success());
    let metrics = scrape(server.admin.unwrap()).await;
    assert!(
        metrics.contains("mcp_pqtls_cert_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcp_pqtls_cert_reloads_total{result=\"failed\"}"),
        "{metrics}"
    );
}

/// Replaces `path` by rename, as operators should: a poll never reads half a file.

#[tokio::test]
async fn policy_reload_from_the_config_file_keeps_open_streams_and_refuses_a_bad_file() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    install_config(
        &config,
        "groups = [\"X25519MLKEM768\", \"X25519\"]\npolicy = \"pq-preferred\"\n",
    );
    let server = Proc::server_sidecar(
        pki.dir.path(),
        &upstream.url(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--reload-interval",
            "100ms",
        ],
    );
    let classical = support::connector(pki.client(&[Group::X25519], PolicyMode::ClassicalAllowed));
    let pq = support::connector(pki.client(
        &[Group::X25519MLKEM768, Group::SecP384r1MLKEM1024],
        PolicyMode::PqRequired,
    ));
    let mut stream = open_stream(pq.clone(), server.port, "/sse").await;
    read_until(&mut stream, "data: one").await;
    let fetched = mcp_pqtls::get(&classical, url(server.port, "/headers"))
        .await
        .unwrap();
    assert_eq!(fetched.info.group, "X25519");

    // A new policy, and a setting that only a restart applies.
    install_config(
        &config,
        "groups = [\"SecP384r1MLKEM1024\", \"X25519MLKEM768\"]\npolicy = \"pq-required\"\nmax-body-bytes = 1000\n",
    );
    server.wait_log(&[
        "Groups and policy reloaded",
        "pq-required",
        "SecP384r1MLKEM1024, X25519MLKEM768",
    ]);
    server.wait_log(&["only a restart applies", "max-body-bytes"]);
    let refused = mcp_pqtls::get(&classical, url(server.port, "/headers"))
        .await
        .unwrap_err();
    assert_eq!(
        refused.alert(),
        Some(rustls::AlertDescription::HandshakeFailure),
        "{refused}"
    );
    let fetched = mcp_pqtls::get(&pq, url(server.port, "/headers"))
        .await
        .unwrap();
    assert_eq!(fetched.info.group, "SecP384r1MLKEM1024");

    // The stream opened under the old policy keeps going.
    upstream.release.notify_one();
    read_until(&mut stream, "data: two").await;

    // A policy that does not fit its groups is refused; the policy in use stays.
    install_config(&config, "groups = [\"X25519\"]\npolicy = \"pq-required\"\n");
    let line = server.wait_log(&["Groups and policy reload refused", "pq-required"]);
    assert!(line.contains("has none (X25519)"), "{line}");
    // A good policy in a file that could not start (another field is bad) is refused whole.
    install_config(
        &config,
        "groups = [\"X25519\"]\npolicy = \"classical-allowed\"\nmax-connections = 0\n",
    );
    server.wait_log(&["Groups and policy reload refused", "max-connections"]);
    let refused = mcp_pqtls::get(&classical, url(server.port, "/headers")).await;
    assert!(
        refused.is_err(),
        "the refused file's classical-allowed was applied"
    );
    let fetched = mcp_pqtls::get(&pq, url(server.port, "/headers"))
        .await
        .unwrap();
    assert_eq!(fetched.info.group, "SecP384r1MLKEM1024");
    let metrics = scrape(server.admin.unwrap()).await;
    for sample in [
        "mcp_pqtls_policy_reloads_total{result=\"ok\"} 1",
        "mcp_pqtls_policy_reloads_total{result=\"failed\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == sample), "{sample}\n{metrics}");
    }
}

#[test]
fn a_policy_reload_names_what_needs_a_restart_and_what_a_flag_overrides() {
    use mcp_pqtls::config::{ConfigSource, SidecarConfig};

    let pki = Pki::new(KeyAlg::EcdsaP256);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.toml");
    let head = format!(
        "listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:1\"\ncert = {:?}\nkey = {:?}\n",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    install_config(
        &file,
        &format!("{head}groups = [\"X25519MLKEM768\", \"X25519\"]\n"),
    );
    let flags = SidecarConfig {
        policy: Some(PolicyMode::PqPreferred),
        ..SidecarConfig::default()
    };
    let source = ConfigSource::load(file.clone(), flags).unwrap();
    install_config(
        &file,
        &format!("{head}groups = [\"MLKEM1024\", \"X25519MLKEM768\"]\npolicy = \"pq-required\"\nmax-body-bytes = 1000\n"),
    );
    let reload = source.reload_policy().unwrap();
    assert_eq!(reload.groups, [Group::MLKEM1024, Group::X25519MLKEM768]);
    assert_eq!(reload.policy.mode, PolicyMode::PqPreferred, "the flag wins");
    assert_eq!(reload.overridden_by_flags, ["policy"]);
    assert_eq!(reload.restart_needed, ["max-body-bytes"]);
    // A client sidecar's file is not a server's.
    install_config(&file, "mode = \"client\"\n");
    let err = source.reload_policy().unwrap_err().to_string();
    assert!(err.starts_with("mode:"), "{err}");
}

#[tokio::test]
async fn failed_handshakes_get_one_info_line_per_period_and_every_one_a_metric() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = Proc::server_sidecar(pki.dir.path(), &upstream.url(), &[]);
    for _ in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(GUARD, tcp.read_to_end(&mut answer)).await;
    }
    let line = server.wait_log(&["Handshake failed", "not_logged=0"]);
    assert!(line.contains("INFO"), "{line}");
    let admin = server.admin.unwrap();
    let failed = "mcp_pqtls_handshakes_total{result=\"failed\"} 3";
    tokio::time::timeout(GUARD, async {
        while !scrape(admin).await.lines().any(|l| l == failed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `{failed}`"));
    // Everything logged before SIGTERM is in the log once shutdown is.
    server.signal("-TERM");
    server.wait_log(&["Shutting down"]);
    let lines = server.log.lock().unwrap().clone();
    let logged = lines
        .iter()
        .filter(|l| l.contains("Handshake failed"))
        .count();
    assert_eq!(logged, 1, "{}", lines.join("\n"));
}

async fn scrape(admin: u16) -> String {
    get_plain(&format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .1
}

#[tokio::test]
async fn sigterm_stops_accepting_and_drains_in_flight_requests() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let mut server =
        Proc::server_sidecar(pki.dir.path(), &upstream.url(), &["--drain-timeout", "3s"]);
    let admin = server.admin.unwrap();
    assert_eq!(
        get_plain(&format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .0,
        200
    );
    let connector = client_of(&pki);
    let port = server.port;
    let in_flight =
        tokio::spawn(async move { mcp_pqtls::get(&connector, url(port, "/slow")).await });
    // The request is at the upstream before we signal.
    tokio::time::timeout(GUARD, async {
        while upstream.requests() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    server.signal("-TERM");
    server.wait_log(&["Shutting down"]);
    assert_eq!(
        get_plain(&format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .0,
        503
    );
    assert!(
        mcp_pqtls::get(&client_of(&pki), url(port, "/headers"))
            .await
            .is_err(),
        "a new connection was served during the drain"
    );
    upstream.release_slow.notify_one();
    let fetched = in_flight
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", server.log.lock().unwrap().join("\n")));
    assert!(fetched.status.is_success());
    assert_eq!(&fetched.body[..], b"slow but sure");
    let status = tokio::task::spawn_blocking(move || server.child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn example_configs_pass_check_config() {
    let dir = tempfile::tempdir().unwrap();
    mcp_pqtls::certs::write_dev_pki(&dir.path().join("certs/dev"), KeyAlg::EcdsaP256).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::create_dir(dir.path().join("examples")).unwrap();
    std::fs::copy(
        examples.join("jwks.example.json"),
        dir.path().join("examples/jwks.example.json"),
    )
    .unwrap();
    for (file, mode) in [
        ("server.toml", "server mode"),
        ("client.toml", "client mode"),
        ("gate.toml", "server mode"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(file);
        let out = bin()
            .arg("check-config")
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&format!("ok ({mode}")), "{stdout}");
        if file == "gate.toml" {
            assert!(
                stdout.contains("gate: auth (audience https://mcp.example.com/mcp), 4 rules (1 requiring approval), 2 rate limits, audit to audit.jsonl"),
                "{stdout}"
            );
        }
    }
}

#[test]
fn bad_config_files_name_the_field_the_value_and_the_fix() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let dir = tempfile::tempdir().unwrap();
    let cert = pki.path("server.pem");
    let key = pki.path("server.key");
    let base =
        format!("mode = \"server\"\nlisten = \"127.0.0.1:0\"\ncert = {cert:?}\nkey = {key:?}\n");
    for (extra, expected) in [
        (
            "upstream = \"http://127.0.0.1:8000\"\ngrops = [\"X25519\"]\n",
            vec!["unknown field `grops`", "line 6"],
        ),
        (
            "upstream = \"http://127.0.0.1:8000\"\ngroups = [\"X25519MLKEM768\", \"X448\"]\n",
            vec!["unknown group `X448`; known groups: X25519MLKEM768"],
        ),
        (
            "upstream = \"http://127.0.0.1:8000\"\npolicy = \"strict\"\n",
            vec!["unknown policy mode `strict`; use pq-required"],
        ),
        (
            "upstream = \"http://127.0.0.1:8000\"\ndrain-timeout = \"soon\"\n",
            vec!["`soon` is not a duration such as 10s"],
        ),
        (
            "upstream = \"http://127.0.0.1:8000\"\norigin = \"keep\"\n",
            vec!["unknown variant `keep`", "rewrite"],
        ),
        (
            "",
            vec!["upstream is required in server mode: pass --upstream or set `upstream = ...`"],
        ),
        (
            "upstream = \"https://127.0.0.1:8000\"\n",
            vec!["speaks plain HTTP to its upstream; use http://HOST:PORT or unix:/PATH"],
        ),
        (
            "upstream = \"http://127.0.0.1:8000/mcp\"\n",
            vec!["upstream `http://127.0.0.1:8000/mcp`: give only scheme, host and port"],
        ),
        (
            "upstream = \"http://127.0.0.1:8000\"\nsni = \"x\"\n",
            vec!["sni: only applies to client mode; remove it"],
        ),
        (
            "upstream = \"http://127.0.0.1:8000\"\npolicy = \"pq-required\"\ngroups = \"X25519\"\n",
            vec!["policy pq-required needs a post-quantum group"],
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        let out = bin().arg("check-config").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{extra}: {err}");
        for e in expected {
            assert!(err.contains(e), "{extra}: expected `{e}` in: {err}");
        }
    }
    // No mode: check-config cannot guess.
    let path = dir.path().join("nomode.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\n").unwrap();
    let out = bin().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mode is missing"));
    // Flags override the file: the file's broken upstream is replaced.
    let path = dir.path().join("over.toml");
    std::fs::write(&path, format!("{base}upstream = \"ftp://nope\"\n")).unwrap();
    let server = Proc::spawn(&[
        "server",
        "--config",
        path.to_str().unwrap(),
        "--upstream",
        "http://127.0.0.1:9",
    ]);
    server.wait_log(&["Server sidecar started", "upstream=http://127.0.0.1:9"]);
}

#[test]
fn check_config_validates_the_gate_sections_and_names_the_field() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let dir = tempfile::tempdir().unwrap();
    let jwks = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jwks.example.json");
    let base = format!(
        "mode = \"server\"\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:8000\"\ncert = {:?}\nkey = {:?}\n",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let auth = format!(
        "[auth]\njwks-file = {jwks:?}\nissuer = \"https://idp.test\"\naudience = \"https://mcp.test/mcp\"\n"
    );
    let check = |text: &str| {
        let path = dir.path().join("gate.toml");
        std::fs::write(&path, text).unwrap();
        let out = bin().arg("check-config").arg(&path).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = format!("{base}{auth}[[rules]]\ntool = \"delete_*\"\nscopes = [\"admin\"]\n[rate-limit]\nkey = \"subject\"\nper-minute = 60\n[audit]\npath = \"-\"\n");
    let (code, stdout, stderr) = check(&good);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "gate: auth (audience https://mcp.test/mcp), 1 rules, 1 rate limits, audit to -"
        ),
        "{stdout}"
    );
    for (extra, expected) in [
        (format!("{auth}jwks-url = \"https://idp.test/jwks\"\n"), "auth.jwks-file: give jwks-file or jwks-url, not both"),
        ("[auth]\njwks-file = \"/nonexistent/jwks.json\"\nissuer = \"x\"\naudience = \"https://mcp.test/\"\n".to_owned(), "auth.jwks-file: /nonexistent/jwks.json:"),
        ("[[rules]]\nmethod = \"tools/call\"\nscopes = [\"admin\"]\n".to_owned(), "rules[0].scopes: scopes come from bearer tokens: add an [auth] section"),
        ("[[rules]]\ntool = \"delete_?\"\n".to_owned(), "rules[0].tool: `delete_?`: `?` is not supported"),
        ("[rate-limit]\nkey = \"ip\"\nper-minute = 5\n".to_owned(), "unknown variant `ip`, expected one of `identity`, `subject`, `address`"),
        ("[rate-limit]\nper-minute = 0\n".to_owned(), "rate-limit[0].per-minute: must be greater than 0"),
        ("[rate_limit]\nper-minute = 5\n".to_owned(), "unknown field `rate_limit`"),
    ] {
        let (code, _, stderr) = check(&format!("{base}{extra}"));
        assert_eq!(code, Some(64), "{extra}: {stderr}");
        assert!(stderr.contains(expected), "{extra}: expected `{expected}` in: {stderr}");
    }
    // The client sidecar has no gate.
    let client = "mode = \"client\"\nlisten = \"127.0.0.1:0\"\nupstream = \"https://127.0.0.1:8443\"\n[audit]\npath = \"-\"\n";
    let (code, _, stderr) = check(client);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("audit: only applies to server mode; remove it"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_peer_string_cannot_forge_a_line_of_the_text_log() {
    use support::jwt::{claims, jwks, keys, sign};
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    std::fs::write(dir.path().join("jwks.json"), jwks(&[&k.es_jwk])).unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\njwks-file = {:?}\nissuer = {:?}\naudience = {:?}\n",
            dir.path().join("jwks.json"),
            support::jwt::ISSUER,
            support::jwt::AUDIENCE
        ),
    )
    .unwrap();
    let server = Proc::server_sidecar(
        pki.dir.path(),
        &upstream.url(),
        &["--config", config.to_str().unwrap()],
    );
    // The JWT header's `kid` is the peer's, and goes into the refusal's reason.
    const FORGED: &str = "2026-12-01T00:00:00.000000Z  INFO mcp_pqtls: forged http.status=200";
    let token = sign(
        jsonwebtoken::Algorithm::ES256,
        &format!("x\n{FORGED}\u{1b}[2K"),
        &k.es,
        &claims("mallory"),
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Full<bytes::Bytes>>(client_of(&pki));
    let req = http::Request::post(url(server.port, "/mcp"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 401);
    // The refusal is logged, on one line, with the newline and the escape escaped.
    let line = server.wait_log(&["bearer token not accepted"]);
    assert!(line.contains("forged"), "the kid is in the line: {line}");
    assert!(!line.contains('\u{1b}'), "raw escape in {line:?}");
    let log = server.log.lock().unwrap().clone();
    assert!(
        !log.iter()
            .any(|l| l.starts_with("2026-12-01T00:00:00.000000Z")),
        "a forged line:\n{}",
        log.join("\n")
    );
}

/// The attack on `tools pin`: a server that takes the connection and never answers
/// (here the sidecar in front of an upstream that accepts and holds). The listing gives up
/// at its deadline with an error that says so, instead of hanging the operator's shell or CI.
#[test]
fn tools_pin_gives_up_on_a_server_that_never_answers() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", hole.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        // Accept and hold every connection, answering nothing, until the test ends.
        let conns: Vec<_> = hole.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(conns);
    });
    let server = Proc::server_sidecar(pki.dir.path(), &upstream, &[]);
    let url = format!("https://localhost:{}/mcp", server.port);
    let out = bin()
        .args(["tools", "pin", &url, "--timeout", "2s", "--ca"])
        .arg(pki.path("ca.pem"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no pin file from a server that said nothing"
    );
    assert!(
        stderr.contains("tools/list: no complete answer within 2s"),
        "{stderr}"
    );
    drop(held);
}
