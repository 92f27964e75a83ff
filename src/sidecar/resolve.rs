//! What the user wrote, validated: [`SidecarConfig::resolve`] checks every field for the
//! mode, loads certificates and keys, and yields a [`Sidecar`] ready to run.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ClientSidecar, Common, ServerSidecar, Sidecar};
use crate::config::{
    ClientTlsOptions, ConfigError, ConfigSource, Layered, Mode, PolicyReload, ServerTlsOptions,
    SidecarConfig,
};
use crate::gate::config::{GateBudgets, GateConfig, Sections};
use crate::proxy::{ForwardedMode, HttpOptions, OriginAllowList, Upstream};
use crate::value::Dur;
use crate::ServeOptions;

impl SidecarConfig {
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
                        tools: self.tools.as_ref(),
                        approvals: self.approvals.as_ref(),
                        fleet: self.fleet.as_ref(),
                    },
                    self.client_ca.is_some(),
                    common.http.max_body_bytes,
                )?;
                if let Some(g) = &mut gate {
                    g.budgets = self.gate_budgets(&common)?;
                }
                let admin_tls = self.admin_tls.unwrap_or(false);
                self.approval_desk(gate.as_ref(), admin_tls)?;
                let cert = require(self.cert, "cert", mode)?;
                let key = require(self.key, "key", mode)?;
                let options = ServerTlsOptions {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.client_ca,
                    groups: self.groups,
                    policy: self.policy,
                    sunset: self.sunset.map(|s| s.0),
                    fallback_rules: self.fallback_rules.unwrap_or_default(),
                    handshake_timeout: self.handshake_timeout.map(|d| d.0),
                    ticket_keys: self.ticket_keys.clone(),
                };
                Ok(Sidecar::Server(ServerSidecar {
                    listen: require(self.listen, "listen", mode)?,
                    acceptor: options.build()?,
                    upstream,
                    cert,
                    key,
                    gate,
                    source: None,
                    admin_tls,
                    common,
                }))
            }
            Mode::Client => {
                for (field, set) in [
                    ("cert", self.cert.is_some()),
                    ("key", self.key.is_some()),
                    ("client-ca", self.client_ca.is_some()),
                    ("ticket-keys", self.ticket_keys.is_some()),
                    ("sunset", self.sunset.is_some()),
                    ("fallback-rules", self.fallback_rules.is_some()),
                    ("handshake-timeout", self.handshake_timeout.is_some()),
                    ("reload-interval", self.reload_interval.is_some()),
                    ("auth", self.auth.is_some()),
                    ("rules", self.rules.is_some()),
                    ("rate-limit", self.rate_limit.is_some()),
                    ("audit", self.audit.is_some()),
                    ("tools", self.tools.is_some()),
                    ("approvals", self.approvals.is_some()),
                    ("fleet", self.fleet.is_some()),
                    ("admin-tls", self.admin_tls.is_some()),
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
                let options = ClientTlsOptions {
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

    /// Rules that hold calls for approval need the admin listener, where approvers decide;
    /// approvers by identity need it over TLS, where their certificates are verified.
    fn approval_desk(&self, gate: Option<&GateConfig>, admin_tls: bool) -> Result<(), ConfigError> {
        let held: Vec<_> = gate
            .map(|g| g.rules.iter().filter_map(|r| r.approval.as_ref()).collect())
            .unwrap_or_default();
        if held.is_empty() {
            return Ok(());
        }
        if self.admin.is_none() {
            return Err(ConfigError::Field {
                field: "admin",
                error: "rules with require-approval are decided on the admin listener: set admin = \"127.0.0.1:PORT\"".to_owned(),
            });
        }
        let by_identity = held
            .iter()
            .flat_map(|a| &a.approvers)
            .any(|a| matches!(a, crate::gate::approval::Approver::Identity(_)));
        if by_identity && !admin_tls {
            return Err(ConfigError::Field {
                field: "admin-tls",
                error: "approvers named by id:PATTERN prove their identity with a client certificate on the admin listener: set admin-tls = true".to_owned(),
            });
        }
        Ok(())
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

impl Layered {
    /// Validates the layered settings for `mode`; see [`SidecarConfig::resolve`].
    pub fn resolve(self, mode: Mode) -> Result<Sidecar, ConfigError> {
        Ok(self.config.resolve(mode)?.reloading(self.source))
    }
}

impl ConfigSource {
    /// Re-reads the file and validates the whole of it as a server sidecar config, as
    /// `check-config` would (a file that could not start is not half applied); returns the
    /// groups and policy it now asks for.
    pub fn reload_policy(&self) -> Result<PolicyReload, ConfigError> {
        let r = self.reread()?;
        match r.config.resolve(Mode::Server)? {
            Sidecar::Server(s) => Ok(PolicyReload {
                groups: s.acceptor.groups(),
                policy: s.acceptor.policy(),
                restart_needed: r.restart_needed,
                overridden_by_flags: r.overridden_by_flags,
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
