//! TLS options as written (paths, names, modes), resolved into our TLS configs: the one
//! place a CA file, `insecure` and a client certificate pair become a [`Trust`] and an
//! [`Identity`] (the client sidecar, `connect`, `bench` and `probe` all come through here).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::ConfigError;
use crate::certs::{load_roots, Identity};
use crate::crypto::Algorithms;
use crate::groups::GroupList;
use crate::policy::{FallbackRule, Policy, PolicyMode};
use crate::tls::{ClientAuth, ClientTlsConfig, PqAcceptor, PqConnector, ServerTlsConfig, Trust};

/// Server-side TLS options.
#[derive(Clone, Debug, Default)]
pub struct ServerTlsOptions {
    /// `cert`: PEM chain, end-entity first.
    pub cert: PathBuf,
    /// `key`: PEM private key.
    pub key: PathBuf,
    /// `client-ca`: require client certificates issued under these CAs.
    pub client_ca: Option<PathBuf>,
    /// `groups`: in order of preference.
    pub groups: Option<GroupList>,
    /// `policy`: default `pq-preferred`.
    pub policy: Option<PolicyMode>,
    /// `sunset`: after it, classical fallback is refused.
    pub sunset: Option<SystemTime>,
    /// `fallback-rule`s, first match wins.
    pub fallback_rules: Vec<FallbackRule>,
    /// `handshake-timeout`: default [`crate::tls::DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Option<Duration>,
    /// `ticket-keys`: session-ticket keys shared with other replicas.
    pub ticket_keys: Option<PathBuf>,
}

impl ServerTlsOptions {
    /// Resolves and validates the options into an acceptor.
    pub fn build(&self) -> Result<PqAcceptor, ConfigError> {
        let mut algorithms = Algorithms::default();
        if let Some(g) = &self.groups {
            algorithms.groups = g.0.clone();
        }
        let mut policy = Policy::new(self.policy.unwrap_or(PolicyMode::PqPreferred));
        policy.sunset = self.sunset;
        policy.rules = self.fallback_rules.clone();
        let identity = load_identity(&self.cert, &self.key, &algorithms, "cert/key")?;
        let client_auth = match &self.client_ca {
            Some(ca) => ClientAuth::Required(Arc::new(
                load_roots(ca).map_err(|e| ConfigError::Cert("client-ca", e))?,
            )),
            None => ClientAuth::None,
        };
        let mut config = ServerTlsConfig::new(identity);
        config.algorithms = algorithms;
        config.policy = policy;
        config.client_auth = client_auth;
        if let Some(t) = self.handshake_timeout {
            config.handshake_timeout = t;
        }
        if let Some(path) = &self.ticket_keys {
            config.ticket_keys =
                Some(crate::tls::TicketKeys::load(path).map_err(ConfigError::TicketKeys)?);
        }
        PqAcceptor::new(config).map_err(ConfigError::Server)
    }
}

/// Client-side TLS options.
#[derive(Clone, Debug, Default)]
pub struct ClientTlsOptions {
    /// `ca`: trust server certificates issued under these CAs (default: system roots).
    pub ca: Option<PathBuf>,
    /// `insecure`: skip server certificate verification.
    pub insecure: bool,
    /// `client-cert`: PEM chain for mTLS.
    pub client_cert: Option<PathBuf>,
    /// `client-key`: PEM key for mTLS.
    pub client_key: Option<PathBuf>,
    /// `groups`: in order of preference.
    pub groups: Option<GroupList>,
    /// `policy`: default `pq-required`.
    pub policy: Option<PolicyMode>,
    /// `sni`: server name to send and verify instead of the URL's host.
    pub sni: Option<String>,
}

impl ClientTlsOptions {
    /// Resolves and validates the options into a connector.
    pub fn build(&self) -> Result<PqConnector, ConfigError> {
        PqConnector::new(self.tls_config()?).map_err(ConfigError::Client)
    }

    /// Resolves the options (files read) into the connector's config, for callers that set
    /// more (such as ALPN) before building.
    pub fn tls_config(&self) -> Result<ClientTlsConfig, ConfigError> {
        let mut config = ClientTlsConfig::default();
        if let Some(g) = &self.groups {
            config.algorithms.groups = g.0.clone();
        }
        config.policy = self.policy.unwrap_or(PolicyMode::PqRequired);
        config.sni = self.sni.clone();
        config.trust = match (&self.ca, self.insecure) {
            (Some(_), true) => {
                return Err(ConfigError::Field {
                    field: "insecure",
                    error: "cannot be combined with ca; drop one".into(),
                })
            }
            (Some(ca), false) => Trust::Roots(Arc::new(
                load_roots(ca).map_err(|e| ConfigError::Cert("ca", e))?,
            )),
            (None, true) => crate::tls::danger::insecure_skip_verify(),
            (None, false) => Trust::System,
        };
        config.identity = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some(load_identity(
                c,
                k,
                &config.algorithms,
                "client-cert/client-key",
            )?),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Field {
                    field: "client-cert",
                    error: "client-cert and client-key go together; give both or neither".into(),
                })
            }
        };
        Ok(config)
    }
}

fn load_identity(
    cert: &Path,
    key: &Path,
    alg: &Algorithms,
    fields: &'static str,
) -> Result<Identity, ConfigError> {
    Identity::load(cert, key, &alg.signature_schemes).map_err(|e| ConfigError::Cert(fields, e))
}

/// The one warning for a client that does not verify its server (`insecure`, `--insecure`):
/// `server` names whom anyone on the path could impersonate.
pub fn warn_insecure(server: &dyn std::fmt::Display) {
    tracing::warn!(server = %server, "insecure: the server's certificate is NOT verified; anyone on the path can impersonate it");
}
