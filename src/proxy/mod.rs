//! The sidecar's HTTP proxy: one hop of MCP traffic (Streamable HTTP or legacy HTTP+SSE)
//! forwarded with header hygiene, Origin checks, limits, and responses streamed back frame by
//! frame — an SSE event reaches the client when the upstream sends it, never later.
//!
//! [`Proxy`] is a hyper service; run it with [`crate::Server::builder`] (`serve_hyper`) behind a
//! [`crate::tls::PqAcceptor`] (server mode: the TLS-info headers go upstream) or on a plain
//! listener with a [`crate::tls::PqConnector`] to the upstream (client mode).

mod body;
pub mod headers;
mod metrics;
mod pool;
mod upstream;

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tracing::warn;

pub use self::headers::{ForwardedMode, OriginAllowList, OriginMode};
pub use self::metrics::{
    ProxyMetrics, ProxyRefusal, ProxySnapshot, StatusClass, UpstreamErrorKind, PROXY_REFUSALS,
};
pub use self::pool::{DEFAULT_STREAMS_PER_CONNECTION, POOL_IDLE_TIMEOUT};
pub use self::upstream::{Upstream, UpstreamConnector, UpstreamError};
pub use crate::sse::is_event_stream;

use self::body::{BodyState, Holding, RequestBody, RequestLog, Tracked};
use self::pool::{H2Pool, PoolError};
use crate::deadline::BodyTimeout;
use crate::gate::{Gate, GateLayer};
use crate::source::SourceShares;
use crate::throttle::LogThrottle;
use crate::tls::{ConnectionInfo, PqConnector};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The body of every response the proxy returns.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Default request body limit: MCP messages are JSON-RPC, rarely beyond a few hundred KiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;
/// Default time an upstream gets to start a (non-streaming) response.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time a request body gets to arrive whole.
pub const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of upstream requests in flight at once (the default `max-connections`).
pub const DEFAULT_MAX_UPSTREAM_REQUESTS: usize = 1024;
/// Idle upstream connections the legacy (HTTP/1.1) client keeps per host.
const MAX_IDLE_UPSTREAM: usize = 64;

/// Which side of the tunnel this proxy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Side {
    /// TLS from clients, plain HTTP to the MCP server: announces the client hop's TLS upstream.
    Server,
    /// Plain HTTP from a local MCP client, PQ TLS to the upstream: announces the upstream
    /// hop's TLS in the response.
    Client,
}

/// How requests are rewritten and limited on their way upstream.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Origins a request may carry; a present `Origin` not on the list gets 403.
    pub allowed_origins: OriginAllowList,
    /// What reaches upstream of an allowed `Origin`.
    pub origin: OriginMode,
    /// Send the client's `Host` upstream instead of the upstream's own authority.
    pub preserve_host: bool,
    /// What happens to `Forwarded` and `X-Forwarded-*`.
    pub forwarded: ForwardedMode,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: u64,
    /// Time the upstream gets to send a response's head. Streams, once started, have no
    /// timeout.
    pub upstream_timeout: Duration,
    /// Time a request body gets to arrive whole (408 beyond). Default 30 s.
    pub request_body_timeout: Duration,
    /// Upstream requests in flight at once (an SSE stream is one until it ends); beyond
    /// it a quick 503. Default 1024 (`max-connections`).
    pub max_upstream_requests: usize,
    /// Of those, in flight at once for one source (an IPv4 address, an IPv6
    /// `ipv6_prefix`). Default 256, a quarter of the default `max_upstream_requests`.
    pub max_upstream_requests_per_ip: usize,
    /// Prefix length an IPv6 client is counted under. Default 64.
    pub ipv6_prefix: u8,
    /// `Host` values a request may carry (client sidecar: DNS-rebinding guard); anything
    /// else gets 421. Empty: any (the server sidecar, which fixes the upstream authority).
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            allowed_origins: OriginAllowList::default(),
            origin: OriginMode::default(),
            preserve_host: false,
            forwarded: ForwardedMode::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            request_body_timeout: DEFAULT_REQUEST_BODY_TIMEOUT,
            max_upstream_requests: DEFAULT_MAX_UPSTREAM_REQUESTS,
            max_upstream_requests_per_ip: DEFAULT_MAX_UPSTREAM_REQUESTS / 4,
            ipv6_prefix: 64,
            allowed_hosts: Vec::new(),
        }
    }
}

/// The HTTP proxy, a cheap-to-clone hyper service.
///
/// Every request passes the proxy's own checks first (`Host`, `Origin`; its body gets the
/// `request-body-timeout` deadline), then the stage: a layer such as the gate's
/// ([`Proxy::gated`]) around the forwarding to the upstream, or the forwarding alone.
pub struct Proxy<C> {
    core: Core<C>,
    stage: Stage,
}

impl<C> Clone for Proxy<C> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            stage: self.stage.clone(),
        }
    }
}

/// What a request meets after the proxy's checks, type-erased so that a gated and a plain
/// proxy are one type.
type Stage = Arc<
    dyn Fn(
            Request<RequestBody<Incoming>>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<ProxyBody>> + Send>>
        + Send
        + Sync,
>;

/// The forwarding to the upstream, as a tower service: what a stage's layer wraps. It
/// takes any body (the client's, or the one a gate read).
pub struct Forward<C> {
    core: Core<C>,
}

impl<C> Clone for Forward<C> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
        }
    }
}

/// The proxy without its stage (held by the stage's [`Forward`]: no reference cycle).
struct Core<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for Core<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// What the proxy's front hands the forwarding through the request's extensions (a layer
/// in between passes them on).
#[derive(Clone)]
struct FrontInfo {
    peer: SocketAddr,
    started: Instant,
    body_state: Arc<BodyState>,
}

struct Inner<C> {
    client: Client<C, BoxBody<Bytes, BoxError>>,
    upstream: Upstream,
    side: Side,
    options: HttpOptions,
    metrics: Arc<ProxyMetrics>,
    /// `max-upstream-requests`: one permit per upstream request until its response ends.
    permits: Arc<Semaphore>,
    /// Upstream requests in flight per source.
    upstream_shares: Arc<SourceShares>,
    /// The client sidecar's h2 connections to a TLS upstream (see [`pool`]).
    pool: Option<Arc<H2Pool>>,
    busy_log: LogThrottle,
    host_log: LogThrottle,
    origin_log: LogThrottle,
    body_timeout_log: LogThrottle,
}

impl Proxy<PqConnector> {
    /// The client sidecar's proxy: h2 to a PQ TLS `upstream` over as many connections as its
    /// streams need (the client sidecar's h2 pool) rather than queueing past one connection's stream limit;
    /// an upstream that negotiates HTTP/1.1 gets the pooled HTTP/1.1 client.
    pub fn tunnel(upstream: Upstream, connector: PqConnector, options: HttpOptions) -> Self {
        let pool = upstream
            .is_tls()
            .then(|| Arc::new(H2Pool::new(connector.clone())));
        Self::build(
            upstream,
            connector,
            Side::Client,
            options,
            pool,
            Forward::stage,
        )
    }
}

impl<C> Proxy<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// A proxy to `upstream` over `connector`, pooling upstream connections.
    pub fn new(upstream: Upstream, connector: C, side: Side, options: HttpOptions) -> Self {
        Self::build(upstream, connector, side, options, None, Forward::stage)
    }

    /// A server-side proxy whose requests pass `gate` (a [`GateLayer`] around the
    /// forwarding) after the proxy's own `Host`/`Origin` checks, so that a request those
    /// refuse costs no rate-limit tokens and is not audited.
    pub fn gated(upstream: Upstream, connector: C, options: HttpOptions, gate: Arc<Gate>) -> Self {
        let layer = GateLayer::new(gate);
        Self::build(
            upstream,
            connector,
            Side::Server,
            options,
            None,
            move |forward| {
                let service = layer.layer(forward);
                Arc::new(move |req| {
                    let service = service.clone();
                    Box::pin(async move {
                        let response = match hyper::service::Service::call(&service, req).await {
                            Ok(r) => r,
                            Err(never) => match never {},
                        };
                        // The forwarding's body as it is (not boxed twice), or the gate's.
                        response.map(|b| match b.into_inner() {
                            Ok(body) => body,
                            Err(gated) => gated.boxed(),
                        })
                    })
                })
            },
        )
    }

    fn build(
        upstream: Upstream,
        connector: C,
        side: Side,
        options: HttpOptions,
        pool: Option<Arc<H2Pool>>,
        stage: impl FnOnce(Forward<C>) -> Stage,
    ) -> Self {
        let client = Client::builder(TokioExecutor::new())
            // Below the server sidecar's default idle-timeout (60 s): a pooled connection is
            // dropped here before the server closes it under a request.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_UPSTREAM.min(options.max_upstream_requests))
            .build(connector);
        let permits = Arc::new(Semaphore::new(
            options.max_upstream_requests.min(Semaphore::MAX_PERMITS),
        ));
        let upstream_shares = SourceShares::new(
            options.max_upstream_requests_per_ip as u64,
            options.ipv6_prefix,
        );
        let core = Core {
            inner: Arc::new(Inner {
                client,
                upstream,
                side,
                options,
                metrics: Arc::default(),
                permits,
                upstream_shares,
                pool,
                busy_log: LogThrottle::default(),
                host_log: LogThrottle::default(),
                origin_log: LogThrottle::default(),
                body_timeout_log: LogThrottle::default(),
            }),
        };
        let stage = stage(Forward { core: core.clone() });
        Self { core, stage }
    }

    /// Request, stream and upstream counters.
    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.core.inner.metrics
    }

    /// h2 connections the client sidecar has dialed to its TLS upstream so far (0 with
    /// any other upstream).
    pub fn upstream_connections_opened(&self) -> u64 {
        self.core.inner.pool.as_ref().map_or(0, |p| p.opened())
    }

    /// Forwards one request. Never fails: every problem becomes a response with a short
    /// plain-text body saying what went wrong.
    pub async fn forward(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let core = &self.core;
        let inner = &*core.inner;
        let started = Instant::now();
        let log = RequestLog {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            peer,
            started,
            metrics: inner.metrics.clone(),
        };
        // Every body gets the deadline, and lingers when refused unread (see RequestBody).
        let (mut parts, body) = req.into_parts();
        let (body, body_state) = RequestBody::new(
            body,
            inner.options.request_body_timeout,
            inner.options.max_body_bytes,
        );
        // Client-sent `x-mcp-pqtls-*` headers go before the stage, whose layer may set its
        // own (the gate's subject and scopes).
        headers::strip_tls_info(&mut parts.headers);
        parts.extensions.insert(FrontInfo {
            peer,
            started,
            body_state,
        });
        parts
            .extensions
            .get_or_insert_with(|| crate::serve::PeerAddr(peer));
        let req = Request::from_parts(parts, body);
        // Host and Origin first: a refused one costs no rate-limit tokens and is not audited.
        let checked = core
            .check_host(&req, peer)
            .and_then(|()| core.check_origin(req.headers(), peer));
        let response = match checked {
            Err(refused) => refused.into_response(),
            Ok(()) => (self.stage)(req).await,
        };
        inner.metrics.response(response.status());
        Tracked::wrap(response, log)
    }
}

impl<C> Forward<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// The stage of a proxy without a layer: the forwarding alone.
    fn stage(self) -> Stage {
        Arc::new(move |req| {
            let forward = self.clone();
            Box::pin(async move { forward.forward(req).await })
        })
    }

    /// Checks and rewrites the request for the upstream, and sends it.
    async fn forward<B>(&self, req: Request<B>) -> Response<ProxyBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let front = req.extensions().get::<FrontInfo>().cloned();
        // Always there when the request came through Proxy::forward; the fallback only
        // keeps a request that did not from failing.
        let front = front.unwrap_or_else(|| FrontInfo {
            peer: req
                .extensions()
                .get::<crate::serve::PeerAddr>()
                .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0),
            started: Instant::now(),
            body_state: Arc::default(),
        });
        let core = &self.core;
        let result = match core.prepare(req, front.peer) {
            Ok(upstream_req) => {
                core.send(upstream_req, front.peer, front.started, &front.body_state)
                    .await
            }
            Err(refused) => Err(refused),
        };
        result.unwrap_or_else(LocalReply::into_response)
    }
}

impl<C, B> tower_service::Service<Request<B>> for Forward<C>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let forward = self.clone();
        Box::pin(async move { Ok(forward.forward(req).await) })
    }
}

impl<C> Core<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// The DNS-rebinding guard: a page on `evil.example` rebound to 127.0.0.1 reaches the
    /// client sidecar with `Host: evil.example:PORT` (browsers send no `Origin` on
    /// same-origin GETs), so only the hosts on the list are served. A missing `Host` (and,
    /// over h2, `:authority`) is refused too.
    fn check_host<B>(&self, req: &Request<B>, peer: SocketAddr) -> Result<(), LocalReply> {
        let inner = &*self.inner;
        let allowed = &inner.options.allowed_hosts;
        if allowed.is_empty() || allowed.iter().any(|h| h == "*") {
            return Ok(());
        }
        let host = req
            .headers()
            .get(HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
        if let Some(h) = &host {
            if allowed.iter().any(|a| a.eq_ignore_ascii_case(h)) {
                return Ok(());
            }
        }
        inner.metrics.refusal(ProxyRefusal::Host);
        crate::throttled!(inner.host_log, warn, client.addr = %peer, http.host = ?host, "Refused request: Host not in allowed-hosts (DNS rebinding?)");
        Err(local(
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not served here (allowed-hosts)\n".to_owned(),
        ))
    }

    fn check_origin(&self, headers: &http::HeaderMap, peer: SocketAddr) -> Result<(), LocalReply> {
        let inner = &*self.inner;
        inner.options.allowed_origins.check(headers).map_err(|origin| {
            inner.metrics.origin_refused();
            crate::throttled!(inner.origin_log, warn, client.addr = %peer, http.origin = ?origin,
                "Refused request: Origin not in allowed-origins");
            local(
                StatusCode::FORBIDDEN,
                format!("origin {origin} is not allowed\n"),
            )
        })
    }

    /// Checks (size) and rewrites the client's request for the upstream; the Origin was
    /// checked in [`Proxy::forward`].
    fn prepare<B>(
        &self,
        req: Request<B>,
        peer: SocketAddr,
    ) -> Result<Request<BoxBody<Bytes, BoxError>>, LocalReply>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let inner = &*self.inner;
        let too_big = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > inner.options.max_body_bytes);
        if too_big {
            return Err(self.body_too_large());
        }

        let (mut parts, body) = req.into_parts();
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        let headers = &mut parts.headers;
        headers::remove_hop_by_hop(headers);
        // Client-sent x-mcp-pqtls-* headers were stripped in Proxy::forward.
        headers::forwarded(
            headers,
            inner.options.forwarded,
            &headers::Hop {
                peer: peer.ip(),
                proto: match inner.side {
                    Side::Server => "https",
                    Side::Client => "http",
                },
                host: host.as_deref(),
            },
        );
        // h2 clients send `:authority` rather than `Host`: preserving means either.
        let host_upstream = match (&host, inner.options.preserve_host) {
            (Some(h), true) => h.as_str(),
            _ => inner.upstream.authority(),
        };
        headers::upstream_host_origin(
            headers,
            host_upstream,
            inner.upstream.origin(),
            inner.options.origin,
        );
        if let (Side::Server, Some(info)) = (inner.side, ConnectionInfo::of(&parts.extensions)) {
            headers.extend(headers::tls_info(info));
        }
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        parts.uri = inner.upstream.uri(&path).map_err(|e| {
            local(
                StatusCode::BAD_REQUEST,
                format!("bad request target: {e}\n"),
            )
        })?;
        // The upstream hop is HTTP/1.1 (or h2 when the TLS upstream negotiates it); the
        // client's version says nothing about it.
        parts.version = http::Version::HTTP_11;
        let body = Limited::new(body, inner.options.max_body_bytes as usize).boxed();
        Ok(Request::from_parts(parts, body))
    }

    async fn send(
        &self,
        req: Request<BoxBody<Bytes, BoxError>>,
        peer: SocketAddr,
        started: Instant,
        body_state: &BodyState,
    ) -> Result<Response<ProxyBody>, LocalReply> {
        let inner = &*self.inner;
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        // F3: one permit per upstream request, held until its response body ends, so that
        // streams multiplexed over few client connections cannot fan out without bound.
        // The source's share first: one host's streams must not hold every permit.
        let permit = inner
            .upstream_shares
            .admit(peer.ip())
            .ok_or((
                UpstreamErrorKind::RejectedPerIp,
                "max-upstream-requests-per-ip",
            ))
            .and_then(|share| {
                let permit = inner
                    .permits
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| (UpstreamErrorKind::Rejected, "max-upstream-requests"))?;
                Ok((share, permit))
            });
        let permit = match permit {
            Ok(p) => p,
            Err((kind, limit)) => {
                inner.metrics.upstream_error(kind);
                crate::throttled!(inner.busy_log, warn, upstream = %inner.upstream, client.addr = %peer, limit,
                        max_upstream_requests = inner.options.max_upstream_requests,
                        max_upstream_requests_per_ip = inner.options.max_upstream_requests_per_ip, "Refused request: upstream requests in flight at their limit");
                return Err(LocalReply::Text {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    body: format!("too many upstream requests in flight ({limit})\n"),
                    retry_after: true,
                });
            }
        };
        let timeout = inner.options.upstream_timeout;
        let result = tokio::time::timeout(timeout, self.request(req)).await;
        inner.metrics.upstream_latency(started.elapsed());
        let (mut response, lease) = match result {
            Ok(Ok(r)) => r,
            Ok(Err(_)) if body_state.timed_out() => return Err(self.body_timed_out()),
            Ok(Err(Failure::Client(e))) if BodyTimeout::in_chain(&e) => {
                return Err(self.body_timed_out())
            }
            Ok(Err(Failure::Client(e))) if error_chain(&e).any(|s| s.is::<LengthLimitError>()) => {
                return Err(self.body_too_large())
            }
            Ok(Err(failure)) => {
                let (kind, e): (_, &(dyn StdError + 'static)) = match &failure {
                    Failure::Client(e) if e.is_connect() => (UpstreamErrorKind::Connect, e),
                    Failure::Client(e) => (UpstreamErrorKind::Request, e),
                    Failure::Pool(e @ PoolError::Connect(_)) => (UpstreamErrorKind::Connect, e),
                    Failure::Pool(e) => (UpstreamErrorKind::Request, e),
                };
                inner.metrics.upstream_error(kind);
                let cause = error_chain(e)
                    .last()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.to_string());
                warn!(upstream = %inner.upstream, http.method = %method, http.path = %path, error = %cause, "Upstream request failed");
                return Err(local(
                    StatusCode::BAD_GATEWAY,
                    format!("upstream {} unavailable: {cause}\n", inner.upstream),
                ));
            }
            Err(_) => {
                inner.metrics.upstream_error(UpstreamErrorKind::Timeout);
                warn!(upstream = %inner.upstream, http.method = %method, http.path = %path, timeout = ?timeout, "Upstream did not respond in time");
                return Err(local(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "upstream {} sent no response within {}\n",
                        inner.upstream,
                        humantime::format_duration(timeout)
                    ),
                ));
            }
        };
        // An Arc, not the info: the headers are borrowed mutably next.
        let info = response.extensions().get::<Arc<ConnectionInfo>>().cloned();
        let headers = response.headers_mut();
        headers::remove_hop_by_hop(headers);
        headers::strip_tls_info(headers);
        if let (Side::Client, Some(info)) = (inner.side, &info) {
            headers.extend(headers::tls_info(info));
        }
        Ok(response.map(|body| Holding::wrap(body, (permit, lease))))
    }

    /// One upstream request: over the h2 pool when there is one (and the upstream speaks
    /// h2), else the legacy client.
    async fn request(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Option<pool::Lease>), Failure> {
        let inner = &*self.inner;
        let req = match &inner.pool {
            Some(pool) => match pool.send(req).await {
                Ok((res, lease)) => return Ok((res, Some(lease))),
                Err(PoolError::Http1(req)) => *req,
                Err(e) => return Err(Failure::Pool(e)),
            },
            None => req,
        };
        let res = inner.client.request(req).await.map_err(Failure::Client)?;
        Ok((res, None))
    }

    fn body_timed_out(&self) -> LocalReply {
        let inner = &*self.inner;
        inner.metrics.refusal(ProxyRefusal::BodyTimeout);
        crate::throttled!(inner.body_timeout_log, warn, timeout = ?inner.options.request_body_timeout, "Request body not complete within request-body-timeout");
        local(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not complete within request-body-timeout ({})\n",
                humantime::format_duration(inner.options.request_body_timeout)
            ),
        )
    }

    fn body_too_large(&self) -> LocalReply {
        self.inner.metrics.body_too_large();
        local(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body larger than max-body-bytes ({} bytes)\n",
                self.inner.options.max_body_bytes
            ),
        )
    }
}

/// A response made here rather than upstream: a status and a one-line reason.
enum LocalReply {
    Text {
        status: StatusCode,
        body: String,
        /// `Retry-After: 1`: a refusal for load, worth retrying soon.
        retry_after: bool,
    },
}

/// Why an upstream request got no response.
enum Failure {
    Client(hyper_util::client::legacy::Error),
    Pool(PoolError),
}

impl LocalReply {
    fn into_response(self) -> Response<ProxyBody> {
        let r = match self {
            Self::Text {
                status,
                body,
                retry_after,
            } => {
                let mut r = Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                if retry_after {
                    r.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                r
            }
        };
        r.map(|b| b.map_err(|never| match never {}).boxed())
    }
}

fn local(status: StatusCode, body: String) -> LocalReply {
    LocalReply::Text {
        status,
        body,
        retry_after: false,
    }
}

fn error_chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |e| (*e).source())
}

impl<C> hyper::service::Service<Request<Incoming>> for Proxy<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let proxy = self.clone();
        let peer = req
            .extensions()
            .get::<crate::serve::PeerAddr>()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0);
        Box::pin(async move { Ok(proxy.forward(req, peer).await) })
    }
}
