//! rmcp 3.11 on both ends of the gate, in-process: an rmcp server (a `StreamableHttpService`
//! in an axum `Router`) behind `GateLayer` with `[tools]`, served over PQ TLS by
//! `mcp_pqtls::serve`, and rmcp's client (MCP 2026-07-28 first) over reqwest with our
//! connector. rmcp lists the seed's `"pattern"` for `sku` and does not enforce it: the gate
//! does, and the upstream's own count shows what ran.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mcp_pqtls::certs::KeyAlg;
use mcp_pqtls::gate::config::{Sections, ToolsSection};
use mcp_pqtls::gate::{Gate, GateConfig, GateLayer};
use mcp_pqtls::{Group, PolicyMode};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolRequestParams, ClientConfig, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{schemars, tool, tool_handler, tool_router, ServerHandler, ServiceExt};
use support::Pki;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Sku {
    /// The stock-keeping unit.
    #[schemars(pattern(r"^[A-Z0-9-]{5,15}$"))]
    sku: String,
}

/// The upstream: one tool, and a count of its runs.
#[derive(Clone)]
struct Inventory {
    tool_router: ToolRouter<Self>,
    runs: Arc<AtomicUsize>,
}

#[tool_router]
impl Inventory {
    #[tool(description = "Inventory level for a SKU")]
    fn get_inventory_level(&self, Parameters(Sku { sku }): Parameters<Sku>) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("{sku}: 42 in stock")
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Inventory {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rmcp_client_and_server_through_a_tools_gate() {
    let pki = Pki::new(KeyAlg::EcdsaP256);
    let dir = tempfile::tempdir().unwrap();
    let tools = ToolsSection {
        pin_file: Some(dir.path().join("tools.pin.json")),
        trust_on_first_use: Some(true),
        validate_arguments: Some(true),
        ..ToolsSection::default()
    };
    let sections = Sections {
        tools: Some(&tools),
        ..Sections::default()
    };
    let config = GateConfig::resolve(sections, false, 1 << 20)
        .unwrap()
        .expect("the gate is on");
    let gate = Arc::new(Gate::new(config).unwrap());

    let runs = Arc::new(AtomicUsize::new(0));
    let upstream_runs = runs.clone();
    let mcp: StreamableHttpService<Inventory, LocalSessionManager> = StreamableHttpService::new(
        move || {
            Ok(Inventory {
                tool_router: Inventory::tool_router(),
                runs: upstream_runs.clone(),
            })
        },
        Default::default(),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", mcp);
    let server = support::serve_in_process(&pki, GateLayer::new(gate).layer(app)).await;
    let port = server.port;

    let connector =
        support::connector(pki.client(&[Group::X25519MLKEM768], PolicyMode::PqRequired));
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(connector.rustls_config())
        .build()
        .unwrap();
    let transport = StreamableHttpClientTransport::with_client(
        http,
        StreamableHttpClientTransportConfig::with_uri(format!("https://localhost:{port}/mcp")),
    );
    let client = ClientConfig::default().serve(transport).await.unwrap();
    let listed = client.list_all_tools().await.unwrap();
    let schema = serde_json::to_value(&listed[0].input_schema).unwrap();
    assert_eq!(
        schema["properties"]["sku"]["pattern"], "^[A-Z0-9-]{5,15}$",
        "{schema}"
    );

    let call = |sku: &str| {
        let mut args = serde_json::Map::new();
        args.insert("sku".into(), sku.into());
        CallToolRequestParams::new("get_inventory_level").with_arguments(args)
    };
    let ok = client.call_tool(call("AB-12345")).await.unwrap();
    let text: Vec<&str> = ok
        .content
        .iter()
        .filter_map(|c| c.as_text())
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(text, ["AB-12345: 42 in stock"]);
    let refused = client.call_tool(call("'; DROP TABLE x")).await.unwrap_err();
    let rmcp::ServiceError::McpError(e) = refused else {
        panic!("not a JSON-RPC error: {refused:?}");
    };
    assert_eq!(e.code.0, -32602, "{e:?}");
    assert!(
        e.message
            .contains(r#"/sku: "'; DROP TABLE x" does not match "^[A-Z0-9-]{5,15}$""#),
        "{e:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only the good call ran");
    // Pinned on first use; the file is written off the runtime, so it may lag a little.
    let pin_file = dir.path().join("tools.pin.json");
    let deadline = std::time::Instant::now() + support::upstream::GUARD;
    while !pin_file.exists() {
        assert!(std::time::Instant::now() < deadline, "no pin file written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pins = std::fs::read_to_string(&pin_file).unwrap();
    assert!(pins.contains("get_inventory_level"), "{pins}");

    let _ = client.cancel().await;
    let _ = server.stop.send(());
    let _ = server.task.await;
}
