//! OAuth 2.1 resource-server checks: `Authorization: Bearer` JWTs verified locally against a
//! JWKS (a file, or a URL fetched and refreshed), the Protected Resource Metadata document
//! ([RFC 9728]) and the `WWW-Authenticate` challenges of the MCP authorization spec.
//!
//! The algorithm a token may use is decided by the key (its `kty`, `crv` and `alg`), never by
//! the token's header alone; `none` and HMAC are always refused.
//!
//! [RFC 9728]: <https://www.rfc-editor.org/rfc/rfc9728>

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use http::Uri;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use tracing::{info, warn};

use self::jwks::{fetch, Key};
pub use self::jwks::{JwksError, KeyProblem, KeySet, SkippedKey};
use super::metrics::GateMetrics;
pub use super::reason::TokenFailure;
use crate::tls::PqConnector;

mod jwks;

/// The path of the Protected Resource Metadata document (RFC 9728 §3).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// Default time between JWKS refreshes.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Default clock-skew allowance on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// An unknown `kid` triggers a JWKS fetch (key rotation) at most this often.
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the signing keys come from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum JwksSource {
    /// A JWKS file, read at start and re-read every refresh.
    File(PathBuf),
    /// An `https://` URL (or `http://` on loopback), fetched at start and every refresh.
    Url {
        /// The URL.
        url: Uri,
        /// For `https://`: the PQ TLS client (`pq-preferred`: identity providers are often
        /// classical; the keys are public, their authenticity is what TLS must give).
        connector: Option<PqConnector>,
    },
}

/// `[auth]`, validated.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuthSettings {
    /// The keys' source.
    pub jwks: JwksSource,
    /// Keys read while validating the config (a file source).
    pub initial_keys: Option<KeySet>,
    /// Time between refreshes.
    pub refresh: Duration,
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// This server's resource URI: `aud` must contain it (RFC 8707).
    pub audience: String,
    /// The `authorization_servers` of the metadata document.
    pub authorization_servers: Vec<String>,
    /// The public URL of the metadata document, for `WWW-Authenticate`.
    pub resource_metadata_url: String,
    /// Scopes every request's token must carry.
    pub required_scopes: Vec<String>,
    /// The metadata's `scopes_supported`: required scopes and those rules ask for.
    pub scopes_supported: Vec<String>,
    /// Clock-skew allowance on `exp` and `nbf`.
    pub leeway: Duration,
    /// Send the client's `Authorization` upstream.
    pub forward_token: bool,
    /// The JOSE `typ` a token must carry (`at+jwt`, RFC 9068), if any.
    pub required_typ: Option<String>,
}

impl AuthSettings {
    /// The metadata URL derived from a resource URI (RFC 9728 §3.1): the well-known path goes
    /// between the authority and the resource's path.
    pub fn default_metadata_url(audience: &Uri) -> String {
        let scheme = audience.scheme_str().unwrap_or("https");
        let authority = audience.authority().map_or("", |a| a.as_str());
        format!(
            "{scheme}://{authority}{METADATA_PATH}{}",
            resource_path(audience)
        )
    }

    /// Paths the metadata document is served at: the plain well-known path, the one suffixed
    /// with the resource's path, and the path of `resource_metadata_url`.
    pub fn metadata_paths(&self) -> Vec<String> {
        let mut paths = vec![METADATA_PATH.to_owned()];
        if let Ok(aud) = self.audience.parse::<Uri>() {
            paths.push(format!("{METADATA_PATH}{}", resource_path(&aud)));
        }
        if let Ok(url) = self.resource_metadata_url.parse::<Uri>() {
            paths.push(url.path().to_owned());
        }
        paths.sort();
        paths.dedup();
        paths
    }

    /// The Protected Resource Metadata document.
    pub fn metadata_document(&self) -> Vec<u8> {
        let doc = serde_json::json!({
            "resource": self.audience,
            "authorization_servers": self.authorization_servers,
            "scopes_supported": self.scopes_supported,
            "bearer_methods_supported": ["header"],
        });
        serde_json::to_vec_pretty(&doc).unwrap_or_default()
    }

    /// A `WWW-Authenticate` challenge: `error` (with its description) when a token was
    /// present but not accepted, `scope` when scopes are missing.
    pub fn challenge(&self, error: Option<(&str, &str)>, scope: Option<&str>) -> HeaderValue {
        let mut v = String::from("Bearer ");
        if let Some((code, description)) = error {
            v.push_str(&format!(
                "error=\"{code}\", error_description=\"{}\", ",
                quoted(description)
            ));
        }
        if let Some(scope) = scope {
            v.push_str(&format!("scope=\"{}\", ", quoted(scope)));
        }
        v.push_str(&format!(
            "resource_metadata=\"{}\"",
            quoted(&self.resource_metadata_url)
        ));
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

fn resource_path(uri: &Uri) -> &str {
    match uri.path() {
        "/" => "",
        p => p,
    }
}

/// A quoted-string's content: no quote, backslash or control character can break out.
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '"' | '\\') && (' '..='~').contains(c))
        .collect()
}

/// The caller of a request with an accepted token. Its `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Principal {
    /// `sub`.
    pub subject: String,
    /// `scope` (space-separated) or `scp` (an array).
    pub scopes: Vec<String>,
    /// The token itself (forwarded only with `forward-token`, audited only with
    /// `include-tokens`).
    pub token: String,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.subject)
            .field("scopes", &self.scopes)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A peer's string as an error message may carry it: quoted and escaped (no newline or
/// escape sequence reaches a log line), and cut to 64 characters.
fn shown(s: &str) -> String {
    let mut cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Why a bearer token was not accepted. Peer strings in it (`kid`, `alg`, `typ`) are
/// quoted and escaped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// Not a JWT, or not the JSON it should hold.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `none`, HMAC, or an algorithm the key does not have.
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    /// No key with the token's `kid` (or, without one, for its algorithm).
    #[error("unknown signing key: {0}")]
    UnknownKid(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid (nbf)")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain this server's resource URI.
    #[error("token is for another audience, not {0}")]
    WrongAudience(String),
    /// A required claim (`exp`, `iss`, `aud`, `sub`) is absent.
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// No keys have been loaded yet (the JWKS URL has not answered).
    #[error("no signing keys loaded yet")]
    NoKeys,
    /// The JOSE `typ` is not the `required-typ`.
    #[error("wrong token type: {0}")]
    WrongType(String),
    /// The JOSE header has `crit`: extensions this verifier does not implement (RFC 7515
    /// §4.1.11 says such a token must be refused).
    #[error("token header has crit {0}: no critical extension is supported")]
    Crit(String),
    /// A scope (an `scp` member) with whitespace in it: one scope here, several to an
    /// upstream reading the space-separated scopes header.
    #[error("scope {0} has whitespace in it")]
    BadScope(String),
}

impl TokenError {
    /// The `kind` label of `gate_token_failures_total`.
    pub fn kind(&self) -> TokenFailure {
        match self {
            Self::Missing => TokenFailure::Missing,
            Self::Malformed(_) => TokenFailure::Malformed,
            Self::AlgorithmNotAllowed(_) => TokenFailure::AlgorithmNotAllowed,
            Self::UnknownKid(_) => TokenFailure::UnknownKid,
            Self::BadSignature => TokenFailure::BadSignature,
            Self::Expired => TokenFailure::Expired,
            Self::NotYetValid => TokenFailure::NotYetValid,
            Self::WrongIssuer => TokenFailure::WrongIssuer,
            Self::WrongAudience(_) => TokenFailure::WrongAudience,
            Self::MissingClaim(_) => TokenFailure::MissingClaim,
            Self::NoKeys => TokenFailure::NoKeys,
            Self::WrongType(_) => TokenFailure::WrongType,
            Self::Crit(_) => TokenFailure::Crit,
            Self::BadScope(_) => TokenFailure::BadScope,
        }
    }
}

impl serde::Serialize for TokenFailure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

/// Verifies bearer tokens against the current keys, refreshing them as configured.
#[derive(Debug)]
pub struct TokenVerifier {
    /// The settings.
    pub settings: AuthSettings,
    keys: ArcSwap<KeySet>,
    refetch: std::sync::Mutex<Refetch>,
    metrics: Arc<GateMetrics>,
}

/// The unknown-kid re-fetch: when the last started, and the one under way (its waiters
/// watch for `true`, or for the fetching request to be dropped).
#[derive(Debug, Default)]
struct Refetch {
    last: Option<Instant>,
    under_way: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Ends the re-fetch under way, whether it finished or its request was dropped mid-way.
struct RefetchDone<'a> {
    refetch: &'a std::sync::Mutex<Refetch>,
    tx: tokio::sync::watch::Sender<bool>,
}

impl Drop for RefetchDone<'_> {
    fn drop(&mut self) {
        self.refetch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .under_way = None;
        let _ = self.tx.send(true);
    }
}

#[derive(Deserialize)]
struct Claims {
    // Optional here so that its absence is reported as a missing claim, not as bad JSON.
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Scp>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scp {
    List(Vec<String>),
    Text(String),
}

impl TokenVerifier {
    /// A verifier starting with the keys read at validation (a file), or none (a URL, until
    /// [`TokenVerifier::refresh`] has fetched them).
    pub fn new(settings: AuthSettings, metrics: Arc<GateMetrics>) -> Self {
        let keys = settings.initial_keys.clone().unwrap_or_default();
        Self {
            settings,
            keys: ArcSwap::from_pointee(keys),
            refetch: std::sync::Mutex::default(),
            metrics,
        }
    }

    /// Loads the keys again; on failure the previous keys stay. Logs and counts both.
    pub async fn refresh(&self, trigger: &'static str) -> bool {
        match self.load().await {
            Ok(keys) => {
                let n = keys.len();
                self.keys.store(Arc::new(keys));
                self.metrics.jwks_refresh_ok.fetch_add(1, Relaxed);
                info!(trigger, keys = n, "JWKS loaded");
                true
            }
            Err(e) => {
                self.metrics.jwks_refresh_failed.fetch_add(1, Relaxed);
                warn!(trigger, error = %e, "JWKS refresh failed; keeping the previous keys");
                false
            }
        }
    }

    /// Refreshes every `refresh` interval, forever.
    pub async fn refresh_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.settings.refresh).await;
            self.refresh("interval").await;
        }
    }

    async fn load(&self) -> Result<KeySet, JwksError> {
        let bytes = match &self.settings.jwks {
            JwksSource::File(path) => {
                tokio::fs::read(path)
                    .await
                    .map(Bytes::from)
                    .map_err(|source| JwksError::Read {
                        path: path.clone(),
                        source,
                    })?
            }
            JwksSource::Url { url, connector } => {
                tokio::time::timeout(FETCH_TIMEOUT, fetch(url, connector.as_ref()))
                    .await
                    .map_err(|_| JwksError::Timeout {
                        url: url.clone(),
                        after: FETCH_TIMEOUT,
                    })??
            }
        };
        KeySet::parse(&bytes)
    }

    fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Verifies the request's bearer token.
    pub async fn verify(&self, headers: &HeaderMap) -> Result<Principal, TokenError> {
        let token = bearer(headers)?;
        let header = header_of(&token)?;
        if let Some(required) = &self.settings.required_typ {
            if !typ_matches(header.typ.as_deref(), required) {
                return Err(TokenError::WrongType(match &header.typ {
                    Some(t) => format!("{}, not {required:?}", shown(t)),
                    None => format!("none, not {required:?}"),
                }));
            }
        }
        let (alg, kid) = (header.alg, header.kid);
        let mut keys = self.keys();
        let mut key = pick(&keys, alg, kid.as_deref());
        if matches!(key, Err(TokenError::UnknownKid(_) | TokenError::NoKeys))
            && matches!(self.settings.jwks, JwksSource::Url { .. })
        {
            // Key rotation: the IdP may sign with a key published after our last fetch.
            self.refetch_once().await;
            keys = self.keys();
            key = pick(&keys, alg, kid.as_deref());
        }
        let key = key?;
        let mut validation = Validation::new(key.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        let data = jsonwebtoken::decode::<Claims>(&token, &key.key, &validation)
            .map_err(|e| self.token_error(e.into_kind()))?;
        let scopes = match (data.claims.scope, data.claims.scp) {
            (Some(s), _) | (None, Some(Scp::Text(s))) => {
                s.split_whitespace().map(str::to_owned).collect()
            }
            (None, Some(Scp::List(l))) => {
                if let Some(bad) = l
                    .iter()
                    .find(|s| s.is_empty() || s.contains(char::is_whitespace))
                {
                    return Err(TokenError::BadScope(shown(bad)));
                }
                l
            }
            (None, None) => Vec::new(),
        };
        let subject = data
            .claims
            .sub
            .ok_or_else(|| TokenError::MissingClaim("sub".into()))?;
        Ok(Principal {
            subject,
            scopes,
            token,
        })
    }

    /// One JWKS fetch for an unknown kid at a time, at most every [`UNKNOWN_KID_REFETCH`]:
    /// a request that finds one under way waits for its result (no lock is held across the
    /// fetch); one that comes within the interval after it does not fetch again.
    async fn refetch_once(&self) {
        let (mut waiting, done) = {
            let mut r = self
                .refetch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &r.under_way {
                Some(rx) => (Some(rx.clone()), None),
                None if r.last.is_none_or(|t| t.elapsed() >= UNKNOWN_KID_REFETCH) => {
                    r.last = Some(Instant::now());
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    r.under_way = Some(rx);
                    (
                        None,
                        Some(RefetchDone {
                            refetch: &self.refetch,
                            tx,
                        }),
                    )
                }
                None => return,
            }
        };
        if let Some(done) = done {
            self.refresh("unknown kid").await;
            drop(done);
        } else if let Some(rx) = &mut waiting {
            // Err: the fetching request was dropped; its waiters go on with the keys held.
            let _ = rx.wait_for(|fetched| *fetched).await;
        }
    }

    fn token_error(&self, kind: ErrorKind) -> TokenError {
        match kind {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::Provider(_) => TokenError::BadSignature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidAudience => TokenError::WrongAudience(self.settings.audience.clone()),
            ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c),
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                TokenError::AlgorithmNotAllowed("the key does not allow it".into())
            }
            other => TokenError::Malformed(format!("{other:?}")),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Result<String, TokenError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(TokenError::Missing);
    };
    if values.next().is_some() {
        return Err(TokenError::Malformed(
            "more than one Authorization header".into(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| TokenError::Malformed("Authorization is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Err(TokenError::Malformed("empty bearer token".into()))
            } else {
                Ok(token.to_owned())
            }
        }
        // Another scheme (Basic, ...) carries no bearer token (RFC 6750 §3.1).
        _ => Err(TokenError::Missing),
    }
}

/// What the verifier reads of a JOSE header.
#[derive(Debug, PartialEq, Eq)]
struct JoseHeader {
    alg: Algorithm,
    kid: Option<String>,
    typ: Option<String>,
}

/// Whether a token's `typ` is the required one: media types compare without case, and
/// `application/` may be left out (RFC 7515 §4.1.9, RFC 9068 §2.1).
fn typ_matches(typ: Option<&str>, required: &str) -> bool {
    let bare = |t: &str| -> String {
        let t = t.trim().to_ascii_lowercase();
        t.strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(t)
    };
    typ.is_some_and(|t| bare(t) == bare(required))
}

/// The token header's `alg`, `kid` and `typ`, read before any key is chosen so that `none`
/// and HMAC are refused by name; a header with `crit` is refused.
fn header_of(token: &str) -> Result<JoseHeader, TokenError> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
        #[serde(default)]
        typ: Option<String>,
        #[serde(default)]
        crit: Option<serde_json::Value>,
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(TokenError::Malformed(format!(
            "a JWT has 3 parts, this has {}",
            parts.len()
        )));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[0].trim_end_matches('='))
        .map_err(|e| TokenError::Malformed(format!("header is not base64url: {e}")))?;
    let header: Header = serde_json::from_slice(&bytes)
        .map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
    let alg = header.alg;
    if alg.eq_ignore_ascii_case("none") || alg.to_ascii_uppercase().starts_with("HS") {
        return Err(TokenError::AlgorithmNotAllowed(shown(&alg)));
    }
    let alg: Algorithm = alg
        .parse()
        .map_err(|_| TokenError::AlgorithmNotAllowed(shown(&alg)))?;
    if let Some(crit) = header.crit {
        return Err(TokenError::Crit(shown(&crit.to_string())));
    }
    Ok(JoseHeader {
        alg,
        kid: header.kid,
        typ: header.typ,
    })
}

fn pick<'k>(keys: &'k KeySet, alg: Algorithm, kid: Option<&str>) -> Result<&'k Key, TokenError> {
    if keys.is_empty() {
        return Err(TokenError::NoKeys);
    }
    let key = match kid {
        Some(kid) => keys
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or_else(|| TokenError::UnknownKid(shown(kid)))?,
        None => keys
            .keys
            .iter()
            .find(|k| k.alg == alg)
            .ok_or_else(|| TokenError::UnknownKid(format!("no kid, and no {alg:?} key")))?,
    };
    if key.alg != alg {
        return Err(TokenError::AlgorithmNotAllowed(format!(
            "the token says {alg:?}, its key is {:?}",
            key.alg
        )));
    }
    Ok(key)
}

pub(super) fn missing_scopes(required: &[String], held: &[String]) -> Vec<String> {
    required
        .iter()
        .filter(|s| !held.contains(s))
        .cloned()
        .collect()
}

/// The `scope` of an insufficient-scope challenge: what the client holds plus what it
/// lacks, so a step-up authorization asks for enough (MCP authorization, scope challenge).
pub(super) fn scope_hint(held: &[String], missing: &[String]) -> String {
    let mut all: Vec<&String> = held.iter().chain(missing).collect();
    all.sort();
    all.dedup();
    all.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_puts_the_well_known_path_before_the_resource_path() {
        let aud: Uri = "https://mcp.example.com/mcp".parse().unwrap();
        assert_eq!(
            AuthSettings::default_metadata_url(&aud),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        let root: Uri = "https://mcp.example.com:8443/".parse().unwrap();
        assert_eq!(
            AuthSettings::default_metadata_url(&root),
            "https://mcp.example.com:8443/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn none_and_hmac_are_refused_by_name_before_any_key_is_looked_at() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for alg in ["none", "NONE", "HS256", "hs512"] {
            let token = format!("{}.{}.", b64(&format!("{{\"alg\":\"{alg}\"}}")), b64("{}"));
            assert_eq!(
                header_of(&token),
                Err(TokenError::AlgorithmNotAllowed(format!("{alg:?}")))
            );
        }
        let token = format!("{}.{}.sig", b64(r#"{"alg":"ES256","kid":"k1"}"#), b64("{}"));
        assert_eq!(
            header_of(&token),
            Ok(JoseHeader {
                alg: Algorithm::ES256,
                kid: Some("k1".to_owned()),
                typ: None
            })
        );
        assert!(matches!(header_of("a.b"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn bearer_needs_one_authorization_header_with_the_bearer_scheme() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Err(TokenError::Missing));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpw"));
        assert_eq!(bearer(&h), Err(TokenError::Missing));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&h), Ok("abc".into()));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer def"));
        assert!(matches!(bearer(&h), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn challenges_quote_safely() {
        let s = AuthSettings {
            jwks: JwksSource::File("x".into()),
            initial_keys: None,
            refresh: DEFAULT_JWKS_REFRESH,
            issuer: "https://idp".into(),
            audience: "https://mcp.example.com/mcp".into(),
            authorization_servers: vec!["https://idp".into()],
            resource_metadata_url:
                "https://mcp.example.com/.well-known/oauth-protected-resource/mcp".into(),
            required_scopes: vec![],
            scopes_supported: vec![],
            leeway: DEFAULT_LEEWAY,
            forward_token: false,
            required_typ: None,
        };
        assert_eq!(
            s.challenge(None, None),
            "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        );
        let v = s.challenge(Some(("invalid_token", "bad \"quote\"\n")), Some("a b"));
        assert_eq!(
            v,
            "Bearer error=\"invalid_token\", error_description=\"bad quote\", scope=\"a b\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        );
        assert_eq!(
            s.metadata_paths(),
            [METADATA_PATH, "/.well-known/oauth-protected-resource/mcp"]
        );
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn peer_strings_in_token_errors_are_escaped_so_no_log_line_can_be_forged() {
        let forged = "x\n2026-12-01T00:00:00Z  INFO mcp_pqtls: Request http.status=200\u{1b}[2J";
        let header = serde_json::json!({"alg": "ES256", "kid": forged}).to_string();
        let token = format!("{}.{}.sig", b64(&header), b64("{}"));
        let h = header_of(&token).unwrap();
        let keys = KeySet::parse(br#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#).unwrap();
        let Err(e) = pick(&keys, h.alg, h.kid.as_deref()) else {
            panic!("an unknown kid was found")
        };
        let text = e.to_string();
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
        assert!(
            text.starts_with(r#"unknown signing key: "x\n2026-12-01"#),
            "{text}"
        );
        let header = serde_json::json!({"alg": "RS1\nINFO forged"}).to_string();
        let token = format!("{}.{}.sig", b64(&header), b64("{}"));
        let text = header_of(&token).unwrap_err().to_string();
        assert_eq!(text, r#"algorithm not allowed: "RS1\nINFO forged""#);
        // Long strings are cut.
        assert!(shown(&"k".repeat(10_000)).len() < 80);
    }

    #[test]
    fn crit_is_refused_and_typ_compares_as_a_media_type() {
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"ES256","crit":["exp"],"exp":1}"#),
            b64("{}")
        );
        assert!(matches!(header_of(&token), Err(TokenError::Crit(_))));
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+JWT",
        ] {
            assert!(typ_matches(Some(typ), "at+jwt"), "{typ}");
            assert!(typ_matches(Some(typ), "application/at+jwt"), "{typ}");
        }
        for typ in [
            None,
            Some("JWT"),
            Some("jwt"),
            Some("application/jwt"),
            Some("at+jwt2"),
        ] {
            assert!(!typ_matches(typ, "at+jwt"), "{typ:?}");
        }
    }

    #[test]
    fn principal_debug_leaves_the_token_out() {
        let p = Principal {
            subject: "agent".into(),
            scopes: vec!["mcp".into()],
            token: "eyJhbGciOi.secret.sig".into(),
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("agent") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn scope_hint_lists_held_and_missing_scopes_once() {
        assert_eq!(
            scope_hint(
                &["mcp".into(), "read".into()],
                &["admin".into(), "mcp".into()]
            ),
            "admin mcp read"
        );
    }
}
