//! The `mcp-pqtls` command: parses flags and calls the library. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::config::{ClientOptions, ServerOptions};

/// Post-quantum TLS 1.3 for remote MCP: hybrid X25519+ML-KEM key exchange with policy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Make dev certificates, start a PQ server on 127.0.0.1 and connect clients to it.
    Demo {
        /// Key algorithm of the dev certificates.
        #[arg(long, default_value = "ecdsa-p256")]
        key_alg: KeyAlg,
    },
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
    groups: Option<String>,
    /// pq-required, pq-preferred (default) or classical-allowed.
    #[arg(long)]
    policy: Option<String>,
    /// After this RFC 3339 instant, classical fallback is refused (pq-preferred).
    #[arg(long)]
    sunset: Option<String>,
    /// Fallback rule `ACTION KIND:VALUE` (repeatable; first match wins), e.g.
    /// `allow-classical cidr:10.0.0.0/8`, `require-pq sni:*.prod.example.com`.
    #[arg(long = "fallback-rule")]
    fallback_rules: Vec<String>,
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
    groups: Option<String>,
    /// pq-required (default), pq-preferred or classical-allowed.
    #[arg(long)]
    policy: Option<String>,
    /// Server name to send and verify instead of the URL's host.
    #[arg(long)]
    sni: Option<String>,
}

/// Exit code for unusable configuration (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
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
                groups = %mcp_pqtls::groups::display_list(acceptor.groups()),
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
        Command::Demo { key_alg } => {
            let mut out = std::io::stdout();
            mcp_pqtls::demo::run(key_alg, &mut out)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
        }
    }
    Ok(ExitCode::SUCCESS)
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
            sunset: a.sunset,
            fallback_rules: a.fallback_rules,
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
