//! The `mcp-pqtls` command: parses flags, calls the library, maps the outcome to an exit
//! code. No logic lives here; the clap structs and their conversions are in `cli/`.

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use cli::args::{CertsCommand, Cli, Command};
use cli::CliError;
use mcp_pqtls::config::{warn_insecure, ClientTlsOptions, LogFormat, Mode, ServerTlsOptions};
use mcp_pqtls::signal;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The sidecars read their log format from flags or their file; they set up logging
    // themselves once that is known.
    match cli.command {
        Command::Server { .. } | Command::Client { .. } => {}
        // The demo prints its own lines; its sidecars' logs only when asked for.
        Command::Demo { verbose: false, .. } => cli::init_logging(LogFormat::Text, "warn"),
        _ => cli::init_logging(LogFormat::Text, "info"),
    }
    // On a worker, not the main thread: an accept loop in `block_on` would wake the main
    // thread for every connection and hand each one across threads (measured: ~11% of a
    // pinned reflect server's CPU went to those context switches).
    let outcome = match tokio::spawn(run(cli.command)).await {
        Ok(outcome) => outcome,
        Err(panicked) => std::panic::resume_unwind(panicked.into_panic()),
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        e.exit_code()
    })
}

async fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Server { common, tls } => {
            cli::sidecar::run(Mode::Server, common, tls.into()).await
        }
        Command::Client { common, tls } => {
            cli::sidecar::run(Mode::Client, common, tls.into()).await
        }
        Command::CheckConfig { file } => cli::sidecar::check_config(&file),
        Command::Certs {
            command: CertsCommand::Init { dir, key_alg },
        } => {
            mcp_pqtls::certs::write_dev_pki(&dir, key_alg).map_err(anyhow::Error::from)?;
            println!(
                "wrote ca.pem, server.pem, server.key, client.pem, client.key ({key_alg}) to {}",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Reflect { listen, server } => {
            let acceptor = ServerTlsOptions::from(server)
                .build()
                .map_err(CliError::usage)?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(
                listen = %listener.local_addr()?,
                policy = %acceptor.policy().mode,
                groups = %mcp_pqtls::groups::display_list(&acceptor.groups()),
                "Reflect server listening"
            );
            mcp_pqtls::reflect(listener, acceptor, signal::shutdown()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Connect { url, client } => {
            if client.insecure {
                warn_insecure(&url);
            }
            let connector = ClientTlsOptions::from(client)
                .build()
                .map_err(CliError::usage)?;
            let fetched = mcp_pqtls::get(&connector, url.clone())
                .await
                .with_context(|| format!("GET {url}"))?;
            println!("{}", serde_json::to_string_pretty(&*fetched.info)?);
            print!("{}", String::from_utf8_lossy(&fetched.body));
            if !fetched.status.is_success() {
                return Err(anyhow::anyhow!("GET {url}: HTTP {}", fetched.status).into());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe(args) => cli::probe::run(args).await,
        Command::Bench { command } => cli::bench::run(command).await,
        Command::Tools { command } => cli::tools::run(command).await,
        Command::Approvals { command } => cli::approvals::run(command).await,
        Command::TicketKeys { command } => cli::ticket_keys::run(command),
        Command::Demo { key_alg, .. } => {
            let mut out = std::io::stdout();
            mcp_pqtls::demo::run(key_alg, &mut out)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
