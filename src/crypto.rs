//! Algorithm agility: cipher suites and signature schemes by IANA name, and the one function
//! that builds a rustls [`CryptoProvider`] from configured groups and suites.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{self, cipher_suite};
use rustls::crypto::CryptoProvider;
use rustls::{SignatureScheme, SupportedCipherSuite};

use crate::groups::Group;

/// A TLS 1.3 cipher suite, by IANA name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CipherSuite {
    /// `TLS_AES_128_GCM_SHA256`
    Aes128GcmSha256,
    /// `TLS_AES_256_GCM_SHA384`
    Aes256GcmSha384,
    /// `TLS_CHACHA20_POLY1305_SHA256`
    Chacha20Poly1305Sha256,
}

impl CipherSuite {
    /// Every suite, in rustls's default order of preference.
    pub const ALL: [Self; 3] = [
        Self::Aes256GcmSha384,
        Self::Aes128GcmSha256,
        Self::Chacha20Poly1305Sha256,
    ];

    /// The IANA name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
            Self::Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
            Self::Chacha20Poly1305Sha256 => "TLS_CHACHA20_POLY1305_SHA256",
        }
    }

    fn rustls(self) -> SupportedCipherSuite {
        match self {
            Self::Aes128GcmSha256 => cipher_suite::TLS13_AES_128_GCM_SHA256,
            Self::Aes256GcmSha384 => cipher_suite::TLS13_AES_256_GCM_SHA384,
            Self::Chacha20Poly1305Sha256 => cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        }
    }
}

impl fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CipherSuite {
    type Err = AlgorithmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| AlgorithmError::UnknownCipherSuite(s.trim().to_owned()))
    }
}

/// TLS 1.3 signature schemes we sign and verify with, by IANA name.
const SIGNATURE_SCHEMES: [(SignatureScheme, &str); 12] = [
    (
        SignatureScheme::ECDSA_NISTP256_SHA256,
        "ecdsa_secp256r1_sha256",
    ),
    (
        SignatureScheme::ECDSA_NISTP384_SHA384,
        "ecdsa_secp384r1_sha384",
    ),
    (
        SignatureScheme::ECDSA_NISTP521_SHA512,
        "ecdsa_secp521r1_sha512",
    ),
    (SignatureScheme::ED25519, "ed25519"),
    (SignatureScheme::RSA_PSS_SHA256, "rsa_pss_rsae_sha256"),
    (SignatureScheme::RSA_PSS_SHA384, "rsa_pss_rsae_sha384"),
    (SignatureScheme::RSA_PSS_SHA512, "rsa_pss_rsae_sha512"),
    (SignatureScheme::RSA_PKCS1_SHA256, "rsa_pkcs1_sha256"),
    (SignatureScheme::RSA_PKCS1_SHA384, "rsa_pkcs1_sha384"),
    (SignatureScheme::ML_DSA_44, "mldsa44"),
    (SignatureScheme::ML_DSA_65, "mldsa65"),
    (SignatureScheme::ML_DSA_87, "mldsa87"),
];

/// The IANA name of a signature scheme (`ecdsa_secp256r1_sha256`, `mldsa65`, ...).
pub fn signature_scheme_name(scheme: SignatureScheme) -> String {
    SIGNATURE_SCHEMES
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, n)| (*n).to_owned())
        .unwrap_or_else(|| format!("0x{:04x}", u16::from(scheme)))
}

/// Parses a signature scheme by IANA name, case-insensitively.
pub fn parse_signature_scheme(s: &str) -> Result<SignatureScheme, AlgorithmError> {
    SIGNATURE_SCHEMES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(s.trim()))
        .map(|(s, _)| *s)
        .ok_or_else(|| AlgorithmError::UnknownSignatureScheme(s.trim().to_owned()))
}

/// The IANA name of a negotiated cipher suite.
pub fn cipher_suite_name(suite: rustls::CipherSuite) -> String {
    CipherSuite::ALL
        .into_iter()
        .find(|c| c.rustls().suite() == suite)
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| format!("{suite:?}"))
}

/// The algorithms a TLS endpoint may use: the agility knobs, all configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Algorithms {
    /// Key-exchange groups in order of preference.
    /// Default is [`crate::DEFAULT_GROUPS`].
    pub groups: Vec<Group>,
    /// TLS 1.3 cipher suites in order of preference. Default is [`CipherSuite::ALL`].
    pub cipher_suites: Vec<CipherSuite>,
    /// Signature schemes we sign with and accept from the peer.
    /// Default is every scheme rustls's aws-lc-rs provider supports in TLS 1.3.
    pub signature_schemes: Vec<SignatureScheme>,
}

impl Default for Algorithms {
    fn default() -> Self {
        Self {
            groups: crate::DEFAULT_GROUPS.to_vec(),
            cipher_suites: CipherSuite::ALL.to_vec(),
            signature_schemes: SIGNATURE_SCHEMES
                .iter()
                .map(|(s, _)| *s)
                .filter(|s| {
                    !matches!(
                        s,
                        SignatureScheme::RSA_PKCS1_SHA256 | SignatureScheme::RSA_PKCS1_SHA384
                    )
                })
                .collect(),
        }
    }
}

/// Builds the provider for a handshake that may use exactly `groups` (in this order).
///
/// The only place a [`CryptoProvider`] is made: rustls's aws-lc-rs default with the groups
/// and suites replaced, so everything else (signature verification, key loading, RNG)
/// stays rustls's own.
pub fn provider(groups: &[Group], suites: &[CipherSuite]) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        kx_groups: groups.iter().map(|g| g.kx_group()).collect(),
        cipher_suites: suites.iter().map(|s| s.rustls()).collect(),
        ..aws_lc_rs::default_provider()
    })
}

/// A TLS 1.2 provider with these (classical) groups and rustls's TLS 1.2 suites. Only the
/// probe uses it, to tell a server without TLS 1.3 from one that is not there; nothing serves
/// or connects with it.
pub fn tls12_provider(groups: &[Group]) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        kx_groups: groups.iter().map(|g| g.kx_group()).collect(),
        cipher_suites: aws_lc_rs::DEFAULT_CIPHER_SUITES
            .iter()
            .copied()
            .filter(|s| s.tls13().is_none())
            .collect(),
        ..aws_lc_rs::default_provider()
    })
}

/// An unknown algorithm name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlgorithmError {
    /// Not a TLS 1.3 cipher suite we have.
    #[error("unknown cipher suite `{0}`; known: TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256")]
    UnknownCipherSuite(String),
    /// Not a signature scheme we have.
    #[error("unknown signature scheme `{0}`; known: {known}", known = SIGNATURE_SCHEMES.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", "))]
    UnknownSignatureScheme(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for c in CipherSuite::ALL {
            assert_eq!(c.name().to_lowercase().parse::<CipherSuite>(), Ok(c));
            assert_eq!(cipher_suite_name(c.rustls().suite()), c.name());
        }
        for (s, n) in SIGNATURE_SCHEMES {
            assert_eq!(parse_signature_scheme(n), Ok(s));
            assert_eq!(signature_scheme_name(s), n);
        }
        assert!(parse_signature_scheme("dsa_sha1").is_err());
    }

    /// Canary: pins rustls's default TLS 1.3 suites so an upgrade that changes them is noticed.
    #[test]
    fn rustls_default_suites_are_pinned() {
        let tls13: Vec<_> = aws_lc_rs::DEFAULT_CIPHER_SUITES
            .iter()
            .filter(|s| s.tls13().is_some())
            .map(|s| cipher_suite_name(s.suite()))
            .collect();
        assert_eq!(
            tls13,
            CipherSuite::ALL.map(|c| c.name().to_owned()).to_vec()
        );
    }

    #[test]
    fn provider_holds_exactly_the_configured_groups() {
        let p = provider(
            &[Group::SecP384r1MLKEM1024, Group::X25519],
            &CipherSuite::ALL,
        );
        let names: Vec<u16> = p.kx_groups.iter().map(|g| u16::from(g.name())).collect();
        assert_eq!(names, [0x11ed, 0x001d]);
    }
}
