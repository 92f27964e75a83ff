//! PQ TLS for both sides: the server's per-ClientHello policy, the client's connector, and
//! what each records of a handshake.

mod client;
mod info;
mod server;
pub mod tickets;
mod verify;

pub use client::{ClientError, ClientTlsConfig, PqConnector, PqStream, Trust};

/// What turns a check off: named so at every call site (rustls's `dangerous()`).
pub mod danger {
    use super::Trust;

    /// Trust any server certificate: no chain, expiry or name check (`--insecure`). For
    /// throwaway test servers only; the server must still prove possession of the key in
    /// the certificate it sent.
    pub fn insecure_skip_verify() -> Trust {
        Trust::InsecureSkipVerify(SkipVerify(()))
    }

    /// The token carried by [`Trust::InsecureSkipVerify`]: it has no public constructor, so
    /// that [`insecure_skip_verify`] is the only way to turn the check off.
    #[derive(Clone, Debug)]
    pub struct SkipVerify(());
}
pub use info::ConnectionInfo;
#[cfg(all(feature = "sidecar", any(fuzzing, test)))] // for the fuzzing harness
pub(crate) use server::summarize;
pub use server::{AcceptError, ClientAuth, PqAcceptor, ServerError, ServerTlsConfig};
pub use tickets::{TicketKeyError, TicketKeys};

/// ALPN protocols offered by default: h2, then HTTP/1.1.
pub const DEFAULT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Handshake timeout by default: long enough for a slow mobile link, short enough that a
/// slowloris client cannot hold a slot for long.
pub const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A URI's host as a name or address to connect to: an IPv6 literal loses its brackets.
pub(crate) fn bare_host(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}
