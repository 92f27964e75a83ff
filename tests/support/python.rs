//! The official Python MCP SDK as a test peer: its venv (installed by
//! `interop/install-python-mcp.sh` when missing), tests/mcp/server.py as an upstream and
//! tests/mcp/gate_client.py as a client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use super::KillOnDrop;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, installing the SDK if needed. `None` (test skipped) only outside CI.
pub fn python() -> Option<&'static PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            super::process::install_or_skip("interop/install-python-mcp.sh", "the Python MCP SDK")
        })
        .as_ref()
}

/// The SDK's server on 127.0.0.1, with its port.
pub fn python_server(python: &Path, transport: &str) -> (KillOnDrop, u16) {
    python_server_with(python, transport, &[])
}

/// As [`python_server`], with more server.py flags.
pub fn python_server_with(python: &Path, transport: &str, extra: &[&str]) -> (KillOnDrop, u16) {
    let mut child = KillOnDrop(
        Command::new(python)
            .arg(repo().join("tests/mcp/server.py"))
            .args(["--transport", transport])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening on 127.0.0.1:")
        .unwrap_or_else(|| panic!("server.py said {line:?}"))
        .parse()
        .unwrap();
    (child, port)
}

/// Runs tests/mcp/gate_client.py against `url` under `protocol`; returns its JSON report.
pub fn gate_client(
    python: &Path,
    url: &str,
    protocol: &str,
    lists: u32,
    calls: &[(&str, Value)],
) -> Value {
    gate_client_with(python, url, protocol, lists, calls, &[])
}

/// As [`gate_client`], with more gate_client.py flags (`--bearer`, `--leave-after`...).
pub fn gate_client_with(
    python: &Path,
    url: &str,
    protocol: &str,
    lists: u32,
    calls: &[(&str, Value)],
    extra: &[&str],
) -> Value {
    report(gate_client_output(
        python, url, protocol, lists, calls, extra,
    ))
}

/// As [`gate_client_with`], whatever the run came to (for a client whose server goes away).
pub fn gate_client_output(
    python: &Path,
    url: &str,
    protocol: &str,
    lists: u32,
    calls: &[(&str, Value)],
    extra: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("tests/mcp/gate_client.py"))
        .arg(url)
        .args(["--protocol", protocol, "--list", &lists.to_string()])
        .args(extra);
    for (name, arguments) in calls {
        cmd.arg("--call").arg(name).arg(arguments.to_string());
    }
    cmd.output().unwrap()
}

/// gate_client.py in a thread, as the agent (`--bearer`), making one call that a rule holds
/// until the test decides it: its run.
pub fn held_call_in_background(
    python: &Path,
    url: String,
    protocol: &'static str,
    tool: &'static str,
    arguments: Value,
    extra: &'static [&'static str],
) -> std::thread::JoinHandle<std::process::Output> {
    let python = python.to_owned();
    std::thread::spawn(move || {
        let agent = super::jwt::token("agent");
        let mut flags = vec!["--bearer", &agent, "--timeout", "60"];
        flags.extend_from_slice(extra);
        gate_client_output(&python, &url, protocol, 1, &[(tool, arguments)], &flags)
    })
}

/// A finished gate_client.py run's report (it must have succeeded).
pub fn report(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "gate_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
