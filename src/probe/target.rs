//! What to probe: one target as written on the command line, or a file of them.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// An endpoint to probe: `HOST:PORT`, `[IPv6]:PORT`, `HOST` (port 443) or an `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TargetError(s.to_owned());
        let rest = s.trim();
        let rest = rest.strip_prefix("https://").unwrap_or(rest);
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(bad()),
            }
        } else if authority.matches(':').count() > 1 {
            // A bare IPv6 address.
            (authority, None)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?,
            None => 443,
        };
        if host.is_empty() || (host.contains(':') && host.parse::<IpAddr>().is_err()) {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A target that is not `HOST:PORT`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a target: write HOST:PORT, [IPv6]:PORT, HOST (port 443) or https://HOST[:PORT]"
)]
pub struct TargetError(String);

/// A targets file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetsFileError {
    /// The file cannot be read.
    #[error("{}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a target.
    #[error("{}:{line}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// Why.
        source: TargetError,
    },
}

impl Target {
    /// Reads a file of targets, one per line; blank lines and `#` comments are ignored.
    pub fn parse_file(path: &Path) -> Result<Vec<Target>, TargetsFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TargetsFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut targets = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if !line.is_empty() {
                targets.push(line.parse().map_err(|source| TargetsFileError::Line {
                    path: path.to_owned(),
                    line: n + 1,
                    source,
                })?);
            }
        }
        Ok(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = |host: &str, port| Target {
            host: host.to_owned(),
            port,
        };
        assert_eq!("localhost:8443".parse(), Ok(t("localhost", 8443)));
        assert_eq!("example.com".parse(), Ok(t("example.com", 443)));
        assert_eq!(
            "https://example.com:9443/mcp".parse(),
            Ok(t("example.com", 9443))
        );
        assert_eq!("[::1]:8443".parse(), Ok(t("::1", 8443)));
        assert_eq!("::1".parse(), Ok(t("::1", 443)));
        assert_eq!(
            "[::1]:8443".parse::<Target>().unwrap().to_string(),
            "[::1]:8443"
        );
        for bad in ["", ":443", "host:", "host:0", "host:99999", "[::1", "a:b:c"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
