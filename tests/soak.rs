//! Soak: MCP sessions through the full tunnel (client sidecar -> PQ TLS -> server sidecar, the
//! real binaries) to an upstream in this process, with open SSE streams and steady
//! `tools/call` POSTs, while the server's certificate is reloaded, the upstream restarts, the
//! server sidecar rotates to another group policy (its config file, on SIGHUP), and finally
//! gets SIGTERM.
//!
//! `MCP_PQTLS_SOAK_SECS` sets the length (default 24 s, what CI runs); `tests/soak/run N`
//! runs it for N minutes and writes the figures to `MCP_PQTLS_SOAK_REPORT`. Every SSE event
//! is numbered per stream, so an event lost or reordered anywhere on the way is seen.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Channel, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use mcp_pqtls::certs::KeyAlg;
use support::process::Proc;
use support::upstream::get_plain;
use support::{free_port, proc_usage, Pki};
use tokio::sync::watch;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the upstream produced, shared across its restarts.
#[derive(Default)]
struct Produced {
    posts: AtomicU64,
    next_stream: AtomicU64,
    /// Events sent per stream id.
    events: Mutex<HashMap<u64, u64>>,
    /// While set, streams send nothing (so a count taken then is exact).
    paused: AtomicBool,
}

/// The upstream: POST -> a JSON-RPC result; GET /sse -> numbered events every 100 ms until
/// it stops, when every stream is ended cleanly (its last chunk sent) before it closes.
struct SoakUpstream {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SoakUpstream {
    async fn start(addr: SocketAddr, produced: Arc<Produced>) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            let mut stopped = stopping.clone();
            loop {
                let tcp = tokio::select! {
                    a = listener.accept() => match a { Ok((tcp, _)) => tcp, Err(_) => continue },
                    _ = stopped.wait_for(|s| *s) => break,
                };
                let (produced, stopping) = (produced.clone(), stopping.clone());
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (produced, stopping) = (produced.clone(), stopping.clone());
                    async move { Ok::<_, Infallible>(route(req, produced, stopping).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::spawn(graceful.watch(conn));
            }
            drop(listener);
            let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
        });
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
    }
}

async fn route(
    req: Request<Incoming>,
    produced: Arc<Produced>,
    mut stopping: watch::Receiver<bool>,
) -> Response<Body> {
    if req.method() == http::Method::POST {
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let id = body
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|v| v["id"].clone())
            .unwrap_or_default();
        produced.posts.fetch_add(1, SeqCst);
        let answer = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "ok"}]}});
        return Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(answer.to_string())).boxed())
            .unwrap();
    }
    let sid = produced.next_stream.fetch_add(1, SeqCst);
    produced.events.lock().unwrap().insert(sid, 0);
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(16);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.wait_for(|s| *s) => break,
            }
            if produced.paused.load(SeqCst) {
                continue;
            }
            let event = format!("id: {}\ndata: {sid} {}\n\n", n + 1, n + 1);
            if tx.send_data(Bytes::from(event)).await.is_err() {
                break;
            }
            n += 1;
            produced.events.lock().unwrap().insert(sid, n);
        }
        // Dropping the sender ends the body: a clean end of stream, not a reset.
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body.boxed())
        .unwrap()
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    posts_sent: AtomicU64,
    posts_ok: AtomicU64,
    /// Answered, but not 200 (502 while the server sidecar restarts).
    posts_refused: AtomicU64,
    posts_failed: AtomicU64,
    streams_opened: AtomicU64,
    streams_refused: AtomicU64,
    /// Per stream id: events received in order, gaps.
    streams: Mutex<HashMap<u64, StreamSeen>>,
    /// Every stream that ended: the phase under way, and whether its body ended cleanly.
    ends: Mutex<Vec<(&'static str, bool)>>,
    /// Requests (POST or GET) answered with other than 200, or not at all, by phase.
    refused_in: Mutex<HashMap<&'static str, u64>>,
}

impl Seen {
    fn refused(&self, phase: &Phase) {
        *self
            .refused_in
            .lock()
            .unwrap()
            .entry(phase.get())
            .or_default() += 1;
    }
}

#[derive(Clone, Debug, Default)]
struct StreamSeen {
    received: u64,
    out_of_order: u64,
    ended: bool,
}

struct Phase(Mutex<&'static str>);

impl Phase {
    fn get(&self) -> &'static str {
        *self.0.lock().unwrap()
    }
    fn set(&self, p: &'static str) {
        *self.0.lock().unwrap() = p;
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

async fn session_sse(
    client: Client,
    url: String,
    seen: Arc<Seen>,
    phase: Arc<Phase>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(SeqCst) {
        let req = Request::get(format!("{url}/sse"))
            .header("accept", "text/event-stream")
            .body(Full::default())
            .unwrap();
        let res = match client.request(req).await {
            Ok(r) if r.status() == 200 => r,
            _ => {
                seen.streams_refused.fetch_add(1, SeqCst);
                seen.refused(&phase);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        seen.streams_opened.fetch_add(1, SeqCst);
        let mut body = res.into_body();
        let mut sid = None;
        let mut buf = String::new();
        let clean = loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = async { while !stop.load(SeqCst) { tokio::time::sleep(Duration::from_millis(50)).await } } => return,
            };
            let data = match frame {
                None => break true,
                Some(Err(_)) => break false,
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue,
                },
            };
            buf.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let Some(line) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let mut parts = line
                    .split(' ')
                    .map(|p| p.parse::<u64>().unwrap_or(u64::MAX));
                let (s, n) = (
                    parts.next().unwrap_or(u64::MAX),
                    parts.next().unwrap_or(u64::MAX),
                );
                sid = Some(s);
                let mut streams = seen.streams.lock().unwrap();
                let st = streams.entry(s).or_default();
                if n != st.received + 1 {
                    st.out_of_order += 1;
                }
                st.received = n.max(st.received);
            }
        };
        if let Some(s) = sid {
            seen.streams.lock().unwrap().entry(s).or_default().ended = true;
        }
        seen.ends.lock().unwrap().push((phase.get(), clean));
    }
}

async fn session_posts(
    client: Client,
    url: String,
    seen: Arc<Seen>,
    phase: Arc<Phase>,
    stop: Arc<AtomicBool>,
    session: u64,
) {
    let mut n = 0u64;
    while !stop.load(SeqCst) {
        n += 1;
        let call = serde_json::json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"session": session, "n": n}}});
        let req = Request::post(format!("{url}/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(Full::new(Bytes::from(call.to_string())))
            .unwrap();
        seen.posts_sent.fetch_add(1, SeqCst);
        match client.request(req).await {
            Ok(r) if r.status() == 200 => {
                let _ = r.into_body().collect().await;
                seen.posts_ok.fetch_add(1, SeqCst);
            }
            Ok(_) => {
                seen.posts_refused.fetch_add(1, SeqCst);
                seen.refused(&phase);
            }
            Err(_) => {
                seen.posts_failed.fetch_add(1, SeqCst);
                seen.refused(&phase);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `from`'s cert and key over `dir/server.pem` and `dir/server.key`, each by rename.
fn install_cert(from: &Pki, dir: &std::path::Path) {
    for name in ["server.pem", "server.key"] {
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::copy(from.path(name), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// Writes `dir/server.toml` (by rename) with `groups` and `policy`.
fn install_policy(dir: &std::path::Path, groups: &[&str], policy: &str) {
    let tmp = dir.join(".server.toml.new");
    std::fs::write(
        &tmp,
        format!("groups = {groups:?}\npolicy = \"{policy}\"\n"),
    )
    .unwrap();
    std::fs::rename(&tmp, dir.join("server.toml")).unwrap();
}

/// The server sidecar: flags, and `dir/server.toml` for the groups and policy it reloads.
fn server_sidecar(port: u16, upstream: SocketAddr, dir: &std::path::Path) -> Proc {
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    let config = dir.join("server.toml");
    Proc::spawn(&[
        "server",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--upstream",
        &format!("http://{upstream}"),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
        "--drain-timeout",
        "3s",
        "--reload-interval",
        "0s",
    ])
}

async fn metric(admin: u16, sample: &str) -> u64 {
    let (_, text) = get_plain(&format!("http://127.0.0.1:{admin}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Pauses the upstream's events and waits until every one sent has arrived (or 5 s).
async fn quiesce(produced: &Produced, seen: &Seen) {
    produced.paused.store(true, SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let events = produced.events.lock().unwrap().clone();
        let arrived = {
            let streams = seen.streams.lock().unwrap();
            events.iter().all(|(s, n)| {
                streams
                    .get(s)
                    .map_or(*n == 0, |st| st.received == *n || st.ended)
            })
        };
        if arrived {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_through_the_tunnel_with_reloads_restarts_rotation_and_sigterm() {
    let secs: u64 = std::env::var("MCP_PQTLS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let sessions: u64 = std::env::var("MCP_PQTLS_SOAK_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let total = Duration::from_secs(secs);
    let (pki_a, pki_b) = (Pki::new(KeyAlg::EcdsaP256), Pki::new(KeyAlg::EcdsaP256));
    let dir = tempfile::tempdir().unwrap();
    install_cert(&pki_a, dir.path());
    // The client trusts both CAs, so the server may reload onto either PKI's certificate.
    let trust = dir.path().join("ca.pem");
    std::fs::write(
        &trust,
        [
            std::fs::read(pki_a.path("ca.pem")).unwrap(),
            std::fs::read(pki_b.path("ca.pem")).unwrap(),
        ]
        .concat(),
    )
    .unwrap();

    let produced = Arc::new(Produced::default());
    let up_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut upstream = Some(SoakUpstream::start(up_addr, produced.clone()).await);
    let server_port = free_port();
    install_policy(dir.path(), &["X25519MLKEM768", "X25519"], "pq-preferred");
    let server = server_sidecar(server_port, up_addr, dir.path());
    let client = Proc::spawn(&[
        "client",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("https://localhost:{server_port}"),
        "--ca",
        trust.to_str().unwrap(),
        "--groups",
        "X25519MLKEM768,SecP384r1MLKEM1024",
        "--admin",
        "127.0.0.1:0",
    ]);
    let url = format!("http://127.0.0.1:{}", client.port);

    let seen = Arc::new(Seen::default());
    let phase = Arc::new(Phase(Mutex::new("steady")));
    let stop = Arc::new(AtomicBool::new(false));
    let http: Client =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let mut tasks = Vec::new();
    for s in 0..sessions {
        tasks.push(tokio::spawn(session_sse(
            http.clone(),
            url.clone(),
            seen.clone(),
            phase.clone(),
            stop.clone(),
        )));
        tasks.push(tokio::spawn(session_posts(
            http.clone(),
            url.clone(),
            seen.clone(),
            phase.clone(),
            stop.clone(),
            s,
        )));
    }
    let started = Instant::now();
    let at = |fraction: f64| started + total.mul_f64(fraction);
    tokio::time::sleep_until(at(0.1).into()).await;
    let client_pid = client.child.0.id();
    let usage_client_start = proc_usage(client_pid);
    let usage_server_start = proc_usage(server.child.0.id());

    // (1) Certificate reloads, alternating PKIs, by SIGHUP.
    phase.set("cert reloads");
    for i in 0..4 {
        install_cert(if i % 2 == 0 { &pki_b } else { &pki_a }, dir.path());
        server.signal("-HUP");
        tokio::time::sleep(total.mul_f64(0.05)).await;
    }
    let reloads = metric(
        server.admin.unwrap(),
        "mcp_pqtls_cert_reloads_total{result=\"ok\"}",
    )
    .await;
    phase.set("steady");

    // (2) Upstream restart: its streams end cleanly; sessions reopen theirs.
    tokio::time::sleep_until(at(0.4).into()).await;
    phase.set("upstream restart");
    upstream.take().unwrap().stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    upstream = Some(SoakUpstream::start(up_addr, produced.clone()).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    phase.set("steady");

    // (3) Group policy rotation, in place: the config file now says pq-required on
    // SecP384r1MLKEM1024 first, and SIGHUP has the server sidecar re-read it. New handshakes
    // get the new policy; the tunnel's established connection and its streams carry on.
    tokio::time::sleep_until(at(0.6).into()).await;
    phase.set("policy rotation");
    install_policy(
        dir.path(),
        &["SecP384r1MLKEM1024", "X25519MLKEM768"],
        "pq-required",
    );
    server.signal("-HUP");
    server.wait_log(&["Groups and policy reloaded", "policy=pq-required"]);
    let trust_both = |groups: &[mcp_pqtls::Group], policy| {
        mcp_pqtls::config::ClientTlsOptions {
            ca: Some(trust.clone()),
            groups: Some(mcp_pqtls::groups::GroupList(groups.to_vec())),
            policy: Some(policy),
            ..Default::default()
        }
        .build()
        .unwrap()
    };
    // Handshakes only: any GET to this upstream is an endless SSE stream.
    let rotated_group = trust_both(
        &[
            mcp_pqtls::Group::X25519MLKEM768,
            mcp_pqtls::Group::SecP384r1MLKEM1024,
        ],
        mcp_pqtls::PolicyMode::PqRequired,
    )
    .connect("localhost", server_port)
    .await
    .map(|(_, info)| info.group)
    .unwrap_or_else(|e| format!("error: {e}"));
    let classical_after = trust_both(
        &[mcp_pqtls::Group::X25519],
        mcp_pqtls::PolicyMode::ClassicalAllowed,
    )
    .connect("localhost", server_port)
    .await
    .map(|(_, info)| format!("served on {}", info.group))
    .unwrap_or_else(|e| format!("refused: {e}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    phase.set("steady");
    // The tunnel still runs on the connection it made before the rotation.
    let res = http
        .request(
            Request::post(format!("{url}/mcp"))
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await
        .unwrap();
    let tunnel_group = res
        .headers()
        .get("x-mcp-pqtls-group")
        .map(|v| v.to_str().unwrap().to_owned());
    let policy_reloads = metric(
        server.admin.unwrap(),
        "mcp_pqtls_policy_reloads_total{result=\"ok\"}",
    )
    .await;
    // The reset watch never mistook the tunnel's traffic for a flood.
    let reset_floods = metric(server.admin.unwrap(), "mcp_pqtls_h2_reset_floods_total").await;

    // (4) Steady until the end, then SIGTERM with the streams still open.
    tokio::time::sleep_until(at(0.95).into()).await;
    quiesce(&produced, &seen).await;
    let usage_client_end = proc_usage(client_pid);
    let usage_server_end = proc_usage(server.child.0.id());
    let posts_before_term = seen.posts_sent.load(SeqCst);
    stop.store(true, SeqCst);
    for t in tasks.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    // Reopen a few streams, then SIGTERM: each must end within the drain timeout, not hang.
    let mut open = Vec::new();
    for _ in 0..5 {
        let res = http
            .request(
                Request::get(format!("{url}/sse"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        seen.streams_opened.fetch_add(1, SeqCst);
        open.push(res.into_body());
    }
    phase.set("SIGTERM");
    let term_at = Instant::now();
    server.signal("-TERM");
    let mut term_ended = 0;
    for mut body in open {
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
        assert!(ended.is_ok(), "a stream hung after SIGTERM");
        term_ended += 1;
    }
    let mut child = server.child;
    let exit = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    let term_secs = term_at.elapsed().as_secs_f64();
    assert!(
        exit.success(),
        "the server sidecar exited {exit:?} on SIGTERM"
    );
    upstream.take().unwrap().stop().await;

    // The figures.
    let events = produced.events.lock().unwrap().clone();
    let streams = seen.streams.lock().unwrap().clone();
    let produced_total: u64 = events.values().sum();
    let mut received_total = 0;
    let mut lost = 0;
    let mut out_of_order = 0;
    for (sid, n) in &events {
        let st = streams.get(sid).cloned().unwrap_or_default();
        received_total += st.received;
        lost += n.saturating_sub(st.received);
        out_of_order += st.out_of_order;
    }
    let mut ended: HashMap<(&str, bool), u64> = HashMap::new();
    for end in seen.ends.lock().unwrap().iter() {
        *ended.entry(*end).or_default() += 1;
    }
    let unexplained: u64 = ended
        .iter()
        .filter(|((phase, clean), _)| !clean && *phase != "SIGTERM")
        .map(|(_, n)| *n)
        .sum();
    let unclean_restart: u64 = ended
        .get(&("upstream restart", false))
        .copied()
        .unwrap_or(0);
    let mut ended_lines: Vec<String> = ended
        .iter()
        .map(|((p, clean), n)| {
            format!(
                "| streams ended during {p}, {} | {n} |",
                if *clean { "clean end" } else { "broken" }
            )
        })
        .collect();
    ended_lines.sort();
    let mut refused_lines: Vec<String> = seen
        .refused_in
        .lock()
        .unwrap()
        .iter()
        .map(|(p, n)| format!("| requests not answered 200 during {p} | {n} |"))
        .collect();
    refused_lines.sort();
    let refused_steady: u64 = seen
        .refused_in
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| **p != "upstream restart")
        .map(|(_, n)| *n)
        .sum();
    let report = format!(
        "| figure | value |\n|---|---|\n\
         | duration | {secs} s, {sessions} sessions (one SSE stream + a tools/call every 100 ms each) |\n\
         | tools/call sent / answered 200 / answered otherwise / no answer | {} / {} / {} / {} |\n\
         | upstream saw POSTs | {} |\n\
         | SSE streams opened (upstream / clients) / refused | {} / {} / {} |\n\
         {}\n\
         | SSE events produced upstream / received by clients | {produced_total} / {received_total} |\n\
         | events lost / out of order | {lost} / {out_of_order} |\n\
         {}\n\
         | unexplained broken streams | {unexplained} |\n\
         | certificate reloads (SIGHUP, ok) | {reloads} |\n\
         | group and policy reloads (SIGHUP, ok; the cert reloads' SIGHUPs re-read it too) | {policy_reloads} |\n\
         | after rotation: a new pq handshake / a new X25519-only handshake | {rotated_group} / {classical_after} |\n\
         | after rotation: the tunnel's connection (made before it) | {} |\n\
         | h2 connections closed as reset floods (server) | {reset_floods} |\n\
         | streams open at SIGTERM, ended (not hung) / server exit | {term_ended} / {:?} after {term_secs:.1} s |\n\
         | client sidecar RSS / fds, at 10% -> at the end | {} KiB / {} -> {} KiB / {} |\n\
         | server sidecar RSS / fds, at 10% -> at the end | {} KiB / {} -> {} KiB / {} |\n",
        posts_before_term,
        seen.posts_ok.load(SeqCst),
        seen.posts_refused.load(SeqCst),
        seen.posts_failed.load(SeqCst),
        produced.posts.load(SeqCst),
        events.len(),
        seen.streams_opened.load(SeqCst),
        seen.streams_refused.load(SeqCst),
        refused_lines.join("\n"),
        ended_lines.join("\n"),
        tunnel_group.as_deref().unwrap_or("?"),
        exit.code(),
        usage_client_start.0, usage_client_start.1, usage_client_end.0, usage_client_end.1,
        usage_server_start.0, usage_server_start.1, usage_server_end.0, usage_server_end.1,
    );
    println!("{report}");
    if let Ok(path) = std::env::var("MCP_PQTLS_SOAK_REPORT") {
        std::fs::write(path, &report).unwrap();
    }

    assert_eq!(lost, 0, "SSE events lost\n{report}");
    assert_eq!(out_of_order, 0, "SSE events out of order\n{report}");
    assert_eq!(
        unexplained, 0,
        "streams broke before the final SIGTERM\n{report}"
    );
    assert_eq!(
        unclean_restart, 0,
        "the upstream restart broke streams instead of ending them\n{report}"
    );
    assert_eq!(
        refused_steady, 0,
        "requests failed outside the upstream restart\n{report}"
    );
    assert!(reloads >= 4, "{report}");
    assert_eq!(policy_reloads, reloads + 1, "{report}");
    assert_eq!(reset_floods, 0, "{report}");
    assert_eq!(rotated_group, "SecP384r1MLKEM1024", "{report}");
    assert!(
        classical_after.starts_with("refused") && classical_after.contains("handshake"),
        "{report}"
    );
    assert_eq!(tunnel_group.as_deref(), Some("X25519MLKEM768"), "{report}");
    assert!(
        seen.posts_ok.load(SeqCst) > 0 && received_total > 0,
        "{report}"
    );
    // Held connections do not pile up: the client sidecar's fds stay within a small margin.
    assert!(
        usage_client_end.1 <= usage_client_start.1 + 2 * sessions as usize + 16,
        "{report}"
    );
}
