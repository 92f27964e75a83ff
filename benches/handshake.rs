//! What post-quantum key exchange costs, measured in memory (no sockets), like rustls's own
//! bench: full handshakes per group and certificate key algorithm, the HelloRetryRequest path,
//! resumption, our server path against plain tokio-rustls, and the policy decision.
//!
//! `benches/run` runs it and writes `benches/RESULTS.md`; `cargo test` runs each bench once
//! (criterion's test mode) so the harness cannot rot.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mcp_pqtls::certs::{DevPki, Identity, KeyAlg};
use mcp_pqtls::crypto::{provider, Algorithms, CipherSuite};
use mcp_pqtls::groups::GroupId;
use mcp_pqtls::policy::{ClientHelloSummary, FallbackRule, Policy, PolicyMode};
use mcp_pqtls::tls::{PqAcceptor, ServerTlsConfig};
use mcp_pqtls::Group;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

/// Certificate key algorithms measured: the common ones and ML-DSA-65.
const KEY_ALGS: [KeyAlg; 4] = [
    KeyAlg::EcdsaP256,
    KeyAlg::Ed25519,
    KeyAlg::Rsa2048,
    KeyAlg::MlDsa65,
];

struct Pki {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

impl Pki {
    fn new(alg: KeyAlg) -> Self {
        let pki = DevPki::generate(alg).expect("dev PKI");
        let chain = CertificateDer::pem_slice_iter(pki.server_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).expect("key");
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA"))
            .expect("CA");
        Self {
            chain,
            key,
            roots: Arc::new(roots),
        }
    }

    fn identity(&self) -> Identity {
        let schemes = Algorithms::default().signature_schemes;
        Identity::from_der(self.chain.clone(), self.key.clone_key(), &schemes, "bench")
            .expect("identity")
    }

    /// A plain rustls server offering exactly `groups`; no tickets unless asked.
    fn server(&self, groups: &[Group], tickets: usize) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(provider(groups, &CipherSuite::ALL))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .expect("server cert");
        config.send_tls13_tickets = tickets;
        if tickets > 0 {
            config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer");
        }
        Arc::new(config)
    }

    /// A rustls client offering `groups` in order (the first carries the key share).
    fn client(&self, groups: &[Group], resume: bool) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider(groups, &CipherSuite::ALL))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        if !resume {
            config.resumption = Resumption::disabled();
        }
        Arc::new(config)
    }
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("name")
}

/// Moves everything `from` has to send into `to`.
fn pump(from: &mut Connection, to: &mut Connection) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).expect("write_tls");
    }
    let mut rest = wire.as_slice();
    while !rest.is_empty() {
        to.read_tls(&mut rest).expect("read_tls");
        to.process_new_packets().expect("handshake");
    }
}

/// One complete in-memory handshake (plus the server's tickets, if any, reaching the client).
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> Connection {
    let mut c =
        Connection::from(ClientConnection::new(client.clone(), localhost()).expect("client"));
    let mut s = Connection::from(ServerConnection::new(server.clone()).expect("server"));
    while c.is_handshaking() || s.is_handshaking() {
        pump(&mut c, &mut s);
        pump(&mut s, &mut c);
    }
    c
}

fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// Full handshakes: every group × every certificate key algorithm.
fn full_handshakes(c: &mut Criterion) {
    let mut g = c.benchmark_group("full_handshake");
    for alg in KEY_ALGS {
        let pki = Pki::new(alg);
        for group in Group::ALL {
            let (client, server) = (pki.client(&[group], false), pki.server(&[group], 0));
            g.bench_function(BenchmarkId::new(group.name(), alg.name()), |b| {
                b.iter(|| handshake(&client, &server))
            });
        }
    }
    g.finish();
}

/// The HelloRetryRequest path (classical first share, server insists on pq) against a direct
/// pq handshake, and resumption with a ticket on a pq group.
fn retry_and_resumption(c: &mut Criterion) {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let pq = [Group::X25519MLKEM768];
    let mut g = c.benchmark_group("paths");
    let (direct, server) = (pki.client(&pq, false), pki.server(&pq, 0));
    g.bench_function("direct/X25519MLKEM768", |b| {
        b.iter(|| handshake(&direct, &server))
    });
    let retry = pki.client(&[Group::X25519, Group::X25519MLKEM768], false);
    g.bench_function("hello_retry/X25519MLKEM768", |b| {
        b.iter(|| handshake(&retry, &server))
    });
    let (client, server) = (pki.client(&pq, true), pki.server(&pq, 1));
    handshake(&client, &server); // the first ticket
    g.bench_function("resumed/X25519MLKEM768", |b| {
        b.iter(|| {
            let conn = handshake(&client, &server);
            debug_assert_eq!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
            conn
        })
    });
    g.finish();
}

/// Our server path (`PqAcceptor`: lazy ClientHello, policy, per-group config) against plain
/// tokio-rustls with the same group, both over an in-memory pipe on one thread.
fn our_server_path(c: &mut Criterion) {
    // Timers: the acceptor enforces its handshake timeout.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let client = tokio_rustls::TlsConnector::from(pki.client(&[Group::X25519MLKEM768], false));
    let mut config = ServerTlsConfig::new(pki.identity());
    config.algorithms.groups = vec![Group::X25519MLKEM768, Group::X25519];
    let ours = PqAcceptor::new(config).expect("acceptor");
    let plain = tokio_rustls::TlsAcceptor::from(pki.server(&[Group::X25519MLKEM768], 0));

    let mut g = c.benchmark_group("server_path");
    g.bench_function("tokio-rustls/X25519MLKEM768", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (a, z) = tokio::io::duplex(64 * 1024);
                let (s, c) = tokio::join!(plain.accept(z), client.connect(localhost(), a));
                (s.expect("server"), c.expect("client"))
            })
        })
    });
    g.bench_function("mcp-pqtls/X25519MLKEM768", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (a, z) = tokio::io::duplex(64 * 1024);
                let (s, c) = tokio::join!(ours.accept(z, peer), client.connect(localhost(), a));
                (s.expect("server"), c.expect("client"))
            })
        })
    });
    g.finish();
}

/// The policy decision for one ClientHello: must be negligible next to a handshake.
fn policy_decision(c: &mut Criterion) {
    let groups = [
        Group::X25519MLKEM768,
        Group::SecP384r1MLKEM1024,
        Group::X25519,
    ];
    let rules: Vec<FallbackRule> = [
        "allow-classical cidr:10.0.0.0/8",
        "require-pq sni:*.prod.example.com",
    ]
    .iter()
    .map(|r| r.parse().expect("rule"))
    .collect();
    let policy = Policy::new(PolicyMode::PqPreferred).with_rules(rules);
    let hello = |offered: &[Group]| ClientHelloSummary {
        sni: Some("mcp.example.com".to_owned()),
        offered_groups: offered.iter().map(|g| GroupId::from(*g)).collect(),
        alpn: vec!["h2".to_owned(), "http/1.1".to_owned()],
        peer: [192, 0, 2, 1].into(),
        time: SystemTime::now(),
    };
    let pq_client = hello(&[Group::X25519MLKEM768, Group::X25519]);
    let classical_client = hello(&[Group::X25519, Group::Secp256r1]);
    let mut g = c.benchmark_group("policy");
    g.bench_function("decide/pq_client", |b| {
        b.iter(|| policy.decide(black_box(&groups), black_box(&pq_client)))
    });
    g.bench_function("decide/classical_client_rules", |b| {
        b.iter(|| policy.decide(black_box(&groups), black_box(&classical_client)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = full_handshakes, retry_and_resumption, our_server_path, policy_decision
}
criterion_main!(benches);
