//! A sidecar, validated, and running it: [`SidecarConfig::resolve`] turns what the user
//! wrote into a [`Sidecar`], and [`Sidecar::run`] serves it (the listener, the proxy, the
//! admin listener, certificate and policy reload on SIGHUP and file changes, and graceful
//! shutdown).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tracing::{debug, error, info, warn};

use crate::admin::AdminState;
use crate::certs::Identity;
use crate::config::{
    warn_insecure, ClientOptions, ConfigError, ConfigSource, Layered, LogFormat, Mode,
    PolicyReload, ServerOptions, SidecarConfig,
};
use crate::gate::config::{GateBudgets, GateConfig, Sections};
use crate::gate::Gate;
use crate::groups::display_list;
use crate::proxy::{
    ForwardedMode, HttpOptions, OriginAllowList, Proxy, Side, Upstream, UpstreamConnector,
};
use crate::signal::Hangups;
use crate::tls::{PqAcceptor, PqConnector};
use crate::value::Dur;
use crate::ServeOptions;

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

/// What a started sidecar listens on.
#[derive(Clone, Debug)]
pub struct Started {
    /// `server` or `client`.
    pub mode: &'static str,
    /// The bound client-facing address.
    pub listen: SocketAddr,
    /// The bound admin address.
    pub admin: Option<SocketAddr>,
    /// One line saying what listens where, the upstream, the policy and the groups.
    pub summary: String,
}

impl Sidecar {
    /// Puts `flags` over `file` (when given), then validates the whole for `mode`; a server
    /// sidecar re-reads the file's groups and policy while it runs.
    pub fn load(
        mode: Mode,
        flags: SidecarConfig,
        file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        Layered::load(flags, file)?.resolve(mode)
    }

    /// Has a server sidecar re-read `source` for its groups and policy on SIGHUP, and when
    /// the file changes; a client sidecar ignores it.
    pub fn reloading(mut self, source: Option<ConfigSource>) -> Self {
        if let Sidecar::Server(s) = &mut self {
            s.source = source;
        }
        self
    }

    /// Binds the listeners, calls `started` (the CLI prints the summary), then serves until
    /// `shutdown` completes and in-flight requests drain (or the drain timeout passes).
    pub async fn run<F: Future>(
        self,
        shutdown: F,
        started: impl FnOnce(&Started),
    ) -> io::Result<()> {
        raise_fd_limit(&self);
        match self {
            Sidecar::Server(s) => {
                let listener = bind(s.listen, "listen").await?;
                let acceptor = Arc::new(s.acceptor);
                let gate_summary = s.gate.as_ref().map(|g| format!("; {}", g.summary()));
                let gate = s.gate.map(Gate::new).transpose()?.map(Arc::new);
                let connector = UpstreamConnector::for_upstream(&s.upstream);
                let proxy = match &gate {
                    Some(g) => Proxy::gated(
                        s.upstream.clone(),
                        connector,
                        s.common.http.clone(),
                        g.clone(),
                    ),
                    None => Proxy::new(
                        s.upstream.clone(),
                        connector,
                        Side::Server,
                        s.common.http.clone(),
                    ),
                };
                let state = Arc::new(AdminState {
                    tls: acceptor.metrics().clone(),
                    proxy: proxy.metrics().clone(),
                    gate: gate.as_ref().map(|g| g.metrics().clone()),
                    ..AdminState::default()
                });
                let admin = start_admin(s.common.admin, &state).await?;
                let cert = acceptor.certificate();
                let (policy, groups) = (acceptor.policy(), acceptor.groups());
                let summary = format!(
                    "mcp-pqtls server: listening on https://{} -> upstream {}; policy {}, groups {}; certificate {} ({}, expires {}){}{}",
                    listener.local_addr()?,
                    s.upstream,
                    policy.mode,
                    display_list(&groups),
                    cert.subject,
                    cert.key_algorithm,
                    cert.not_after,
                    admin.map(|a| format!("; admin http://{a}")).unwrap_or_default(),
                    gate_summary.unwrap_or_default(),
                );
                let info = Started {
                    mode: "server",
                    listen: listener.local_addr()?,
                    admin,
                    summary,
                };
                info!(listen = %info.listen, upstream = %s.upstream, policy = %policy.mode,
                    groups = %display_list(&groups), admin = ?admin, "Server sidecar started");
                let jwks_refresh = match &gate {
                    Some(g) => {
                        g.log_started();
                        g.load_keys().await
                    }
                    None => None,
                };
                // Ready once bound, before the start-up line: whoever reads the line may ask
                // /readyz at once.
                state.ready.store(true, Relaxed);
                let hangups = Hangups::install();
                started(&info);
                let reload = tokio::spawn(
                    Reload {
                        acceptor: acceptor.clone(),
                        cert: s.cert,
                        key: s.key,
                        source: s.source,
                        state: state.clone(),
                    }
                    .run(hangups, s.common.reload_interval),
                );
                let metrics = acceptor.metrics().clone();
                let result = serve(
                    listener,
                    Some(acceptor),
                    proxy,
                    &s.common,
                    metrics,
                    &state,
                    shutdown,
                )
                .await;
                reload.abort();
                if let Some(r) = jwks_refresh {
                    r.abort();
                }
                // After the drain, so that the records of calls it cut off (499) are on disk
                // when the process exits.
                if let Some(g) = gate {
                    let _ = tokio::task::spawn_blocking(move || g.close()).await;
                }
                result
            }
            Sidecar::Client(s) => {
                let listener = bind(s.listen, "listen").await?;
                if !listener.local_addr()?.ip().is_loopback() {
                    warn!(listen = %s.listen, "The client sidecar listens in plain HTTP on a non-loopback address: anyone who can reach it can use the upstream as this client");
                }
                let tls_metrics = s.connector.metrics().clone();
                let mut http = s.common.http.clone();
                if http.allowed_hosts.is_empty() {
                    http.allowed_hosts = default_hosts(listener.local_addr()?);
                }
                let proxy = Proxy::tunnel(s.upstream.clone(), s.connector.clone(), http);
                let listener_metrics = Arc::<crate::metrics::Metrics>::default();
                let state = Arc::new(AdminState {
                    tls: tls_metrics,
                    listener: Some(listener_metrics.clone()),
                    proxy: proxy.metrics().clone(),
                    ..AdminState::default()
                });
                let admin = start_admin(s.common.admin, &state).await?;
                if s.insecure {
                    warn_insecure(&s.upstream);
                }
                let summary = format!(
                    "mcp-pqtls client: listening on http://{} -> upstream {} over PQ TLS{}; policy {}, groups {}{}",
                    listener.local_addr()?,
                    s.upstream,
                    if s.insecure { " (certificate NOT verified: insecure)" } else { "" },
                    s.connector.policy(),
                    display_list(s.connector.offered_groups()),
                    admin.map(|a| format!("; admin http://{a}")).unwrap_or_default(),
                );
                let info = Started {
                    mode: "client",
                    listen: listener.local_addr()?,
                    admin,
                    summary,
                };
                info!(listen = %info.listen, upstream = %s.upstream, policy = %s.connector.policy(),
                    groups = %display_list(s.connector.offered_groups()), admin = ?admin, "Client sidecar started");
                state.ready.store(true, Relaxed);
                let mut hangups = Hangups::install();
                started(&info);
                let hup = tokio::spawn(async move {
                    loop {
                        hangups.recv().await;
                        info!(
                            "SIGHUP: the client sidecar serves no certificate; nothing to reload"
                        );
                    }
                });
                let result = serve(
                    listener,
                    None,
                    proxy,
                    &s.common,
                    listener_metrics,
                    &state,
                    shutdown,
                )
                .await;
                hup.abort();
                result
            }
        }
    }
}

/// One line on what the sidecar would run, as `check-config` prints it.
impl std::fmt::Display for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sidecar::Server(s) => {
                write!(
                    f,
                    "server mode: listen {}, upstream {}, policy {}, groups {}",
                    s.listen,
                    s.upstream,
                    s.acceptor.policy().mode,
                    display_list(&s.acceptor.groups()),
                )?;
                if let Some(g) = &s.gate {
                    write!(f, "; {}", g.summary())?;
                }
                Ok(())
            }
            Sidecar::Client(c) => write!(
                f,
                "client mode: listen {}, upstream {}, policy {}, groups {}",
                c.listen,
                c.upstream,
                c.connector.policy(),
                display_list(c.connector.offered_groups())
            ),
        }
    }
}

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

async fn serve<C, F>(
    listener: TcpListener,
    acceptor: Option<Arc<PqAcceptor>>,
    proxy: Proxy<C>,
    common: &Common,
    metrics: Arc<crate::metrics::Metrics>,
    state: &Arc<AdminState>,
    shutdown: F,
) -> io::Result<()>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    F: Future,
{
    state.ready.store(true, Relaxed);
    let ready = state.clone();
    let shutdown = async move {
        shutdown.await;
        ready.ready.store(false, Relaxed);
    };
    let mut server = crate::Server::builder(listener)
        .options(common.serve.clone())
        .metrics(metrics);
    if let Some(acceptor) = acceptor {
        server = server.tls(acceptor);
    }
    server.serve_hyper(proxy, shutdown).await
}

/// Raises the soft file-descriptor limit to the hard one: each connection, and each stream
/// proxied upstream, holds a descriptor, and the common soft limit of 1024 would make
/// `accept` fail with EMFILE long before `max-connections` is reached. Warns when even the
/// hard limit is below what the configured limits may need.
fn raise_fd_limit(sidecar: &Sidecar) {
    let common = match sidecar {
        Sidecar::Server(s) => &s.common,
        Sidecar::Client(c) => &c.common,
    };
    // A client connection and an upstream socket each, and some slack for files and pools.
    let needed = (common.serve.max_connections as u64)
        .saturating_add(common.http.max_upstream_requests as u64)
        .saturating_add(64);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => warn!(
            limit,
            needed,
            max_connections = common.serve.max_connections,
            max_upstream_requests = common.http.max_upstream_requests,
            "The file-descriptor limit is below what max-connections and max-upstream-requests may need: raise `ulimit -n` (LimitNOFILE=) or lower them"
        ),
        Ok(limit) => debug!(limit, "File-descriptor limit"),
        Err(e) => warn!(error = %e, "Could not raise the file-descriptor limit"),
    }
}

async fn bind(addr: SocketAddr, field: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("{field}: cannot listen on {addr}: {e}")))
}

async fn start_admin(
    addr: Option<SocketAddr>,
    state: &Arc<AdminState>,
) -> io::Result<Option<SocketAddr>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = bind(addr, "admin").await?;
    let bound = listener.local_addr()?;
    let state = state.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(state.respond(&req)) }
    });
    // The admin listener lives as long as the process: it answers /readyz (503) while
    // the main listener drains.
    // Its own small budget: whoever can reach the port must not be able to hold it, or
    // /healthz fails and the orchestrator restarts a healthy sidecar.
    let options = crate::ServeOptions {
        max_connections: 64,
        max_connections_per_ip: 16,
        max_concurrent_streams: 16,
        first_request_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(10),
        header_read_timeout: Duration::from_secs(5),
        ..crate::ServeOptions::default()
    };
    tokio::spawn(async move {
        crate::Server::builder(listener)
            .options(options)
            .serve_hyper(service, std::future::pending::<()>())
            .await
    });
    Ok(Some(bound))
}

/// What a running server sidecar reloads: the certificate and key, and the groups and policy
/// of its config file.
struct Reload {
    acceptor: Arc<PqAcceptor>,
    cert: PathBuf,
    key: PathBuf,
    source: Option<ConfigSource>,
    state: Arc<AdminState>,
}

impl Reload {
    /// Reloads everything on SIGHUP and, every `interval`, what changed on disk (by
    /// modification time). Whatever does not load or validate is refused and logged, and
    /// the old stays in use.
    async fn run(self, mut hangups: Hangups, interval: Option<Duration>) {
        let watched = || {
            (
                modified(&self.cert),
                modified(&self.key),
                self.source.as_ref().and_then(|s| modified(&s.file)),
            )
        };
        let mut seen = watched();
        // The config is validated whole, certificate included: a policy refused while the
        // pair was mid-update is tried again when the pair changes.
        let mut policy_refused = false;
        loop {
            let poll = async {
                match interval {
                    Some(i) => tokio::time::sleep(i).await,
                    None => std::future::pending().await,
                }
            };
            let trigger = tokio::select! {
                _ = poll => "file change",
                _ = hangups.recv() => "SIGHUP",
            };
            let now = watched();
            let everything = trigger == "SIGHUP";
            let pair_changed = (now.0, now.1) != (seen.0, seen.1);
            if everything || pair_changed {
                self.certificate(trigger);
            }
            if everything || now.2 != seen.2 || (pair_changed && policy_refused) {
                policy_refused = !self.policy(trigger);
            }
            seen = now;
        }
    }

    fn certificate(&self, trigger: &str) {
        match Identity::load(&self.cert, &self.key, self.acceptor.signature_schemes()) {
            Ok(identity) => {
                let info = identity.info().clone();
                self.acceptor.replace_identity(identity);
                self.state.reloads_ok.fetch_add(1, Relaxed);
                info!(trigger, subject = %info.subject, key_algorithm = %info.key_algorithm,
                    not_after = %info.not_after, "Certificate reloaded: new handshakes use it");
            }
            Err(e) => {
                self.state.reloads_failed.fetch_add(1, Relaxed);
                error!(trigger, error = %e, "Certificate reload refused; still serving the previous certificate");
            }
        }
    }

    /// Re-reads the groups and policy; false if they were refused.
    fn policy(&self, trigger: &str) -> bool {
        let Some(source) = &self.source else {
            return true;
        };
        let file = source.file.display();
        let refused = |error: &dyn std::fmt::Display, restart_needed: &[String]| {
            self.state.policy_reloads_failed.fetch_add(1, Relaxed);
            error!(trigger, %file, %error, restart_needed = %restart_needed.join(", "),
                "Groups and policy reload refused; still using the previous ones");
            false
        };
        let r = match source.reload_policy() {
            Ok(r) => r,
            Err(e) => return refused(&e, &[]),
        };
        // The new file may need what only a restart applies (a `client-ca` for `id:` rules).
        if let Err(e) = self.acceptor.replace_policy(&r.groups, r.policy.clone()) {
            return refused(&e, &r.restart_needed);
        }
        self.state.policy_reloads_ok.fetch_add(1, Relaxed);
        info!(trigger, %file, policy = %r.policy.mode, groups = %display_list(&r.groups),
            "Groups and policy reloaded: new handshakes use them; established connections keep theirs");
        if !r.restart_needed.is_empty() {
            warn!(%file, fields = %r.restart_needed.join(", "),
                "Settings changed that only a restart applies; still running with the previous ones");
        }
        if !r.overridden_by_flags.is_empty() {
            warn!(%file, fields = %r.overridden_by_flags.join(", "),
                "The file's value is overridden by a command-line flag; the flag's stays in use");
        }
        true
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
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
