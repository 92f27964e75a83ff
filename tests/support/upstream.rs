//! A plain-HTTP upstream standing in for an MCP server, for the sidecar tests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Channel, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

/// Deadlock guard for reads that must complete; never a speed assertion.
pub const GUARD: Duration = Duration::from_secs(30);

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A plain-HTTP upstream standing in for an MCP server:
/// - `/headers?status=N`: the request headers as JSON, with status N (default 200);
/// - `/sse`: an event stream: `one` at once, `two` only after `release` is notified;
/// - `/slow`: answers 200 once `release_slow` is notified;
/// - `/never`: never answers.
pub struct Upstream {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    /// Lets `/sse` send its second event.
    pub release: Arc<Notify>,
    /// Lets `/slow` answer.
    pub release_slow: Arc<Notify>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let release_slow = Arc::new(Notify::new());
        let (r, n, slow) = (requests.clone(), release.clone(), release_slow.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (r, n, slow) = (r.clone(), n.clone(), slow.clone());
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    r.fetch_add(1, Ordering::SeqCst);
                    let (n, slow) = (n.clone(), slow.clone());
                    async move { Ok::<_, Infallible>(upstream_route(req, n, slow).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc),
                );
            }
        });
        Self {
            addr,
            requests,
            release,
            release_slow,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn upstream_route(
    req: Request<Incoming>,
    release: Arc<Notify>,
    release_slow: Arc<Notify>,
) -> Response<Body> {
    match req.uri().path() {
        "/slow" => {
            release_slow.notified().await;
            Response::new(Full::new(Bytes::from_static(b"slow but sure")).boxed())
        }
        "/sse" => {
            let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
            tokio::spawn(async move {
                let _ = tx.send_data(Bytes::from("id: 1\ndata: one\n\n")).await;
                release.notified().await;
                let _ = tx
                    .send_data(Bytes::from(": ping\r\n\r\nid: 2\ndata: two\n\n"))
                    .await;
                // Keep the stream open a while, as MCP servers do.
                tokio::time::sleep(GUARD).await;
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(body.boxed())
                .unwrap()
        }
        "/never" => std::future::pending().await,
        _ => {
            let status = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("status=")))
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let mut seen = BTreeMap::<String, String>::new();
            for (k, v) in req.headers() {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                seen.entry(k.as_str().to_owned())
                    .and_modify(|e| e.push_str(&format!(", {v}")))
                    .or_insert(v);
            }
            seen.insert(":method".into(), req.method().to_string());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            seen.insert(":body-len".into(), body.len().to_string());
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("mcp-session-id", "s-123")
                .header("x-mcp-pqtls-group", "forged-by-upstream")
                .body(Full::new(Bytes::from(serde_json::to_vec(&seen).unwrap())).boxed())
                .unwrap()
        }
    }
}

/// Reads body frames until `needle` has arrived; returns everything read.
pub async fn read_until(body: &mut Incoming, needle: &str) -> String {
    let mut seen = String::new();
    tokio::time::timeout(GUARD, async {
        while !seen.contains(needle) {
            let frame = body.frame().await.expect("stream ended").unwrap();
            if let Some(d) = frame.data_ref() {
                seen.push_str(&String::from_utf8_lossy(d));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("`{needle}` never arrived; got {seen:?}"));
    seen
}

/// A plain-HTTP GET (admin endpoints, client sidecar): status and body.
pub async fn get_plain(url: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let res = client.get(url.parse().unwrap()).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
