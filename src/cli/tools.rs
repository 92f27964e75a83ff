//! `tools pin` and `tools diff`: a live server's `tools/list` as a pin file, or against one.

use std::process::ExitCode;

use anyhow::Context;

use mcp_pqtls::config::{warn_insecure, ClientTlsOptions};
use mcp_pqtls::gate::tools::{list_tools_within, Change, Listed, PinFile};

use super::args::{ClientArgs, ToolsCommand};
use super::CliError;

/// Runs `mcp-pqtls tools ...`.
pub(crate) async fn run(command: ToolsCommand) -> Result<ExitCode, CliError> {
    match command {
        ToolsCommand::Pin {
            url,
            timeout,
            client,
        } => {
            let listed = list(&url, timeout.0, client).await?;
            let pins = PinFile::pin(&listed.tools).map_err(anyhow::Error::from)?;
            print!("{}", pins.to_json());
            eprintln!(
                "pinned {} tools of {url} (MCP {})",
                pins.tools.len(),
                listed.protocol
            );
            Ok(ExitCode::SUCCESS)
        }
        ToolsCommand::Diff {
            pin_file,
            url,
            timeout,
            client,
        } => {
            let text = std::fs::read_to_string(&pin_file)
                .with_context(|| format!("cannot read {}", pin_file.display()))
                .map_err(CliError::Usage)?;
            let pins = PinFile::parse(&text)
                .map_err(|e| CliError::usage_in(pin_file.display().to_string(), e))?;
            let listed = list(&url, timeout.0, client).await?;
            let changes = pins.diff(&listed.tools).map_err(anyhow::Error::from)?;
            for change in &changes {
                print!("{}", describe(change));
            }
            if changes.is_empty() {
                println!(
                    "no change: {} tools as pinned (MCP {})",
                    pins.tools.len(),
                    listed.protocol
                );
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(1))
            }
        }
    }
}

async fn list(
    url: &http::Uri,
    timeout: std::time::Duration,
    client: ClientArgs,
) -> Result<Listed, CliError> {
    if client.insecure {
        warn_insecure(url);
    }
    let connector = ClientTlsOptions::from(client)
        .build()
        .map_err(CliError::usage)?;
    Ok(list_tools_within(&connector, url, timeout)
        .await
        .with_context(|| format!("tools/list from {url}"))?)
}

/// One change as lines: the tool, then each changed field as pinned and as listed.
fn describe(change: &Change) -> String {
    let mut out = format!("{} {}\n", change.kind(), change.name());
    if let Change::Changed { fields, .. } = change {
        let shown = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .map_or_else(|| "(absent)".to_owned(), ToString::to_string)
        };
        for f in fields {
            out.push_str(&format!(
                "  {}: {} -> {}\n",
                f.field,
                shown(&f.pinned),
                shown(&f.listed)
            ));
        }
    }
    out
}
