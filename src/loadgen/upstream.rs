//! The upstream of `mcp-pqtls bench`: a plain-HTTP, MCP-shaped server. A POST gets a
//! JSON-RPC result of a fixed size (like a `tools/call` answer); a GET opens an SSE stream that
//! carries the events a [`Broadcast`] sends, each stamped with the instant it was sent.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

use crate::serve::{ServeOptions, Server};

/// What the upstream answers.
#[derive(Clone, Debug)]
pub struct UpstreamOptions {
    /// Size of the JSON-RPC response to a POST, in bytes.
    pub response_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        Self {
            response_bytes: 16 * 1024,
            max_connections: 20_000,
        }
    }
}

/// The SSE streams open on the upstream, and the clock their events are stamped with.
/// Shared between the upstream and the `sse` load in one process, so that sending and
/// receiving instants come from the same monotonic clock.
#[derive(Clone)]
pub struct Broadcast {
    inner: Arc<Streams>,
}

struct Streams {
    epoch: Instant,
    open: Mutex<Vec<mpsc::Sender<Bytes>>>,
    changed: Notify,
}

impl Default for Broadcast {
    fn default() -> Self {
        Self {
            inner: Arc::new(Streams {
                epoch: Instant::now(),
                open: Mutex::new(Vec::new()),
                changed: Notify::new(),
            }),
        }
    }
}

impl Broadcast {
    /// The instant event stamps count from.
    pub fn epoch(&self) -> Instant {
        self.inner.epoch
    }

    /// Streams open now.
    pub fn streams(&self) -> usize {
        self.inner.open.lock().map_or(0, |o| o.len())
    }

    fn register(&self) -> mpsc::Receiver<Bytes> {
        // A few events of slack; a slow reader then holds the sender back (as TCP would).
        let (tx, rx) = mpsc::channel(16);
        if let Ok(mut open) = self.inner.open.lock() {
            open.push(tx);
        }
        self.inner.changed.notify_waiters();
        rx
    }

    /// Waits until `n` streams are open, or `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, async {
            loop {
                let changed = self.inner.changed.notified();
                if self.streams() >= n {
                    return;
                }
                changed.await;
            }
        })
        .await;
    }

    /// Sends one event to every open stream, each stamped just before it is handed over.
    /// Streams whose client has gone are dropped.
    pub async fn send_event(&self) {
        let senders: Vec<_> = self
            .inner
            .open
            .lock()
            .map_or_else(|_| Vec::new(), |o| o.clone());
        for tx in &senders {
            let sent_ns = self.inner.epoch.elapsed().as_nanos();
            let event = format!("event: message\ndata: {{\"sent_ns\":{sent_ns}}}\n\n");
            if tx.send(Bytes::from(event)).await.is_err() {
                if let Ok(mut open) = self.inner.open.lock() {
                    open.retain(|o| !o.same_channel(tx));
                }
            }
        }
    }
}

/// Reads the stamps back out of an SSE byte stream, whatever the framing of the chunks.
pub(crate) struct EventParser(crate::sse::EventParser);

impl Default for EventParser {
    fn default() -> Self {
        // The stamped events are a few dozen bytes: anything far larger is not ours.
        Self(crate::sse::EventParser::new(64 * 1024))
    }
}

impl EventParser {
    /// Feeds one chunk; returns the `sent_ns` stamps of the events it completed.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<u64> {
        const KEY: &str = "\"sent_ns\":";
        let events = self.0.push(chunk).unwrap_or_default();
        events
            .iter()
            .filter_map(|e| {
                let data = e.data.as_deref()?;
                let at = data.find(KEY)?;
                let digits = data[at + KEY.len()..]
                    .bytes()
                    .take_while(u8::is_ascii_digit)
                    .fold(0u64, |n, d| {
                        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                    });
                Some(digits)
            })
            .collect()
    }
}

/// An SSE response body fed by a [`Broadcast`].
struct Events(mpsc::Receiver<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|e| e.map(|e| Ok(Frame::data(e))))
    }
}

/// Serves the upstream on `listener` until `shutdown` completes.
pub async fn serve_upstream(
    listener: TcpListener,
    options: UpstreamOptions,
    broadcast: Broadcast,
    shutdown: impl Future,
) -> std::io::Result<()> {
    let answer = tools_result(options.response_bytes);
    let listed = tools_list_result(options.response_bytes);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (answer, listed, broadcast) = (answer.clone(), listed.clone(), broadcast.clone());
        async move {
            let resp = match *req.method() {
                Method::POST => {
                    // Read the request to its end, as a real server would, before answering.
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let list = body.is_ok_and(|b| {
                        b.windows(LIST_METHOD.len())
                            .any(|w| w == LIST_METHOD.as_bytes())
                    });
                    json(if list { listed } else { answer })
                }
                Method::GET => {
                    let mut r = Response::new(Events(broadcast.register()).boxed());
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("text/event-stream"),
                    );
                    r
                }
                _ => {
                    let mut r = Response::new(Full::new(Bytes::new()).boxed());
                    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                    r
                }
            };
            Ok::<_, Infallible>(resp)
        }
    });
    // A load generator's peer: every connection comes from the proxy under test (one
    // address) and may wait long for its first request, so no share and no short timers.
    let serve = ServeOptions {
        max_connections: options.max_connections,
        max_connections_per_ip: options.max_connections,
        max_concurrent_streams: u32::try_from(options.max_connections).unwrap_or(u32::MAX),
        first_request_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        ..ServeOptions::default()
    };
    Server::builder(listener)
        .options(serve)
        .serve_hyper(service, shutdown)
        .await
}

fn json(body: Bytes) -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = Response::new(Full::new(body).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON-RPC `tools/call` request of `bytes` bytes (its argument padded), as an MCP client
/// would POST it.
pub fn tools_call(bytes: usize) -> Bytes {
    padded(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":""#,
        r#""}}}"#,
        bytes,
    )
}

/// What a `tools/list` request carries, as [`tools_list`] writes it.
const LIST_METHOD: &str = r#""method":"tools/list""#;

/// A JSON-RPC `tools/list` request, as an MCP client sends it.
pub fn tools_list() -> Bytes {
    Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":1,{LIST_METHOD}}}"#))
}

/// A JSON-RPC `tools/list` result of about `bytes` bytes: `echo` (what [`tools_call`] calls,
/// its `text` a string) and as many small tools as fit (a gate that judges lists digests each).
fn tools_list_result(bytes: usize) -> Bytes {
    let echo = r#"{"name":"echo","description":"Returns text.","inputSchema":{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}}"#;
    let tools: Vec<String> = std::iter::once(echo.to_owned())
        .chain((0..).map(|i| format!(r#"{{"name":"tool_{i}","description":"Tool {i} of the load generator's upstream.","inputSchema":{{"type":"object","properties":{{"text":{{"type":"string"}}}}}}}}"#)))
        .scan(0, |len, t| {
            *len += t.len() + 1;
            (*len <= bytes.max(200)).then_some(t)
        })
        .collect();
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{}]}}}}"#,
        tools.join(",")
    ))
}

/// A JSON-RPC `tools/call` result of `bytes` bytes (its text content padded).
fn tools_result(bytes: usize) -> Bytes {
    padded(
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":""#,
        r#""}]}}"#,
        bytes,
    )
}

fn padded(head: &str, tail: &str, bytes: usize) -> Bytes {
    let pad = bytes.saturating_sub(head.len() + tail.len());
    Bytes::from(format!("{head}{}{tail}", "x".repeat(pad)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_any_chunking() {
        let stream = b"event: message\ndata: {\"sent_ns\":123}\n\n: comment\n\nevent: message\ndata: {\"sent_ns\":4567}\n\n";
        for cut in 0..stream.len() {
            let mut p = EventParser::default();
            let mut got = p.push(&stream[..cut]);
            got.extend(p.push(&stream[cut..]));
            assert_eq!(got, vec![123, 4567], "cut at {cut}");
        }
    }

    #[test]
    fn sized_bodies() {
        assert_eq!(tools_result(16 * 1024).len(), 16 * 1024);
        assert_eq!(tools_call(1024).len(), 1024);
        let list: serde_json::Value =
            serde_json::from_slice(&tools_list_result(16 * 1024)).expect("valid JSON");
        let n = list["result"]["tools"].as_array().map_or(0, Vec::len);
        assert!(n > 50, "{n} tools in 16 KiB");
        let parsed: serde_json::Value =
            serde_json::from_slice(&tools_result(4096)).expect("valid JSON");
        assert_eq!(parsed["id"], 1);
    }
}
