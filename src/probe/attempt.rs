//! One probe handshake: a rustls client driven record by record over a TCP socket.
//!
//! tokio-rustls would hide the flights; driving `ClientConnection` by hand lets the probe count
//! the exact bytes of the ClientHello and of the server's flight, and tell a TLS alert from a
//! peer that does not speak TLS at all. No crate does this framing for a client, so it is ours:
//! it reads TLS record headers only, and leaves every byte's meaning to rustls.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::groups::{Group, GroupId};
use crate::tls::ConnectionInfo;

/// The largest record a TLS server may send: 2^14 plus TLS 1.2's largest ciphertext expansion
/// (RFC 5246 §6.2.3; TLS 1.3 allows only 256). Anything longer is not TLS.
const MAX_RECORD: usize = (1 << 14) + 2048;

/// How a probe attempt connects and authenticates: fixed for one target.
pub(crate) struct Dialer {
    pub(crate) addr: SocketAddr,
    pub(crate) server_name: ServerName<'static>,
    /// Chain verification; `None` with `--insecure`.
    pub(crate) verifier: Option<Arc<dyn ServerCertVerifier>>,
    pub(crate) client_cert: Option<Arc<CertifiedKey>>,
    pub(crate) alpn: Vec<Vec<u8>>,
    pub(crate) timeout: Duration,
}

/// What one attempt offered and what came of it.
#[derive(Debug)]
pub(crate) struct Attempt {
    /// `supported_groups`, in our order.
    pub(crate) offered: Vec<Group>,
    /// The groups our first ClientHello carried key shares for.
    pub(crate) key_shares: Vec<GroupId>,
    pub(crate) result: Result<Handshake, Failure>,
    /// From the first ClientHello to a completed handshake, in milliseconds.
    pub(crate) handshake_ms: Option<f64>,
    /// Size of our first ClientHello on the wire (record headers included).
    pub(crate) client_hello_bytes: Option<usize>,
    /// Everything the server sent until the handshake completed (HelloRetryRequest included).
    pub(crate) server_flight_bytes: Option<usize>,
}

impl Attempt {
    /// The handshake, when it completed.
    pub(crate) fn ok(&self) -> Option<&Handshake> {
        self.result.as_ref().ok()
    }

    /// The negotiated group, when the handshake completed.
    pub(crate) fn chosen(&self) -> Option<GroupId> {
        self.ok().map(|h| h.group)
    }
}

/// A completed handshake.
#[derive(Debug)]
pub(crate) struct Handshake {
    /// Group, HelloRetryRequest, version, suite, ALPN and CertificateVerify scheme, as the
    /// library records them for any connection.
    pub(crate) info: ConnectionInfo,
    pub(crate) group: GroupId,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) verification: Verification,
    pub(crate) client_cert_requested: bool,
}

/// The outcome of checking the server's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verification {
    Verified,
    Failed(String),
    NotChecked,
}

/// Why an attempt did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("no completed handshake within {0:?}")]
    Timeout(Duration),
    #[error("not a TLS server: it answered {0}")]
    NotTls(String),
    #[error("the server closed the connection during the handshake")]
    Closed,
    #[error("the server sent a {} alert", alert_name(*.0))]
    Alert(AlertDescription),
    #[error("{0}")]
    Tls(rustls::Error),
    #[error("I/O: {0}")]
    Io(io::Error),
    /// Bytes that are not a TLS record after the server had sent valid ones.
    #[error("malformed TLS record from the server: {0}")]
    Malformed(String),
    /// Refused over TLS 1.3 by a server that completes TLS 1.2: the refusal, as seen.
    #[error("no TLS 1.3 (the server completes only TLS 1.2): {0}")]
    NoTls13(Box<Failure>),
}

impl Failure {
    /// Whether no TLS server is there at all (as opposed to one that refused).
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::NotTls(_))
    }

    /// Whether the server said no (an alert, or a hang-up before its first byte), as opposed to
    /// a failure that tells nothing about its policy (timeout, reset mid-way, bad bytes).
    pub(crate) fn is_refusal(&self) -> bool {
        match self {
            Self::Alert(_) | Self::Closed => true,
            Self::NoTls13(f) => f.is_refusal(),
            _ => false,
        }
    }

    /// The alert the server sent, by its RFC 8446 name.
    pub(crate) fn alert(&self) -> Option<String> {
        match self {
            Self::Alert(a) => Some(alert_name(*a)),
            Self::NoTls13(f) => f.alert(),
            _ => None,
        }
    }
}

/// An alert's name as the TLS registry writes it: `handshake_failure`, `unknown_ca`, ...
/// (rustls's variant names differ: `UnknownCA`, `UnrecognisedName`).
pub(crate) fn alert_name(alert: AlertDescription) -> String {
    let name = match u8::from(alert) {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        21 => "decryption_failed",
        22 => "record_overflow",
        30 => "decompression_failure",
        40 => "handshake_failure",
        41 => "no_certificate",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        60 => "export_restriction",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        111 => "certificate_unobtainable",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        114 => "bad_certificate_hash_value",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        121 => "ech_required",
        other => return format!("alert_{other}"),
    };
    name.to_owned()
}

impl Dialer {
    /// One handshake offering `groups` (the first carries the key share) under `provider`'s
    /// suites and `versions`.
    pub(crate) async fn attempt(
        &self,
        groups: &[Group],
        provider: Arc<CryptoProvider>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Attempt {
        let mut attempt = Attempt {
            offered: groups.to_vec(),
            // Key shares exist only in TLS 1.3.
            key_shares: if versions.contains(&&rustls::version::TLS13) {
                key_shares(groups)
            } else {
                Vec::new()
            },
            result: Err(Failure::Closed),
            handshake_ms: None,
            client_hello_bytes: None,
            server_flight_bytes: None,
        };
        let result = tokio::time::timeout(self.timeout, self.run(provider, versions, &mut attempt))
            .await
            .unwrap_or_else(|_| {
                // A silent drop of the SYN is "nothing there", not a slow TLS server.
                Err(match attempt.client_hello_bytes {
                    None => Failure::Connect(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no TCP connection within {:?}", self.timeout),
                    )),
                    Some(_) => Failure::Timeout(self.timeout),
                })
            });
        attempt.result = result;
        attempt
    }

    async fn run(
        &self,
        provider: Arc<CryptoProvider>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        attempt: &mut Attempt,
    ) -> Result<Handshake, Failure> {
        let recorder = Arc::new(Recorder {
            verifier: self.verifier.clone(),
            algorithms: provider.signature_verification_algorithms,
            seen: Mutex::default(),
        });
        let cert = Arc::new(ClientCert {
            key: self.client_cert.clone(),
            requested: AtomicBool::new(false),
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(Failure::Tls)?
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_client_cert_resolver(cert.clone());
        config.alpn_protocols = self.alpn.clone();
        // Every attempt is a full handshake, independent of the others.
        config.resumption = Resumption::disabled();
        let mut conn = ClientConnection::new(Arc::new(config), self.server_name.clone())
            .map_err(Failure::Tls)?;

        let mut tcp = TcpStream::connect(self.addr)
            .await
            .map_err(Failure::Connect)?;
        tcp.set_nodelay(true).map_err(Failure::Io)?;

        let start = Instant::now();
        attempt.client_hello_bytes = Some(flush(&mut conn, &mut tcp).await?);
        let mut server_bytes = 0;
        let mut record = Vec::with_capacity(MAX_RECORD + 5);
        while conn.is_handshaking() {
            read_record(&mut tcp, &mut record, server_bytes == 0).await?;
            server_bytes += record.len();
            attempt.server_flight_bytes = Some(server_bytes);
            // rustls takes at most a few KiB per read_tls: feed a large record in pieces.
            let mut rest = record.as_slice();
            while !rest.is_empty() {
                conn.read_tls(&mut rest).map_err(Failure::Io)?;
                let processed = conn.process_new_packets();
                // rustls may have an alert of its own to send: send it before reporting.
                let _ = flush(&mut conn, &mut tcp).await;
                if let Err(e) = processed {
                    return Err(match e {
                        rustls::Error::AlertReceived(a) => Failure::Alert(a),
                        e => Failure::Tls(e),
                    });
                }
            }
        }
        attempt.handshake_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
        conn.send_close_notify();
        let _ = flush(&mut conn, &mut tcp).await;

        let seen = recorder.take();
        let sni = match &self.server_name {
            ServerName::DnsName(d) => Some(d.as_ref().to_owned()),
            _ => None,
        };
        Ok(Handshake {
            info: ConnectionInfo::from_state(&conn, self.addr, sni, seen.scheme, None),
            group: ConnectionInfo::group_id(&conn).unwrap_or(GroupId(0)),
            chain: seen.chain,
            verification: seen.verification,
            client_cert_requested: cert.requested.load(Ordering::Relaxed),
        })
    }
}

/// The key shares rustls puts in a first ClientHello offering `groups`: one for the first
/// group, plus its classical component when that is offered too (rustls's "free" second
/// share). Asked of rustls itself, so it stays true across upgrades.
fn key_shares(groups: &[Group]) -> Vec<GroupId> {
    let Some(first) = groups.first() else {
        return Vec::new();
    };
    let mut shares = vec![GroupId::from(*first)];
    let component = first
        .kx_group()
        .start()
        .ok()
        .and_then(|kx| kx.hybrid_component().map(|(g, _)| GroupId::from(g)));
    if let Some(c) = component.filter(|c| groups.iter().any(|g| GroupId::from(*g) == *c)) {
        shares.push(c);
    }
    shares
}

/// Writes whatever rustls has queued; returns the byte count.
async fn flush(conn: &mut ClientConnection, tcp: &mut TcpStream) -> Result<usize, Failure> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).map_err(Failure::Io)?;
    }
    tcp.write_all(&out).await.map_err(Failure::Io)?;
    Ok(out.len())
}

/// Reads one TLS record (header and body) into `record`. `first` says whether this is the
/// first thing the server sent: garbage then means the port does not speak TLS.
async fn read_record(
    tcp: &mut TcpStream,
    record: &mut Vec<u8>,
    first: bool,
) -> Result<(), Failure> {
    let mut header = [0u8; 5];
    read_full(tcp, &mut header, 0).await?;
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    // ContentType change_cipher_spec..application_data, legacy version 3.x.
    let plausible = (20..=23).contains(&header[0]) && header[1] == 3 && len <= MAX_RECORD;
    if !plausible {
        return Err(not_tls(tcp, &header, first).await);
    }
    record.clear();
    record.extend_from_slice(&header);
    record.resize(5 + len, 0);
    read_full(tcp, &mut record[5..], 5).await
}

/// `read_exact`, but a close before the first byte of a record is the server hanging up.
async fn read_full(tcp: &mut TcpStream, buf: &mut [u8], already: usize) -> Result<(), Failure> {
    let mut filled = 0;
    while filled < buf.len() {
        match tcp.read(&mut buf[filled..]).await {
            Ok(0) if filled + already == 0 => return Err(Failure::Closed),
            Ok(0) => {
                return Err(Failure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection mid-record",
                )))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(Failure::Closed),
            Err(e) => return Err(Failure::Io(e)),
        }
    }
    Ok(())
}

/// Describes what a non-TLS server answered, e.g. `` `HTTP/1.1 400 Bad Request` (HTTP) ``.
async fn not_tls(tcp: &mut TcpStream, header: &[u8; 5], first: bool) -> Failure {
    let mut seen = header.to_vec();
    let mut more = [0u8; 120];
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut more)).await {
        seen.extend_from_slice(&more[..n]);
    }
    let line: String = seen
        .iter()
        .take_while(|&&b| b != b'\r' && b != b'\n')
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect();
    let kind = if seen.starts_with(b"HTTP/") || seen.starts_with(b"<") {
        " (HTTP)"
    } else if seen.starts_with(b"SSH-") {
        " (SSH)"
    } else {
        ""
    };
    if first {
        Failure::NotTls(format!("`{line}`{kind}"))
    } else {
        Failure::Malformed(format!("`{line}`"))
    }
}

/// Records the chain, its verification and the CertificateVerify scheme, and lets the
/// handshake go on whatever the chain verification says: a probe reports a bad chain
/// rather than stopping at it. The CertificateVerify signature is always checked, so a
/// completed handshake still proves the server holds the certificate's key.
struct Recorder {
    verifier: Option<Arc<dyn ServerCertVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
    seen: Mutex<Seen>,
}

struct Seen {
    chain: Vec<CertificateDer<'static>>,
    verification: Verification,
    scheme: Option<SignatureScheme>,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            chain: Vec::new(),
            verification: Verification::NotChecked,
            scheme: None,
        }
    }
}

impl Recorder {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Seen {
        std::mem::take(&mut *self.seen())
    }

    fn record_scheme(
        &self,
        result: Result<HandshakeSignatureValid, rustls::Error>,
        scheme: SignatureScheme,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if result.is_ok() {
            self.seen().scheme = Some(scheme);
        }
        result
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verification = match &self.verifier {
            Some(v) => match v.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(_) => Verification::Verified,
                Err(e) => Verification::Failed(e.to_string()),
            },
            None => Verification::NotChecked,
        };
        let mut seen = self.seen();
        seen.chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        seen.verification = verification;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let result = verify_tls12_signature(message, cert, dss, &self.algorithms);
        self.record_scheme(result, dss.scheme)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let result = verify_tls13_signature(message, cert, dss, &self.algorithms);
        self.record_scheme(result, dss.scheme)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

/// Presents the configured client certificate (if any) and notes that the server asked.
#[derive(Debug)]
struct ClientCert {
    key: Option<Arc<CertifiedKey>>,
    requested: AtomicBool,
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.requested.store(true, Ordering::Relaxed);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_the_registry_spelling() {
        for (alert, name) in [
            (AlertDescription::HandshakeFailure, "handshake_failure"),
            (AlertDescription::ProtocolVersion, "protocol_version"),
            (
                AlertDescription::CertificateRequired,
                "certificate_required",
            ),
            (AlertDescription::UnknownCA, "unknown_ca"),
            (AlertDescription::UnrecognisedName, "unrecognized_name"),
            (AlertDescription::UnknownPSKIdentity, "unknown_psk_identity"),
            (
                AlertDescription::NoApplicationProtocol,
                "no_application_protocol",
            ),
            (AlertDescription::Unknown(250), "alert_250"),
        ] {
            assert_eq!(alert_name(alert), name);
        }
        // Every code rustls names has a registry name, not the fallback.
        for code in 0..=255u8 {
            let alert = AlertDescription::from(code);
            if !matches!(alert, AlertDescription::Unknown(_)) {
                assert!(!alert_name(alert).starts_with("alert_"), "{alert:?}");
            }
        }
    }

    #[test]
    fn key_shares_follow_rustls() {
        let ids = |gs: &[Group]| gs.iter().map(|g| GroupId::from(*g)).collect::<Vec<_>>();
        assert_eq!(
            key_shares(&[Group::X25519MLKEM768, Group::X25519]),
            ids(&[Group::X25519MLKEM768, Group::X25519])
        );
        assert_eq!(
            key_shares(&[Group::SecP256r1MLKEM768, Group::X25519, Group::Secp256r1]),
            ids(&[Group::SecP256r1MLKEM768, Group::Secp256r1])
        );
        // The component is sent only when it is offered in its own right.
        assert_eq!(
            key_shares(&[Group::X25519MLKEM768, Group::Secp256r1]),
            ids(&[Group::X25519MLKEM768])
        );
        assert_eq!(
            key_shares(&[Group::X25519, Group::X25519MLKEM768]),
            ids(&[Group::X25519])
        );
    }
}
