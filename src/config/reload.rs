//! Where a sidecar's settings come from (a file with the command line's flags over it), and
//! what re-reading that file finds: the part of reload that is about configuration. Applying
//! it to a running sidecar is [`crate::sidecar`]'s.

use std::path::{Path, PathBuf};

use super::{ConfigError, LogFormat, SidecarConfig};
use crate::groups::Group;
use crate::policy::Policy;

/// The fields a running server sidecar takes from its config file without a restart.
pub const RELOADABLE: [&str; 4] = ["groups", "policy", "sunset", "fallback-rules"];

/// A config file with the command line's flags over it: what a sidecar starts from, and
/// where a running server sidecar re-reads its groups and policy (flags still win).
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// The TOML file.
    pub file: PathBuf,
    /// The flags given at start.
    pub flags: SidecarConfig,
    /// The file and flags as they were at start: what the running sidecar uses.
    pub running: SidecarConfig,
}

/// What re-reading a [`ConfigSource`] found, validated (see
/// `ConfigSource::reload_policy` in [`crate::sidecar`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PolicyReload {
    /// The groups, in order of preference.
    pub groups: Vec<Group>,
    /// The policy.
    pub policy: Policy,
    /// Fields, other than the [`RELOADABLE`] ones, that changed since start: only a
    /// restart applies them.
    pub restart_needed: Vec<String>,
    /// [`RELOADABLE`] fields the file sets but a command-line flag overrides.
    pub overridden_by_flags: Vec<String>,
}

/// The file re-read with the flags over it, not yet validated.
#[derive(Clone, Debug)]
pub struct Reread {
    /// The file and the flags, as they now are.
    pub config: SidecarConfig,
    /// See [`PolicyReload::restart_needed`].
    pub restart_needed: Vec<String>,
    /// See [`PolicyReload::overridden_by_flags`].
    pub overridden_by_flags: Vec<String>,
}

impl ConfigSource {
    /// Reads `file` and puts `flags` over it.
    pub fn load(file: PathBuf, flags: SidecarConfig) -> Result<Self, ConfigError> {
        let running = SidecarConfig::from_file(&file)?.overlay(flags.clone());
        Ok(Self {
            file,
            flags,
            running,
        })
    }

    /// Re-reads the file, puts the flags over it again, and says which fields changed that
    /// only a restart applies and which the flags override.
    pub fn reread(&self) -> Result<Reread, ConfigError> {
        let file = SidecarConfig::from_file(&self.file)?;
        let now = file.clone().overlay(self.flags.clone());
        let mut restart_needed = self.running.differing(&now);
        restart_needed.retain(|f| !RELOADABLE.contains(&f.as_str()));
        let set_in_file = file.differing(&SidecarConfig::default());
        let mut overridden_by_flags = file.differing(&now);
        overridden_by_flags.retain(|f| RELOADABLE.contains(&f.as_str()) && set_in_file.contains(f));
        Ok(Reread {
            config: now,
            restart_needed,
            overridden_by_flags,
        })
    }
}

/// Flags, with a config file under them when one is given: what a sidecar is resolved from.
#[derive(Clone, Debug)]
pub struct Layered {
    /// The flags over the file (or the flags alone).
    pub config: SidecarConfig,
    /// The file and flags, kept for reload; `None` without a file.
    pub source: Option<ConfigSource>,
}

impl Layered {
    /// Reads `file`, when given, and puts `flags` over it.
    pub fn load(flags: SidecarConfig, file: Option<&Path>) -> Result<Self, ConfigError> {
        match file {
            Some(file) => {
                let source = ConfigSource::load(file.to_owned(), flags)?;
                Ok(Self {
                    config: source.running.clone(),
                    source: Some(source),
                })
            }
            None => Ok(Self {
                config: flags,
                source: None,
            }),
        }
    }

    /// The log format asked for: known before resolving, so that logging is set up before
    /// anything resolving loads can warn.
    pub fn log_format(&self) -> LogFormat {
        self.config.log_format.unwrap_or_default()
    }
}
