//! `bench`: the load generator and its MCP-shaped upstream; prints one JSON report.

use std::process::ExitCode;

use anyhow::Context;

use mcp_pqtls::config::{ClientTlsOptions, ConfigError};
use mcp_pqtls::loadgen::{self, Broadcast, Load, Target, UpstreamOptions};
use mcp_pqtls::signal;
use mcp_pqtls::tls::PqConnector;

use super::args::{BenchCommand, ClientArgs, LoadArgs};
use super::CliError;

/// Runs `mcp-pqtls bench ...`. Exit 1 when a load run completed nothing.
pub(crate) async fn run(command: BenchCommand) -> Result<ExitCode, CliError> {
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
            loadgen::serve_upstream(listener, options, Broadcast::default(), signal::shutdown())
                .await?;
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Requests {
            load,
            request_bytes,
            list,
        } => {
            let l = load_of(&load);
            let t = target(load.url, load.client)?;
            let body = match list {
                true => loadgen::tools_list(),
                false => loadgen::tools_call(request_bytes),
            };
            loadgen::requests(&t, &l, body).await
        }
        BenchCommand::Handshakes { load } => {
            let l = load_of(&load);
            let t = target(load.url, load.client)?;
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
            let t = target(url, client)?;
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
            let t = target(url, client)?;
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

/// Where the load goes: plain HTTP, or PQ TLS with the client flags.
fn target(url: http::Uri, client: ClientArgs) -> Result<Target, CliError> {
    let connector = if url.scheme_str() == Some("https") {
        // The load speaks HTTP/1.1 (one request at a time per connection, like an MCP
        // client's keep-alive POSTs): offer nothing else.
        let mut config = ClientTlsOptions::from(client)
            .tls_config()
            .map_err(CliError::usage)?;
        config.alpn = vec![b"http/1.1".to_vec()];
        Some(PqConnector::new(config).map_err(|e| CliError::usage(ConfigError::Client(e)))?)
    } else {
        None
    };
    Target::new(url, connector).map_err(CliError::usage)
}

fn load_of(args: &LoadArgs) -> Load {
    Load {
        connections: args.connections.max(1),
        duration: args.duration.0,
        warmup: args.warmup.0,
    }
}
