//! The one error a command ends with, and the exit code it maps to.

use std::fmt;
use std::process::ExitCode;

/// Why a command stopped. `main` prints it once (`error: {:#}`) and exits with
/// [`CliError::exit_code`].
#[derive(Debug)]
pub(crate) enum CliError {
    /// The configuration cannot be used (exit 64, sysexits `EX_USAGE`). The error names the
    /// field and the fix.
    Usage(anyhow::Error),
    /// The probe could not run (exit 2): bad arguments, unreadable files. Exit 1 is kept for
    /// requirements that are not met.
    CannotRun(anyhow::Error),
    /// The command ran and failed (exit 1).
    Failed(anyhow::Error),
}

/// Exit code for unusable configuration (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;
/// Exit code of a probe that could not run.
const PROBE_CANNOT_RUN: u8 = 2;

impl CliError {
    /// A configuration error that names its own source (a field, a file).
    pub(crate) fn usage(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Usage(error.into())
    }

    /// A configuration error from `context` (e.g. the file it is in).
    pub(crate) fn usage_in(
        context: impl fmt::Display + Send + Sync + 'static,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Usage(anyhow::Error::new(error).context(context))
    }

    /// The process exit code.
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Usage(_) => EX_USAGE,
            Self::CannotRun(_) => PROBE_CANNOT_RUN,
            Self::Failed(_) => 1,
        })
    }
}

impl fmt::Display for CliError {
    /// The error and its causes, `: `-separated. A cause whose text the message already
    /// holds is left out: our errors name their cause in their own text (and keep it as
    /// the source), and the chain would say it twice.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Self::Usage(e) | Self::CannotRun(e) | Self::Failed(e)) = self;
        let mut said = String::new();
        for cause in e.chain() {
            let text = cause.to_string();
            if said.contains(&text) {
                continue;
            }
            if !said.is_empty() {
                said.push_str(": ");
            }
            said.push_str(&text);
        }
        f.write_str(&said)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

impl From<mcp_pqtls::sidecar::SidecarError> for CliError {
    fn from(e: mcp_pqtls::sidecar::SidecarError) -> Self {
        Self::Failed(e.into())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self::Failed(e.into())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        Self::Failed(e.into())
    }
}
