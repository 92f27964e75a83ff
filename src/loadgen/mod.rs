//! `mcp-pqtls bench`: a load generator and an MCP-shaped upstream, to measure a deployment
//! (ours, nginx, anyone's) from outside: keep-alive request throughput and latency, the rate
//! of new handshakes, SSE delivery latency, and idle connections held open for memory
//! measurements.
//!
//! Written here because no load generator speaks PQ TLS with a chosen group: wrk and h2load
//! link the system OpenSSL (no ML-KEM on Debian bookworm), and none measures SSE delivery
//! latency. Every mode runs for a bounded time or count and prints one JSON [`Report`].

mod stats;
mod upstream;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tower_service::Service;

pub use self::stats::Latencies;
pub use self::upstream::{serve_upstream, tools_call, tools_list, Broadcast, UpstreamOptions};
use crate::tls::{ClientError, PqConnector};

/// Where the load goes: an `http://` or `https://` URL, and for https the connector (its
/// groups, policy and trust) every connection is made with.
#[derive(Clone, Debug)]
pub struct Target {
    url: Uri,
    host: String,
    port: u16,
    connector: Option<PqConnector>,
}

impl Target {
    /// `connector` is required for `https://` URLs and ignored for `http://`.
    pub fn new(url: Uri, connector: Option<PqConnector>) -> Result<Self, LoadError> {
        let tls = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(LoadError::Url(url.to_string())),
        };
        let host = url
            .host()
            .map(crate::tls::bare_host)
            .ok_or_else(|| LoadError::Url(url.to_string()))?
            .to_owned();
        let port = url.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let connector = if tls {
            Some(connector.ok_or_else(|| LoadError::Url(url.to_string()))?)
        } else {
            None
        };
        Ok(Self {
            url,
            host,
            port,
            connector,
        })
    }

    fn path(&self) -> &str {
        self.url.path_and_query().map_or("/", |p| p.as_str())
    }

    fn authority(&self) -> String {
        self.url
            .authority()
            .map_or_else(String::new, |a| a.as_str().to_owned())
    }

    /// One new connection, with its TLS handshake done (https), as hyper's HTTP/1.1 client.
    async fn open(&self) -> Result<http1::SendRequest<Full<Bytes>>, LoadError> {
        match &self.connector {
            Some(connector) => {
                let stream = connector.clone().call(self.url.clone()).await?;
                handshake(stream).await
            }
            None => {
                let tcp = TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(LoadError::Io)?;
                let _ = tcp.set_nodelay(true);
                handshake(TokioIo::new(tcp)).await
            }
        }
    }

    fn request(&self, method: Method, body: Bytes) -> Result<Request<Full<Bytes>>, LoadError> {
        Request::builder()
            .method(method)
            .uri(self.path())
            .header(header::HOST, self.authority())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(Full::new(body))
            .map_err(|e| LoadError::Http(e.to_string()))
    }
}

async fn handshake<IO>(io: IO) -> Result<http1::SendRequest<Full<Bytes>>, LoadError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| LoadError::Http(e.to_string()))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// How long and how hard a run loads its target.
#[derive(Clone, Debug)]
pub struct Load {
    /// Concurrent connections (each sends its next request when the last one is answered).
    pub connections: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time before the measurement starts (connections open, caches warm); not counted.
    pub warmup: Duration,
}

/// The outcome of a run, printed as one JSON object.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// `requests`, `handshakes`, `sse` or `idle`.
    pub mode: &'static str,
    /// The URL loaded.
    pub url: String,
    /// Concurrent connections (streams for `sse`).
    pub connections: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Operations completed in the measured time: responses, handshakes or events.
    pub completed: u64,
    /// Failed operations (connection errors, non-2xx responses, lost events).
    pub errors: u64,
    /// `completed / seconds`.
    pub per_second: f64,
    /// Latency percentiles of the completed operations, in microseconds.
    pub latency_us: stats::Percentiles,
    /// Response body bytes per request (`requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<u64>,
    /// The first error seen, if any: what to look at when `errors` is not zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Errors the first error of a run is reported with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Not an `http://` or `https://` URL with a host (https needs TLS settings).
    #[error("bad target URL {0}: use http://HOST:PORT/PATH or https://HOST:PORT/PATH")]
    Url(String),
    /// TCP or TLS connect failed.
    #[error(transparent)]
    Connect(#[from] ClientError),
    /// A socket error.
    #[error("connection failed: {0}")]
    Io(std::io::Error),
    /// The HTTP exchange failed or answered with an error status.
    #[error("HTTP: {0}")]
    Http(String),
}

/// Shared by the tasks of one run: counts, the first error, and whether we are measuring.
#[derive(Default)]
struct Tally {
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, e: &LoadError) {
        self.errors.fetch_add(1, Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }

    fn report(self, mode: &'static str, target: &Target, load: &Load, lat: Latencies) -> Report {
        let seconds = load.duration.as_secs_f64();
        let completed = lat.len() as u64;
        Report {
            mode,
            url: target.url.to_string(),
            connections: load.connections,
            seconds,
            completed,
            errors: self.errors.into_inner(),
            per_second: completed as f64 / seconds,
            latency_us: lat.percentiles(),
            response_bytes: None,
            first_error: self.first_error.into_inner().ok().flatten(),
        }
    }
}

/// The measured window of a run: operations that finish inside it are counted.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn new(load: &Load) -> Self {
        let start = Instant::now() + load.warmup;
        Self {
            start,
            end: start + load.duration,
        }
    }

    fn over(&self) -> bool {
        Instant::now() >= self.end
    }

    fn counts(&self, began: Instant) -> bool {
        began >= self.start && began < self.end
    }
}

/// Keep-alive POSTs of `request` (a JSON-RPC message) on `load.connections` connections,
/// each sending its next request when the last response has been read to its end.
pub async fn requests(target: &Target, load: &Load, request: Bytes) -> Report {
    let window = Window::new(load);
    let tally = Arc::new(Tally::default());
    let body_bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let (target, request, tally, body_bytes) = (
            target.clone(),
            request.clone(),
            tally.clone(),
            body_bytes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            while !window.over() {
                let mut sender = match target.open().await {
                    Ok(s) => s,
                    Err(e) => {
                        tally.error(&e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                while !window.over() {
                    // Closed by the server between requests (keep-alive limit, idle timeout):
                    // not a failed request; open another connection.
                    if sender.ready().await.is_err() {
                        break;
                    }
                    let began = Instant::now();
                    match exchange(&target, &mut sender, request.clone()).await {
                        Ok(n) => {
                            if window.counts(began) {
                                lat.record(began.elapsed());
                                body_bytes.store(n, Relaxed);
                            }
                        }
                        Err(e) => {
                            tally.error(&e);
                            break;
                        }
                    }
                }
            }
            lat
        }));
    }
    let lat = collect(tasks).await;
    let tally = Arc::into_inner(tally).unwrap_or_default();
    let mut report = tally.report("requests", target, load, lat);
    report.response_bytes = Some(body_bytes.load(Relaxed));
    report
}

async fn exchange(
    target: &Target,
    sender: &mut http1::SendRequest<Full<Bytes>>,
    body: Bytes,
) -> Result<u64, LoadError> {
    let resp = sender
        .send_request(target.request(Method::POST, body)?)
        .await
        .map_err(|e| LoadError::Http(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| LoadError::Http(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(LoadError::Http(format!("status {status}")));
    }
    Ok(body.len() as u64)
}

/// New connections, each closed as soon as its handshake completes (like `openssl s_time
/// -new`): the handshake rate and latency at `load.connections` concurrent clients.
pub async fn handshakes(target: &Target, load: &Load) -> Report {
    let window = Window::new(load);
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let (target, tally) = (target.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            while !window.over() {
                let began = Instant::now();
                let done = match &target.connector {
                    Some(c) => c.connect(&target.host, target.port).await.map(drop),
                    None => TcpStream::connect((target.host.as_str(), target.port))
                        .await
                        .map(drop)
                        .map_err(|e| ClientError::Connect {
                            addr: format!("{}:{}", target.host, target.port),
                            error: e,
                        }),
                };
                match done {
                    Ok(()) if window.counts(began) => lat.record(began.elapsed()),
                    Ok(()) => {}
                    Err(e) => {
                        tally.error(&e.into());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            lat
        }));
    }
    let lat = collect(tasks).await;
    let tally = Arc::into_inner(tally).unwrap_or_default();
    tally.report("handshakes", target, load, lat)
}

/// Opens `connections` connections (handshake done, no request), `parallel` at a time, then
/// calls `ready` with the report of the opening (latency of each handshake) and holds them
/// all open for `hold`: the server's memory can then be read per idle connection.
pub async fn idle(
    target: &Target,
    connections: usize,
    parallel: usize,
    hold: Duration,
    ready: impl FnOnce(&Report),
) -> Report {
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(parallel);
    for _ in 0..parallel.max(1) {
        let (target, tally, next) = (target.clone(), tally.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            let mut lat = Latencies::default();
            while next.fetch_add(1, Relaxed) < connections as u64 {
                let began = Instant::now();
                match target.open().await {
                    Ok(sender) => {
                        lat.record(began.elapsed());
                        held.push(sender);
                    }
                    Err(e) => tally.error(&e),
                }
            }
            (held, lat)
        }));
    }
    let mut held = Vec::new();
    let mut lat = Latencies::default();
    for t in tasks {
        if let Ok((h, l)) = t.await {
            held.extend(h);
            lat.merge(l);
        }
    }
    let load = Load {
        connections,
        duration: started.elapsed(),
        warmup: Duration::ZERO,
    };
    let tally = Arc::into_inner(tally).unwrap_or_default();
    let report = tally.report("idle", target, &load, lat);
    ready(&report);
    tokio::time::sleep(hold).await;
    // Still open here: dropping them is what closes them.
    drop(held);
    report
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Latencies>>) -> Latencies {
    let mut all = Latencies::default();
    for t in tasks {
        if let Ok(lat) = t.await {
            all.merge(lat);
        }
    }
    all
}

/// Opens `streams` SSE streams (GET) through `target` to an upstream whose [`Broadcast`] is
/// `upstream`, then has the upstream send `events` events to every stream, `interval` apart.
/// Each event carries the instant it was handed to the upstream's connection; latency is the
/// time until the client has read it. A stream that stays silent for `interval + 30 s` is
/// given up; its missing events are lost (counted as errors).
pub async fn sse(
    target: &Target,
    upstream: &Broadcast,
    streams: usize,
    events: u64,
    interval: Duration,
) -> Report {
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::with_capacity(streams);
    for _ in 0..streams {
        let (target, tally) = (target.clone(), tally.clone());
        let epoch = upstream.epoch();
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            let stream = async {
                let mut sender = target.open().await?;
                let mut req = target.request(Method::GET, Bytes::new())?;
                req.headers_mut()
                    .insert(header::ACCEPT, "text/event-stream".parse().expect("static"));
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| LoadError::Http(e.to_string()))?;
                if !resp.status().is_success() {
                    return Err(LoadError::Http(format!("status {}", resp.status())));
                }
                Ok(resp.into_body())
            };
            let mut body = match stream.await {
                Ok(b) => b,
                Err(e) => {
                    tally.error(&e);
                    return lat;
                }
            };
            let mut parser = upstream::EventParser::default();
            let mut seen = 0;
            // A stalled stream ends the wait: its missing events are counted as lost.
            let patience = interval + Duration::from_secs(30);
            while seen < events {
                let Ok(next) = tokio::time::timeout(patience, body.frame()).await else {
                    break;
                };
                match next {
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        for sent_ns in parser.push(&data) {
                            let now = epoch.elapsed().as_nanos() as u64;
                            lat.record(Duration::from_nanos(now.saturating_sub(sent_ns)));
                            seen += 1;
                        }
                    }
                    Some(Err(e)) => {
                        tally.error(&LoadError::Http(e.to_string()));
                        break;
                    }
                    None => break,
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    upstream.wait_for(streams, Duration::from_secs(30)).await;
    for _ in 0..events {
        upstream.send_event().await;
        tokio::time::sleep(interval).await;
    }
    let lat = collect(tasks).await;
    let expected = streams as u64 * events;
    let lost = expected.saturating_sub(lat.len() as u64);
    let tally = Arc::into_inner(tally).unwrap_or_default();
    tally.errors.fetch_add(lost, Relaxed);
    if lost > 0 {
        if let Ok(mut first) = tally.first_error.lock() {
            first.get_or_insert_with(|| format!("{lost} of {expected} events not received"));
        }
    }
    let load = Load {
        connections: streams,
        duration: started.elapsed(),
        warmup: Duration::ZERO,
    };
    tally.report("sse", target, &load, lat)
}
