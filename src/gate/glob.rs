//! Patterns where `*` is the only wildcard: what rules, approvers and fallback rules match
//! tool names, methods and identities with. A leaf, so that rules and approvals both use it.

use std::fmt;

/// Why a pattern is not a [`Glob`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GlobError {
    /// The pattern is empty.
    #[error("empty pattern; use \"*\" to match anything")]
    Empty,
    /// The pattern uses a wildcard other than `*`.
    #[error("`{pattern}`: `{wildcard}` is not supported; the only wildcard is `*`")]
    Unsupported {
        /// The pattern.
        pattern: String,
        /// The character refused.
        wildcard: char,
    },
}

/// A pattern where `*` stands for any run of characters (`/` included) and everything else
/// matches itself, case-sensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// Parses a pattern. Empty patterns and the wildcards we do not support (`?`, `[...]`,
    /// `{...}`) are refused, so a pattern never means something other than it seems to.
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| matches!(c, '?' | '[' | ']' | '{' | '}'))
        {
            return Err(GlobError::Unsupported {
                pattern: pattern.to_owned(),
                wildcard: c,
            });
        }
        Ok(Self(pattern.to_owned()))
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let mut parts = self.0.split('*');
        // `split` always yields a first part.
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = text.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty(); // no `*`: an exact match
        };
        for part in middle {
            match rest.find(part) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
