//! The server side: per-ClientHello policy over rustls.
//!
//! rustls 0.23 picks the group by the client's order and has no server-preference switch, so
//! preference and policy are ours: [`PqAcceptor`] reads the ClientHello with
//! `LazyConfigAcceptor`, asks [`Policy::decide`] for the group, and completes the handshake
//! with a cached `ServerConfig` whose provider holds *only that group*. rustls then either
//! finds the client's key share for it or sends a HelloRetryRequest, which is how
//! `pq-preferred` upgrades a client whose first share is classical.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{Acceptor, ClientHello, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{debug, warn};

use super::info::ConnectionInfo;
use super::tickets::TicketKeys;
use super::verify::{ClientVerifier, IdentityGate};
use crate::certs::{CertInfo, Identity};
use crate::crypto::{provider, Algorithms};
use crate::groups::{display_list, display_list_capped, Group, GroupId};
use crate::metrics::Metrics;
use crate::policy::{ClientHelloSummary, Permit, Policy, PolicyError, Refusal};
use crate::throttle::LogThrottle;

/// Everything the server side is configured with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerTlsConfig {
    /// Certificate chain and key.
    pub identity: Identity,
    /// Groups (in order of preference), suites and signature schemes.
    /// Default is [`Algorithms::default`].
    pub algorithms: Algorithms,
    /// The policy. Default is `pq-preferred` with no sunset and no rules.
    pub policy: Policy,
    /// Whether and how client certificates are checked. Default is [`ClientAuth::None`].
    pub client_auth: ClientAuth,
    /// ALPN protocols in order of preference. Default is [`super::DEFAULT_ALPN`].
    pub alpn: Vec<Vec<u8>>,
    /// Time allowed from TCP accept to a completed handshake.
    /// Default is [`super::DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// Session-ticket keys shared with other replicas (`ticket-keys`). Default is none:
    /// rustls's own ticketer, whose keys live and rotate in this process only.
    pub ticket_keys: Option<Arc<TicketKeys>>,
}

impl ServerTlsConfig {
    /// A config with every default, serving `identity`.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            algorithms: Algorithms::default(),
            policy: Policy::default(),
            client_auth: ClientAuth::None,
            alpn: super::DEFAULT_ALPN.iter().map(|p| p.to_vec()).collect(),
            handshake_timeout: super::DEFAULT_HANDSHAKE_TIMEOUT,
            ticket_keys: None,
        }
    }
}

/// Client-certificate authentication (mTLS).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientAuth {
    /// No client certificate is requested.
    None,
    /// A certificate is requested and verified if sent, but a client may send none.
    Optional(Arc<RootCertStore>),
    /// A certificate issued under these roots is required.
    Required(Arc<RootCertStore>),
}

/// Accepts TCP connections into PQ TLS under a policy. Clone it freely: clones share
/// configuration, policy, session tickets and metrics (an `Arc` inside, as tokio-rustls's
/// `TlsAcceptor`), so a policy reload through one reaches all.
#[derive(Clone)]
pub struct PqAcceptor {
    inner: Arc<AcceptorInner>,
}

struct AcceptorInner {
    /// Replaced whole by [`PqAcceptor::replace_policy`]; each handshake reads it once.
    negotiation: ArcSwap<Negotiation>,
    /// Shared with every config's cert resolver, so a reload reaches them all at once.
    identity: Arc<CurrentIdentity>,
    parts: ConfigParts,
    handshake_timeout: Duration,
    metrics: Arc<Metrics>,
    failures_logged: LogThrottle,
    /// Policy refusals are peer-caused too: a line per refusal would let anyone flood the log.
    refusals_logged: LogThrottle,
}

/// The groups and policy a handshake is decided under, with a config per group.
struct Negotiation {
    groups: Vec<Group>,
    policy: Policy,
    /// One config per group: the handshake can only end on that group.
    configs: HashMap<Group, Arc<rustls::ServerConfig>>,
    /// Config used to refuse: holds no group the refused client offered (see `refusal_group`).
    refusal_group: Group,
    /// Session tickets and storage of this negotiation only: a policy reload replaces them,
    /// so that no session made under the old policy resumes under the new one. Shared by
    /// every per-group config, so that a session resumes across groups.
    resumption: Resumption,
}

/// Where a negotiation's sessions are kept.
#[derive(Clone)]
struct Resumption {
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    session_storage: Arc<dyn rustls::server::StoresServerSessions + Send + Sync>,
}

impl Resumption {
    /// With shared keys, tickets open on every replica with the same groups and policy (their
    /// digest is the tickets' context); without, in this negotiation only.
    fn new(
        shared: Option<&Arc<TicketKeys>>,
        groups: &[Group],
        policy: &Policy,
    ) -> Result<Self, ServerError> {
        let ticketer = match shared {
            Some(keys) => {
                let context = format!("{groups:?}|{policy:?}");
                let digest =
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, context.as_bytes());
                keys.bound(digest.as_ref().to_vec())
            }
            None => rustls::crypto::aws_lc_rs::Ticketer::new()?,
        };
        Ok(Self {
            ticketer,
            session_storage: ServerSessionMemoryCache::new(4096),
        })
    }

    /// For a handshake whose outcome depends on the client certificate: issues tickets
    /// (other connections may resume them) but never resumes one, because rustls does not
    /// verify the client certificate on resumption, so the identity rules would not run
    /// in the handshake (the check after it still would, but the peer would then see a
    /// completed handshake closed, instead of an `access_denied` alert).
    fn issue_only(&self) -> Self {
        Self {
            ticketer: Arc::new(IssueOnly(self.ticketer.clone())),
            session_storage: Arc::new(IssueOnly(self.session_storage.clone())),
        }
    }
}

/// Issues and stores sessions through the inner one, but finds none to resume.
#[derive(Debug)]
struct IssueOnly<T: ?Sized>(Arc<T>);

impl rustls::server::ProducesTickets for IssueOnly<dyn rustls::server::ProducesTickets> {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.0.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.0.encrypt(plain)
    }

    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

impl rustls::server::StoresServerSessions
    for IssueOnly<dyn rustls::server::StoresServerSessions + Send + Sync>
{
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.put(key, value)
    }

    fn get(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn take(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn can_cache(&self) -> bool {
        self.0.can_cache()
    }
}

impl Negotiation {
    fn new(groups: &[Group], policy: Policy, parts: &ConfigParts) -> Result<Self, ServerError> {
        policy.validate(groups, parts.client_certs)?;
        // Classical groups in a pq-required list can never be chosen; keep only usable ones.
        let groups: Vec<Group> = match policy.mode {
            crate::PolicyMode::PqRequired => groups.iter().copied().filter(|g| g.is_pq()).collect(),
            _ => groups.to_vec(),
        };
        let resumption = Resumption::new(parts.ticket_keys.as_ref(), &groups, &policy)?;
        let configs = groups
            .iter()
            .map(|g| {
                let provider = provider(&[*g], &parts.algorithms.cipher_suites);
                Ok((*g, parts.build(provider, None, &resumption)?))
            })
            .collect::<Result<HashMap<_, _>, ServerError>>()?;
        let refusal_group = groups
            .iter()
            .copied()
            .find(|g| g.is_pq())
            .unwrap_or(groups[0]);
        Ok(Self {
            groups,
            policy,
            configs,
            refusal_group,
            resumption,
        })
    }
}

/// What every config shares for the acceptor's life (the session tickets are the
/// negotiation's: see [`Resumption`]).
struct ConfigParts {
    algorithms: Algorithms,
    /// Client certificates are asked for, so identity rules may apply.
    client_certs: bool,
    schemes: Arc<[SignatureScheme]>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    identity: Arc<CurrentIdentity>,
    alpn: Vec<Vec<u8>>,
    ticket_keys: Option<Arc<TicketKeys>>,
}

impl PqAcceptor {
    /// Validates the config and builds the rustls configs it needs.
    pub fn new(config: ServerTlsConfig) -> Result<Self, ServerError> {
        let ServerTlsConfig {
            identity,
            algorithms,
            policy,
            client_auth,
            alpn,
            handshake_timeout,
            ticket_keys,
        } = config;
        if algorithms.cipher_suites.is_empty() {
            return Err(ServerError::NoCipherSuites);
        }
        let verify_provider = provider(&algorithms.groups, &algorithms.cipher_suites);
        let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = match &client_auth {
            ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
            ClientAuth::Optional(roots) => {
                WebPkiClientVerifier::builder_with_provider(roots.clone(), verify_provider)
                    .allow_unauthenticated()
                    .build()?
            }
            ClientAuth::Required(roots) => {
                WebPkiClientVerifier::builder_with_provider(roots.clone(), verify_provider)
                    .build()?
            }
        };
        let parts = ConfigParts {
            schemes: algorithms.signature_schemes.clone().into(),
            client_certs: !matches!(client_auth, ClientAuth::None),
            algorithms,
            verifier,
            identity: Arc::new(CurrentIdentity(ArcSwap::from_pointee(identity))),
            alpn,
            ticket_keys,
        };
        let negotiation = Negotiation::new(&parts.algorithms.groups, policy, &parts)?;
        Ok(Self {
            inner: Arc::new(AcceptorInner {
                negotiation: ArcSwap::from_pointee(negotiation),
                identity: parts.identity.clone(),
                parts,
                handshake_timeout,
                metrics: Arc::default(),
                failures_logged: LogThrottle::default(),
                refusals_logged: LogThrottle::default(),
            }),
        })
    }

    /// The shared session-ticket keys, if any (reload them with [`TicketKeys::reload`]).
    pub fn ticket_keys(&self) -> Option<&Arc<TicketKeys>> {
        self.inner.parts.ticket_keys.as_ref()
    }

    /// Handshake counters: completed per group, HelloRetryRequests, classical fallbacks,
    /// refusals, failures, timeouts.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The groups in use, in order of preference (under `pq-required`, only the pq ones).
    pub fn groups(&self) -> Vec<Group> {
        self.negotiation().groups.clone()
    }

    /// The policy in use.
    pub fn policy(&self) -> Policy {
        self.negotiation().policy.clone()
    }

    /// Decides handshakes under `groups` (in order of preference) and `policy` from the next
    /// ClientHello on; connections already established, and their streams, keep what they
    /// negotiated. Suites, signature schemes and client authentication stay as built.
    ///
    /// Session tickets issued before the call never resume after it (the ticket key and the
    /// session cache are new), so a session made under the old policy cannot carry a client
    /// past the new one.
    ///
    /// A policy that does not fit the groups (or needs client certificates that are not
    /// asked for) is refused, and the current one stays.
    pub fn replace_policy(&self, groups: &[Group], policy: Policy) -> Result<(), ServerError> {
        let negotiation = Negotiation::new(groups, policy, &self.inner.parts)?;
        self.inner.negotiation.store(Arc::new(negotiation));
        Ok(())
    }

    fn negotiation(&self) -> Arc<Negotiation> {
        self.inner.negotiation.load_full()
    }

    /// The signature schemes an identity must be able to sign with (see
    /// [`Identity::load`]).
    pub fn signature_schemes(&self) -> &[SignatureScheme] {
        &self.inner.parts.schemes
    }

    /// What the certificate being served says.
    pub fn certificate(&self) -> CertInfo {
        self.inner.identity.get().info().clone()
    }

    /// Serves `identity` from the next handshake on; connections already established keep
    /// theirs. Load it with [`PqAcceptor::signature_schemes`] so it signs only with those.
    pub fn replace_identity(&self, identity: Identity) {
        self.inner.identity.0.store(Arc::new(identity));
    }

    /// Runs the TLS handshake on an accepted connection (a `TcpStream`, or any byte stream:
    /// the benches use an in-memory pipe) under the policy, within the handshake timeout.
    ///
    /// A refused ClientHello is answered with a `handshake_failure` alert (an identity
    /// refusal with `access_denied`), logged at warn with the reason (one line per
    /// [`LogThrottle::EVERY`], the rest at debug), and counted.
    pub async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        tcp: IO,
        peer: SocketAddr,
    ) -> Result<(TlsStream<IO>, ConnectionInfo), AcceptError> {
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(self.inner.handshake_timeout, self.handshake(tcp, peer)).await;
        self.inner.metrics.handshake_duration(started.elapsed());
        match outcome {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => {
                match &e {
                    AcceptError::Refused(r) => {
                        self.inner.metrics.policy_refusal(&r.reason);
                        crate::throttled!(self.inner.refusals_logged, warn, client.addr = %peer,
                            reason = %r, "Handshake refused by policy");
                    }
                    other => {
                        self.inner.metrics.handshake_failure();
                        crate::throttled!(self.inner.failures_logged, info, client.addr = %peer,
                            error = %other, "Handshake failed");
                    }
                }
                Err(e)
            }
            Err(_) => {
                self.inner.metrics.handshake_timeout();
                let timeout = self.inner.handshake_timeout;
                crate::throttled!(self.inner.failures_logged, info, client.addr = %peer, ?timeout,
                    "Handshake timed out");
                Err(AcceptError::Timeout(timeout))
            }
        }
    }

    async fn handshake<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        tcp: IO,
        peer: SocketAddr,
    ) -> Result<(TlsStream<IO>, ConnectionInfo), AcceptError> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), tcp)
            .await
            .map_err(AcceptError::ClientHello)?;
        let client_hello = start.client_hello();
        let hello = summarize(&client_hello, peer, SystemTime::now());
        let scheme = self
            .inner
            .identity
            .get()
            .scheme_for(client_hello.signature_schemes());

        let now = self.negotiation();
        let permit = match now.policy.decide(&now.groups, &hello) {
            Ok(permit) => permit,
            Err(refusal) => {
                // rustls sends the alert: this config holds no group the client offered.
                let _ = start
                    .into_stream(now.configs[&now.refusal_group].clone())
                    .await;
                return Err(AcceptError::Refused(refusal));
            }
        };
        let (config, gate) = match &permit.identity_check {
            // `decide` only ever picks from `now.groups`, and every one has a config.
            None => (now.configs[&permit.group].clone(), None),
            Some(check) => {
                let gate = Arc::new(IdentityGate::new(check.clone()));
                (
                    self.inner.parts.build(
                        // The cached config's provider already holds exactly this group.
                        now.configs[&permit.group].crypto_provider().clone(),
                        Some(gate.clone()),
                        &now.resumption.issue_only(),
                    )?,
                    Some(gate),
                )
            }
        };
        let tls = start.into_stream(config).await.map_err(|e| {
            match gate.as_ref().and_then(|g| g.take_refusal()) {
                Some(refusal) => AcceptError::Refused(refusal),
                None => AcceptError::Handshake {
                    offered: hello.offered_groups.clone(),
                    error: e,
                },
            }
        })?;
        let identities = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|ee| crate::certs::identities(ee))
            .unwrap_or_default();
        let mut permit = permit;
        if let Some(check) = &permit.identity_check {
            // Again, whatever the handshake kind: on a resumed one rustls restores the chain
            // from the ticket and never calls the verifier, so only this applies the rules
            // in force now (no certificate: the rules' default, as in a full handshake).
            match check.check(&identities) {
                Ok(rule) => permit.rule = rule,
                Err(refusal) => {
                    let mut tls = tls;
                    // rustls has no way to send access_denied after the handshake: the peer
                    // gets a close_notify as soon as its handshake completes.
                    tls.get_mut().1.send_close_notify();
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                    return Err(AcceptError::Refused(refusal));
                }
            }
        }
        let (_, conn) = tls.get_ref();
        let client_identity = identities.into_iter().next();
        let mut info =
            ConnectionInfo::from_state(conn, peer, hello.sni.clone(), scheme, client_identity);
        info.classical_fallback = permit.classical_fallback;
        self.record(&info, &permit, conn);
        Ok((tls, info))
    }

    fn record(&self, info: &ConnectionInfo, permit: &Permit, conn: &rustls::ServerConnection) {
        let group = ConnectionInfo::group_id(conn).unwrap_or(GroupId(0));
        self.inner.metrics.handshake(
            group,
            info.hello_retry,
            info.resumed,
            permit.classical_fallback,
        );
        if permit.classical_fallback {
            warn!(
                client.addr = %info.peer_addr,
                // Peer-chosen strings: Debug-quoted, so they cannot forge a log line.
                server.name = ?info.sni.as_deref().unwrap_or(""),
                client.id = ?info.client_identity.as_deref().unwrap_or(""),
                tls.group = %info.group,
                authz.rule = permit.rule.as_ref().map(ToString::to_string).unwrap_or_default(),
                "Classical key exchange: client offered no post-quantum group"
            );
        } else {
            debug!(
                client.addr = %info.peer_addr,
                tls.group = %info.group,
                tls.hello_retry = info.hello_retry,
                tls.suite = %info.cipher_suite,
                "Handshake complete"
            );
        }
    }
}

impl fmt::Debug for PqAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = self.negotiation();
        f.debug_struct("PqAcceptor")
            .field("groups", &display_list(&now.groups))
            .field("policy", &now.policy)
            .finish_non_exhaustive()
    }
}

impl ConfigParts {
    /// A rustls config over `provider` (which holds the one group handshakes may end on).
    fn build(
        &self,
        provider: Arc<rustls::crypto::CryptoProvider>,
        gate: Option<Arc<IdentityGate>>,
        resumption: &Resumption,
    ) -> Result<Arc<rustls::ServerConfig>, ServerError> {
        let verifier = Arc::new(ClientVerifier {
            inner: self.verifier.clone(),
            schemes: self.schemes.clone(),
            identity: gate,
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.identity.clone());
        config.alpn_protocols = self.alpn.clone();
        config.ticketer = resumption.ticketer.clone();
        config.session_storage = resumption.session_storage.clone();
        Ok(Arc::new(config))
    }
}

/// Serves the current chain whatever the ClientHello says; replaced on reload.
#[derive(Debug)]
struct CurrentIdentity(ArcSwap<Identity>);

impl CurrentIdentity {
    fn get(&self) -> Arc<Identity> {
        self.0.load_full()
    }
}

impl rustls::server::ResolvesServerCert for CurrentIdentity {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().certified_key().clone())
    }
}

/// Reduces a ClientHello to what the policy needs.
pub(crate) fn summarize(
    hello: &ClientHello<'_>,
    peer: SocketAddr,
    time: SystemTime,
) -> ClientHelloSummary {
    ClientHelloSummary {
        sni: hello.server_name().map(str::to_owned),
        offered_groups: hello
            .named_groups()
            .unwrap_or_default()
            .iter()
            .map(|g| GroupId::from(*g))
            .collect(),
        alpn: hello
            .alpn()
            .into_iter()
            .flatten()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
        peer: peer.ip(),
        time,
    }
}

/// A server config that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The policy does not fit the groups or client auth.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// No cipher suite configured.
    #[error(
        "cipher_suites is empty; name at least one TLS 1.3 suite, e.g. TLS_AES_128_GCM_SHA256"
    )]
    NoCipherSuites,
    /// The client CA cannot be used.
    #[error("client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a connection did not become a TLS session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The policy refused the ClientHello (or the client certificate's identity).
    #[error("unauthorized: {0}")]
    Refused(Refusal),
    /// The peer sent no valid ClientHello (garbage, TLS 1.2-only, closed early).
    #[error("peer sent no valid ClientHello: {0}")]
    ClientHello(io::Error),
    /// The handshake failed after the ClientHello (certificate, alert, peer abort).
    #[error(
        "handshake failed (client offered: {}): {error}",
        display_list_capped(offered)
    )]
    Handshake {
        /// What the client offered.
        offered: Vec<GroupId>,
        /// What went wrong.
        error: io::Error,
    },
    /// The handshake took longer than the timeout.
    #[error("handshake not completed within {0:?}")]
    Timeout(Duration),
    /// A per-connection config could not be built.
    #[error(transparent)]
    Config(#[from] ServerError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_handshake_names_at_most_sixteen_offered_groups() {
        let e = AcceptError::Handshake {
            offered: (0..32_000u16).map(|i| GroupId(0x8000 + i)).collect(),
            error: io::Error::other("peer aborted"),
        };
        let shown = e.to_string();
        assert!(
            shown.contains(" ... and 31984 more): peer aborted"),
            "{shown}"
        );
        assert!(shown.len() < 400, "{} bytes: {shown}", shown.len());
    }
}
