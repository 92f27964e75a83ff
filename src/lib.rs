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
//! - [`serve`]: one call serves a tower service (an axum `Router`, say) over PQ TLS, with the
//!   [`ConnectionInfo`] of its connection in every request; [`Server::builder`] for limits.
//! - [`certs`]: PEM loading, inspection (ML-DSA included), and a dev PKI (`dev-pki`).
//! - `gate` (feature `gate`): the server sidecar's MCP-aware gate: bearer tokens,
//!   per-method rules, rate limits and an audit log.
//! - `probe` (feature `probe`): what a TLS endpoint accepts, prefers and refuses, by real
//!   handshakes.
//!
//! # Example
//! A PQ server and a `pq-required` client on 127.0.0.1, each seeing what was negotiated:
//! ```
//! use std::sync::Arc;
//! use mcp_pqtls::certs::{DevPki, Identity, KeyAlg};
//! use mcp_pqtls::crypto::Algorithms;
//! use mcp_pqtls::tls::Trust;
//! use mcp_pqtls::{ClientTlsConfig, PqAcceptor, PqConnector, ServerTlsConfig};
//! use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // In memory here; from two PEM files, `Identity::from_pem_files(cert, key)`.
//! let pki = DevPki::generate(KeyAlg::EcdsaP256)?;
//! let chain = CertificateDer::pem_slice_iter(pki.server_pem.as_bytes()).collect::<Result<_, _>>()?;
//! let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes())?;
//! let schemes = Algorithms::default().signature_schemes;
//! let identity = Identity::from_der(chain, key, &schemes, "dev server")?;
//!
//! // Server: pq-preferred by default, groups X25519MLKEM768 then X25519.
//! let acceptor = PqAcceptor::new(ServerTlsConfig::new(identity))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let port = listener.local_addr()?.port();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(mcp_pqtls::reflect(listener, acceptor, stopped));
//!
//! // Client: pq-required by default, trusting the dev CA.
//! let mut roots = rustls::RootCertStore::empty();
//! roots.add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes())?)?;
//! let mut config = ClientTlsConfig::default();
//! config.trust = Trust::Roots(Arc::new(roots));
//! let connector = PqConnector::new(config)?;
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
//!
//! An rmcp server in an axum `Router` served by [`serve`], and an rmcp client going
//! `pq-required` through reqwest with [`PqConnector::rustls_config`]: `examples/rmcp_server.rs`
//! and `examples/rmcp_client.rs`.
//!
//! # Cargo features
//! With `default-features = false`, the transport alone: groups, policy, crypto, certificate
//! loading, [`tls`], [`serve`], [`ConnectionInfo`], [`metrics`]. Default is `sidecar`, which
//! turns on everything the binary needs:
//! - `dev-pki`: [`certs::DevPki`], a throwaway CA and certificates (rcgen);
//! - `gate`: the MCP-aware gate as a tower layer, [`GateLayer`] (JWT, rules, rate limits,
//!   audit), for an in-process server or the server sidecar;
//! - `probe`: what a TLS endpoint accepts, prefers and refuses;
//! - `sidecar`: the sidecars, their TOML configuration and proxy, the admin endpoint, the
//!   load generator, the demo and the CLI's crates.
// `unsafe_code = "forbid"` and `missing_docs = "warn"` are in Cargo.toml's `[lints]`.

// The transport: what a server or client linking the crate needs, with no feature on.
pub mod certs;
mod connect;
pub mod crypto;
pub mod deadline;
pub mod groups;
mod label;
pub mod metrics;
pub mod policy;
mod reflect;
mod secret_file;
mod serve;
pub mod source;
pub mod throttle;
pub mod tls;

// The tools around it, each behind its Cargo feature.
#[cfg(feature = "sidecar")]
pub mod admin;
#[cfg(feature = "sidecar")]
pub mod config;
#[cfg(feature = "sidecar")]
pub mod demo;
// Entry points for fuzz/ only: built by cargo-fuzz (`--cfg fuzzing`), and in unit tests so
// that clippy and the compiler keep seeing it.
#[cfg(all(feature = "sidecar", any(fuzzing, test)))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "gate")]
pub mod gate;
#[cfg(feature = "sidecar")]
pub mod loadgen;
#[cfg(feature = "sidecar")]
pub mod logfmt;
#[cfg(feature = "probe")]
pub mod probe;
#[cfg(feature = "sidecar")]
pub mod proxy;
#[cfg(feature = "sidecar")]
pub mod sidecar;
#[cfg(feature = "sidecar")]
pub mod signal;
#[cfg(feature = "gate")]
mod sse;
#[cfg(feature = "gate")]
pub mod value;

// The table of contents: the types a server or client author starts from.
#[cfg(feature = "gate")]
pub use gate::{GateLayer, GateService};
pub use groups::Group;
pub use policy::{Policy, PolicyMode};
pub use serve::{serve, ConnectionId, PeerAddr, ServeOptions, Server, ServerBuilder};
pub use tls::{ClientTlsConfig, ConnectionInfo, PqAcceptor, PqConnector, ServerTlsConfig};

// Debugging helpers: the `reflect` server and a one-shot GET through a connector.
pub use connect::{get, request, Answer, Fetched};
pub use reflect::reflect;

/// Groups used when none are configured, in order of preference: the hybrid every major
/// peer speaks, then X25519 for classical fallback (which the policy decides on).
pub const DEFAULT_GROUPS: &[Group] = &[Group::X25519MLKEM768, Group::X25519];

// The examples of docs/library.md, compiled and run as doctests (`cargo test --doc`); the
// other pages' examples are checked by tests/docs.rs. They use the gate and the dev PKI.
#[cfg(all(doctest, feature = "gate", feature = "dev-pki"))]
#[doc = include_str!("../docs/library.md")]
pub struct LibraryDocs;
