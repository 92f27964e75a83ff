//! The gate in-process: a plain tower service wrapped in `GateLayer`, served by
//! `mcp_pqtls::serve` over real PQ TLS on 127.0.0.1, with no sidecar and no proxy.

mod support;

use std::convert::Infallible;
use std::future::Ready;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::gate::config::{AuditSection, AuthSection, Sections};
use mcp_pqtls::gate::{Gate, GateBody, GateConfig, GateLayer, SUBJECT_HEADER};
use mcp_pqtls::tls::ConnectionInfo;
use mcp_pqtls::{Group, PolicyMode};
use support::jwt::{jwks, keys, token, AUDIENCE, ISSUER};
use support::sidecar::audit_lines;
use support::Pki;

/// The in-process MCP server: counts what reaches it, and records the subject the gate
/// vouched for and whether it saw the TLS facts.
#[derive(Clone, Default)]
struct Mcp {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl tower_service::Service<Request<GateBody>> for Mcp {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<GateBody>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let subject = req
            .headers()
            .get(SUBJECT_HEADER)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let tls = ConnectionInfo::of(req.extensions()).is_some_and(|i| i.pq);
        self.seen.lock().unwrap().push((subject, tls));
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#;
        std::future::ready(Ok(Response::new(Full::new(Bytes::from(body)))))
    }
}

fn gate_config(dir: &Path) -> GateConfig {
    let auth = AuthSection {
        jwks_file: Some(dir.join("jwks.json")),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..AuthSection::default()
    };
    let audit = AuditSection {
        path: Some(dir.join("audit.jsonl")),
        ..AuditSection::default()
    };
    let sections = Sections {
        auth: Some(&auth),
        audit: Some(&audit),
        ..Sections::default()
    };
    GateConfig::resolve(sections, false, 1 << 20)
        .unwrap()
        .expect("sections present: the gate is on")
}

#[tokio::test]
async fn gate_layer_refuses_without_a_token_and_passes_a_valid_one_with_an_audit_record() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    std::fs::write(dir.path().join("jwks.json"), jwks(&[&k.es_jwk])).unwrap();
    let gate = Arc::new(Gate::new(gate_config(dir.path())).unwrap());
    let _refresh = gate.load_keys().await;

    let mcp = Mcp::default();
    let service = GateLayer::new(gate.clone()).layer(mcp.clone());
    let server = support::serve_in_process(&pki, service).await;
    let port = server.port;

    let connector =
        support::connector(pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let post = |token: Option<String>| {
        let mut req = Request::post(format!("https://localhost:{port}/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            // A client cannot claim a subject: the gate sets the header, or removes it.
            .header(SUBJECT_HEADER, "mallory");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        client.request(req.body(Full::new(Bytes::from(body))).unwrap())
    };

    let refused = post(None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().contains_key("www-authenticate"));
    assert_eq!(
        mcp.calls.load(Ordering::SeqCst),
        0,
        "a refused request never reaches the server"
    );

    let passed = post(Some(token("alice"))).await.unwrap();
    assert_eq!(passed.status(), StatusCode::OK);
    let body = passed.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(br#"{"jsonrpc""#), "{body:?}");
    assert_eq!(mcp.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        mcp.seen.lock().unwrap().as_slice(),
        &[("alice".to_owned(), true)],
        "the server sees the verified subject and the connection's TLS facts"
    );

    let lines = audit_lines(&dir.path().join("audit.jsonl"), 2).await;
    let refused = &lines[0];
    assert_eq!(refused["decision"], "refused");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["rule"], "auth:missing");
    let allowed = &lines[1];
    assert_eq!(allowed["decision"], "allowed");
    assert_eq!(allowed["status"], 200);
    assert_eq!(allowed["subject"], "alice");
    assert_eq!(allowed["method"], "tools/list");
    assert_eq!(allowed["tls_group"], "X25519MLKEM768");
    assert_eq!(allowed["pq"], true);

    let _ = server.stop.send(());
    server.task.await.unwrap().unwrap();
    gate.close();
}
