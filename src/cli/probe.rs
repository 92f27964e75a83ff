//! `probe`: resolves the flags into targets and [`ProbeOptions`], runs the probes, prints
//! the reports, and exits with the worst report's code.

use std::process::ExitCode;

use anyhow::Context;

use mcp_pqtls::config::ClientTlsOptions;
use mcp_pqtls::probe::{probe_all, ProbeOptions, Requirement, Target};

use super::args::{ProbeArgs, ProbeFormat};
use super::CliError;

/// Runs `mcp-pqtls probe`. Exit 0: requirements met; 1: not met; 2: could not run.
pub(crate) async fn run(args: ProbeArgs) -> Result<ExitCode, CliError> {
    let (targets, options) = resolve(&args).map_err(CliError::CannotRun)?;
    let format = args
        .format
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

/// The targets (arguments, then the file's) and the options every probe uses.
fn resolve(args: &ProbeArgs) -> anyhow::Result<(Vec<Target>, ProbeOptions)> {
    let mut targets = args.targets.clone();
    if let Some(file) = &args.targets_file {
        targets.extend(Target::parse_file(file).context("--targets-file")?);
    }
    anyhow::ensure!(!targets.is_empty(), "no targets to probe");
    anyhow::ensure!(
        !args.timeout.0.is_zero(),
        "--timeout 0s leaves no time for a handshake; give e.g. --timeout 5s"
    );
    // Trust and identity as every client resolves them; groups and ALPN are the probe's.
    let tls = ClientTlsOptions {
        ca: args.ca.clone(),
        insecure: args.insecure,
        client_cert: args.client_cert.clone(),
        client_key: args.client_key.clone(),
        ..ClientTlsOptions::default()
    }
    .tls_config()?;
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
    let mut options = ProbeOptions::default();
    options.sni = args.sni.clone();
    options.trust = tls.trust;
    options.ca_name = args.ca.as_ref().map(|ca| ca.display().to_string());
    options.client_identity = tls.identity;
    options.groups = groups;
    options.alpn = alpn;
    options.timeout = args.timeout.0;
    Ok((targets, options))
}
