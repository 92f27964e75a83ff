//! The signing keys of a JWKS: which keys verify tokens (the key decides the algorithm), why
//! the others are skipped, and how the set is fetched (bounded in size, over PQ TLS for
//! `https://`).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::tls::PqConnector;

const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Usable signing keys of a JWKS.
#[derive(Clone, Default)]
pub struct KeySet {
    pub(super) keys: Vec<Key>,
}

/// One key that verifies signatures, and the one algorithm it verifies.
#[derive(Clone)]
pub(super) struct Key {
    pub(super) kid: Option<String>,
    pub(super) alg: Algorithm,
    pub(super) key: DecodingKey,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (k.kid.as_deref(), k.alg)))
            .finish()
    }
}

/// Why a JWKS could not be loaded: the previous keys stay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// `jwks-file` could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `jwks-url` did not answer in time.
    #[error("{url}: no answer within {after:?}")]
    Timeout {
        /// The URL.
        url: Uri,
        /// How long we waited.
        after: Duration,
    },
    /// `jwks-url` could not be fetched (connection, TLS, HTTP or a body over the size bound).
    #[error("{url}: {source}")]
    Fetch {
        /// The URL.
        url: Uri,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `jwks-url` answered with a status other than success.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL.
        url: Uri,
        /// The status.
        status: http::StatusCode,
    },
    /// The document is not a JWKS.
    #[error("not a JWKS (a JSON object with \"keys\"): {0}")]
    NotJwks(#[source] serde_json::Error),
    /// Every key was skipped (or there were none).
    #[error("no usable signing key (RSA, EC P-256/P-384 or Ed25519){}", skipped_list(.0))]
    NoUsableKey(Vec<SkippedKey>),
}

fn skipped_list(skipped: &[SkippedKey]) -> String {
    let each: Vec<String> = skipped.iter().map(ToString::to_string).collect();
    if each.is_empty() {
        String::new()
    } else {
        format!(": {}", each.join("; "))
    }
}

/// A key of a JWKS that was skipped, and why.
#[derive(Debug, thiserror::Error)]
#[error("keys[{index}]: {why}")]
#[non_exhaustive]
pub struct SkippedKey {
    /// Its index in `keys`.
    pub index: usize,
    /// Why it cannot verify signatures here.
    #[source]
    pub why: KeyProblem,
}

/// Why a JWK cannot verify token signatures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// Not a JWK we can read.
    #[error("{0}")]
    NotJwk(#[source] serde_json::Error),
    /// `use: enc`.
    #[error("an encryption key (use: enc)")]
    Encryption,
    /// An RSA key whose `alg` is not an RSA signature algorithm.
    #[error("RSA key with alg {0}")]
    RsaAlg(KeyAlgorithm),
    /// A curve we do not verify on.
    #[error("unsupported curve {0:?}")]
    Curve(EllipticCurve),
    /// An EC key whose `alg` does not match its curve.
    #[error("EC key on {0:?} with alg {1:?}")]
    EcAlg(EllipticCurve, Option<KeyAlgorithm>),
    /// An Ed25519 key whose `alg` is not EdDSA.
    #[error("Ed25519 key with alg {0:?}")]
    Ed25519Alg(Option<KeyAlgorithm>),
    /// `kty: oct`: HMAC would let anyone holding the secret mint tokens.
    #[error("a shared secret (kty oct): HMAC is never accepted")]
    SharedSecret,
    /// The key's parameters do not decode.
    #[error("{0}")]
    Decode(#[source] jsonwebtoken::errors::Error),
}

impl KeySet {
    /// Reads a JWKS. Keys we cannot use for signatures (encryption keys, HMAC secrets,
    /// unsupported curves) are skipped; a set with none left is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, JwksError> {
        #[derive(Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(JwksError::NotJwks)?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, value) in raw.keys.into_iter().enumerate() {
            match signing_key(value) {
                Ok(k) => keys.push(k),
                Err(why) => skipped.push(SkippedKey { index, why }),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(skipped));
        }
        Ok(Self { keys })
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The algorithm a JWK's own parameters allow. An `alg` on the key must agree with them.
fn signing_key(value: serde_json::Value) -> Result<Key, KeyProblem> {
    let jwk: Jwk = serde_json::from_value(value).map_err(KeyProblem::NotJwk)?;
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return Err(KeyProblem::Encryption);
    }
    let stated = jwk.common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match stated {
            None => Algorithm::RS256,
            Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::RS384) => Algorithm::RS384,
            Some(KeyAlgorithm::RS512) => Algorithm::RS512,
            Some(KeyAlgorithm::PS256) => Algorithm::PS256,
            Some(KeyAlgorithm::PS384) => Algorithm::PS384,
            Some(KeyAlgorithm::PS512) => Algorithm::PS512,
            Some(other) => return Err(KeyProblem::RsaAlg(other)),
        },
        AlgorithmParameters::EllipticCurve(ec) => {
            let alg = match ec.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                ref other => return Err(KeyProblem::Curve(other.clone())),
            };
            let agrees = match stated {
                None => true,
                Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
                Some(KeyAlgorithm::ES384) => alg == Algorithm::ES384,
                Some(_) => false,
            };
            if !agrees {
                return Err(KeyProblem::EcAlg(ec.curve.clone(), stated));
            }
            alg
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 {
                return Err(KeyProblem::Curve(okp.curve.clone()));
            }
            if stated.is_some_and(|a| a != KeyAlgorithm::EdDSA) {
                return Err(KeyProblem::Ed25519Alg(stated));
            }
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => return Err(KeyProblem::SharedSecret),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(KeyProblem::Decode)?;
    Ok(Key {
        kid: jwk.common.key_id,
        alg,
        key,
    })
}

/// GETs a JWKS: over PQ TLS for `https://`, plain HTTP for a loopback `http://`.
pub(super) async fn fetch(url: &Uri, connector: Option<&PqConnector>) -> Result<Bytes, JwksError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| JwksError::Fetch {
        url: url.clone(),
        source,
    };
    let refused = |status| JwksError::Status {
        url: url.clone(),
        status,
    };
    if let Some(connector) = connector {
        // Bounded while it is read, not after: a hostile endpoint cannot fill memory.
        let fetched = crate::connect::get_limited(connector, url.clone(), MAX_JWKS_BYTES)
            .await
            .map_err(|e| failed(e.into()))?;
        if !fetched.status.is_success() {
            return Err(refused(fetched.status));
        }
        return Ok(fetched.body);
    }
    let host = crate::tls::bare_host(url.host().unwrap_or("localhost"));
    let tcp = tokio::net::TcpStream::connect((host, url.port_u16().unwrap_or(80)))
        .await
        .map_err(|e| failed(e.into()))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| failed(e.into()))?;
    tokio::spawn(conn);
    let req = http::Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            url.authority().map_or("localhost", |a| a.as_str()),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.into()))?;
    let res = send.send_request(req).await.map_err(|e| failed(e.into()))?;
    if !res.status().is_success() {
        return Err(refused(res.status()));
    }
    Ok(Limited::new(res.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(failed)?
        .to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_keeps_signing_keys_and_skips_the_rest() {
        let jwks = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"EC","crv":"P-256","kid":"ec","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","alg":"ES384","kid":"mismatch","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let set = KeySet::parse(jwks).unwrap();
        let kept: Vec<_> = set
            .keys
            .iter()
            .map(|k| (k.kid.clone().unwrap(), k.alg))
            .collect();
        assert_eq!(
            kept,
            [
                ("ec".to_owned(), Algorithm::ES256),
                ("ed".to_owned(), Algorithm::EdDSA)
            ]
        );
        let e = KeySet::parse(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("HMAC is never accepted"), "{e}");
        assert!(KeySet::parse(b"[]")
            .unwrap_err()
            .to_string()
            .contains("not a JWKS"));
    }
}
