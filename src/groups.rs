//! The group catalogue: every TLS 1.3 key-exchange group a user can name, by its IANA name.
//!
//! Names are matched case-insensitively on input and always printed in their canonical IANA
//! spelling ([TLS Supported Groups registry]). Each [`Group`] maps to the rustls
//! [`SupportedKxGroup`] that implements it: seven come from rustls's aws-lc-rs provider, and
//! `SecP384r1MLKEM1024`, which rustls 0.23 lacks, is ours (see [`SECP384R1MLKEM1024`]).
//!
//! [TLS Supported Groups registry]: <https://www.iana.org/assignments/tls-parameters/tls-parameters.xhtml#tls-parameters-8>

use std::fmt;
use std::str::FromStr;

use rustls::crypto::aws_lc_rs::kx_group;
use rustls::crypto::SupportedKxGroup;
use rustls::NamedGroup;

mod secp384r1mlkem1024;

pub use secp384r1mlkem1024::SECP384R1MLKEM1024;

/// A key-exchange group from the catalogue.
///
/// A group is *post-quantum* ([`Group::is_pq`]) when it contains ML-KEM, alone or in a
/// hybrid with a classical elliptic-curve Diffie-Hellman.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Group {
    /// X25519 + ML-KEM-768 hybrid (0x11EC), the de-facto default of browsers and OpenSSL 3.5.
    X25519MLKEM768,
    /// NIST P-256 + ML-KEM-768 hybrid (0x11EB).
    SecP256r1MLKEM768,
    /// NIST P-384 + ML-KEM-1024 hybrid (0x11ED).
    SecP384r1MLKEM1024,
    /// Pure ML-KEM-768 (0x0201).
    MLKEM768,
    /// Pure ML-KEM-1024 (0x0202).
    MLKEM1024,
    /// Classical X25519 (0x001D).
    X25519,
    /// Classical NIST P-256 (0x0017).
    Secp256r1,
    /// Classical NIST P-384 (0x0018).
    Secp384r1,
}

impl Group {
    /// Every group in the catalogue, post-quantum first, in our default order of preference.
    pub const ALL: [Self; 8] = [
        Self::X25519MLKEM768,
        Self::SecP256r1MLKEM768,
        Self::SecP384r1MLKEM1024,
        Self::MLKEM768,
        Self::MLKEM1024,
        Self::X25519,
        Self::Secp256r1,
        Self::Secp384r1,
    ];

    /// The canonical IANA name, e.g. `X25519MLKEM768` or `secp256r1`.
    pub fn name(self) -> &'static str {
        match self {
            Self::X25519MLKEM768 => "X25519MLKEM768",
            Self::SecP256r1MLKEM768 => "SecP256r1MLKEM768",
            Self::SecP384r1MLKEM1024 => "SecP384r1MLKEM1024",
            Self::MLKEM768 => "MLKEM768",
            Self::MLKEM1024 => "MLKEM1024",
            Self::X25519 => "X25519",
            Self::Secp256r1 => "secp256r1",
            Self::Secp384r1 => "secp384r1",
        }
    }

    /// The IANA code point carried in `supported_groups` and `key_share`.
    pub fn code_point(self) -> u16 {
        match self {
            Self::X25519MLKEM768 => 0x11ec,
            Self::SecP256r1MLKEM768 => 0x11eb,
            Self::SecP384r1MLKEM1024 => 0x11ed,
            Self::MLKEM768 => 0x0201,
            Self::MLKEM1024 => 0x0202,
            Self::X25519 => 0x001d,
            Self::Secp256r1 => 0x0017,
            Self::Secp384r1 => 0x0018,
        }
    }

    /// Whether the group resists a quantum adversary (it contains ML-KEM).
    pub fn is_pq(self) -> bool {
        !matches!(self, Self::X25519 | Self::Secp256r1 | Self::Secp384r1)
    }

    /// The group with this IANA code point, if the catalogue has it.
    pub fn from_code_point(code_point: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.code_point() == code_point)
    }

    /// The implementation rustls uses for this group.
    pub fn kx_group(self) -> &'static dyn SupportedKxGroup {
        match self {
            Self::X25519MLKEM768 => kx_group::X25519MLKEM768,
            Self::SecP256r1MLKEM768 => kx_group::SECP256R1MLKEM768,
            Self::SecP384r1MLKEM1024 => SECP384R1MLKEM1024,
            Self::MLKEM768 => kx_group::MLKEM768,
            Self::MLKEM1024 => kx_group::MLKEM1024,
            Self::X25519 => kx_group::X25519,
            Self::Secp256r1 => kx_group::SECP256R1,
            Self::Secp384r1 => kx_group::SECP384R1,
        }
    }

    /// Where the implementation comes from: `"rustls"` or `"mcp-pqtls"`.
    pub fn implemented_by(self) -> &'static str {
        match self {
            Self::SecP384r1MLKEM1024 => "mcp-pqtls",
            _ => "rustls",
        }
    }

    /// Parses a comma-separated list such as `X25519MLKEM768,x25519`.
    ///
    /// Order is kept (it is a preference order); a repeated group or an empty list is an error.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, GroupError> {
        let groups = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Self::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        check_list(&groups)?;
        Ok(groups)
    }
}

/// A group list in order of preference, as written in `--groups` (`A,B`) or a config file
/// (`"A,B"` or `["A", "B"]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupList(pub Vec<Group>);

impl FromStr for GroupList {
    type Err = GroupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Group::parse_list(s).map(Self)
    }
}

impl fmt::Display for GroupList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_list(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for GroupList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            One(String),
            Many(Vec<String>),
        }
        let list = match Written::deserialize(d)? {
            Written::One(s) => s,
            Written::Many(v) => v.join(","),
        };
        list.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a group list is usable: not empty, no group twice.
pub fn check_list(groups: &[Group]) -> Result<(), GroupError> {
    if groups.is_empty() {
        return Err(GroupError::Empty);
    }
    for (i, g) in groups.iter().enumerate() {
        if groups[..i].contains(g) {
            return Err(GroupError::Repeated(*g));
        }
    }
    Ok(())
}

/// Formats groups as a comma-separated list of IANA names.
pub fn display_list<T: fmt::Display>(groups: &[T]) -> String {
    if groups.is_empty() {
        return "none".to_owned();
    }
    groups
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many entries [`display_list_capped`] shows.
pub const DISPLAY_CAP: usize = 16;

/// As [`display_list`], but at most [`DISPLAY_CAP`] entries, then `... and N more`: for
/// lists a peer chooses (a ClientHello may list tens of thousands of groups), so that a line
/// logged about it stays short.
pub fn display_list_capped<T: fmt::Display>(groups: &[T]) -> String {
    if groups.len() <= DISPLAY_CAP {
        return display_list(groups);
    }
    format!(
        "{} ... and {} more",
        display_list(&groups[..DISPLAY_CAP]),
        groups.len() - DISPLAY_CAP
    )
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Group {
    type Err = GroupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|g| g.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| GroupError::Unknown(s.to_owned()))
    }
}

impl serde::Serialize for Group {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Group {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A group as a peer names it on the wire: possibly one our catalogue lacks.
///
/// Displays as the IANA name when one is known (catalogue or not), else as hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupId(pub u16);

impl GroupId {
    /// The catalogue group, if this is one.
    pub fn group(self) -> Option<Group> {
        Group::from_code_point(self.0)
    }

    /// Whether this is a post-quantum group we know of (catalogue or MLKEM512).
    pub fn is_pq(self) -> bool {
        self.group().is_some_and(Group::is_pq) || self.0 == 0x0200
    }
}

impl From<Group> for GroupId {
    fn from(g: Group) -> Self {
        Self(g.code_point())
    }
}

impl From<NamedGroup> for GroupId {
    fn from(g: NamedGroup) -> Self {
        Self(u16::from(g))
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(g) = self.group() {
            return f.write_str(g.name());
        }
        // Names of registered groups outside the catalogue, so that logs of what a client
        // offered read the same as in Wireshark.
        let name = match self.0 {
            0x0019 => "secp521r1",
            0x001e => "x448",
            0x0100 => "ffdhe2048",
            0x0101 => "ffdhe3072",
            0x0102 => "ffdhe4096",
            0x0103 => "ffdhe6144",
            0x0104 => "ffdhe8192",
            0x0200 => "MLKEM512",
            0x6399 => "X25519Kyber768Draft00",
            v if v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff => "GREASE",
            _ => return write!(f, "0x{:04x}", self.0),
        };
        f.write_str(name)
    }
}

impl serde::Serialize for GroupId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An error in a group name or list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupError {
    /// The name is not in the catalogue.
    #[error("unknown group `{0}`; known groups: {known}", known = display_list(&Group::ALL))]
    Unknown(String),
    /// The list names no group.
    #[error("group list is empty; name at least one of: {known}", known = display_list(&Group::ALL))]
    Empty,
    /// The list names a group twice.
    #[error("group {0} is listed twice; each group may appear once")]
    Repeated(Group),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_list_shows_sixteen_and_counts_the_rest() {
        let ids: Vec<GroupId> = (1..=40).map(GroupId).collect();
        let shown = display_list_capped(&ids);
        assert!(shown.ends_with(" ... and 24 more"), "{shown}");
        assert_eq!(shown.matches(", ").count(), DISPLAY_CAP - 1, "{shown}");
        assert_eq!(display_list_capped(&ids[..16]), display_list(&ids[..16]));
    }

    #[test]
    fn names_round_trip_case_insensitively() {
        for g in Group::ALL {
            assert_eq!(g.name().parse::<Group>(), Ok(g));
            assert_eq!(g.name().to_lowercase().parse::<Group>(), Ok(g));
            assert_eq!(g.name().to_uppercase().parse::<Group>(), Ok(g));
            assert_eq!(g.to_string(), g.name());
        }
    }

    #[test]
    fn catalogue_matches_rustls_code_points() {
        for g in Group::ALL {
            assert_eq!(u16::from(g.kx_group().name()), g.code_point(), "{g}");
            assert_eq!(GroupId::from(g).to_string(), g.name());
        }
    }

    #[test]
    fn pq_flag_follows_ml_kem() {
        let pq: Vec<_> = Group::ALL.into_iter().filter(|g| g.is_pq()).collect();
        assert_eq!(
            pq,
            [
                Group::X25519MLKEM768,
                Group::SecP256r1MLKEM768,
                Group::SecP384r1MLKEM1024,
                Group::MLKEM768,
                Group::MLKEM1024
            ]
        );
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = "X448MLKEM".parse::<Group>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("unknown group `X448MLKEM`"), "{msg}");
        for g in Group::ALL {
            assert!(msg.contains(g.name()), "{msg}");
        }
    }

    #[test]
    fn list_keeps_order_and_rejects_empty_and_repeats() {
        assert_eq!(
            Group::parse_list("x25519, X25519MLKEM768").unwrap(),
            [Group::X25519, Group::X25519MLKEM768]
        );
        assert_eq!(Group::parse_list(" , "), Err(GroupError::Empty));
        assert_eq!(
            Group::parse_list("X25519,x25519"),
            Err(GroupError::Repeated(Group::X25519))
        );
    }

    #[test]
    fn foreign_code_points_display_by_iana_name_or_hex() {
        assert_eq!(GroupId(0x001e).to_string(), "x448");
        assert_eq!(GroupId(0x2a2a).to_string(), "GREASE");
        assert_eq!(GroupId(0x1234).to_string(), "0x1234");
    }

    /// Canary: pins rustls's default groups so a rustls upgrade that changes them is noticed.
    #[test]
    fn rustls_default_groups_are_pinned() {
        let names: Vec<_> = rustls::crypto::aws_lc_rs::default_provider()
            .kx_groups
            .iter()
            .map(|g| GroupId::from(g.name()).to_string())
            .collect();
        assert_eq!(
            names,
            ["X25519MLKEM768", "X25519", "secp256r1", "secp384r1"]
        );
    }
}
