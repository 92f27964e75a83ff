//! The gate as a tower layer: [`GateLayer`] wraps any service that takes a `Request` with a
//! body, so that a server linking this crate gets tokens, rules, rate limits and audit
//! in-process, as the sidecar does. The [`crate::tls::ConnectionInfo`],
//! [`crate::serve::PeerAddr`] and [`crate::serve::ConnectionId`] the gate reads are the
//! request extensions [`crate::serve`] sets; without them the gate sees no TLS facts, the
//! address `0.0.0.0:0` and no per-connection cap.
//!
//! A refused request never reaches the inner service: the client gets the gate's answer.
//! An admitted one reaches it with the body the gate read (or the client's, unread), the
//! token removed unless `forward-token`, and the verified subject and scopes in
//! `x-mcp-pqtls-subject`/`x-mcp-pqtls-scopes` (headers of those names sent by the client
//! are removed first). Its audit records are written at the response head.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};

use super::approval::Outcome;
use super::held::{accepts_sse, event, jsonrpc_error, relay, Events};
use super::jsonrpc;
use super::legacy::{legacy_session, LegacyStream};
use super::refusal::json_response;
use super::{BoxError, Gate, GateBody};
use crate::serve::PeerAddr;
use crate::sse::is_event_stream;

/// Puts a [`Gate`] in front of a service: `GateLayer::new(gate).layer(service)`.
///
/// The `layer` method has the shape of `tower_layer::Layer`'s (this crate does not depend
/// on `tower-layer`; wrap it in `tower::layer::layer_fn(|s| gate_layer.layer(s))` to use it
/// in a `ServiceBuilder`).
///
/// # Example
/// ```no_run
/// # use std::convert::Infallible;
/// # use std::task::{Context, Poll};
/// # use http_body_util::Full;
/// # use hyper::body::Bytes;
/// # use mcp_pqtls::gate::GateBody;
/// # /// A stand-in for an MCP server (an axum `Router`, rmcp's `StreamableHttpService`...).
/// # #[derive(Clone)]
/// # struct Mcp;
/// # impl tower_service::Service<http::Request<GateBody>> for Mcp {
/// #     type Response = http::Response<Full<Bytes>>;
/// #     type Error = Infallible;
/// #     type Future = std::future::Ready<Result<Self::Response, Infallible>>;
/// #     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
/// #         Poll::Ready(Ok(()))
/// #     }
/// #     fn call(&mut self, _: http::Request<GateBody>) -> Self::Future {
/// #         std::future::ready(Ok(http::Response::new(Full::new(Bytes::from("{}")))))
/// #     }
/// # }
/// # async fn run(acceptor: mcp_pqtls::tls::PqAcceptor, config: mcp_pqtls::gate::GateConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use mcp_pqtls::gate::{Gate, GateLayer};
///
/// let gate = Arc::new(Gate::new(config)?);
/// let service = GateLayer::new(gate).layer(Mcp);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// mcp_pqtls::serve(listener, acceptor, service, tokio::signal::ctrl_c()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct GateLayer {
    gate: Option<Arc<Gate>>,
}

impl GateLayer {
    /// A layer deciding every request with `gate`.
    pub fn new(gate: Arc<Gate>) -> Self {
        Self { gate: Some(gate) }
    }

    /// A layer with `gate`, or, without one, passing every request through (its body boxed
    /// as a [`GateBody`], so that both cases are one service type).
    pub fn optional(gate: Option<Arc<Gate>>) -> Self {
        Self { gate }
    }

    /// Wraps `inner`.
    pub fn layer<S>(&self, inner: S) -> GateService<S> {
        GateService {
            gate: self.gate.clone(),
            inner,
        }
    }
}

/// A service behind a [`Gate`]; made by [`GateLayer::layer`]. It is a tower service and a
/// hyper service (so [`crate::serve`] takes it as it is); the inner service must be `Clone`,
/// as each request is handed to a clone once the gate has admitted it (its readiness is
/// awaited then, on that clone).
#[derive(Clone, Debug)]
pub struct GateService<S> {
    gate: Option<Arc<Gate>>,
    inner: S,
}

impl<S> GateService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Decides `req`, then hands it to a clone of the inner service.
    fn serve<B, ResB>(&self, req: Request<B>) -> GateFuture<ResB, S::Error>
    where
        S: tower_service::Service<Request<GateBody>, Response = Response<ResB>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
        ResB: Body<Data = Bytes> + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let gate = self.gate.clone();
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let Some(gate) = gate else {
                let req = req.map(|b| b.map_err(Into::into).boxed());
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                return Ok(boxed(inner.call(req)).await?.map(GateResponseBody::inner));
            };
            let peer = req
                .extensions()
                .get::<PeerAddr>()
                .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0);
            let legacy = legacy_session(req.method(), req.uri(), req.headers());
            let legacy_stream =
                req.method() == Method::GET && !req.headers().contains_key("mcp-session-id");
            let owner = if legacy.is_some() || legacy_stream {
                gate.legacy_owner(&req, peer)
            } else {
                String::new()
            };
            let (mut req, admitted) = match gate.admit(req, peer).await {
                Ok(admitted) => admitted,
                Err(refused) => {
                    let refused = match &legacy {
                        Some(session) => gate.to_legacy_stream(session, &owner, *refused).await,
                        None => *refused,
                    };
                    return Ok(refused.map(GateResponseBody::refused));
                }
            };
            admitted.apply(req.headers_mut());
            if admitted.is_held() {
                return respond(gate, inner, req, admitted, legacy_stream, owner).await;
            }
            forward(&gate, inner, req, admitted, legacy_stream, owner).await
        })
    }
}

/// Sends an admitted request to `inner`; its answer goes back judged (`[tools]`), legacy
/// streams carry the gate's refusals, and the audit records are written at the head.
pub(super) async fn forward<S, ResB>(
    gate: &Gate,
    mut inner: S,
    req: Request<GateBody>,
    mut admitted: super::Admitted,
    legacy_stream: bool,
    owner: String,
) -> Result<Response<GateResponseBody<ResB>>, S::Error>
where
    S: tower_service::Service<Request<GateBody>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    admitted.sending();
    let result = async {
        std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
        boxed(inner.call(req)).await
    }
    .await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            // An inner error leaves the client without a response (hyper closes the
            // stream); the call may have run, so it is audited, as a 500.
            admitted.finish(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(e);
        }
    };
    let (mut parts, body) = response.into_parts();
    let mut body = match admitted.listing(parts.status, &mut parts.headers, body) {
        Ok(listing) => GateResponseBody::wrapped(listing.boxed_unsync()),
        Err(body) => GateResponseBody::inner(body),
    };
    if legacy_stream && parts.status == StatusCode::OK && is_event_stream(&parts.headers) {
        let stream = LegacyStream::new(body, gate.legacy_streams(), owner);
        body = GateResponseBody::wrapped(stream.boxed_unsync());
    }
    admitted.finish(parts.status);
    Ok(Response::from_parts(parts, body))
}

/// Answers a held call: at once with an SSE response when the client accepts one, else when
/// it is decided (see [`super::held`]). Approved, it goes upstream unchanged by [`forward`].
pub(super) async fn respond<S, ResB>(
    gate: Arc<Gate>,
    inner: S,
    req: Request<GateBody>,
    mut admitted: super::Admitted,
    legacy_stream: bool,
    owner: String,
) -> Result<Response<GateResponseBody<ResB>>, S::Error>
where
    S: tower_service::Service<Request<GateBody>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let legacy = super::legacy::legacy_session(req.method(), req.uri(), req.headers());
    if !accepts_sse(req.headers()) || legacy.is_some() {
        return match admitted.approval().await {
            Some(d) if d.decision != Outcome::Approved => {
                let error = gate.not_approved(admitted, &d);
                let r = json_response(StatusCode::FORBIDDEN, error.to_string().into_bytes());
                // A legacy HTTP+SSE client reads answers on its session's stream only.
                let r = match &legacy {
                    Some(session) => gate.to_legacy_stream(session, &owner, r).await,
                    None => r,
                };
                Ok(r.map(GateResponseBody::refused))
            }
            _ => forward(&gate, inner, req, admitted, legacy_stream, owner).await,
        };
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let Some((approval_id, id, keepalive)) = admitted
            .holding()
            .map(|h| (h.hold.id().to_owned(), h.id.clone(), h.keepalive))
        else {
            return;
        };
        let mut tick = tokio::time::interval(keepalive);
        let waiting = Bytes::from(format!(": waiting for approval {approval_id}\n\n"));
        let decided = loop {
            tokio::select! {
                d = admitted.approval() => break d,
                _ = tick.tick() => {
                    if tx.send(waiting.clone()).await.is_err() {
                        return; // the client left: dropping `admitted` cancels
                    }
                }
                _ = tx.closed() => return,
            }
        };
        let Some(decided) = decided.filter(|d| d.decision != Outcome::Approved) else {
            // The comments go on until the upstream's answer starts: a slow tool must not
            // look idle to a proxy either.
            // `.ok()`: the inner service's error need not be `Send` (it ends the call anyway).
            let mut sent = std::pin::pin!(async {
                forward(&gate, inner, req, admitted, legacy_stream, owner)
                    .await
                    .ok()
            });
            let answer = loop {
                tokio::select! {
                    r = &mut sent => break r,
                    _ = tick.tick() => {
                        if tx.send(waiting.clone()).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            };
            match answer {
                Some(r) => relay(r, id, &tx).await,
                None => {
                    let error = jsonrpc_error(
                        id,
                        jsonrpc::INTERNAL_ERROR,
                        "the approved call failed upstream",
                    );
                    let _ = tx.send(event(&error)).await;
                }
            }
            return;
        };
        let error = gate.not_approved(admitted, &decided);
        let _ = tx.send(event(&error)).await;
    });
    let mut r = Response::new(GateResponseBody::wrapped(Events { rx }.boxed_unsync()));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// The inner service's future, boxed: held across an `await` as its own type, rustc cannot
/// prove it `Send` for every lifetime of the (elided) `dyn Error` in [`GateBody`].
fn boxed<F>(f: F) -> Pin<Box<dyn Future<Output = F::Output> + Send>>
where
    F: Future + Send + 'static,
{
    Box::pin(f)
}

type GateFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<GateResponseBody<B>>, E>> + Send>>;

impl<S, B, ResB> tower_service::Service<Request<B>> for GateService<S>
where
    S: tower_service::Service<Request<GateBody>, Response = Response<ResB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<GateResponseBody<ResB>>;
    type Error = S::Error;
    type Future = GateFuture<ResB, S::Error>;

    /// Always ready: the gate decides first, and the inner service's readiness is awaited
    /// on the clone that gets the admitted request.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.serve(req)
    }
}

impl<S, B, ResB> hyper::service::Service<Request<B>> for GateService<S>
where
    S: tower_service::Service<Request<GateBody>, Response = Response<ResB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<GateResponseBody<ResB>>;
    type Error = S::Error;
    type Future = GateFuture<ResB, S::Error>;

    fn call(&self, req: Request<B>) -> Self::Future {
        self.serve(req)
    }
}

pin_project_lite::pin_project! {
    /// The body of a [`GateService`] response: the inner service's, or the gate's own
    /// answer to a refused request.
    pub struct GateResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        // Read by the gate on its way (every answer with `[tools]`, legacy streams); boxed,
        // as these bodies nest. In a `Mutex` (only ever `get_mut`, never contended) so that
        // the body is `Sync` whenever the inner one is not required to be (axum's is not).
        Wrapped { body: Mutex<UnsyncBoxBody<Bytes, BoxError>> },
        Refused { body: Full<Bytes> },
    }
}

impl<B> GateResponseBody<B> {
    pub(super) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(super) fn wrapped(body: UnsyncBoxBody<Bytes, BoxError>) -> Self {
        Self {
            kind: Kind::Wrapped {
                body: Mutex::new(body),
            },
        }
    }

    pub(super) fn refused(body: Full<Bytes>) -> Self {
        Self {
            kind: Kind::Refused { body },
        }
    }

    /// The inner service's body as it came, or (`Err`) this body: the gate's refusal, or the
    /// inner body with its `tools/list` results judged.
    pub fn into_inner(self) -> Result<B, Self> {
        match self.kind {
            Kind::Inner { body } => Ok(body),
            kind => Err(Self { kind }),
        }
    }
}

impl<B> Body for GateResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Wrapped { body } => {
                Pin::new(body.get_mut().unwrap_or_else(PoisonError::into_inner)).poll_frame(cx)
            }
            KindProj::Refused { body } => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Wrapped { body } => body
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_end_stream(),
            Kind::Refused { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Wrapped { body } => body
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .size_hint(),
            Kind::Refused { body } => body.size_hint(),
        }
    }
}
