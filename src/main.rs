//! The `mcp-pqtls` command: parses flags and calls the library. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;

use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::config::{
    ClientOptions, ConfigSource, Dur, LogFormat, Mode, ServerOptions, Sidecar, SidecarConfig,
    Sunset,
};
use mcp_pqtls::groups::GroupList;
use mcp_pqtls::policy::FallbackRule;
use mcp_pqtls::probe::{probe_all, ProbeOptions, Requirement, Target};
use mcp_pqtls::proxy::{ForwardedMode, OriginMode};
use mcp_pqtls::tls::Trust;
use mcp_pqtls::PolicyMode;

/// Post-quantum TLS 1.3 for remote MCP: hybrid X25519+ML-KEM key exchange with policy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// The whole tunnel on one machine: dev certificates, an MCP echo server, a server and a
    /// client sidecar, and MCP requests through them, with what each hop negotiated.
    Demo {
        /// Key algorithm of the dev certificates.
        #[arg(long, default_value = "ecdsa-p256")]
        key_alg: KeyAlg,
    },
}

/// Flags both sidecars take; each is also a key of the `--config` file (flags win).
#[derive(Args)]
struct SidecarArgs {
    /// TOML config file (keys are these flags' names; see examples/).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Server: http://HOST:PORT or unix:/PATH. Client: https://HOST:PORT.
    #[arg(long)]
    upstream: Option<String>,
    /// Admin listener for /metrics, /healthz, /readyz (e.g. 127.0.0.1:9090).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Groups in order of preference (IANA names, comma-separated).
    #[arg(long)]
    groups: Option<GroupList>,
    /// pq-required, pq-preferred or classical-allowed.
    #[arg(long)]
    policy: Option<PolicyMode>,
    /// Origins allowed when a request carries one (comma-separated or repeated; `*`: any).
    #[arg(long, value_delimiter = ',')]
    allowed_origins: Option<Vec<String>>,
    /// Origin sent upstream: rewrite (to the upstream's own), strip or preserve.
    #[arg(long, value_parser = kebab::<OriginMode>)]
    origin: Option<OriginMode>,
    /// Send the client's Host upstream instead of the upstream's authority.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    preserve_host: Option<bool>,
    /// Forwarded / X-Forwarded-*: replace, append or strip.
    #[arg(long, value_parser = kebab::<ForwardedMode>)]
    forwarded: Option<ForwardedMode>,
    /// Connections served at once.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections served at once from one address (IPv6: one --ipv6-prefix); default a
    /// quarter of --max-connections.
    #[arg(long)]
    max_connections_per_ip: Option<usize>,
    /// Prefix length an IPv6 client is counted and rate-limited under (default 64).
    #[arg(long)]
    ipv6_prefix: Option<u8>,
    /// Concurrent h2 streams per connection (default 256).
    #[arg(long)]
    max_concurrent_streams: Option<u32>,
    /// Time from the handshake to the first request head, e.g. 10s.
    #[arg(long)]
    first_request_timeout: Option<Dur>,
    /// Time a connection with no request in flight stays open, e.g. 60s.
    #[arg(long)]
    idle_timeout: Option<Dur>,
    /// h2: time without a frame from the peer before a PING, e.g. 20s.
    #[arg(long)]
    keepalive_interval: Option<Dur>,
    /// h2: time a PING gets to be answered before the connection is closed, e.g. 20s.
    #[arg(long)]
    keepalive_timeout: Option<Dur>,
    /// Time a request body gets to arrive whole (408 beyond), e.g. 30s.
    #[arg(long)]
    request_body_timeout: Option<Dur>,
    /// Upstream requests in flight at once (503 beyond); default --max-connections.
    #[arg(long)]
    max_upstream_requests: Option<usize>,
    /// Of those, in flight at once for one address (IPv6: one --ipv6-prefix); server default
    /// a quarter of --max-upstream-requests.
    #[arg(long)]
    max_upstream_requests_per_ip: Option<usize>,
    /// Largest request head in bytes.
    #[arg(long)]
    max_header_bytes: Option<usize>,
    /// Largest request body in bytes.
    #[arg(long)]
    max_body_bytes: Option<u64>,
    /// Time the upstream gets to start a response, e.g. 60s (streams have none once started).
    #[arg(long)]
    upstream_timeout: Option<Dur>,
    /// Time in-flight requests and streams get on SIGTERM/SIGINT, e.g. 30s.
    #[arg(long)]
    drain_timeout: Option<Dur>,
    /// Log format: text or json.
    #[arg(long, value_parser = kebab::<LogFormat>)]
    log_format: Option<LogFormat>,
}

/// Server sidecar flags.
#[derive(Args)]
struct ServerSidecarArgs {
    /// PEM certificate chain, end-entity first.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Require client certificates issued under these CAs (mTLS).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// After this RFC 3339 instant, classical fallback is refused (pq-preferred).
    #[arg(long)]
    sunset: Option<Sunset>,
    /// Fallback rule `ACTION KIND:VALUE` (repeatable; first match wins).
    #[arg(long = "fallback-rule")]
    fallback_rules: Vec<FallbackRule>,
    /// Time from TCP accept to a completed handshake, e.g. 10s.
    #[arg(long)]
    handshake_timeout: Option<Dur>,
    /// How often cert and key files are checked for changes (0s: SIGHUP only).
    #[arg(long)]
    reload_interval: Option<Dur>,
}

/// Client sidecar flags.
#[derive(Args)]
struct ClientSidecarArgs {
    /// Trust upstream certificates issued under these CAs (default: system roots).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// PEM client certificate chain (mTLS).
    #[arg(long)]
    client_cert: Option<PathBuf>,
    /// PEM client key (mTLS).
    #[arg(long)]
    client_key: Option<PathBuf>,
    /// Server name to send and verify instead of the upstream's host.
    #[arg(long)]
    sni: Option<String>,
    /// Host values accepted (comma-separated or repeated; `*`: any); default the listen
    /// address and localhost, 127.0.0.1 and [::1] on its port. Others get 421.
    #[arg(long, value_delimiter = ',')]
    allowed_hosts: Option<Vec<String>>,
}

#[derive(Args)]
struct ProbeArgs {
    /// Endpoints: HOST:PORT, [IPv6]:PORT, HOST (port 443) or https://HOST[:PORT].
    #[arg(required_unless_present = "targets_file")]
    targets: Vec<Target>,
    /// A file of targets, one per line (blank lines and `#` comments ignored).
    #[arg(long)]
    targets_file: Option<PathBuf>,
    /// Server name to send and verify instead of the target's host.
    #[arg(long)]
    sni: Option<String>,
    /// Verify the server's chain against these CAs (default: system roots).
    #[arg(long, conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Do not verify the server's chain (its CertificateVerify is still checked).
    #[arg(long, short = 'k')]
    insecure: bool,
    /// PEM client certificate chain, for servers that ask for one.
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM client key.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Groups to probe one by one (IANA names, comma-separated; default: the catalogue).
    #[arg(long)]
    groups: Option<GroupList>,
    /// ALPN protocols to offer, comma-separated (`none`: offer none).
    #[arg(long, value_delimiter = ',', default_value = "h2,http/1.1")]
    alpn: Vec<String>,
    /// Time for each handshake, e.g. 5s.
    #[arg(long, default_value = "5s")]
    timeout: Dur,
    /// table or json (default: table on a terminal, json otherwise).
    #[arg(long, value_parser = kebab::<ProbeFormat>)]
    format: Option<ProbeFormat>,
    /// pq (verdict pq-required or pq-preferred), pq-only (pq-required), or a group that must be
    /// accepted. Comma-separated or repeated; all must hold.
    #[arg(long, value_delimiter = ',')]
    require: Vec<Requirement>,
    /// Targets probed at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

#[derive(Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ProbeFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Write ca.pem, server.pem, server.key, client.pem, client.key into DIR.
    Init {
        /// Directory to write into (created if missing).
        dir: PathBuf,
        /// ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, ml-dsa-44, ml-dsa-65, ml-dsa-87.
        #[arg(long, default_value = "ecdsa-p256")]
        key_alg: KeyAlg,
    },
}

#[derive(Args)]
struct ServerArgs {
    /// PEM certificate chain, end-entity first.
    #[arg(long)]
    cert: PathBuf,
    /// PEM private key.
    #[arg(long)]
    key: PathBuf,
    /// Require client certificates issued under these CAs (mTLS).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Groups in order of preference (IANA names, comma-separated).
    #[arg(long)]
    groups: Option<GroupList>,
    /// pq-required, pq-preferred (default) or classical-allowed.
    #[arg(long)]
    policy: Option<PolicyMode>,
    /// After this RFC 3339 instant, classical fallback is refused (pq-preferred).
    #[arg(long)]
    sunset: Option<Sunset>,
    /// Fallback rule `ACTION KIND:VALUE` (repeatable; first match wins), e.g.
    /// `allow-classical cidr:10.0.0.0/8`, `require-pq sni:*.prod.example.com`.
    #[arg(long = "fallback-rule")]
    fallback_rules: Vec<FallbackRule>,
}

#[derive(Subcommand)]
enum BenchCommand {
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

#[derive(Args)]
struct LoadArgs {
    /// http(s)://HOST:PORT/PATH
    url: http::Uri,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 16)]
    connections: usize,
    /// Measured time.
    #[arg(long, short = 'd', default_value = "5s")]
    duration: Dur,
    /// Time before measuring (not counted).
    #[arg(long, default_value = "1s")]
    warmup: Dur,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct ClientArgs {
    /// Trust server certificates issued under these CAs (default: system roots).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Skip server certificate verification (throwaway test servers only).
    #[arg(long, short = 'k')]
    insecure: bool,
    /// PEM client certificate chain (mTLS).
    #[arg(long)]
    client_cert: Option<PathBuf>,
    /// PEM client key (mTLS).
    #[arg(long)]
    client_key: Option<PathBuf>,
    /// Groups in order of preference (IANA names, comma-separated).
    #[arg(long)]
    groups: Option<GroupList>,
    /// pq-required (default), pq-preferred or classical-allowed.
    #[arg(long)]
    policy: Option<PolicyMode>,
    /// Server name to send and verify instead of the URL's host.
    #[arg(long)]
    sni: Option<String>,
}

/// Exit code for unusable configuration (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The sidecars read their log format from flags or their file; they set up logging
    // themselves once that is known.
    if !matches!(cli.command, Command::Server { .. } | Command::Client { .. }) {
        init_logging(LogFormat::Text);
    }
    // On a worker, not the main thread: an accept loop in `block_on` would wake the main
    // thread for every connection and hand each one across threads (measured: ~11% of a
    // pinned reflect server's CPU went to those context switches).
    let outcome = match tokio::spawn(run(cli)).await {
        Ok(outcome) => outcome,
        Err(panicked) => std::panic::resume_unwind(panicked.into_panic()),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .fmt_fields(mcp_pqtls::logfmt::text_fields())
            .init(),
    }
}

/// Parses a kebab-case enum through its serde names, so flag and file accept the same words.
fn kebab<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s))
        .map_err(|e| e.to_string())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Server { common, tls } => {
            let flags = SidecarConfig {
                cert: tls.cert,
                key: tls.key,
                client_ca: tls.client_ca,
                sunset: tls.sunset,
                fallback_rules: (!tls.fallback_rules.is_empty()).then_some(tls.fallback_rules),
                handshake_timeout: tls.handshake_timeout,
                reload_interval: tls.reload_interval,
                ..SidecarConfig::default()
            };
            return run_sidecar(Mode::Server, common, flags).await;
        }
        Command::Client { common, tls } => {
            let flags = SidecarConfig {
                ca: tls.ca,
                client_cert: tls.client_cert,
                client_key: tls.client_key,
                sni: tls.sni,
                allowed_hosts: tls.allowed_hosts,
                ..SidecarConfig::default()
            };
            return run_sidecar(Mode::Client, common, flags).await;
        }
        Command::CheckConfig { file } => {
            let config = match SidecarConfig::from_file(&file) {
                Ok(c) => c,
                Err(e) => return Ok(usage(&e)),
            };
            let Some(mode) = config.mode else {
                eprintln!(
                    "error: {}: mode is missing: set mode = \"server\" or mode = \"client\"",
                    file.display()
                );
                return Ok(ExitCode::from(EX_USAGE));
            };
            match config.resolve(mode) {
                Ok(sidecar) => println!("{}: ok ({})", file.display(), describe(&sidecar)),
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return Ok(ExitCode::from(EX_USAGE));
                }
            }
        }
        Command::Certs {
            command: CertsCommand::Init { dir, key_alg },
        } => {
            mcp_pqtls::certs::write_dev_pki(&dir, key_alg)?;
            println!(
                "wrote ca.pem, server.pem, server.key, client.pem, client.key ({key_alg}) to {}",
                dir.display()
            );
        }
        Command::Reflect { listen, server } => {
            let acceptor = match ServerOptions::from(server).build() {
                Ok(a) => Arc::new(a),
                Err(e) => return Ok(usage(&e)),
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(
                listen = %listener.local_addr()?,
                policy = %acceptor.policy().mode,
                groups = %mcp_pqtls::groups::display_list(&acceptor.groups()),
                "Reflect server listening"
            );
            mcp_pqtls::reflect(listener, acceptor, shutdown_signal()).await?;
        }
        Command::Connect { url, client } => {
            if client.insecure {
                tracing::warn!("--insecure: the server's certificate is NOT verified; anyone on the path can impersonate it");
            }
            let connector = match ClientOptions::from(client).build() {
                Ok(c) => c,
                Err(e) => return Ok(usage(&e)),
            };
            let fetched = mcp_pqtls::get(&connector, url.clone())
                .await
                .with_context(|| format!("GET {url}"))?;
            println!("{}", serde_json::to_string_pretty(&*fetched.info)?);
            print!("{}", String::from_utf8_lossy(&fetched.body));
            if !fetched.status.is_success() {
                eprintln!("error: GET {url}: HTTP {}", fetched.status);
                return Ok(ExitCode::from(1));
            }
        }
        Command::Probe(args) => return probe(args).await,
        Command::Bench { command } => return bench(command).await,
        Command::Demo { key_alg } => {
            let mut out = std::io::stdout();
            mcp_pqtls::demo::run(key_alg, &mut out)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench(command: BenchCommand) -> anyhow::Result<ExitCode> {
    use mcp_pqtls::loadgen::{self, Broadcast, Target, UpstreamOptions};
    let target = |url: http::Uri, client: ClientArgs| -> anyhow::Result<Result<Target, ExitCode>> {
        let connector = if url.scheme_str() == Some("https") {
            // The load speaks HTTP/1.1 (one request at a time per connection, like an MCP
            // client's keep-alive POSTs): offer nothing else.
            let built = ClientOptions::from(client).tls_config().and_then(|mut c| {
                c.alpn = vec![b"http/1.1".to_vec()];
                mcp_pqtls::tls::PqConnector::new(c).map_err(mcp_pqtls::config::ConfigError::Client)
            });
            match built {
                Ok(c) => Some(c),
                Err(e) => return Ok(Err(usage(&e))),
            }
        } else {
            None
        };
        Ok(Target::new(url, connector).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(EX_USAGE)
        }))
    };
    let report = match command {
        BenchCommand::Upstream {
            listen,
            response_bytes,
        } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let options = UpstreamOptions {
                response_bytes,
                ..UpstreamOptions::default()
            };
            loadgen::serve_upstream(listener, options, Broadcast::default(), shutdown_signal())
                .await?;
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Requests {
            load,
            request_bytes,
        } => {
            let l = load_of(&load);
            let t = match target(load.url, load.client)? {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            loadgen::requests(&t, &l, loadgen::tools_call(request_bytes)).await
        }
        BenchCommand::Handshakes { load } => {
            let l = load_of(&load);
            let t = match target(load.url, load.client)? {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            loadgen::handshakes(&t, &l).await
        }
        BenchCommand::Sse {
            url,
            upstream_listen,
            streams,
            events,
            interval,
            client,
        } => {
            let t = match target(url, client)? {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            let listener = tokio::net::TcpListener::bind(upstream_listen)
                .await
                .with_context(|| format!("cannot listen on {upstream_listen}"))?;
            let broadcast = Broadcast::default();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let upstream = tokio::spawn(loadgen::serve_upstream(
                listener,
                UpstreamOptions::default(),
                broadcast.clone(),
                stopped,
            ));
            let report = loadgen::sse(&t, &broadcast, streams, events, interval.0).await;
            drop(stop);
            upstream.abort();
            report
        }
        BenchCommand::Idle {
            url,
            connections,
            parallel,
            hold,
            client,
        } => {
            let t = match target(url, client)? {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            // The "open" line is what a script waits for before reading the server's memory.
            loadgen::idle(&t, connections, parallel, hold.0, |opened| {
                if let Ok(line) = serde_json::to_string(opened) {
                    println!("{line}");
                }
            })
            .await;
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.completed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn load_of(args: &LoadArgs) -> mcp_pqtls::loadgen::Load {
    mcp_pqtls::loadgen::Load {
        connections: args.connections.max(1),
        duration: args.duration.0,
        warmup: args.warmup.0,
    }
}

async fn run_sidecar(
    mode: Mode,
    common: SidecarArgs,
    specific: SidecarConfig,
) -> anyhow::Result<ExitCode> {
    let flags = SidecarConfig {
        listen: common.listen,
        upstream: common.upstream,
        admin: common.admin,
        groups: common.groups,
        policy: common.policy,
        allowed_origins: common.allowed_origins,
        origin: common.origin,
        preserve_host: common.preserve_host,
        forwarded: common.forwarded,
        max_connections: common.max_connections,
        max_connections_per_ip: common.max_connections_per_ip,
        ipv6_prefix: common.ipv6_prefix,
        max_concurrent_streams: common.max_concurrent_streams,
        first_request_timeout: common.first_request_timeout,
        idle_timeout: common.idle_timeout,
        keepalive_interval: common.keepalive_interval,
        keepalive_timeout: common.keepalive_timeout,
        request_body_timeout: common.request_body_timeout,
        max_upstream_requests: common.max_upstream_requests,
        max_upstream_requests_per_ip: common.max_upstream_requests_per_ip,
        max_header_bytes: common.max_header_bytes,
        max_body_bytes: common.max_body_bytes,
        upstream_timeout: common.upstream_timeout,
        drain_timeout: common.drain_timeout,
        log_format: common.log_format,
        ..specific
    };
    let source = match &common.config {
        Some(path) => match ConfigSource::load(path.clone(), flags.clone()) {
            Ok(s) => Some(s),
            Err(e) => return Ok(usage(&e)),
        },
        None => None,
    };
    let config = source.as_ref().map_or(flags, |s| s.running.clone());
    init_logging(config.log_format.unwrap_or_default());
    let sidecar = match config.resolve(mode) {
        Ok(s) => s.reloading(source),
        Err(e) => {
            let from = common
                .config
                .map(|p| format!(" (flags and {})", p.display()))
                .unwrap_or_default();
            eprintln!("error{from}: {e}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    sidecar
        .run(shutdown_signal(), |started| println!("{}", started.summary))
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// Exit code of a probe that could not run (bad arguments, unreadable files).
const PROBE_CANNOT_RUN: u8 = 2;

async fn probe(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    match probe_options(&args) {
        Ok((targets, options)) => {
            let format =
                args.format
                    .unwrap_or(if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                        ProbeFormat::Table
                    } else {
                        ProbeFormat::Json
                    });
            let mut reports = probe_all(&targets, &options, args.parallel).await;
            let mut code = 0;
            for (i, report) in reports.iter_mut().enumerate() {
                report.require(&args.require);
                code = code.max(report.exit_code());
                match format {
                    ProbeFormat::Table if i > 0 => print!("\n{}", report.table()),
                    ProbeFormat::Table => print!("{}", report.table()),
                    // One target: one pretty document. Several: JSON Lines, in target order.
                    ProbeFormat::Json if targets.len() == 1 => {
                        println!("{}", serde_json::to_string_pretty(report)?)
                    }
                    ProbeFormat::Json => println!("{}", serde_json::to_string(report)?),
                }
            }
            Ok(ExitCode::from(code))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(PROBE_CANNOT_RUN))
        }
    }
}

fn probe_options(args: &ProbeArgs) -> anyhow::Result<(Vec<Target>, ProbeOptions)> {
    let mut targets = args.targets.clone();
    if let Some(file) = &args.targets_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--targets-file {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if !line.is_empty() {
                targets.push(
                    line.parse()
                        .with_context(|| format!("{}:{}", file.display(), n + 1))?,
                );
            }
        }
    }
    anyhow::ensure!(!targets.is_empty(), "no targets to probe");
    anyhow::ensure!(
        !args.timeout.0.is_zero(),
        "--timeout 0s leaves no time for a handshake; give e.g. --timeout 5s"
    );
    let (trust, ca_name) = match (&args.ca, args.insecure) {
        (Some(ca), _) => (
            Trust::Roots(Arc::new(mcp_pqtls::certs::load_roots(ca)?)),
            Some(ca.display().to_string()),
        ),
        (None, true) => (Trust::InsecureSkipVerify, None),
        (None, false) => (Trust::System, None),
    };
    let client_identity = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => Some(mcp_pqtls::certs::Identity::load(
            cert,
            key,
            &mcp_pqtls::crypto::Algorithms::default().signature_schemes,
        )?),
        _ => None,
    };
    let alpn = args
        .alpn
        .iter()
        .filter(|p| !p.is_empty() && p.as_str() != "none")
        .map(|p| p.as_bytes().to_vec())
        .collect();
    // A group that must be accepted is probed even when `--groups` leaves it out.
    let mut groups = args
        .groups
        .clone()
        .map_or_else(|| mcp_pqtls::Group::ALL.to_vec(), |g| g.0);
    for r in &args.require {
        if let Requirement::Group(g) = r {
            if !groups.contains(g) {
                groups.push(*g);
            }
        }
    }
    let options = ProbeOptions {
        sni: args.sni.clone(),
        trust,
        ca_name,
        client_identity,
        groups,
        alpn,
        timeout: args.timeout.0,
    };
    Ok((targets, options))
}

/// One line on what a validated config would run.
fn describe(sidecar: &Sidecar) -> String {
    match sidecar {
        Sidecar::Server(s) => format!(
            "server mode: listen {}, upstream {}, policy {}, groups {}{}",
            s.listen,
            s.upstream,
            s.acceptor.policy().mode,
            mcp_pqtls::groups::display_list(&s.acceptor.groups()),
            s.gate
                .as_ref()
                .map(|g| format!("; {}", g.summary()))
                .unwrap_or_default()
        ),
        Sidecar::Client(c) => format!(
            "client mode: listen {}, upstream {}, policy {}, groups {}",
            c.listen,
            c.upstream,
            c.connector.policy(),
            mcp_pqtls::groups::display_list(c.connector.offered_groups())
        ),
    }
}

fn usage(e: &mcp_pqtls::config::ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EX_USAGE)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

impl From<ServerArgs> for ServerOptions {
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
        }
    }
}

impl From<ClientArgs> for ClientOptions {
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
