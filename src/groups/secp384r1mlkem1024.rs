//! `SecP384r1MLKEM1024` (0x11ED): NIST P-384 ECDH + ML-KEM-1024, which rustls 0.23 lacks.
//!
//! Written here because no crate provides it for rustls. It is composed from the two
//! aws-lc-rs-backed groups rustls does ship (`secp384r1` and `MLKEM1024`), so every
//! cryptographic operation (point validation, ECDH, ML-KEM encapsulation and decapsulation)
//! stays in aws-lc; this file only lays out shares and secrets as the draft specifies:
//!
//! - client share: P-384 uncompressed point (97 bytes) || ML-KEM-1024 encapsulation key (1568)
//! - server share: P-384 uncompressed point (97 bytes) || ML-KEM-1024 ciphertext (1568)
//! - shared secret: ECDH secret (48 bytes) || ML-KEM shared secret (32)
//!
//! The classical part comes *first*, as for `SecP256r1MLKEM768` and unlike `X25519MLKEM768`.
//! See [draft-ietf-tls-ecdhe-mlkem] section 4.3.
//!
//! [draft-ietf-tls-ecdhe-mlkem]: <https://datatracker.ietf.org/doc/draft-ietf-tls-ecdhe-mlkem/>

use rustls::crypto::aws_lc_rs::kx_group;
use rustls::crypto::{ActiveKeyExchange, CompletedKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved, ProtocolVersion};

/// The `SecP384r1MLKEM1024` hybrid key exchange ([draft-ietf-tls-ecdhe-mlkem]).
///
/// [draft-ietf-tls-ecdhe-mlkem]: <https://datatracker.ietf.org/doc/draft-ietf-tls-ecdhe-mlkem/>
pub static SECP384R1MLKEM1024: &dyn SupportedKxGroup = &SecP384r1MlKem1024;

/// IANA code point of `SecP384r1MLKEM1024`.
const CODE_POINT: u16 = 0x11ed;
/// Uncompressed SEC1 P-384 point: 0x04 || X (48) || Y (48).
const P384_SHARE_LEN: usize = 97;
/// ML-KEM-1024 encapsulation key (FIPS 203, k = 4).
const MLKEM1024_EK_LEN: usize = 1568;
/// ML-KEM-1024 ciphertext (FIPS 203, k = 4).
const MLKEM1024_CT_LEN: usize = 1568;

const INVALID_KEY_SHARE: Error = Error::PeerMisbehaved(PeerMisbehaved::InvalidKeyShare);

#[derive(Debug)]
struct SecP384r1MlKem1024;

impl SupportedKxGroup for SecP384r1MlKem1024 {
    /// Client side: fresh P-384 and ML-KEM-1024 key pairs; our share is both public keys.
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let classical = kx_group::SECP384R1.start()?;
        let post_quantum = kx_group::MLKEM1024.start()?;
        let mut pub_key = Vec::with_capacity(P384_SHARE_LEN + MLKEM1024_EK_LEN);
        pub_key.extend_from_slice(classical.pub_key());
        pub_key.extend_from_slice(post_quantum.pub_key());
        Ok(Box::new(Active {
            classical,
            post_quantum,
            pub_key,
        }))
    }

    /// Server side: ECDH against the client's point, encapsulate to its ML-KEM key.
    ///
    /// The default implementation (start, then complete) would be wrong for a KEM: the server
    /// must answer with a ciphertext, not a key of its own.
    fn start_and_complete(&self, client_share: &[u8]) -> Result<CompletedKeyExchange, Error> {
        let (classical_share, pq_share) = split(client_share, MLKEM1024_EK_LEN)?;
        let classical = kx_group::SECP384R1.start_and_complete(classical_share)?;
        let post_quantum = kx_group::MLKEM1024.start_and_complete(pq_share)?;
        Ok(CompletedKeyExchange {
            group: self.name(),
            pub_key: concat(&classical.pub_key, &post_quantum.pub_key),
            secret: SharedSecret::from(concat(
                classical.secret.secret_bytes(),
                post_quantum.secret.secret_bytes(),
            )),
        })
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::from(CODE_POINT)
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

struct Active {
    classical: Box<dyn ActiveKeyExchange>,
    post_quantum: Box<dyn ActiveKeyExchange>,
    pub_key: Vec<u8>,
}

impl ActiveKeyExchange for Active {
    /// Client side: ECDH against the server's point, decapsulate its ciphertext.
    fn complete(self: Box<Self>, server_share: &[u8]) -> Result<SharedSecret, Error> {
        let (classical_share, pq_share) = split(server_share, MLKEM1024_CT_LEN)?;
        let classical = self.classical.complete(classical_share)?;
        let post_quantum = self.post_quantum.complete(pq_share)?;
        Ok(SharedSecret::from(concat(
            classical.secret_bytes(),
            post_quantum.secret_bytes(),
        )))
    }

    fn pub_key(&self) -> &[u8] {
        &self.pub_key
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::from(CODE_POINT)
    }
}

/// Splits a received share into its P-384 and ML-KEM parts; any other length is refused.
fn split(share: &[u8], pq_len: usize) -> Result<(&[u8], &[u8]), Error> {
    if share.len() != P384_SHARE_LEN + pq_len {
        return Err(INVALID_KEY_SHARE);
    }
    Ok(share.split_at(P384_SHARE_LEN))
}

fn concat(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(first.len() + second.len());
    out.extend_from_slice(first);
    out.extend_from_slice(second);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_agree_on_the_secret() {
        let client = SECP384R1MLKEM1024.start().unwrap();
        assert_eq!(client.pub_key().len(), P384_SHARE_LEN + MLKEM1024_EK_LEN);
        assert_eq!(client.pub_key()[0], 0x04, "uncompressed P-384 point first");

        let server = SECP384R1MLKEM1024
            .start_and_complete(client.pub_key())
            .unwrap();
        assert_eq!(server.pub_key.len(), P384_SHARE_LEN + MLKEM1024_CT_LEN);
        assert_eq!(server.pub_key[0], 0x04, "uncompressed P-384 point first");

        let client_secret = client.complete(&server.pub_key).unwrap();
        assert_eq!(client_secret.secret_bytes(), server.secret.secret_bytes());
        assert_eq!(client_secret.secret_bytes().len(), 48 + 32);
    }

    #[test]
    fn wrong_share_lengths_are_refused() {
        let client = SECP384R1MLKEM1024.start().unwrap();
        let share = client.pub_key();
        for bad in [&share[..share.len() - 1], &[][..], &share[..P384_SHARE_LEN]] {
            assert_eq!(
                SECP384R1MLKEM1024.start_and_complete(bad).err(),
                Some(INVALID_KEY_SHARE)
            );
        }
        assert_eq!(client.complete(&[0u8; 10]).err(), Some(INVALID_KEY_SHARE));
    }

    #[test]
    fn a_point_not_on_the_curve_is_refused() {
        let client = SECP384R1MLKEM1024.start().unwrap();
        let mut share = client.pub_key().to_vec();
        share[1..P384_SHARE_LEN].fill(0x01);
        assert!(SECP384R1MLKEM1024.start_and_complete(&share).is_err());
    }
}
