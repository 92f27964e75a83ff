//! `reflect`: a PQ TLS server that answers every request with the [`ConnectionInfo`] of its
//! connection, as JSON. Interop testers point any client at it to see what they negotiated.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::tls::{ConnectionInfo, PqAcceptor};

/// Serves the reflect service on `listener` until `shutdown` completes.
pub async fn reflect(
    listener: TcpListener,
    acceptor: PqAcceptor,
    shutdown: impl Future,
) -> std::io::Result<()> {
    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
        Ok::<_, Infallible>(reflect_response(&req))
    });
    crate::Server::builder(listener)
        .tls(acceptor)
        .serve_hyper(service, shutdown)
        .await
}

fn reflect_response<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let (status, body) = match ConnectionInfo::of(req.extensions()).map(serde_json::to_vec_pretty) {
        Some(Ok(mut json)) => {
            json.push(b'\n');
            (StatusCode::OK, json)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, b"{}\n".to_vec()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
