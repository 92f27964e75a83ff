//! `connect`: one HTTPS GET over PQ TLS, reporting what our side negotiated.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use crate::tls::{ClientError, ConnectionInfo, PqConnector};

/// The outcome of [`get`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Fetched {
    /// Our side of the handshake.
    pub info: Arc<ConnectionInfo>,
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The response body.
    pub body: Bytes,
}

/// GETs `url` (`https://host:port/path`) over one new connection through `connector`
/// (HTTP/1.1 or h2, as ALPN decides).
///
/// # Example
/// ```no_run
/// # async fn run() -> Result<(), mcp_pqtls::tls::ClientError> {
/// use mcp_pqtls::tls::{ClientTlsConfig, PqConnector};
/// let connector = PqConnector::new(ClientTlsConfig::default())?; // pq-required, system roots
/// let fetched = mcp_pqtls::get(&connector, "https://localhost:8443/".parse().unwrap()).await?;
/// println!("{} over {}", fetched.status, fetched.info.group);
/// # Ok(()) }
/// ```
pub async fn get(connector: &PqConnector, url: Uri) -> Result<Fetched, ClientError> {
    get_limited(connector, url, usize::MAX).await
}

/// As [`get`], refusing a body larger than `limit` bytes as it arrives.
pub(crate) async fn get_limited(
    connector: &PqConnector,
    url: Uri,
    limit: usize,
) -> Result<Fetched, ClientError> {
    let req = Request::get(url).body(Empty::<Bytes>::new());
    request_limited(connector, req.map_err(ClientError::Request)?, limit).await
}

/// POSTs `body` to `url` with `headers`, over one new connection; the response body is
/// refused past `limit` bytes as it arrives.
#[cfg(feature = "gate")] // tools/list for tool pinning
pub(crate) async fn post_limited(
    connector: &PqConnector,
    url: Uri,
    headers: HeaderMap,
    body: Bytes,
    limit: usize,
) -> Result<Fetched, ClientError> {
    let mut req = Request::post(url)
        .body(http_body_util::Full::new(body))
        .map_err(ClientError::Request)?;
    req.headers_mut().extend(headers);
    request_limited(connector, req, limit).await
}

/// What [`request`] got back.
#[derive(Debug)]
#[non_exhaustive]
pub struct Answer {
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The response body.
    pub body: Bytes,
}

/// Sends `req` over one new connection: `https://` through `connector` (PQ TLS, h2 or
/// HTTP/1.1 by ALPN), `http://` in the clear over HTTP/1.1 (an admin listener on loopback).
/// The response body is refused past `limit` bytes as it arrives.
pub async fn request(
    connector: &PqConnector,
    req: Request<http_body_util::Full<Bytes>>,
    limit: usize,
) -> Result<Answer, ClientError> {
    if req.uri().scheme_str() == Some("https") {
        let f = request_limited(connector, req, limit).await?;
        return Ok(Answer {
            status: f.status,
            headers: f.headers,
            body: f.body,
        });
    }
    let url = req.uri().clone();
    let (Some("http"), Some(authority)) = (url.scheme_str(), url.authority()) else {
        return Err(ClientError::Scheme(url.to_string()));
    };
    let addr = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:80", authority.host()),
    };
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|error| ClientError::Connect {
            addr: addr.clone(),
            error,
        })?;
    let (mut sender, conn) = http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(ClientError::Http)?;
    let conn = tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    parts.uri = url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e: http::uri::InvalidUri| ClientError::Request(http::Error::from(e)))?;
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        parts.headers.insert(header::HOST, host);
    }
    let sent = sender.send_request(Request::from_parts(parts, body)).await;
    let resp = or_connection_error(sent, conn)
        .await
        .map_err(ClientError::Http)?;
    let (parts, body) = resp.into_parts();
    let body = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|source| ClientError::Body { limit, source })?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Sends `req` (its URI absolute: `https://host:port/path`) over one new connection
/// (HTTP/1.1 or h2, as ALPN decides).
async fn request_limited<B>(
    connector: &PqConnector,
    req: Request<B>,
    limit: usize,
) -> Result<Fetched, ClientError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let url = req.uri().clone();
    let stream = connector.clone().call(url.clone()).await?;
    let server = stream.info().sni.clone().unwrap_or_default();
    // In TLS 1.3 the server checks the client certificate after the client has finished its
    // handshake: its refusal (alert) surfaces on the first read, inside hyper's error.
    let http = |e: hyper::Error| {
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::InvalidData {
                    let io = std::io::Error::new(io.kind(), io.to_string());
                    return ClientError::handshake(&server, connector.offered_groups(), io);
                }
            }
            source = s.source();
        }
        ClientError::Http(e)
    };
    let info = Arc::new(stream.info().clone());
    let resp = if info.alpn.as_deref() == Some("h2") {
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), stream)
            .await
            .map_err(http)?;
        let conn = tokio::spawn(conn);
        let sent = sender.send_request(req).await;
        or_connection_error(sent, conn).await.map_err(http)?
    } else {
        let (mut sender, conn) = http1::handshake(stream).await.map_err(http)?;
        let conn = tokio::spawn(conn);
        // HTTP/1.1: origin-form target, and the authority as Host.
        let (mut parts, body) = req.into_parts();
        let authority = url
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = path
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::Request(http::Error::from(e)))?;
        if let Ok(host) = HeaderValue::from_str(&authority) {
            parts.headers.insert(header::HOST, host);
        }
        let sent = sender.send_request(Request::from_parts(parts, body)).await;
        or_connection_error(sent, conn).await.map_err(http)?
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = http_body_util::Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => http(*e),
            Err(source) => ClientError::Body { limit, source },
        })?
        .to_bytes();
    Ok(Fetched {
        info,
        status,
        headers,
        body,
    })
}

/// A failed request reports the connection's own error when there is one: that is where
/// hyper keeps the TLS alert; the request side only says "connection error".
async fn or_connection_error<T>(
    sent: Result<T, hyper::Error>,
    conn: tokio::task::JoinHandle<Result<(), hyper::Error>>,
) -> Result<T, hyper::Error> {
    match sent {
        Ok(resp) => Ok(resp),
        Err(e) => match conn.await {
            Ok(Err(conn_error)) => Err(conn_error),
            _ => Err(e),
        },
    }
}
