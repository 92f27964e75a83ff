//! Real handshakes over 127.0.0.1 between our server and our client.

mod support;

use std::time::{Duration, SystemTime};

use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::policy::{Policy, PolicyMode};
use mcp_pqtls::tls::ClientError;
use mcp_pqtls::Group::{self, *};
use rustls::AlertDescription;
use support::{connector, fetch, Pki, Server};

fn policy(mode: PolicyMode) -> Policy {
    Policy::new(mode)
}

fn with_rules(sunset_passed: bool, rules: &[&str]) -> Policy {
    Policy::new(PolicyMode::PqPreferred)
        .with_sunset(sunset_passed.then(|| SystemTime::now() - Duration::from_secs(60)))
        .with_rules(rules.iter().map(|r| r.parse().unwrap()))
}

fn alert(err: &ClientError) -> Option<AlertDescription> {
    err.alert()
}

#[tokio::test]
async fn every_group_in_the_catalogue_negotiates() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    for group in Group::ALL {
        let server =
            Server::start(pki.server(&[group], policy(PolicyMode::ClassicalAllowed))).await;
        let client = connector(pki.client(&[group], PolicyMode::ClassicalAllowed));
        let (ours, theirs) = fetch(&client, &server).await.unwrap();
        assert_eq!(ours.group, group.name());
        assert_eq!(ours.pq, group.is_pq());
        assert_eq!(theirs["group"], group.name());
        assert_eq!(theirs["pq"], group.is_pq());
        assert_eq!(server.acceptor.metrics().snapshot().handshakes(group), 1);
        server.stop().await;
    }
}

#[tokio::test]
async fn pq_required_server_refuses_classical_client_before_any_request() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server =
        Server::start(pki.server(&[X25519MLKEM768, X25519], policy(PolicyMode::PqRequired))).await;
    let client = connector(pki.client(&[X25519, Secp256r1], PolicyMode::ClassicalAllowed));
    let err = fetch(&client, &server).await.unwrap_err();
    assert_eq!(
        alert(&err),
        Some(AlertDescription::HandshakeFailure),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("accepts none of the groups we offered (X25519, secp256r1)"),
        "{msg}"
    );
    assert_eq!(server.requests(), 0, "no request may reach the service");
    let m = server.acceptor.metrics().snapshot();
    assert_eq!(m.policy_refusals, 1);
    assert_eq!(m.handshakes_by_group, vec![]);
    server.stop().await;
}

#[tokio::test]
async fn pq_preferred_server_retries_a_classical_first_share_to_pq() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server =
        Server::start(pki.server(&[X25519MLKEM768, X25519], policy(PolicyMode::PqPreferred))).await;
    // Client order puts X25519 first, so its only key share is X25519.
    let client = connector(pki.client(&[X25519, X25519MLKEM768], PolicyMode::ClassicalAllowed));
    let (ours, theirs) = fetch(&client, &server).await.unwrap();
    assert_eq!(ours.group, "X25519MLKEM768");
    assert!(ours.hello_retry);
    assert_eq!(theirs["group"], "X25519MLKEM768");
    assert_eq!(theirs["hello_retry"], true);
    assert_eq!(server.acceptor.metrics().snapshot().hello_retries, 1);
    server.stop().await;
}

#[tokio::test]
async fn server_preference_wins_over_client_order() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server =
        Server::start(pki.server(&[MLKEM1024, X25519MLKEM768], policy(PolicyMode::PqRequired)))
            .await;
    let client = connector(pki.client(&[X25519MLKEM768, MLKEM1024], PolicyMode::PqRequired));
    let (ours, _) = fetch(&client, &server).await.unwrap();
    assert_eq!(ours.group, "MLKEM1024");
    assert!(ours.hello_retry, "client's first share was X25519MLKEM768");
    server.stop().await;
}

#[tokio::test]
async fn pq_preferred_server_accepts_classical_client_visibly() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server =
        Server::start(pki.server(&[X25519MLKEM768, X25519], policy(PolicyMode::PqPreferred))).await;
    let client = connector(pki.client(&[X25519], PolicyMode::ClassicalAllowed));
    let (ours, theirs) = fetch(&client, &server).await.unwrap();
    assert_eq!(ours.group, "X25519");
    assert_eq!(theirs["classical_fallback"], true);
    assert_eq!(server.acceptor.metrics().snapshot().classical_fallbacks, 1);
    server.stop().await;
}

#[tokio::test]
async fn pq_required_client_never_offers_classical() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(&[X25519], policy(PolicyMode::ClassicalAllowed))).await;
    let client = connector(pki.client(&[X25519MLKEM768, X25519], PolicyMode::PqRequired));
    assert_eq!(client.offered_groups(), [X25519MLKEM768]);
    let err = fetch(&client, &server).await.unwrap_err();
    assert!(
        err.to_string().contains("handshake with localhost failed"),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn pq_preferred_client_counts_a_classical_result() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(&[X25519], policy(PolicyMode::ClassicalAllowed))).await;
    let client = connector(pki.client(&[X25519MLKEM768, X25519], PolicyMode::PqPreferred));
    let (ours, _) = fetch(&client, &server).await.unwrap();
    assert_eq!(ours.group, "X25519");
    assert!(ours.classical_fallback);
    assert_eq!(client.metrics().snapshot().classical_fallbacks, 1);
    server.stop().await;
}

#[tokio::test]
async fn sunset_passed_refuses_classical() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(&[X25519MLKEM768, X25519], with_rules(true, &[]))).await;
    let classical = connector(pki.client(&[X25519], PolicyMode::ClassicalAllowed));
    let err = fetch(&classical, &server).await.unwrap_err();
    assert_eq!(alert(&err), Some(AlertDescription::HandshakeFailure));
    // pq clients are unaffected.
    let pq = connector(pki.client(&[X25519MLKEM768], PolicyMode::PqRequired));
    assert_eq!(fetch(&pq, &server).await.unwrap().0.group, "X25519MLKEM768");
    assert_eq!(server.acceptor.metrics().snapshot().policy_refusals, 1);
    server.stop().await;
}

#[tokio::test]
async fn cidr_exception_allows_classical_after_sunset() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let groups = [X25519MLKEM768, X25519];
    let classical = connector(pki.client(&[X25519], PolicyMode::ClassicalAllowed));

    let server = Server::start(pki.server(
        &groups,
        with_rules(true, &["allow-classical cidr:127.0.0.0/8"]),
    ))
    .await;
    assert_eq!(fetch(&classical, &server).await.unwrap().0.group, "X25519");
    server.stop().await;

    let server = Server::start(pki.server(
        &groups,
        with_rules(true, &["allow-classical cidr:10.0.0.0/8"]),
    ))
    .await;
    assert!(fetch(&classical, &server).await.is_err());
    server.stop().await;

    let server =
        Server::start(pki.server(&groups, with_rules(false, &["require-pq cidr:127.0.0.1"]))).await;
    assert!(fetch(&classical, &server).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn sni_exception_matches_wildcards() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let groups = [X25519MLKEM768, X25519];
    let server = Server::start(pki.server(
        &groups,
        with_rules(true, &["allow-classical sni:*.legacy.test"]),
    ))
    .await;
    let client_for = |sni: &str| {
        let mut c = pki.client(&[X25519], PolicyMode::ClassicalAllowed);
        c.trust = mcp_pqtls::tls::danger::insecure_skip_verify(); // the dev cert names localhost only
        c.sni = Some(sni.to_owned());
        connector(c)
    };
    let (ours, theirs) = fetch(&client_for("api.legacy.test"), &server)
        .await
        .unwrap();
    assert_eq!(ours.group, "X25519");
    assert_eq!(theirs["sni"], "api.legacy.test");
    assert!(fetch(&client_for("api.prod.test"), &server).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn identity_exception_allows_classical_for_matching_client_certificate() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let groups = [X25519MLKEM768, X25519];
    let server = Server::start(pki.mtls_server(
        &groups,
        with_rules(true, &["allow-classical id:spiffe://mcp-pqtls.dev/*"]),
    ))
    .await;
    let mut with_cert = pki.client(&[X25519], PolicyMode::ClassicalAllowed);
    with_cert.identity = Some(pki.client_identity());
    let (ours, theirs) = fetch(&connector(with_cert), &server).await.unwrap();
    assert_eq!(ours.group, "X25519");
    assert_eq!(theirs["client_identity"], "spiffe://mcp-pqtls.dev/client");
    server.stop().await;

    // Same client, a rule that requires pq for its identity: refused with access_denied.
    let server = Server::start(pki.mtls_server(
        &groups,
        with_rules(false, &["require-pq id:spiffe://mcp-pqtls.dev/client"]),
    ))
    .await;
    let mut with_cert = pki.client(&[X25519], PolicyMode::ClassicalAllowed);
    with_cert.identity = Some(pki.client_identity());
    let err = fetch(&connector(with_cert), &server).await.unwrap_err();
    assert_eq!(alert(&err), Some(AlertDescription::AccessDenied), "{err}");
    assert_eq!(server.acceptor.metrics().snapshot().policy_refusals, 1);
    assert_eq!(server.requests(), 0);
    server.stop().await;
}

#[tokio::test]
async fn mtls_records_client_identity_and_refuses_clients_without_a_certificate() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server =
        Server::start(pki.mtls_server(&[X25519MLKEM768], policy(PolicyMode::PqRequired))).await;
    let mut with_cert = pki.client(&[X25519MLKEM768], PolicyMode::PqRequired);
    with_cert.identity = Some(pki.client_identity());
    let (ours, theirs) = fetch(&connector(with_cert.clone()), &server).await.unwrap();
    assert_eq!(theirs["client_identity"], "spiffe://mcp-pqtls.dev/client");
    assert_eq!(
        ours.client_identity.as_deref(),
        Some("spiffe://mcp-pqtls.dev/client")
    );
    // A server that never asks: the certificate is not sent, and not claimed.
    let plain = Server::start(pki.server(&[X25519MLKEM768], policy(PolicyMode::PqRequired))).await;
    let (ours, theirs) = fetch(&connector(with_cert), &plain).await.unwrap();
    assert_eq!(ours.client_identity, None);
    assert!(theirs["client_identity"].is_null());

    let without = connector(pki.client(&[X25519MLKEM768], PolicyMode::PqRequired));
    let err = fetch(&without, &server).await.unwrap_err();
    assert_eq!(
        alert(&err),
        Some(AlertDescription::CertificateRequired),
        "{err}"
    );
    assert_eq!(server.requests(), 1);
    server.stop().await;
}

#[tokio::test]
async fn certificates_of_every_key_algorithm_serve_and_verify() {
    for (alg, scheme) in [
        (KeyAlg::EcdsaP256, "ecdsa_secp256r1_sha256"),
        (KeyAlg::EcdsaP384, "ecdsa_secp384r1_sha384"),
        (KeyAlg::Ed25519, "ed25519"),
        (KeyAlg::Rsa2048, "rsa_pss_rsae_sha512"),
        (KeyAlg::MlDsa44, "mldsa44"),
        (KeyAlg::MlDsa65, "mldsa65"),
        (KeyAlg::MlDsa87, "mldsa87"),
    ] {
        let pki = Pki::new(alg);
        assert_eq!(pki.server_identity().info().key_algorithm, alg.name());
        let server =
            Server::start(pki.mtls_server(&[X25519MLKEM768], policy(PolicyMode::PqRequired))).await;
        let mut c = pki.client(&[X25519MLKEM768], PolicyMode::PqRequired);
        c.identity = Some(pki.client_identity());
        let (ours, theirs) = fetch(&connector(c), &server)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(ours.signature_scheme.as_deref(), Some(scheme), "{alg}");
        assert_eq!(theirs["signature_scheme"], scheme, "{alg}");
        server.stop().await;
    }
}

#[tokio::test]
async fn untrusted_server_certificate_is_refused_by_the_client() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let other = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(&[X25519MLKEM768], policy(PolicyMode::PqRequired))).await;
    let client = connector(other.client(&[X25519MLKEM768], PolicyMode::PqRequired));
    let err = fetch(&client, &server).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("did not verify against the trusted CAs"),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn second_connection_resumes_on_a_pq_group() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(&[X25519MLKEM768], policy(PolicyMode::PqRequired))).await;
    let client = connector(pki.client(&[X25519MLKEM768], PolicyMode::PqRequired));
    let (first, _) = fetch(&client, &server).await.unwrap();
    assert!(!first.resumed);
    let (second, theirs) = fetch(&client, &server).await.unwrap();
    assert!(second.resumed);
    assert_eq!(theirs["resumed"], true);
    assert_eq!(theirs["group"], "X25519MLKEM768");
    assert_eq!(theirs["signature_scheme"], serde_json::Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn silent_client_is_cut_off_at_the_handshake_timeout() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let mut config = pki.server(&[X25519MLKEM768], policy(PolicyMode::PqRequired));
    config.handshake_timeout = Duration::from_millis(200);
    let server = Server::start(config).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 1];
    // The server closes the connection: read returns EOF (not a hang).
    let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(server.acceptor.metrics().snapshot().handshake_timeouts, 1);
    // Others are still served.
    let client = connector(pki.client(&[X25519MLKEM768], PolicyMode::PqRequired));
    assert!(fetch(&client, &server).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_is_dropped_and_counted() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(&[X25519MLKEM768], policy(PolicyMode::PqRequired))).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut buf).await;
    assert_eq!(server.acceptor.metrics().snapshot().handshake_failures, 1);
    assert_eq!(server.requests(), 0);
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    use std::convert::Infallible;
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let acceptor = mcp_pqtls::tls::PqAcceptor::new(
        pki.server(&[X25519MLKEM768], policy(PolicyMode::PqRequired)),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (entered_tx, entered_rx) = tokio::sync::mpsc::channel::<()>(1);
    let service = tower::service_fn(move |_req| {
        let entered = entered_tx.clone();
        async move {
            let _ = entered.send(()).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from("done"),
            )))
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mcp_pqtls::serve(listener, acceptor, service, stopped));
    let client = connector(pki.client(&[X25519MLKEM768], PolicyMode::PqRequired));
    let url: http::Uri = format!("https://localhost:{port}/").parse().unwrap();
    let request = tokio::spawn(async move { mcp_pqtls::get(&client, url).await });
    let mut entered_rx = entered_rx;
    entered_rx.recv().await.unwrap();
    stop.send(()).unwrap();
    let fetched = request.await.unwrap().unwrap();
    assert_eq!(&fetched.body[..], b"done");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn client_connections_disable_nagle() {
    // Regression: with Nagle on, each keep-alive request through the tunnel waited for the
    // server's delayed ACK (~40 ms). Checked as the socket option, not as a time.
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server = Server::start(pki.server(&[X25519MLKEM768], policy(PolicyMode::PqRequired))).await;
    let client = connector(pki.client(&[X25519MLKEM768], PolicyMode::PqRequired));
    let (tls, _) = client
        .connect("localhost", server.addr.port())
        .await
        .unwrap();
    assert!(tls.get_ref().0.nodelay().unwrap());
    server.stop().await;
}

#[tokio::test]
async fn replaced_policy_applies_to_new_handshakes_and_spares_established_ones() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;

    let pki = Pki::new(KeyAlg::EcdsaP256);
    let server =
        Server::start(pki.server(&[X25519MLKEM768, X25519], policy(PolicyMode::PqPreferred))).await;
    let mut classical_config = pki.client(&[X25519], PolicyMode::ClassicalAllowed);
    classical_config.alpn = vec![b"http/1.1".to_vec()];
    let classical = connector(classical_config);
    // A classical connection established before the swap, kept open across it.
    let (tls, info) = classical
        .connect("localhost", server.addr.port())
        .await
        .unwrap();
    assert_eq!(info.group, "X25519");
    let (mut held, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);

    // A policy that cannot work is refused whole; the old one stays.
    let err = server
        .acceptor
        .replace_policy(&[X25519], policy(PolicyMode::PqRequired))
        .unwrap_err();
    assert!(err.to_string().contains("pq-required"), "{err}");
    assert_eq!(server.acceptor.policy().mode, PolicyMode::PqPreferred);
    fetch(&classical, &server).await.unwrap();

    server
        .acceptor
        .replace_policy(
            &[SecP384r1MLKEM1024, X25519MLKEM768, X25519],
            policy(PolicyMode::PqRequired),
        )
        .unwrap();
    // Under pq-required only the pq groups are in use.
    assert_eq!(
        server.acceptor.groups(),
        [SecP384r1MLKEM1024, X25519MLKEM768]
    );
    let err = fetch(&classical, &server).await.unwrap_err();
    assert_eq!(
        alert(&err),
        Some(AlertDescription::HandshakeFailure),
        "{err}"
    );
    let pq = connector(pki.client(
        &[X25519MLKEM768, SecP384r1MLKEM1024],
        PolicyMode::PqRequired,
    ));
    let (ours, _) = fetch(&pq, &server).await.unwrap();
    assert_eq!(ours.group, "SecP384r1MLKEM1024");
    assert!(
        ours.hello_retry,
        "the client's first share was X25519MLKEM768"
    );

    // The connection from before still serves, on what it negotiated.
    let res = held
        .send_request(
            http::Request::get("/")
                .header(http::header::HOST, "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let theirs: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(theirs["group"], "X25519");
    let m = server.acceptor.metrics().snapshot();
    assert_eq!((m.handshakes(X25519), m.policy_refusals), (2, 1));
    drop(held);
    server.stop().await;
}

/// The server sidecar binary on 127.0.0.1 with the PKI's identity and these extra flags.
fn sidecar(pki: &Pki, upstream: &str, extra: &[&str]) -> support::process::Proc {
    support::process::Proc::server_sidecar(pki.dir.path(), upstream, extra)
}

#[tokio::test]
async fn policy_refusal_lines_are_throttled_and_every_refusal_is_counted() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = support::upstream::Upstream::start().await;
    let server = sidecar(&pki, &upstream.url(), &["--policy", "pq-required"]);
    let classical = connector(pki.client(&[X25519], PolicyMode::ClassicalAllowed));
    let url: http::Uri = format!("https://localhost:{}/", server.port)
        .parse()
        .unwrap();
    let started = std::time::Instant::now();
    const REFUSED: u64 = 30;
    for _ in 0..REFUSED {
        let err = mcp_pqtls::get(&classical, url.clone()).await.unwrap_err();
        assert_eq!(
            alert(&err),
            Some(AlertDescription::HandshakeFailure),
            "{err}"
        );
    }
    // Every refusal is counted...
    let admin = server.admin.unwrap();
    let sample = format!(
        "mcp_pqtls_handshakes_total{{result=\"refused\",reason=\"no_pq_group_offered\"}} {REFUSED}"
    );
    let deadline = std::time::Instant::now() + support::upstream::GUARD;
    loop {
        let (_, metrics) =
            support::upstream::get_plain(&format!("http://127.0.0.1:{admin}/metrics")).await;
        if metrics.lines().any(|l| l == sample) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{sample}\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...but one line per 10 s is logged, the first saying how many were not.
    let first = server.wait_log(&["Handshake refused by policy"]);
    assert!(
        first.contains("WARN") && first.contains("not_logged=0"),
        "{first}"
    );
    let lines = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("Handshake refused by policy"))
        .count() as u64;
    let periods = 1 + started.elapsed().as_secs() / 10;
    assert!(
        lines <= periods,
        "{lines} refusal lines in {periods} periods"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_private_key_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let key = pki.path("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let upstream = support::upstream::Upstream::start().await;
    let server = sidecar(&pki, &upstream.url(), &[]);
    let line = server.wait_log(&["Private key file is readable by group or others"]);
    for needle in ["WARN", "server.key", "mode=0644", "chmod 600"] {
        assert!(line.contains(needle), "{needle}: {line}");
    }
}
