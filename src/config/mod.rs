//! What the user wrote (flags, a TOML file, or both: flags win), layered, and the options
//! that resolve into validated TLS configs. [`crate::sidecar`] resolves the whole into a
//! running sidecar. Every error names the field (the flag and the TOML key are the same
//! word), the bad value, and what would be accepted.
//!
//! Dependencies run one way: `config` -> [`crate::gate::config`] -> `tls`/`certs`; the values
//! both write (durations, instants) live in the leaf [`crate::value`].

mod options;
mod reload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::certs::CertError;
use crate::gate::config::{
    ApprovalsSection, AuditSection, AuthSection, FleetSection, GateConfigError, OneOrMany,
    RateLimitSection, RuleSection, ToolsSection,
};
use crate::groups::GroupList;
use crate::policy::{FallbackRule, PolicyMode};
use crate::proxy::{ForwardedMode, OriginMode, UpstreamError};
use crate::tls::{ClientError, ServerError};
pub use crate::value::{parse_duration, parse_sunset, Dur, Sunset};
pub use options::{warn_insecure, ClientTlsOptions, ServerTlsOptions};
pub use reload::{ConfigSource, Layered, PolicyReload, Reread, RELOADABLE};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

crate::value::keywords!(LogFormat { Text => "text", Json => "json" });

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
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`, `/approvals`); off when unset.
    pub admin: Option<SocketAddr>,
    /// Server: serve the admin listener over TLS with the sidecar's certificate, groups and
    /// `client-ca` (approvers by `id:PATTERN`).
    pub admin_tls: Option<bool>,
    /// Server: PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// Server: PEM private key.
    pub key: Option<PathBuf>,
    /// Server: require client certificates issued under these CAs.
    pub client_ca: Option<PathBuf>,
    /// Server: session-ticket keys shared by a fleet (0600; `mcp-pqtls ticket-keys rotate`).
    pub ticket_keys: Option<PathBuf>,
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
    /// Server: `[tools]`, tool pinning and argument validation.
    pub tools: Option<ToolsSection>,
    /// Server: `[approvals]`, how many calls may wait for approval.
    pub approvals: Option<ApprovalsSection>,
    /// Server: `[fleet]`, the rate limits, approvals and first-use pins shared by the
    /// replicas on Redis.
    pub fleet: Option<FleetSection>,
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
            admin_tls,
            cert,
            key,
            client_ca,
            ticket_keys,
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
            audit,
            tools,
            approvals,
            fleet
        )
    };
}

impl SidecarConfig {
    /// Reads and parses a TOML file. Errors carry the file, line, key and accepted values.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::File {
            path: path.to_owned(),
            source,
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
}

/// A configuration that cannot be used; each names the field (flag or TOML key) to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A certificate field points at something unusable.
    #[error("{0}: {1}")]
    Cert(&'static str, #[source] CertError),
    /// Another field problem.
    #[error("{field}: {error}")]
    Field {
        /// The field (flag without dashes, or TOML key).
        field: &'static str,
        /// What is wrong and how to fix it.
        error: String,
    },
    /// A field of the gate's sections (`rules[2].tool`, `auth.jwks-url`, ...).
    #[error(transparent)]
    Gate(#[from] GateConfigError),
    /// A required field is missing.
    #[error("{field} is required in {mode} mode: pass --{field} or set `{field} = ...` in the config file")]
    Missing {
        /// The field.
        field: &'static str,
        /// The sidecar mode.
        mode: Mode,
    },
    /// The config file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The config file does not parse.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and key.
        source: toml::de::Error,
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
    /// The session-ticket key file cannot be used.
    #[error("ticket-keys: {0}")]
    TicketKeys(#[source] crate::tls::TicketKeyError),
}
