//! Short runs of the load harness (`benches/load/*.sh`), so that it cannot rot. The runs
//! measure nothing worth keeping (debug build, a second or two, a shared machine) and assert
//! no timing: only that every run did its work and the tables came out. What they do assert
//! is function: no SSE event lost through the tunnel, every idle connection opened.

mod support;

use std::process::Command;
use std::sync::Once;

use support::process::install;

/// Installs every peer the load scripts use (OpenSSL 3.5 for capacity.sh, nginx for
/// sidecar.sh), with no timeout, before any script starts: a first OpenSSL build takes minutes
/// and both cores, so it neither runs under a script's timeout nor beside a timed run. Each
/// test calls this first; the first caller installs, the others wait for it.
fn peers() {
    static PEERS: Once = Once::new();
    PEERS.call_once(|| {
        install("interop/install-openssl.sh");
        install("benches/load/install-nginx.sh");
        install("interop/install-fleet.sh");
    });
}

/// A load script under `timeout`, so that a hang fails the test instead of stalling CI. Only
/// the measured part runs under it: the peers are installed already (`peers`), so the
/// script's own call of an install script returns at once.
fn script(name: &str) -> Command {
    peers();
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "bash"]).arg(format!(
        "{}/benches/load/{name}",
        env!("CARGO_MANIFEST_DIR")
    ));
    cmd
}

#[test]
fn capacity_harness_runs() {
    let out = script("capacity.sh")
        .args(["1", "1"])
        .env("CAPACITY_BIN", env!("CARGO_BIN_EXE_mcp-pqtls"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for group in ["X25519MLKEM768", "X25519"] {
        for server in ["mcp-pqtls reflect", "OpenSSL 3.5 s_server"] {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&format!("| {group} | {server} |")))
                .unwrap_or_else(|| panic!("no row for {group} {server}:\n{stdout}\n{stderr}"));
            let rate: f64 = row.split('|').nth(3).unwrap().trim().parse().unwrap();
            assert!(rate > 0.0, "no handshakes completed: {row}\n{stderr}");
        }
    }
    assert!(stdout.contains("Capacity ratios"), "{stdout}");
}

#[test]
fn wire_harness_runs() {
    let out = script("wire.sh")
        .env("WIRE_BIN", env!("CARGO_BIN_EXE_mcp-pqtls"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One row per catalogue group, sizes only: a pq ClientHello carries a ML-KEM key share.
    let bytes = |group: &str| -> Vec<usize> {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {group} |")))
            .unwrap_or_else(|| panic!("no row for {group}:\n{stdout}"));
        row.split('|')
            .skip(2)
            .take(3)
            .map(|c| c.trim().parse().unwrap())
            .collect()
    };
    for g in mcp_pqtls::Group::ALL {
        assert_eq!(bytes(g.name()).len(), 3);
    }
    assert!(bytes("X25519MLKEM768")[0] >= bytes("X25519")[0] + 1184);
}

/// The cells of the table row that starts with `prefix`.
fn row<'a>(stdout: &'a str, prefix: &str) -> Vec<&'a str> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no row {prefix:?}:\n{stdout}"));
    line.split('|').skip(1).map(str::trim).collect()
}

#[test]
fn sidecar_harness_runs() {
    let out = script("sidecar.sh")
        .args(["1", "1", "2"])
        .env("SIDECAR_BIN", env!("CARGO_BIN_EXE_mcp-pqtls"))
        // 300 streams: past hyper's default of 200 h2 streams per connection, which once
        // left the 201st SSE stream through the tunnel waiting forever.
        .env("SIDECAR_SSE_STREAMS", "1 300")
        .env("SIDECAR_SSE_EVENTS", "3")
        .env("SIDECAR_IDLE", "50")
        .env("SIDECAR_SCALING", "1 4")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for path in [
        "direct to the upstream",
        "mcp-pqtls server",
        "full tunnel: mcp-pqtls client + server",
        "nginx",
        "mcp-pqtls server, tools/list",
        "… + gate with [tools]: tools/list judged",
        "… + gate with [tools]: tools/call arguments validated",
        "mcp-pqtls server + MCP gate, rate limit charged in Redis",
        "… + a require-approval rule",
    ] {
        let cells = row(&stdout, &format!("| {path}"));
        let rps: f64 = cells[1].parse().unwrap();
        assert!(rps > 0.0, "no requests answered via {path}\n{stderr}");
    }
    for streams in ["1", "300"] {
        for path in ["direct", "full tunnel (X25519MLKEM768)"] {
            let cells = row(&stdout, &format!("| {path} | {streams} |"));
            let expected = streams.parse::<u64>().unwrap() * 3;
            assert_eq!(
                cells[3],
                expected.to_string(),
                "events received: {cells:?}\n{stderr}"
            );
            assert_eq!(cells[4], "0", "events lost: {cells:?}\n{stderr}");
        }
    }
    for server in ["mcp-pqtls server", "nginx"] {
        let cells: Vec<_> = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("| {server}")) && l.contains(" of "))
            .collect();
        assert_eq!(cells.len(), 1, "{stdout}");
        assert!(cells[0].contains("| 50 of 50 |"), "{}", cells[0]);
    }
    for clients in ["1", "4"] {
        let cells = row(&stdout, &format!("| {clients} |"));
        let rate: f64 = cells[1].parse().unwrap();
        assert!(rate > 0.0, "no handshakes with {clients} clients\n{stderr}");
    }
}
