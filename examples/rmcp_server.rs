//! An rmcp server over PQ TLS: a `StreamableHttpService` nested in an axum `Router`, served
//! by one call to [`mcp_pqtls::serve`]. Its tool `negotiated` answers with the key-exchange
//! group of the connection it was called on, read from the request's `http::request::Parts`.
//!
//! ```text
//! mcp-pqtls certs init dev-certs
//! cargo run --example rmcp_server -- dev-certs/server.pem dev-certs/server.key 127.0.0.1:8443
//! ```
//!
//! Prints `listening on https://ADDR/mcp` once bound (port 0 picks a free one), then
//! serves until Ctrl-C.

use mcp_pqtls::certs::Identity;
use mcp_pqtls::{ConnectionInfo, PqAcceptor, ServerTlsConfig};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_handler, tool_router, ServerHandler};

/// The MCP server: one tool.
#[derive(Clone)]
struct Negotiated {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Negotiated {
    fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }

    /// rmcp hands the HTTP request's parts to the tool; `serve` put the connection's
    /// `ConnectionInfo` in their extensions.
    #[tool(description = "The key-exchange group of the TLS connection this call came on")]
    fn negotiated(&self, Extension(parts): Extension<http::request::Parts>) -> String {
        match ConnectionInfo::of(&parts.extensions) {
            Some(info) => format!("group={} pq={}", info.group, info.pq),
            None => "not over TLS".to_owned(),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Negotiated {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(cert), Some(key)) = (args.next(), args.next()) else {
        return Err("usage: rmcp_server CERT KEY [ADDR]".into());
    };
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8443".to_owned());

    // pq-preferred by default: X25519MLKEM768 first, X25519 as a logged fallback.
    let acceptor = PqAcceptor::new(ServerTlsConfig::new(Identity::from_pem_files(cert, key)?))?;
    let mcp: StreamableHttpService<Negotiated, LocalSessionManager> = StreamableHttpService::new(
        || Ok(Negotiated::new()),
        Default::default(),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", mcp);

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on https://{}/mcp", listener.local_addr()?);
    mcp_pqtls::serve(listener, acceptor, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
