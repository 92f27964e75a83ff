//! Session resumption against the policy in force now: rustls does not verify the client
//! certificate on a resumed handshake (it restores the chain from the ticket), so a ticket
//! must never carry a client past an `id:` rule that the current policy applies, whether the
//! rule was added by a reload or comes into force at a sunset.

use std::time::SystemTime;

use mcp_pqtls::policy::Policy;
use mcp_pqtls::tls::PqAcceptor;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, ResolvesClientCert};
use rustls::sign::CertifiedKey;

use super::*;

/// The dev client certificate's SPIFFE ID.
const CLIENT_ID: &str = "spiffe://mcp-pqtls.dev/client";

/// Presents the dev client certificate whatever the server asks.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// rustls clients with the dev client certificate that share one session cache, whatever
/// groups each offers (rustls resumes only under the very same verifier and certificate
/// resolver, so those are shared too). A ticket got over a pq group can then be offered
/// by a classical-only client, as a real client that changed its offer would.
struct Clients {
    verifier: Arc<dyn ServerCertVerifier>,
    cert: Arc<dyn ResolvesClientCert>,
    store: Arc<dyn ClientSessionStore>,
}

/// What one request over a fresh connection came to.
#[derive(Debug)]
struct Outcome {
    /// The client's view: the handshake was resumed.
    resumed: bool,
    /// The server's view of the connection (its `ConnectionInfo`, reflected).
    theirs: serde_json::Value,
}

impl Clients {
    fn new(pki: &Pki) -> Self {
        let all = provider(&Group::ALL, &Algorithms::default().cipher_suites);
        let verifier: Arc<dyn ServerCertVerifier> =
            rustls::client::WebPkiServerVerifier::builder_with_provider(pki.roots(), all)
                .build()
                .unwrap();
        Self {
            verifier,
            cert: Arc::new(ClientCert(pki.client_identity().certified_key().clone())),
            store: Arc::new(ClientSessionMemoryCache::new(64)),
        }
    }

    /// One GET over a new connection offering only `groups`, resuming if the cache has a
    /// ticket. `Err` carries the error chain (a server's alert shows up on the first read:
    /// in TLS 1.3 it checks the client certificate after the client's handshake is done).
    async fn get(&self, server: &support::Server, groups: &[Group]) -> Result<Outcome, String> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider(
            groups,
            &Algorithms::default().cipher_suites,
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(self.verifier.clone())
        .with_client_cert_resolver(self.cert.clone());
        config.resumption = rustls::client::Resumption::store(self.store.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let attempt = async {
            let tcp = TcpStream::connect(server.addr).await.map_err(chain)?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .map_err(chain)?;
            let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let mut tls = tls;
            // Raw HTTP/1.1 rather than a client library: a refusal is then the alert on our
            // own read, not whichever of the write or the read a library reports first.
            let wrote = tls
                .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await;
            let mut got = Vec::new();
            let read = tls.read_to_end(&mut got).await;
            read.map_err(chain)?;
            wrote.map_err(chain)?;
            let text = String::from_utf8_lossy(&got);
            let (head, body) = text
                .split_once("\r\n\r\n")
                .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
            if !head.starts_with("HTTP/1.1 200") {
                return Err(format!("not a 200: {head}"));
            }
            let theirs = serde_json::from_str(body).map_err(chain)?;
            Ok(Outcome { resumed, theirs })
        };
        tokio::time::timeout(GUARD, attempt)
            .await
            .expect("a request hung")
    }
}

/// An error and its sources, on one line.
fn chain(e: impl std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

fn pq_preferred(sunset: Option<SystemTime>, rules: &[&str]) -> Policy {
    Policy::new(PolicyMode::PqPreferred)
        .with_sunset(sunset)
        .with_rules(rules.iter().map(|r| r.parse().unwrap()))
}

/// Waits (bounded) for the acceptor to have counted `expected` policy refusals: the peer can
/// see its alert a moment before the server counts it.
async fn refusals_reach(acceptor: &PqAcceptor, expected: u64) {
    let deadline = Instant::now() + GUARD;
    loop {
        let now = acceptor.metrics().snapshot().policy_refusals;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} policy refusals, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const GROUPS: [Group; 2] = [Group::X25519MLKEM768, Group::X25519];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_before_a_reload_adding_an_id_rule_is_refused() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new(KeyAlg::EcdsaP256);
    // Classical allowed for every dev identity, as a legacy client fleet has it.
    let server = support::Server::start(pki.mtls_server(
        &GROUPS,
        pq_preferred(None, &["allow-classical id:spiffe://mcp-pqtls.dev/*"]),
    ))
    .await;
    let clients = Clients::new(&pki);
    let first = clients.get(&server, &[Group::X25519]).await.unwrap();
    assert!(!first.resumed);
    assert_eq!(first.theirs["classical_fallback"], true, "{first:?}");
    // The ticket resumes while the policy stands (so the refusal below is the reload's).
    let again = clients.get(&server, &[Group::X25519]).await.unwrap();
    assert!(again.resumed, "{again:?}");
    assert_eq!(again.theirs["client_identity"], CLIENT_ID, "{again:?}");

    // The operator now requires pq of this very client.
    server
        .acceptor
        .replace_policy(
            &GROUPS,
            pq_preferred(
                None,
                &[
                    &format!("require-pq id:{CLIENT_ID}"),
                    "allow-classical id:spiffe://mcp-pqtls.dev/*",
                ],
            ),
        )
        .unwrap();
    let err = clients.get(&server, &[Group::X25519]).await.unwrap_err();
    assert!(err.contains("AccessDenied"), "{err}");
    refusals_reach(&server.acceptor, 1).await;
    // Over pq it is served, but on a full handshake: no ticket outlives the reload.
    let pq = clients
        .get(&server, &[Group::X25519MLKEM768])
        .await
        .unwrap();
    assert!(
        !pq.resumed,
        "a ticket from before the reload resumed: {pq:?}"
    );
    assert_eq!(server.requests(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pq_ticket_does_not_resume_into_a_classical_connection_the_sunset_refuses() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new(KeyAlg::EcdsaP256);
    // Past the sunset, only the legacy identities may still fall back to classical; the dev
    // client is not one of them.
    let sunset = SystemTime::now() - Duration::from_secs(3600);
    let server = support::Server::start(pki.mtls_server(
        &GROUPS,
        pq_preferred(
            Some(sunset),
            &["allow-classical id:spiffe://legacy.example/*"],
        ),
    ))
    .await;
    let clients = Clients::new(&pki);
    let first = clients
        .get(&server, &[Group::X25519MLKEM768])
        .await
        .unwrap();
    assert!(!first.resumed);
    let again = clients
        .get(&server, &[Group::X25519MLKEM768])
        .await
        .unwrap();
    assert!(again.resumed, "{again:?}");

    // Same client, same ticket cache, now offering only X25519: the policy refuses that.
    let err = clients.get(&server, &[Group::X25519]).await.unwrap_err();
    assert!(err.contains("AccessDenied"), "{err}");
    refusals_reach(&server.acceptor, 1).await;
    assert_eq!(server.requests(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classical_ticket_from_before_the_sunset_is_refused_after_it() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new(KeyAlg::EcdsaP256);
    // The sunset comes while the client holds its ticket (a few seconds: the handshake
    // before it takes milliseconds; the wait after it is for the clock, not a speed check).
    let sunset = SystemTime::now() + Duration::from_secs(3);
    let server = support::Server::start(pki.mtls_server(
        &GROUPS,
        pq_preferred(
            Some(sunset),
            &["allow-classical id:spiffe://legacy.example/*"],
        ),
    ))
    .await;
    let clients = Clients::new(&pki);
    let before = clients.get(&server, &[Group::X25519]).await;
    assert!(
        SystemTime::now() < sunset,
        "the first handshake took until the sunset; nothing was tested"
    );
    let before = before.unwrap();
    assert_eq!(before.theirs["classical_fallback"], true, "{before:?}");

    let wait = sunset.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    let err = clients.get(&server, &[Group::X25519]).await.unwrap_err();
    assert!(err.contains("AccessDenied"), "{err}");
    refusals_reach(&server.acceptor, 1).await;
    assert_eq!(server.requests(), 1);
    server.stop().await;
}
