//! Serving a tower (or hyper) service over PQ TLS: HTTP/1.1 or h2 by ALPN, the [`ConnectionInfo`] in every request's extensions, and
//! graceful shutdown; and the connection budgets that keep one hostile host from taking the
//! listener: a cap per source at accept, a deadline for the first request, an idle timeout,
//! h2 keep-alive, and the rapid-reset watch. hyper has the keep-alive and HTTP/1.1's header
//! timeout; the rest is here because no crate does it at the connection level.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::either::Either;
use tracing::{debug, info, warn, Instrument};

use crate::metrics::{Metrics, Rejection};
use crate::source::SourceShares;
use crate::throttle::LogThrottle;
use crate::tls::{ConnectionInfo, PqAcceptor};

mod activity;
mod reset;

use self::activity::{Activity, Busy, Timeouts};
use self::reset::ResetWatch;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves `service` on every connection `listener` accepts, through `acceptor`'s policy,
/// until `shutdown` completes; then stops accepting and waits for in-flight requests. The
/// one-call form of [`Server::builder`], with [`ServeOptions::default`].
///
/// `service` is a tower service as it is: an axum `Router` (an rmcp
/// `StreamableHttpService` nested in it, say), a `tower::service_fn`, a layered stack. Each
/// request carries the connection's `Arc<ConnectionInfo>` (see
/// [`crate::tls::ConnectionInfo::of`]), its [`PeerAddr`] and its [`ConnectionId`].
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
/// let service = tower::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
///     let group = ConnectionInfo::of(req.extensions()).map(|i| i.group.clone());
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
///         format!("hello over {}", group.unwrap_or_default()),
///     ))))
/// });
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// mcp_pqtls::serve(listener, acceptor, service, tokio::signal::ctrl_c()).await
/// # }
/// ```
pub async fn serve<S, B, F>(
    listener: TcpListener,
    acceptor: PqAcceptor,
    service: S,
    shutdown: F,
) -> std::io::Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future,
{
    Server::builder(listener)
        .tls(acceptor)
        .serve(service, shutdown)
        .await
}

/// Where a server with options starts: `Server::builder(listener)`, then what differs
/// from the defaults, then [`ServerBuilder::serve`].
///
/// # Example
/// ```no_run
/// # async fn run(acceptor: mcp_pqtls::tls::PqAcceptor, app: axum::Router) -> std::io::Result<()> {
/// use mcp_pqtls::{ServeOptions, Server};
///
/// let mut options = ServeOptions::default();
/// options.max_connections = 100;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// Server::builder(listener)
///     .tls(acceptor)
///     .options(options)
///     .serve(app, tokio::signal::ctrl_c())
///     .await
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Server;

impl Server {
    /// A server on `listener`: without TLS until [`ServerBuilder::tls`] is set, with
    /// [`ServeOptions::default`].
    pub fn builder(listener: TcpListener) -> ServerBuilder {
        ServerBuilder {
            listener,
            acceptor: None,
            options: ServeOptions::default(),
            metrics: None,
        }
    }
}

/// A server being configured; see [`Server::builder`].
#[derive(Debug)]
#[must_use = "a server builder does nothing until `serve` is awaited"]
pub struct ServerBuilder {
    listener: TcpListener,
    acceptor: Option<PqAcceptor>,
    options: ServeOptions,
    metrics: Option<Arc<Metrics>>,
}

impl ServerBuilder {
    /// Accepts connections into PQ TLS through `acceptor` (its policy, groups and
    /// handshake timeout). Default is none: plain HTTP, for a loopback listener such as
    /// the client sidecar's, where hyper tells h2 from HTTP/1.1 by the preface.
    pub fn tls(mut self, acceptor: PqAcceptor) -> Self {
        self.acceptor = Some(acceptor);
        self
    }

    /// Connection limits, timeouts and drain. Default is [`ServeOptions::default`].
    pub fn options(mut self, options: ServeOptions) -> Self {
        self.options = options;
        self
    }

    /// Where open, rejected and closed connections are counted. Default is the
    /// acceptor's metrics (beside its handshake counters), or new ones without TLS.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves the tower `service` until `shutdown` completes, then drains (see [`serve`]).
    pub async fn serve<S, B, F>(self, service: S, shutdown: F) -> std::io::Result<()>
    where
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        F: Future,
    {
        self.serve_hyper(TowerToHyperService::new(service), shutdown)
            .await
    }

    /// As [`ServerBuilder::serve`], for a service written against hyper's `Service` trait
    /// (called by reference, no readiness) rather than tower's.
    pub async fn serve_hyper<S, B, F>(self, service: S, shutdown: F) -> std::io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        F: Future,
    {
        let metrics = match (self.metrics, &self.acceptor) {
            (Some(m), _) => m,
            (None, Some(acceptor)) => acceptor.metrics().clone(),
            (None, None) => Arc::default(),
        };
        run(
            self.listener,
            self.acceptor,
            service,
            &self.options,
            metrics,
            shutdown,
        )
        .await
    }
}

/// Connection-level limits and shutdown behaviour of a [`Server`]. Start from
/// [`ServeOptions::default`] and set what differs (new fields may come with defaults).
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// Concurrent h2 streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`). Each open
    /// stream may hold an upstream request; a client sidecar whose connection is full opens
    /// another instead of queueing. Default 256.
    pub max_concurrent_streams: u32,
    /// Connections served at once from one source address (IPv6: one prefix of
    /// `ipv6_prefix` bits), checked at accept before any TLS work. Default 256, a quarter
    /// of the default `max_connections`.
    pub max_connections_per_ip: usize,
    /// Prefix length an IPv6 source is counted under (one subscriber holds a /64).
    /// Default 64.
    pub ipv6_prefix: u8,
    /// Time from the completed handshake (or accept, without TLS) to the first request
    /// head, HTTP/1.1 and h2 alike. Default 10 s.
    pub first_request_timeout: Duration,
    /// A connection with no request in flight for this long is closed (h2: GOAWAY). An
    /// open SSE stream is a request in flight. Default 60 s.
    pub idle_timeout: Duration,
    /// h2 keep-alive: a PING after this long without a frame from the peer. Default 20 s.
    pub keepalive_interval: Duration,
    /// h2 keep-alive: a PING not answered within this closes the connection, streams and
    /// all (a dead peer holds nothing). Default 20 s.
    pub keepalive_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_concurrent_streams: 256,
            max_connections_per_ip: 256,
            ipv6_prefix: 64,
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// The client's address, in every request's extensions (TLS or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Which connection a request came on, in every request's extensions: unique in the
/// process, so per-connection budgets (the gate's in-flight cap) can be kept by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// The accept loop and the drain behind every entry point.
async fn run<S, B, F>(
    listener: TcpListener,
    acceptor: Option<PqAcceptor>,
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
    let permits = Arc::new(Semaphore::new(
        options.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let sources = SourceShares::new(options.max_connections_per_ip as u64, options.ipv6_prefix);
    let refusals_logged = Arc::new(LogThrottle::default());
    let streams = StreamTasks::default();
    let mut builder = auto::Builder::new(streams.clone());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(options.max_concurrent_streams)
        .keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout);
    let timeouts = Timeouts {
        first_request: options.first_request_timeout,
        idle: options.idle_timeout,
    };
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
        // Per source first: one host at its share must not take the global slots either.
        let admitted = sources
            .admit(peer.ip())
            .ok_or(Rejection::MaxConnectionsPerIp)
            .and_then(|source| {
                let permit = permits
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Rejection::MaxConnections)?;
                Ok((source, permit))
            });
        let (source, permit) = match admitted {
            Ok(a) => a,
            Err(why) => {
                metrics.connection_rejected(why);
                crate::throttled!(refusals_logged, warn, client.addr = %peer, reason = why.label(),
                    max_connections = options.max_connections,
                    max_connections_per_ip = options.max_connections_per_ip,
                    "Connection refused at accept: limit reached");
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        let mut stop = stop_rx.clone();
        let builder = builder.clone();
        let metrics = metrics.clone();
        let counted = metrics.connection_opened();
        let id = ConnectionId(NEXT_CONNECTION.fetch_add(1, Relaxed));
        let span = tracing::info_span!("conn", client.addr = %peer);
        connections.spawn(
            async move {
                let _permit = (permit, source, counted);
                let (io, info) = match acceptor {
                    Some(acceptor) => {
                        // A handshake still running at shutdown is abandoned: no request started.
                        let accepted = tokio::select! {
                            r = acceptor.accept(tcp, peer) => r,
                            _ = stop.wait_for(|s| *s) => return,
                        };
                        let Ok((tls, info)) = accepted else { return };
                        log_connection(&info);
                        (Either::Right(Box::new(tls)), Some(Arc::new(info)))
                    }
                    None => (Either::Left(tcp), None),
                };
                let h2 = info.as_ref().map(|i| i.alpn.as_deref() == Some("h2"));
                let resets = Arc::new(ResetWatch::default());
                let watch = resets.clone();
                let activity = Arc::new(Activity::new());
                let active = activity.clone();
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    req.extensions_mut().insert(id);
                    if let Some(info) = &info {
                        req.extensions_mut().insert(info.clone());
                    }
                    let stream = watch.started();
                    // In flight until the response body ends: an open SSE stream is not idle.
                    let busy = active.begin();
                    let response = service.call(req);
                    async move {
                        let r = response.await;
                        stream.answered();
                        r.map(|res| res.map(|body| Busy::new(body, busy)))
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
                // reset flood or an idle connection gets GOAWAY too, but only `CLOSE_GRACE`
                // to flush it: a graceful h2 close keeps taking new streams until the client
                // answers a PING, which a flooder or a dead peer need never do.
                // `flooded`: cut at the grace whatever is in flight; an idle close only cuts
                // once no stream is (one taken after the GOAWAY was sent finishes first).
                let (mut stopping, mut closing, mut flooded) = (false, false, false);
                let cutoff = tokio::time::sleep(Duration::ZERO);
                tokio::pin!(cutoff);
                let idle = tokio::time::sleep(timeouts.first_request);
                tokio::pin!(idle);
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
                            (closing, flooded) = (true, true);
                            metrics.reset_flood();
                            warn!(
                                streams = resets.streams.load(Relaxed),
                                premature_resets = resets.premature.load(Relaxed),
                                "Connection closed: most of its streams were reset before a response (h2 rapid reset)"
                            );
                            conn.as_mut().graceful_shutdown();
                            cutoff.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                        }
                        _ = &mut idle, if !closing => match activity.expired(&timeouts) {
                            Ok(next) => idle.as_mut().reset(next.into()),
                            Err(why) => {
                                closing = true;
                                metrics.connection_closed(why);
                                debug!(reason = why.label(), "Connection closed: no request in time");
                                conn.as_mut().graceful_shutdown();
                                cutoff.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                            }
                        },
                        _ = &mut cutoff, if closing => {
                            if flooded || activity.in_flight.load(Relaxed) == 0 {
                                break;
                            }
                            cutoff.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                        }
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
    let deadline = tokio::time::Instant::now() + options.drain_timeout;
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline, drained).await.is_err() {
        warn!(
            active = connections.len(),
            "Drain timeout reached: closing the connections still open"
        );
        connections.shutdown().await;
    }
    // Then h2's streams, each a task of its own: ended too, so that nothing a request does
    // (its audit record, say) outlives the drain.
    let mut streams = streams.take();
    let finished = async { while streams.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline, finished).await.is_err() {
        streams.shutdown().await;
    }
    Ok(())
}

/// Time a flooding or idle connection gets to receive its GOAWAY before it is closed.
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// hyper's executor: h2 runs each stream's service future as a task of its own, outside
/// the connection's; these go into a set that the drain waits for and, at its timeout, ends.
#[derive(Clone, Default)]
struct StreamTasks(Arc<Mutex<tokio::task::JoinSet<()>>>);

impl StreamTasks {
    /// The tasks spawned so far; those spawned later go into a new set.
    fn take(&self) -> tokio::task::JoinSet<()> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<F> hyper::rt::Executor<F> for StreamTasks
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap the finished, so that the set holds only live streams.
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            fut.await;
        });
    }
}

/// Source of [`ConnectionId`]s.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

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
