//! `tools/list` from a live MCP server, as `mcp-pqtls tools pin` and `tools diff` need it:
//! MCP 2026-07-28 first (stateless: `_meta` and `Mcp-Method`, no `initialize`), and, when the
//! server does not speak it, 2025-11-25 (`initialize`, `Mcp-Session-Id`). Every page of a
//! paginated list is read; a response may be JSON or an SSE stream.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use serde_json::{json, Value};

use super::{ToolDefinition, ToolError};
use crate::connect::post_limited;
use crate::sse::EventParser;
use crate::tls::{ClientError, PqConnector};

/// The protocol revisions tried, newest first.
pub const PROTOCOLS: [&str; 2] = ["2026-07-28", "2025-11-25"];

/// A response larger than this is refused as it arrives (a hostile server cannot fill
/// memory).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Pages read at most: a server whose `nextCursor` never ends cannot keep us forever.
const MAX_PAGES: usize = 1000;

/// How long one request may take, connection and whole response included: a server that
/// never answers (or never ends its SSE stream) cannot hold the command.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The tools a server lists, and the protocol revision it listed them under.
#[derive(Debug)]
#[non_exhaustive]
pub struct Listed {
    /// `2026-07-28` or `2025-11-25`.
    pub protocol: &'static str,
    /// Every tool, in the order listed.
    pub tools: Vec<ToolDefinition>,
}

/// Why the tools could not be listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// The request failed (connection, TLS, HTTP).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server answered with an HTTP status other than success.
    #[error("{method}: HTTP {status}: {body}")]
    Status {
        /// The JSON-RPC method.
        method: &'static str,
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// The server answered with a JSON-RPC error.
    #[error("{method}: JSON-RPC error {code}: {message}")]
    Rpc {
        /// The JSON-RPC method.
        method: &'static str,
        /// `error.code`.
        code: i64,
        /// `error.message`.
        message: String,
    },
    /// The answer carried no JSON-RPC response to our request.
    #[error("{method}: no JSON-RPC response in the answer")]
    NoResponse {
        /// The JSON-RPC method.
        method: &'static str,
    },
    /// The list itself is not usable.
    #[error(transparent)]
    Tools(#[from] ToolError),
    /// No complete answer within the request timeout.
    #[error("{method}: no complete answer within {after:?}")]
    Timeout {
        /// The JSON-RPC method.
        method: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// `nextCursor` did not end.
    #[error("tools/list: more than {MAX_PAGES} pages")]
    TooManyPages,
}

/// Time a whole listing gets by default (every page, and the session of the fallback).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// Lists the tools of the MCP server at `url` (its Streamable HTTP endpoint), within
/// [`DEFAULT_DEADLINE`].
pub async fn list_tools(connector: &PqConnector, url: &Uri) -> Result<Listed, ListError> {
    list_tools_within(connector, url, DEFAULT_DEADLINE).await
}

/// As [`list_tools`], the whole listing within `deadline` (each request also within 30 s):
/// a server that trickles pages cannot hold the caller longer.
pub async fn list_tools_within(
    connector: &PqConnector,
    url: &Uri,
    deadline: Duration,
) -> Result<Listed, ListError> {
    tokio::time::timeout(deadline, list(connector, url))
        .await
        .map_err(|_| ListError::Timeout {
            method: "tools/list",
            after: deadline,
        })?
}

async fn list(connector: &PqConnector, url: &Uri) -> Result<Listed, ListError> {
    match list_under(connector, url, PROTOCOLS[0], None).await {
        Ok(tools) => Ok(Listed {
            protocol: PROTOCOLS[0],
            tools,
        }),
        // A legacy server refuses a request without a session (400), or the version.
        Err(ListError::Status { .. } | ListError::Rpc { .. }) => {
            let session = initialize(connector, url).await?;
            let tools = list_under(connector, url, PROTOCOLS[1], session.as_ref()).await?;
            Ok(Listed {
                protocol: PROTOCOLS[1],
                tools,
            })
        }
        Err(e) => Err(e),
    }
}

async fn list_under(
    connector: &PqConnector,
    url: &Uri,
    protocol: &'static str,
    session: Option<&HeaderValue>,
) -> Result<Vec<ToolDefinition>, ListError> {
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let mut params = json!({});
        if protocol == PROTOCOLS[0] {
            params["_meta"] = meta();
        }
        if let Some(c) = &cursor {
            params["cursor"] = c.clone().into();
        }
        let result = call(
            connector,
            url,
            protocol,
            session,
            page as u64 + 2,
            "tools/list",
            params,
        )
        .await?;
        let listed = ToolDefinition::from_list_result(&result)?;
        tools.extend(listed);
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => return Ok(tools),
        }
    }
    Err(ListError::TooManyPages)
}

/// `initialize` then `notifications/initialized` (2025-11-25); the session id, if the server
/// gave one.
async fn initialize(connector: &PqConnector, url: &Uri) -> Result<Option<HeaderValue>, ListError> {
    let params = json!({
        "protocolVersion": PROTOCOLS[1],
        "capabilities": {},
        "clientInfo": client_info(),
    });
    let (_, session) = exchange(
        connector,
        url,
        PROTOCOLS[1],
        None,
        Some(1),
        "initialize",
        params,
    )
    .await?;
    exchange(
        connector,
        url,
        PROTOCOLS[1],
        session.as_ref(),
        None,
        "notifications/initialized",
        json!({}),
    )
    .await?;
    Ok(session)
}

async fn call(
    connector: &PqConnector,
    url: &Uri,
    protocol: &'static str,
    session: Option<&HeaderValue>,
    id: u64,
    method: &'static str,
    params: Value,
) -> Result<Value, ListError> {
    let (result, _) = exchange(connector, url, protocol, session, Some(id), method, params).await?;
    Ok(result)
}

/// One JSON-RPC message (a request with `id`, or a notification) and its answer: the
/// response's `result` (Null for a notification) and the session id the server set.
async fn exchange(
    connector: &PqConnector,
    url: &Uri,
    protocol: &'static str,
    session: Option<&HeaderValue>,
    id: Option<u64>,
    method: &'static str,
    params: Value,
) -> Result<(Value, Option<HeaderValue>), ListError> {
    let mut message = json!({"jsonrpc": "2.0", "method": method, "params": params});
    if let Some(id) = id {
        message["id"] = id.into();
    }
    let mut headers = HeaderMap::new();
    let fixed = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", protocol),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert("mcp-method", HeaderValue::from_static(method));
    if let Some(s) = session {
        headers.insert("mcp-session-id", s.clone());
    }
    let body = Bytes::from(message.to_string());
    let answer = tokio::time::timeout(
        REQUEST_TIMEOUT,
        post_limited(connector, url.clone(), headers, body, MAX_RESPONSE_BYTES),
    )
    .await
    .map_err(|_| ListError::Timeout {
        method,
        after: REQUEST_TIMEOUT,
    })??;
    let session = answer.headers.get("mcp-session-id").cloned();
    let Some(id) = id else {
        return if answer.status.is_success() {
            Ok((Value::Null, session))
        } else {
            Err(status_error(method, answer.status, &answer.body))
        };
    };
    let response = response_to(id, &answer.headers, &answer.body);
    match response {
        Some(r) => {
            if let Some(error) = r.get("error") {
                return Err(ListError::Rpc {
                    method,
                    code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
            if !answer.status.is_success() {
                return Err(status_error(method, answer.status, &answer.body));
            }
            Ok((r.get("result").cloned().unwrap_or(Value::Null), session))
        }
        None if !answer.status.is_success() => {
            Err(status_error(method, answer.status, &answer.body))
        }
        None => Err(ListError::NoResponse { method }),
    }
}

fn status_error(method: &'static str, status: StatusCode, body: &[u8]) -> ListError {
    let text = String::from_utf8_lossy(body);
    ListError::Status {
        method,
        status,
        body: text.chars().take(200).collect(),
    }
}

/// The JSON-RPC response with `id` in a JSON body, or among the events of an SSE one.
fn response_to(id: u64, headers: &HeaderMap, body: &[u8]) -> Option<Value> {
    let is_sse = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let matches = |v: &Value| v.get("id").and_then(Value::as_u64) == Some(id);
    if !is_sse {
        return serde_json::from_slice::<Value>(body).ok().filter(matches);
    }
    let mut events = EventParser::new(body.len());
    let mut all = events.push(body).unwrap_or_default();
    all.extend(events.finish());
    all.iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.data.as_deref()?).ok())
        .find(matches)
}

fn client_info() -> Value {
    json!({"name": "mcp-pqtls", "version": env!("CARGO_PKG_VERSION")})
}

/// The `_meta` a 2026-07-28 request carries in place of a session.
fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": PROTOCOLS[0],
        "io.modelcontextprotocol/clientInfo": client_info(),
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_found_in_json_or_among_sse_events() {
        let mut sse = HeaderMap::new();
        sse.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        let body = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\n: keep-alive\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\ndata: \"result\":{\"tools\":[]}}\n\n";
        let found = response_to(7, &sse, body).unwrap();
        assert_eq!(found["result"], json!({"tools": []}));
        assert!(response_to(8, &sse, body).is_none());
        let json = HeaderMap::new();
        let one = br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"a"}]}}"#;
        assert_eq!(
            response_to(3, &json, one).unwrap()["result"]["tools"][0]["name"],
            "a"
        );
        assert!(response_to(4, &json, one).is_none());
    }
}
