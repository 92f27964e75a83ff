//! The sidecars in-process, over real sockets: SSE streamed event by event through the
//! full tunnel, header hygiene, Origin, limits, upstream failures, what each hop announces.

mod support;

use support::sidecar::{https, json, run, scrape, server_config, text, tls_client, Running};
use support::upstream::{read_until, Upstream, GUARD};

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Channel, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::config::{Dur, Mode, SidecarConfig};
use mcp_pqtls::groups::GroupList;
use mcp_pqtls::{Group, PolicyMode};
use support::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client_config(pki: &Pki, server: &Running) -> SidecarConfig {
    SidecarConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        upstream: Some(format!(
            "https://localhost:{}",
            server.started.listen.port()
        )),
        ca: Some(pki.path("ca.pem")),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        ..SidecarConfig::default()
    }
}

fn plain_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn http_url(running: &Running, path: &str) -> http::Uri {
    format!("http://{}{path}", running.started.listen)
        .parse()
        .unwrap()
}

#[tokio::test]
async fn sse_event_arrives_before_the_next_is_sent_through_the_full_tunnel() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = run(Mode::Server, server_config(&pki, &upstream.url())).await;
    let client = run(Mode::Client, client_config(&pki, &server)).await;

    let res = plain_client()
        .request(
            Request::get(http_url(&client, "/sse"))
                .header("accept", "text/event-stream")
                .header("last-event-id", "0")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["x-mcp-pqtls-group"], "X25519MLKEM768");
    let mut body = res.into_body();
    // The upstream holds `two` until we release it: `one` must get here on its own.
    let first = read_until(&mut body, "data: one").await;
    assert!(!first.contains("two"), "{first:?}");
    upstream.release.notify_one();
    let rest = read_until(&mut body, "data: two").await;
    // Comment lines and CRLF framing pass untouched.
    assert!(
        rest.contains(": ping\r\n\r\nid: 2\ndata: two\n\n"),
        "{rest:?}"
    );
}

#[tokio::test]
async fn sse_streams_over_h2_and_http1_from_a_tls_client() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = run(Mode::Server, server_config(&pki, &upstream.url())).await;
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let mut config = pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired);
        config.alpn = vec![alpn.to_vec()];
        let client = Client::builder(TokioExecutor::new())
            .build::<_, Full<Bytes>>(support::connector(config));
        let res = client.get(https(&server, "/sse")).await.unwrap();
        let expected = if alpn == b"h2" {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(res.version(), expected);
        let mut body = res.into_body();
        let first = read_until(&mut body, "data: one").await;
        assert!(!first.contains("two"));
        upstream.release.notify_one();
        read_until(&mut body, "data: two").await;
    }
}

#[tokio::test]
async fn upstream_sees_clean_headers_and_our_tls_info_only() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = run(Mode::Server, server_config(&pki, &upstream.url())).await;
    let client = tls_client(&pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired);
    let req = Request::post(https(&server, "/headers?status=202"))
        .header("x-mcp-pqtls-group", "forged")
        .header("X-MCP-PQTLS-Client-Identity", "spiffe://admin")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "6.6.6.6")
        .header("mcp-session-id", "s-123")
        .header("mcp-protocol-version", "2025-11-25")
        .header("last-event-id", "42")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from_static(b"{\"jsonrpc\":\"2.0\"}")))
        .unwrap();
    let res = client.request(req).await.unwrap();
    // Statuses pass through; the upstream's forged TLS-info header does not.
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.headers()["mcp-session-id"], "s-123");
    assert!(!res.headers().contains_key("x-mcp-pqtls-group"));
    let seen = json(res).await;
    assert_eq!(seen["x-mcp-pqtls-group"], "X25519MLKEM768");
    assert_eq!(seen["x-mcp-pqtls-pq"], "true");
    assert_eq!(seen["x-mcp-pqtls-classical-fallback"], "false");
    assert_eq!(seen["x-mcp-pqtls-sni"], "localhost");
    assert!(seen.get("x-mcp-pqtls-client-identity").is_none(), "{seen}");
    assert!(seen.get("x-hop").is_none() && seen.get("keep-alive").is_none());
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["host"], upstream.addr.to_string());
    for h in [
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "accept",
    ] {
        assert!(seen.get(h).is_some(), "{h} lost: {seen}");
    }
    assert_eq!(seen[":method"], "POST");
    assert_eq!(seen[":body-len"], "17");
    for status in [404, 405] {
        let res = client
            .request(
                Request::delete(https(&server, &format!("/headers?status={status}")))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status);
    }
}

#[tokio::test]
async fn classical_fallback_is_announced_upstream() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = run(Mode::Server, server_config(&pki, &upstream.url())).await;
    let client = tls_client(&pki, &[Group::X25519], PolicyMode::ClassicalAllowed);
    let seen = json(client.get(https(&server, "/headers")).await.unwrap()).await;
    assert_eq!(seen["x-mcp-pqtls-group"], "X25519");
    assert_eq!(seen["x-mcp-pqtls-pq"], "false");
    assert_eq!(seen["x-mcp-pqtls-classical-fallback"], "true");
}

#[tokio::test]
async fn origin_not_allowed_is_refused_before_upstream_and_allowed_one_is_rewritten() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = run(
        Mode::Server,
        SidecarConfig {
            allowed_origins: Some(vec!["https://app.example.com".into()]),
            ..server_config(&pki, &upstream.url())
        },
    )
    .await;
    let client = tls_client(&pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired);
    let with_origin = |o: &str| {
        Request::post(https(&server, "/headers"))
            .header("origin", o)
            .body(Full::default())
            .unwrap()
    };
    let res = client
        .request(with_origin("https://evil.example"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(text(res).await.contains("https://evil.example"));
    assert_eq!(upstream.requests(), 0);

    let seen = json(
        client
            .request(with_origin("https://app.example.com"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen["origin"], format!("http://{}", upstream.addr));
    assert_eq!(upstream.requests(), 1);
    let metrics = scrape(&server).await;
    assert!(
        metrics.contains("mcp_pqtls_origin_refused_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn body_and_header_limits_get_clear_statuses_and_others_are_unaffected() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = run(
        Mode::Server,
        SidecarConfig {
            max_body_bytes: Some(1024),
            max_header_bytes: Some(8192),
            ..server_config(&pki, &upstream.url())
        },
    )
    .await;
    let client = tls_client(&pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired);
    // Declared too large.
    let res = client
        .request(
            Request::post(https(&server, "/headers"))
                .body(Full::new(Bytes::from(vec![b'x'; 4096])))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(text(res).await.contains("max-body-bytes (1024 bytes)"));
    // Chunked, found too large while streaming.
    let (mut tx, chunked) = Channel::<Bytes, Infallible>::new(8);
    tokio::spawn(async move {
        for _ in 0..8 {
            let _ = tx.send_data(Bytes::from(vec![b'y'; 512])).await;
        }
    });
    let streaming = Client::builder(TokioExecutor::new()).build(support::connector(
        pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired),
    ));
    let res = streaming
        .request(
            Request::post(https(&server, "/headers"))
                .body(chunked)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Within the limit: fine.
    let res = client
        .request(
            Request::post(https(&server, "/headers"))
                .body(Full::new(Bytes::from(vec![b'x'; 1000])))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // A request head over the limit: 431 on HTTP/1.1.
    let mut config = pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired);
    config.alpn = vec![b"http/1.1".to_vec()];
    let h1 =
        Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(support::connector(config));
    let res = h1
        .request(
            Request::get(https(&server, "/headers"))
                .header("x-big", "z".repeat(20_000))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Others are unaffected.
    let res = client.get(https(&server, "/headers")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn max_connections_closes_the_extra_connection_only() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = run(
        Mode::Server,
        SidecarConfig {
            max_connections: Some(1),
            ..server_config(&pki, &upstream.url())
        },
    )
    .await;
    let client = tls_client(&pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired);
    // Hold the one connection with an open stream.
    let res = client.get(https(&server, "/sse")).await.unwrap();
    let mut stream = res.into_body();
    read_until(&mut stream, "data: one").await;
    // A second connection is closed without a byte.
    let mut extra = tokio::net::TcpStream::connect(server.started.listen)
        .await
        .unwrap();
    let _ = extra.write_all(b"\x16\x03\x01\x00\x05hello").await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(GUARD, extra.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the extra connection got bytes");
    // The first connection's stream goes on.
    upstream.release.notify_one();
    read_until(&mut stream, "data: two").await;
    let metrics = scrape(&server).await;
    // One address: the per-address cap (a quarter of 1, so 1) is reached with the global.
    let rejected: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("mcp_pqtls_connections_rejected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(rejected, 1, "{metrics}");
    assert!(metrics.contains("mcp_pqtls_streams_active 1"), "{metrics}");
}

#[tokio::test]
async fn upstream_down_is_502_and_silent_upstream_is_504() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let server = run(
        Mode::Server,
        server_config(&pki, &format!("http://{closed}")),
    )
    .await;
    let client = tls_client(&pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired);
    let res = client.get(https(&server, "/mcp")).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let body = text(res).await;
    assert!(
        body.contains(&format!("upstream http://{closed} unavailable")),
        "{body}"
    );
    let metrics = scrape(&server).await;
    assert!(
        metrics.contains("mcp_pqtls_upstream_errors_total{kind=\"connect\"} 1"),
        "{metrics}"
    );

    let upstream = Upstream::start().await;
    let server = run(
        Mode::Server,
        SidecarConfig {
            upstream_timeout: Some(Dur(Duration::from_millis(300))),
            ..server_config(&pki, &upstream.url())
        },
    )
    .await;
    let res = client.get(https(&server, "/never")).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    // The timeout covers the response head only: a stream open longer than it lives on.
    let res = client.get(https(&server, "/sse")).await.unwrap();
    let mut body = res.into_body();
    read_until(&mut body, "data: one").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    upstream.release.notify_one();
    read_until(&mut body, "data: two").await;
}

#[tokio::test]
async fn client_sidecar_refuses_a_classical_only_server_by_default() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = run(
        Mode::Server,
        SidecarConfig {
            groups: Some(GroupList(vec![Group::X25519])),
            policy: Some(PolicyMode::ClassicalAllowed),
            ..server_config(&pki, &upstream.url())
        },
    )
    .await;
    let client = run(Mode::Client, client_config(&pki, &server)).await;
    let res = plain_client()
        .get(http_url(&client, "/headers"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let body = text(res).await;
    assert!(body.contains("HandshakeFailure"), "{body}");
    assert_eq!(upstream.requests(), 0);

    // pq-preferred on the client: classical is allowed and announced in the response.
    let client = run(
        Mode::Client,
        SidecarConfig {
            policy: Some(PolicyMode::PqPreferred),
            ..client_config(&pki, &server)
        },
    )
    .await;
    let res = plain_client()
        .get(http_url(&client, "/headers"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-mcp-pqtls-group"], "X25519");
    assert_eq!(res.headers()["x-mcp-pqtls-classical-fallback"], "true");
}

#[tokio::test]
async fn admin_health_and_metrics() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = run(Mode::Server, server_config(&pki, &upstream.url())).await;
    let client = tls_client(&pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired);
    assert_eq!(
        client
            .get(https(&server, "/headers"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let admin = server.started.admin.unwrap();
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/nope", 404)] {
        let res = plain_client()
            .get(format!("http://{admin}{path}").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{path}");
    }
    let m = scrape(&server).await;
    for line in [
        "mcp_pqtls_handshakes_total{result=\"ok\",group=\"X25519MLKEM768\",pq=\"true\"} 1",
        "mcp_pqtls_handshakes_total{result=\"refused\",reason=\"no_pq_group_offered\"} 0",
        "mcp_pqtls_handshake_duration_seconds_count 1",
        "mcp_pqtls_responses_total{class=\"2xx\"} 1",
        "mcp_pqtls_upstream_duration_seconds_count 1",
        "mcp_pqtls_classical_fallbacks_total 0",
        "# TYPE mcp_pqtls_handshake_duration_seconds histogram",
    ] {
        assert!(m.contains(line), "missing `{line}` in\n{m}");
    }
}

/// The server's SETTINGS_MAX_CONCURRENT_STREAMS is 50: one tunnel connection carries 50
/// streams, and a client sidecar that queued the rest on it would leave 250 of these SSE
/// streams waiting forever. Each must get its first event, over several connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_carries_more_sse_streams_than_one_connection_allows() {
    const STREAMS: usize = 300;
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = run(
        Mode::Server,
        SidecarConfig {
            max_concurrent_streams: Some(50),
            // One client host carries all 300: past the default per-source share (256).
            max_upstream_requests_per_ip: Some(1000),
            ..server_config(&pki, &upstream.url())
        },
    )
    .await;
    let client = run(
        Mode::Client,
        SidecarConfig {
            // The local clients here are 300 HTTP/1.1 connections from one address.
            max_connections_per_ip: Some(1000),
            ..client_config(&pki, &server)
        },
    )
    .await;

    let local = plain_client();
    let mut opened = Vec::new();
    for _ in 0..STREAMS {
        let (local, url) = (local.clone(), http_url(&client, "/sse"));
        opened.push(tokio::spawn(async move {
            let res = local
                .request(
                    Request::get(url)
                        .header("accept", "text/event-stream")
                        .body(Full::default())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let mut body = res.into_body();
            read_until(&mut body, "data: one").await;
            // Held open until every stream has its event.
            body
        }));
    }
    let mut bodies = Vec::new();
    for stream in opened {
        let body = tokio::time::timeout(GUARD, stream)
            .await
            .expect("an SSE stream got no event: queued behind the stream limit?")
            .unwrap();
        bodies.push(body);
    }
    assert_eq!(bodies.len(), STREAMS);
    let handshakes = scrape(&server)
        .await
        .lines()
        .filter(|l| l.starts_with("mcp_pqtls_handshakes_total{result=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum::<u64>();
    assert!(
        (STREAMS as u64 / 50..=STREAMS as u64 / 10).contains(&handshakes),
        "the server saw {handshakes} TLS connections for {STREAMS} streams"
    );
}

/// DNS rebinding: a page on `evil.example` rebound to 127.0.0.1 sends `Host:
/// evil.example:PORT` and, on a same-origin GET, no `Origin`. It gets 421 and the upstream
/// sees nothing; the sidecar's own names pass, in any case.
#[tokio::test]
async fn client_sidecar_refuses_a_foreign_host_with_421_before_the_upstream() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let server = run(Mode::Server, server_config(&pki, &upstream.url())).await;
    let client = run(Mode::Client, client_config(&pki, &server)).await;
    let port = client.started.listen.port();
    let local = plain_client();
    let get = |host: String| {
        Request::get(http_url(&client, "/headers"))
            .header("host", host)
            .body(Full::default())
            .unwrap()
    };
    for host in [
        format!("evil.example:{port}"),
        "localhost".to_owned(),
        format!("localhost:{}", port + 1),
    ] {
        let res = local.request(get(host.clone())).await.unwrap();
        assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST, "{host}");
    }
    assert_eq!(upstream.requests(), 0);

    // HTTP/1.1 without Host at all.
    let mut tcp = tokio::net::TcpStream::connect(client.started.listen)
        .await
        .unwrap();
    tcp.write_all(b"GET /headers HTTP/1.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(GUARD, tcp.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert_eq!(upstream.requests(), 0);

    for host in [
        client.started.listen.to_string(),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let res = local.request(get(host.clone())).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{host}");
    }
    assert_eq!(upstream.requests(), 3);
}
