//! A minimal MCP server for the demo: Streamable HTTP with JSON responses, tools `echo` and
//! `tls_info` (the `X-MCP-PQTLS-*` headers its request arrived with). Not a general MCP
//! implementation — just enough protocol to show what crosses the tunnel.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::proxy::headers::TLS_INFO_PREFIX;

/// Serves the echo MCP server on `listener` (plain HTTP/1.1) until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let svc =
            hyper::service::service_fn(|req| async { Ok::<_, Infallible>(handle(req).await) });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc),
        );
    }
}

async fn handle(req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != http::Method::POST {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let tls: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .filter(|(n, _)| n.as_str().starts_with(TLS_INFO_PREFIX))
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), Value::String(v))
        })
        .collect();
    let Ok(body) = req.into_body().collect().await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Some(id) = msg.get("id").cloned() else {
        // A notification (e.g. notifications/initialized): accepted, no body.
        return status(StatusCode::ACCEPTED);
    };
    let result = match msg["method"].as_str().unwrap_or_default() {
        "initialize" => json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "mcp-pqtls-echo", "version": env!("CARGO_PKG_VERSION")},
        }),
        "tools/list" => json!({"tools": [
            {"name": "echo", "description": "Returns its text.",
             "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
            {"name": "tls_info", "description": "The TLS-info headers this request arrived with.",
             "inputSchema": {"type": "object"}},
        ]}),
        "tools/call" => match msg["params"]["name"].as_str() {
            Some("echo") => text(msg["params"]["arguments"]["text"].as_str().unwrap_or("")),
            Some("tls_info") => text(&Value::Object(tls).to_string()),
            _ => {
                return rpc(json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32602, "message": "unknown tool"}}))
            }
        },
        _ => {
            return rpc(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": "method not found"}}))
        }
    };
    rpc(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn text(s: &str) -> Value {
    json!({"content": [{"type": "text", "text": s}]})
}

fn rpc(v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        "mcp-session-id",
        http::HeaderValue::from_static("demo-session"),
    );
    r
}

fn status(s: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = s;
    r
}
