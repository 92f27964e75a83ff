//! # mcp-pqtls
//!
//! Post-quantum TLS 1.3 for remote MCP (Model Context Protocol) connections: hybrid
//! X25519+ML-KEM key exchange, a policy over when classical key exchange is still allowed,
//! and a record of what every connection negotiated.
//!
//! - [`groups`]: the catalogue of key-exchange groups by IANA name, including our
//!   `SecP384r1MLKEM1024`, which rustls lacks.
//! - [`policy`]: policy modes (`pq-required`, `pq-preferred`, `classical-allowed`), fallback
//!   rules, and the pure decision made per ClientHello.
//! - [`tls`]: [`tls::PqAcceptor`] (server: the server's group preference and the policy
//!   enforced per ClientHello) and [`tls::PqConnector`] (client, usable with hyper-util).
//! - [`gate`]: the server sidecar's MCP-aware gate: bearer tokens, per-method rules, rate
//!   limits and an audit log.
//! - [`serve`]: one call serves a hyper service over PQ TLS, with the
//!   [`tls::ConnectionInfo`] of its connection in every request.
//! - [`probe`]: what a TLS endpoint accepts, prefers and refuses, by real handshakes.
//! - [`certs`]: PEM loading, inspection (ML-DSA included), and a dev PKI.
//!
//! # Example
//! A PQ server and a `pq-required` client on 127.0.0.1, each seeing what was negotiated:
//! ```
//! use std::sync::Arc;
//! use mcp_pqtls::certs::{DevPki, Identity, KeyAlg};
//! use mcp_pqtls::crypto::Algorithms;
//! use mcp_pqtls::tls::{ClientTlsConfig, PqAcceptor, PqConnector, ServerTlsConfig, Trust};
//! use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let pki = DevPki::generate(KeyAlg::EcdsaP256)?;
//! let chain = CertificateDer::pem_slice_iter(pki.server_pem.as_bytes()).collect::<Result<_, _>>()?;
//! let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes())?;
//! let schemes = Algorithms::default().signature_schemes;
//! let identity = Identity::from_der(chain, key, &schemes, "dev server")?;
//!
//! // Server: pq-preferred by default, groups X25519MLKEM768 then X25519.
//! let acceptor = Arc::new(PqAcceptor::new(ServerTlsConfig::new(identity))?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let port = listener.local_addr()?.port();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(mcp_pqtls::reflect(listener, acceptor, stopped));
//!
//! // Client: pq-required by default, trusting the dev CA.
//! let mut roots = rustls::RootCertStore::empty();
//! roots.add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes())?)?;
//! let connector = PqConnector::new(ClientTlsConfig {
//!     trust: Trust::Roots(Arc::new(roots)),
//!     ..ClientTlsConfig::default()
//! })?;
//! let fetched = mcp_pqtls::get(&connector, format!("https://localhost:{port}/").parse()?).await?;
//! assert_eq!(fetched.info.group, "X25519MLKEM768");
//! assert!(fetched.info.pq);
//! // The server's side, reflected as JSON.
//! let server_saw: serde_json::Value = serde_json::from_slice(&fetched.body)?;
//! assert_eq!(server_saw["group"], "X25519MLKEM768");
//!
//! stop.send(()).ok();
//! server.await??;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod certs;
pub mod config;
mod connect;
pub mod crypto;
pub mod deadline;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod groups;
pub mod loadgen;
pub mod logfmt;
pub mod metrics;
pub mod policy;
pub mod probe;
pub mod proxy;
mod reflect;
mod serve;
pub mod sidecar;
pub mod signal;
pub mod source;
pub mod throttle;
pub mod tls;
pub mod value;

pub use connect::{get, Fetched};
pub use groups::Group;
pub use policy::PolicyMode;
pub use reflect::reflect;
pub use serve::{serve, serve_with, ConnectionId, PeerAddr, ServeOptions};

/// Groups used when none are configured, in order of preference: the hybrid every major
/// peer speaks, then X25519 for classical fallback (which the policy decides on).
pub const DEFAULT_GROUPS: &[Group] = &[Group::X25519MLKEM768, Group::X25519];
