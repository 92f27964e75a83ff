//! `connect`: one HTTPS GET over PQ TLS, reporting what our side negotiated.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use crate::tls::{ClientError, ConnectionInfo, PqConnector};

/// The outcome of [`get`].
#[derive(Debug)]
pub struct Fetched {
    /// Our side of the handshake.
    pub info: Arc<ConnectionInfo>,
    /// The response status.
    pub status: StatusCode,
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
    let http = |e: hyper::Error| ClientError::Http(e.to_string());
    let stream = connector.clone().call(url.clone()).await?;
    let info = Arc::new(stream.info().clone());
    let authority = url
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let resp = if info.alpn.as_deref() == Some("h2") {
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), stream)
            .await
            .map_err(http)?;
        tokio::spawn(conn);
        let req = Request::get(url).body(Empty::<Bytes>::new());
        sender
            .send_request(req.map_err(|e| ClientError::Http(e.to_string()))?)
            .await
            .map_err(http)?
    } else {
        let (mut sender, conn) = http1::handshake(stream).await.map_err(http)?;
        tokio::spawn(conn);
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let req = Request::get(path)
            .header(header::HOST, authority)
            .body(Empty::<Bytes>::new());
        sender
            .send_request(req.map_err(|e| ClientError::Http(e.to_string()))?)
            .await
            .map_err(http)?
    };
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
    Ok(Fetched { info, status, body })
}
