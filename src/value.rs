//! Values written the same way as a flag and as a TOML key (a duration, an instant), and the
//! `FromStr`-backed `Deserialize` that lets a file value get the flag's checks and messages.
//! A leaf: it imports nothing of the crate but the types it gives `Deserialize` to.
//!
//! `keywords!` gives a settings enum its words. It is written here rather than derived with
//! `strum`: strum's `FromStr` error says only "matching variant not found", and a bad flag or
//! file value must say which words would be accepted (``unknown variant `jsno`, expected `text`
//! or `json` ``, in serde's wording, as the settings whose words serde derives).

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::policy::{FallbackRule, PolicyMode};

/// A duration written like `10s` or `1m30s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl std::str::FromStr for Dur {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_duration(s).map(Dur)
    }
}

/// An RFC 3339 instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sunset(pub SystemTime);

impl std::str::FromStr for Sunset {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_sunset(s).map(Sunset)
    }
}

/// A value that does not parse; says what was written and what would be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a duration.
    #[error("`{text}` is not a duration such as 10s, 1m30s or 500ms ({source})")]
    Duration {
        /// What was written.
        text: String,
        /// Why humantime refused it.
        source: humantime::DurationError,
    },
    /// Not an RFC 3339 instant.
    #[error("`{text}` is not an RFC 3339 instant such as 2027-01-01T00:00:00Z ({source})")]
    Instant {
        /// What was written.
        text: String,
        /// Why humantime refused it.
        source: humantime::TimestampError,
    },
    /// Not one of a setting's words.
    // serde's wording, as for the settings whose words serde derives.
    #[error("unknown variant `{text}`, expected {}", quoted(expected))]
    Choice {
        /// What was written.
        text: String,
        /// The words accepted.
        expected: &'static [&'static str],
    },
}

/// serde's way of listing the expected words: `` `a` ``, `` `a` or `b` ``, `` one of `a`, `b`, `c` ``.
fn quoted(words: &[&str]) -> String {
    let each: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match each.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        _ => format!("one of {}", each.join(", ")),
    }
}

/// Parses a `sunset` (RFC 3339, e.g. `2027-01-01T00:00:00Z`).
pub fn parse_sunset(s: &str) -> Result<SystemTime, ValueError> {
    humantime::parse_rfc3339_weak(s).map_err(|source| ValueError::Instant {
        text: s.to_owned(),
        source,
    })
}

/// Parses a duration such as `10s`, `1m30s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(s).map_err(|source| ValueError::Duration {
        text: s.to_owned(),
        source,
    })
}

/// Deserializes a type from its string form through `FromStr`, so a file value gets the
/// same checks and messages as the flag.
macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(Dur, Sunset, PolicyMode, FallbackRule);

// The settings words it serves are the sidecar's (config, proxy).
#[cfg(feature = "sidecar")]
/// Gives a fieldless enum its words: `FromStr` (exact words, with a [`ValueError::Choice`]
/// listing them), `Display`, and the `FromStr`-backed `Deserialize`, so the flag, the file
/// and the messages share one list.
macro_rules! keywords {
    ($t:ty { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $t {
            /// Every word, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($word),+];

            /// The word for this value, as a flag and a file take it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $word),+
                }
            }
        }

        impl ::std::str::FromStr for $t {
            type Err = $crate::value::ValueError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok(Self::$variant),)+
                    _ => Err($crate::value::ValueError::Choice {
                        text: s.to_owned(),
                        expected: Self::NAMES,
                    }),
                }
            }
        }

        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}
#[cfg(feature = "sidecar")]
pub(crate) use keywords;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_word_lists_the_choices_as_serde_does() {
        let err = |expected| {
            ValueError::Choice {
                text: "x".into(),
                expected,
            }
            .to_string()
        };
        assert_eq!(err(&["a"]), "unknown variant `x`, expected `a`");
        assert_eq!(err(&["a", "b"]), "unknown variant `x`, expected `a` or `b`");
        assert_eq!(
            err(&["a", "b", "c"]),
            "unknown variant `x`, expected one of `a`, `b`, `c`"
        );
        // And serde's own, for a derived enum, reads the same.
        #[derive(Debug, serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        #[allow(dead_code)]
        enum Two {
            A,
            B,
        }
        let serde = serde_json::from_str::<Two>("\"x\"")
            .unwrap_err()
            .to_string();
        assert!(
            serde.contains("unknown variant `x`, expected `a` or `b`"),
            "{serde}"
        );
    }
}
