//! Wrappers around rustls's webpki verifiers: they restrict signature schemes to the
//! configured ones (agility), record the scheme the peer signed with (for
//! [`super::ConnectionInfo`]), and apply the policy's identity check to client certificates.
//! Path building and signature checks stay in rustls/webpki.

use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, PeerIncompatible,
    SignatureScheme,
};

use crate::policy::{IdentityCheck, Refusal};

/// Rejects a signature in a scheme we do not accept, with the error rustls would give.
fn check_scheme(allowed: &[SignatureScheme], scheme: SignatureScheme) -> Result<(), Error> {
    if allowed.contains(&scheme) {
        Ok(())
    } else {
        Err(Error::PeerIncompatible(
            PeerIncompatible::NoSignatureSchemesInCommon,
        ))
    }
}

fn filter(offered: Vec<SignatureScheme>, allowed: &[SignatureScheme]) -> Vec<SignatureScheme> {
    offered
        .into_iter()
        .filter(|s| allowed.contains(s))
        .collect()
}

/// How the client checks the server's certificate.
pub(crate) enum ServerCertCheck {
    /// A webpki verifier over trust anchors.
    WebPki(Arc<dyn ServerCertVerifier>),
    /// No chain or name check (`--insecure`); the CertificateVerify signature is still
    /// checked so the handshake proves possession of the key in the certificate.
    Insecure(WebPkiSupportedAlgorithms),
}

tokio::task_local! {
    /// The scheme the server signed its CertificateVerify with, for the handshake running
    /// in this task. A task-local rather than per-connection verifiers because rustls only
    /// resumes a session under the very same verifier (`Arc` identity).
    pub(crate) static USED_SCHEME: Cell<Option<SignatureScheme>>;
}

/// Client-side verifier, shared by all connections of a connector.
pub(crate) struct ServerVerifier {
    pub(crate) check: ServerCertCheck,
    pub(crate) schemes: Arc<[SignatureScheme]>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match &self.check {
            ServerCertCheck::WebPki(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            ServerCertCheck::Insecure(_) => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // We only ever offer TLS 1.3.
        Err(Error::PeerIncompatible(
            PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        check_scheme(&self.schemes, dss.scheme)?;
        let valid = match &self.check {
            ServerCertCheck::WebPki(v) => v.verify_tls13_signature(message, cert, dss),
            ServerCertCheck::Insecure(algs) => verify_tls13_signature(message, cert, dss, algs),
        }?;
        // Outside a recording scope (a caller using the rustls config directly) there is
        // nothing to record.
        let _ = USED_SCHEME.try_with(|used| used.set(Some(dss.scheme)));
        Ok(valid)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let offered = match &self.check {
            ServerCertCheck::WebPki(v) => v.supported_verify_schemes(),
            ServerCertCheck::Insecure(algs) => algs.supported_schemes(),
        };
        filter(offered, &self.schemes)
    }
}

impl fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerVerifier")
            .field(
                "insecure",
                &matches!(self.check, ServerCertCheck::Insecure(_)),
            )
            .finish_non_exhaustive()
    }
}

/// Server-side verifier of client certificates.
pub(crate) struct ClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) schemes: Arc<[SignatureScheme]>,
    /// Set for one connection whose classical fallback depends on the client's identity.
    pub(crate) identity: Option<Arc<IdentityGate>>,
}

/// The policy's identity check, applied when the client certificate arrives.
pub(crate) struct IdentityGate {
    pub(crate) check: IdentityCheck,
    pub(crate) refusal: Mutex<Option<Refusal>>,
}

impl IdentityGate {
    pub(crate) fn new(check: IdentityCheck) -> Self {
        Self {
            check,
            refusal: Mutex::new(None),
        }
    }

    pub(crate) fn take_refusal(&self) -> Option<Refusal> {
        self.refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth() || self.identity.is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
            || self
                .identity
                .as_ref()
                .is_some_and(|g| g.check.requires_certificate())
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Some(gate) = &self.identity {
            let ids = crate::certs::identities(end_entity);
            if let Err(refusal) = gate.check.check(&ids) {
                *gate.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(refusal);
                // Sent as an access_denied alert.
                return Err(Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        check_scheme(&self.schemes, dss.scheme)?;
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        filter(self.inner.supported_verify_schemes(), &self.schemes)
    }
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("identity_gate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}
