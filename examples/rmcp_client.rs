//! An rmcp client that will only speak post-quantum key exchange: rmcp's reqwest
//! `StreamableHttpClientTransport`, with reqwest built from the rustls config of a
//! `pq-required` [`mcp_pqtls::PqConnector`]. Calls the `negotiated` tool of
//! `examples/rmcp_server.rs` and prints what it answered.
//!
//! ```text
//! cargo run --example rmcp_client -- https://localhost:8443/mcp dev-certs/ca.pem
//! ```
//!
//! The server's side of the proof is the tool's answer: reqwest does not show the client
//! the TLS session (see [`mcp_pqtls::PqConnector::rustls_config`]), but `pq-required`
//! offered only post-quantum groups, so no other handshake could have completed.

use std::sync::Arc;

use mcp_pqtls::tls::Trust;
use mcp_pqtls::{ClientTlsConfig, PqConnector};
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(ca)) = (args.next(), args.next()) else {
        return Err("usage: rmcp_client URL CA_PEM".into());
    };

    // pq-required is the client default; trust only the given CA.
    let roots = mcp_pqtls::certs::load_roots(ca.as_ref())?;
    let mut config = ClientTlsConfig::default();
    config.trust = Trust::Roots(Arc::new(roots));
    let connector = PqConnector::new(config)?;
    println!(
        "offering: {}",
        mcp_pqtls::groups::display_list(connector.offered_groups())
    );

    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(connector.rustls_config())
        .build()?;
    let transport = StreamableHttpClientTransport::with_client(
        http,
        StreamableHttpClientTransportConfig::with_uri(url),
    );
    let client = ClientConfig::default().serve(transport).await?;
    let result = client
        .call_tool(CallToolRequestParams::new("negotiated"))
        .await?;
    for text in result.content.iter().filter_map(|c| c.as_text()) {
        println!("server saw: {}", text.text);
    }
    client.cancel().await?;
    Ok(())
}
