//! The client side: a rustls ClientConfig from the same group/policy vocabulary, a
//! connector for hyper-util's client, and the client's own check of what was negotiated.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use super::info::ConnectionInfo;
use super::verify::{ServerCertCheck, ServerVerifier, USED_SCHEME};
use crate::certs::{CertError, Identity};
use crate::crypto::{provider, Algorithms};
use crate::groups::{display_list, Group, GroupId};
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError, PolicyMode, Refusal};

/// Everything the client side is configured with. Start from
/// [`ClientTlsConfig::default`] and set what differs:
///
/// ```
/// # let roots = std::sync::Arc::new(rustls::RootCertStore::empty());
/// let mut config = mcp_pqtls::ClientTlsConfig::default();
/// config.trust = mcp_pqtls::tls::Trust::Roots(roots);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientTlsConfig {
    /// Groups (in order of preference), suites and signature schemes. The policy decides
    /// which groups are offered (see [`PolicyMode::client_offer`]); the first one offered
    /// carries the key share. Default is [`Algorithms::default`].
    pub algorithms: Algorithms,
    /// The client's policy. Default is `pq-required`: never silently fall back to classical.
    pub policy: PolicyMode,
    /// How the server's certificate is checked. Default is [`Trust::System`].
    pub trust: Trust,
    /// A client certificate for mTLS. Default is none.
    pub identity: Option<Identity>,
    /// ALPN protocols in order of preference. Default is [`super::DEFAULT_ALPN`].
    pub alpn: Vec<Vec<u8>>,
    /// The server name to send and verify instead of the host connected to.
    /// Default is none (the host).
    pub sni: Option<String>,
    /// Time allowed for TCP connect plus handshake.
    /// Default is [`super::DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
}

impl Default for ClientTlsConfig {
    fn default() -> Self {
        Self {
            algorithms: Algorithms::default(),
            policy: PolicyMode::PqRequired,
            trust: Trust::System,
            identity: None,
            alpn: super::DEFAULT_ALPN.iter().map(|p| p.to_vec()).collect(),
            sni: None,
            handshake_timeout: super::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Which server certificates the client trusts.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Trust {
    /// Certificates issued under these roots.
    Roots(Arc<RootCertStore>),
    /// Certificates issued under the operating system's roots.
    System,
    /// Any certificate (`--insecure`): for throwaway test servers only. The server must still
    /// prove possession of its certificate's key. Made only by
    /// [`super::danger::insecure_skip_verify`], so that the risk is named where it is taken.
    InsecureSkipVerify(super::danger::SkipVerify),
}

/// Connects to PQ TLS servers under the client's policy. Clone it freely; clones share
/// configuration, session cache and metrics.
///
/// Usable directly ([`PqConnector::connect`]) or as the connector of hyper-util's client,
/// which then carries the [`ConnectionInfo`] in each response's extensions.
#[derive(Clone)]
pub struct PqConnector {
    inner: Arc<Inner>,
}

struct Inner {
    base: Arc<rustls::ClientConfig>,
    policy: PolicyMode,
    offered: Vec<Group>,
    sni: Option<String>,
    /// Our client certificate's identity, reported as `client_identity`.
    own_identity: Option<String>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl PqConnector {
    /// Validates the config and builds the rustls config.
    pub fn new(config: ClientTlsConfig) -> Result<Self, ClientError> {
        let alg = &config.algorithms;
        Policy::new(config.policy).validate(&alg.groups, false)?;
        let offered = config.policy.client_offer(&alg.groups);
        let provider = provider(&offered, &alg.cipher_suites);
        let check = match config.trust {
            Trust::InsecureSkipVerify(_) => {
                ServerCertCheck::Insecure(provider.signature_verification_algorithms)
            }
            Trust::Roots(roots) => ServerCertCheck::WebPki(
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build()?,
            ),
            Trust::System => ServerCertCheck::WebPki(
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(crate::certs::system_roots()?),
                    provider.clone(),
                )
                .build()?,
            ),
        };
        let schemes: Arc<[SignatureScheme]> = alg.signature_schemes.clone().into();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier { check, schemes }));
        let own_identity = config.identity.as_ref().and_then(|id| {
            let ee = id.certified_key().cert.first()?;
            crate::certs::identities(ee).into_iter().next()
        });
        let mut base = match config.identity {
            Some(id) => builder
                .with_client_cert_resolver(Arc::new(StaticClientCert(id.certified_key().clone()))),
            None => builder.with_no_client_auth(),
        };
        base.alpn_protocols = config.alpn;
        Ok(Self {
            inner: Arc::new(Inner {
                base: Arc::new(base),
                policy: config.policy,
                offered,
                sni: config.sni,
                own_identity,
                timeout: config.handshake_timeout,
                metrics: Arc::default(),
            }),
        })
    }

    /// The rustls config every handshake of this connector starts from: the groups the
    /// policy offers (under `pq-required` only the post-quantum ones, so a server that
    /// wants classical key exchange fails the handshake), the configured suites, the
    /// signature-scheme restriction, the trust, the client certificate and ALPN.
    ///
    /// For clients that bring their own TLS plumbing, such as reqwest (and so rmcp's
    /// `StreamableHttpClientTransport`): `reqwest::ClientBuilder::tls_backend_preconfigured`
    /// (`use_preconfigured_tls` before 0.13) takes it as it is. A clone: it shares the
    /// connector's session cache and verifier.
    ///
    /// What that path cannot do, because the handshake is then reqwest's, not
    /// [`PqConnector::handshake`]:
    /// - **no check after the handshake**: under `pq-preferred` a classical fallback is
    ///   neither logged nor counted in [`PqConnector::metrics`] (under `pq-required` none can
    ///   happen: no classical group is offered, and rustls refuses a server that picks a group
    ///   not offered);
    /// - **no [`ConnectionInfo`]** in responses: reqwest does not expose the TLS session;
    /// - **no `sni` override or handshake timeout** from [`ClientTlsConfig`]: reqwest sends
    ///   the URL's host and has its own `connect_timeout`;
    /// - reqwest sets ALPN from its own HTTP version preference (h2 and http/1.1 by default).
    ///
    /// # Example
    /// ```
    /// use mcp_pqtls::tls::{ClientTlsConfig, PqConnector};
    ///
    /// let connector = PqConnector::new(ClientTlsConfig::default())?; // pq-required
    /// let client = reqwest::Client::builder()
    ///     .tls_backend_preconfigured(connector.rustls_config())
    ///     .build()?;
    /// # drop(client);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rustls_config(&self) -> rustls::ClientConfig {
        (*self.inner.base).clone()
    }

    /// The groups this client offers, in order (the first carries the key share).
    pub fn offered_groups(&self) -> &[Group] {
        &self.inner.offered
    }

    /// The client's policy mode.
    pub fn policy(&self) -> PolicyMode {
        self.inner.policy
    }

    /// Handshake counters: completed per group, HelloRetryRequests, classical fallbacks,
    /// refusals, failures.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Connects to `host:port` and completes the handshake, within the handshake timeout.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(TlsStream<TcpStream>, ConnectionInfo), ClientError> {
        let timeout = self.inner.timeout;
        tokio::time::timeout(timeout, async {
            let tcp =
                TcpStream::connect((host, port))
                    .await
                    .map_err(|error| ClientError::Connect {
                        addr: format!("{host}:{port}"),
                        error,
                    })?;
            // Without it, Nagle holds a small write (a request's last bytes) until the
            // peer's delayed ACK: ~40 ms per keep-alive request, measured through the tunnel.
            let _ = tcp.set_nodelay(true);
            self.handshake(tcp, host).await
        })
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Runs the handshake over an established TCP stream; `host` is the name to verify
    /// unless the config sets `sni`.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
    ) -> Result<(TlsStream<TcpStream>, ConnectionInfo), ClientError> {
        let inner = &*self.inner;
        let name = inner.sni.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(super::bare_host(name))
            .map_err(|_| ClientError::ServerName(name.to_owned()))?
            .to_owned();
        let peer = tcp.peer_addr().map_err(|error| ClientError::Connect {
            addr: host.to_owned(),
            error,
        })?;
        let connect = TlsConnector::from(inner.base.clone()).connect(server_name.clone(), tcp);
        let ((tls, scheme), cert_sent) = CERT_REQUESTED
            .scope(Cell::new(false), async {
                let done = USED_SCHEME
                    .scope(Cell::new(None), async {
                        let tls = connect.await;
                        (tls, USED_SCHEME.with(Cell::get))
                    })
                    .await;
                (done, CERT_REQUESTED.with(Cell::get))
            })
            .await;
        let tls = tls.map_err(|error| {
            inner.metrics.handshake_failure();
            ClientError::handshake(name, &inner.offered, error)
        })?;
        let (_, conn) = tls.get_ref();
        let sni = match &server_name {
            ServerName::DnsName(d) => Some(d.as_ref().to_owned()),
            _ => None,
        };
        // Our identity only when the server asked for it: a certificate we hold but never
        // sent authenticates nothing.
        let identity = inner.own_identity.clone().filter(|_| cert_sent);
        let mut info = ConnectionInfo::from_state(conn, peer, sni, scheme, identity);
        let group = ConnectionInfo::group_id(conn).unwrap_or(GroupId(0));
        let fallback = inner.policy.check_negotiated(group).inspect_err(|r| {
            inner.metrics.policy_refusal(&r.reason);
        })?;
        info.classical_fallback = fallback;
        inner
            .metrics
            .handshake(group, info.hello_retry, info.resumed, fallback);
        if fallback {
            warn!(server.addr = %peer, server.name = ?name, tls.group = %info.group,
                "Classical key exchange: server chose no post-quantum group");
        } else {
            debug!(server.addr = %peer, tls.group = %info.group, tls.hello_retry = info.hello_retry, "Handshake complete");
        }
        Ok((tls, info))
    }
}

impl fmt::Debug for PqConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PqConnector")
            .field("policy", &self.inner.policy)
            .field("offered", &display_list(&self.inner.offered))
            .finish_non_exhaustive()
    }
}

impl tower_service::Service<Uri> for PqConnector {
    type Response = PqStream;
    type Error = ClientError;
    type Future = Pin<Box<dyn Future<Output = Result<PqStream, ClientError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if uri.scheme_str() != Some("https") {
                return Err(ClientError::Scheme(uri.to_string()));
            }
            let host = uri
                .host()
                .map(super::bare_host)
                .ok_or_else(|| ClientError::Scheme(uri.to_string()))?
                .to_owned();
            let (tls, info) = this.connect(&host, uri.port_u16().unwrap_or(443)).await?;
            Ok(PqStream {
                io: TokioIo::new(tls),
                info: Arc::new(info),
            })
        })
    }
}

/// Presents the one configured client certificate whenever the server asks.
#[derive(Debug)]
struct StaticClientCert(Arc<rustls::sign::CertifiedKey>);

tokio::task_local! {
    /// Whether the server sent a CertificateRequest in the handshake running in this task
    /// (rustls asks the resolver only then).
    static CERT_REQUESTED: Cell<bool>;
}

impl rustls::client::ResolvesClientCert for StaticClientCert {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let _ = CERT_REQUESTED.try_with(|r| r.set(true));
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client TLS stream as hyper sees it, carrying its [`ConnectionInfo`].
pub struct PqStream {
    io: TokioIo<TlsStream<TcpStream>>,
    info: Arc<ConnectionInfo>,
}

impl PqStream {
    /// What the handshake negotiated.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }
}

impl fmt::Debug for PqStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PqStream")
            .field("info", &self.info)
            .finish()
    }
}

impl Connection for PqStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new().extra(self.info.clone());
        if self.info.alpn.as_deref() == Some("h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for PqStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for PqStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Why a client connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client's policy does not fit its groups.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The handshake ended on a group our policy forbids.
    #[error("refused the server's choice: {0}")]
    Refused(#[from] Refusal),
    /// CA or client certificate problem.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The CA store cannot be used.
    #[error("CA: {0}")]
    Ca(#[from] rustls::client::VerifierBuilderError),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Not an `https://host[:port]` URL.
    #[error("`{0}` is not an https://HOST[:PORT] URL")]
    Scheme(String),
    /// Not a valid server name.
    #[error("`{0}` is not a valid server name (DNS name or IP address)")]
    ServerName(String),
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        error: io::Error,
    },
    /// The TLS handshake failed.
    #[error("handshake with {server} failed: {error}{hint}")]
    Handshake {
        /// The server name.
        server: String,
        /// What we offered.
        offered: Vec<Group>,
        /// What went wrong.
        error: io::Error,
        /// What it probably means.
        hint: String,
    },
    /// Connect plus handshake took too long.
    #[error("no completed handshake within {0:?}")]
    Timeout(Duration),
    /// The HTTP exchange after the handshake failed.
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    /// The request could not be built from the URL.
    #[error("HTTP: {0}")]
    Request(#[source] http::Error),
    /// The response body broke off, or was larger than the limit.
    #[error("HTTP: response body: {source} ({limit} bytes)")]
    Body {
        /// The size bound on the body.
        limit: usize,
        /// Why it stopped.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ClientError {
    pub(crate) fn handshake(server: &str, offered: &[Group], error: io::Error) -> Self {
        let hint = match alert_of(&error) {
            Some(AlertDescription::HandshakeFailure) => format!(
                " (the server accepts none of the groups we offered ({}), or its policy refused them)",
                display_list(offered)
            ),
            Some(AlertDescription::AccessDenied) => {
                " (the server's policy refused this client's identity)".to_owned()
            }
            Some(AlertDescription::CertificateRequired) => {
                " (the server requires a client certificate)".to_owned()
            }
            _ => match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(_)) => {
                    " (the server's certificate did not verify against the trusted CAs)".to_owned()
                }
                _ => String::new(),
            },
        };
        Self::Handshake {
            server: server.to_owned(),
            offered: offered.to_vec(),
            error,
            hint,
        }
    }

    /// The TLS alert the server sent, when a handshake failed on one.
    pub fn alert(&self) -> Option<AlertDescription> {
        match self {
            Self::Handshake { error, .. } => alert_of(error),
            _ => None,
        }
    }
}

/// The alert behind an I/O error from tokio-rustls. During the handshake it wraps the
/// rustls error; after it (a TLS 1.3 client-certificate refusal arrives on the first read)
/// only rustls's message survives: `received fatal alert: <Description>`.
fn alert_of(error: &io::Error) -> Option<AlertDescription> {
    if let Some(rustls::Error::AlertReceived(a)) = error.get_ref().and_then(|e| e.downcast_ref()) {
        return Some(*a);
    }
    let msg = error.to_string();
    let name = msg.strip_prefix("received fatal alert: ")?;
    [
        AlertDescription::HandshakeFailure,
        AlertDescription::AccessDenied,
        AlertDescription::CertificateRequired,
        AlertDescription::BadCertificate,
        AlertDescription::UnknownCA,
        AlertDescription::ProtocolVersion,
        AlertDescription::IllegalParameter,
    ]
    .into_iter()
    .find(|a| format!("{a:?}") == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `alert_of` reads an alert that arrived after the handshake from rustls's message (only
    /// the text survives in hyper's error): pin that text, so that a rustls release that
    /// words it otherwise fails here instead of losing the hint.
    #[test]
    fn alerts_are_read_back_from_rustls_messages() {
        for alert in [
            AlertDescription::HandshakeFailure,
            AlertDescription::AccessDenied,
            AlertDescription::CertificateRequired,
        ] {
            let text = rustls::Error::AlertReceived(alert).to_string();
            assert_eq!(text, format!("received fatal alert: {alert:?}"));
            let error = io::Error::new(io::ErrorKind::InvalidData, text);
            assert_eq!(alert_of(&error), Some(alert));
            // And the handshake-time form, where the rustls error itself is kept.
            let kept = io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::AlertReceived(alert),
            );
            assert_eq!(alert_of(&kept), Some(alert));
        }
        let other = io::Error::new(io::ErrorKind::InvalidData, "received fatal alert: Nonsense");
        assert_eq!(alert_of(&other), None);
    }
}
