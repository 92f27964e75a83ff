//! Header hygiene between the client-facing hop and the upstream hop. Pure functions over
//! `HeaderMap`s, so every rule is tested without sockets.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, ORIGIN};

use crate::tls::ConnectionInfo;

/// Every header in our TLS-info namespace starts with this (header names are
/// case-insensitive; they are written here as HTTP/2 sends them).
pub const TLS_INFO_PREFIX: &str = "x-mcp-pqtls-";

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the legacy ones proxies still see). They describe
/// one connection and never cross a proxy.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const FORWARDING: [&str; 4] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Removes the hop-by-hop headers and every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes every header in our TLS-info namespace, so a peer cannot forge what we announce.
pub fn strip_tls_info(headers: &mut HeaderMap) {
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with(TLS_INFO_PREFIX))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

/// The TLS-info headers announcing `info`, in the order they are documented.
///
/// | header | value |
/// |---|---|
/// | `X-MCP-PQTLS-Group` | IANA group name, e.g. `X25519MLKEM768` |
/// | `X-MCP-PQTLS-PQ` | `true` when the group is post-quantum |
/// | `X-MCP-PQTLS-Classical-Fallback` | `true` when a `pq-preferred` policy let a classical group through |
/// | `X-MCP-PQTLS-Hello-Retry` | `true` when the handshake needed a HelloRetryRequest |
/// | `X-MCP-PQTLS-Resumed` | `true` when the session was resumed |
/// | `X-MCP-PQTLS-TLS-Version` | `TLSv1.3` |
/// | `X-MCP-PQTLS-Cipher-Suite` | IANA suite name |
/// | `X-MCP-PQTLS-Signature-Scheme` | server CertificateVerify scheme (absent when resumed) |
/// | `X-MCP-PQTLS-SNI` | server name the client asked for (absent when none) |
/// | `X-MCP-PQTLS-Client-Identity` | client certificate identity (absent without mTLS) |
pub fn tls_info(info: &ConnectionInfo) -> Vec<(HeaderName, HeaderValue)> {
    let flag = |b: bool| Some(HeaderValue::from_static(if b { "true" } else { "false" }));
    let optional = |v: &Option<String>| v.as_deref().and_then(text);
    [
        ("x-mcp-pqtls-group", text(&info.group)),
        ("x-mcp-pqtls-pq", flag(info.pq)),
        (
            "x-mcp-pqtls-classical-fallback",
            flag(info.classical_fallback),
        ),
        ("x-mcp-pqtls-hello-retry", flag(info.hello_retry)),
        ("x-mcp-pqtls-resumed", flag(info.resumed)),
        ("x-mcp-pqtls-tls-version", text(&info.tls_version)),
        ("x-mcp-pqtls-cipher-suite", text(&info.cipher_suite)),
        (
            "x-mcp-pqtls-signature-scheme",
            optional(&info.signature_scheme),
        ),
        ("x-mcp-pqtls-sni", optional(&info.sni)),
        (
            "x-mcp-pqtls-client-identity",
            optional(&info.client_identity),
        ),
    ]
    .into_iter()
    // Absent fields are left out, and so is a value that is not a valid header (a SAN with
    // control characters) rather than sent mangled.
    .filter_map(|(n, v)| Some((HeaderName::from_static(n), v?)))
    .collect()
}

fn text(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// What happens to `Forwarded` and `X-Forwarded-*` on the way upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedMode {
    /// Drop what the client sent and set `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded`
    /// from what this hop saw. Right when the sidecar faces clients directly.
    #[default]
    Replace,
    /// Keep what the client sent and append this hop: right behind a trusted load balancer.
    Append,
    /// Drop them all and add nothing.
    Strip,
}

crate::value::keywords!(ForwardedMode { Replace => "replace", Append => "append", Strip => "strip" });

/// The client as this hop saw it, for the forwarding headers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Hop<'a> {
    /// The client's address.
    pub peer: IpAddr,
    /// `https` or `http`: how the client reached us.
    pub proto: &'static str,
    /// The `Host` (or `:authority`) the client asked for.
    pub host: Option<&'a str>,
}

/// Applies `mode` to the forwarding headers.
pub fn forwarded(headers: &mut HeaderMap, mode: ForwardedMode, hop: &Hop<'_>) {
    let for_node = match hop.peer {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let mut element = format!("for={for_node};proto={}", hop.proto);
    if let Some(h) = hop.host {
        // A quoted-string (RFC 7239): the client's Host must not break out of it.
        let h = h.replace('\\', "\\\\").replace('"', "\\\"");
        element.push_str(&format!(";host=\"{h}\""));
    }
    match mode {
        ForwardedMode::Strip | ForwardedMode::Replace => {
            for n in FORWARDING {
                headers.remove(n);
            }
            if mode == ForwardedMode::Strip {
                return;
            }
            set(headers, "x-forwarded-for", &hop.peer.to_string());
            set(headers, "x-forwarded-proto", hop.proto);
            if let Some(h) = hop.host {
                set(headers, "x-forwarded-host", h);
            }
            set(headers, "forwarded", &element);
        }
        ForwardedMode::Append => {
            append_list(headers, "x-forwarded-for", &hop.peer.to_string());
            append_list(headers, "forwarded", &element);
            if !headers.contains_key("x-forwarded-proto") {
                set(headers, "x-forwarded-proto", hop.proto);
            }
            if let (false, Some(h)) = (headers.contains_key("x-forwarded-host"), hop.host) {
                set(headers, "x-forwarded-host", h);
            }
        }
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Appends `item` to a comma-separated list header, folding repeated fields into one.
fn append_list(headers: &mut HeaderMap, name: &'static str, item: &str) {
    let mut items: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    items.push(item.to_owned());
    set(headers, name, &items.join(", "));
}

/// The origins a browser-borne request may come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginAllowList(Vec<String>);

impl OriginAllowList {
    /// `*` allows any origin; otherwise origins match exactly (scheme, host and port),
    /// case-insensitively, ignoring one trailing `/`.
    pub fn new(origins: impl IntoIterator<Item = String>) -> Self {
        Self(
            origins
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        )
    }

    /// Checks the request's `Origin`. No `Origin` (not a browser) passes; a present one must
    /// be on the list. The error is the refused origin, for the 403 body and the log.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(());
        };
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let normalized = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.0.iter().any(|o| o == "*" || *o == normalized) {
            Ok(())
        } else {
            Err(origin)
        }
    }
}

/// What reaches upstream of an (allowed) `Origin`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginMode {
    /// Replace it with the upstream's own origin, which a loopback MCP server's
    /// DNS-rebinding protection accepts.
    #[default]
    Rewrite,
    /// Remove it.
    Strip,
    /// Pass it through unchanged.
    Preserve,
}

crate::value::keywords!(OriginMode { Rewrite => "rewrite", Strip => "strip", Preserve => "preserve" });

/// Sets `Host` (to `host`: the upstream's authority, or the client's when preserved) and
/// `Origin` for the upstream hop.
pub fn upstream_host_origin(
    headers: &mut HeaderMap,
    host: &str,
    upstream_origin: &str,
    origin: OriginMode,
) {
    set(headers, "host", host);
    if headers.contains_key(ORIGIN) {
        match origin {
            OriginMode::Rewrite => set(headers, "origin", upstream_origin),
            OriginMode::Strip => {
                headers.remove(ORIGIN);
            }
            OriginMode::Preserve => {}
        }
    }
}

/// A header map from name/value pairs, for tests.
#[cfg(test)]
pub(crate) fn test_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        test_map(pairs)
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("mcp-session-id", "abc"),
            ("mcp-protocol-version", "2025-06-18"),
            ("last-event-id", "7"),
            ("accept", "application/json, text/event-stream"),
        ]);
        remove_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "accept",
                "last-event-id",
                "mcp-protocol-version",
                "mcp-session-id"
            ]
        );
    }

    #[test]
    fn forged_tls_info_is_stripped_whatever_its_case() {
        let mut h = map(&[
            ("X-MCP-PQTLS-Group", "X25519MLKEM768"),
            ("x-mcp-pqtls-pq", "true"),
            ("X-Mcp-Pqtls-Client-Identity", "spiffe://admin"),
            ("x-mcp-pqtlsish", "kept"),
        ]);
        strip_tls_info(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-mcp-pqtlsish"]
        );
    }

    #[test]
    fn forwarded_modes() {
        let hop = Hop {
            peer: "2001:db8::1".parse().unwrap(),
            proto: "https",
            host: Some("mcp.example.com"),
        };
        let sent = [
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-proto", "http"),
        ];

        let mut h = map(&sent);
        forwarded(&mut h, ForwardedMode::Replace, &hop);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "mcp.example.com");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";proto=https;host=\"mcp.example.com\""
        );

        let mut h = map(&sent);
        forwarded(&mut h, ForwardedMode::Append, &hop);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h["forwarded"]
            .to_str()
            .unwrap()
            .starts_with("for=6.6.6.6, for=\"[2001:db8::1]\""));

        let mut h = map(&sent);
        forwarded(&mut h, ForwardedMode::Strip, &hop);
        assert!(h.is_empty());
    }

    #[test]
    fn origin_allow_list() {
        let list = OriginAllowList::new(["https://app.example.com/".to_owned()]);
        assert_eq!(list.check(&map(&[])), Ok(()));
        assert_eq!(
            list.check(&map(&[("origin", "HTTPS://APP.example.com")])),
            Ok(())
        );
        assert_eq!(
            list.check(&map(&[("origin", "https://evil.example")])),
            Err("https://evil.example".to_owned())
        );
        assert_eq!(
            list.check(&map(&[("origin", "https://app.example.com:8443")])),
            Err("https://app.example.com:8443".to_owned())
        );
        let empty = OriginAllowList::default();
        assert!(empty.check(&map(&[("origin", "null")])).is_err());
        let any = OriginAllowList::new(["*".to_owned()]);
        assert_eq!(any.check(&map(&[("origin", "https://x")])), Ok(()));
    }

    #[test]
    fn host_and_origin_upstream() {
        let start = [
            ("host", "mcp.example.com"),
            ("origin", "https://app.example.com"),
        ];
        let mut h = map(&start);
        upstream_host_origin(
            &mut h,
            "127.0.0.1:8000",
            "http://127.0.0.1:8000",
            OriginMode::Rewrite,
        );
        assert_eq!(h["host"], "127.0.0.1:8000");
        assert_eq!(h["origin"], "http://127.0.0.1:8000");

        let mut h = map(&start);
        upstream_host_origin(&mut h, "mcp.example.com", "", OriginMode::Strip);
        assert_eq!(h["host"], "mcp.example.com");
        assert!(!h.contains_key("origin"));

        let mut h = map(&start);
        upstream_host_origin(&mut h, "u:1", "http://u:1", OriginMode::Preserve);
        assert_eq!(h["origin"], "https://app.example.com");

        // No Origin sent: none invented.
        let mut h = map(&[]);
        upstream_host_origin(&mut h, "u:1", "http://u:1", OriginMode::Rewrite);
        assert!(!h.contains_key("origin"));
        assert_eq!(h["host"], "u:1");
    }
}
