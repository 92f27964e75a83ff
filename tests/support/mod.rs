//! Test helpers: dev PKIs, a reflect server on 127.0.0.1 with a request counter, clients.
#![allow(dead_code)] // Each test binary uses a different subset.

pub mod admin;
pub mod jwt;
pub mod openssl;
pub mod process;
pub mod python;
pub mod sidecar;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use mcp_pqtls::certs::{load_roots, DevPki, Identity, KeyAlg};
use mcp_pqtls::crypto::Algorithms;
use mcp_pqtls::policy::{Policy, PolicyMode};
use mcp_pqtls::tls::{
    ClientAuth, ClientError, ClientTlsConfig, ConnectionInfo, PqAcceptor, PqConnector,
    ServerTlsConfig, Trust,
};
use mcp_pqtls::{Fetched, Group};

/// A dev PKI written to a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub pki: DevPki,
}

impl Pki {
    pub fn new(alg: KeyAlg) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = mcp_pqtls::certs::write_dev_pki(dir.path(), alg).unwrap();
        Self { dir, pki }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn server_identity(&self) -> Identity {
        Identity::load(
            &self.path("server.pem"),
            &self.path("server.key"),
            &Algorithms::default().signature_schemes,
        )
        .unwrap()
    }

    pub fn client_identity(&self) -> Identity {
        Identity::load(
            &self.path("client.pem"),
            &self.path("client.key"),
            &Algorithms::default().signature_schemes,
        )
        .unwrap()
    }

    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        Arc::new(load_roots(&self.path("ca.pem")).unwrap())
    }

    /// A server config with these groups and policy.
    pub fn server(&self, groups: &[Group], policy: Policy) -> ServerTlsConfig {
        let mut c = ServerTlsConfig::new(self.server_identity());
        c.algorithms.groups = groups.to_vec();
        c.policy = policy;
        c
    }

    /// A server config that requires client certificates from this PKI.
    pub fn mtls_server(&self, groups: &[Group], policy: Policy) -> ServerTlsConfig {
        let mut c = self.server(groups, policy);
        c.client_auth = ClientAuth::Required(self.roots());
        c
    }

    /// A client trusting this PKI's CA.
    pub fn client(&self, groups: &[Group], policy: PolicyMode) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::default();
        c.algorithms = Algorithms::default();
        c.algorithms.groups = groups.to_vec();
        c.policy = policy;
        c.trust = Trust::Roots(self.roots());
        c
    }
}

/// A reflect server on 127.0.0.1 that counts the requests its service saw.
pub struct Server {
    pub addr: SocketAddr,
    pub acceptor: PqAcceptor,
    pub requests: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(config: ServerTlsConfig) -> Self {
        let acceptor = PqAcceptor::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        let service = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            seen.fetch_add(1, Ordering::SeqCst);
            let info = ConnectionInfo::of(req.extensions()).cloned();
            async move {
                let body = serde_json::to_vec(&info).unwrap();
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(mcp_pqtls::serve(
            listener,
            acceptor.clone(),
            service,
            stopped,
        ));
        Self {
            addr,
            acceptor,
            requests,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> http::Uri {
        format!("https://localhost:{}/", self.addr.port())
            .parse()
            .unwrap()
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// GETs the server's URL; returns our side's info and the server's (reflected) info.
pub async fn fetch(
    client: &PqConnector,
    server: &Server,
) -> Result<(ConnectionInfo, serde_json::Value), ClientError> {
    let Fetched {
        info, status, body, ..
    } = mcp_pqtls::get(client, server.url()).await?;
    assert!(status.is_success(), "HTTP {status}");
    Ok(((*info).clone(), serde_json::from_slice(&body).unwrap()))
}

pub fn connector(config: ClientTlsConfig) -> PqConnector {
    PqConnector::new(config).unwrap()
}

/// A service served in-process by `mcp_pqtls::serve` (see [`serve_in_process`]).
pub struct InProcess {
    pub port: u16,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// `service` served by `mcp_pqtls::serve` over PQ TLS (X25519MLKEM768 only, pq-required) on a
/// free port of 127.0.0.1, with `pki`'s server identity.
pub async fn serve_in_process<S, B>(pki: &Pki, service: S) -> InProcess
where
    S: tower_service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = pki.server(
        &[Group::X25519MLKEM768],
        Policy::new(PolicyMode::PqRequired),
    );
    let acceptor = mcp_pqtls::tls::PqAcceptor::new(tls).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(mcp_pqtls::serve(listener, acceptor, service, async {
        let _ = stopped.await;
    }));
    InProcess { port, stop, task }
}

/// A child process killed and reaped on drop, so a failing assertion leaves nothing behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on 127.0.0.1 a moment ago (for a process that must bind a known port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process's resident memory (KiB) and open file descriptors, from `/proc`.
pub fn proc_usage(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}
