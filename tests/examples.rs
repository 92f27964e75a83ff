//! The library's on-ramp, run as a user runs it: `examples/rmcp_server.rs` (rmcp in axum,
//! served over PQ TLS by one call) and `examples/rmcp_client.rs` (rmcp's reqwest transport
//! with our pq-required rustls config), on 127.0.0.1 with a dev PKI made by the crate.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mcp_pqtls::certs::{write_dev_pki, KeyAlg};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Builds both examples with the cargo running this test (already compiled by then unless
/// only this test target was asked for) and returns the directory holding them.
fn build_examples() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--example",
            "rmcp_server",
            "--example",
            "rmcp_client",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --example failed");
    // target/debug/deps/examples-HASH -> target/debug/examples
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile directory")
        .join("examples")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rmcp_client_calls_the_rmcp_server_over_x25519mlkem768() {
    let examples = build_examples();
    let pki = tempfile::tempdir().unwrap();
    write_dev_pki(pki.path(), KeyAlg::EcdsaP256).unwrap();

    let mut server = Command::new(examples.join("rmcp_server"))
        .arg(pki.path().join("server.pem"))
        .arg(pki.path().join("server.key"))
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rmcp_server");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let listening = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("server bound in time")
        .unwrap()
        .expect("server printed its address");
    let addr = listening
        .strip_prefix("listening on https://")
        .and_then(|rest| rest.strip_suffix("/mcp"))
        .unwrap_or_else(|| panic!("unexpected first line: {listening}"));
    let port = addr.rsplit(':').next().unwrap();

    let client = Command::new(examples.join("rmcp_client"))
        .arg(format!("https://localhost:{port}/mcp"))
        .arg(pki.path().join("ca.pem"))
        .kill_on_drop(true)
        .output();
    let client = tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .expect("client done in time")
        .expect("run rmcp_client");
    let stdout = String::from_utf8_lossy(&client.stdout);
    let stderr = String::from_utf8_lossy(&client.stderr);
    assert!(client.status.success(), "client failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains("server saw: group=X25519MLKEM768 pq=true"),
        "client printed: {stdout}\n{stderr}"
    );
    assert!(stdout.contains("offering: X25519MLKEM768"), "{stdout}");

    server.kill().await.unwrap();
}
