//! What the user typed (flags, later a TOML file) resolved into validated TLS configs.
//! Every error names the flag to fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::certs::{load_roots, CertError, Identity};
use crate::crypto::Algorithms;
use crate::groups::{Group, GroupError};
use crate::policy::{FallbackRule, Policy, PolicyError, PolicyMode};
use crate::tls::{
    ClientAuth, ClientError, ClientTlsConfig, PqAcceptor, PqConnector, ServerError,
    ServerTlsConfig, Trust,
};

/// Server-side options as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// `--cert`: PEM chain, end-entity first.
    pub cert: PathBuf,
    /// `--key`: PEM private key.
    pub key: PathBuf,
    /// `--client-ca`: require client certificates issued under these CAs.
    pub client_ca: Option<PathBuf>,
    /// `--groups`: comma-separated IANA names, in order of preference.
    pub groups: Option<String>,
    /// `--policy`: `pq-required`, `pq-preferred` (default) or `classical-allowed`.
    pub policy: Option<String>,
    /// `--sunset`: RFC 3339 instant after which classical fallback is refused.
    pub sunset: Option<String>,
    /// `--fallback-rule`: `ACTION KIND:VALUE`, repeatable, first match wins.
    pub fallback_rules: Vec<String>,
}

impl ServerOptions {
    /// Resolves and validates the options into an acceptor.
    pub fn build(&self) -> Result<PqAcceptor, ConfigError> {
        let mut algorithms = Algorithms::default();
        if let Some(g) = &self.groups {
            algorithms.groups = parse_groups(g)?;
        }
        let mut policy = Policy::new(parse_policy(
            self.policy.as_deref(),
            PolicyMode::PqPreferred,
        )?);
        if let Some(s) = &self.sunset {
            policy.sunset =
                Some(
                    humantime::parse_rfc3339_weak(s).map_err(|e| ConfigError::Flag {
                        flag: "--sunset",
                        error: format!(
                            "`{s}` is not an RFC 3339 instant such as 2027-01-01T00:00:00Z ({e})"
                        ),
                    })?,
                );
        }
        policy.rules = self
            .fallback_rules
            .iter()
            .map(|r| r.parse::<FallbackRule>())
            .collect::<Result<_, _>>()
            .map_err(|e| ConfigError::Policy("--fallback-rule", e))?;
        let identity = load_identity(&self.cert, &self.key, &algorithms, "--cert/--key")?;
        let client_auth = match &self.client_ca {
            Some(ca) => ClientAuth::Required(Arc::new(
                load_roots(ca).map_err(|e| ConfigError::Cert("--client-ca", e))?,
            )),
            None => ClientAuth::None,
        };
        let mut config = ServerTlsConfig::new(identity);
        config.algorithms = algorithms;
        config.policy = policy;
        config.client_auth = client_auth;
        PqAcceptor::new(config).map_err(ConfigError::Server)
    }
}

/// Client-side options as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// `--ca`: trust server certificates issued under these CAs (default: system roots).
    pub ca: Option<PathBuf>,
    /// `--insecure`: skip server certificate verification.
    pub insecure: bool,
    /// `--client-cert`: PEM chain for mTLS.
    pub client_cert: Option<PathBuf>,
    /// `--client-key`: PEM key for mTLS.
    pub client_key: Option<PathBuf>,
    /// `--groups`: comma-separated IANA names, in order of preference.
    pub groups: Option<String>,
    /// `--policy`: `pq-required` (default), `pq-preferred` or `classical-allowed`.
    pub policy: Option<String>,
    /// `--sni`: server name to send and verify instead of the URL's host.
    pub sni: Option<String>,
}

impl ClientOptions {
    /// Resolves and validates the options into a connector.
    pub fn build(&self) -> Result<PqConnector, ConfigError> {
        let mut config = ClientTlsConfig::default();
        if let Some(g) = &self.groups {
            config.algorithms.groups = parse_groups(g)?;
        }
        config.policy = parse_policy(self.policy.as_deref(), PolicyMode::PqRequired)?;
        config.sni = self.sni.clone();
        config.trust = match (&self.ca, self.insecure) {
            (Some(_), true) => {
                return Err(ConfigError::Flag {
                    flag: "--insecure",
                    error: "cannot be combined with --ca; drop one".into(),
                })
            }
            (Some(ca), false) => Trust::Roots(Arc::new(
                load_roots(ca).map_err(|e| ConfigError::Cert("--ca", e))?,
            )),
            (None, true) => Trust::InsecureSkipVerify,
            (None, false) => Trust::System,
        };
        config.identity = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some(load_identity(
                c,
                k,
                &config.algorithms,
                "--client-cert/--client-key",
            )?),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Flag {
                    flag: "--client-cert",
                    error: "--client-cert and --client-key go together; give both or neither"
                        .into(),
                })
            }
        };
        PqConnector::new(config).map_err(ConfigError::Client)
    }
}

fn parse_groups(list: &str) -> Result<Vec<Group>, ConfigError> {
    Group::parse_list(list).map_err(ConfigError::Groups)
}

fn parse_policy(s: Option<&str>, default: PolicyMode) -> Result<PolicyMode, ConfigError> {
    s.map_or(Ok(default), str::parse)
        .map_err(|e| ConfigError::Policy("--policy", e))
}

fn load_identity(
    cert: &Path,
    key: &Path,
    alg: &Algorithms,
    flags: &'static str,
) -> Result<Identity, ConfigError> {
    Identity::load(cert, key, &alg.signature_schemes).map_err(|e| ConfigError::Cert(flags, e))
}

/// A configuration that cannot be used; each names the flag to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--groups` does not parse.
    #[error("--groups: {0}")]
    Groups(GroupError),
    /// A policy flag does not parse.
    #[error("{0}: {1}")]
    Policy(&'static str, PolicyError),
    /// A certificate flag points at something unusable.
    #[error("{0}: {1}")]
    Cert(&'static str, CertError),
    /// Another flag problem.
    #[error("{flag}: {error}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong and how to fix it.
        error: String,
    },
    /// The server config is inconsistent (policy vs groups, client CA).
    #[error(transparent)]
    Server(ServerError),
    /// The client config is inconsistent.
    #[error(transparent)]
    Client(ClientError),
}
