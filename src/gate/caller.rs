//! Who sent a request, over what: the address, the TLS identity and group, the token's
//! principal once verified, and the keys the rate limits count it under.

use std::net::SocketAddr;
use std::time::Instant;

use http::Request;

use super::audit;
use super::auth::Principal;
use super::jsonrpc::Message;
use super::rate::{self, KeyKind};
use super::rules::Summary;
use crate::tls::ConnectionInfo;

/// Who sent a request, over what.
pub(super) struct Caller {
    pub(super) addr: SocketAddr,
    pub(super) identity: Option<String>,
    pub(super) group: Option<String>,
    pub(super) pq: bool,
    /// The connection's TLS facts (a shared `Arc`, not copied per request): what approvers
    /// are shown of a held call.
    pub(super) tls: Option<std::sync::Arc<ConnectionInfo>>,
    pub(super) session_id: Option<String>,
    /// `MCP-Protocol-Version`.
    pub(super) protocol_version: Option<String>,
    /// The client's name from a 2026-07-28 request's `_meta` (audited only).
    pub(super) client_name: Option<String>,
    pub(super) http_method: String,
    pub(super) path: String,
    pub(super) principal: Option<Principal>,
    pub(super) started: Instant,
    pub(super) time: String,
    /// The address as limits count it (IPv6: its prefix).
    pub(super) addr_key: String,
    /// The source its body bytes are counted under (see [`budget`]).
    pub(super) source: std::net::IpAddr,
    /// The messages as JSON text, for an audit log with `include-bodies`.
    pub(super) texts: Vec<String>,
}

impl Caller {
    pub(super) fn new<B>(req: &Request<B>, addr: SocketAddr, ipv6_prefix: u8) -> Self {
        let info = ConnectionInfo::of(req.extensions());
        Self {
            addr_key: rate::address_key(addr.ip(), ipv6_prefix),
            source: crate::source::source_of(addr.ip(), ipv6_prefix),
            texts: Vec::new(),
            addr,
            identity: info.and_then(|i| i.client_identity.clone()),
            group: info.map(|i| i.group.clone()),
            pq: info.is_some_and(|i| i.pq),
            tls: req
                .extensions()
                .get::<std::sync::Arc<ConnectionInfo>>()
                .cloned(),
            // Streamable HTTP's header, else legacy HTTP+SSE's `?session_id=`.
            session_id: req
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .or_else(|| {
                    req.uri()
                        .query()?
                        .split('&')
                        .find_map(|p| p.strip_prefix("session_id="))
                })
                .map(str::to_owned),
            protocol_version: req
                .headers()
                .get("mcp-protocol-version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            client_name: None,
            http_method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            principal: None,
            started: Instant::now(),
            time: audit::now(),
        }
    }

    /// What the rules decide on for message `m` (none for a message without a method).
    pub(super) fn summary<'a>(&'a self, m: &'a Message) -> Option<Summary<'a>> {
        Some(Summary {
            method: m.method.as_deref()?,
            tool: m.tool(),
            group: self.group.as_deref().unwrap_or("none"),
            pq: self.pq,
            identity: self.identity.as_deref(),
            subject: self.subject(),
            scopes: self.scopes(),
        })
    }

    pub(super) fn subject(&self) -> Option<&str> {
        self.principal.as_ref().map(|p| p.subject.as_str())
    }

    pub(super) fn scopes(&self) -> &[String] {
        self.principal.as_ref().map_or(&[], |p| &p.scopes)
    }

    /// The rate-limit key: `kind`, falling back to the subject, then the address.
    pub(super) fn key(&self, kind: KeyKind) -> String {
        let ip = || format!("addr:{}", self.addr_key);
        let sub = || self.subject().map(|s| format!("sub:{s}"));
        match kind {
            KeyKind::Identity => self
                .identity
                .as_ref()
                .map(|i| format!("id:{i}"))
                .or_else(sub)
                .unwrap_or_else(ip),
            KeyKind::Subject => sub().unwrap_or_else(ip),
            KeyKind::Address => ip(),
        }
    }
}
