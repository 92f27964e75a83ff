//! `demo`: the whole thing on one machine in one command. Makes dev certificates, starts a
//! `pq-preferred` reflect server on 127.0.0.1, and connects twice: a default (pq-required)
//! client, then a classical-only one to show that fallback is visible.

use std::io::Write;
use std::sync::Arc;

use crate::certs::{write_dev_pki, KeyAlg};
use crate::config::{ClientOptions, ServerOptions};
use crate::groups::{Group, GroupList};
use crate::PolicyMode;

/// Runs the demo, writing what both sides saw to `out`.
pub async fn run(
    key_alg: KeyAlg,
    out: &mut (dyn Write + Send),
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = std::env::temp_dir().join(format!("mcp-pqtls-demo-{}", std::process::id()));
    write_dev_pki(&dir, key_alg)?;
    let server = ServerOptions {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        ..ServerOptions::default()
    };
    let acceptor = Arc::new(server.build()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(crate::reflect(listener, acceptor.clone(), stopped));
    writeln!(out, "dev certificates ({key_alg}) in {}", dir.display())?;
    writeln!(
        out,
        "reflect server on https://{addr}/ (policy pq-preferred, groups {})",
        crate::groups::display_list(acceptor.groups())
    )?;

    for (title, policy, groups) in [
        (
            "client: pq-required, default groups",
            PolicyMode::PqRequired,
            None,
        ),
        (
            "client: classical only (X25519)",
            PolicyMode::ClassicalAllowed,
            Some(GroupList(vec![Group::X25519])),
        ),
    ] {
        let client = ClientOptions {
            ca: Some(dir.join("ca.pem")),
            policy: Some(policy),
            groups,
            ..ClientOptions::default()
        }
        .build()?;
        let url = format!("https://localhost:{}/", addr.port()).parse()?;
        let fetched = crate::get(&client, url).await?;
        writeln!(out, "\n== {title}")?;
        writeln!(
            out,
            "-- what the client negotiated:\n{}",
            serde_json::to_string_pretty(&*fetched.info)?
        )?;
        writeln!(
            out,
            "-- what the server saw (reflected):\n{}",
            String::from_utf8_lossy(&fetched.body).trim_end()
        )?;
    }
    let m = acceptor.metrics().snapshot();
    writeln!(out, "\nserver counters: {}", serde_json::to_string(&m)?)?;
    let _ = stop.send(());
    server_task.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
