use std::net::SocketAddr;
use std::sync::Arc;

use rustls::{CommonState, HandshakeKind, SignatureScheme};

use crate::crypto::{cipher_suite_name, signature_scheme_name};
use crate::groups::GroupId;

/// What a completed handshake negotiated: the proof of what protected a connection.
///
/// Serialized (snake_case) by `mcp-pqtls reflect` and `connect`; available to services per
/// request as an `Arc<ConnectionInfo>` extension (see [`ConnectionInfo::of`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The key-exchange group, by IANA name.
    pub group: String,
    /// Whether the group is post-quantum.
    pub pq: bool,
    /// Whether the server sent a HelloRetryRequest (the client's first key share was not
    /// the group the server wanted).
    pub hello_retry: bool,
    /// Whether the session was resumed.
    pub resumed: bool,
    /// The classical group was a fallback under `pq-preferred` (logged and counted).
    pub classical_fallback: bool,
    /// `TLSv1.3`.
    pub tls_version: String,
    /// The cipher suite, by IANA name.
    pub cipher_suite: String,
    /// The scheme of the server's CertificateVerify (none when resumed).
    pub signature_scheme: Option<String>,
    /// The server name the client asked for.
    pub sni: Option<String>,
    /// The negotiated application protocol.
    pub alpn: Option<String>,
    /// The peer's address.
    pub peer_addr: SocketAddr,
    /// The client certificate's identity (first SAN URI, else first DNS name), when mTLS.
    pub client_identity: Option<String>,
}

impl ConnectionInfo {
    /// The connection info of a request served by [`crate::serve`], or of a response
    /// received through [`crate::tls::PqConnector`].
    ///
    /// # Example
    /// ```
    /// use mcp_pqtls::tls::ConnectionInfo;
    /// fn handler(req: &http::Request<()>) -> String {
    ///     match ConnectionInfo::of(req.extensions()) {
    ///         Some(info) if info.pq => format!("protected by {}", info.group),
    ///         Some(info) => format!("classical: {}", info.group),
    ///         None => "not over TLS".to_owned(),
    ///     }
    /// }
    /// # assert_eq!(handler(&http::Request::new(())), "not over TLS");
    /// ```
    pub fn of(extensions: &http::Extensions) -> Option<&Self> {
        extensions.get::<Arc<Self>>().map(|a| &**a)
    }

    /// The negotiated group as a [`GroupId`].
    pub(crate) fn from_state(
        conn: &CommonState,
        peer_addr: SocketAddr,
        sni: Option<String>,
        signature_scheme: Option<SignatureScheme>,
        client_identity: Option<String>,
    ) -> Self {
        let group = conn
            .negotiated_key_exchange_group()
            .map(|g| GroupId::from(g.name()));
        let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
        Self {
            group: group.map_or_else(|| "none".to_owned(), |g| g.to_string()),
            pq: group.is_some_and(GroupId::is_pq),
            hello_retry: conn.handshake_kind() == Some(HandshakeKind::FullWithHelloRetryRequest),
            resumed,
            classical_fallback: false,
            tls_version: conn
                .protocol_version()
                .and_then(|v| v.as_str())
                .map(|v| v.replace("TLSv1_", "TLSv1."))
                .unwrap_or_default(),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map(|s| cipher_suite_name(s.suite()))
                .unwrap_or_default(),
            signature_scheme: signature_scheme
                .filter(|_| !resumed)
                .map(signature_scheme_name),
            sni,
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            peer_addr,
            client_identity,
        }
    }

    pub(crate) fn group_id(conn: &CommonState) -> Option<GroupId> {
        conn.negotiated_key_exchange_group()
            .map(|g| GroupId::from(g.name()))
    }
}
