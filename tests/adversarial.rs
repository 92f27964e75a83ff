//! Hostile peers over real sockets against the server sidecar in this process: slowloris,
//! garbage, oversized and retry-ignoring ClientHellos, aborted handshakes, thousands of
//! policy refusals, connection floods, HTTP/1.1 smuggling and h2 rapid reset. Each one gets
//! its alert or close and is counted; honest clients are served meanwhile; file descriptors
//! return to baseline. No speed is asserted; waits are bounded only against hangs.

mod support;

// Attacks grouped by what they aim at; each file shares this one's helpers (`super::*`).
#[path = "adversarial/gate.rs"]
mod gate;
#[path = "adversarial/proxy.rs"]
mod proxy;
#[path = "adversarial/resumption.rs"]
mod resumption;
#[path = "adversarial/slots.rs"]
mod slots;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::config::{Dur, Mode, SidecarConfig};
use mcp_pqtls::crypto::{provider, Algorithms};
use mcp_pqtls::{Group, PolicyMode};
use support::sidecar::{https, run, scrape, server_config, tls_client, Running};
use support::upstream::{read_until, Upstream, GUARD};
use support::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The fd and metric checks need the process to themselves: one test at a time (an async
/// lock: it is held across awaits, and does not poison when a test fails).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ALERT: u8 = 0x15;
const HANDSHAKE: u8 = 0x16;
const HANDSHAKE_FAILURE: u8 = 40;
/// ServerHello.random of a HelloRetryRequest (RFC 8446 section 4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// A real ClientHello (TLS records) from a rustls client offering `groups` in that order;
/// the first carries the key share.
fn client_hello(groups: &[Group]) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(provider(
        groups,
        &Algorithms::default().cipher_suites,
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// `hello` (one record) with a padding extension of `extra` bytes, re-fragmented into
/// records of at most 16 KiB as a real client would send it.
fn padded(hello: &[u8], extra: usize) -> Vec<u8> {
    let msg = &hello[5..];
    assert_eq!(msg[0], 1, "not a ClientHello");
    let mut body = msg[4..].to_vec();
    // legacy_version, random, then session id, cipher suites, compression, extensions.
    let mut at = 2 + 32;
    at += 1 + body[at] as usize;
    at += 2 + u16::from_be_bytes([body[at], body[at + 1]]) as usize;
    at += 1 + body[at] as usize;
    let ext_len = u16::from_be_bytes([body[at], body[at + 1]]) as usize + 4 + extra;
    body[at..at + 2].copy_from_slice(&u16::try_from(ext_len).unwrap().to_be_bytes());
    body.extend_from_slice(&21u16.to_be_bytes()); // padding (RFC 7685)
    body.extend_from_slice(&u16::try_from(extra).unwrap().to_be_bytes());
    body.resize(body.len() + extra, 0);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    records(HANDSHAKE, &handshake)
}

fn records(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in payload.chunks(16 * 1024) {
        out.extend_from_slice(&[kind, 3, 1]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// What the server answered: TLS records until it closed (or `GUARD` passed: a hang).
async fn answer(tcp: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut got = Vec::new();
    let read = async {
        loop {
            let mut head = [0u8; 5];
            if tcp.read_exact(&mut head).await.is_err() {
                return;
            }
            let mut payload = vec![0; u16::from_be_bytes([head[3], head[4]]) as usize];
            if tcp.read_exact(&mut payload).await.is_err() {
                return;
            }
            let alert = head[0] == ALERT;
            got.push((head[0], payload));
            if alert {
                return;
            }
        }
    };
    tokio::time::timeout(GUARD, read)
        .await
        .expect("the server neither answered nor closed");
    got
}

fn alerted(records: &[(u8, Vec<u8>)]) -> Option<u8> {
    records
        .iter()
        .find(|(kind, _)| *kind == ALERT)
        .and_then(|(_, p)| p.get(1).copied())
}

fn open_fds() -> usize {
    support::proc_usage(std::process::id()).1
}

fn rss_kib() -> u64 {
    support::proc_usage(std::process::id()).0
}

/// Waits (bounded) for the process's fds to come back to `baseline` (+ a little slack for
/// pooled or lingering sockets of the honest clients).
async fn fds_return_to(baseline: usize) {
    let deadline = Instant::now() + GUARD;
    loop {
        let now = open_fds();
        if now <= baseline + 4 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fds did not return to baseline: {baseline} before, {now} after"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until the admin's `/metrics` shows `sample` at `expected`. A peer can see
/// its alert or close a moment before the server has counted it, so counts are awaited.
async fn expect_metric(running: &Running, sample: &str, expected: u64) {
    let deadline = Instant::now() + GUARD;
    loop {
        let metrics = scrape(running).await;
        let now = metric(&metrics, sample);
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} is {now}, expected {expected}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one sample line of the admin's `/metrics`, 0 when absent.
fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One test's world: the other tests wait; a PKI, an upstream, the server sidecar in front
/// of it (handshake timeout 2 s unless `tweak` says), and the fd count once it is up.
struct Scene {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    pki: Pki,
    upstream: Upstream,
    running: Running,
    baseline: usize,
}

async fn scene(tweak: SidecarConfig) -> Scene {
    let serial = SERIAL.lock().await;
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let base = SidecarConfig {
        handshake_timeout: Some(Dur(Duration::from_secs(2))),
        ..server_config(&pki, &upstream.url())
    };
    let running = run(Mode::Server, base.overlay(tweak)).await;
    // The baseline includes the server sidecar's pooled connection to the upstream.
    honest_request(&pki, &running).await;
    Scene {
        _serial: serial,
        baseline: open_fds(),
        pki,
        upstream,
        running,
    }
}

/// An honest client gets an answer from the upstream. It keeps no idle connection, so the
/// fd count shows what the attacks left behind, not a pool.
async fn honest_request(pki: &Pki, running: &Running) {
    let connector =
        support::connector(pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired));
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build::<_, Full<Bytes>>(connector);
    let res = tokio::time::timeout(GUARD, client.get(https(running, "/headers")))
        .await
        .expect("honest request hung")
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let _ = res.into_body().collect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_client_hello_is_cut_off_at_the_handshake_timeout_while_others_are_served() {
    let w = scene(SidecarConfig::default()).await;
    let (pki, running) = (&w.pki, &w.running);
    let baseline = w.baseline;

    let hello = client_hello(&[Group::X25519MLKEM768]);
    let tcp = TcpStream::connect(running.started.listen).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let started = Instant::now();
    let dribble = tokio::spawn(async move {
        for b in hello {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // Meanwhile, honest clients are served.
    for _ in 0..3 {
        honest_request(pki, running).await;
    }
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(GUARD, rd.read(&mut buf))
        .await
        .expect("slowloris connection never closed")
        .unwrap_or(0);
    let lasted = started.elapsed();
    assert_eq!(n, 0, "the server answered a partial ClientHello");
    assert!(
        lasted >= Duration::from_millis(1500),
        "cut off early: {lasted:?}"
    );
    dribble.abort();
    expect_metric(running, "mcp_pqtls_handshakes_total{result=\"timeout\"}", 1).await;
    drop(rd);
    fds_return_to(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_oversized_client_hellos_get_an_alert_or_a_close() {
    let w = scene(SidecarConfig::default()).await;
    let (pki, running) = (&w.pki, &w.running);
    let baseline = w.baseline;
    let hello = client_hello(&[Group::X25519MLKEM768]);

    let mut huge_claim = vec![1, 0x01, 0x90, 0x00]; // a 100 KiB ClientHello, announced
    huge_claim.resize(7 * 16 * 1024, 0xaa);
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (
            "plain HTTP",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        (
            "random bytes",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("empty handshake record", vec![HANDSHAKE, 3, 1, 0, 0]),
        ("oversized record", {
            let mut r = vec![HANDSHAKE, 3, 1, 0xff, 0xff];
            r.resize(5 + 0xffff, 0);
            r
        }),
        ("a 100 KiB ClientHello", records(HANDSHAKE, &huge_claim)),
        ("half a ClientHello, then an alert", {
            let half = &hello[5..5 + (hello.len() - 5) / 2];
            let mut cut = records(HANDSHAKE, half);
            cut.extend_from_slice(&[ALERT, 3, 3, 0, 2, 2, 10]);
            cut
        }),
    ];
    let count = hostile.len() as u64;
    for (what, bytes) in hostile {
        let mut tcp = TcpStream::connect(running.started.listen).await.unwrap();
        let _ = tcp.write_all(&bytes).await;
        let got = answer(&mut tcp).await;
        assert!(
            got.iter().all(|(kind, _)| *kind == ALERT),
            "{what}: the server answered with {:?}",
            got.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
    }

    // A ClientHello over 16 KiB (padding, as some clients with many pq shares send) is
    // not hostile: it is parsed across records and answered.
    let mut tcp = TcpStream::connect(running.started.listen).await.unwrap();
    tcp.write_all(&padded(&hello, 20 * 1024)).await.unwrap();
    let mut head = [0u8; 6];
    tokio::time::timeout(GUARD, tcp.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (head[0], head[5]),
        (HANDSHAKE, 2),
        "no ServerHello: {head:?}"
    );
    drop(tcp);

    honest_request(pki, running).await;
    // The padded hello counts as failed too: it left after the ServerHello.
    let failed = "mcp_pqtls_handshakes_total{result=\"failed\"}";
    expect_metric(running, failed, count + 1).await;
    fds_return_to(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_the_hello_retry_request_gets_an_alert() {
    let w = scene(SidecarConfig::default()).await;
    let (pki, running) = (&w.pki, &w.running);
    // Lists X25519MLKEM768 but sends only an X25519 share: pq-preferred asks for a retry.
    let hello = client_hello(&[Group::X25519, Group::X25519MLKEM768]);
    let mut tcp = TcpStream::connect(running.started.listen).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    let mut head = [0u8; 5];
    tcp.read_exact(&mut head).await.unwrap();
    let mut hrr = vec![0; u16::from_be_bytes([head[3], head[4]]) as usize];
    tcp.read_exact(&mut hrr).await.unwrap();
    assert_eq!((head[0], hrr[0]), (HANDSHAKE, 2));
    assert_eq!(hrr[6..38], HRR_RANDOM, "not a HelloRetryRequest");
    // The same ClientHello again, as if the retry had not been read.
    tcp.write_all(&hello).await.unwrap();
    let got = answer(&mut tcp).await;
    assert!(alerted(&got).is_some(), "no alert: {got:?}");
    honest_request(pki, running).await;
    expect_metric(running, "mcp_pqtls_handshakes_total{result=\"failed\"}", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_closing_mid_handshake_are_counted_and_leave_nothing_open() {
    let w = scene(SidecarConfig::default()).await;
    let (pki, running) = (&w.pki, &w.running);
    let baseline = w.baseline;
    let hello = client_hello(&[Group::X25519MLKEM768]);
    // Half a ClientHello, then gone; a whole one, the server's flight read, then gone.
    for whole in [false, true] {
        let mut tcp = TcpStream::connect(running.started.listen).await.unwrap();
        let part = if whole {
            &hello[..]
        } else {
            &hello[..hello.len() / 2]
        };
        tcp.write_all(part).await.unwrap();
        if whole {
            let mut head = [0u8; 5];
            tcp.read_exact(&mut head).await.unwrap();
        }
        drop(tcp);
    }
    expect_metric(running, "mcp_pqtls_handshakes_total{result=\"failed\"}", 2).await;
    expect_metric(running, "mcp_pqtls_connections_active", 0).await;
    honest_request(pki, running).await;
    fds_return_to(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_policy_refusals_each_get_an_alert_and_leave_nothing_behind() {
    let w = scene(SidecarConfig {
        policy: Some(PolicyMode::PqRequired),
        ..SidecarConfig::default()
    })
    .await;
    let (pki, running) = (&w.pki, &w.running);
    let baseline = w.baseline;
    let rss_before = rss_kib();
    let hello = Arc::new(client_hello(&[Group::X25519]));
    const N: usize = 2000;
    const PARALLEL: usize = 8;
    let addr = running.started.listen;
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let hello = hello.clone();
            tokio::spawn(async move {
                for _ in 0..N / PARALLEL {
                    let mut tcp = TcpStream::connect(addr).await.unwrap();
                    tcp.write_all(&hello).await.unwrap();
                    let got = answer(&mut tcp).await;
                    assert_eq!(alerted(&got), Some(HANDSHAKE_FAILURE), "{got:?}");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    honest_request(pki, running).await;
    let refused = "mcp_pqtls_handshakes_total{result=\"refused\",reason=\"no_pq_group_offered\"}";
    expect_metric(running, refused, N as u64).await;
    fds_return_to(baseline).await;
    eprintln!(
        "{N} refusals: RSS {rss_before} KiB before, {} KiB after; fds {baseline} before, {} after",
        rss_kib(),
        open_fds()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_max_connections_is_refused_at_once_while_a_stream_keeps_flowing() {
    let w = scene(SidecarConfig {
        max_connections: Some(4),
        // Above max-connections, so that the global limit is the one reached.
        max_connections_per_ip: Some(8),
        handshake_timeout: Some(Dur(Duration::from_secs(20))),
        ..SidecarConfig::default()
    })
    .await;
    let (pki, upstream, running) = (&w.pki, &w.upstream, &w.running);
    let baseline = w.baseline;
    let client = tls_client(pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired);
    let res = client.get(https(running, "/sse")).await.unwrap();
    let mut stream = res.into_body();
    read_until(&mut stream, "data: one").await;
    // Three silent connections take the remaining slots...
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(running.started.listen).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so each of the flood is closed without a byte, at once (not at a timeout).
    const FLOOD: u64 = 200;
    let started = Instant::now();
    for _ in 0..FLOOD {
        let mut tcp = TcpStream::connect(running.started.listen).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(GUARD, tcp.read(&mut buf))
            .await
            .expect("a connection past the limit was left open")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refusals waited for something: {:?}",
        started.elapsed()
    );
    // The stream admitted before the flood carries on.
    upstream.release.notify_one();
    read_until(&mut stream, "data: two").await;
    expect_metric(
        running,
        "mcp_pqtls_connections_rejected_total{reason=\"max_connections\"}",
        FLOOD,
    )
    .await;
    drop((held, stream, client));
    fds_return_to(baseline).await;
}

/// Writes one raw HTTP/1.1 request over PQ TLS and reads until the server closes: the
/// answer's status (`None` when closed without one) and the whole answer.
async fn raw_http1(pki: &Pki, running: &Running, request: &[u8]) -> (Option<u16>, String) {
    let mut config = pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired);
    config.alpn = vec![b"http/1.1".to_vec()];
    let connector = support::connector(config);
    let (mut tls, _) = connector
        .connect("localhost", running.started.listen.port())
        .await
        .unwrap();
    tls.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(GUARD, tls.read_to_end(&mut answer))
        .await
        .expect("no answer and no close");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok());
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_smuggling_and_malformed_heads_are_refused_before_the_upstream() {
    let w = scene(SidecarConfig::default()).await;
    let (pki, upstream, running) = (&w.pki, &w.upstream, &w.running);
    let warm_up = upstream.requests();
    let big = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "two different Content-Lengths",
            b"POST /headers HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc".to_vec(),
            400,
        ),
        (
            "Content-Length list",
            b"POST /headers HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3, 40\r\n\r\nabc".to_vec(),
            400,
        ),
        (
            "Transfer-Encoding not ending in chunked",
            b"POST /headers HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "obs-fold",
            b"GET /headers HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space before the colon",
            b"GET /headers HTTP/1.1\r\nHost: localhost\r\nContent-Length : 5\r\n\r\nhello".to_vec(),
            400,
        ),
        (
            "bytes over 0x7f in a header name",
            b"GET /headers HTTP/1.1\r\nHost: localhost\r\nX-\xc3\xa9t\xe9: v\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in a header value",
            b"GET /headers HTTP/1.1\r\nHost: localhost\r\nX-Nul: a\x00b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bare LF line ends with CR in a value",
            b"GET /headers HTTP/1.1\r\nHost: localhost\r\nX-Cr: a\rb\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a 100 KiB head",
            format!("GET /headers HTTP/1.1\r\nHost: localhost\r\n{big}\r\n").into_bytes(),
            431,
        ),
    ];
    for (what, request, expected) in cases {
        let (status, _) = raw_http1(pki, running, &request).await;
        assert!(
            status == Some(expected) || (status.is_none() && expected == 400),
            "{what}: {status:?}, expected {expected}"
        );
        assert_eq!(upstream.requests(), warm_up, "{what} reached the upstream");
    }

    // Content-Length with Transfer-Encoding: hyper does what RFC 9112 §6.3 asks of an
    // intermediary that forwards it: drops Content-Length, reads the chunked body, and
    // closes the connection after the response, so what follows the body (a smuggled
    // request) is never read. The upstream gets one request, framed anew.
    let (status, answer) = raw_http1(
        pki,
        running,
        b"POST /headers HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(status, Some(200), "{answer}");
    assert!(answer.contains(r#"":body-len":"0""#), "{answer}");
    // The client's Content-Length is gone (the chunked framing upstream is the new hop's).
    assert!(!answer.contains(r#""content-length":"4""#), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert_eq!(
        upstream.requests(),
        warm_up + 1,
        "the smuggled request reached the upstream"
    );

    // Text that is not UTF-8 (obs-text) in a value is legal HTTP: it passes through
    // byte for byte, as nginx passes it.
    let (status, answer) = raw_http1(
        pki,
        running,
        b"GET /headers HTTP/1.1\r\nHost: localhost\r\nX-Latin1: caf\xe9\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, Some(200), "{answer}");
    assert!(
        answer.contains(r#""x-latin1":"caf\u{fffd}""#) || answer.contains("x-latin1"),
        "{answer}"
    );
    assert_eq!(upstream.requests(), warm_up + 2);
    honest_request(pki, running).await;
}

/// A raw h2 client over PQ TLS to the sidecar, and the task driving its connection.
async fn h2_client(
    pki: &Pki,
    running: &Running,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let mut config = pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired);
    config.alpn = vec![b"h2".to_vec()];
    let (tls, _) = support::connector(config)
        .connect("localhost", running.started.listen.port())
        .await
        .unwrap();
    let (h2, conn) = h2::client::handshake(tls).await.unwrap();
    (h2, tokio::spawn(conn))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_cut_off_and_other_clients_are_served() {
    let w = scene(SidecarConfig::default()).await;
    let (pki, upstream, running) = (&w.pki, &w.upstream, &w.running);
    let baseline = w.baseline;
    let (mut h2, driver) = h2_client(pki, running).await;
    // Held, so that the connection can only end because the server ended it.
    let held = h2.clone();
    const ATTEMPTS: usize = 10_000;
    let mut sent = 0;
    let outcome = tokio::time::timeout(GUARD, async {
        for _ in 0..ATTEMPTS {
            h2 = h2.ready().await?;
            let req = Request::get(https(running, "/never")).body(()).unwrap();
            let (_, mut stream) = h2.send_request(req, true)?;
            stream.send_reset(h2::Reason::CANCEL);
            sent += 1;
        }
        Ok::<_, h2::Error>(())
    })
    .await
    .expect("the attack neither finished nor was cut off");
    // h2 may queue all 10,000 before the first one reaches the server, so how far the
    // attacker got says little. What counts: the server ends the connection (GOAWAY, from
    // h2's own limit or our reset watch, then a close) instead of serving it on.
    let ended = tokio::time::timeout(GUARD, driver)
        .await
        .expect("the server kept the flooding connection open")
        .unwrap();
    for err in [outcome.err(), ended.err()].into_iter().flatten() {
        assert!(
            err.is_go_away() || err.is_io() || err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM),
            "{err:?}"
        );
    }
    assert!(
        held.ready().await.is_err(),
        "the connection still takes streams"
    );
    honest_request(pki, running).await;
    // The attacker's connection is closed, not left open.
    expect_metric(running, "mcp_pqtls_connections_active", 0).await;
    eprintln!(
        "rapid reset: {sent} streams sent before the client saw the end; upstream saw {} requests",
        upstream.requests()
    );
    fds_return_to(baseline).await;
}

/// The rapid reset that h2's own limit misses: each stream is reset only after the server
/// accepted it and the request reached the upstream, so no reset is "pending accept". Our
/// premature-reset watch must still send GOAWAY, count it, and leave others served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_resets_of_accepted_streams_get_goaway_too() {
    let w = scene(SidecarConfig::default()).await;
    let (pki, upstream, running) = (&w.pki, &w.upstream, &w.running);
    let (mut h2, driver) = h2_client(pki, running).await;
    const ATTEMPTS: usize = 1_000;
    let mut reset = 0;
    let outcome = tokio::time::timeout(GUARD, async {
        for _ in 0..ATTEMPTS {
            h2 = h2.ready().await?;
            let seen = upstream.requests();
            let req = Request::get(https(running, "/never")).body(()).unwrap();
            let (response, mut stream) = h2.send_request(req, true)?;
            tokio::pin!(response);
            // Reset once the request is upstream; a stream past a GOAWAY never gets there.
            loop {
                tokio::select! {
                    r = &mut response => return Err(r.expect_err("/never answered")),
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
                if upstream.requests() > seen {
                    break;
                }
            }
            stream.send_reset(h2::Reason::CANCEL);
            reset += 1;
        }
        Ok(())
    })
    .await
    .expect("the attack neither finished nor was cut off");
    let err = outcome.expect_err("the server took 1,000 resets of accepted streams");
    assert!(err.is_go_away() || err.is_io(), "{err:?}");
    assert!(reset < ATTEMPTS, "{reset}");
    eprintln!("resets of accepted streams: GOAWAY after {reset}");
    let _ = tokio::time::timeout(GUARD, driver).await;
    expect_metric(running, "mcp_pqtls_h2_reset_floods_total", 1).await;
    honest_request(pki, running).await;
    expect_metric(running, "mcp_pqtls_connections_active", 0).await;
    fds_return_to(w.baseline).await;
}

/// Writes the ClientHellos above as seeds for `fuzz/corpus/client_hello_policy` (run by
/// hand: `cargo test --test adversarial -- --ignored write_fuzz_seeds`).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/client_hello_policy");
    std::fs::create_dir_all(&dir).unwrap();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("x25519mlkem768", client_hello(&[Group::X25519MLKEM768])),
        ("x25519_only", client_hello(&[Group::X25519])),
        (
            "x25519_then_pq",
            client_hello(&[Group::X25519, Group::X25519MLKEM768]),
        ),
        ("all_groups", client_hello(&Group::ALL)),
        (
            "secp384r1mlkem1024",
            client_hello(&[Group::SecP384r1MLKEM1024, Group::Secp384r1]),
        ),
        (
            "padded_20k",
            padded(&client_hello(&[Group::MLKEM768]), 20 * 1024),
        ),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
