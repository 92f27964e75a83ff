//! Sidecars run in this process, and HTTPS clients for them.

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mcp_pqtls::config::{Mode, SidecarConfig};
use mcp_pqtls::sidecar::Started;
use mcp_pqtls::{Group, PolicyMode};
use tokio::sync::oneshot;

use super::upstream::get_plain;
use super::Pki;

/// A sidecar running in this process until dropped.
pub struct Running {
    pub started: Started,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn run(mode: Mode, config: SidecarConfig) -> Running {
    let sidecar = config.resolve(mode).expect("valid config");
    let (stop, stopped) = oneshot::channel::<()>();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        sidecar
            .run(
                async {
                    let _ = stopped.await;
                },
                move |s| {
                    let _ = tx.send(s.clone());
                },
            )
            .await
            .unwrap();
    });
    Running {
        started: rx.await.unwrap(),
        stop: Some(stop),
    }
}

pub fn server_config(pki: &Pki, upstream: &str) -> SidecarConfig {
    SidecarConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        upstream: Some(upstream.to_owned()),
        cert: Some(pki.path("server.pem")),
        key: Some(pki.path("server.key")),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        ..SidecarConfig::default()
    }
}

/// An HTTPS client trusting the dev CA, offering `groups` under `policy`.
pub fn tls_client(
    pki: &Pki,
    groups: &[Group],
    policy: PolicyMode,
) -> Client<mcp_pqtls::tls::PqConnector, Full<Bytes>> {
    let connector = super::connector(pki.client(groups, policy));
    Client::builder(TokioExecutor::new()).build(connector)
}

pub async fn json(res: Response<Incoming>) -> serde_json::Value {
    let body = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

pub async fn text(res: Response<Incoming>) -> String {
    String::from_utf8_lossy(&res.into_body().collect().await.unwrap().to_bytes()).into_owned()
}

pub fn https(server: &Running, path: &str) -> http::Uri {
    format!("https://localhost:{}{path}", server.started.listen.port())
        .parse()
        .unwrap()
}

pub async fn scrape(running: &Running) -> String {
    let admin = running.started.admin.expect("admin listener");
    let (status, body) = get_plain(&format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200);
    body
}

/// Waits (up to [`super::upstream::GUARD`]) until the audit file at `path` holds `n` lines;
/// returns them parsed.
pub async fn audit_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + super::upstream::GUARD;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit has {} lines, expected {n}:\n{text}",
            lines.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
