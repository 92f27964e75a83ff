//! Attacks on the gate: body budgets and deadlines, in-flight caps, refusal floods, log
//! forging, the audit log. See the parent module.

use std::io::Read as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mcp_pqtls::gate::config::AuditSection;
use tokio::sync::oneshot;

use super::*;

/// `O_NONBLOCK` (Linux): the test opens the read end of a FIFO without waiting for a writer.
const O_NONBLOCK: i32 = 0o4000;

fn audit_to(path: &Path) -> Option<AuditSection> {
    Some(AuditSection {
        path: Some(path.to_owned()),
        ..AuditSection::default()
    })
}

fn tools_call(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{}}}}}}"#
    )
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

/// Waits (bounded) until the audit file has `n` lines.
async fn audit_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + GUARD;
    loop {
        let got = lines(path);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} audit lines, expected {n}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(
    client: &Client<mcp_pqtls::tls::PqConnector, Full<Bytes>>,
    running: &Running,
    body: String,
) -> http::Response<hyper::body::Incoming> {
    let req = Request::post(https(running, "/headers"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    tokio::time::timeout(GUARD, client.request(req))
        .await
        .expect("request hung")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_slower_than_request_body_timeout_gets_408_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let w = scene(SidecarConfig {
        request_body_timeout: Some(Dur(Duration::from_secs(2))),
        audit: audit_to(&path),
        ..SidecarConfig::default()
    })
    .await;
    let running = &w.running;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "audit file mode {mode:o}");
    let (mut h2, _driver) = h2_client(&w.pki, running).await;
    h2 = h2.ready().await.unwrap();
    let req = Request::post(https(running, "/headers"))
        .header("content-type", "application/json")
        .header("content-length", "100")
        .body(())
        .unwrap();
    let (response, mut stream) = h2.send_request(req, false).unwrap();
    // One byte every 3 s: each arrives before any per-read timeout would fire, the whole
    // never within 2 s.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if stream.send_data(Bytes::from_static(b" "), false).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    });
    let res = tokio::time::timeout(GUARD, response)
        .await
        .expect("the trickled body was waited for past request-body-timeout")
        .unwrap();
    let status = res.status();
    let mut body = res.into_body();
    let mut text = Vec::new();
    while let Some(Ok(d)) = body.data().await {
        text.extend_from_slice(&d);
    }
    assert_eq!(
        status,
        StatusCode::REQUEST_TIMEOUT,
        "{}",
        String::from_utf8_lossy(&text)
    );
    trickle.abort();
    expect_metric(
        running,
        "mcp_pqtls_gate_refusals_total{reason=\"body_timeout\"}",
        1,
    )
    .await;
    // The scene's honest GET, then the 408.
    let audited = audit_lines(&path, 2).await;
    assert_eq!(audited[1]["rule"], "body-timeout", "{audited:?}");
    assert_eq!(audited[1]["status"], 408);
    assert_eq!(
        w.upstream.requests(),
        1,
        "the trickled body reached upstream"
    );
    honest_request(&w.pki, running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_requests_is_refused_unread_without_a_record_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let w = scene(SidecarConfig {
        refusals_per_ip_per_minute: Some(5),
        audit: audit_to(&path),
        ..SidecarConfig::default()
    })
    .await;
    let running = &w.running;
    let seen = w.upstream.requests();
    let client = tls_client(&w.pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired);
    const FLOOD: usize = 50;
    let mut statuses = Vec::new();
    for _ in 0..FLOOD {
        let res = post(&client, running, "{not json".into()).await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers().contains_key("retry-after"));
        }
        statuses.push(res.status().as_u16());
        let _ = res.into_body().collect().await;
    }
    assert!(statuses[..5].iter().all(|s| *s == 400), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // A valid call from the flooding address is refused unread too, for now.
    let res = post(&client, running, tools_call(1)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        w.upstream.requests(),
        seen,
        "a refused request reached upstream"
    );
    expect_metric(
        running,
        "mcp_pqtls_gate_refusals_total{reason=\"refusal_flood\"}",
        (FLOOD - 5 + 1) as u64,
    )
    .await;
    // The honest GET, 5 refusals, one summary for the rest: not a record per request.
    expect_metric(running, "mcp_pqtls_gate_audit_records_total", 7).await;
    let audited = audit_lines(&path, 7).await;
    assert_eq!(audited.len(), 7, "{audited:?}");
    assert_eq!(audited[6]["rule"], "refusal-flood");
    assert!(
        audited[6]["reason"]
            .as_str()
            .unwrap()
            .starts_with("1 request(s) from 127.0.0.1 refused unread"),
        "{}",
        audited[6]
    );
}

/// Runs a server sidecar with `config` to completion in the background: the handle
/// returns when `run` has (drained, and the gate closed).
async fn run_until_stopped(
    config: SidecarConfig,
) -> (
    mcp_pqtls::sidecar::Started,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), mcp_pqtls::sidecar::SidecarError>>,
) {
    let sidecar = config.resolve(Mode::Server).expect("valid config");
    let (stop, stopped) = oneshot::channel::<()>();
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(async move {
        sidecar
            .run(
                async {
                    let _ = stopped.await;
                },
                move |s| {
                    let _ = tx.send(s.clone());
                },
            )
            .await
    });
    (rx.await.unwrap(), stop, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_499_record_of_a_call_cut_off_by_the_drain_is_on_disk_when_run_returns() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let config = SidecarConfig {
        drain_timeout: Some(Dur(Duration::from_millis(500))),
        audit: audit_to(&path),
        ..server_config(&pki, &upstream.url())
    };
    let (started, stop, handle) = run_until_stopped(config).await;
    let client = tls_client(&pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired);
    let req = Request::post(
        format!("https://localhost:{}/never", started.listen.port())
            .parse::<http::Uri>()
            .unwrap(),
    )
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from(tools_call(7))))
    .unwrap();
    let call = tokio::spawn(async move { client.request(req).await });
    let deadline = Instant::now() + GUARD;
    while upstream.requests() == 0 {
        assert!(Instant::now() < deadline, "the call never reached upstream");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(GUARD, handle)
        .await
        .expect("the sidecar did not stop after its drain timeout")
        .unwrap()
        .unwrap();
    // Right after run returned: no waiting for a writer thread.
    let audited = lines(&path);
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["tool"], "echo");
    assert_eq!(audited[0]["status"], 499);
    call.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_calls_with_503_rather_than_drop_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let fifo: PathBuf = dir.path().join("audit.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A reader that never reads (until the end): the writer blocks once the pipe is full.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let w = scene(SidecarConfig {
        audit: Some(AuditSection {
            path: Some(fifo.clone()),
            fail_closed: Some(true),
            queue_records: Some(4),
            ..AuditSection::default()
        }),
        ..SidecarConfig::default()
    })
    .await;
    let running = &w.running;
    let client = tls_client(&w.pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired);
    let (mut allowed, mut refused) = (0usize, 0usize);
    for id in 0..5000 {
        let res = post(&client, running, tools_call(id)).await;
        match res.status() {
            StatusCode::OK => allowed += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(res.headers().contains_key("retry-after"));
                let body = support::sidecar::json(res).await;
                assert_eq!(body["error"]["data"]["rule"], "audit", "{body}");
                refused += 1;
                if refused == 20 {
                    break;
                }
                continue;
            }
            other => panic!("{other}"),
        }
        let _ = res.into_body().collect().await;
    }
    assert_eq!(refused, 20, "the queue never filled: {allowed} allowed");
    let metrics = scrape(running).await;
    assert_eq!(metric(&metrics, "mcp_pqtls_gate_audit_dropped_total"), 0);
    assert_eq!(
        metric(
            &metrics,
            "mcp_pqtls_gate_refusals_total{reason=\"audit_full\"}"
        ),
        20
    );
    // Every allowed call (and the scene's honest GET) is recorded once the reader reads.
    let want = allowed + 1;
    let (mut text, mut buf) = (Vec::new(), [0u8; 65536]);
    let deadline = Instant::now() + GUARD;
    while text.iter().filter(|b| **b == b'\n').count() < want {
        assert!(
            Instant::now() < deadline,
            "records of allowed calls are missing"
        );
        match reader.read(&mut buf) {
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(text.iter().filter(|b| **b == b'\n').count(), want);
    eprintln!("fail-closed: {allowed} calls recorded before the queue filled, then 503");
}

/// 4 h2 connections x up to 1,000 streams, each declaring a 200 KB body and sending 100 KB
/// of it: the gate holds at most max-buffered-body-bytes (and max-inflight-per-connection
/// per connection); the rest get 503 at once, and an honest client is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_bodies_on_many_h2_streams_stay_within_the_body_budget() {
    let dir = tempfile::tempdir().unwrap();
    let w = scene(SidecarConfig {
        request_body_timeout: Some(Dur(Duration::from_secs(5))),
        audit: audit_to(&dir.path().join("audit.jsonl")),
        ..SidecarConfig::default()
    })
    .await;
    let running = &w.running;
    let rss_before = rss_kib();
    const CONNECTIONS: usize = 4;
    const STREAMS: usize = 1000;
    const SENT: usize = 100_000;
    let mut attackers = Vec::new();
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let (h2, driver) = h2_client(&w.pki, running).await;
        held.push(driver);
        let uri = https(running, "/headers");
        attackers.push(tokio::spawn(async move {
            let mut h2 = h2;
            let mut streams = Vec::new();
            for _ in 0..STREAMS {
                // Past the server's max-concurrent-streams h2 makes us wait: stop there.
                h2 = match tokio::time::timeout(Duration::from_millis(500), h2.ready()).await {
                    Ok(Ok(h)) => h,
                    _ => break,
                };
                let req = Request::post(uri.clone())
                    .header("content-type", "application/json")
                    .header("content-length", "200000")
                    .body(())
                    .unwrap();
                let Ok((response, mut stream)) = h2.send_request(req, false) else {
                    break;
                };
                streams.push(tokio::spawn(async move {
                    // Only what the server's window lets through is sent: the client holds
                    // no more than that of its own.
                    let mut left = SENT;
                    stream.reserve_capacity(left);
                    while left > 0 {
                        let got = tokio::time::timeout(
                            Duration::from_secs(2),
                            std::future::poll_fn(|cx| stream.poll_capacity(cx)),
                        )
                        .await;
                        let Ok(Some(Ok(n))) = got else { break };
                        let n = n.min(left);
                        if stream.send_data(Bytes::from(vec![b' '; n]), false).is_err() {
                            break;
                        }
                        left -= n;
                    }
                    // Answered (503, 408) or reset: either way not hung.
                    let status = tokio::time::timeout(GUARD, response)
                        .await
                        .expect("an unfinished body was never answered");
                    (status.ok().map(|r| r.status().as_u16()), stream)
                }));
            }
            streams
        }));
    }
    // Let the attack build up, then an honest client is answered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_peak = rss_kib();
    honest_request(&w.pki, running).await;
    let client = tls_client(&w.pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired);
    let res = post(&client, running, tools_call(1)).await;
    assert!(
        [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE].contains(&res.status()),
        "{}",
        res.status()
    );
    let mut statuses = std::collections::BTreeMap::<Option<u16>, usize>::new();
    let mut streams_held = Vec::new();
    for a in attackers {
        for s in a.await.unwrap() {
            let (status, stream) = s.await.unwrap();
            *statuses.entry(status).or_default() += 1;
            streams_held.push(stream);
        }
    }
    let rss_after = rss_kib().max(rss_peak);
    eprintln!(
        "unfinished bodies: {statuses:?}; RSS {rss_before} KiB before, {rss_after} KiB at most after"
    );
    assert!(
        statuses.get(&Some(503)).copied().unwrap_or(0) > 0,
        "no stream was refused by a budget: {statuses:?}"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 256 * 1024,
        "RSS grew by {} KiB",
        rss_after - rss_before
    );
    drop(streams_held);
}
