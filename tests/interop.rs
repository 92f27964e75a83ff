//! The interop matrix: every catalogue group, both directions and our probe, with an ECDSA
//! P-256 and an ML-DSA-65 server certificate, against foreign TLS stacks; and our policy
//! against each peer's default settings. See `interop/README.md`.
//!
//! `cargo test` runs the peers named by `MCP_PQTLS_INTEROP_PEERS` (default `openssl,node`,
//! the ones CI installs) and fails when a cell that `interop/RESULTS.json` records as
//! negotiated (or a policy check recorded as holding) is anything else now. `interop/run`
//! runs every peer and rewrites `interop/RESULTS.md` and `interop/RESULTS.json`
//! (`MCP_PQTLS_INTEROP_WRITE=1`).

mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::policy::{Policy, PolicyMode};
use mcp_pqtls::probe::{probe, ProbeOptions, Target};
use mcp_pqtls::tls::Trust;
use mcp_pqtls::Group;
use serde::{Deserialize, Serialize};
use support::{connector, KillOnDrop, Pki, Server};

const RESULTS_JSON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/RESULTS.json");
const RESULTS_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/RESULTS.md");
const CERTS: [KeyAlg; 2] = [KeyAlg::EcdsaP256, KeyAlg::MlDsa65];

/// Runs an install script; its last stdout line is the binary.
fn install(script: &str) -> PathBuf {
    let path = format!("{}/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(&path)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "interop/{script} failed");
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
}

/// A foreign TLS stack: OpenSSL's own CLI, or a peer program speaking the contract in
/// `interop/README.md`.
enum Peer {
    OpenSsl(PathBuf),
    Program {
        name: &'static str,
        command: Vec<OsString>,
    },
}

/// What a peer client reported.
enum ClientOutcome {
    /// The handshake completed and the response came back: the peer's view of the group and
    /// the body (our server's JSON view of the handshake).
    Done {
        group: Option<String>,
        body: String,
    },
    Refused(String),
    Unsupported(String),
}

fn group_arg(groups: Option<&[Group]>, sep: &str) -> Option<String> {
    groups.map(|gs| gs.iter().map(|g| g.name()).collect::<Vec<_>>().join(sep))
}

impl Peer {
    fn name(&self) -> &'static str {
        match self {
            Self::OpenSsl(_) => "openssl",
            Self::Program { name, .. } => name,
        }
    }

    fn version(&self) -> String {
        match self {
            Self::OpenSsl(bin) => run_text(Command::new(bin).arg("version")),
            Self::Program {
                name: "node",
                command,
            } => {
                let v = run_text(Command::new(&command[0]).arg("--version"));
                let ssl =
                    run_text(Command::new(&command[0]).args(["-p", "process.versions.openssl"]));
                format!("Node {v} (OpenSSL {ssl})")
            }
            Self::Program {
                name: "go",
                command,
            } => {
                // install-go.sh puts the peer at CACHE/go-peer/peer, the toolchain beside it.
                let cache = Path::new(&command[0])
                    .ancestors()
                    .nth(2)
                    .unwrap_or(Path::new("."));
                let go = cache.join("go-1.27/usr/lib/go-1.27/bin/go");
                format!("{} crypto/tls", run_text(Command::new(go).arg("version")))
            }
            Self::Program {
                name: "boringssl", ..
            } => {
                let lock = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/boring/Cargo.lock");
                let text = std::fs::read_to_string(lock).unwrap_or_default();
                let version = text
                    .split("[[package]]")
                    .find(|p| p.contains("name = \"boring\"\n"))
                    .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
                    .unwrap_or("?")
                    .trim_matches('"')
                    .to_owned();
                format!("BoringSSL as bundled by the boring crate {version} (Cloudflare-patched)")
            }
            Self::Program { name, .. } => (*name).to_owned(),
        }
    }

    fn program(command: &[OsString], args: &[String]) -> Command {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]).args(args);
        cmd
    }

    /// Their client against `127.0.0.1:port` (server name `localhost`).
    async fn client(&self, port: u16, ca: &Path, groups: Option<&[Group]>) -> ClientOutcome {
        let mut cmd = match self {
            Self::OpenSsl(bin) => {
                let mut cmd = Command::new(bin);
                cmd.args(["s_client", "-ign_eof", "-tls1_3", "-verify_return_error"])
                    .args(["-connect", &format!("127.0.0.1:{port}")])
                    .args(["-servername", "localhost", "-alpn", "http/1.1", "-CAfile"])
                    .arg(ca);
                if let Some(g) = group_arg(groups, ":") {
                    cmd.args(["-groups", &g]);
                }
                cmd
            }
            Self::Program { command, .. } => {
                let mut args = vec![
                    "client".to_owned(),
                    "--connect".to_owned(),
                    format!("127.0.0.1:{port}"),
                    "--servername".to_owned(),
                    "localhost".to_owned(),
                    "--ca".to_owned(),
                    ca.display().to_string(),
                ];
                if let Some(g) = group_arg(groups, ",") {
                    args.extend(["--groups".to_owned(), g]);
                }
                Self::program(command, &args)
            }
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let openssl = matches!(self, Self::OpenSsl(_));
        let out = tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            if openssl {
                let _ = stdin
                    .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            }
            drop(stdin);
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if openssl {
            return openssl_client_outcome(&stdout, &stderr);
        }
        let Some(line) = stdout.lines().rev().find(|l| l.starts_with('{')) else {
            return ClientOutcome::Refused(format!("no report: {}", stderr.trim()));
        };
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        if let Some(u) = v["unsupported"].as_str() {
            let reason = v["reason"].as_str().unwrap_or_default();
            return ClientOutcome::Unsupported(format!("{u}: {reason}"));
        }
        if v["ok"] == true {
            ClientOutcome::Done {
                group: v["group"].as_str().map(str::to_owned),
                body: v["body"].as_str().unwrap_or_default().to_owned(),
            }
        } else {
            ClientOutcome::Refused(stable(v["error"].as_str().unwrap_or(line)))
        }
    }

    /// Their server on a free port; `Err` when the peer cannot do what is asked.
    async fn server(
        &self,
        pki: &Pki,
        groups: Option<&[Group]>,
    ) -> Result<(KillOnDrop, u16), String> {
        // A port found free can be taken (as another connection's ephemeral port) before the
        // peer binds it: that is the machine's doing, not the peer's, so another port is tried.
        let mut attempts = 0;
        loop {
            match self.server_on(pki, groups, support::free_port()).await {
                Err(e) if e.contains("Address already in use") && attempts < 5 => attempts += 1,
                result => return result,
            }
        }
    }

    async fn server_on(
        &self,
        pki: &Pki,
        groups: Option<&[Group]>,
        port: u16,
    ) -> Result<(KillOnDrop, u16), String> {
        let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
        let mut cmd = match self {
            Self::OpenSsl(bin) => {
                let mut cmd = Command::new(bin);
                cmd.args(["s_server", "-quiet", "-www", "-tls1_3", "-accept"])
                    .arg(port.to_string())
                    .arg("-cert")
                    .arg(&cert)
                    .arg("-key")
                    .arg(&key);
                if let Some(g) = group_arg(groups, ":") {
                    cmd.args(["-groups", &g]);
                }
                cmd
            }
            Self::Program { command, .. } => {
                let mut args = vec![
                    "server".to_owned(),
                    "--port".to_owned(),
                    port.to_string(),
                    "--cert".to_owned(),
                    cert.display().to_string(),
                    "--key".to_owned(),
                    key.display().to_string(),
                ];
                if let Some(g) = group_arg(groups, ",") {
                    args.extend(["--groups".to_owned(), g]);
                }
                Self::program(command, &args)
            }
        };
        // What the server writes and nobody reads goes to a file: a full pipe would stall it.
        let log = pki.path(&format!("{}-{port}.log", self.name()));
        let log_file = || std::fs::File::create(&log).unwrap();
        let stdout = match self {
            Self::OpenSsl(_) => Stdio::from(log_file()),
            Self::Program { .. } => Stdio::piped(),
        };
        let mut child = KillOnDrop(
            cmd.stdin(Stdio::null())
                .stdout(stdout)
                .stderr(Stdio::from(log_file()))
                .spawn()
                .unwrap(),
        );
        if let Self::Program { .. } = self {
            // The contract: a `listening` line, or an `unsupported` line and exit 3.
            // Its later lines are drained until it exits: a peer writing into a closed pipe
            // would die of it.
            let stdout = child.0.stdout.take().unwrap();
            let (first_tx, first) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                let _ = first_tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
                lines.for_each(drop);
            });
            let line = tokio::time::timeout(Duration::from_secs(20), first)
                .await
                .map_err(|_| "no `listening` line within 20 s".to_owned())?
                .unwrap_or_default();
            if !line.contains("\"listening\"") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                return Err(match v.get("reason") {
                    Some(r) => r.as_str().unwrap_or_default().to_owned(),
                    None => format!("did not start: {line}"),
                });
            }
            return Ok((child, port));
        }
        // s_server says nothing when ready: wait for the port, or its exit.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok((child, port));
            }
            if let Ok(Some(_)) = child.0.try_wait() {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(err.lines().next().unwrap_or("exited").to_owned());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err("s_server never listened".to_owned())
    }
}

/// An error line without OpenSSL's per-thread prefix (`40A73C036E7F0000:`), which changes on
/// every run and would churn the record.
fn stable(error: &str) -> String {
    let error = error.trim();
    match error.split_once(':') {
        Some((id, rest)) if id.len() >= 8 && id.chars().all(|c| c.is_ascii_hexdigit()) => {
            rest.to_owned()
        }
        _ => error.to_owned(),
    }
}

fn run_text(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// s_client prints its view of the group, then whatever the server sent (our JSON).
fn openssl_client_outcome(stdout: &str, stderr: &str) -> ClientOutcome {
    let all = format!("{stdout}\n{stderr}");
    let group = all.lines().find_map(|l| {
        l.strip_prefix("Negotiated TLS1.3 group: ")
            .map(str::to_owned)
            .or_else(|| {
                let key = l.strip_prefix("Peer Temp Key: ")?;
                let name = key.split(',').next()?.trim();
                Some(match name {
                    "ECDH" => key
                        .split(',')
                        .nth(1)?
                        .trim()
                        .replace("prime256v1", "secp256r1"),
                    other => other.to_owned(),
                })
            })
    });
    // The body has no newline of its own: s_client's next words follow it on the same line.
    let body = stdout.lines().find(|l| l.starts_with('{')).and_then(|l| {
        let mut values = serde_json::Deserializer::from_str(l).into_iter::<serde_json::Value>();
        values.next()?.ok()
    });
    match body {
        Some(body) => ClientOutcome::Done {
            group,
            body: body.to_string(),
        },
        None => ClientOutcome::Refused(stable(
            all.lines()
                .find(|l| l.contains("alert") || l.contains("error"))
                .unwrap_or("no response"),
        )),
    }
}

/// One cell of the matrix.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Cell {
    peer: String,
    direction: String,
    cert: String,
    group: String,
    /// `negotiated`, `refused`, `unsupported` (by the peer) or `mismatch`.
    outcome: String,
    detail: String,
}

/// One policy check against a peer's defaults.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct PolicyCheck {
    peer: String,
    case: String,
    expected: String,
    observed: String,
    holds: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Results {
    peers: BTreeMap<String, String>,
    cells: Vec<Cell>,
    policy: Vec<PolicyCheck>,
}

const THEIRS_OURS: &str = "their client -> our server";
const OURS_THEIRS: &str = "our client -> their server";
const PROBE_THEIRS: &str = "our probe -> their server";
const PROBE_DEFAULTS: &str = "our probe -> their default server";

fn cell(peer: &Peer, direction: &str, cert: KeyAlg, group: Group) -> Cell {
    Cell {
        peer: peer.name().to_owned(),
        direction: direction.to_owned(),
        cert: cert.name().to_owned(),
        group: group.name().to_owned(),
        outcome: String::new(),
        detail: String::new(),
    }
}

fn set(mut c: Cell, outcome: &str, detail: impl Into<String>) -> Cell {
    c.outcome = outcome.to_owned();
    c.detail = detail.into();
    c
}

/// Their client, offered exactly `group`, against our server restricted to it.
async fn their_client(peer: &Peer, pki: &Pki, cert: KeyAlg, group: Group) -> Cell {
    let c = cell(peer, THEIRS_OURS, cert, group);
    let server =
        Server::start(pki.server(&[group], Policy::new(PolicyMode::ClassicalAllowed))).await;
    let outcome = peer
        .client(server.addr.port(), &pki.path("ca.pem"), Some(&[group]))
        .await;
    server.stop().await;
    match outcome {
        ClientOutcome::Done {
            group: theirs,
            body,
        } => {
            let ours: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let ours = ours["group"].as_str().unwrap_or("none");
            let theirs_ok = theirs.as_deref() == Some(group.name());
            if ours == group.name() && theirs_ok {
                set(c, "negotiated", group.name())
            } else {
                set(c, "mismatch", format!("ours {ours}, theirs {theirs:?}"))
            }
        }
        ClientOutcome::Refused(e) => set(c, "refused", e),
        ClientOutcome::Unsupported(e) => set(c, "unsupported", e),
    }
}

/// Our client and our probe against their server restricted to `group`.
async fn their_server(peer: &Peer, pki: &Pki, cert: KeyAlg, group: Group) -> [Cell; 2] {
    let ours = cell(peer, OURS_THEIRS, cert, group);
    let probed = cell(peer, PROBE_THEIRS, cert, group);
    let (_server, port) = match peer.server(pki, Some(&[group])).await {
        Ok(s) => s,
        Err(e) => return [set(ours, "unsupported", &e), set(probed, "unsupported", e)],
    };
    let client = connector(pki.client(&[group], PolicyMode::ClassicalAllowed));
    let url: http::Uri = format!("https://localhost:{port}/").parse().unwrap();
    let ours = match mcp_pqtls::get(&client, url).await {
        Ok(f) if f.info.group == group.name() && f.status.is_success() && !f.body.is_empty() => {
            set(ours, "negotiated", group.name())
        }
        Ok(f) => set(
            ours,
            "mismatch",
            format!("{} HTTP {}", f.info.group, f.status),
        ),
        Err(e) => set(ours, "refused", e.to_string()),
    };
    let report = probe_port(pki, port).await;
    let accepted = report.accepted_groups();
    let verified = report
        .certificate
        .as_ref()
        .is_some_and(|c| c.verified == Some(true));
    let probed = if accepted == [group.name()] && verified {
        set(
            probed,
            "negotiated",
            format!("{group} only; verdict {}", report.verdict),
        )
    } else {
        set(
            probed,
            "mismatch",
            format!(
                "accepted {accepted:?}, verified {verified}, verdict {}",
                report.verdict
            ),
        )
    };
    [ours, probed]
}

/// Our probe, with the whole catalogue, against a server on `localhost:port`.
async fn probe_port(pki: &Pki, port: u16) -> mcp_pqtls::probe::ProbeReport {
    let target: Target = format!("localhost:{port}").parse().unwrap();
    let mut options = ProbeOptions::default();
    options.trust = Trust::Roots(pki.roots());
    probe(&target, &options).await
}

/// Our policy against the peer's defaults (ECDSA certificate).
async fn policy_checks(peer: &Peer, pki: &Pki) -> Vec<PolicyCheck> {
    let mut checks = Vec::new();
    let mut check = |case: &str, expected: &str, observed: String, holds: bool| {
        checks.push(PolicyCheck {
            peer: peer.name().to_owned(),
            case: case.to_owned(),
            expected: expected.to_owned(),
            observed,
            holds,
        })
    };
    let ca = pki.path("ca.pem");
    let all = Group::ALL;
    let describe = |o: &ClientOutcome| -> (String, Option<serde_json::Value>) {
        match o {
            ClientOutcome::Done { body, .. } => {
                let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                let hrr = if v["hello_retry"] == true {
                    " after HelloRetryRequest"
                } else {
                    ""
                };
                (
                    format!("{}{hrr}", v["group"].as_str().unwrap_or("?")),
                    Some(v),
                )
            }
            ClientOutcome::Refused(e) => (format!("refused: {e}"), None),
            ClientOutcome::Unsupported(e) => (format!("unsupported: {e}"), None),
        }
    };

    for mode in [PolicyMode::PqRequired, PolicyMode::PqPreferred] {
        let server = Server::start(pki.server(&all, Policy::new(mode))).await;
        let out = peer.client(server.addr.port(), &ca, None).await;
        let (observed, v) = describe(&out);
        let pq = v.is_some_and(|v| v["pq"] == true);
        check(
            &format!("their default client -> our {mode} server"),
            "a pq group",
            observed,
            pq,
        );
        server.stop().await;
    }

    let server = Server::start(pki.server(&all, Policy::new(PolicyMode::PqPreferred))).await;
    let offer = [Group::X25519, Group::X25519MLKEM768];
    let (observed, v) = describe(&peer.client(server.addr.port(), &ca, Some(&offer)).await);
    let pq = v.is_some_and(|v| v["group"] == "X25519MLKEM768");
    check(
        "their client listing X25519 then X25519MLKEM768 -> our pq-preferred server",
        "X25519MLKEM768 (after HelloRetryRequest if their first share was X25519)",
        observed,
        pq,
    );
    server.stop().await;

    let server = Server::start(pki.server(&all, Policy::new(PolicyMode::PqRequired))).await;
    let out = peer
        .client(server.addr.port(), &ca, Some(&[Group::X25519]))
        .await;
    let refused_with_alert = match &out {
        ClientOutcome::Refused(e) => {
            let e = e.to_lowercase();
            e.contains("handshake failure") || e.contains("handshake_failure")
        }
        _ => false,
    };
    check(
        "their X25519-only client -> our pq-required server",
        "refused; the peer reports a handshake_failure alert",
        describe(&out).0,
        refused_with_alert,
    );
    server.stop().await;

    let (observed, holds) = match peer.server(pki, None).await {
        Ok((_server, port)) => {
            let report = probe_port(pki, port).await;
            let accepted = report.accepted_groups();
            let upgrade = report
                .upgrade_to_pq
                .map_or("-", |u| if u { "yes" } else { "no" });
            (
                format!(
                    "verdict {}; accepts {}; upgrade to pq {upgrade}; default group {}",
                    report.verdict,
                    accepted.join(", "),
                    report.default_group.as_deref().unwrap_or("-")
                ),
                report.default_group.is_some()
                    && report.verdict != mcp_pqtls::probe::Verdict::Unreachable,
            )
        }
        Err(e) => (format!("could not start: {e}"), false),
    };
    check(
        PROBE_DEFAULTS,
        "a report; its verdict and accepted groups as recorded",
        observed,
        holds,
    );
    checks
}

fn peers() -> Vec<Peer> {
    let wanted = std::env::var("MCP_PQTLS_INTEROP_PEERS").unwrap_or_else(|_| "openssl,node".into());
    let peer_js = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/node/peer.js");
    wanted
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| match name {
            "openssl" => Peer::OpenSsl(install("install-openssl.sh")),
            "node" => Peer::Program {
                name: "node",
                command: vec![install("install-node.sh").into(), peer_js.into()],
            },
            "go" => Peer::Program {
                name: "go",
                command: vec![install("install-go.sh").into()],
            },
            "boringssl" => Peer::Program {
                name: "boringssl",
                command: vec![install("install-boring.sh").into()],
            },
            other => panic!(
                "MCP_PQTLS_INTEROP_PEERS: unknown peer `{other}` (openssl, node, go, boringssl)"
            ),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn interop_matrix() {
    let peers = peers();
    let mut results = Results::default();
    let pkis: Vec<(KeyAlg, Pki)> = CERTS.into_iter().map(|k| (k, Pki::new(k))).collect();
    for peer in &peers {
        results.peers.insert(peer.name().to_owned(), peer.version());
        for (cert, pki) in &pkis {
            for group in Group::ALL {
                results
                    .cells
                    .push(their_client(peer, pki, *cert, group).await);
                results
                    .cells
                    .extend(their_server(peer, pki, *cert, group).await);
            }
        }
        results.policy.extend(policy_checks(peer, &pkis[0].1).await);
    }

    // Regressions against the recorded results: what negotiated (or held) must still, for
    // every peer run now. Only a run without regressions may rewrite the record (or one told
    // to accept them, after a deliberate change).
    let write = std::env::var_os("MCP_PQTLS_INTEROP_WRITE").is_some();
    let baseline: Results = match std::fs::read_to_string(RESULTS_JSON) {
        Ok(json) => serde_json::from_str(&json).expect("interop/RESULTS.json"),
        Err(_) if write => Results::default(),
        Err(e) => panic!("{RESULTS_JSON}: {e} (interop/run writes it)"),
    };
    let regressions = regressions(&baseline, &results);
    let accept = std::env::var_os("MCP_PQTLS_INTEROP_ACCEPT").is_some();
    if write && (regressions.is_empty() || accept) {
        // Peers not run this time keep their recorded rows.
        let ran = |p: &String| results.peers.contains_key(p);
        let mut merged = Results {
            peers: baseline.peers.clone(),
            cells: baseline
                .cells
                .iter()
                .filter(|c| !ran(&c.peer))
                .cloned()
                .collect(),
            policy: baseline
                .policy
                .iter()
                .filter(|c| !ran(&c.peer))
                .cloned()
                .collect(),
        };
        merged.peers.extend(results.peers.clone());
        merged.cells.extend(results.cells.iter().cloned());
        merged.policy.extend(results.policy.iter().cloned());
        let json = serde_json::to_string_pretty(&merged).unwrap() + "\n";
        std::fs::write(RESULTS_JSON, json).unwrap();
        std::fs::write(RESULTS_MD, markdown(&merged)).unwrap();
        eprintln!("wrote {RESULTS_MD} and {RESULTS_JSON}");
        if accept {
            return;
        }
    }
    assert!(
        regressions.is_empty(),
        "interop regressions (results not rewritten; MCP_PQTLS_INTEROP_ACCEPT=1 accepts them):\n{}",
        regressions.join("\n")
    );
}

/// What the record says held and, for a peer run now, no longer does (or was not tried).
fn regressions(baseline: &Results, now: &Results) -> Vec<String> {
    let ran = |p: &String| now.peers.contains_key(p);
    let mut found = Vec::new();
    for before in baseline
        .cells
        .iter()
        .filter(|c| c.outcome == "negotiated" && ran(&c.peer))
    {
        let key = (&before.peer, &before.direction, &before.cert, &before.group);
        match now
            .cells
            .iter()
            .find(|c| (&c.peer, &c.direction, &c.cert, &c.group) == key)
        {
            Some(c) if c.outcome == "negotiated" => {}
            Some(c) => found.push(format!(
                "{} {} [{}] {}: was negotiated, now {}: {}",
                c.peer, c.direction, c.cert, c.group, c.outcome, c.detail
            )),
            None => found.push(format!("{key:?}: was negotiated, not tried now")),
        }
    }
    for before in baseline.policy.iter().filter(|p| p.holds && ran(&p.peer)) {
        let now = now
            .policy
            .iter()
            .find(|p| (&p.peer, &p.case) == (&before.peer, &before.case));
        match now {
            // The probe's reading of a peer's defaults must not drift either.
            Some(n) if n.holds && (n.case != PROBE_DEFAULTS || n.observed == before.observed) => {}
            Some(n) => found.push(format!(
                "{}: {}: recorded {}, now {} (holds: {})",
                n.peer, n.case, before.observed, n.observed, n.holds
            )),
            None => found.push(format!("{}: {}: not tried now", before.peer, before.case)),
        }
    }
    found
}

fn markdown(r: &Results) -> String {
    let mut md = String::from(
        "# Interop results\n\n\
         Written by `interop/run` (see `interop/README.md`); `cargo test --test interop` checks every\n\
         `negotiated` cell and every holding policy check below against a fresh run of the peers\n\
         it is given (CI: OpenSSL and Node). All on 127.0.0.1.\n\n\
         A cell is `negotiated` only when the handshake completed on exactly that group on both\n\
         sides and an HTTP response came back over it (for the probe: the probe found that group,\n\
         and only it, accepted, and the chain verified). Otherwise it says what happened:\n\
         `refused` (with the error), `unsupported` (the peer cannot do it; its reason), `mismatch`.\n\n\
         ## Peers\n\n| peer | version |\n|---|---|\n",
    );
    for (p, v) in &r.peers {
        md += &format!("| {p} | {v} |\n");
    }
    let groups: Vec<&str> = Group::ALL.iter().map(|g| g.name()).collect();
    for cert in CERTS {
        md += &format!(
            "\n## Every group, {} server certificate\n\n| peer | direction |",
            cert.name()
        );
        for g in &groups {
            md += &format!(" {g} |");
        }
        md += "\n|---|---|";
        md += &"---|".repeat(groups.len());
        md += "\n";
        for peer in r.peers.keys() {
            for dir in [THEIRS_OURS, OURS_THEIRS, PROBE_THEIRS] {
                md += &format!("| {peer} | {dir} |");
                for g in &groups {
                    let c = r.cells.iter().find(|c| {
                        &c.peer == peer
                            && c.direction == dir
                            && c.cert == cert.name()
                            && c.group == *g
                    });
                    let text = match c {
                        Some(c) if c.outcome == "negotiated" => "negotiated".to_owned(),
                        Some(c) if c.outcome == "unsupported" => "unsupported by peer".to_owned(),
                        Some(c) => format!(
                            "{}: {}",
                            c.outcome,
                            c.detail.replace('|', "/").replace('\n', " ")
                        ),
                        None => "-".to_owned(),
                    };
                    md += &format!(" {text} |");
                }
                md += "\n";
            }
        }
    }
    // Why a peer cannot do a group: once per peer and group, not in every cell.
    let mut reasons = BTreeMap::new();
    for c in r.cells.iter().filter(|c| c.outcome == "unsupported") {
        reasons
            .entry((c.peer.clone(), c.group.clone()))
            .or_insert_with(|| c.detail.clone());
    }
    if !reasons.is_empty() {
        md += "\n## What the peers cannot do\n\n| peer | group | the peer's reason |\n|---|---|---|\n";
        for ((peer, group), reason) in &reasons {
            md += &format!("| {peer} | {group} | {} |\n", reason.replace('|', "/"));
        }
    }
    md += "\n## Policy against each peer's defaults (ECDSA P-256 certificate)\n\n\
           | peer | case | expected | observed | holds |\n|---|---|---|---|---|\n";
    for p in &r.policy {
        md += &format!(
            "| {} | {} | {} | {} | {} |\n",
            p.peer,
            p.case,
            p.expected,
            p.observed.replace('|', "/").replace('\n', " "),
            if p.holds { "yes" } else { "NO" }
        );
    }
    md
}
