//! Attacks on the HTTP hop: upstream fan-out through multiplexed streams, bodies trickled
//! to the upstream, and refusals that a client still sending must see. See the parent
//! module.

use super::*;

use http_body_util::Channel;
use mcp_pqtls::gate::config::AuthSection;

/// F3: streams multiplexed over one h2 connection are not connections, and each took an
/// upstream socket without limit. Past `max-upstream-requests` the answer is a quick 503;
/// an open SSE stream holds its place until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_fan_out_past_max_upstream_requests_gets_a_quick_503() {
    const MAX: usize = 4;
    let w = scene(SidecarConfig {
        max_upstream_requests: Some(MAX),
        // The global limit is the subject here; the per-source share has a test of its own.
        max_upstream_requests_per_ip: Some(MAX * 2),
        ..SidecarConfig::default()
    })
    .await;
    let (pki, upstream, running) = (&w.pki, &w.upstream, &w.running);
    let (h2, driver) = h2_client(pki, running).await;
    let open_stream = |mut h2: h2::client::SendRequest<Bytes>| async move {
        h2 = h2.ready().await.unwrap();
        let req = Request::get(https(running, "/sse")).body(()).unwrap();
        let (response, _) = h2.send_request(req, true).unwrap();
        tokio::time::timeout(GUARD, response)
            .await
            .expect("no response head")
            .unwrap()
    };
    let mut streams = Vec::new();
    for _ in 0..MAX {
        let res = open_stream(h2.clone()).await;
        assert_eq!(res.status(), StatusCode::OK);
        streams.push(res);
    }
    let before = upstream.requests();
    let refused = open_stream(h2.clone()).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        upstream.requests(),
        before,
        "the refused one reached the upstream"
    );
    expect_metric(
        running,
        "mcp_pqtls_upstream_errors_total{kind=\"rejected\"}",
        1,
    )
    .await;

    // A stream that ends gives its place back.
    drop(streams.pop());
    let deadline = Instant::now() + GUARD;
    loop {
        let res = open_stream(h2.clone()).await;
        if res.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ended stream kept its permit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(streams);
    driver.abort();
}

/// Item 2: a body trickled one byte every two seconds to the upstream (no gate) is cut at
/// `request-body-timeout` with 408, and honest clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_trickled_to_the_upstream_is_cut_with_408() {
    let w = scene(SidecarConfig {
        request_body_timeout: Some(Dur(Duration::from_secs(3))),
        ..SidecarConfig::default()
    })
    .await;
    let (pki, running) = (&w.pki, &w.running);
    let connector =
        support::connector(pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired));
    let client = Client::builder(TokioExecutor::new()).build::<_, Channel<Bytes>>(connector);
    let (mut tx, body) = Channel::<Bytes>::new(1);
    let trickle = tokio::spawn(async move {
        // Bounded: 60 bytes, two minutes on the old code.
        for _ in 0..60 {
            if tx.send_data(Bytes::from_static(b"x")).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let req = Request::post(https(running, "/headers"))
        .body(body)
        .unwrap();
    let res = tokio::time::timeout(GUARD, client.request(req))
        .await
        .expect("the trickled body was not cut")
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    honest_request(pki, running).await;
    trickle.abort();
}

/// Item 10: a refusal answered before the body (here 401, no token) must reach a client
/// still sending it. hyper reset the h2 stream right after the answer, and Debian's curl
/// 7.88 reported `(92) HTTP/2 stream was not closed cleanly` instead of the status; over
/// HTTP/1.1 the connection was closed under the upload. The sidecar now reads the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_before_the_body_reaches_curl_still_sending_it() {
    let curl = std::path::Path::new("/usr/bin/curl");
    if !curl.exists() {
        eprintln!("skipped: no /usr/bin/curl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let k = support::jwt::keys();
    std::fs::write(
        dir.path().join("jwks.json"),
        support::jwt::jwks(&[&k.es_jwk]),
    )
    .unwrap();
    // Not `scene`: its honest request carries no token, and this gate wants one.
    let _serial = SERIAL.lock().await;
    let pki = &Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let config = SidecarConfig {
        auth: Some(AuthSection {
            jwks_file: Some(dir.path().join("jwks.json")),
            issuer: Some(support::jwt::ISSUER.into()),
            audience: Some(support::jwt::AUDIENCE.into()),
            ..AuthSection::default()
        }),
        ..server_config(pki, &upstream.url())
    };
    let running = &run(Mode::Server, config).await;
    let url = format!("https://localhost:{}/mcp", running.started.listen.port());
    for size in [60 * 1024, 300 * 1024] {
        let body = dir.path().join(format!("body-{size}.json"));
        std::fs::write(&body, vec![b'x'; size]).unwrap();
        for (version, runs) in [("--http2", 10), ("--http1.1", 3)] {
            for run in 0..runs {
                let out = tokio::time::timeout(
                    GUARD,
                    tokio::process::Command::new(curl)
                        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", version])
                        .arg("--cacert")
                        .arg(pki.path("ca.pem"))
                        .args(["-H", "content-type: application/json"])
                        .arg("--data-binary")
                        .arg(format!("@{}", body.display()))
                        .arg(&url)
                        .output(),
                )
                .await
                .expect("curl hung")
                .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && stdout == "401",
                    "{version}, {size} bytes, run {run}: curl {:?} printed {stdout:?}: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    assert_eq!(upstream.requests(), 0);
}
