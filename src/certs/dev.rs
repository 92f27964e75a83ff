//! The dev PKI: a throwaway CA, a server certificate for loopback and a client certificate,
//! for demos and tests. Never for production: the CA key is not even kept.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SignatureAlgorithm,
};

use super::CertError;

/// The key algorithm of generated certificates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyAlg {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256 certificate signatures (RSA-PSS in TLS 1.3).
    Rsa2048,
    /// ML-DSA-44 (FIPS 204).
    MlDsa44,
    /// ML-DSA-65 (FIPS 204).
    MlDsa65,
    /// ML-DSA-87 (FIPS 204).
    MlDsa87,
}

impl KeyAlg {
    /// Every algorithm `certs init` can make.
    pub const ALL: [Self; 7] = [
        Self::EcdsaP256,
        Self::EcdsaP384,
        Self::Ed25519,
        Self::Rsa2048,
        Self::MlDsa44,
        Self::MlDsa65,
        Self::MlDsa87,
    ];

    /// The name used on the command line and in [`super::CertInfo::key_algorithm`].
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Ed25519 => "ed25519",
            Self::Rsa2048 => "rsa-2048",
            Self::MlDsa44 => "ml-dsa-44",
            Self::MlDsa65 => "ml-dsa-65",
            Self::MlDsa87 => "ml-dsa-87",
        }
    }

    fn rcgen(self) -> &'static SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
            Self::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            Self::MlDsa44 => &rcgen::PKCS_ML_DSA_44,
            Self::MlDsa65 => &rcgen::PKCS_ML_DSA_65,
            Self::MlDsa87 => &rcgen::PKCS_ML_DSA_87,
        }
    }

    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            Self::Rsa2048 => KeyPair::generate_rsa_for(self.rcgen(), rcgen::RsaKeySize::_2048),
            _ => KeyPair::generate_for(self.rcgen()),
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|a| a.name()).collect();
                format!(
                    "unknown key algorithm `{s}`; use one of: {}",
                    known.join(", ")
                )
            })
    }
}

/// A freshly generated dev PKI, as PEM.
#[derive(Clone)]
#[non_exhaustive]
pub struct DevPki {
    /// The CA certificate (trust anchor for both sides).
    pub ca_pem: String,
    /// Server chain: a certificate for `localhost`, `127.0.0.1` and `::1`, then the CA.
    pub server_pem: String,
    /// Server private key (PKCS#8).
    pub server_key: String,
    /// Client certificate, identity `spiffe://mcp-pqtls.dev/client` and `client.mcp-pqtls.dev`.
    pub client_pem: String,
    /// Client private key (PKCS#8).
    pub client_key: String,
    /// A second client certificate, identity `spiffe://mcp-pqtls.dev/approver`: a person who
    /// decides held calls (`approvers = ["id:..."]`), who is not the client that made them.
    pub approver_pem: String,
    /// Its private key (PKCS#8).
    pub approver_key: String,
}

/// The SPIFFE ID in the dev client certificate.
pub const DEV_CLIENT_ID: &str = "spiffe://mcp-pqtls.dev/client";

/// The SPIFFE ID in the dev approver certificate.
pub const DEV_APPROVER_ID: &str = "spiffe://mcp-pqtls.dev/approver";

impl DevPki {
    /// Generates a CA, a server and a client certificate, all with keys of `alg`.
    pub fn generate(alg: KeyAlg) -> Result<Self, CertError> {
        let gen = |what| move |error| CertError::Generate { what, error };
        let ca_key = alg.generate().map_err(gen("CA key"))?;
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "mcp-pqtls dev CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut ca);
        let ca_cert = ca.self_signed(&ca_key).map_err(gen("CA certificate"))?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = alg.generate().map_err(gen("server key"))?;
        let mut server = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .map_err(gen("server certificate"))?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut server);
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .map_err(gen("server certificate"))?;

        let client = |id: &str, dns: &str, name: &str| -> Result<(String, String), CertError> {
            let key = alg.generate().map_err(gen("client key"))?;
            let mut params =
                CertificateParams::new(vec![dns.to_owned()]).map_err(gen("client certificate"))?;
            params.subject_alt_names.insert(
                0,
                SanType::URI(id.try_into().map_err(gen("client SPIFFE ID"))?),
            );
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            validity(&mut params);
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(gen("client certificate"))?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (client_pem, client_key) = client(
            DEV_CLIENT_ID,
            "client.mcp-pqtls.dev",
            "mcp-pqtls dev client",
        )?;
        let (approver_pem, approver_key) = client(
            DEV_APPROVER_ID,
            "approver.mcp-pqtls.dev",
            "mcp-pqtls dev approver",
        )?;

        Ok(Self {
            ca_pem: ca_cert.pem(),
            server_pem: format!("{}{}", server_cert.pem(), ca_cert.pem()),
            server_key: server_key.serialize_pem(),
            client_pem,
            client_key,
            approver_pem,
            approver_key,
        })
    }

    /// Writes `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`,
    /// `approver.pem`, `approver.key` into `dir`
    /// (created if missing); keys are written mode 0600.
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        std::fs::create_dir_all(dir).map_err(|error| CertError::Write {
            path: dir.to_owned(),
            error,
        })?;
        for (name, pem, secret) in [
            ("ca.pem", &self.ca_pem, false),
            ("server.pem", &self.server_pem, false),
            ("server.key", &self.server_key, true),
            ("client.pem", &self.client_pem, false),
            ("client.key", &self.client_key, true),
            ("approver.pem", &self.approver_pem, false),
            ("approver.key", &self.approver_key, true),
        ] {
            let path = dir.join(name);
            write_file(&path, pem.as_bytes(), secret)
                .map_err(|error| CertError::Write { path, error })?;
        }
        Ok(())
    }
}

impl fmt::Debug for DevPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevPki").finish_non_exhaustive()
    }
}

/// Generates a dev PKI of `alg` and writes it into `dir` (see [`DevPki::write`]).
pub fn write_dev_pki(dir: &Path, alg: KeyAlg) -> Result<DevPki, CertError> {
    let pki = DevPki::generate(alg)?;
    pki.write(dir)?;
    Ok(pki)
}

/// One hour of clock skew tolerated at the start, one year of life.
fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
}

fn write_file(path: &Path, data: &[u8], secret: bool) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    if secret {
        // An existing file keeps its mode on open: tighten it explicitly.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(data)
}
