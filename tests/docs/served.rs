//! What a running sidecar serves and writes: its `/metrics` families and its log lines,
//! against the pages that list them.

use super::*;

/// Kills the child process when the test ends, however it ends.
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `/metrics` serves, as `(family, type)` without the `mcp_pqtls_` prefix: a server
/// sidecar with the gate (examples/gate.toml), its admin listener asked over HTTP.
pub(crate) fn served_metrics(work: &Workdir) -> BTreeMap<String, String> {
    use std::io::{BufRead, BufReader, Read, Write};

    let child = Command::new(BIN)
        .current_dir(work.dir.path())
        .args(["server", "--config", "examples/gate.toml"])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the server sidecar");
    let mut child = KillOnDrop(child);
    let mut summary = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut summary)
        .unwrap();
    let admin = summary
        .split_once("; admin http://")
        .map(|(_, rest)| rest.split(';').next().unwrap_or(rest).trim().to_owned())
        .unwrap_or_else(|| panic!("no admin address in the start-up line: {summary}"));
    let mut conn = std::net::TcpStream::connect(&admin).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    // The format docs/operations.md names, as Prometheus negotiates it.
    let content_type = response
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default();
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(response.trim_end().ends_with("# EOF"), "{response}");
    response
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE mcp_pqtls_"))
        .filter_map(|l| l.split_once(' '))
        // OpenMetrics names a counter family without the `_total` its samples carry.
        .map(|(name, kind)| match kind.trim() {
            "counter" => (format!("{name}_total"), "counter".to_owned()),
            kind => (name.to_owned(), kind.to_owned()),
        })
        .collect()
}

/// Served metrics against the pages: each family in docs/operations.md's table with its
/// type (the gate's in docs/gate.md's list), and each family of that table served.
pub(crate) fn check_metrics(
    served: &BTreeMap<String, String>,
    operations: &str,
    gate: &str,
) -> Vec<String> {
    let table: BTreeMap<String, String> = operations
        .lines()
        .skip_while(|l| l.trim() != "## Metrics")
        .take_while(|l| !l.starts_with("## Reload"))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('`')?;
            let kind = rest.trim_start_matches(" |").split(" | ").next()?.trim();
            Some((name.to_owned(), kind.to_owned()))
        })
        .collect();
    let gate_listed: BTreeSet<String> = gate
        .lines()
        .skip_while(|l| !l.starts_with("**Metrics**"))
        .take_while(|l| !l.trim().is_empty())
        .flat_map(|l| {
            l.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|m| m.split('{').next().unwrap_or_default().to_owned())
        .filter(|m| m.starts_with("gate_"))
        .collect();
    let mut problems = Vec::new();
    for (name, kind) in served {
        if name.starts_with("gate_") {
            if !gate_listed.contains(name) {
                problems.push(format!(
                    "docs/gate.md: metric `{name}` is served but not listed"
                ));
            }
            continue;
        }
        match table.get(name) {
            Some(k) if k == kind => {}
            Some(k) => problems.push(format!(
                "docs/operations.md: `{name}` is a {kind}, the table says {k}"
            )),
            None => problems.push(format!(
                "docs/operations.md: metric `{name}` ({kind}) is served but not in the table"
            )),
        }
    }
    for name in table.keys().filter(|n| !served.contains_key(*n)) {
        problems.push(format!(
            "docs/operations.md: `{name}` is in the table but not served"
        ));
    }
    for name in gate_listed.iter().filter(|n| !served.contains_key(*n)) {
        problems.push(format!("docs/gate.md: `{name}` is listed but not served"));
    }
    problems
}

/// The text of every source file under `dir`.
pub(crate) fn sources(dir: &Path, into: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The log table of docs/operations.md: each message (the `code` of its second column) is
/// one the code writes.
pub(crate) fn check_log_messages(operations: &str, source: &str) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut n = 0;
    let rows = operations
        .lines()
        .enumerate()
        .skip_while(|(_, l)| l.trim() != "## Logs")
        .take_while(|(_, l)| !l.starts_with("## Admin"))
        .filter(|(_, l)| {
            l.starts_with("| INFO") || l.starts_with("| WARN") || l.starts_with("| ERROR")
        });
    for (i, row) in rows {
        let message = row.split(" | ").nth(1).unwrap_or_default();
        for text in message.split('`').skip(1).step_by(2) {
            // Values quoted in a message (`pq-preferred`) are not messages.
            if text.len() < 8 || !text.starts_with(char::is_uppercase) {
                continue;
            }
            n += 1;
            if !source.contains(&format!("\"{text}")) {
                problems.push(format!(
                    "docs/operations.md:{}: no log line `{text}` in src/",
                    i + 1
                ));
            }
        }
    }
    (n, problems)
}
