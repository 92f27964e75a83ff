//! `demo`: the whole tunnel on one machine in one command. Makes dev certificates, starts a
//! small MCP echo server (plain HTTP), a `pq-preferred` server sidecar in front of it and a
//! `pq-required` client sidecar beside "the MCP client" (this function), sends MCP
//! `initialize`, `tools/list` and `tools/call` through, and prints what each hop negotiated.

mod echo;

use std::io::Write;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::certs::{write_dev_pki, KeyAlg};
use crate::config::{Mode, SidecarConfig};
use crate::sidecar::Started;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the demo, writing what each hop saw to `out`.
pub async fn run(key_alg: KeyAlg, out: &mut (dyn Write + Send)) -> Result<(), BoxError> {
    // Private (0700) and removed on drop, whichever way the demo ends.
    let tmp = tempfile::Builder::new()
        .prefix("mcp-pqtls-demo-")
        .tempdir()?;
    let dir = tmp.path();
    write_dev_pki(dir, key_alg)?;
    writeln!(out, "dev certificates ({key_alg}) in {}", dir.display())?;

    let mcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mcp_addr = mcp.local_addr()?;
    let echo = tokio::spawn(echo::serve(mcp));
    writeln!(out, "MCP echo server (plain HTTP) on http://{mcp_addr}/mcp")?;

    let any = Some("127.0.0.1:0".parse()?);
    let (server, stop_server) = start(
        Mode::Server,
        SidecarConfig {
            listen: any,
            upstream: Some(format!("http://{mcp_addr}")),
            cert: Some(dir.join("server.pem")),
            key: Some(dir.join("server.key")),
            ..SidecarConfig::default()
        },
    )
    .await?;
    writeln!(out, "{}", server.summary)?;
    let (client, stop_client) = start(
        Mode::Client,
        SidecarConfig {
            listen: any,
            upstream: Some(format!("https://localhost:{}", server.listen.port())),
            ca: Some(dir.join("ca.pem")),
            ..SidecarConfig::default()
        },
    )
    .await?;
    writeln!(out, "{}", client.summary)?;

    let endpoint = format!("http://{}/mcp", client.listen);
    writeln!(out, "\nMCP client -> {endpoint}")?;
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut hop = None;
    let mut server_saw = Value::Null;
    for (id, method, params) in [
        (
            Some(1),
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "mcp-pqtls-demo", "version": env!("CARGO_PKG_VERSION")}}),
        ),
        (None, "notifications/initialized", json!({})),
        (Some(2), "tools/list", json!({})),
        (
            Some(3),
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hello over post-quantum TLS"}}),
        ),
        (
            Some(4),
            "tools/call",
            json!({"name": "tls_info", "arguments": {}}),
        ),
    ] {
        let mut msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        if let Some(id) = id {
            msg["id"] = id.into();
        }
        let req = http::Request::post(&endpoint)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(Full::new(Bytes::from(msg.to_string())))?;
        let res = http.request(req).await?;
        let status = res.status();
        let tls: Vec<(String, String)> = res
            .headers()
            .iter()
            .filter(|(n, _)| {
                n.as_str()
                    .starts_with(crate::proxy::headers::TLS_INFO_PREFIX)
            })
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        hop.get_or_insert(tls);
        let body = res.into_body().collect().await?.to_bytes();
        let summary = match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v["result"]["tools"].is_array() => format!(
                "tools: {}",
                v["result"]["tools"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["name"].as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Ok(v) if v["result"]["content"].is_array() => {
                let text = v["result"]["content"][0]["text"].as_str().unwrap_or("");
                if let Ok(seen) = serde_json::from_str::<Value>(text) {
                    server_saw = seen;
                    "(the headers the MCP server received, below)".to_owned()
                } else {
                    format!("{text:?}")
                }
            }
            Ok(v) if v["result"]["serverInfo"].is_object() => {
                format!("server {}", v["result"]["serverInfo"]["name"])
            }
            Ok(v) => v.to_string(),
            Err(_) => String::new(),
        };
        writeln!(out, "  {method:<27} HTTP {} {summary}", status.as_u16())?;
        if !(status.is_success()) {
            return Err(format!(
                "{method}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
    }

    writeln!(
        out,
        "\nhop 1  MCP client -> client sidecar: plain HTTP on loopback"
    )?;
    writeln!(out, "hop 2  client sidecar -> server sidecar: TLS, as the client sidecar reports it (response headers):")?;
    for (name, value) in hop.unwrap_or_default() {
        writeln!(out, "         {name}: {value}")?;
    }
    writeln!(
        out,
        "       ... and as the server sidecar announced it to the MCP server (request headers):"
    )?;
    if let Value::Object(seen) = &server_saw {
        for (name, value) in seen {
            writeln!(
                out,
                "         {name}: {}",
                value.as_str().unwrap_or_default()
            )?;
        }
    }
    writeln!(
        out,
        "hop 3  server sidecar -> MCP server: plain HTTP on loopback"
    )?;

    let _ = stop_client.send(());
    let _ = stop_server.send(());
    echo.abort();
    Ok(())
}

/// Starts a sidecar in this process; returns what it bound and its stop switch.
async fn start(
    mode: Mode,
    config: SidecarConfig,
) -> Result<(Started, tokio::sync::oneshot::Sender<()>), BoxError> {
    let sidecar = config.resolve(mode)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(sidecar.run(
        async {
            let _ = stopped.await;
        },
        move |s| {
            let _ = tx.send(s.clone());
        },
    ));
    Ok((rx.await?, stop))
}
