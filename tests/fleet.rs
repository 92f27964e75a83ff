//! A fleet on one machine: Debian's Redis and HAProxy (TCP, round robin) in front of three
//! server-sidecar replicas, started and stopped by the test on 127.0.0.1 (installed by
//! `interop/install-fleet.sh`). The rate limit holds for the fleet, not per replica; with
//! Redis stopped the replicas fall back to their own limits, loudly, and stay ready; when it
//! returns they share again.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::{Group, PolicyMode};
use support::process::{install_or_skip, Proc};
use support::upstream::{get_plain, Upstream, GUARD};
use support::{connector, free_port, KillOnDrop, Pki};

/// The burst of the shared limit: what the whole fleet lets through at once.
const BURST: usize = 6;

fn redis(bin: &Path, port: u16) -> KillOnDrop {
    let child = Command::new(bin.join("redis-server"))
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + GUARD;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    KillOnDrop(child)
}

fn haproxy(bin: &Path, dir: &Path, port: u16, replicas: &[u16]) -> KillOnDrop {
    let servers: String = replicas
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server r{i} 127.0.0.1:{p}\n"))
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 256\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\nfrontend fleet\n  bind 127.0.0.1:{port}\n  default_backend replicas\nbackend replicas\n  balance roundrobin\n{servers}"
        ),
    )
    .unwrap();
    let child = Command::new(bin.join("haproxy"))
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + GUARD;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "haproxy did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    KillOnDrop(child)
}

/// One `tools/call` over a new connection through the balancer: its HTTP status.
async fn call(pki: &Pki, port: u16) -> u16 {
    let connector = connector(pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired));
    let body =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    let req = Request::post(format!("https://localhost:{port}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    mcp_pqtls::request(&connector, req, 1 << 20)
        .await
        .unwrap()
        .status
        .as_u16()
}

/// How many of `n` calls were let through (the others must be 429).
async fn allowed(pki: &Pki, port: u16, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        match call(pki, port).await {
            200 => ok += 1,
            429 => {}
            s => panic!("status {s}"),
        }
    }
    ok
}

async fn metric(admin: u16, line: &str) -> bool {
    let text = get_plain(&format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .1;
    text.lines().any(|l| l.starts_with(line))
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_one_rate_limit_on_redis_and_fall_back_loudly_without_it() {
    let Some(bin) = install_or_skip("interop/install-fleet.sh", "Redis and HAProxy") else {
        return;
    };
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let upstream = Upstream::start().await;
    let redis_port = free_port();
    let mut store = redis(&bin, redis_port);
    let config = pki.path("fleet.toml");
    std::fs::write(
        &config,
        format!(
            "[fleet]\nredis = \"redis://127.0.0.1:{redis_port}\"\ntimeout = \"200ms\"\n\n[[rate-limit]]\nname = \"calls\"\nmethod = \"tools/call\"\nkey = \"address\"\nper-minute = 6\nburst = {BURST}\n"
        ),
    )
    .unwrap();
    let replicas: Vec<Proc> = (0..3)
        .map(|_| {
            Proc::server_sidecar(
                pki.dir.path(),
                &upstream.url(),
                &["--config", config.to_str().unwrap()],
            )
        })
        .collect();
    for r in &replicas {
        r.wait_log(&["Fleet state on Redis: connected"]);
    }
    let lb_port = free_port();
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let _lb = haproxy(&bin, pki.dir.path(), lb_port, &ports);

    // Three times the burst through the balancer: the fleet lets through one burst, not three.
    let ok = allowed(&pki, lb_port, 3 * BURST).await;
    assert!(
        (BURST..=BURST + 1).contains(&ok),
        "{ok} of {} allowed, the fleet's burst is {BURST}",
        3 * BURST
    );
    let admins: Vec<u16> = replicas.iter().map(|r| r.admin.unwrap()).collect();
    for a in &admins {
        // Every replica took its share of the calls, and refused some.
        assert!(metric(*a, "mcp_pqtls_gate_rate_limited_total{limit=\"calls\"} ").await);
        assert!(metric(*a, "mcp_pqtls_gate_fleet_redis_up 1").await);
    }

    // Redis gone: each replica charges its own limits (each a fresh burst), says so, stays ready.
    drop(store);
    let ok = allowed(&pki, lb_port, 3).await;
    assert_eq!(
        ok, 3,
        "on-failure local lets each replica's own limit decide"
    );
    replicas[0].wait_log(&[
        "ERROR",
        "Fleet state on Redis unreachable",
        "charging this replica's own rate limits",
    ]);
    let (status, _) = get_plain(&format!("http://127.0.0.1:{}/readyz", admins[0])).await;
    assert_eq!(status, 200, "a replica without Redis is still ready");
    assert!(metric(admins[0], "mcp_pqtls_gate_fleet_redis_up 0").await);

    // Redis back (empty): the replicas reconnect by themselves and share again.
    store = redis(&bin, redis_port);
    let deadline = Instant::now() + GUARD;
    loop {
        call(&pki, lb_port).await;
        let mut up = 0;
        for a in &admins {
            up += usize::from(metric(*a, "mcp_pqtls_gate_fleet_redis_up 1").await);
        }
        if up == admins.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the replicas did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replicas[0].wait_log(&["Fleet state on Redis reachable again"]);
    let ok = allowed(&pki, lb_port, 3 * BURST).await;
    assert!(
        ok <= BURST + 1,
        "{ok} allowed after recovery: the limit is shared again"
    );
    drop(store);

    // The control: the same three replicas without [fleet] let through one burst each.
    let local = pki.path("local.toml");
    std::fs::write(
        &local,
        format!("[[rate-limit]]\nname = \"calls\"\nmethod = \"tools/call\"\nkey = \"address\"\nper-minute = 6\nburst = {BURST}\n"),
    )
    .unwrap();
    let alone: Vec<Proc> = (0..3)
        .map(|_| {
            Proc::server_sidecar(
                pki.dir.path(),
                &upstream.url(),
                &["--config", local.to_str().unwrap()],
            )
        })
        .collect();
    let lb2 = free_port();
    let ports: Vec<u16> = alone.iter().map(|r| r.port).collect();
    let _lb2 = haproxy(&bin, &pki.path("alone"), lb2, &ports);
    let ok = allowed(&pki, lb2, 3 * BURST).await;
    assert_eq!(
        ok,
        3 * BURST,
        "without [fleet] each replica has its own burst"
    );
}
