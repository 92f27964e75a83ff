//! `server`, `client` and `check-config`: flags and a file layered, resolved by the library,
//! then run or described.

use std::path::Path;
use std::process::ExitCode;

use mcp_pqtls::config::{Layered, Mode, SidecarConfig};
use mcp_pqtls::signal;

use super::args::SidecarArgs;
use super::CliError;

/// Runs a sidecar from its flags (`common` and the mode's own, `specific`) over `--config`.
pub(crate) async fn run(
    mode: Mode,
    mut common: SidecarArgs,
    specific: SidecarConfig,
) -> Result<ExitCode, CliError> {
    let file = common.config.take();
    let layered =
        Layered::load(common.into_config(specific), file.as_deref()).map_err(CliError::usage)?;
    // Before resolving: loading the key may warn (a key file others can read).
    super::init_logging(layered.log_format(), "info");
    let sidecar = layered.resolve(mode).map_err(|e| match &file {
        Some(path) => CliError::usage_in(format!("flags and {}", path.display()), e),
        None => CliError::usage(e),
    })?;
    sidecar
        .run(signal::shutdown(), |started| {
            println!("{}", started.summary)
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// Validates a config file as the mode it names would, without starting anything.
pub(crate) fn check_config(file: &Path) -> Result<ExitCode, CliError> {
    let config = SidecarConfig::from_file(file).map_err(CliError::usage)?;
    let in_file = |e| CliError::usage_in(file.display().to_string(), e);
    let Some(mode) = config.mode else {
        return Err(CliError::Usage(anyhow::anyhow!(
            "{}: mode is missing: set mode = \"server\" or mode = \"client\"",
            file.display()
        )));
    };
    let sidecar = config.resolve(mode).map_err(in_file)?;
    println!("{}: ok ({sidecar})", file.display());
    Ok(ExitCode::SUCCESS)
}
