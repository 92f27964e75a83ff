//! The MCP gate of the server sidecar, in-process over real sockets on 127.0.0.1: JWTs
//! signed here with keys made here (ES256, RS256, EdDSA), JWKS from a file and from a URL,
//! per-method rules, rate limits, malformed input, the audit log, and proof (the upstream's
//! request counter) that what the gate refuses never reaches the MCP server.

mod support;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::config::{Dur, Mode, SidecarConfig};
use mcp_pqtls::gate::config::{
    AuditSection, AuthSection, OneOrMany, RateLimitSection, RuleSection, ToolsSection,
};
use mcp_pqtls::gate::rate::KeyKind;
use mcp_pqtls::tls::PqConnector;
use mcp_pqtls::{Group, PolicyMode};
use serde_json::{json, Value};
use support::jwt::{b64, claims, jwks, keys, now, sign, token, with, AUDIENCE, ISSUER};
use support::process::install_config;
use support::sidecar::{
    audit_lines, https, json, run, scrape, server_config, text, tls_client, Running,
};
use support::upstream::{read_until, Upstream, GUARD};
use support::Pki;

type TlsClient = Client<PqConnector, Full<Bytes>>;

/// A JSON-RPC request.
fn rpc(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn call(id: u64, tool: &str) -> Value {
    rpc(id, "tools/call", json!({"name": tool, "arguments": {}}))
}

/// A gated server sidecar over the test upstream, with the JWKS file written beside it.
struct Gated {
    pki: Pki,
    upstream: Upstream,
    server: Running,
    dir: tempfile::TempDir,
}

impl Gated {
    async fn start(configure: impl FnOnce(&mut SidecarConfig, &Path)) -> Self {
        let pki = Pki::new(KeyAlg::EcdsaP256);
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let k = keys();
        std::fs::write(
            dir.path().join("jwks.json"),
            jwks(&[&k.es_jwk, &k.rs_jwk, &k.ed_jwk]),
        )
        .unwrap();
        // For mTLS: `client_ca = dir/ca.pem`.
        std::fs::copy(pki.path("ca.pem"), dir.path().join("ca.pem")).unwrap();
        let mut config = server_config(&pki, &upstream.url());
        configure(&mut config, dir.path());
        let server = run(Mode::Server, config).await;
        Self {
            pki,
            upstream,
            server,
            dir,
        }
    }

    fn client(&self) -> TlsClient {
        tls_client(&self.pki, &[Group::X25519MLKEM768], PolicyMode::PqRequired)
    }

    fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// POSTs `body` to `/mcp` (or `path`) with an optional bearer token and extra headers.
    async fn post(
        &self,
        client: &TlsClient,
        token: Option<&str>,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Response<Incoming> {
        let mut req = Request::post(https(&self.server, "/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap()
    }
}

fn auth_section(dir: &Path) -> AuthSection {
    AuthSection {
        jwks_file: Some(dir.join("jwks.json")),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..AuthSection::default()
    }
}

fn rule(method: Option<&str>, tool: Option<&str>) -> RuleSection {
    RuleSection {
        method: method.map(str::to_owned),
        tool: tool.map(str::to_owned),
        ..RuleSection::default()
    }
}

/// Asserts that the scraped metrics hold every one of `lines`.
fn metrics_have(metrics: &str, lines: &[&str]) {
    for line in lines {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
}

fn header(res: &Response<Incoming>, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn tokens_signed_with_es256_rs256_and_eddsa_are_accepted_and_only_the_subject_goes_upstream()
{
    let g = Gated::start(|c, dir| c.auth = Some(auth_section(dir))).await;
    let client = g.client();
    let k = keys();
    for (alg, kid, key) in [
        (Algorithm::ES256, "es", &k.es),
        (Algorithm::RS256, "rs", &k.rs),
        (Algorithm::EdDSA, "ed", &k.ed),
    ] {
        let t = sign(alg, kid, key, &claims(&format!("agent-{kid}")));
        // A client cannot pose as another subject: its own x-mcp-pqtls-* headers are dropped.
        let res = g
            .post(
                &client,
                Some(&t),
                call(1, "echo").to_string(),
                &[("x-mcp-pqtls-subject", "root")],
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK, "{alg:?}: {}", text(res).await);
        let seen = json(res).await;
        assert_eq!(
            seen["x-mcp-pqtls-subject"],
            format!("agent-{kid}"),
            "{alg:?}"
        );
        assert_eq!(seen["x-mcp-pqtls-scopes"], "mcp tools");
        assert!(
            seen.get("authorization").is_none(),
            "token forwarded: {seen}"
        );
    }
    // `aud` as an array holding this resource, and `scp` as an array, are accepted too.
    let c = json!({"iss": ISSUER, "aud": ["https://other.test", AUDIENCE], "sub": "agent-x",
        "exp": now() + 600, "scp": ["a", "b"]});
    let res = g
        .post(
            &client,
            Some(&sign(Algorithm::ES256, "es", &k.es, &c)),
            call(2, "echo").to_string(),
            &[],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json(res).await["x-mcp-pqtls-scopes"], "a b");
    assert_eq!(g.upstream.requests(), 4);
}

#[tokio::test]
async fn forward_token_sends_the_authorization_header_upstream() {
    let g = Gated::start(|c, dir| {
        c.auth = Some(AuthSection {
            forward_token: Some(true),
            ..auth_section(dir)
        })
    })
    .await;
    let t = token("agent-a");
    let seen = json(
        g.post(&g.client(), Some(&t), call(1, "echo").to_string(), &[])
            .await,
    )
    .await;
    assert_eq!(seen["authorization"], format!("Bearer {t}"));
    assert_eq!(seen["x-mcp-pqtls-subject"], "agent-a");
}

#[tokio::test]
async fn bad_tokens_get_401_with_the_reason_and_never_reach_upstream() {
    let g = Gated::start(|c, dir| c.auth = Some(auth_section(dir))).await;
    let client = g.client();
    let k = keys();
    let es = |c: Value| sign(Algorithm::ES256, "es", &k.es, &c);
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims("agent-a").to_string().as_bytes())
    );
    let hs = jsonwebtoken::encode(
        &Header {
            kid: Some("es".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("agent-a"),
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    let cases: Vec<(&str, Option<String>, &str, &str)> = vec![
        ("missing", None, "missing", "no bearer token"),
        (
            "expired",
            Some(es(with(claims("a"), "exp", json!(now() - 3600)))),
            "expired",
            "token expired",
        ),
        (
            "nbf in the future",
            Some(es(with(claims("a"), "nbf", json!(now() + 3600)))),
            "not_yet_valid",
            "not yet valid",
        ),
        (
            "wrong audience",
            Some(es(with(
                claims("a"),
                "aud",
                json!("https://other.test/mcp"),
            ))),
            "wrong_audience",
            "another audience",
        ),
        (
            "wrong issuer",
            Some(es(with(claims("a"), "iss", json!("https://evil.test")))),
            "wrong_issuer",
            "wrong issuer",
        ),
        (
            "bad signature",
            Some(sign(Algorithm::ES256, "es", &k.rogue, &claims("a"))),
            "bad_signature",
            "bad signature",
        ),
        (
            "alg none",
            Some(none),
            "algorithm_not_allowed",
            "algorithm not allowed: \"none\"",
        ),
        (
            "HS256",
            Some(hs),
            "algorithm_not_allowed",
            "algorithm not allowed: \"HS256\"",
        ),
        (
            "unknown kid",
            Some(sign(Algorithm::ES256, "nope", &k.es, &claims("a"))),
            "unknown_kid",
            "unknown signing key: \"nope\"",
        ),
        (
            "alg not the key's",
            Some(sign(Algorithm::EdDSA, "es", &k.ed, &claims("a"))),
            "algorithm_not_allowed",
            "its key is ES256",
        ),
        (
            "no sub",
            Some(es(
                json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600}),
            )),
            "missing_claim",
            "missing claim sub",
        ),
        (
            "garbage",
            Some("not.a.jwt".into()),
            "malformed",
            "malformed token",
        ),
    ];
    for (case, token, kind, reason) in &cases {
        let res = g
            .post(&client, token.as_deref(), call(1, "echo").to_string(), &[])
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{case}");
        let challenge = header(&res, "www-authenticate");
        assert!(
            challenge.ends_with(
                "resource_metadata=\"https://mcp.test/.well-known/oauth-protected-resource/mcp\""
            ),
            "{case}: {challenge}"
        );
        if *kind == "missing" {
            assert_eq!(challenge, "Bearer resource_metadata=\"https://mcp.test/.well-known/oauth-protected-resource/mcp\"");
        } else {
            assert!(
                challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
                "{case}: {challenge}"
            );
            // The challenge's quoted-string drops the quotes the reason escapes peer strings in.
            assert!(
                challenge.contains(&reason.replace('"', "")),
                "{case}: {challenge}"
            );
        }
        let body = json(res).await;
        assert!(
            body["error_description"].as_str().unwrap().contains(reason),
            "{case}: {body}"
        );
    }
    assert_eq!(
        g.upstream.requests(),
        0,
        "a refused request reached the upstream"
    );
    let m = scrape(&g.server).await;
    let kinds: Vec<String> = cases
        .iter()
        .map(|(_, _, kind, _)| format!("mcp_pqtls_gate_token_failures_total{{kind=\"{kind}\"}}"))
        .collect();
    metrics_have(&m, &kinds.iter().map(String::as_str).collect::<Vec<_>>());
    let unauthorized = format!(
        "mcp_pqtls_gate_refusals_total{{reason=\"unauthorized\"}} {}",
        cases.len()
    );
    metrics_have(
        &m,
        &[
            "mcp_pqtls_gate_token_failures_total{kind=\"algorithm_not_allowed\"} 3",
            &unauthorized,
        ],
    );
    // The process keeps serving.
    let res = g
        .post(
            &client,
            Some(&token("agent-a")),
            call(1, "echo").to_string(),
            &[],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn protected_resource_metadata_is_served_without_a_token() {
    let g = Gated::start(|c, dir| {
        c.auth = Some(AuthSection {
            required_scopes: Some(vec!["mcp".into()]),
            ..auth_section(dir)
        });
        c.rules = Some(vec![RuleSection {
            scopes: Some(vec!["admin".into()]),
            ..rule(None, Some("admin_*"))
        }]);
    })
    .await;
    let client = g.client();
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let res = client.get(https(&g.server, path)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&res, "content-type"), "application/json");
        let doc = json(res).await;
        assert_eq!(doc["resource"], AUDIENCE);
        assert_eq!(doc["authorization_servers"], json!([ISSUER]));
        assert_eq!(doc["scopes_supported"], json!(["admin", "mcp"]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    }
    assert_eq!(g.upstream.requests(), 0);
}

#[tokio::test]
async fn missing_scopes_get_403_with_a_step_up_challenge() {
    let g = Gated::start(|c, dir| {
        c.auth = Some(AuthSection {
            required_scopes: Some(vec!["mcp".into()]),
            ..auth_section(dir)
        });
        c.rules = Some(vec![RuleSection {
            name: Some("admin-tools".into()),
            scopes: Some(vec!["admin".into()]),
            ..rule(None, Some("admin_*"))
        }]);
    })
    .await;
    let client = g.client();
    // Every request needs `mcp`.
    let t = sign(
        Algorithm::ES256,
        "es",
        &keys().es,
        &with(claims("a"), "scope", json!("tools")),
    );
    let res = g
        .post(&client, Some(&t), call(1, "echo").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let challenge = header(&res, "www-authenticate");
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"mcp tools\""), "{challenge}");
    // admin_* tools need `admin` too: a JSON-RPC error the SDKs show, plus the challenge.
    let res = g
        .post(
            &client,
            Some(&token("a")),
            call(7, "admin_reset").to_string(),
            &[],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let challenge = header(&res, "www-authenticate");
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("scope=\"admin mcp tools\""),
        "{challenge}"
    );
    let err = json(res).await;
    assert_eq!(err["id"], 7);
    assert_eq!(err["error"]["code"], -32010);
    assert_eq!(
        err["error"]["message"],
        "unauthorized: rule `admin-tools` needs scope admin"
    );
    assert_eq!(
        err["error"]["data"],
        json!({"rule": "admin-tools", "reason": "scopes"})
    );
    let admin = sign(
        Algorithm::ES256,
        "es",
        &keys().es,
        &with(claims("a"), "scope", json!("mcp admin")),
    );
    let res = g
        .post(
            &client,
            Some(&admin),
            call(8, "admin_reset").to_string(),
            &[],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(g.upstream.requests(), 1);
    let m = scrape(&g.server).await;
    metrics_have(
        &m,
        &[
            "mcp_pqtls_gate_refusals_total{reason=\"insufficient_scope\"} 2",
            "mcp_pqtls_gate_rule_refusals_total{rule=\"admin-tools\"} 1",
        ],
    );
}

/// A JWKS served over plain HTTP on 127.0.0.1: its body can be changed and its fetches are
/// counted.
struct JwksServer {
    url: String,
    body: Arc<Mutex<(u16, String)>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(body: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let body = Arc::new(Mutex::new((200, body)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (b, f) = (body.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (b, f) = (b.clone(), f.clone());
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    f.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = b.lock().unwrap().clone();
                    async move {
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        *r.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc),
                );
            }
        });
        Self { url, body, fetches }
    }
}

#[tokio::test]
async fn jwks_url_is_fetched_refetched_for_a_new_kid_and_kept_when_a_refresh_fails() {
    let k = keys();
    let idp = JwksServer::start(jwks(&[&k.es_jwk])).await;
    let url = idp.url.clone();
    let g = Gated::start(move |c, _| {
        c.auth = Some(AuthSection {
            jwks_url: Some(url),
            jwks_refresh: Some(Dur(Duration::from_millis(300))),
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            ..AuthSection::default()
        })
    })
    .await;
    let client = g.client();
    let res = g
        .post(&client, Some(&token("a")), call(1, "echo").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::OK, "{}", text(res).await);
    // Key rotation: the IdP now signs with a key published after our fetch.
    *idp.body.lock().unwrap() = (200, jwks(&[&k.es_jwk, &k.ed_jwk]));
    let ed = sign(Algorithm::EdDSA, "ed", &k.ed, &claims("b"));
    let res = g
        .post(&client, Some(&ed), call(2, "echo").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::OK, "{}", text(res).await);
    // The IdP fails: the keys we have stay in use, and the failure is counted.
    *idp.body.lock().unwrap() = (500, String::new());
    let deadline = Instant::now() + GUARD;
    while !scrape(&g.server)
        .await
        .contains("mcp_pqtls_gate_jwks_refreshes_total{result=\"failed\"} 1")
    {
        assert!(Instant::now() < deadline, "no failed refresh counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = g
        .post(&client, Some(&ed), call(3, "echo").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(idp.fetches.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn require_pq_refuses_tools_call_over_a_classical_group_only() {
    let g = Gated::start(|c, _| {
        c.rules = Some(vec![RuleSection {
            name: Some("pq-calls".into()),
            require_pq: Some(true),
            ..rule(Some("tools/call"), None)
        }])
    })
    .await;
    let classical = tls_client(&g.pki, &[Group::X25519], PolicyMode::ClassicalAllowed);
    let res = g
        .post(&classical, None, call(5, "echo").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&res, "content-type"), "application/json");
    let err = json(res).await;
    assert_eq!(err["jsonrpc"], "2.0");
    assert_eq!(err["id"], 5);
    assert_eq!(err["error"]["code"], -32010);
    assert_eq!(
        err["error"]["message"],
        "unauthorized: rule `pq-calls` requires a post-quantum key exchange, this connection uses X25519"
    );
    assert_eq!(
        err["error"]["data"],
        json!({"rule": "pq-calls", "reason": "require-pq"})
    );
    assert_eq!(g.upstream.requests(), 0);
    // Other methods pass over the classical connection; tools/call passes over pq.
    let res = g
        .post(
            &classical,
            None,
            rpc(6, "tools/list", json!({})).to_string(),
            &[],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = g
        .post(&g.client(), None, call(7, "echo").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(g.upstream.requests(), 2);
    // A refused notification gets 403 without a JSON-RPC body.
    let note = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "echo"}});
    let res = g.post(&classical, None, note.to_string(), &[]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(header(&res, "content-type").starts_with("text/plain"));
    assert_eq!(g.upstream.requests(), 2);
}

#[tokio::test]
async fn tool_globs_deny_and_mtls_identities_decide_first_match_first() {
    let g = Gated::start(|c, dir| {
        c.client_ca = Some(dir.join("ca.pem"));
        c.rules = Some(vec![
            RuleSection {
                name: Some("agents-may-delete".into()),
                allow_identities: Some(vec!["spiffe://mcp-pqtls.dev/*".into()]),
                ..rule(None, Some("delete_*"))
            },
            RuleSection {
                name: Some("only-ops-drop".into()),
                allow_identities: Some(vec!["spiffe://ops.example/*".into()]),
                ..rule(None, Some("drop_*"))
            },
            RuleSection {
                name: Some("no-shell".into()),
                deny: Some(true),
                ..rule(Some("tools/*"), Some("shell*"))
            },
        ]);
    })
    .await;
    let mut with_cert = g
        .pki
        .client(&[Group::X25519MLKEM768], PolicyMode::PqRequired);
    with_cert.identity = Some(g.pki.client_identity());
    let client = Client::builder(TokioExecutor::new()).build(support::connector(with_cert));
    let res = g
        .post(&client, None, call(1, "delete_file").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = g
        .post(&client, None, call(2, "drop_table").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json(res).await["error"]["message"],
        "unauthorized: rule `only-ops-drop` does not allow client identity spiffe://mcp-pqtls.dev/client"
    );
    let res = g
        .post(&client, None, call(3, "shell_exec").to_string(), &[])
        .await;
    assert_eq!(
        json(res).await["error"]["message"],
        "unauthorized: denied by rule `no-shell`"
    );
    // Not matched by any rule: allowed.
    let res = g
        .post(&client, None, call(4, "echo").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(g.upstream.requests(), 2);
    let m = scrape(&g.server).await;
    metrics_have(
        &m,
        &[
            "mcp_pqtls_gate_rule_refusals_total{rule=\"agents-may-delete\"} 0",
            "mcp_pqtls_gate_rule_refusals_total{rule=\"only-ops-drop\"} 1",
            "mcp_pqtls_gate_rule_refusals_total{rule=\"no-shell\"} 1",
            "mcp_pqtls_gate_refusals_total{reason=\"rule\"} 2",
        ],
    );
}

#[tokio::test]
async fn mcp_method_and_name_headers_that_disagree_with_the_body_are_refused() {
    let g = Gated::start(|c, _| {
        c.rules = Some(vec![RuleSection {
            deny: Some(true),
            ..rule(None, Some("delete_*"))
        }])
    })
    .await;
    let client = g.client();
    // A header claiming a harmless tool cannot carry a denied call past the rules.
    let res = g
        .post(
            &client,
            None,
            call(1, "delete_all").to_string(),
            &[("mcp-method", "tools/call"), ("mcp-name", "echo")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let err = json(res).await;
    assert_eq!(err["error"]["code"], -32020);
    assert_eq!(
        err["error"]["message"],
        r#"Mcp-Name header says "echo" but the body names "delete_all""#
    );
    let res = g
        .post(
            &client,
            None,
            rpc(2, "tools/list", json!({})).to_string(),
            &[("mcp-method", "tools/call")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(g.upstream.requests(), 0);
    // Headers that agree pass.
    let res = g
        .post(
            &client,
            None,
            call(3, "echo").to_string(),
            &[
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
                ("mcp-protocol-version", "2026-07-28"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let m = scrape(&g.server).await;
    metrics_have(
        &m,
        &["mcp_pqtls_gate_refusals_total{reason=\"header_mismatch\"} 2"],
    );
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_per_client_and_class() {
    let g = Gated::start(|c, dir| {
        c.auth = Some(auth_section(dir));
        c.rate_limit = Some(OneOrMany(vec![
            RateLimitSection {
                name: Some("calls".into()),
                method: Some("tools/call".into()),
                key: Some(KeyKind::Subject),
                per_minute: Some(2),
                burst: Some(2),
            },
            RateLimitSection {
                name: Some("everything".into()),
                key: Some(KeyKind::Subject),
                per_minute: Some(600),
                ..RateLimitSection::default()
            },
        ]));
    })
    .await;
    let client = g.client();
    let (alice, bob) = (token("alice"), token("bob"));
    for id in 0..2 {
        let res = g
            .post(&client, Some(&alice), call(id, "echo").to_string(), &[])
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = g
        .post(&client, Some(&alice), call(3, "echo").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // 2 per minute: the next token comes within 30 s.
    let retry: u64 = header(&res, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    let err = json(res).await;
    assert_eq!(err["error"]["code"], -32011);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("rate limit `calls` reached"),
        "{err}"
    );
    assert_eq!(err["error"]["data"]["retry_after"], retry);
    // Another class, and another client, are not held back.
    let res = g
        .post(
            &client,
            Some(&alice),
            rpc(4, "tools/list", json!({})).to_string(),
            &[],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = g
        .post(&client, Some(&bob), call(5, "echo").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(g.upstream.requests(), 4);
    let m = scrape(&g.server).await;
    metrics_have(
        &m,
        &[
            "mcp_pqtls_gate_rate_limited_total{limit=\"calls\"} 1",
            "mcp_pqtls_gate_rate_limited_total{limit=\"everything\"} 0",
        ],
    );
}

#[tokio::test]
async fn malformed_oversized_and_mixed_batches_get_clear_errors_and_others_are_served() {
    let g = Gated::start(|c, _| {
        c.max_body_bytes = Some(2048);
        c.rules = Some(vec![RuleSection {
            name: Some("no-delete".into()),
            deny: Some(true),
            ..rule(None, Some("delete_*"))
        }]);
    })
    .await;
    let client = g.client();
    let res = g.post(&client, None, "{\"jsonrpc\": \"2.0\", ", &[]).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let err = json(res).await;
    assert_eq!(
        (err["id"].clone(), err["error"]["code"].clone()),
        (Value::Null, json!(-32700))
    );
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("request body is not JSON"));
    let res = g
        .post(
            &client,
            None,
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            &[],
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(res).await["error"]["code"], -32600);
    let big = call(1, &"x".repeat(4096)).to_string();
    let res = g.post(&client, None, big, &[]).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(json(res).await["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max-body-bytes (2048 bytes)"));
    // A batch with one denied call is refused whole: nothing reaches the upstream.
    let batch = json!([
        rpc(1, "tools/list", json!({})),
        call(2, "delete_file"),
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
        call(3, "echo"),
    ]);
    let res = g.post(&client, None, batch.to_string(), &[]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let answers = json(res).await;
    let answers = answers.as_array().unwrap();
    assert_eq!(
        answers.len(),
        3,
        "one answer per request, none for the notification: {answers:?}"
    );
    assert_eq!(answers[1]["id"], 2);
    assert_eq!(
        answers[1]["error"]["message"],
        "unauthorized: denied by rule `no-delete`"
    );
    for a in [&answers[0], &answers[2]] {
        assert_eq!(a["error"]["code"], -32010);
        assert_eq!(
            a["error"]["message"],
            "batch refused as a whole because of member id 2 (tools/call delete_file)"
        );
    }
    assert_eq!(g.upstream.requests(), 0);
    // The same batch without the denied call goes through, and so does a single request.
    let ok = json!([rpc(1, "tools/list", json!({})), call(3, "echo")]);
    assert_eq!(
        g.post(&client, None, ok.to_string(), &[]).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        g.post(&client, None, call(4, "echo").to_string(), &[])
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(g.upstream.requests(), 2);
    let m = scrape(&g.server).await;
    metrics_have(
        &m,
        &[
            "mcp_pqtls_gate_refusals_total{reason=\"parse_error\"} 1",
            "mcp_pqtls_gate_refusals_total{reason=\"invalid_request\"} 1",
            "mcp_pqtls_gate_refusals_total{reason=\"body_too_large\"} 1",
            "mcp_pqtls_gate_refusals_total{reason=\"rule\"} 1",
        ],
    );
}

#[tokio::test]
async fn audit_log_has_one_record_per_message_field_by_field() {
    let g = Gated::start(|c, dir| {
        c.auth = Some(auth_section(dir));
        c.rules = Some(vec![RuleSection {
            name: Some("no-delete".into()),
            deny: Some(true),
            ..rule(None, Some("delete_*"))
        }]);
        c.audit = Some(AuditSection {
            path: Some(dir.join("audit.jsonl")),
            ..AuditSection::default()
        });
    })
    .await;
    let client = g.client();
    let t = token("agent-a");
    let session = [("mcp-session-id", "s-42")];
    // Allowed, with the upstream's status (202) recorded.
    let res = g
        .post(&client, Some(&t), call(1, "echo").to_string(), &session)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let req = Request::post(https(&g.server, "/headers?status=202&session_id=legacy-7"))
        .header("authorization", format!("Bearer {t}"))
        .body(Full::new(Bytes::from(
            rpc(2, "tools/list", json!({})).to_string(),
        )))
        .unwrap();
    assert_eq!(
        client.request(req).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    // Refused by a rule, and refused for its token.
    let res = g
        .post(
            &client,
            Some(&t),
            call(3, "delete_all").to_string(),
            &session,
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = g
        .post(&client, None, call(4, "echo").to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let lines = audit_lines(&g.audit_path(), 4).await;
    let keys: Vec<&str> = lines[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "time",
        "client_identity",
        "subject",
        "client_addr",
        "tls_group",
        "pq",
        "session_id",
        "protocol_version",
        "client_name",
        "http_method",
        "path",
        "method",
        "tool",
        "jsonrpc_id",
        "decision",
        "rule",
        "reason",
        "status",
        "duration_ms",
    ];
    let mut keys_sorted = keys.clone();
    keys_sorted.sort();
    expected.sort();
    assert_eq!(keys_sorted, expected, "no body or token unless asked for");
    let allowed = &lines[0];
    assert!(
        humantime::parse_rfc3339(allowed["time"].as_str().unwrap()).is_ok(),
        "{allowed}"
    );
    assert_eq!(allowed["client_identity"], Value::Null);
    assert_eq!(allowed["subject"], "agent-a");
    assert!(allowed["client_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(allowed["tls_group"], "X25519MLKEM768");
    assert_eq!(allowed["pq"], true);
    assert_eq!(allowed["session_id"], "s-42");
    assert_eq!(allowed["http_method"], "POST");
    assert_eq!(allowed["path"], "/mcp");
    assert_eq!(allowed["method"], "tools/call");
    assert_eq!(allowed["tool"], "echo");
    assert_eq!(allowed["jsonrpc_id"], 1);
    assert_eq!(allowed["decision"], "allowed");
    assert_eq!(allowed["rule"], Value::Null);
    assert_eq!(allowed["status"], 200);
    assert!(allowed["duration_ms"].as_f64().unwrap() >= 0.0);
    let listed = &lines[1];
    assert_eq!(
        (listed["method"].clone(), listed["tool"].clone()),
        (json!("tools/list"), Value::Null)
    );
    assert_eq!(listed["status"], 202);
    assert_eq!(listed["path"], "/headers");
    assert_eq!(
        listed["session_id"], "legacy-7",
        "legacy SSE's session in the query"
    );
    let refused = &lines[2];
    assert_eq!(refused["decision"], "refused");
    assert_eq!(refused["rule"], "no-delete");
    assert_eq!(
        refused["reason"],
        "unauthorized: denied by rule `no-delete`"
    );
    assert_eq!(refused["tool"], "delete_all");
    assert_eq!(refused["status"], 403);
    let no_token = &lines[3];
    assert_eq!(no_token["decision"], "refused");
    assert_eq!(no_token["rule"], "auth:missing");
    assert_eq!(no_token["subject"], Value::Null);
    assert_eq!(
        no_token["method"],
        Value::Null,
        "the body is not read before the token"
    );
    assert_eq!(no_token["status"], 401);
    let text = std::fs::read_to_string(g.audit_path()).unwrap();
    assert!(!text.contains(&t), "a token reached the audit log");
}

#[tokio::test]
async fn audit_records_bodies_and_tokens_only_when_told() {
    let g = Gated::start(|c, dir| {
        c.auth = Some(auth_section(dir));
        c.audit = Some(AuditSection {
            path: Some(dir.join("audit.jsonl")),
            include_bodies: Some(true),
            include_tokens: Some(true),
            ..AuditSection::default()
        });
    })
    .await;
    let t = token("agent-a");
    let batch = json!([call(1, "echo"), rpc(2, "tools/list", json!({}))]);
    let res = g.post(&g.client(), Some(&t), batch.to_string(), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let lines = audit_lines(&g.audit_path(), 2).await;
    assert_eq!(lines[0]["body"], call(1, "echo"));
    assert_eq!(lines[1]["body"], rpc(2, "tools/list", json!({})));
    assert_eq!(lines[0]["token"], t);
}

#[tokio::test]
async fn streams_pass_the_gate_event_by_event() {
    let g = Gated::start(|c, dir| {
        c.auth = Some(auth_section(dir));
        c.rules = Some(vec![rule(Some("*"), None)]);
        c.audit = Some(AuditSection {
            path: Some(dir.join("audit.jsonl")),
            ..AuditSection::default()
        });
    })
    .await;
    let client = g.client();
    // A POST whose answer is an SSE stream, and the GET stream: the first event arrives
    // while the upstream still holds the second.
    let res = {
        let req = Request::post(https(&g.server, "/sse"))
            .header("authorization", format!("Bearer {}", token("a")))
            .body(Full::new(Bytes::from(call(1, "countdown").to_string())))
            .unwrap();
        client.request(req).await.unwrap()
    };
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let first = read_until(&mut body, "data: one").await;
    assert!(!first.contains("two"));
    g.upstream.release.notify_one();
    read_until(&mut body, "data: two").await;
    let res = {
        let req = Request::get(https(&g.server, "/sse"))
            .header("authorization", format!("Bearer {}", token("a")))
            .body(Full::default())
            .unwrap();
        client.request(req).await.unwrap()
    };
    let mut body = res.into_body();
    read_until(&mut body, "data: one").await;
    // The audit record was written at the response head, not at the stream's end.
    let lines = audit_lines(&g.audit_path(), 2).await;
    assert_eq!(lines[1]["http_method"], "GET");
    assert_eq!(lines[1]["method"], Value::Null);
    assert_eq!(lines[1]["status"], 200);
}

#[tokio::test]
async fn a_call_whose_client_leaves_is_still_audited_as_499() {
    // Regression: the audit record was written only when the upstream answered; a client
    // that reset or closed while its call was upstream left no record of a call that ran.
    let g = Gated::start(|c, dir| {
        c.audit = Some(AuditSection {
            path: Some(dir.join("audit.jsonl")),
            ..AuditSection::default()
        });
    })
    .await;
    let client = g.client();
    let req = Request::post(https(&g.server, "/never"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(call(7, "slow").to_string())))
        .unwrap();
    let pending = tokio::spawn(async move { client.request(req).await });
    let deadline = Instant::now() + GUARD;
    while g.upstream.requests() == 0 {
        assert!(Instant::now() < deadline, "the call never reached upstream");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The client goes away: its connection (and the request on it) is dropped.
    pending.abort();
    let lines = audit_lines(&g.audit_path(), 1).await;
    assert_eq!(lines[0]["method"], "tools/call");
    assert_eq!(lines[0]["tool"], "slow");
    assert_eq!(lines[0]["decision"], "allowed");
    assert_eq!(lines[0]["status"], 499);
}

#[tokio::test]
async fn bodies_on_methods_other_than_post_are_refused_unread() {
    let g = Gated::start(|c, _| {
        c.rules = Some(vec![RuleSection {
            deny: Some(true),
            ..rule(None, Some("shell_*"))
        }]);
    })
    .await;
    let client = g.client();
    for method in ["PUT", "PATCH", "GET"] {
        let req = Request::builder()
            .method(method)
            .uri(https(&g.server, "/mcp"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(call(1, "shell_exec").to_string())))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    assert_eq!(g.upstream.requests(), 0);
    // A bodiless GET (an SSE stream) still passes.
    let req = Request::get(https(&g.server, "/echo"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
}

/// A pin file holding `get_inventory_level`, whose `sku` is mirrored as `Mcp-Param-Sku`.
fn inventory_pins(dir: &Path) -> PathBuf {
    use mcp_pqtls::gate::tools::{PinFile, ToolDefinition};
    let list = json!({"tools": [{"name": "get_inventory_level", "inputSchema": {
        "type": "object",
        "properties": {"sku": {"type": "string", "pattern": "^[A-Z0-9-]{5,15}$", "x-mcp-header": "Sku"}},
        "required": ["sku"],
    }}]});
    let pins = PinFile::pin(&ToolDefinition::from_list_result(&list).unwrap()).unwrap();
    let path = dir.join("tools.pin.json");
    std::fs::write(&path, pins.to_json()).unwrap();
    path
}

/// `[tools]` over [`inventory_pins`], arguments validated.
fn inventory_tools(dir: &Path) -> Option<ToolsSection> {
    Some(ToolsSection {
        pin_file: Some(inventory_pins(dir)),
        validate_arguments: Some(true),
        ..ToolsSection::default()
    })
}

fn modern(method: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ]
}

/// MCP 2026-07-28 through a gate with `[tools]`: a `subscriptions/listen` POST stream and an
/// SSE `tools/list` answer (read by the gate's judge) both pass event by event; GET and DELETE
/// answered 405 by a modern-only upstream reach the client as they are; the audit records
/// carry the protocol version and no session.
#[tokio::test]
async fn the_stateless_protocol_passes_a_tools_gate_unbuffered() {
    let g = Gated::start(|c, dir| {
        c.tools = inventory_tools(dir);
        c.audit = Some(AuditSection {
            path: Some(dir.join("audit.jsonl")),
            ..AuditSection::default()
        });
    })
    .await;
    let client = g.client();
    for method in ["subscriptions/listen", "tools/list"] {
        let mut req = Request::post(https(&g.server, "/sse"));
        for (n, v) in modern(method) {
            req = req.header(n, v);
        }
        let body = rpc(
            1,
            method,
            json!({"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "test-client", "version": "1"},
            }}),
        );
        let res = client
            .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{method}");
        let mut body = res.into_body();
        // The first event arrives while the upstream still holds the second.
        let first = read_until(&mut body, "data: one").await;
        assert!(!first.contains("two"), "{method}: {first:?}");
        g.upstream.release.notify_one();
        read_until(&mut body, "data: two").await;
    }
    for method in [http::Method::GET, http::Method::DELETE] {
        let req = Request::builder()
            .method(method.clone())
            .uri(https(&g.server, "/mcp?status=405"))
            .header("mcp-protocol-version", "2026-07-28")
            .body(Full::default())
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    let lines = audit_lines(&g.audit_path(), 4).await;
    for r in &lines {
        assert_eq!(r["protocol_version"], "2026-07-28", "{r}");
        assert_eq!(r["session_id"], Value::Null, "{r}");
    }
    assert_eq!(lines[0]["method"], "subscriptions/listen");
    assert_eq!(
        lines[0]["client_name"], "test-client",
        "from _meta: {}",
        lines[0]
    );
    assert_eq!(lines[3]["status"], 405);
}

/// `Mcp-Param-*` headers (a property with `x-mcp-header`) must mirror the arguments of a
/// 2026-07-28 `tools/call`; a mismatch is -32020 and never reaches the upstream. Invalid
/// arguments are -32602 with 400 (2026-07-28) or 200 (a session protocol).
#[tokio::test]
async fn mirrored_parameters_and_arguments_are_checked_before_the_upstream() {
    let g = Gated::start(|c, dir| {
        c.tools = inventory_tools(dir);
    })
    .await;
    let client = g.client();
    let call = |sku: &str| {
        rpc(
            7,
            "tools/call",
            json!({"name": "get_inventory_level", "arguments": {"sku": sku}}),
        )
        .to_string()
    };
    let mut headers = modern("tools/call");
    headers.push(("mcp-name", "get_inventory_level"));
    let before = g.upstream.requests();
    let mut forged = headers.clone();
    forged.push(("mcp-param-sku", "ZZ-99999"));
    let res = g.post(&client, None, call("AB-12345"), &forged).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let v = json(res).await;
    assert_eq!(v["error"]["code"], -32020, "{v}");
    assert_eq!(
        v["error"]["message"],
        r#"Mcp-Param-Sku header says "ZZ-99999" but the body's "sku" argument is "AB-12345""#
    );
    let res = g.post(&client, None, call("AB-12345"), &headers).await;
    let v = json(res).await;
    assert_eq!(
        v["error"]["code"], -32020,
        "a missing mirror is a mismatch too: {v}"
    );
    assert_eq!(
        g.upstream.requests(),
        before,
        "refused calls reached the upstream"
    );
    let mut mirrored = headers.clone();
    mirrored.push(("mcp-param-sku", "AB-12345"));
    let res = g.post(&client, None, call("AB-12345"), &mirrored).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(g.upstream.requests(), before + 1);
    // Invalid: 400 for 2026-07-28, 200 for 2025-11-25; neither reaches the upstream.
    let mut bad = headers.clone();
    bad.push(("mcp-param-sku", "nope"));
    let res = g.post(&client, None, call("nope"), &bad).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let v = json(res).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert_eq!(v["id"], 7);
    let session = [
        ("mcp-protocol-version", "2025-11-25"),
        ("mcp-session-id", "s-1"),
    ];
    let res = g.post(&client, None, call("nope"), &session).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json(res).await["error"]["data"]["keyword"], "pattern");
    assert_eq!(g.upstream.requests(), before + 1);
}

/// The pins reload with the config: a file change is seen at `reload-interval`, and a call
/// the old pins refused goes through under the new ones, without a restart.
#[tokio::test]
async fn pins_reload_when_the_pin_file_changes() {
    use mcp_pqtls::gate::tools::{PinFile, ToolDefinition};
    let g = Gated::start(|c, dir| {
        c.reload_interval = Some(Dur(Duration::from_millis(100)));
        c.tools = inventory_tools(dir);
    })
    .await;
    let client = g.client();
    let body = rpc(
        1,
        "tools/call",
        json!({"name": "get_inventory_level", "arguments": {"sku": "lower-case"}}),
    )
    .to_string();
    let res = g.post(&client, None, body.clone(), &[]).await;
    assert_eq!(json(res).await["error"]["data"]["keyword"], "pattern");
    // Approved again with a looser schema, the file replaced by rename.
    let looser = json!({"tools": [{"name": "get_inventory_level", "inputSchema": {
        "type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}}]});
    let pins = PinFile::pin(&ToolDefinition::from_list_result(&looser).unwrap()).unwrap();
    install_config(&g.dir.path().join("tools.pin.json"), &pins.to_json());
    let before = g.upstream.requests();
    let deadline = Instant::now() + GUARD;
    loop {
        let res = g.post(&client, None, body.clone(), &[]).await;
        if res.status() == StatusCode::OK && g.upstream.requests() > before {
            break;
        }
        assert!(Instant::now() < deadline, "the new pins were never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
