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
    warn_insecure, ConfigError, ConfigSource, Layered, LogFormat, Mode, SidecarConfig,
};
use crate::gate::config::GateConfig;
use crate::gate::{Gate, GateError};
use crate::groups::display_list;
use crate::proxy::{HttpOptions, Proxy, Side, Upstream, UpstreamConnector};
use crate::signal::Hangups;
use crate::tls::{PqAcceptor, PqConnector};
use crate::ServeOptions;

mod resolve;

pub use self::resolve::default_hosts;

/// Why a sidecar could not start, or stopped on an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    /// A listener could not bind.
    #[error("{field}: cannot listen on {addr}: {source}")]
    Bind {
        /// The setting that names the address (`listen`, `admin`).
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The gate could not start (its audit log, its pins).
    #[error(transparent)]
    Gate(#[from] GateError),
    /// Serving failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Everything a server sidecar needs, validated.
#[derive(Debug)]
#[non_exhaustive]
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
    /// Serve the admin listener over TLS with `acceptor` (`admin-tls`).
    pub admin_tls: bool,
    /// The shared sidecar parts.
    pub common: Common,
}

/// Everything a client sidecar needs, validated.
#[derive(Debug)]
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
pub enum Sidecar {
    /// `mcp-pqtls server`.
    Server(ServerSidecar),
    /// `mcp-pqtls client`.
    Client(ClientSidecar),
}

/// What a started sidecar listens on.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Started {
    /// `server` or `client`.
    pub mode: Mode,
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
    ) -> Result<(), SidecarError> {
        raise_fd_limit(&self);
        match self {
            Sidecar::Server(s) => {
                let listener = bind(s.listen, "listen").await?;
                let acceptor = s.acceptor;
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
                    approvals: gate.clone().filter(|g| g.takes_approvals()),
                    ..AdminState::default()
                });
                let admin_tls = s.admin_tls.then(|| acceptor.clone());
                let admin_scheme = if s.admin_tls { "https" } else { "http" };
                let admin = start_admin(s.common.admin, &state, admin_tls).await?;
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
                    admin.map(|a| format!("; admin {admin_scheme}://{a}")).unwrap_or_default(),
                    gate_summary.unwrap_or_default(),
                );
                let info = Started {
                    mode: Mode::Server,
                    listen: listener.local_addr()?,
                    admin,
                    summary,
                };
                info!(listen = %info.listen, upstream = %s.upstream, policy = %policy.mode,
                    groups = %display_list(&groups), admin = ?admin, "Server sidecar started");
                let jwks_refresh = match &gate {
                    Some(g) => {
                        g.log_started();
                        g.join_fleet();
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
                        gate: gate.clone(),
                    }
                    .run(hangups, s.common.reload_interval),
                );
                let metrics = acceptor.metrics().clone();
                let releasing = gate.clone();
                let shutdown = async move {
                    shutdown.await;
                    // Held calls do not wait out the drain: they were never sent.
                    if let Some(g) = releasing {
                        g.release_held().await;
                    }
                };
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
                result.map_err(SidecarError::from)
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
                let admin = start_admin(s.common.admin, &state, None).await?;
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
                    mode: Mode::Client,
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
                result.map_err(SidecarError::from)
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

async fn serve<C, F>(
    listener: TcpListener,
    acceptor: Option<PqAcceptor>,
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

async fn bind(addr: SocketAddr, field: &'static str) -> Result<TcpListener, SidecarError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SidecarError::Bind {
            field,
            addr,
            source,
        })
}

async fn start_admin(
    addr: Option<SocketAddr>,
    state: &Arc<AdminState>,
    tls: Option<PqAcceptor>,
) -> Result<Option<SocketAddr>, SidecarError> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = bind(addr, "admin").await?;
    let bound = listener.local_addr()?;
    let state = state.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(state.serve(req).await) }
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
        let mut server = crate::Server::builder(listener).options(options);
        if let Some(acceptor) = tls {
            server = server.tls(acceptor);
        }
        server
            .serve_hyper(service, std::future::pending::<()>())
            .await
    });
    Ok(Some(bound))
}

/// What a running server sidecar reloads: the certificate and key, and the groups and policy
/// of its config file.
struct Reload {
    acceptor: PqAcceptor,
    cert: PathBuf,
    key: PathBuf,
    source: Option<ConfigSource>,
    state: Arc<AdminState>,
    /// Its pin file (`[tools] pin-file`) is reloaded like the policy.
    gate: Option<Arc<Gate>>,
}

impl Reload {
    /// Reloads everything on SIGHUP and, every `interval`, what changed on disk (by
    /// modification time, inode and size). Whatever does not load or validate is refused and logged, and
    /// the old stays in use.
    async fn run(self, mut hangups: Hangups, interval: Option<Duration>) {
        let pins = self.gate.as_ref().and_then(|g| g.pin_file());
        let tickets = self.acceptor.ticket_keys().map(|t| t.path().to_owned());
        let watched = || {
            (
                modified(&self.cert),
                modified(&self.key),
                self.source.as_ref().and_then(|s| modified(&s.file)),
                pins.and_then(modified),
                tickets.as_deref().and_then(modified),
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
            if everything || now.3 != seen.3 {
                self.pins(trigger);
            }
            if everything || now.4 != seen.4 {
                self.ticket_keys(trigger);
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

    /// Re-reads the shared session-ticket keys (`ticket-keys`); their names are logged, never
    /// their material.
    fn ticket_keys(&self, trigger: &str) {
        let Some(keys) = self.acceptor.ticket_keys() else {
            return;
        };
        let file = keys.path().display();
        match keys.reload() {
            Ok(()) => info!(trigger, %file, keys = %keys.names().join(","),
                "Session-ticket keys reloaded: the first encrypts, all decrypt"),
            Err(e) => error!(trigger, %file, error = %e,
                "Session-ticket keys reload refused; still using the previous ones"),
        }
    }

    /// Re-reads the pin file.
    fn pins(&self, trigger: &str) {
        let Some(gate) = &self.gate else { return };
        let Some(file) = gate.pin_file() else { return };
        let file = file.display();
        match gate.reload_pins() {
            Ok(()) => info!(trigger, %file, "Tool pins reloaded"),
            Err(e) => error!(trigger, %file, error = %e,
                "Tool pins reload refused; still using the previous ones"),
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

/// What tells a file changed: its modification time, and (Unix) its inode and size. A file
/// replaced by rename, as deploy tools and Kubernetes's symlink swap do, is a new inode even
/// when the clock's coarse granularity gives it the old one's modification time.
fn modified(path: &Path) -> Option<(SystemTime, u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, ino, m.len()))
}
