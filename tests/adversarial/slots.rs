//! Attacks on connection slots and timers: one source holding every slot, connections that
//! never send a request, idle and dead h2 peers, and the admin listener. With defaults
//! unless a test says (the timeouts are shortened only so that the tests end soon).

use super::*;

use std::net::SocketAddr;
use tokio::net::TcpSocket;

/// A TCP connection to `to` from the source address `from` (another 127.x address).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().expect("source address"))?;
    socket.connect(to).await
}

/// Whether the server closes `tcp` (EOF, reset, or a TLS alert then EOF) within `GUARD`;
/// bytes it sends before (a GOAWAY, a close_notify) are read and dropped.
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(GUARD, read).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_holding_idle_h2_and_another_silent_sockets_leave_a_third_served_at_once() {
    // Defaults (max-connections 1024, max-connections-per-ip 256), but the first-request
    // timeout is long enough that the idle connections are held throughout.
    let w = scene(SidecarConfig {
        handshake_timeout: Some(Dur(Duration::from_secs(30))),
        first_request_timeout: Some(Dur(Duration::from_secs(60))),
        ..SidecarConfig::default()
    })
    .await;
    let (pki, running) = (&w.pki, &w.running);
    let listen = running.started.listen;
    const EACH: usize = 1100;

    // 127.0.0.3: silent TCP sockets, no ClientHello.
    let mut silent = Vec::new();
    for _ in 0..EACH {
        silent.push(connect_from("127.0.0.3", listen).await.unwrap());
    }
    // 127.0.0.2: TLS with ALPN h2, the h2 preface and SETTINGS, then nothing.
    let mut config = pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired);
    config.alpn = vec![b"h2".to_vec()];
    let connector = support::connector(config);
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..EACH {
        let tcp = connect_from("127.0.0.2", listen).await.unwrap();
        match connector.handshake(tcp, "localhost").await {
            Ok((tls, _)) => match h2::client::handshake(tls).await {
                Ok((h2, conn)) => idle.push((h2, tokio::spawn(conn))),
                Err(_) => refused += 1,
            },
            // Closed at accept: the source's share is taken.
            Err(_) => refused += 1,
        }
    }
    assert_eq!(idle.len(), 256, "idle h2 connections held by one source");
    assert_eq!(refused, EACH - 256);

    // A third address is served at once: the global slots were never exhausted.
    honest_request(pki, running).await;

    let metrics = scrape(running).await;
    let per_ip = metric(
        &metrics,
        "mcp_pqtls_connections_rejected_total{reason=\"max_connections_per_ip\"}",
    );
    assert!(
        per_ip >= 2 * (EACH as u64 - 256),
        "per-source refusals counted: {per_ip}\n{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "mcp_pqtls_connections_rejected_total{reason=\"max_connections\"}"
        ),
        0
    );
    drop((silent, idle));
    fds_return_to(w.baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_request_after_the_handshake_is_closed_h1_and_h2() {
    let w = scene(SidecarConfig {
        first_request_timeout: Some(Dur(Duration::from_secs(1))),
        ..SidecarConfig::default()
    })
    .await;
    let (pki, running) = (&w.pki, &w.running);
    for alpn in ["h2", "http/1.1"] {
        let mut config = pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired);
        config.alpn = vec![alpn.as_bytes().to_vec()];
        let (mut tls, info) = support::connector(config)
            .connect("localhost", running.started.listen.port())
            .await
            .unwrap();
        assert_eq!(info.alpn.as_deref(), Some(alpn));
        if alpn == "h2" {
            // The preface alone is not a request.
            tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                .await
                .unwrap();
        }
        assert!(
            closed_by_server(&mut tls).await,
            "{alpn}: a connection without a request was kept open"
        );
    }
    expect_metric(
        running,
        "mcp_pqtls_connections_closed_total{reason=\"first_request_timeout\"}",
        2,
    )
    .await;
    fds_return_to(w.baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_is_closed_but_an_open_sse_stream_is_not_idle() {
    let w = scene(SidecarConfig {
        idle_timeout: Some(Dur(Duration::from_secs(1))),
        ..SidecarConfig::default()
    })
    .await;
    let (pki, upstream, running) = (&w.pki, &w.upstream, &w.running);

    // One request, answered; then nothing: GOAWAY and close after the idle timeout.
    let (mut h2, conn) = h2_client(pki, running).await;
    let req = Request::get(https(running, "/headers")).body(()).unwrap();
    let (res, _) = h2.send_request(req, true).unwrap();
    let res = tokio::time::timeout(GUARD, res).await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);
    let ended = tokio::time::timeout(GUARD, conn)
        .await
        .expect("the idle connection was kept open");
    drop(ended);

    // An SSE stream open for several idle timeouts keeps its connection and gets its event.
    let (mut h2, conn) = h2_client(pki, running).await;
    let req = Request::get(https(running, "/sse")).body(()).unwrap();
    let (res, _) = h2.send_request(req, true).unwrap();
    let mut body = tokio::time::timeout(GUARD, res)
        .await
        .unwrap()
        .unwrap()
        .into_body();
    let first = tokio::time::timeout(GUARD, body.data()).await.unwrap();
    assert!(String::from_utf8_lossy(&first.unwrap().unwrap()).contains("data: one"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!conn.is_finished(), "an open SSE stream was judged idle");
    upstream.release.notify_one();
    let mut seen = String::new();
    while !seen.contains("data: two") {
        let chunk = tokio::time::timeout(GUARD, body.data())
            .await
            .expect("the second event never came")
            .expect("the stream ended before the second event")
            .unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    expect_metric(
        running,
        "mcp_pqtls_connections_closed_total{reason=\"idle_timeout\"}",
        1,
    )
    .await;
    drop((h2, body, conn));
}

/// Forwards bytes between a client and `to` until `freeze` is notified, then forwards
/// nothing more but keeps both sockets open: a peer that died without a FIN.
async fn freezing_proxy(to: SocketAddr, freeze: Arc<tokio::sync::Notify>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(to).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up = async {
            let _ = tokio::io::copy(&mut cr, &mut sw).await;
        };
        let down = async {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        };
        tokio::select! {
            _ = async { tokio::join!(up, down) } => {}
            _ = freeze.notified() => {
                // Held open, never read or written again.
                tokio::time::sleep(GUARD * 4).await;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_peer_that_stops_answering_pings_is_closed_even_with_a_stream_open() {
    let w = scene(SidecarConfig {
        keepalive_interval: Some(Dur(Duration::from_secs(1))),
        keepalive_timeout: Some(Dur(Duration::from_secs(1))),
        ..SidecarConfig::default()
    })
    .await;
    let (pki, running) = (&w.pki, &w.running);
    let freeze = Arc::new(tokio::sync::Notify::new());
    let via = freezing_proxy(running.started.listen, freeze.clone()).await;
    let mut config = pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired);
    config.alpn = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(via).await.unwrap();
    let (tls, _) = support::connector(config)
        .handshake(tcp, "localhost")
        .await
        .unwrap();
    let (mut h2, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    // An SSE stream in flight: the connection is not idle, only dead.
    let req = Request::get(https(running, "/sse")).body(()).unwrap();
    let (res, _) = h2.send_request(req, true).unwrap();
    let mut body = tokio::time::timeout(GUARD, res)
        .await
        .unwrap()
        .unwrap()
        .into_body();
    let _ = tokio::time::timeout(GUARD, body.data()).await.unwrap();
    let active = |m: &str| metric(m, "mcp_pqtls_connections_active");
    assert_eq!(active(&scrape(running).await), 1);
    freeze.notify_one();
    // The server's PING goes unanswered: it closes its side.
    expect_metric(running, "mcp_pqtls_connections_active", 0).await;
    drop((h2, body, conn));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_h2c_sockets_cannot_take_the_admin_listener_down() {
    let w = scene(SidecarConfig::default()).await;
    let admin = w.running.started.admin.unwrap();
    // More than the admin's 64 slots, from another address: silent sockets and h2c
    // connections that send the preface and nothing else.
    let mut held = Vec::new();
    for i in 0..100 {
        let mut tcp = connect_from("127.0.0.2", admin).await.unwrap();
        if i % 2 == 0 {
            let _ = tcp
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                .await;
        }
        held.push(tcp);
    }
    // /healthz answers at once.
    let (status, body) = support::upstream::get_plain(&format!("http://{admin}/healthz")).await;
    assert_eq!(status, 200, "{body}");
    // And the held sockets are closed: at accept (past the source's share) or at the
    // admin's first-request timeout.
    for tcp in &mut held {
        assert!(closed_by_server(tcp).await, "an admin socket was kept open");
    }
}

/// An h2 connection over PQ TLS to the sidecar from the source address `from`.
async fn h2_from(
    from: &str,
    pki: &Pki,
    running: &Running,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let mut config = pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired);
    config.alpn = vec![b"h2".to_vec()];
    let tcp = connect_from(from, running.started.listen).await.unwrap();
    let (tls, _) = support::connector(config)
        .handshake(tcp, "localhost")
        .await
        .unwrap();
    let (h2, conn) = h2::client::handshake(tls).await.unwrap();
    (h2, tokio::spawn(conn))
}

async fn sse_status(
    h2: &h2::client::SendRequest<Bytes>,
    running: &Running,
) -> (StatusCode, h2::RecvStream) {
    let mut h2 = h2.clone().ready().await.unwrap();
    let req = Request::get(https(running, "/sse")).body(()).unwrap();
    let (res, _) = h2.send_request(req, true).unwrap();
    let res = tokio::time::timeout(GUARD, res).await.unwrap().unwrap();
    (res.status(), res.into_body())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_hold_every_upstream_slot_with_sse_streams() {
    // Defaults but smaller: 8 upstream requests, a quarter (2) per source.
    let w = scene(SidecarConfig {
        max_upstream_requests: Some(8),
        ..SidecarConfig::default()
    })
    .await;
    let (pki, running) = (&w.pki, &w.running);
    // 127.0.0.2 opens SSE streams over several connections until refused: 2 get through.
    let (mut held, mut conns) = (Vec::new(), Vec::new());
    let mut refused = 0;
    for _ in 0..3 {
        let (h2, conn) = h2_from("127.0.0.2", pki, running).await;
        for _ in 0..2 {
            match sse_status(&h2, running).await {
                (StatusCode::OK, body) => held.push(body),
                (status, _) => {
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                    refused += 1;
                }
            }
        }
        conns.push((h2, conn));
    }
    assert_eq!((held.len(), refused), (2, 4));
    // Another source still gets its streams.
    let (h2, conn) = h2_from("127.0.0.3", pki, running).await;
    let (status, body) = sse_status(&h2, running).await;
    assert_eq!(status, StatusCode::OK);
    expect_metric(
        running,
        "mcp_pqtls_upstream_errors_total{kind=\"rejected_per_ip\"}",
        4,
    )
    .await;
    drop((held, conns, body, h2, conn));
}
