//! Human approval at the gate, with real peers: the official Python SDK's client (2026-07-28
//! and 2025-11-25) calls a tool a rule holds, through the full tunnel (client sidecar, PQ TLS,
//! server sidecar with the gate, the SDK's server), and an approver decides through the admin
//! listener's API, the `approvals` CLI or the page in Chromium.

mod support;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mcp_pqtls::certs::KeyAlg;
use serde_json::{json, Value};
use support::admin::{api, http, wait_pending};
use support::jwt::{approval_rule, approver, auth_section, token};
use support::process::{bin, install_or_skip, Proc};
use support::python::{
    gate_client_with, held_call_in_background, python, python_server, repo, report,
};
use support::{KillOnDrop, Pki};

/// How long a test waits for something that should happen at once.
const GUARD: Duration = Duration::from_secs(30);

/// The SDK's server behind a gate whose rule `approve-deletes` holds `delete_*` calls for
/// `scope:approve`, and a client sidecar in front.
struct Held {
    _upstream: KillOnDrop,
    server: Proc,
    client: Proc,
    audit: PathBuf,
    pki: Pki,
    /// The MCP endpoint's path (`/sse` for legacy HTTP+SSE).
    path: &'static str,
}

impl Held {
    /// Approvers by token scope (`scope:approve`), calls held for `timeout`; `approvals`: more
    /// `[approvals]` keys.
    fn start(python: &Path, timeout: &str, approvals: &str) -> Self {
        Self::start_on(python, "streamable-http", timeout, approvals)
    }

    /// As [`Held::start`], the upstream serving `transport` (`sse`: legacy HTTP+SSE).
    fn start_on(python: &Path, transport: &'static str, timeout: &str, approvals: &str) -> Self {
        Self::with(python, transport, |pki| {
            let auth = auth_section(&pki.path("jwks.json"));
            let rule = approval_rule(timeout);
            let gate = format!("{auth}\n{rule}{approvals}\n");
            (gate, false)
        })
    }

    /// `gate(pki)`: the config's gate sections (its `[audit]` is added), and whether mTLS is
    /// on (`client-ca` on the server sidecar, the dev client certificate on the client's).
    fn with(
        python: &Path,
        transport: &'static str,
        gate: impl FnOnce(&Pki) -> (String, bool),
    ) -> Self {
        let pki = Pki::new(KeyAlg::EcdsaP256);
        let audit = pki.path("audit.jsonl");
        let config = pki.path("gate.toml");
        let (text, mtls) = gate(&pki);
        std::fs::write(&config, format!("{text}\n[audit]\npath = {audit:?}\n")).unwrap();
        let (mcp, port) = python_server(python, transport);
        let upstream_url = format!("http://127.0.0.1:{port}");
        let (ca, cert, key) = (
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key"),
        );
        let mut server_flags = vec!["--config", config.to_str().unwrap()];
        if mtls {
            server_flags.extend(["--client-ca", ca.to_str().unwrap()]);
        }
        let server = Proc::server_sidecar(pki.dir.path(), &upstream_url, &server_flags);
        let upstream = format!("https://localhost:{}", server.port);
        let mut client_flags = vec!["client", "--listen", "127.0.0.1:0", "--upstream", &upstream];
        client_flags.extend(["--ca", ca.to_str().unwrap()]);
        if mtls {
            client_flags.extend(["--client-cert", cert.to_str().unwrap()]);
            client_flags.extend(["--client-key", key.to_str().unwrap()]);
        }
        let client = Proc::spawn(&client_flags);
        Self {
            _upstream: mcp,
            server,
            client,
            audit,
            pki,
            path: if transport == "sse" { "/sse" } else { "/mcp" },
        }
    }

    fn mcp_url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.client.port, self.path)
    }

    fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.admin.unwrap())
    }

    /// One request to the admin listener: status and JSON body.
    fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        api(self.server.admin.unwrap(), method, path, token, body)
    }

    /// Waits until `n` calls are held (as an approver sees them), and returns them.
    fn wait_pending(&self, n: usize) -> Vec<Value> {
        wait_pending(self.server.admin.unwrap(), &approver("alice"), n)
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The audit records of `delete_file` calls, once there are `n`.
    fn held_records(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + GUARD;
        loop {
            let r: Vec<Value> = self
                .records()
                .into_iter()
                .filter(|r| r["tool"] == "delete_file")
                .collect();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{} records, not {n}: {r:?}",
                r.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metrics(&self) -> String {
        http(self.server.admin.unwrap(), "GET", "/metrics", None, None).1
    }

    /// What the upstream ran, by tool (a call of `executions`, which the rule does not hold).
    fn executions(&self, python: &Path) -> Value {
        let protocol = if self.path == "/sse" {
            "sse"
        } else {
            "2026-07-28"
        };
        let r = gate_client_with(
            python,
            &self.mcp_url(),
            protocol,
            1,
            &[],
            &["--bearer", &token("agent")],
        );
        r["executions"].clone()
    }
}

/// One JSON POST to the MCP endpoint through the client sidecar, answered at once.
fn plain_post(port: u16, token: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\naccept: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    (out[9..12].parse().unwrap(), out)
}

/// gate_client.py in a thread: the call it makes is held until the test decides.
fn call_in_background(
    python: &Path,
    url: String,
    protocol: &'static str,
    arguments: Value,
    extra: &'static [&'static str],
) -> Background {
    Background(held_call_in_background(
        python,
        url,
        protocol,
        "delete_file",
        arguments,
        extra,
    ))
}

/// A client's run in its thread.
struct Background(std::thread::JoinHandle<std::process::Output>);

impl Background {
    fn join(self) -> std::thread::Result<Value> {
        self.0.join().map(report)
    }
}

/// The one call's outcome in a gate_client.py report.
fn outcome(report: &Value) -> &Value {
    &report["calls"][0]
}

#[test]
fn approved_through_the_api_and_the_cli_and_an_id_decides_once() {
    let Some(python) = python() else { return };
    let gate = Held::start(python, "5m", "");
    let alice = approver("alice");

    // 2026-07-28 (mcp.Client), approved through the API.
    let client = call_in_background(
        python,
        gate.mcp_url(),
        "2026-07-28",
        json!({"path": "/srv/a"}),
        &[],
    );
    let held = gate.wait_pending(1).remove(0);
    assert_eq!(held["tool"], "delete_file", "{held}");
    assert_eq!(held["arguments"], json!({"path": "/srv/a"}));
    assert_eq!(held["rule"], "approve-deletes");
    assert_eq!(held["caller"]["subject"], "agent");
    assert_eq!(
        held["caller"]["client_name"], "mcp",
        "the SDK's clientInfo name: {held}"
    );
    assert_eq!(held["caller"]["protocol_version"], "2026-07-28");
    assert_eq!(held["tls"]["pq"], true, "{held}");
    assert!(
        held["tls"]["group"].as_str().unwrap().contains("MLKEM"),
        "{held}"
    );
    assert!(held["arguments_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let id = held["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "128 random bits: {id}");
    gate.server.wait_log(&["Call held for approval", &id]);

    // Not an approver: neither sees nor decides it, and is logged.
    let mallory = token("mallory");
    let (status, body) = gate.api("GET", "/approvals", Some(&mallory), None);
    assert_eq!(status, 403, "{body}");
    let (status, body) = gate.api(
        "POST",
        &format!("/approvals/{id}/approve"),
        Some(&mallory),
        Some(json!({})),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("sub:mallory"),
        "{body}"
    );
    gate.server
        .wait_log(&["WARN", "Approvals API refused", "sub:mallory"]);
    // No credentials at all, a forged token, and a decision sent as a form: refused.
    assert_eq!(gate.api("GET", "/approvals", None, None).0, 401);
    assert_eq!(
        gate.api("GET", "/approvals", Some("not.a.jwt"), None).0,
        401
    );
    let (status, _) = http(
        gate.server.admin.unwrap(),
        "POST",
        &format!("/approvals/{id}/approve"),
        Some(&alice),
        Some((
            "application/x-www-form-urlencoded",
            "reason=csrf".to_owned(),
        )),
    );
    assert_eq!(status, 415, "a cross-site form must not decide");
    // A decision for other arguments than the ones held: refused.
    let (status, body) = gate.api(
        "POST",
        &format!("/approvals/{id}/approve"),
        Some(&alice),
        Some(json!({"arguments_digest": "sha256:00"})),
    );
    assert_eq!(status, 409, "{body}");

    let (status, body) = gate.api(
        "POST",
        &format!("/approvals/{id}/approve"),
        Some(&alice),
        Some(json!({"reason": "ticket OPS-1", "arguments_digest": held["arguments_digest"]})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approver"], "sub:alice");
    let report = client.join().unwrap();
    assert_eq!(outcome(&report)["result"], "deleted /srv/a", "{report}");
    // Replayed: the id decided its call, once.
    let (status, body) = gate.api(
        "POST",
        &format!("/approvals/{id}/approve"),
        Some(&alice),
        Some(json!({})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("approved by sub:alice"),
        "{body}"
    );

    // 2025-11-25 (ClientSession), approved with the CLI.
    let client = call_in_background(
        python,
        gate.mcp_url(),
        "2025-11-25",
        json!({"path": "/srv/b"}),
        &[],
    );
    gate.wait_pending(1);
    let token_file = gate.pki.path("alice.token");
    std::fs::write(&token_file, &alice).unwrap();
    let cli = |args: &[&str]| {
        let out = bin()
            .arg("approvals")
            .args(args)
            .args([
                "--admin",
                &gate.admin(),
                "--token-file",
                token_file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "approvals {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Piped: JSON, with each approval's id, tool and arguments.
    let listed: Value = serde_json::from_str(&cli(&["list"])).unwrap();
    let call = &listed["approvals"][0];
    assert_eq!(call["tool"], "delete_file", "{listed}");
    assert_eq!(call["arguments"]["path"], "/srv/b");
    assert_eq!(
        call["caller"]["session_id"].as_str().map(|s| !s.is_empty()),
        Some(true),
        "{call}"
    );
    let id2 = call["id"].as_str().unwrap().to_owned();
    let table = cli(&["list", "--format", "table"]);
    assert!(
        table.contains(&id2) && table.contains("delete_file") && table.contains("/srv/b"),
        "{table}"
    );
    let shown = cli(&["show", &id2, "--format", "table"]);
    assert!(
        shown.contains("approve-deletes") && shown.contains("\"path\": \"/srv/b\""),
        "{shown}"
    );
    let decided = cli(&["approve", &id2, "--reason", "looks fine"]);
    assert!(
        decided.contains("approved") && decided.contains("sub:alice"),
        "{decided}"
    );
    let report = client.join().unwrap();
    assert_eq!(outcome(&report)["result"], "deleted /srv/b", "{report}");
    // The CLI fails with the listener's reason on a replay.
    let out = bin()
        .args([
            "approvals",
            "deny",
            &id2,
            "--admin",
            &gate.admin(),
            "--token",
            &alice,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 409"),
        "{out:?}"
    );

    // Each ran once upstream, and the audit says who approved it, why, and how long it waited.
    assert_eq!(gate.executions(python)["delete_file"], 2);
    let records = gate.held_records(2);
    for (r, reason) in records.iter().zip(["ticket OPS-1", "looks fine"]) {
        assert_eq!(r["decision"], "allowed", "{r}");
        assert_eq!(r["status"], 200, "{r}");
        let a = &r["approval"];
        assert_eq!(a["decision"], "approved", "{r}");
        assert_eq!(a["approver"], "sub:alice");
        assert_eq!(a["reason"], reason);
        assert!(a["waited_ms"].as_u64().is_some(), "{r}");
    }
    let m = gate.metrics();
    assert!(
        m.contains("mcp_pqtls_gate_approval_decisions_total{outcome=\"approved\"} 2"),
        "{m}"
    );
    assert!(m.contains("mcp_pqtls_gate_approvals_pending 0"), "{m}");
    assert!(
        m.contains("mcp_pqtls_gate_approval_wait_seconds_count 2"),
        "{m}"
    );
    // Mallory's, the other digest's, and the two replays.
    assert!(
        m.contains("mcp_pqtls_gate_approval_decisions_refused_total 4"),
        "{m}"
    );
}

#[test]
fn denied_expired_and_abandoned_calls_never_reach_the_upstream() {
    let Some(python) = python() else { return };
    let gate = Held::start(python, "3s", "");
    let alice = approver("alice");

    // Denied (2026-07-28): the client's error names who and why.
    let client = call_in_background(
        python,
        gate.mcp_url(),
        "2026-07-28",
        json!({"path": "/etc"}),
        &[],
    );
    let id = gate.wait_pending(1)[0]["id"].as_str().unwrap().to_owned();
    let (status, body) = gate.api(
        "POST",
        &format!("/approvals/{id}/deny"),
        Some(&alice),
        Some(json!({"reason": "not /etc"})),
    );
    assert_eq!(status, 200, "{body}");
    let report = client.join().unwrap();
    let error = &outcome(&report)["error"];
    assert_eq!(error["code"], -32010, "{report}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("denied by sub:alice: not /etc"),
        "{message}"
    );
    assert_eq!(error["data"]["approval"]["decision"], "denied", "{error}");
    gate.server.wait_log(&["Approval decided", &id, "denied"]);

    // Nobody decides (2025-11-25): denied at the timeout.
    let report = call_in_background(
        python,
        gate.mcp_url(),
        "2025-11-25",
        json!({"path": "/var"}),
        &[],
    )
    .join()
    .unwrap();
    let error = &outcome(&report)["error"];
    assert_eq!(error["code"], -32010, "{report}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not approved within"),
        "{error}"
    );
    gate.server.wait_log(&["WARN", "Approval expired"]);

    // The client leaves while held: cancelled, at once, and its place freed.
    let report = call_in_background(
        python,
        gate.mcp_url(),
        "2026-07-28",
        json!({"path": "/tmp"}),
        &["--leave-after", "1"],
    )
    .join()
    .unwrap();
    assert_eq!(outcome(&report)["left"], true, "{report}");
    gate.server
        .wait_log(&["Approval cancelled: the client left"]);
    gate.wait_pending(0);

    assert_eq!(
        gate.executions(python).get("delete_file"),
        None,
        "nothing ran upstream"
    );
    let records = gate.held_records(3);
    let by = |d: &str| {
        records
            .iter()
            .find(|r| r["approval"]["decision"] == d)
            .unwrap_or_else(|| panic!("no {d} record: {records:?}"))
    };
    let denied = by("denied");
    assert_eq!(
        (denied["decision"].as_str(), denied["status"].as_u64()),
        (Some("refused"), Some(403)),
        "{denied}"
    );
    assert_eq!(denied["approval"]["reason"], "not /etc");
    assert_eq!(by("expired")["status"], 403);
    assert_eq!(by("cancelled")["status"], 499, "the client left first");
    let m = gate.metrics();
    for outcome in ["denied", "expired", "cancelled"] {
        assert!(
            m.contains(&format!(
                "mcp_pqtls_gate_approval_decisions_total{{outcome=\"{outcome}\"}} 1"
            )),
            "{outcome}: {m}"
        );
    }
    assert!(
        m.contains("mcp_pqtls_gate_refusals_total{reason=\"approval_denied\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("mcp_pqtls_gate_refusals_total{reason=\"approval_expired\"} 1"),
        "{m}"
    );
}

/// The deprecated HTTP+SSE transport: its client reads answers on its session's GET stream
/// only, so an approved call's answer and a denial both arrive there.
#[test]
fn legacy_http_sse_clients_wait_and_hear_the_decision_on_their_stream() {
    let Some(python) = python() else { return };
    let gate = Held::start_on(python, "sse", "5m", "");
    let alice = approver("alice");
    for (verb, path) in [("approve", "/srv/legacy"), ("deny", "/srv/no")] {
        let client = call_in_background(python, gate.mcp_url(), "sse", json!({"path": path}), &[]);
        let held = gate.wait_pending(1).remove(0);
        assert!(held["caller"]["session_id"].as_str().is_some(), "{held}");
        let id = held["id"].as_str().unwrap();
        let (status, body) = gate.api(
            "POST",
            &format!("/approvals/{id}/{verb}"),
            Some(&alice),
            Some(json!({"reason": "legacy"})),
        );
        assert_eq!(status, 200, "{body}");
        let report = client.join().unwrap();
        match verb {
            "approve" => assert_eq!(
                outcome(&report)["result"],
                format!("deleted {path}"),
                "{report}"
            ),
            _ => assert_eq!(outcome(&report)["error"]["code"], -32010, "{report}"),
        }
    }
    assert_eq!(gate.executions(python)["delete_file"], 1);
}

/// An attack over sockets: one caller floods calls that need approval. The desk holds
/// `max-pending-per-caller` (here 2) and refuses the rest at once (503), and the held ones are
/// freed when their clients go.
#[test]
fn a_flood_of_calls_needing_approval_is_capped_per_caller() {
    let Some(python) = python() else { return };
    let gate = Held::start(python, "5m", "max-pending-per-caller = 2\nmax-pending = 3");
    let port = gate.client.port;
    let body = |id: u32| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "delete_file", "arguments": {"path": format!("/{id}")}}})
        .to_string()
    };
    let post = |id: u32, who: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(GUARD)).unwrap();
        let b = body(id);
        let req = format!(
            "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\naccept: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{b}",
            token(who),
            b.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        s
    };
    let held: Vec<TcpStream> = (1..=2).map(|i| post(i, "flood")).collect();
    gate.wait_pending(2);
    // The third from the same caller: refused at once, never held.
    let mut third = post(3, "flood");
    let mut answer = String::new();
    third.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("max-pending-per-caller"), "{answer}");
    // Another caller still gets a place, until the desk as a whole is full.
    let _other = post(4, "someone-else");
    gate.wait_pending(3);
    let mut fourth = post(5, "another-one");
    let mut answer = String::new();
    fourth.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("approvals.max-pending"),
        "{answer}"
    );
    // A held call is never smuggled in a batch, nor with a number an approver would see
    // rounded: both refused at once.
    let batch = format!("[{},{}]", body(6), body(7));
    let (status, text) = plain_post(port, &token("flood2"), &batch);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("send it alone, not in a batch"), "{text}");
    let big = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/x","amount":12345678901234567890}}}"#;
    let (status, text) = plain_post(port, &token("flood2"), big);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("beyond ±2^53"), "{text}");
    // The flood's clients go: their calls are cancelled and their places freed.
    drop(held);
    gate.wait_pending(1);
    assert_eq!(gate.executions(python).get("delete_file"), None);
}

/// Approvers by client certificate: with `admin-tls` the admin listener speaks the sidecar's
/// TLS with its `client-ca`, and an `id:PATTERN` approver decides with the CLI's certificate.
/// Without one, the admin handshake is refused; without `admin-tls`, such a rule does not start.
#[test]
fn an_mtls_approver_decides_over_admin_tls() {
    let Some(python) = python() else { return };
    let rule = "[[rules]]\nname = \"approve-deletes\"\ntool = \"delete_*\"\nrequire-approval = true\napprovers = [\"id:spiffe://mcp-pqtls.dev/*\"]\n";
    let gate = Held::with(python, "streamable-http", |_| {
        (format!("admin-tls = true\n{rule}"), true)
    });
    let admin = format!("https://localhost:{}", gate.server.admin.unwrap());
    let ca = gate.pki.path("ca.pem");
    // `who`: the certificate the CLI presents (`approver`, or `client`: the caller's own).
    let cli = |verb: &[&str], who: Option<&str>| {
        let mut cmd = bin();
        cmd.arg("approvals")
            .args(verb)
            .args(["--admin", &admin, "--ca", ca.to_str().unwrap()]);
        if let Some(who) = who {
            let (cert, key) = (
                gate.pki.path(&format!("{who}.pem")),
                gate.pki.path(&format!("{who}.key")),
            );
            cmd.arg("--client-cert")
                .arg(cert)
                .arg("--client-key")
                .arg(key);
        }
        cmd.output().unwrap()
    };
    let python = python.to_owned();
    let url = gate.mcp_url();
    let client = std::thread::spawn(move || {
        gate_client_with(
            &python,
            &url,
            "2026-07-28",
            1,
            &[("delete_file", json!({"path": "/m"}))],
            &["--timeout", "60"],
        )
    });
    let deadline = Instant::now() + GUARD;
    let id = loop {
        let out = cli(&["list"], Some("approver"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(id) = listed["approvals"][0]["id"].as_str() {
            assert_eq!(
                listed["approver"], "id:spiffe://mcp-pqtls.dev/approver",
                "{listed}"
            );
            assert_eq!(
                listed["approvals"][0]["caller"]["identity"],
                "spiffe://mcp-pqtls.dev/client"
            );
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "never held: {listed}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // No certificate: the admin listener's handshake refuses it.
    let out = cli(&["approve", &id], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The caller's own certificate matches the approvers too: nobody approves their own call.
    let out = cli(&["list"], Some("client"));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["approvals"], json!([]), "{listed}");
    let out = cli(&["approve", &id], Some("client"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may not decide their own call"),
        "{out:?}"
    );
    let out = cli(&["approve", &id, "--reason", "mtls"], Some("approver"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = client.join().unwrap();
    assert_eq!(outcome(&report)["result"], "deleted /m", "{report}");
    let r = &gate.held_records(1)[0];
    assert_eq!(
        r["approval"]["approver"], "id:spiffe://mcp-pqtls.dev/approver",
        "{r}"
    );

    // The same rule without admin-tls: refused before anything listens, naming the fix.
    let bad = gate.pki.path("bad.toml");
    let dir = gate.pki.dir.path();
    std::fs::write(
        &bad,
        format!(
            "mode = \"server\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\ncert = {:?}\nkey = {:?}\nclient-ca = {ca:?}\n{rule}",
            dir.join("server.pem"),
            dir.join("server.key"),
        ),
    )
    .unwrap();
    let out = bin().arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set admin-tls = true"),
        "{out:?}"
    );
}

/// The page in a real browser (Debian's Chromium driven by playwright-core): it shows the
/// held call live, its hostile arguments as text, and Approve runs the call; Deny refuses the
/// next. The screenshot in docs/ is the one this test takes.
#[test]
fn the_page_in_chromium_approves_one_call_and_denies_another() {
    let Some(python) = python() else { return };
    let Some(modules) = browser() else { return };
    let gate = Held::start(python, "5m", "");
    let hostile =
        "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>";
    for (verb, path) in [("approve", "/srv/report.pdf"), ("deny", "/srv/keep")] {
        let shot = gate.pki.path(&format!("page-{verb}.png"));
        let mut page = KillOnDrop(
            Command::new("node")
                .arg(repo().join("tests/browser/approvals_page.cjs"))
                .args([
                    &format!("{}/approvals/ui", gate.admin()),
                    &approver("alice"),
                    verb,
                    path,
                ])
                .arg(&shot)
                .env("NODE_PATH", &modules)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // The page is open and signed in before the call exists: it must appear live.
        let mut line = String::new();
        std::io::BufReader::new(page.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let arguments = json!({"path": path, "note": hostile});
        let client = call_in_background(python, gate.mcp_url(), "2026-07-28", arguments, &[]);
        let out = page.0.wait_with_output_ref();
        assert!(
            line.trim() == "signed-in" && out.0.success(),
            "approvals_page.cjs {verb}: {line}{}",
            out.1
        );
        let report = client.join().unwrap();
        match verb {
            "approve" => {
                assert_eq!(
                    outcome(&report)["result"],
                    format!("deleted {path}"),
                    "{report}"
                );
                // The page as the docs show it.
                std::fs::copy(&shot, repo().join("docs/approvals-page.png")).unwrap();
            }
            _ => assert!(
                outcome(&report)["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("denied by sub:alice: not this one"),
                "{report}"
            ),
        }
    }
    assert_eq!(gate.executions(python)["delete_file"], 1);
}

/// Waits for a child whose stdout was taken: its status and its stderr.
trait WaitRef {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String);
}

impl WaitRef for std::process::Child {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String) {
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (self.wait().unwrap(), err)
    }
}

/// The node_modules holding playwright-core, with Chromium installed: `None` (test skipped)
/// only outside CI.
fn browser() -> Option<PathBuf> {
    install_or_skip("interop/install-browser.sh", "Chromium and playwright-core")
}
