//! `approvals list|show|approve|deny`: the admin listener's `/approvals` API from a terminal.
//! Every string shown in a table came from a client or a model: control characters are
//! escaped, so that arguments cannot rewrite the approver's terminal.

use std::process::ExitCode;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use mcp_pqtls::config::ClientTlsOptions;

use super::args::{AdminArgs, ApprovalsCommand, ProbeFormat};
use super::CliError;

/// The largest answer read from the admin listener.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Runs `mcp-pqtls approvals ...`.
pub(crate) async fn run(command: ApprovalsCommand) -> Result<ExitCode, CliError> {
    match command {
        ApprovalsCommand::List { admin, format } => {
            let answer = call(&admin, Method::GET, "/approvals", None).await?;
            let calls = answer
                .get("approvals")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            match resolve(format) {
                ProbeFormat::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
                ProbeFormat::Table => print!("{}", list_table(&calls)),
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Show { id, admin, format } => {
            let call = call(
                &admin,
                Method::GET,
                &format!("/approvals/{}", path_id(&id)?),
                None,
            )
            .await?;
            match resolve(format) {
                ProbeFormat::Json => println!("{}", serde_json::to_string_pretty(&call)?),
                ProbeFormat::Table => print!("{}", show_table(&call)),
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Approve { id, reason, admin } => {
            decide(&admin, &id, "approve", reason).await
        }
        ApprovalsCommand::Deny { id, reason, admin } => decide(&admin, &id, "deny", reason).await,
    }
}

async fn decide(
    admin: &AdminArgs,
    id: &str,
    verb: &str,
    reason: Option<String>,
) -> Result<ExitCode, CliError> {
    let body = json!({ "reason": reason });
    let path = format!("/approvals/{}/{verb}", path_id(id)?);
    let answer = call(admin, Method::POST, &path, Some(body)).await?;
    println!(
        "{} {} (tool {}) as {}",
        answer
            .get("decision")
            .and_then(Value::as_str)
            .unwrap_or(verb),
        clean(id),
        clean(answer.get("tool").and_then(Value::as_str).unwrap_or("?")),
        clean(
            answer
                .get("approver")
                .and_then(Value::as_str)
                .unwrap_or("?")
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// An id as a path segment: ids are hex, and anything else would change the path.
fn path_id(id: &str) -> Result<&str, CliError> {
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Ok(id);
    }
    Err(CliError::Usage(anyhow!(
        "`{}` is not an approval id (ids are hex, as `approvals list` prints them)",
        clean(id)
    )))
}

fn resolve(format: Option<ProbeFormat>) -> ProbeFormat {
    format.unwrap_or(if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        ProbeFormat::Table
    } else {
        ProbeFormat::Json
    })
}

/// One request to the admin listener; an answer other than 200 is the command's failure,
/// with the listener's reason.
async fn call(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, CliError> {
    let token = match (&admin.token, &admin.token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the token file {}", f.display()))
                .map_err(CliError::Usage)?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let base = admin.admin.to_string();
    let url: http::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .with_context(|| format!("--admin {base}: not a URL"))
        .map_err(CliError::Usage)?;
    let connector = ClientTlsOptions {
        ca: admin.ca.clone(),
        client_cert: admin.client_cert.clone(),
        client_key: admin.client_key.clone(),
        ..ClientTlsOptions::default()
    }
    .build()
    .map_err(CliError::usage)?;
    let mut req = Request::builder()
        .method(method)
        .uri(url.clone())
        .header(header::ACCEPT, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let req = req
        .body(Full::new(body))
        .context("the request cannot be built")
        .map_err(CliError::Usage)?;
    let answer = mcp_pqtls::request(&connector, req, MAX_ANSWER_BYTES)
        .await
        .with_context(|| format!("{url}"))
        .map_err(CliError::Failed)?;
    let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if answer.status != StatusCode::OK {
        let why = value
            .get("error")
            .and_then(Value::as_str)
            .map(clean)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(300)
                    .collect()
            });
        return Err(CliError::Failed(anyhow!(
            "{url}: HTTP {}: {why}",
            answer.status
        )));
    }
    Ok(value)
}

/// `text` with its control characters escaped (`\u{1b}`), and the characters that change how
/// text reads without showing (bidi overrides and isolates, zero-width marks), for a terminal.
fn clean(text: &str) -> String {
    let hidden = |c: char| matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}');
    text.chars()
        .map(|c| match c {
            c if c.is_control() || hidden(c) => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for key in path {
        v = &v[*key];
    }
    v.as_str().unwrap_or("")
}

fn caller(call: &Value) -> String {
    let c = &call["caller"];
    let mut parts = Vec::new();
    if let Some(id) = c["identity"].as_str() {
        parts.push(format!("id:{id}"));
    }
    if let Some(sub) = c["subject"].as_str() {
        parts.push(format!("sub:{sub}"));
    }
    parts.push(str_at(c, &["addr"]).to_owned());
    clean(&parts.join(" "))
}

fn tls(call: &Value) -> String {
    let t = &call["tls"];
    let group = t["group"].as_str().unwrap_or("no TLS");
    let kind = if t["pq"].as_bool() == Some(true) {
        "pq"
    } else {
        "classical"
    };
    clean(&format!("{group} ({kind})"))
}

fn secs(call: &Value, key: &str) -> String {
    format!("{}s", call[key].as_u64().unwrap_or(0) / 1000)
}

fn list_table(calls: &[Value]) -> String {
    if calls.is_empty() {
        return "no calls are waiting for approval\n".to_owned();
    }
    let rows: Vec<[String; 7]> = calls
        .iter()
        .map(|c| {
            let args = clean(&c["arguments"].to_string());
            let args = match args.char_indices().nth(60) {
                Some((i, _)) => format!("{}…", &args[..i]),
                None => args,
            };
            [
                clean(str_at(c, &["id"])),
                clean(str_at(c, &["tool"])),
                clean(str_at(c, &["rule"])),
                caller(c),
                tls(c),
                format!("{} / {}", secs(c, "age_ms"), secs(c, "expires_in_ms")),
                args,
            ]
        })
        .collect();
    let head = [
        "ID",
        "TOOL",
        "RULE",
        "CALLER",
        "TLS",
        "WAITED / LEFT",
        "ARGUMENTS",
    ];
    let mut widths = head.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.truncate(out.trim_end().len());
        out + "\n"
    };
    let mut out = line(&head.map(str::to_owned));
    for r in &rows {
        out += &line(r);
    }
    out
}

fn show_table(call: &Value) -> String {
    let pretty = serde_json::to_string_pretty(&call["arguments"]).unwrap_or_default();
    let client = &call["caller"];
    let mut out = String::new();
    for (k, v) in [
        ("id", clean(str_at(call, &["id"]))),
        ("tool", clean(str_at(call, &["tool"]))),
        ("rule", clean(str_at(call, &["rule"]))),
        (
            "approvers",
            clean(
                &call["approvers"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            ),
        ),
        ("caller", caller(call)),
        (
            "client",
            clean(&format!(
                "{} (MCP {})",
                client["client_name"]
                    .as_str()
                    .unwrap_or("no clientInfo name"),
                client["protocol_version"].as_str().unwrap_or("?")
            )),
        ),
        (
            "tls",
            clean(&format!(
                "{} {} {}",
                tls(call),
                str_at(call, &["tls", "version"]),
                str_at(call, &["tls", "cipher_suite"])
            )),
        ),
        ("waited", secs(call, "age_ms")),
        ("expires in", secs(call, "expires_in_ms")),
        ("digest", clean(str_at(call, &["arguments_digest"]))),
    ] {
        out += &format!("{k:<11} {v}\n");
    }
    out += "arguments\n";
    for l in pretty.lines() {
        out += &format!("  {}\n", clean(l));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_escape_what_a_model_wrote() {
        let call = json!({
            "id": "ab12", "tool": "delete\u{1b}[2Jfile", "rule": "r",
            "arguments": {"path": "/x\u{1b}]0;pwned\u{7}", "shown": "/etc/\u{202e}txt.dwssap"},
            "caller": {"subject": "alice", "addr": "127.0.0.1:1"},
            "tls": {"group": "X25519MLKEM768", "pq": true},
            "age_ms": 2000, "expires_in_ms": 298000
        });
        let list = list_table(std::slice::from_ref(&call));
        let show = show_table(&call);
        for out in [&list, &show] {
            assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        }
        assert!(
            list.contains("ab12") && list.contains("X25519MLKEM768 (pq)"),
            "{list}"
        );
        assert!(show.contains("\\u{1b}[2J"), "{show}");
        assert!(
            show.contains("\\u{202e}") && !show.contains('\u{202e}'),
            "{show}"
        );
    }

    #[test]
    fn ids_are_path_segments() {
        assert!(path_id("0af3").is_ok());
        for bad in ["", "../metrics", "a/approve", "a?b"] {
            assert!(path_id(bad).is_err(), "{bad}");
        }
    }
}
