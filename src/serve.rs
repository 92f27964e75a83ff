//! Serving a hyper (or tower, via `hyper_util::service::TowerToHyperService`) service over
//! PQ TLS: HTTP/1.1 or h2 by ALPN, the [`ConnectionInfo`] in every request's extensions, and
//! graceful shutdown.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{debug, info, Instrument};

use crate::tls::PqAcceptor;

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
    let graceful = GracefulShutdown::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, keep serving.
                    debug!(error = %e, "Accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        let watcher = graceful.watcher();
        let mut stop = stop_rx.clone();
        let span = tracing::info_span!("conn", client.addr = %peer);
        tokio::spawn(
            async move {
                // A handshake still running at shutdown is abandoned: no request started.
                let accepted = tokio::select! {
                    r = acceptor.accept(tcp, peer) => r,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let Ok((tls, info)) = accepted else { return };
                let h2 = info.alpn.as_deref() == Some("h2");
                let info = Arc::new(info);
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(info.clone());
                    service.call(req)
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let builder = if h2 {
                    builder.http2_only()
                } else {
                    builder.http1_only()
                };
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    debug!(error = %e, "Connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
    let _ = stop_tx.send(true);
    info!("Shutting down: waiting for in-flight requests");
    graceful.shutdown().await;
    Ok(())
}
