//! The MCP header checks: `Mcp-Method`/`Mcp-Name` must agree with the body they describe
//! (MCP 2026-07-28), and which requests may pass with a body unread.

use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request};

use super::jsonrpc::Body;

/// A POST, or a request without a body of one of the methods MCP uses besides POST (GET
/// opens a stream, DELETE ends a session; HEAD and OPTIONS for probes and CORS preflight).
pub(super) fn bodiless_or_post<B: hyper::body::Body>(req: &Request<B>) -> bool {
    let m = req.method();
    if m == Method::POST {
        return true;
    }
    let known = [Method::GET, Method::DELETE, Method::HEAD, Method::OPTIONS].contains(m);
    // The size hint is exact for Content-Length and for an h2 stream that ended with its
    // headers; a chunked HTTP/1.1 body has no upper bound.
    known && req.body().size_hint().upper() == Some(0)
}

/// Why `Mcp-Method`/`Mcp-Name` disagree with the body, if they do. The body decides; the
/// headers are only checked, so a rule cannot be dodged by a header.
pub(crate) fn header_mismatch(headers: &HeaderMap, body: &Body) -> Option<String> {
    let read = |name: &str| -> Result<Option<String>, String> {
        let mut values = headers.get_all(name).iter();
        let Some(v) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(format!("more than one {name} header"));
        }
        header_text(v)
            .map(Some)
            .ok_or_else(|| format!("{name} header is not readable text"))
    };
    let (method, name) = match (read("mcp-method"), read("mcp-name")) {
        (Ok(m), Ok(n)) => (m, n),
        (Err(e), _) | (_, Err(e)) => return Some(e),
    };
    if method.is_none() && name.is_none() {
        return None;
    }
    if body.batch {
        return Some(
            "Mcp-Method/Mcp-Name headers describe one message, but the body is a batch".into(),
        );
    }
    let m = &body.messages[0];
    // Peer strings, quoted and escaped: the message reaches a log line.
    let shown = |v: &Option<String>| {
        v.as_deref()
            .map_or_else(|| "none".to_owned(), |s| format!("{s:?}"))
    };
    if let Some(h) = &method {
        if m.method.as_deref() != Some(h) {
            return Some(format!(
                "Mcp-Method header says {h:?} but the body's method is {}",
                shown(&m.method)
            ));
        }
    }
    if let Some(h) = &name {
        if m.name.as_deref() != Some(h) {
            return Some(format!(
                "Mcp-Name header says {h:?} but the body names {}",
                shown(&m.name)
            ));
        }
    }
    None
}

/// Why the `Mcp-Param-*` headers of a `tools/call` disagree with its `arguments`, if they do:
/// each property of `schema` reached by a chain of `properties` whose schema carries
/// `x-mcp-header: TOKEN` is mirrored as `Mcp-Param-TOKEN` (a string as it is, a boolean as
/// `true`/`false`, a number as its JSON text), present exactly when the argument is.
pub(super) fn param_mismatch(
    headers: &HeaderMap,
    schema: &serde_json::Value,
    arguments: Option<&serde_json::Value>,
) -> Option<String> {
    use serde_json::Value;
    let mut stack: Vec<(Vec<&str>, &Value)> = vec![(Vec::new(), schema)];
    while let Some((path, s)) = stack.pop() {
        if let (false, Some(token)) = (
            path.is_empty(),
            s.get("x-mcp-header").and_then(Value::as_str),
        ) {
            let name = format!("mcp-param-{token}");
            let value = path.iter().try_fold(arguments?, |node, key| node.get(key));
            let rendered = match value {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => None,
            };
            let mut values = headers.get_all(name.as_str()).iter();
            let header = values.next();
            if values.next().is_some() {
                return Some(format!("more than one Mcp-Param-{token} header"));
            }
            let header = header.map(|h| header_text(h).ok_or(()));
            let at = path.join(".");
            match (header, rendered) {
                (None, None) => {}
                (Some(Err(())), _) => {
                    return Some(format!("Mcp-Param-{token} header is not readable text"))
                }
                (None, Some(_)) => {
                    return Some(format!(
                    "Mcp-Param-{token} header is missing but the body's {at:?} argument is present"
                ))
                }
                (Some(Ok(h)), None) => {
                    return Some(format!(
                        "Mcp-Param-{token} header says {h:?} but the body has no {at:?} argument"
                    ))
                }
                (Some(Ok(h)), Some(v)) if h != v => {
                    return Some(format!(
                    "Mcp-Param-{token} header says {h:?} but the body's {at:?} argument is {v:?}"
                ))
                }
                (Some(Ok(_)), Some(_)) => {}
            }
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, child) in props {
                let mut p = path.clone();
                p.push(k);
                stack.push((p, child));
            }
        }
    }
    None
}

/// The first protocol revision without sessions: its requests carry `_meta` and mirrored
/// headers, and its servers answer -32602 with 400.
const STATELESS_REVISION: &str = "2026-07-28";

/// Whether the request is of MCP 2026-07-28 or later (by its `MCP-Protocol-Version`).
pub(super) fn stateless(headers: &HeaderMap) -> bool {
    let version = headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Revisions are dates: later ones sort after.
    version.len() == STATELESS_REVISION.len() && version >= STATELESS_REVISION
}

/// The client's name a 2026-07-28 request carries in place of a session: `params._meta`'s
/// `io.modelcontextprotocol/clientInfo.name` (of a batch's first message), at most 256
/// characters.
pub(super) fn client_name(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let m = match &v {
        serde_json::Value::Array(items) => items.first()?,
        m => m,
    };
    let name = m
        .get("params")?
        .get("_meta")?
        .get("io.modelcontextprotocol/clientInfo")?
        .get("name")?
        .as_str()?;
    Some(name.chars().take(256).collect())
}

/// A header's text; MCP 2026-07-28 carries values that are not plain ASCII as
/// `=?base64?...?=`.
fn header_text(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    match s
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()
        }
        None => Some(s.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::jsonrpc;

    fn body(s: &str) -> Body {
        jsonrpc::parse(s.as_bytes()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        crate::proxy::headers::test_map(pairs)
    }

    #[test]
    fn mcp_method_and_name_headers_must_agree_with_the_body() {
        let call = body(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}}"#,
        );
        assert_eq!(header_mismatch(&headers(&[]), &call), None);
        assert_eq!(
            header_mismatch(
                &headers(&[("mcp-method", "tools/call"), ("mcp-name", "delete_all")]),
                &call
            ),
            None
        );
        let e = header_mismatch(
            &headers(&[("mcp-method", "tools/call"), ("mcp-name", "echo")]),
            &call,
        )
        .unwrap();
        assert_eq!(
            e,
            r#"Mcp-Name header says "echo" but the body names "delete_all""#
        );
        let e = header_mismatch(&headers(&[("mcp-method", "tools/list")]), &call).unwrap();
        assert!(
            e.contains(r#"says "tools/list" but the body's method is "tools/call""#),
            "{e}"
        );
        // A forged line in a method name stays one quoted string.
        let forged =
            body(r#"{"jsonrpc":"2.0","id":1,"method":"x\n2026-12-01T00:00:00Z  INFO forged"}"#);
        let e = header_mismatch(&headers(&[("mcp-method", "y")]), &forged).unwrap();
        assert!(!e.contains('\n') && e.contains(r#""x\n2026"#), "{e}");
        let e =
            header_mismatch(&headers(&[("mcp-method", "a"), ("mcp-method", "b")]), &call).unwrap();
        assert_eq!(e, "more than one mcp-method header");
        let batch = body(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#);
        assert!(
            header_mismatch(&headers(&[("mcp-method", "tools/list")]), &batch)
                .unwrap()
                .contains("batch")
        );
        // Non-ASCII names travel base64-encoded.
        let uni =
            body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"café"}}"#);
        let b64 = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("café")
        );
        assert_eq!(header_mismatch(&headers(&[("mcp-name", &b64)]), &uni), None);
    }

    #[test]
    fn mcp_param_headers_must_mirror_their_arguments() {
        let schema = serde_json::json!({"type": "object", "properties": {
            "sku": {"type": "string", "x-mcp-header": "Sku"},
            "opts": {"type": "object", "properties": {"dry": {"type": "boolean", "x-mcp-header": "Dry"}}},
            "n": {"type": "integer"},
        }});
        let args = serde_json::json!({"sku": "AB-12345", "opts": {"dry": true}, "n": 3});
        let check = |pairs: &[(&str, &str)], a: &serde_json::Value| {
            param_mismatch(&headers(pairs), &schema, Some(a))
        };
        assert_eq!(
            check(
                &[("mcp-param-sku", "AB-12345"), ("mcp-param-dry", "true")],
                &args
            ),
            None
        );
        assert_eq!(
            check(
                &[("mcp-param-sku", "AB-99999"), ("mcp-param-dry", "true")],
                &args
            )
            .unwrap(),
            r#"Mcp-Param-Sku header says "AB-99999" but the body's "sku" argument is "AB-12345""#
        );
        assert_eq!(
            check(&[("mcp-param-sku", "AB-12345")], &args).unwrap(),
            r#"Mcp-Param-Dry header is missing but the body's "opts.dry" argument is present"#
        );
        let none = serde_json::json!({});
        assert!(check(&[("mcp-param-sku", "AB-12345")], &none)
            .unwrap()
            .contains("has no \"sku\" argument"));
        assert_eq!(check(&[], &none), None);
    }
}
