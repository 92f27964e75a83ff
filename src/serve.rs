//! Serving a hyper (or tower, via `hyper_util::service::TowerToHyperService`) service over
//! PQ TLS: HTTP/1.1 or h2 by ALPN, the [`ConnectionInfo`] in every request's extensions, and
//! graceful shutdown.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn, Instrument};

use crate::metrics::Metrics;
use crate::tls::{ConnectionInfo, PqAcceptor};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves `service` on every connection `listener` accepts, through `acceptor`'s policy,
/// until `shutdown` completes; then stops accepting and waits for in-flight requests.
///
/// Each request carries the connection's `Arc<ConnectionInfo>` (see [`crate::tls::ConnectionInfo::of`]).
/// Connections that fail the handshake or the policy are dropped (the acceptor logs and
/// counts them) without touching the others.
///
/// # Example
/// ```no_run
/// # async fn run(acceptor: mcp_pqtls::tls::PqAcceptor) -> std::io::Result<()> {
/// use http_body_util::Full;
/// use hyper::body::Bytes;
/// use mcp_pqtls::tls::ConnectionInfo;
///
/// let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
///     let group = ConnectionInfo::of(req.extensions()).map(|i| i.group.clone());
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
///         format!("hello over {}", group.unwrap_or_default()),
///     ))))
/// });
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// mcp_pqtls::serve(listener, std::sync::Arc::new(acceptor), service, tokio::signal::ctrl_c()).await
/// # }
/// ```
pub async fn serve<S, B, F>(
    listener: TcpListener,
    acceptor: Arc<PqAcceptor>,
    service: S,
    shutdown: F,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future,
{
    let metrics = acceptor.metrics().clone();
    serve_with(
        listener,
        Some(acceptor),
        service,
        &ServeOptions::default(),
        metrics,
        shutdown,
    )
    .await
}

/// Connection-level limits and shutdown behaviour of [`serve_with`].
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Connections served at once; one more is closed at accept (and counted in
    /// `connections_rejected`) rather than queued. Default 1024.
    pub max_connections: usize,
    /// Largest request head (HTTP/1.1) or header list (h2) in bytes; beyond it HTTP/1.1
    /// gets `431`, h2 a stream reset. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Time a client gets to send a request head after connecting (HTTP/1.1 slowloris
    /// guard). Default 30 s.
    pub header_read_timeout: Duration,
    /// After `shutdown`, time in-flight requests and streams get before they are cut off.
    /// Default 30 s.
    pub drain_timeout: Duration,
    /// Concurrent h2 streams per connection. A client sidecar multiplexes every MCP session
    /// of its host over one h2 connection, and each open SSE stream holds a stream for as
    /// long as it lives: hyper's default of 200 left the 201st session waiting (measured).
    /// Default 10,000.
    pub max_concurrent_streams: u32,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_concurrent_streams: 10_000,
        }
    }
}

/// The client's address, in every request's extensions (TLS or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// As [`serve`], with limits, and optionally without TLS (`acceptor: None`, for a loopback
/// listener such as the client sidecar's). Open and rejected connections are counted in
/// `metrics` (pass the acceptor's to keep them with its handshake counters).
pub async fn serve_with<S, B, F>(
    listener: TcpListener,
    acceptor: Option<Arc<PqAcceptor>>,
    service: S,
    options: &ServeOptions,
    metrics: Arc<Metrics>,
    shutdown: F,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Every connection's task, so that the drain can wait for them and then end the rest.
    let mut connections = tokio::task::JoinSet::new();
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(options.max_concurrent_streams);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, keep serving.
                    warn!(error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.connection_rejected();
            warn!(client.addr = %peer, max_connections = options.max_connections, "Connection refused: max-connections reached");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        let mut stop = stop_rx.clone();
        let builder = builder.clone();
        let metrics = metrics.clone();
        let counted = metrics.connection_opened();
        let span = tracing::info_span!("conn", client.addr = %peer);
        connections.spawn(
            async move {
                let _permit = (permit, counted);
                let (io, info) = match acceptor {
                    Some(acceptor) => {
                        // A handshake still running at shutdown is abandoned: no request started.
                        let accepted = tokio::select! {
                            r = acceptor.accept(tcp, peer) => r,
                            _ = stop.wait_for(|s| *s) => return,
                        };
                        let Ok((tls, info)) = accepted else { return };
                        log_connection(&info);
                        (Io::Tls(Box::new(tls)), Some(Arc::new(info)))
                    }
                    None => (Io::Plain(tcp), None),
                };
                let h2 = info.as_ref().map(|i| i.alpn.as_deref() == Some("h2"));
                let resets = Arc::new(ResetWatch::default());
                let watch = resets.clone();
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    if let Some(info) = &info {
                        req.extensions_mut().insert(info.clone());
                    }
                    let stream = watch.started();
                    let response = service.call(req);
                    async move {
                        let r = response.await;
                        stream.answered();
                        r
                    }
                });
                // With TLS, ALPN decides; in plain text, hyper detects the h2 preface.
                let builder = match h2 {
                    Some(true) => builder.http2_only(),
                    Some(false) => builder.http1_only(),
                    None => builder,
                };
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                tokio::pin!(conn);
                // Shutdown asks once for a graceful close (h2: GOAWAY; HTTP/1.1: close after
                // the response in flight); the connection then ends when its streams do. A
                // reset flood gets GOAWAY too, but only `RESET_FLOOD_GRACE` to flush it: a
                // graceful h2 close keeps taking new streams until the client answers a PING,
                // which a flooder need never do.
                let (mut stopping, mut flooded) = (false, false);
                let cutoff = tokio::time::sleep(Duration::ZERO);
                tokio::pin!(cutoff);
                loop {
                    tokio::select! {
                        ended = conn.as_mut() => {
                            if let Err(e) = ended {
                                debug!(error = %e, "Connection ended with an error");
                            }
                            break;
                        }
                        _ = stop.wait_for(|s| *s), if !stopping => {
                            stopping = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        _ = resets.flood.notified(), if !flooded => {
                            flooded = true;
                            metrics.reset_flood();
                            warn!(
                                streams = resets.streams.load(Relaxed),
                                premature_resets = resets.premature.load(Relaxed),
                                "Connection closed: most of its streams were reset before a response (h2 rapid reset)"
                            );
                            conn.as_mut().graceful_shutdown();
                            cutoff.as_mut().reset(tokio::time::Instant::now() + RESET_FLOOD_GRACE);
                        }
                        _ = &mut cutoff, if flooded => break,
                    }
                }
            }
            .instrument(span),
        );
    }
    // Closed now, so new connections are refused at once instead of waiting in the backlog.
    drop(listener);
    let _ = stop_tx.send(true);
    info!(drain_timeout = ?options.drain_timeout, "Shutting down: no new connections; draining in-flight requests");
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(options.drain_timeout, drained)
        .await
        .is_err()
    {
        warn!(
            active = connections.len(),
            "Drain timeout reached: closing the connections still open"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Streams a connection may see before [`ResetWatch`] judges it.
const RESET_FLOOD_MIN_STREAMS: u64 = 100;
/// A stream reset sooner than this after it started, before its response, is premature.
const PREMATURE_RESET_WINDOW: Duration = Duration::from_secs(1);
/// Time a flooding connection gets to receive its GOAWAY before it is closed.
const RESET_FLOOD_GRACE: Duration = Duration::from_millis(100);
/// At this many streams both counts are halved, so that a long-lived connection (a client
/// sidecar's tunnel) is judged on its recent streams: answered requests long ago cannot
/// pay for a flood now.
const RESET_WATCH_DECAY: u64 = 1000;

/// Premature resets on one connection: streams whose request was dropped (the client reset
/// the stream, or left) before the service answered, within [`PREMATURE_RESET_WINDOW`].
///
/// h2 itself only limits resets of streams still waiting to be accepted; a server that
/// keeps up accepts every stream of a rapid-reset flood (CVE-2023-44487) and works on each.
/// As Envoy does, a connection on which at least half of [`RESET_FLOOD_MIN_STREAMS`] or more
/// streams ended that way is sent GOAWAY and closed. No crate does this at the service layer.
#[derive(Debug, Default)]
struct ResetWatch {
    streams: AtomicU64,
    premature: AtomicU64,
    flood: tokio::sync::Notify,
}

impl ResetWatch {
    fn started(self: &Arc<Self>) -> StreamGuard {
        let streams = self.streams.fetch_add(1, Relaxed) + 1;
        if streams >= RESET_WATCH_DECAY {
            // Not atomic as a pair; a heuristic does not need it to be.
            self.streams.store(streams / 2, Relaxed);
            self.premature
                .store(self.premature.load(Relaxed) / 2, Relaxed);
        }
        StreamGuard {
            watch: self.clone(),
            started: Instant::now(),
            answered: false,
        }
    }
}

/// Counts its stream as a premature reset if dropped unanswered; see [`ResetWatch`].
struct StreamGuard {
    watch: Arc<ResetWatch>,
    started: Instant,
    answered: bool,
}

impl StreamGuard {
    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.answered || self.started.elapsed() > PREMATURE_RESET_WINDOW {
            return;
        }
        let premature = self.watch.premature.fetch_add(1, Relaxed) + 1;
        let streams = self.watch.streams.load(Relaxed);
        if streams >= RESET_FLOOD_MIN_STREAMS && premature * 2 >= streams {
            // Stored: the connection task may be busy and pick it up on its next poll.
            self.watch.flood.notify_one();
        }
    }
}

/// One line per established TLS connection: who, what was negotiated.
fn log_connection(info: &ConnectionInfo) {
    info!(
        client.addr = %info.peer_addr,
        server.name = info.sni.as_deref().unwrap_or(""),
        tls.group = %info.group,
        tls.pq = info.pq,
        tls.hello_retry = info.hello_retry,
        tls.resumed = info.resumed,
        tls.alpn = info.alpn.as_deref().unwrap_or(""),
        client.id = info.client_identity.as_deref().unwrap_or(""),
        "TLS connection established"
    );
}

/// A served connection, with or without TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn flooded(watch: &ResetWatch) -> bool {
        // A stored notification resolves at once; 10 ms only bounds the wait for none.
        tokio::time::timeout(Duration::from_millis(10), watch.flood.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn answered_streams_never_flood() {
        let watch = Arc::new(ResetWatch::default());
        for _ in 0..5000 {
            watch.started().answered();
        }
        assert!(!flooded(&watch).await);
    }

    #[tokio::test]
    async fn a_majority_of_quick_unanswered_drops_floods_once_past_the_minimum() {
        let watch = Arc::new(ResetWatch::default());
        for _ in 0..RESET_FLOOD_MIN_STREAMS - 1 {
            drop(watch.started());
        }
        assert!(!flooded(&watch).await, "judged before the minimum");
        drop(watch.started());
        assert!(flooded(&watch).await);
    }

    #[tokio::test]
    async fn a_minority_of_drops_or_slow_drops_do_not_flood() {
        let watch = Arc::new(ResetWatch::default());
        for i in 0..1000 {
            let stream = watch.started();
            if i % 3 == 0 {
                drop(stream);
            } else {
                stream.answered();
            }
        }
        // Long calls the client gave up on are not premature.
        for _ in 0..1000 {
            let mut stream = watch.started();
            stream.started -= PREMATURE_RESET_WINDOW * 2;
            drop(stream);
        }
        assert!(!flooded(&watch).await);
    }

    #[tokio::test]
    async fn old_answered_streams_do_not_pay_for_a_flood_now() {
        let watch = Arc::new(ResetWatch::default());
        for _ in 0..100_000 {
            watch.started().answered();
        }
        for _ in 0..RESET_WATCH_DECAY {
            drop(watch.started());
        }
        assert!(flooded(&watch).await);
    }
}
