//! The binary's own code: what the user typed ([`args`]), the commands that need more than a
//! call into the library ([`bench`], [`probe`], [`sidecar`]), and the one error they end
//! with ([`CliError`]). Private to the binary: the library knows nothing of it.

pub(crate) mod approvals;
pub(crate) mod args;
pub(crate) mod bench;
mod error;
pub(crate) mod probe;
pub(crate) mod sidecar;
pub(crate) mod ticket_keys;
pub(crate) mod tools;

pub(crate) use error::CliError;
use mcp_pqtls::config::LogFormat;

/// Logs to stderr, `default` (e.g. `info`) and up unless `RUST_LOG` says otherwise.
pub(crate) fn init_logging(format: LogFormat, default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
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
