//! What the user typed: the clap structs, and their conversions into the library's options
//! (flags first, resolved and validated by [`mcp_pqtls::config`] and
//! [`mcp_pqtls::sidecar`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::config::{
    ClientTlsOptions, Dur, LogFormat, ServerTlsOptions, SidecarConfig, Sunset,
};
use mcp_pqtls::groups::GroupList;
use mcp_pqtls::policy::FallbackRule;
use mcp_pqtls::probe::{Requirement, Target};
use mcp_pqtls::proxy::{ForwardedMode, OriginMode};
use mcp_pqtls::PolicyMode;

/// Post-quantum TLS 1.3 for remote MCP: hybrid X25519+ML-KEM key exchange with policy.
#[derive(Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Server sidecar: PQ TLS listener in front of a plain-HTTP MCP server.
    Server {
        #[command(flatten)]
        common: SidecarArgs,
        #[command(flatten)]
        tls: ServerSidecarArgs,
    },
    /// Client sidecar: plain-HTTP loopback listener for an MCP client, PQ TLS upstream.
    Client {
        #[command(flatten)]
        common: SidecarArgs,
        #[command(flatten)]
        tls: ClientSidecarArgs,
    },
    /// Validate a sidecar config file (its `mode` says which) without starting anything.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Dev certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Serve every HTTP request with the ConnectionInfo of its connection, as JSON.
    Reflect {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One HTTPS GET over PQ TLS; prints our side's ConnectionInfo and the response body.
    Connect {
        /// https://HOST:PORT/PATH
        url: http::Uri,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Probe TLS endpoints: groups accepted, preferred and refused, upgrade and fallback
    /// behaviour, certificate. Exit 0: requirements met; 1: not met; 2: could not run.
    Probe(ProbeArgs),
    /// Load generator and MCP-shaped upstream for measuring a deployment (see benches/).
    /// Prints one JSON report.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Tool pinning: write a pin file from a live MCP server, or show what changed since.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// Session-ticket keys shared by a fleet of server sidecars (`ticket-keys = "FILE"`).
    TicketKeys {
        #[command(subcommand)]
        command: TicketKeysCommand,
    },
    /// Calls the gate holds for approval (`require-approval` rules): list, show, decide.
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// The whole tunnel on one machine: dev certificates, an MCP echo server, a server and a
    /// client sidecar, and MCP requests through them, with what each hop negotiated.
    Demo {
        /// Key algorithm of the dev certificates.
        #[arg(long, default_value = "ecdsa-p256")]
        key_alg: KeyAlg,
        /// Also print the sidecars' log lines (info and up; `RUST_LOG` chooses otherwise).
        #[arg(short, long)]
        verbose: bool,
    },
}

/// Flags both sidecars take; each is also a key of the `--config` file (flags win).
#[derive(Args)]
pub(crate) struct SidecarArgs {
    /// TOML config file (keys are these flags' names; see examples/).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    pub(crate) listen: Option<SocketAddr>,
    /// Server: http://HOST:PORT or unix:/PATH. Client: https://HOST:PORT.
    #[arg(long)]
    pub(crate) upstream: Option<String>,
    /// Admin listener for /metrics, /healthz, /readyz (e.g. 127.0.0.1:9090).
    #[arg(long)]
    pub(crate) admin: Option<SocketAddr>,
    /// Groups in order of preference (IANA names, comma-separated).
    #[arg(long)]
    pub(crate) groups: Option<GroupList>,
    /// pq-required, pq-preferred or classical-allowed.
    #[arg(long)]
    pub(crate) policy: Option<PolicyMode>,
    /// Origins allowed when a request carries one (comma-separated or repeated; `*`: any).
    #[arg(long, value_delimiter = ',')]
    pub(crate) allowed_origins: Option<Vec<String>>,
    /// Origin sent upstream: rewrite (to the upstream's own), strip or preserve.
    #[arg(long)]
    pub(crate) origin: Option<OriginMode>,
    /// Send the client's Host upstream instead of the upstream's authority.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) preserve_host: Option<bool>,
    /// Forwarded / X-Forwarded-*: replace, append or strip.
    #[arg(long)]
    pub(crate) forwarded: Option<ForwardedMode>,
    /// Connections served at once.
    #[arg(long)]
    pub(crate) max_connections: Option<usize>,
    /// Connections served at once from one address (IPv6: one --ipv6-prefix); default a
    /// quarter of --max-connections.
    #[arg(long)]
    pub(crate) max_connections_per_ip: Option<usize>,
    /// Prefix length an IPv6 client is counted and rate-limited under (default 64).
    #[arg(long)]
    ipv6_prefix: Option<u8>,
    /// Concurrent h2 streams per connection (default 256).
    #[arg(long)]
    pub(crate) max_concurrent_streams: Option<u32>,
    /// Time from the handshake to the first request head, e.g. 10s.
    #[arg(long)]
    pub(crate) first_request_timeout: Option<Dur>,
    /// Time a connection with no request in flight stays open, e.g. 60s.
    #[arg(long)]
    pub(crate) idle_timeout: Option<Dur>,
    /// h2: time without a frame from the peer before a PING, e.g. 20s.
    #[arg(long)]
    pub(crate) keepalive_interval: Option<Dur>,
    /// h2: time a PING gets to be answered before the connection is closed, e.g. 20s.
    #[arg(long)]
    pub(crate) keepalive_timeout: Option<Dur>,
    /// Time a request body gets to arrive whole (408 beyond), e.g. 30s.
    #[arg(long)]
    pub(crate) request_body_timeout: Option<Dur>,
    /// Upstream requests in flight at once (503 beyond); default --max-connections.
    #[arg(long)]
    pub(crate) max_upstream_requests: Option<usize>,
    /// Of those, in flight at once for one address (IPv6: one --ipv6-prefix); server default
    /// a quarter of --max-upstream-requests.
    #[arg(long)]
    pub(crate) max_upstream_requests_per_ip: Option<usize>,
    /// Largest request head in bytes.
    #[arg(long)]
    pub(crate) max_header_bytes: Option<usize>,
    /// Largest request body in bytes.
    #[arg(long)]
    pub(crate) max_body_bytes: Option<u64>,
    /// Time the upstream gets to start a response, e.g. 60s (streams have none once started).
    #[arg(long)]
    pub(crate) upstream_timeout: Option<Dur>,
    /// Time in-flight requests and streams get on SIGTERM/SIGINT, e.g. 30s.
    #[arg(long)]
    pub(crate) drain_timeout: Option<Dur>,
    /// Log format: text or json.
    #[arg(long)]
    pub(crate) log_format: Option<LogFormat>,
}

/// Server sidecar flags.
#[derive(Args)]
pub(crate) struct ServerSidecarArgs {
    /// PEM certificate chain, end-entity first.
    #[arg(long)]
    pub(crate) cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long)]
    pub(crate) key: Option<PathBuf>,
    /// Require client certificates issued under these CAs (mTLS).
    #[arg(long)]
    pub(crate) client_ca: Option<PathBuf>,
    /// After this RFC 3339 instant, classical fallback is refused (pq-preferred).
    #[arg(long)]
    pub(crate) sunset: Option<Sunset>,
    /// Fallback rule `ACTION KIND:VALUE` (repeatable; first match wins).
    #[arg(long = "fallback-rule")]
    pub(crate) fallback_rules: Vec<FallbackRule>,
    /// Time from TCP accept to a completed handshake, e.g. 10s.
    #[arg(long)]
    pub(crate) handshake_timeout: Option<Dur>,
    /// How often cert and key files are checked for changes (0s: SIGHUP only).
    #[arg(long)]
    pub(crate) reload_interval: Option<Dur>,
}

/// Client sidecar flags.
#[derive(Args)]
pub(crate) struct ClientSidecarArgs {
    /// Trust upstream certificates issued under these CAs (default: system roots).
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// PEM client certificate chain (mTLS).
    #[arg(long)]
    pub(crate) client_cert: Option<PathBuf>,
    /// PEM client key (mTLS).
    #[arg(long)]
    pub(crate) client_key: Option<PathBuf>,
    /// Server name to send and verify instead of the upstream's host.
    #[arg(long)]
    pub(crate) sni: Option<String>,
    /// Host values accepted (comma-separated or repeated; `*`: any); default the listen
    /// address and localhost, 127.0.0.1 and [::1] on its port. Others get 421.
    #[arg(long, value_delimiter = ',')]
    pub(crate) allowed_hosts: Option<Vec<String>>,
}

/// `probe`: targets and how to reach them.
#[derive(Args)]
pub(crate) struct ProbeArgs {
    /// Endpoints: HOST:PORT, [IPv6]:PORT, HOST (port 443) or https://HOST[:PORT].
    #[arg(required_unless_present = "targets_file")]
    pub(crate) targets: Vec<Target>,
    /// A file of targets, one per line (blank lines and `#` comments ignored).
    #[arg(long)]
    pub(crate) targets_file: Option<PathBuf>,
    /// Server name to send and verify instead of the target's host.
    #[arg(long)]
    pub(crate) sni: Option<String>,
    /// Verify the server's chain against these CAs (default: system roots).
    #[arg(long, conflicts_with = "insecure")]
    pub(crate) ca: Option<PathBuf>,
    /// Do not verify the server's chain (its CertificateVerify is still checked).
    #[arg(long, short = 'k')]
    pub(crate) insecure: bool,
    /// PEM client certificate chain, for servers that ask for one.
    #[arg(long, requires = "client_key")]
    pub(crate) client_cert: Option<PathBuf>,
    /// PEM client key.
    #[arg(long, requires = "client_cert")]
    pub(crate) client_key: Option<PathBuf>,
    /// Groups to probe one by one (IANA names, comma-separated; default: the catalogue).
    #[arg(long)]
    pub(crate) groups: Option<GroupList>,
    /// ALPN protocols to offer, comma-separated (`none`: offer none).
    #[arg(long, value_delimiter = ',', default_value = "h2,http/1.1")]
    pub(crate) alpn: Vec<String>,
    /// Time for each handshake, e.g. 5s.
    #[arg(long, default_value = "5s")]
    pub(crate) timeout: Dur,
    /// table or json (default: table on a terminal, json otherwise).
    #[arg(long, value_enum)]
    pub(crate) format: Option<ProbeFormat>,
    /// pq (verdict pq-required or pq-preferred), pq-only (pq-required), or a group that must be
    /// accepted. Comma-separated or repeated; all must hold.
    #[arg(long, value_delimiter = ',')]
    pub(crate) require: Vec<Requirement>,
    /// Targets probed at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) parallel: usize,
}

/// How probe reports are printed.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ProbeFormat {
    Table,
    Json,
}

/// `tools` subcommands.
#[derive(Subcommand)]
pub(crate) enum ToolsCommand {
    /// Print a pin file of every tool the server at URL lists (`> tools.pin.json`).
    Pin {
        /// The MCP endpoint: https://HOST:PORT/PATH
        url: http::Uri,
        /// Time the whole listing gets (every page).
        #[arg(long, default_value = "60s")]
        timeout: Dur,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show, field by field, what the tools at URL change against a pin file.
    /// Exit 0: no change; 1: changes.
    Diff {
        /// The pin file (`tools pin` wrote it).
        #[arg(long)]
        pin_file: PathBuf,
        /// The MCP endpoint: https://HOST:PORT/PATH
        url: http::Uri,
        /// Time the whole listing gets (every page).
        #[arg(long, default_value = "60s")]
        timeout: Dur,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `ticket-keys` subcommands.
#[derive(Subcommand)]
pub(crate) enum TicketKeysCommand {
    /// Put a new random key first in FILE (created 0600 if missing): it encrypts from the
    /// next reload on; the previous keys still decrypt, the oldest beyond --keep are retired.
    Rotate {
        /// The key file every replica's `ticket-keys` names.
        file: PathBuf,
        /// Keys kept, the new one included.
        #[arg(long, default_value_t = mcp_pqtls::tls::tickets::DEFAULT_KEEP)]
        keep: usize,
    },
}

/// `approvals` subcommands. `list` and `show` print a table on a terminal, JSON otherwise.
#[derive(Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// The held calls you may decide, oldest first.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// table or json (default: table on a terminal, json when piped).
        #[arg(long)]
        format: Option<ProbeFormat>,
    },
    /// One held call: caller, TLS, tool, arguments.
    Show {
        /// The approval id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// table or json (default: table on a terminal, json when piped).
        #[arg(long)]
        format: Option<ProbeFormat>,
    },
    /// Approve a held call: it goes upstream unchanged.
    Approve {
        /// The approval id.
        id: String,
        /// Why (shown in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deny a held call: its client gets an error naming you and the reason.
    Deny {
        /// The approval id.
        id: String,
        /// Why (shown to the client and in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the admin listener is, and who you are to it.
#[derive(Args)]
pub(crate) struct AdminArgs {
    /// The server sidecar's admin listener: http://127.0.0.1:PORT (https:// with admin-tls).
    #[arg(long)]
    pub(crate) admin: http::Uri,
    /// A bearer token with an approver scope (visible to other local users in the process
    /// list: prefer --token-file).
    #[arg(long, conflicts_with = "token_file")]
    pub(crate) token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long)]
    pub(crate) token_file: Option<PathBuf>,
    /// https: trust the admin listener's certificate under these CAs.
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// https: your client certificate (an `id:PATTERN` approver).
    #[arg(long, requires = "client_key")]
    pub(crate) client_cert: Option<PathBuf>,
    /// https: its key.
    #[arg(long, requires = "client_cert")]
    pub(crate) client_key: Option<PathBuf>,
}

/// `certs` subcommands.
#[derive(Subcommand)]
pub(crate) enum CertsCommand {
    /// Write ca.pem, server.pem, server.key, client.pem, client.key into DIR.
    Init {
        /// Directory to write into (created if missing).
        dir: PathBuf,
        /// ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, ml-dsa-44, ml-dsa-65, ml-dsa-87.
        #[arg(long, default_value = "ecdsa-p256")]
        key_alg: KeyAlg,
    },
}

/// TLS server flags of `reflect`.
#[derive(Args)]
pub(crate) struct ServerArgs {
    /// PEM certificate chain, end-entity first.
    #[arg(long)]
    pub(crate) cert: PathBuf,
    /// PEM private key.
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// Require client certificates issued under these CAs (mTLS).
    #[arg(long)]
    pub(crate) client_ca: Option<PathBuf>,
    /// Groups in order of preference (IANA names, comma-separated).
    #[arg(long)]
    pub(crate) groups: Option<GroupList>,
    /// pq-required, pq-preferred (default) or classical-allowed.
    #[arg(long)]
    pub(crate) policy: Option<PolicyMode>,
    /// After this RFC 3339 instant, classical fallback is refused (pq-preferred).
    #[arg(long)]
    pub(crate) sunset: Option<Sunset>,
    /// Fallback rule `ACTION KIND:VALUE` (repeatable; first match wins), e.g.
    /// `allow-classical cidr:10.0.0.0/8`, `require-pq sni:*.prod.example.com`.
    #[arg(long = "fallback-rule")]
    pub(crate) fallback_rules: Vec<FallbackRule>,
}

/// `bench` subcommands.
#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Plain-HTTP upstream: POST gets a JSON-RPC result of --response-bytes; GET an SSE stream.
    Upstream {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Size of the JSON-RPC response to a POST.
        #[arg(long, default_value_t = 16 * 1024)]
        response_bytes: usize,
    },
    /// Keep-alive POSTs of a JSON-RPC tools/call at fixed concurrency: req/s and latency.
    Requests {
        #[command(flatten)]
        load: LoadArgs,
        /// Size of the tools/call request.
        #[arg(long, default_value_t = 1024)]
        request_bytes: usize,
        /// Send tools/list requests instead of tools/call (the bench upstream answers them
        /// with a list of about --response-bytes).
        #[arg(long)]
        list: bool,
    },
    /// New connections closed after the handshake (like `openssl s_time -new`).
    Handshakes {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// SSE delivery latency: runs an upstream on --upstream-listen, opens --streams streams
    /// through URL (which must lead to it), and times each event from upstream to client.
    Sse {
        /// http(s)://HOST:PORT/PATH leading to the upstream.
        url: http::Uri,
        /// Address for the in-process upstream.
        #[arg(long)]
        upstream_listen: SocketAddr,
        /// Concurrent streams.
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// Events sent to every stream.
        #[arg(long, default_value_t = 200)]
        events: u64,
        /// Time between events.
        #[arg(long, default_value = "10ms")]
        interval: Dur,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Opens --connections connections (handshake, no request) and holds them, to read the
    /// server's memory per idle connection. Prints a report once all are open.
    Idle {
        /// http(s)://HOST:PORT/PATH
        url: http::Uri,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Connections opened at once.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
        /// How long to hold them once open.
        #[arg(long, default_value = "10s")]
        hold: Dur,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// What a load run sends, for how long.
#[derive(Args)]
pub(crate) struct LoadArgs {
    /// http(s)://HOST:PORT/PATH
    pub(crate) url: http::Uri,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub(crate) connections: usize,
    /// Measured time.
    #[arg(long, short = 'd', default_value = "5s")]
    pub(crate) duration: Dur,
    /// Time before measuring (not counted).
    #[arg(long, default_value = "1s")]
    pub(crate) warmup: Dur,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// TLS client flags of `connect` and `bench`.
#[derive(Args)]
pub(crate) struct ClientArgs {
    /// Trust server certificates issued under these CAs (default: system roots).
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// Skip server certificate verification (throwaway test servers only).
    #[arg(long, short = 'k')]
    pub(crate) insecure: bool,
    /// PEM client certificate chain (mTLS).
    #[arg(long)]
    pub(crate) client_cert: Option<PathBuf>,
    /// PEM client key (mTLS).
    #[arg(long)]
    pub(crate) client_key: Option<PathBuf>,
    /// Groups in order of preference (IANA names, comma-separated).
    #[arg(long)]
    pub(crate) groups: Option<GroupList>,
    /// pq-required (default), pq-preferred or classical-allowed.
    #[arg(long)]
    pub(crate) policy: Option<PolicyMode>,
    /// Server name to send and verify instead of the URL's host.
    #[arg(long)]
    pub(crate) sni: Option<String>,
}

impl SidecarArgs {
    /// The flags as a config layer over the file (`--config`, taken out first), with the
    /// mode's own flags (`specific`) in it.
    pub(crate) fn into_config(self, specific: SidecarConfig) -> SidecarConfig {
        SidecarConfig {
            listen: self.listen,
            upstream: self.upstream,
            admin: self.admin,
            groups: self.groups,
            policy: self.policy,
            allowed_origins: self.allowed_origins,
            origin: self.origin,
            preserve_host: self.preserve_host,
            forwarded: self.forwarded,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            ipv6_prefix: self.ipv6_prefix,
            max_concurrent_streams: self.max_concurrent_streams,
            first_request_timeout: self.first_request_timeout,
            idle_timeout: self.idle_timeout,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            request_body_timeout: self.request_body_timeout,
            max_upstream_requests: self.max_upstream_requests,
            max_upstream_requests_per_ip: self.max_upstream_requests_per_ip,
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
            upstream_timeout: self.upstream_timeout,
            drain_timeout: self.drain_timeout,
            log_format: self.log_format,
            ..specific
        }
    }
}

impl From<ServerSidecarArgs> for SidecarConfig {
    fn from(a: ServerSidecarArgs) -> Self {
        Self {
            cert: a.cert,
            key: a.key,
            client_ca: a.client_ca,
            sunset: a.sunset,
            // No flag given: the file's rules stay.
            fallback_rules: (!a.fallback_rules.is_empty()).then_some(a.fallback_rules),
            handshake_timeout: a.handshake_timeout,
            reload_interval: a.reload_interval,
            ..SidecarConfig::default()
        }
    }
}

impl From<ClientSidecarArgs> for SidecarConfig {
    fn from(a: ClientSidecarArgs) -> Self {
        Self {
            ca: a.ca,
            client_cert: a.client_cert,
            client_key: a.client_key,
            sni: a.sni,
            allowed_hosts: a.allowed_hosts,
            ..SidecarConfig::default()
        }
    }
}

impl From<ServerArgs> for ServerTlsOptions {
    fn from(a: ServerArgs) -> Self {
        Self {
            cert: a.cert,
            key: a.key,
            client_ca: a.client_ca,
            groups: a.groups,
            policy: a.policy,
            sunset: a.sunset.map(|s| s.0),
            fallback_rules: a.fallback_rules,
            handshake_timeout: None,
            ticket_keys: None,
        }
    }
}

impl From<ClientArgs> for ClientTlsOptions {
    fn from(a: ClientArgs) -> Self {
        Self {
            ca: a.ca,
            insecure: a.insecure,
            client_cert: a.client_cert,
            client_key: a.client_key,
            groups: a.groups,
            policy: a.policy,
            sni: a.sni,
        }
    }
}
