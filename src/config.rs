//! What the user wrote (flags, a TOML file, or both: flags win) resolved into validated TLS
//! configs and sidecar settings. Every error names the field (the flag and the TOML key are
//! the same word), the bad value, and what would be accepted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::certs::{load_roots, CertError, Identity};
use crate::crypto::Algorithms;
use crate::gate::config::{
    AuditSection, AuthSection, GateBudgets, GateConfig, OneOrMany, RateLimitSection, RuleSection,
    Sections,
};
use crate::groups::{Group, GroupError, GroupList};
use crate::policy::{FallbackRule, Policy, PolicyError, PolicyMode};
use crate::proxy::{
    ForwardedMode, HttpOptions, OriginAllowList, OriginMode, Upstream, UpstreamError,
};
use crate::tls::{
    ClientAuth, ClientError, ClientTlsConfig, PqAcceptor, PqConnector, ServerError,
    ServerTlsConfig, Trust,
};
use crate::ServeOptions;

/// Server-side TLS options.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
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
}

impl ServerOptions {
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
        PqAcceptor::new(config).map_err(ConfigError::Server)
    }
}

/// Client-side TLS options.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
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

impl ClientOptions {
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
            (None, true) => Trust::InsecureSkipVerify,
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

/// Parses a `sunset` (RFC 3339, e.g. `2027-01-01T00:00:00Z`).
pub fn parse_sunset(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("`{s}` is not an RFC 3339 instant such as 2027-01-01T00:00:00Z ({e})"))
}

/// Parses a duration such as `10s`, `1m30s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration such as 10s, 1m30s or 500ms ({e})"))
}

/// Which sidecar a config file describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// TLS listener in front of a plain-HTTP MCP server.
    Server,
    /// Plain-HTTP loopback listener beside an MCP client, PQ TLS to the upstream.
    Client,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Server => "server",
            Mode::Client => "client",
        })
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The sidecar settings as written: every field optional, so a file and flags can be
/// layered (flags win; see [`SidecarConfig::overlay`]). Keys are the flag names.
///
/// See `examples/server.toml` and `examples/client.toml` for every key, commented.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SidecarConfig {
    /// `server` or `client`; required in a file given to `check-config`.
    pub mode: Option<Mode>,
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Server mode: `http://HOST:PORT` or `unix:/PATH`; client mode: `https://HOST:PORT`.
    pub upstream: Option<String>,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`); off when unset.
    pub admin: Option<SocketAddr>,
    /// Server: PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// Server: PEM private key.
    pub key: Option<PathBuf>,
    /// Server: require client certificates issued under these CAs.
    pub client_ca: Option<PathBuf>,
    /// Client: trust these CAs for the upstream (default: system roots).
    pub ca: Option<PathBuf>,
    /// Client: skip verifying the upstream's certificate (tests only).
    pub insecure: Option<bool>,
    /// Client: certificate for mTLS.
    pub client_cert: Option<PathBuf>,
    /// Client: key for mTLS.
    pub client_key: Option<PathBuf>,
    /// Client: server name to send and verify.
    pub sni: Option<String>,
    /// Groups in order of preference.
    pub groups: Option<GroupList>,
    /// Policy mode.
    pub policy: Option<PolicyMode>,
    /// Server, `pq-preferred`: after this RFC 3339 instant classical fallback is refused.
    pub sunset: Option<Sunset>,
    /// Server, `pq-preferred`: fallback rules, first match wins.
    pub fallback_rules: Option<Vec<FallbackRule>>,
    /// Origins allowed on requests that carry one (`*`: any).
    pub allowed_origins: Option<Vec<String>>,
    /// `rewrite`, `strip` or `preserve`: the `Origin` sent upstream.
    pub origin: Option<OriginMode>,
    /// Send the client's `Host` upstream instead of the upstream's authority.
    pub preserve_host: Option<bool>,
    /// `replace`, `append` or `strip`: `Forwarded` / `X-Forwarded-*`.
    pub forwarded: Option<ForwardedMode>,
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// Connections served at once from one address (IPv6: one `ipv6-prefix`).
    pub max_connections_per_ip: Option<usize>,
    /// Prefix length an IPv6 client is counted and rate-limited under.
    pub ipv6_prefix: Option<u8>,
    /// Concurrent h2 streams per connection.
    pub max_concurrent_streams: Option<u32>,
    /// Time from the handshake to the first request head.
    pub first_request_timeout: Option<Dur>,
    /// Time a connection with no request in flight stays open.
    pub idle_timeout: Option<Dur>,
    /// h2: time without a frame before a PING.
    pub keepalive_interval: Option<Dur>,
    /// h2: time a PING gets to be answered.
    pub keepalive_timeout: Option<Dur>,
    /// Time a request body gets to arrive whole (408).
    pub request_body_timeout: Option<Dur>,
    /// Upstream requests in flight at once (503 beyond).
    pub max_upstream_requests: Option<usize>,
    /// Of those, in flight at once for one address (IPv6: one `ipv6-prefix`).
    pub max_upstream_requests_per_ip: Option<usize>,
    /// Client: `Host` values accepted (421 otherwise).
    pub allowed_hosts: Option<Vec<String>>,
    /// Server, gate: request-body bytes buffered across all connections (503 beyond).
    pub max_buffered_body_bytes: Option<u64>,
    /// Server, gate: gated requests in flight per connection (503 beyond).
    pub max_inflight_per_connection: Option<usize>,
    /// Server, gate: refusals per address per minute before its requests are refused unread.
    pub refusals_per_ip_per_minute: Option<u32>,
    /// Largest request head in bytes.
    pub max_header_bytes: Option<usize>,
    /// Largest request body in bytes.
    pub max_body_bytes: Option<u64>,
    /// Time from TCP accept to a completed TLS handshake.
    pub handshake_timeout: Option<Dur>,
    /// Time the upstream gets to start a response (streams, once started, have none).
    pub upstream_timeout: Option<Dur>,
    /// Time in-flight requests and streams get on shutdown.
    pub drain_timeout: Option<Dur>,
    /// How often the certificate and key files are checked for changes (`0s`: only SIGHUP).
    pub reload_interval: Option<Dur>,
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
    /// Server: `[auth]`, OAuth 2.1 bearer-token checks (see [`crate::gate`]).
    pub auth: Option<AuthSection>,
    /// Server: `[[rules]]`, per-method rules, first match wins.
    pub rules: Option<Vec<RuleSection>>,
    /// Server: `[[rate-limit]]` (or one `[rate-limit]` table), token buckets per client.
    pub rate_limit: Option<OneOrMany<RateLimitSection>>,
    /// Server: `[audit]`, one JSON line per JSON-RPC message.
    pub audit: Option<AuditSection>,
}

/// A duration written like `10s` or `1m30s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(Dur)
    }
}

/// An RFC 3339 instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sunset(pub SystemTime);

impl std::str::FromStr for Sunset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_sunset(s).map(Sunset)
    }
}

/// Deserializes a type from its string form through `FromStr`, so a file value gets the
/// same checks and messages as the flag.
macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(Dur, Sunset, PolicyMode, FallbackRule);

/// Everything a server sidecar needs, validated.
#[derive(Debug)]
pub struct ServerSidecar {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The plain-HTTP upstream.
    pub upstream: Upstream,
    /// The TLS acceptor.
    pub acceptor: PqAcceptor,
    /// Certificate and key files, for reload.
    pub cert: PathBuf,
    /// See `cert`.
    pub key: PathBuf,
    /// The MCP gate (`[auth]`, `[[rules]]`, `[[rate-limit]]`, `[audit]`); `None`: off.
    pub gate: Option<GateConfig>,
    /// The config file groups and policy are reloaded from (see [`Sidecar::reloading`]);
    /// `None`: flags only, nothing to reload but the certificate.
    pub source: Option<ConfigSource>,
    /// The shared sidecar parts.
    pub common: Common,
}

/// Everything a client sidecar needs, validated.
#[derive(Debug)]
pub struct ClientSidecar {
    /// Where to listen (plain HTTP; loopback unless told otherwise).
    pub listen: SocketAddr,
    /// The PQ TLS upstream.
    pub upstream: Upstream,
    /// The TLS connector.
    pub connector: PqConnector,
    /// The upstream's certificate is not verified (`insecure`).
    pub insecure: bool,
    /// The shared sidecar parts.
    pub common: Common,
}

/// What both sidecars share.
#[derive(Clone, Debug)]
pub struct Common {
    /// Admin listener.
    pub admin: Option<SocketAddr>,
    /// Request rewriting and limits.
    pub http: HttpOptions,
    /// Connection limits and drain.
    pub serve: ServeOptions,
    /// File-change check interval (`None`: SIGHUP only).
    pub reload_interval: Option<Duration>,
    /// Log format.
    pub log_format: LogFormat,
}

/// A validated sidecar.
#[derive(Debug)]
// One per process: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Sidecar {
    /// `mcp-pqtls server`.
    Server(ServerSidecar),
    /// `mcp-pqtls client`.
    Client(ClientSidecar),
}

/// Calls `$apply!` with every field of [`SidecarConfig`], so that per-field code cannot
/// miss one.
macro_rules! sidecar_fields {
    ($apply:ident) => {
        $apply!(
            mode,
            listen,
            upstream,
            admin,
            cert,
            key,
            client_ca,
            ca,
            insecure,
            client_cert,
            client_key,
            sni,
            groups,
            policy,
            sunset,
            fallback_rules,
            allowed_origins,
            origin,
            preserve_host,
            forwarded,
            max_connections,
            max_connections_per_ip,
            ipv6_prefix,
            max_concurrent_streams,
            first_request_timeout,
            idle_timeout,
            keepalive_interval,
            keepalive_timeout,
            request_body_timeout,
            max_upstream_requests,
            max_upstream_requests_per_ip,
            allowed_hosts,
            max_buffered_body_bytes,
            max_inflight_per_connection,
            refusals_per_ip_per_minute,
            max_header_bytes,
            max_body_bytes,
            handshake_timeout,
            upstream_timeout,
            drain_timeout,
            reload_interval,
            log_format,
            auth,
            rules,
            rate_limit,
            audit
        )
    };
}

impl SidecarConfig {
    /// Reads and parses a TOML file. Errors carry the file, line, key and accepted values.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            error: e.to_string(),
        })
    }

    /// `self` with every field `over` sets replaced (flags over a file).
    pub fn overlay(self, over: SidecarConfig) -> Self {
        macro_rules! pick {
            ($($f:ident),*) => { Self { $($f: over.$f.or(self.$f)),* } };
        }
        sidecar_fields!(pick)
    }

    /// The fields (TOML keys) whose values differ between `self` and `other`.
    pub fn differing(&self, other: &Self) -> Vec<String> {
        macro_rules! differ {
            ($($f:ident),*) => { [$((stringify!($f), self.$f != other.$f)),*] };
        }
        sidecar_fields!(differ)
            .into_iter()
            .filter(|(_, differs)| *differs)
            .map(|(f, _)| f.replace('_', "-"))
            .collect()
    }

    /// Validates the settings for `mode` (the file's `mode` must agree) and loads
    /// certificates and keys.
    pub fn resolve(self, mode: Mode) -> Result<Sidecar, ConfigError> {
        if let Some(written) = self.mode {
            if written != mode {
                return Err(ConfigError::Field {
                    field: "mode",
                    error: format!("the file says `{written}` but `mcp-pqtls {mode}` was run; use `mcp-pqtls {written}` or change mode"),
                });
            }
        }
        let misplaced = |field: &'static str, set: bool, other: Mode| {
            if set {
                Err(ConfigError::Field {
                    field,
                    error: format!("only applies to {other} mode; remove it"),
                })
            } else {
                Ok(())
            }
        };
        let upstream = Upstream::parse(&require(self.upstream.clone(), "upstream", mode)?)
            .map_err(ConfigError::Upstream)?;
        let common = self.common(mode)?;
        match mode {
            Mode::Server => {
                for (field, set) in [
                    ("ca", self.ca.is_some()),
                    ("insecure", self.insecure.is_some()),
                    ("client-cert", self.client_cert.is_some()),
                    ("client-key", self.client_key.is_some()),
                    ("sni", self.sni.is_some()),
                    ("allowed-hosts", self.allowed_hosts.is_some()),
                ] {
                    misplaced(field, set, Mode::Client)?;
                }
                if upstream.is_tls() {
                    return Err(ConfigError::Field {
                        field: "upstream",
                        error: format!("`{upstream}`: the server sidecar speaks plain HTTP to its upstream; use http://HOST:PORT or unix:/PATH"),
                    });
                }
                let mut gate = GateConfig::resolve(
                    Sections {
                        auth: self.auth.as_ref(),
                        rules: self.rules.as_deref(),
                        rate_limit: self.rate_limit.as_ref().map(|r| r.0.as_slice()),
                        audit: self.audit.as_ref(),
                    },
                    self.client_ca.is_some(),
                    common.http.max_body_bytes,
                )?;
                if let Some(g) = &mut gate {
                    g.budgets = self.gate_budgets(&common)?;
                }
                let cert = require(self.cert, "cert", mode)?;
                let key = require(self.key, "key", mode)?;
                let options = ServerOptions {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.client_ca,
                    groups: self.groups,
                    policy: self.policy,
                    sunset: self.sunset.map(|s| s.0),
                    fallback_rules: self.fallback_rules.unwrap_or_default(),
                    handshake_timeout: self.handshake_timeout.map(|d| d.0),
                };
                Ok(Sidecar::Server(ServerSidecar {
                    listen: require(self.listen, "listen", mode)?,
                    acceptor: options.build()?,
                    upstream,
                    cert,
                    key,
                    gate,
                    source: None,
                    common,
                }))
            }
            Mode::Client => {
                for (field, set) in [
                    ("cert", self.cert.is_some()),
                    ("key", self.key.is_some()),
                    ("client-ca", self.client_ca.is_some()),
                    ("sunset", self.sunset.is_some()),
                    ("fallback-rules", self.fallback_rules.is_some()),
                    ("handshake-timeout", self.handshake_timeout.is_some()),
                    ("reload-interval", self.reload_interval.is_some()),
                    ("auth", self.auth.is_some()),
                    ("rules", self.rules.is_some()),
                    ("rate-limit", self.rate_limit.is_some()),
                    ("audit", self.audit.is_some()),
                    (
                        "max-buffered-body-bytes",
                        self.max_buffered_body_bytes.is_some(),
                    ),
                    (
                        "max-inflight-per-connection",
                        self.max_inflight_per_connection.is_some(),
                    ),
                    (
                        "refusals-per-ip-per-minute",
                        self.refusals_per_ip_per_minute.is_some(),
                    ),
                ] {
                    misplaced(field, set, Mode::Server)?;
                }
                if !upstream.is_tls() {
                    return Err(ConfigError::Field {
                        field: "upstream",
                        error: format!("`{upstream}`: the client sidecar reaches its upstream over PQ TLS; use https://HOST:PORT"),
                    });
                }
                let insecure = self.insecure.unwrap_or(false);
                let options = ClientOptions {
                    ca: self.ca,
                    insecure,
                    client_cert: self.client_cert,
                    client_key: self.client_key,
                    groups: self.groups,
                    policy: self.policy,
                    sni: self.sni,
                };
                Ok(Sidecar::Client(ClientSidecar {
                    listen: require(self.listen, "listen", mode)?,
                    connector: options.build()?,
                    insecure,
                    upstream,
                    common,
                }))
            }
        }
    }

    fn gate_budgets(&self, common: &Common) -> Result<GateBudgets, ConfigError> {
        let defaults = GateBudgets::default();
        let max_buffered_body_bytes = positive(
            self.max_buffered_body_bytes
                .unwrap_or(defaults.max_buffered_body_bytes),
            "max-buffered-body-bytes",
        )?;
        if max_buffered_body_bytes < common.http.max_body_bytes {
            return Err(ConfigError::Field {
                field: "max-buffered-body-bytes",
                error: format!(
                    "{max_buffered_body_bytes} is less than max-body-bytes ({}): one request could never be read; raise it or lower max-body-bytes",
                    common.http.max_body_bytes
                ),
            });
        }
        Ok(GateBudgets {
            max_buffered_body_bytes,
            request_body_timeout: common.http.request_body_timeout,
            // Follows max-concurrent-streams: a connection may have that many streams open,
            // and a cap below it would refuse a tunnel's streams rather than let it open
            // another connection.
            max_inflight_per_connection: positive(
                self.max_inflight_per_connection
                    .unwrap_or(common.serve.max_concurrent_streams as usize),
                "max-inflight-per-connection",
            )?,
            refusals_per_ip_per_minute: positive(
                self.refusals_per_ip_per_minute
                    .unwrap_or(defaults.refusals_per_ip_per_minute),
                "refusals-per-ip-per-minute",
            )?,
            ipv6_prefix: common.serve.ipv6_prefix,
        })
    }

    fn common(&self, mode: Mode) -> Result<Common, ConfigError> {
        let defaults = ServeOptions::default();
        let max_connections = positive(
            self.max_connections.unwrap_or(defaults.max_connections),
            "max-connections",
        )?;
        // The client sidecar's clients are local processes: one address, no share to keep.
        let per_ip_default = match mode {
            Mode::Server => (max_connections / 4).max(1),
            Mode::Client => max_connections,
        };
        let max_connections_per_ip = positive(
            self.max_connections_per_ip.unwrap_or(per_ip_default),
            "max-connections-per-ip",
        )?;
        let ipv6_prefix = self.ipv6_prefix.unwrap_or(defaults.ipv6_prefix);
        if !(1..=128).contains(&ipv6_prefix) {
            return Err(ConfigError::Field {
                field: "ipv6-prefix",
                error: format!(
                    "{ipv6_prefix} is not a prefix length; use 1 to 128 (64: one subscriber)"
                ),
            });
        }
        let duration = |v: Option<Dur>, default: Duration, field: &'static str| match v {
            Some(Dur(d)) if d.is_zero() => Err(ConfigError::Field {
                field,
                error: "must be longer than 0s".into(),
            }),
            Some(Dur(d)) => Ok(d),
            None => Ok(default),
        };
        let serve = ServeOptions {
            max_connections,
            max_connections_per_ip,
            ipv6_prefix,
            max_concurrent_streams: positive(
                self.max_concurrent_streams
                    .unwrap_or(defaults.max_concurrent_streams),
                "max-concurrent-streams",
            )?,
            first_request_timeout: duration(
                self.first_request_timeout,
                defaults.first_request_timeout,
                "first-request-timeout",
            )?,
            idle_timeout: duration(self.idle_timeout, defaults.idle_timeout, "idle-timeout")?,
            keepalive_interval: duration(
                self.keepalive_interval,
                defaults.keepalive_interval,
                "keepalive-interval",
            )?,
            keepalive_timeout: duration(
                self.keepalive_timeout,
                defaults.keepalive_timeout,
                "keepalive-timeout",
            )?,
            max_header_bytes: positive(
                self.max_header_bytes.unwrap_or(defaults.max_header_bytes),
                "max-header-bytes",
            )?,
            drain_timeout: self.drain_timeout.map_or(defaults.drain_timeout, |d| d.0),
            ..defaults
        };
        let http_defaults = HttpOptions::default();
        let max_upstream_requests = positive(
            self.max_upstream_requests.unwrap_or(max_connections),
            "max-upstream-requests",
        )?;
        let http = HttpOptions {
            allowed_origins: OriginAllowList::new(self.allowed_origins.clone().unwrap_or_default()),
            origin: self.origin.unwrap_or_default(),
            preserve_host: self.preserve_host.unwrap_or(false),
            // The client sidecar's peer is a local process: its loopback address means
            // nothing upstream.
            forwarded: self.forwarded.unwrap_or(match mode {
                Mode::Server => ForwardedMode::Replace,
                Mode::Client => ForwardedMode::Strip,
            }),
            max_body_bytes: positive(
                self.max_body_bytes.unwrap_or(http_defaults.max_body_bytes),
                "max-body-bytes",
            )?,
            upstream_timeout: self
                .upstream_timeout
                .map_or(http_defaults.upstream_timeout, |d| d.0),
            request_body_timeout: duration(
                self.request_body_timeout,
                http_defaults.request_body_timeout,
                "request-body-timeout",
            )?,
            max_upstream_requests,
            max_upstream_requests_per_ip: positive(
                self.max_upstream_requests_per_ip.unwrap_or(match mode {
                    Mode::Server => (max_upstream_requests / 4).max(1),
                    Mode::Client => max_upstream_requests,
                }),
                "max-upstream-requests-per-ip",
            )?,
            ipv6_prefix,
            // The client sidecar's default list needs the bound port: see `default_hosts`.
            allowed_hosts: self.allowed_hosts.clone().unwrap_or_default(),
        };
        Ok(Common {
            admin: self.admin,
            http,
            serve,
            reload_interval: match self.reload_interval {
                Some(Dur(d)) if d.is_zero() => None,
                Some(Dur(d)) => Some(d),
                None => Some(Duration::from_secs(10)),
            },
            log_format: self.log_format.unwrap_or_default(),
        })
    }
}

impl Sidecar {
    /// Has a server sidecar re-read `source` for its groups and policy on SIGHUP, and when
    /// the file changes; a client sidecar ignores it.
    pub fn reloading(mut self, source: Option<ConfigSource>) -> Self {
        if let Sidecar::Server(s) = &mut self {
            s.source = source;
        }
        self
    }
}

/// The fields a running server sidecar takes from its config file without a restart.
pub const RELOADABLE: [&str; 4] = ["groups", "policy", "sunset", "fallback-rules"];

/// A config file with the command line's flags over it: what a sidecar starts from, and
/// where a running server sidecar re-reads its groups and policy (flags still win).
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// The TOML file.
    pub file: PathBuf,
    /// The flags given at start.
    pub flags: SidecarConfig,
    /// The file and flags as they were at start: what the running sidecar uses.
    pub running: SidecarConfig,
}

/// What re-reading a [`ConfigSource`] found.
#[derive(Clone, Debug)]
pub struct PolicyReload {
    /// The groups, in order of preference.
    pub groups: Vec<Group>,
    /// The policy.
    pub policy: Policy,
    /// Fields, other than the [`RELOADABLE`] ones, that changed since start: only a
    /// restart applies them.
    pub restart_needed: Vec<String>,
    /// [`RELOADABLE`] fields the file sets but a command-line flag overrides.
    pub overridden_by_flags: Vec<String>,
}

impl ConfigSource {
    /// Reads `file` and puts `flags` over it.
    pub fn load(file: PathBuf, flags: SidecarConfig) -> Result<Self, ConfigError> {
        let running = SidecarConfig::from_file(&file)?.overlay(flags.clone());
        Ok(Self {
            file,
            flags,
            running,
        })
    }

    /// Re-reads the file and validates the whole of it as a server sidecar config, as
    /// `check-config` would (a file that could not start is not half applied); returns the
    /// groups and policy it now asks for.
    pub fn reload_policy(&self) -> Result<PolicyReload, ConfigError> {
        let file = SidecarConfig::from_file(&self.file)?;
        let now = file.clone().overlay(self.flags.clone());
        let mut restart_needed = self.running.differing(&now);
        restart_needed.retain(|f| !RELOADABLE.contains(&f.as_str()));
        let set_in_file = file.differing(&SidecarConfig::default());
        let mut overridden_by_flags = file.differing(&now);
        overridden_by_flags.retain(|f| RELOADABLE.contains(&f.as_str()) && set_in_file.contains(f));
        match now.resolve(Mode::Server)? {
            Sidecar::Server(s) => Ok(PolicyReload {
                groups: s.acceptor.groups(),
                policy: s.acceptor.policy(),
                restart_needed,
                overridden_by_flags,
            }),
            Sidecar::Client(_) => Err(ConfigError::Field {
                field: "mode",
                error: "a client sidecar has no policy to reload".into(),
            }),
        }
    }
}

/// The `Host` values a client sidecar bound to `listen` accepts when `allowed-hosts` is not
/// set: its address as bound, and the loopback names of its port.
pub fn default_hosts(listen: SocketAddr) -> Vec<String> {
    let port = listen.port();
    let mut hosts = vec![listen.to_string()];
    for h in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    hosts
}

fn require<T>(v: Option<T>, field: &'static str, mode: Mode) -> Result<T, ConfigError> {
    v.ok_or(ConfigError::Missing { field, mode })
}

fn positive<T: Default + PartialEq>(v: T, field: &'static str) -> Result<T, ConfigError> {
    if v == T::default() {
        Err(ConfigError::Field {
            field,
            error: "must be greater than 0".into(),
        })
    } else {
        Ok(v)
    }
}

/// A configuration that cannot be used; each names the field (flag or TOML key) to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The group list does not parse.
    #[error("groups: {0}")]
    Groups(GroupError),
    /// A policy field does not parse.
    #[error("{0}: {1}")]
    Policy(&'static str, PolicyError),
    /// A certificate field points at something unusable.
    #[error("{0}: {1}")]
    Cert(&'static str, CertError),
    /// Another field problem.
    #[error("{field}: {error}")]
    Field {
        /// The field (flag without dashes, or TOML key).
        field: &'static str,
        /// What is wrong and how to fix it.
        error: String,
    },
    /// A field of the gate's sections (`rules[2].tool`, `auth.jwks-url`, ...).
    #[error("{field}: {error}")]
    Gate {
        /// The field, with its section and index.
        field: String,
        /// What is wrong and how to fix it.
        error: String,
    },
    /// A required field is missing.
    #[error("{field} is required in {mode} mode: pass --{field} or set `{field} = ...` in the config file")]
    Missing {
        /// The field.
        field: &'static str,
        /// The sidecar mode.
        mode: Mode,
    },
    /// The config file cannot be read or parsed.
    #[error("{}: {error}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and key.
        error: String,
    },
    /// The upstream URL is unusable.
    #[error(transparent)]
    Upstream(UpstreamError),
    /// The server config is inconsistent (policy vs groups, client CA).
    #[error(transparent)]
    Server(ServerError),
    /// The client config is inconsistent.
    #[error(transparent)]
    Client(ClientError),
}
