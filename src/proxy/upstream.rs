//! Where the proxy sends requests: `http://HOST:PORT` or `unix:/PATH` (server mode), or
//! `https://HOST:PORT` (client mode, through a [`crate::tls::PqConnector`]).

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;

/// A parsed upstream address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    given: String,
    scheme: http::uri::Scheme,
    authority: String,
    origin: String,
    unix: Option<PathBuf>,
}

impl Upstream {
    /// Parses `http://HOST:PORT`, `https://HOST:PORT` or `unix:/PATH`. A path other than `/`
    /// is refused: requests keep their own path.
    pub fn parse(s: &str) -> Result<Self, UpstreamError> {
        let bad = |why: &str| UpstreamError {
            given: s.to_owned(),
            why: why.to_owned(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.trim_start_matches("//");
            if !path.starts_with('/') {
                return Err(bad(
                    "a Unix socket path must be absolute, e.g. unix:/run/mcp.sock",
                ));
            }
            return Ok(Self {
                given: s.to_owned(),
                scheme: http::uri::Scheme::HTTP,
                // What a loopback server expects to see; the socket path is no authority.
                authority: "localhost".to_owned(),
                origin: "http://localhost".to_owned(),
                unix: Some(PathBuf::from(path)),
            });
        }
        let uri: Uri = s.parse().map_err(|_| bad("not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => http::uri::Scheme::HTTP,
            Some("https") => http::uri::Scheme::HTTPS,
            _ => return Err(bad("the scheme must be http, https or unix")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| bad("no host"))?
            .as_str()
            .to_owned();
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(
                "give only scheme, host and port: requests keep their own path",
            ));
        }
        Ok(Self {
            given: s.trim_end_matches('/').to_owned(),
            origin: format!("{scheme}://{authority}"),
            scheme,
            authority,
            unix: None,
        })
    }

    /// Whether the upstream is reached over TLS (client mode).
    pub fn is_tls(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }

    /// The Unix socket, for a `unix:` upstream.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_deref()
    }

    /// The `Host` the upstream expects to see.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The upstream's own origin (`scheme://authority`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The upstream URI of a request for `path_and_query`.
    pub(crate) fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.as_str())
            .path_and_query(path_and_query)
            .build()
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.given)
    }
}

/// An upstream that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("upstream `{given}`: {why}")]
pub struct UpstreamError {
    given: String,
    why: String,
}

/// Connects to a plain-HTTP upstream over TCP or a Unix socket (server mode).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum UpstreamConnector {
    /// TCP, by the request URI's authority.
    Tcp(hyper_util::client::legacy::connect::HttpConnector),
    /// This Unix socket, whatever the URI says.
    Unix(Arc<PathBuf>),
}

impl UpstreamConnector {
    /// The connector for `upstream` (which must not be `https`).
    pub fn for_upstream(upstream: &Upstream) -> Self {
        match upstream.unix_path() {
            Some(p) => Self::Unix(Arc::new(p.to_owned())),
            None => {
                let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
                http.set_nodelay(true);
                http.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
                Self::Tcp(http)
            }
        }
    }
}

/// A connection made by [`UpstreamConnector`].
#[non_exhaustive]
pub enum UpstreamIo {
    /// Over TCP.
    Tcp(TokioIo<tokio::net::TcpStream>),
    /// Over a Unix socket.
    Unix(TokioIo<tokio::net::UnixStream>),
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = UpstreamIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<UpstreamIo>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Tcp(http) => http.poll_ready(cx).map_err(io::Error::other),
            Self::Unix(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self {
            Self::Tcp(http) => {
                let connecting = http.call(uri);
                Box::pin(
                    async move { Ok(UpstreamIo::Tcp(connecting.await.map_err(io::Error::other)?)) },
                )
            }
            Self::Unix(path) => {
                let path = path.clone();
                Box::pin(async move {
                    let stream = tokio::net::UnixStream::connect(&*path).await.map_err(|e| {
                        io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                    })?;
                    Ok(UpstreamIo::Unix(TokioIo::new(stream)))
                })
            }
        }
    }
}

impl hyper_util::client::legacy::connect::Connection for UpstreamIo {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        match self {
            Self::Tcp(s) => s.connected(),
            Self::Unix(s) => s.connected(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            UpstreamIo::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            UpstreamIo::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_operators_write() {
        let u = Upstream::parse("http://127.0.0.1:8000/").unwrap();
        assert_eq!(u.authority(), "127.0.0.1:8000");
        assert_eq!(u.origin(), "http://127.0.0.1:8000");
        assert_eq!(u.to_string(), "http://127.0.0.1:8000");
        assert_eq!(u.uri("/mcp?x=1").unwrap(), "http://127.0.0.1:8000/mcp?x=1");
        assert!(Upstream::parse("https://mcp.example.com:8443")
            .unwrap()
            .is_tls());
        let unix = Upstream::parse("unix:/run/mcp.sock").unwrap();
        assert_eq!(unix.unix_path(), Some(Path::new("/run/mcp.sock")));
        assert_eq!(unix.authority(), "localhost");
        for (bad, why) in [
            ("ftp://x:1", "scheme"),
            ("http://127.0.0.1:8000/mcp", "requests keep their own path"),
            ("unix:run/mcp.sock", "absolute"),
            ("127.0.0.1:8000", "scheme"),
        ] {
            let e = Upstream::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }
}
