//! `ticket-keys rotate FILE`: a new session-ticket key first in a fleet's shared key file.

use std::process::ExitCode;

use anyhow::Context;

use super::args::TicketKeysCommand;
use super::CliError;

/// Runs `mcp-pqtls ticket-keys ...`. Prints key names only, never key material.
pub(crate) fn run(command: TicketKeysCommand) -> Result<ExitCode, CliError> {
    match command {
        TicketKeysCommand::Rotate { file, keep } => {
            if keep == 0 {
                return Err(CliError::Usage(anyhow::anyhow!(
                    "--keep 0: keep at least the new key"
                )));
            }
            let r = mcp_pqtls::tls::tickets::rotate(&file, keep)
                .with_context(|| format!("ticket-keys rotate {}", file.display()))
                .map_err(CliError::Failed)?;
            println!(
                "{}: new key {} encrypts from the next reload; {} keys kept{}",
                file.display(),
                r.new_name,
                r.names.len(),
                if r.retired.is_empty() {
                    String::new()
                } else {
                    format!(", retired {}", r.retired.join(", "))
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
