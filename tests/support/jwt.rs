//! Keys made per test run and JWTs signed with them (ES256, RS256, EdDSA), and the JWKS
//! that publishes them.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "https://mcp.test/mcp";

/// Signing keys made for this test run, and the JWKS publishing the first three.
pub struct Keys {
    pub es: EncodingKey,
    pub rs: EncodingKey,
    pub ed: EncodingKey,
    /// An ES256 key the JWKS does not hold.
    pub rogue: EncodingKey,
    pub es_jwk: Value,
    pub rs_jwk: Value,
    pub ed_jwk: Value,
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rng = SystemRandom::new();
        let ec = |kid: &str| {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
            let point = pair.public_key().as_ref(); // 0x04 || x || y
            let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                "x": b64(&point[1..33]), "y": b64(&point[33..])});
            (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
        };
        let (es, es_jwk) = ec("es");
        let (rogue, _) = ec("es");
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa).unwrap();
        let public = rsa.public_key();
        let rs_jwk = json!({"kty": "RSA", "kid": "rs", "alg": "RS256",
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero())});
        let rs = EncodingKey::from_rsa_der(&pkcs1_of(pkcs8.as_ref()));
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let ed_jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed",
            "x": b64(pair.public_key().as_ref())});
        Keys {
            es,
            rs,
            ed: EncodingKey::from_ed_der(pkcs8.as_ref()),
            rogue,
            es_jwk,
            rs_jwk,
            ed_jwk,
        }
    })
}

/// The RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (jsonwebtoken signs RS256 with PKCS#1).
fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
    fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, header) = if b[1] < 0x80 {
            (usize::from(b[1]), 2)
        } else {
            let n = usize::from(b[1] & 0x7f);
            let len = b[2..2 + n].iter().fold(0, |a, x| a << 8 | usize::from(*x));
            (len, 2 + n)
        };
        (b[0], &b[header..header + len], &b[header + len..])
    }
    let (_, info, _) = tlv(pkcs8);
    let (_, _, rest) = tlv(info); // version
    let (_, _, rest) = tlv(rest); // algorithm
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "privateKey OCTET STRING");
    key.to_vec()
}

pub fn jwks(members: &[&Value]) -> String {
    json!({ "keys": members }).to_string()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now(), "exp": now() + 600,
        "scope": "mcp tools"})
}

pub fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let header = Header {
        kid: Some(kid.to_owned()),
        ..Header::new(alg)
    };
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn token(sub: &str) -> String {
    sign(Algorithm::ES256, "es", &keys().es, &claims(sub))
}

pub fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// A token from the gate's JWKS with the approver scope (`approve`).
pub fn approver(sub: &str) -> String {
    let c = with(claims(sub), "scope", serde_json::json!("approve"));
    sign(Algorithm::ES256, "es", &keys().es, &c)
}

/// `[auth]` for tokens signed by [`keys`]' ES256 key (its JWKS written to `jwks_path`), with
/// the `mcp` scope required.
pub fn auth_section(jwks_path: &std::path::Path) -> String {
    std::fs::write(jwks_path, jwks(&[&keys().es_jwk])).unwrap();
    format!(
        "[auth]\njwks-file = {jwks_path:?}\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\nrequired-scopes = [\"mcp\"]\n"
    )
}

/// A rule holding `delete_*` calls for approvers with the `approve` scope for `timeout`, and
/// `[approvals]` with a 1 s keep-alive.
pub fn approval_rule(timeout: &str) -> String {
    format!(
        "[[rules]]\nname = \"approve-deletes\"\ntool = \"delete_*\"\nrequire-approval = true\napprovers = [\"scope:approve\"]\napproval-timeout = \"{timeout}\"\n\n[approvals]\nkeepalive = \"1s\"\n"
    )
}
