//! Short runs of the load harness (`benches/load/*.sh`), so that it cannot rot. The capacity run
//! measures nothing worth keeping (debug build, one second, a shared machine) and asserts no
//! timing: only that every run completed handshakes and the table came out.

use std::process::Command;

/// A load script under `timeout`, so that a hang fails the test instead of stalling CI.
fn script(name: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "bash"]).arg(format!(
        "{}/benches/load/{name}",
        env!("CARGO_MANIFEST_DIR")
    ));
    cmd
}

#[test]
fn capacity_harness_runs() {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/load/capacity.sh"
        ))
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
