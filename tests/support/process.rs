//! The `mcp-pqtls` binary as a child process: its startup line and its log; install scripts.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::upstream::GUARD;
use super::KillOnDrop;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mcp-pqtls"))
}

/// Runs an install script of the repo (`interop/install-openssl.sh`, ...) to completion and
/// returns the path on the last line of its stdout. Never under a timeout: a first install
/// builds for minutes (OpenSSL: 2-3 on 2 cores, longer beside other tests), and a timeout that
/// killed it would leave the next run to start over. The scripts serialize on their own lock,
/// so whichever test comes first installs and the others wait, then find it installed. Anything
/// that must not hang (a load script) runs under its timeout after this has returned.
pub fn install(script: &str) -> PathBuf {
    let (status, last) = run_install(script);
    assert!(status.success(), "{script} failed: {status}");
    let installed = last.unwrap_or_default();
    assert!(
        installed.exists(),
        "{script} printed {installed:?}, which does not exist"
    );
    installed
}

/// As [`install`], for a peer a test can do without outside CI: `None` (the test is skipped,
/// saying so) when the script fails here, a panic when it fails in CI (`CI` set).
pub fn install_or_skip(script: &str, what: &str) -> Option<PathBuf> {
    match run_install(script) {
        (status, Some(p)) if status.success() && p.exists() => Some(p),
        _ if std::env::var_os("CI").is_some() => panic!("{script} failed in CI"),
        _ => {
            eprintln!("SKIPPED: {what} could not be installed (see above)");
            None
        }
    }
}

/// Runs an install script to completion: its status and the last line of its stdout.
fn run_install(script: &str) -> (std::process::ExitStatus, Option<PathBuf>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = Command::new("bash")
        .arg(&path)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("bash {}: {e}", path.display()));
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()));
    (out.status, last)
}

/// Replaces `path` with `text` by rename, as a deploy tool does: a watcher never reads half a
/// file.
pub fn install_config(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A running sidecar process: its port, its admin port, and its log lines so far.
pub struct Proc {
    pub child: KillOnDrop,
    pub port: u16,
    pub admin: Option<u16>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// The server sidecar on 127.0.0.1 (listener and admin listener on free ports) in front
    /// of `upstream`, with the identity in `pki_dir` (`server.pem`, `server.key`), plus `extra`.
    pub fn server_sidecar(pki_dir: &Path, upstream: &str, extra: &[&str]) -> Self {
        let (cert, key) = (pki_dir.join("server.pem"), pki_dir.join("server.key"));
        let mut args = vec![
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    /// The client sidecar on 127.0.0.1 (a free port) in front of `upstream` (an `https://`
    /// URL), trusting the CA in `ca`.
    pub fn client_sidecar(ca: &Path, upstream: &str) -> Self {
        Self::spawn(&[
            "client",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--ca",
            ca.to_str().unwrap(),
        ])
    }

    pub fn spawn(args: &[&str]) -> Self {
        let mut cmd = bin();
        cmd.args(args);
        Self::spawn_command(cmd)
    }

    /// As [`Proc::spawn`], for a sidecar that is not the binary under test (an installed
    /// package's, run as its user): `cmd` holds the program and its arguments.
    pub fn spawn_command(mut cmd: Command) -> Self {
        let mut child = KillOnDrop(
            cmd.env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.0.stderr.take().unwrap());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
        let mut summary = String::new();
        stdout.read_line(&mut summary).unwrap();
        let port_after = |marker: &str| -> Option<u16> {
            let rest = summary.split(marker).nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        let port = port_after("listening on https://127.0.0.1:")
            .or_else(|| port_after("listening on http://127.0.0.1:"))
            .unwrap_or_else(|| {
                panic!(
                    "no listen address in {summary:?}; log: {:?}",
                    log.lock().unwrap()
                )
            });
        let admin = port_after("admin http://127.0.0.1:")
            .or_else(|| port_after("admin https://127.0.0.1:"));
        Self {
            child,
            port,
            admin,
            log,
        }
    }

    /// Waits until a log line contains every one of `needles`.
    pub fn wait_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + GUARD;
        loop {
            if let Some(l) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?}; log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }
}
