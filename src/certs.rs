//! Certificates: PEM loading, inspection (x509-parser), start-up checks, and the dev PKI.
//!
//! Everything a peer or a file controls is checked here, once, before anything listens: a
//! key that does not match its certificate, an expired certificate, or a key whose algorithm
//! none of the configured signature schemes can use is refused with the file and the fix.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{RootCertStore, SignatureAlgorithm, SignatureScheme};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::crypto::signature_scheme_name;

#[cfg(feature = "dev-pki")]
mod dev;

#[cfg(feature = "dev-pki")]
pub use dev::{write_dev_pki, DevPki, KeyAlg};

/// What an operator wants to know about a certificate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CertInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject alternative names, as `DNS:…`, `IP:…`, `URI:…`, `email:…`.
    pub sans: Vec<String>,
    /// Key algorithm: `ecdsa-p256`, `ecdsa-p384`, `ed25519`, `rsa-2048`, `ml-dsa-65`, ...
    pub key_algorithm: String,
    /// Key size in bits (the curve size for EC, the modulus for RSA, the public key for ML-DSA).
    pub key_bits: usize,
    /// Signature algorithm of the certificate itself, e.g. `ecdsa-with-SHA256`, `ml-dsa-65`.
    pub signature_algorithm: String,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// Whether the certificate is a CA.
    pub is_ca: bool,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, CertError> {
        let cert = parse(der)?;
        let spki = &cert.tbs_certificate.subject_pki;
        let (key_algorithm, key_bits) = key_algorithm(spki);
        let sans = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(san_string)
                    .collect()
            })
            .unwrap_or_default();
        let validity = cert.validity();
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            key_algorithm,
            key_bits,
            signature_algorithm: oid_name(&dotted(&cert.signature_algorithm.algorithm)),
            not_before: rfc3339(validity.not_before.timestamp()),
            not_after: rfc3339(validity.not_after.timestamp()),
            is_ca: cert.is_ca(),
        })
    }
}

/// The permission bits of a key file that others may read (see [`crate::secret_file`]), if
/// any may. A key that others can read is as good as published; it still loads (refusing
/// would break a working deployment on upgrade), but loudly.
fn loose_key_mode(path: &Path) -> Option<u32> {
    crate::secret_file::exposed_mode(path).ok().flatten()
}

/// The identities a certificate names for policy and logs: SAN URIs (SPIFFE IDs) first,
/// then DNS names. Empty if the certificate does not parse or names none.
pub fn identities(der: &[u8]) -> Vec<String> {
    let Ok(cert) = parse(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    let names = &san.value.general_names;
    let uris = names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some((*u).to_owned()),
        _ => None,
    });
    let dns = names.iter().filter_map(|n| match n {
        GeneralName::DNSName(d) => Some((*d).to_owned()),
        _ => None,
    });
    uris.chain(dns).collect()
}

/// A server or client certificate chain with its private key, checked and ready to serve.
#[derive(Clone, Debug)]
pub struct Identity {
    certified_key: Arc<CertifiedKey>,
    info: CertInfo,
}

impl Identity {
    /// Loads a PEM chain (end-entity first) and a PEM private key, and checks them: the key
    /// matches the certificate, the certificate is valid now, and one of `schemes` can sign
    /// with the key (the signing key then only ever uses those schemes).
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// mcp_pqtls::certs::write_dev_pki(dir.path(), mcp_pqtls::certs::KeyAlg::MlDsa65).unwrap();
    /// let id = mcp_pqtls::certs::Identity::load(
    ///     &dir.path().join("server.pem"),
    ///     &dir.path().join("server.key"),
    ///     &mcp_pqtls::crypto::Algorithms::default().signature_schemes,
    /// )?;
    /// assert_eq!(id.info().key_algorithm, "ml-dsa-65");
    /// # Ok::<(), mcp_pqtls::certs::CertError>(())
    /// ```
    ///
    /// A key file readable by group or others is loaded, with a warning naming its mode.
    pub fn load(cert: &Path, key: &Path, schemes: &[SignatureScheme]) -> Result<Self, CertError> {
        let chain = load_chain(cert)?;
        if let Some(mode) = loose_key_mode(key) {
            tracing::warn!(file = %key.display(), mode = %format_args!("{mode:04o}"),
                "Private key file is readable by group or others; restrict it with `chmod 600`");
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| CertError::Pem {
            path: key.to_owned(),
            what: "private key",
            error: e.to_string(),
        })?;
        Self::from_der(chain, key_der, schemes, &cert.display().to_string())
    }

    /// As [`Identity::load`], signing with the default schemes
    /// ([`crate::crypto::Algorithms::default`]): a server's identity from its two PEM files.
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # mcp_pqtls::certs::write_dev_pki(dir.path(), mcp_pqtls::certs::KeyAlg::EcdsaP256).unwrap();
    /// # let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    /// let identity = mcp_pqtls::certs::Identity::from_pem_files(&cert, &key)?;
    /// let acceptor = mcp_pqtls::PqAcceptor::new(mcp_pqtls::ServerTlsConfig::new(identity));
    /// # acceptor.unwrap();
    /// # Ok::<(), mcp_pqtls::certs::CertError>(())
    /// ```
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, CertError> {
        let schemes = crate::crypto::Algorithms::default().signature_schemes;
        Self::load(cert.as_ref(), key.as_ref(), &schemes)
    }

    /// As [`Identity::load`], from DER already in memory; `label` names it in errors.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        schemes: &[SignatureScheme],
        label: &str,
    ) -> Result<Self, CertError> {
        let label = label.to_owned();
        let end_entity = chain
            .first()
            .ok_or_else(|| CertError::Empty(label.clone().into()))?;
        let info = CertInfo::parse(end_entity)?;
        let key = aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertError::BadKey {
                cert: label.clone(),
                error: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, key.clone());
        certified.keys_match().map_err(|_| CertError::KeyMismatch {
            cert: label.clone(),
            key_algorithm: info.key_algorithm.clone(),
        })?;
        check_validity(&info, &label, SystemTime::now())?;
        if key.choose_scheme(schemes).is_none() {
            return Err(CertError::NoUsableScheme {
                cert: label,
                key_algorithm: info.key_algorithm.clone(),
                schemes: schemes.iter().map(|s| signature_scheme_name(*s)).collect(),
            });
        }
        let key = Arc::new(RestrictedKey {
            inner: key,
            schemes: schemes.to_vec(),
        });
        Ok(Self {
            certified_key: Arc::new(CertifiedKey::new(certified.cert, key)),
            info,
        })
    }

    /// The chain and key as rustls serves them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    /// What the end-entity certificate says.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// The scheme this key signs with when the peer offers `offered`; `None` if none fits.
    pub fn scheme_for(&self, offered: &[SignatureScheme]) -> Option<SignatureScheme> {
        self.certified_key
            .key
            .choose_scheme(offered)
            .map(|s| s.scheme())
    }
}

/// Loads a PEM certificate chain; an empty file is an error.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| CertError::Pem {
            path: path.to_owned(),
            what: "certificate",
            error: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::Empty(path.to_owned()));
    }
    Ok(chain)
}

/// Loads trust anchors from a PEM file of CA certificates.
pub fn load_roots(path: &Path) -> Result<RootCertStore, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in load_chain(path)? {
        roots.add(cert).map_err(|e| CertError::Pem {
            path: path.to_owned(),
            what: "CA certificate",
            error: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Trust anchors from the operating system's store.
pub fn system_roots() -> Result<RootCertStore, CertError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(CertError::NoSystemRoots(
            found
                .errors
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ));
    }
    Ok(roots)
}

fn check_validity(info: &CertInfo, label: &str, now: SystemTime) -> Result<(), CertError> {
    let parse = |s: &str| humantime::parse_rfc3339(s).ok();
    if parse(&info.not_after).is_some_and(|t| t < now) {
        return Err(CertError::Expired {
            cert: label.to_owned(),
            not_after: info.not_after.clone(),
        });
    }
    if parse(&info.not_before).is_some_and(|t| t > now) {
        return Err(CertError::NotYetValid {
            cert: label.to_owned(),
            not_before: info.not_before.clone(),
        });
    }
    Ok(())
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| CertError::Parse(e.to_string()))
}

fn san_string(name: &GeneralName<'_>) -> Option<String> {
    Some(match name {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(ip) => match ip.len() {
            4 => format!(
                "IP:{}",
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).ok()?)
            ),
            16 => format!(
                "IP:{}",
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).ok()?)
            ),
            _ => return None,
        },
        _ => return None,
    })
}

/// Names the subject public key, including ML-DSA, whose OIDs x509-parser 0.18 does not
/// name (it parses them as `PublicKey::Unknown`): mapped here from FIPS 204 / RFC 9881.
fn key_algorithm(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> (String, usize) {
    let oid = dotted(&spki.algorithm.algorithm);
    let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
    let name = match oid.as_str() {
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| dotted(&o));
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "ecdsa-p256".to_owned(),
                Some("1.3.132.0.34") => "ecdsa-p384".to_owned(),
                Some("1.3.132.0.35") => "ecdsa-p521".to_owned(),
                other => format!("ecdsa-{}", other.unwrap_or("unknown-curve")),
            }
        }
        "1.2.840.113549.1.1.1" => format!("rsa-{bits}"),
        "1.2.840.113549.1.1.10" => format!("rsa-pss-{bits}"),
        "1.3.101.112" => return ("ed25519".to_owned(), 256),
        "1.3.101.113" => return ("ed448".to_owned(), 456),
        "2.16.840.1.101.3.4.3.17" | "2.16.840.1.101.3.4.3.18" | "2.16.840.1.101.3.4.3.19" => {
            return (oid_name(&oid), spki.subject_public_key.data.len() * 8)
        }
        _ => oid,
    };
    (name, bits)
}

/// An OID in dotted form. A peer's certificate may carry an empty one (found by fuzzing:
/// x509-parser accepts it and renders it as ""), which a report must still name.
fn dotted(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    match oid.to_id_string() {
        s if s.is_empty() => "empty-oid".to_owned(),
        s => s,
    }
}

/// Names a signature algorithm OID.
fn oid_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassa-pss",
        "1.3.101.112" => "ed25519",
        "1.3.101.113" => "ed448",
        "2.16.840.1.101.3.4.3.17" => "ml-dsa-44",
        "2.16.840.1.101.3.4.3.18" => "ml-dsa-65",
        "2.16.840.1.101.3.4.3.19" => "ml-dsa-87",
        other => return other.to_owned(),
    }
    .to_owned()
}

fn rfc3339(unix: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0).unsigned_abs());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A signing key limited to the configured signature schemes (algorithm agility: an
/// operator can, say, forbid RSA-PSS-SHA256 without touching code).
struct RestrictedKey {
    inner: Arc<dyn SigningKey>,
    schemes: Vec<SignatureScheme>,
}

impl SigningKey for RestrictedKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let allowed: Vec<_> = offered
            .iter()
            .copied()
            .filter(|s| self.schemes.contains(s))
            .collect();
        self.inner.choose_scheme(&allowed)
    }

    fn public_key(&self) -> Option<rustls::pki_types::SubjectPublicKeyInfoDer<'_>> {
        self.inner.public_key()
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.inner.algorithm()
    }
}

impl fmt::Debug for RestrictedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestrictedKey")
            .field("algorithm", &self.inner.algorithm())
            .field("schemes", &self.schemes)
            .finish()
    }
}

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file that is missing or is not the PEM it should be.
    #[error("cannot read {what} from {}: {error}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
        /// What went wrong.
        error: String,
    },
    /// A PEM file without a certificate.
    #[error("no certificate in {}; expected a PEM chain, end-entity first", .0.display())]
    Empty(PathBuf),
    /// A certificate that does not parse.
    #[error("certificate does not parse: {0}")]
    Parse(String),
    /// A key rustls cannot use.
    #[error("private key for {cert} is not usable: {error}")]
    BadKey {
        /// The certificate it was given for.
        cert: String,
        /// What rustls said.
        error: String,
    },
    /// Key and certificate are not a pair.
    #[error("private key does not match the certificate in {cert} (a {key_algorithm} certificate); pass the key that was issued with it")]
    KeyMismatch {
        /// The certificate.
        cert: String,
        /// Its key algorithm.
        key_algorithm: String,
    },
    /// Certificate past its end of validity.
    #[error("certificate {cert} expired at {not_after}; renew it (dev certificates: `mcp-pqtls certs init DIR`)")]
    Expired {
        /// The certificate.
        cert: String,
        /// When it expired.
        not_after: String,
    },
    /// Certificate not valid yet.
    #[error(
        "certificate {cert} is not valid before {not_before}; check the clock or the certificate"
    )]
    NotYetValid {
        /// The certificate.
        cert: String,
        /// When it becomes valid.
        not_before: String,
    },
    /// No configured scheme can sign with the key.
    #[error("certificate {cert} has a {key_algorithm} key, which none of the configured signature schemes ({}) can use; add a scheme for {key_algorithm} or use another certificate", schemes.join(", "))]
    NoUsableScheme {
        /// The certificate.
        cert: String,
        /// Its key algorithm.
        key_algorithm: String,
        /// The configured schemes.
        schemes: Vec<String>,
    },
    /// The system store has no usable root.
    #[error("no usable CA certificate in the system store ({0}); pass a CA file")]
    NoSystemRoots(String),
    /// Writing dev certificates failed.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// rcgen could not make a certificate.
    #[cfg(feature = "dev-pki")]
    #[error("cannot generate {what}: {error}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// rcgen's error.
        error: rcgen::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_may_read_is_flagged() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        std::fs::write(&key, "x").unwrap();
        // Group-readable under the process's own group: see `secret_file`'s test.
        for (mode, flagged) in [
            (0o600, None),
            (0o400, None),
            (0o660, Some(0o660)),
            (0o604, Some(0o604)),
        ] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(loose_key_mode(&key), flagged, "{mode:o}");
        }
    }

    #[test]
    fn a_certificate_with_an_empty_key_algorithm_oid_still_names_it() {
        // fuzz/corpus/certificate_der: a dev certificate whose SPKI algorithm OID is empty.
        let der = include_bytes!("../fuzz/corpus/certificate_der/regression_undecodable_key_oid");
        let info = CertInfo::parse(der).unwrap();
        assert_eq!(info.key_algorithm, "empty-oid");
        assert!(!info.signature_algorithm.is_empty());
    }

    #[test]
    fn ml_dsa_oids_are_named() {
        assert_eq!(oid_name("2.16.840.1.101.3.4.3.18"), "ml-dsa-65");
        assert_eq!(oid_name("1.2.3.4"), "1.2.3.4");
    }

    #[test]
    fn validity_window_is_enforced() {
        let info = CertInfo {
            subject: String::new(),
            issuer: String::new(),
            sans: vec![],
            key_algorithm: "ecdsa-p256".into(),
            key_bits: 256,
            signature_algorithm: String::new(),
            not_before: "2020-01-01T00:00:00Z".into(),
            not_after: "2021-01-01T00:00:00Z".into(),
            is_ca: false,
        };
        let now = humantime::parse_rfc3339("2022-01-01T00:00:00Z").unwrap();
        let err = check_validity(&info, "server.pem", now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificate server.pem expired at 2021-01-01T00:00:00Z; renew it (dev certificates: `mcp-pqtls certs init DIR`)"
        );
        let early = humantime::parse_rfc3339("2019-01-01T00:00:00Z").unwrap();
        assert!(matches!(
            check_validity(&info, "x", early),
            Err(CertError::NotYetValid { .. })
        ));
    }
}
