//! Reading an MCP request body (one JSON-RPC message or a batch) down to what the gate
//! decides on: kind, method, the tool, prompt or resource it names, and the id. Only request
//! bodies are read; responses are never looked at.

use serde_json::{Map, Value};

/// JSON-RPC 2.0 parse error: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0 invalid request: JSON, but not a JSON-RPC message (or batch of them).
pub const INVALID_REQUEST: i64 = -32600;

/// What one JSON-RPC message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Has a `method` and an `id`: expects an answer.
    Request,
    /// Has a `method`, no `id`: no answer may be sent.
    Notification,
    /// Has `result` or `error`: the client answering a server request (sampling, ...).
    Response,
}

/// One JSON-RPC message, reduced to what rules, limits and the audit log need.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Request, notification or response.
    pub kind: Kind,
    /// The `id` (requests and responses).
    pub id: Option<Value>,
    /// The `method` (requests and notifications).
    pub method: Option<String>,
    /// What the method acts on, as the 2026-07-28 `Mcp-Name` header carries it:
    /// `params.name` of `tools/call` and `prompts/get`, `params.uri` of `resources/read`,
    /// `resources/subscribe` and `resources/unsubscribe`.
    pub name: Option<String>,
    /// The message itself, kept for an audit log that records bodies.
    pub raw: Value,
}

impl Message {
    /// The tool a `tools/call` calls.
    pub fn tool(&self) -> Option<&str> {
        (self.method.as_deref() == Some("tools/call"))
            .then_some(self.name.as_deref())
            .flatten()
    }
}

/// A request body: its messages, and whether they came as a batch (a JSON array).
#[derive(Clone, Debug, PartialEq)]
pub struct Body {
    /// One for a single message; the members of a batch in order.
    pub messages: Vec<Message>,
    /// The body was a JSON array.
    pub batch: bool,
}

/// A body the gate cannot read as JSON-RPC.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all.
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not JSON-RPC 2.0.
    #[error("not a JSON-RPC 2.0 message: {0}")]
    Invalid(String),
}

impl ParseError {
    /// The JSON-RPC error code for this failure.
    pub fn code(&self) -> i64 {
        match self {
            Self::NotJson(_) => PARSE_ERROR,
            Self::Invalid(_) => INVALID_REQUEST,
        }
    }
}

/// Parses a request body. A batch with one unusable member is unusable as a whole: the
/// gate refuses a batch rather than forward part of it.
///
/// Duplicate object keys resolve to the last one, as in Python's, JavaScript's and Go's JSON
/// parsers, so the gate reads the same method and name the MCP server will; keys that
/// differ from the ones decided on only in case are refused (see `unambiguous`).
pub fn parse(bytes: &[u8]) -> Result<Body, ParseError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ParseError::NotJson(e.to_string()))?;
    match value {
        Value::Array(members) => {
            if members.is_empty() {
                return Err(ParseError::Invalid("empty batch".into()));
            }
            if members.len() > MAX_BATCH {
                return Err(ParseError::Invalid(format!(
                    "batch of {} messages; at most {MAX_BATCH} are accepted",
                    members.len()
                )));
            }
            let messages = members
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    message(m).map_err(|e| ParseError::Invalid(format!("batch member {i}: {e}")))
                })
                .collect::<Result<_, _>>()?;
            Ok(Body {
                messages,
                batch: true,
            })
        }
        other => Ok(Body {
            messages: vec![message(other).map_err(ParseError::Invalid)?],
            batch: false,
        }),
    }
}

/// Batch members accepted at most: a batch is parsed whole before any decision, and MCP
/// (2025-06-18 on) no longer sends batches at all.
pub const MAX_BATCH: usize = 256;

/// Keys the gate decides on, at the top level and in `params`.
const MESSAGE_KEYS: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];
const PARAMS_KEYS: &[&str] = &["name", "uri"];

/// Refuses a key that is not one of `keys` but folds to one of them. Go's `encoding/json`
/// (and so some MCP servers) matches keys without case and folds `ſ` to `s` and the Kelvin
/// sign to `k`: `{"method":"tools/list","Method":"tools/call"}` would be `tools/list` here
/// and `tools/call` there.
fn unambiguous(obj: &Map<String, Value>, keys: &[&str], at: &str) -> Result<(), String> {
    let fold = |k: &str| -> String {
        k.chars()
            .map(|c| match c {
                '\u{017F}' => 's',
                '\u{212A}' => 'k',
                c => c.to_ascii_lowercase(),
            })
            .collect()
    };
    for key in obj.keys() {
        if keys.contains(&key.as_str()) {
            continue;
        }
        let folded = fold(key);
        if let Some(canonical) = keys.iter().find(|k| **k == folded) {
            return Err(format!(
                "{at}key {key:?} differs from \"{canonical}\" only in case; refused, since \
                 servers that match keys without case would read it as \"{canonical}\""
            ));
        }
    }
    Ok(())
}

fn message(value: Value) -> Result<Message, String> {
    let Value::Object(obj) = &value else {
        return Err(format!("expected an object, got {}", type_name(&value)));
    };
    unambiguous(obj, MESSAGE_KEYS, "")?;
    if let Some(Value::Object(params)) = obj.get("params") {
        unambiguous(params, PARAMS_KEYS, "params: ")?;
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("\"jsonrpc\" must be \"2.0\"".into());
    }
    let id = match obj.get("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id.clone()),
        Some(other) => {
            return Err(format!(
                "\"id\" must be a string or a number, got {}",
                type_name(other)
            ))
        }
    };
    let (kind, method, name) = match obj.get("method") {
        Some(Value::String(method)) => {
            let kind = if id.is_some() {
                Kind::Request
            } else {
                Kind::Notification
            };
            (kind, Some(method.clone()), subject_of(method, obj)?)
        }
        Some(other) => {
            return Err(format!(
                "\"method\" must be a string, got {}",
                type_name(other)
            ))
        }
        None if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) => {
            (Kind::Response, None, None)
        }
        None => return Err("no \"method\" (nor a response's \"result\" or \"error\")".into()),
    };
    Ok(Message {
        kind,
        id,
        method,
        name,
        raw: value,
    })
}

/// The name a method acts on. A `tools/call` without a string name is refused here: rules
/// on tool names must not be dodged by a name the gate cannot read.
fn subject_of(method: &str, obj: &Map<String, Value>) -> Result<Option<String>, String> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        _ => return Ok(None),
    };
    match obj.get("params").and_then(|p| p.get(key)) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None if method != "tools/call" => Ok(None),
        _ => Err(format!("{method} needs a string \"params.{key}\"")),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn one(body: &str) -> Message {
        let mut b = parse(body.as_bytes()).unwrap();
        assert!(!b.batch);
        b.messages.remove(0)
    }

    #[test]
    fn reads_a_tools_call_with_its_tool_name_and_id() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_file","arguments":{}}}"#,
        );
        assert_eq!(m.kind, Kind::Request);
        assert_eq!(m.id, Some(json!(7)));
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        assert_eq!(m.tool(), Some("delete_file"));
    }

    #[test]
    fn reads_resource_uris_and_prompt_names_but_calls_neither_a_tool() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#,
        );
        assert_eq!(m.name.as_deref(), Some("file:///etc/passwd"));
        assert_eq!(m.tool(), None);
        let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}"#);
        assert_eq!(m.name.as_deref(), Some("p"));
        assert_eq!(m.tool(), None);
    }

    #[test]
    fn tells_notifications_and_responses_from_requests() {
        let n = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!((n.kind, n.id), (Kind::Notification, None));
        let r = one(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#);
        assert_eq!((r.kind, r.method), (Kind::Response, None));
    }

    #[test]
    fn reads_batches_in_order() {
        let b = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/x"}]"#).unwrap();
        assert!(b.batch);
        let methods: Vec<_> = b.messages.iter().map(|m| m.method.as_deref()).collect();
        assert_eq!(methods, [Some("tools/list"), Some("notifications/x")]);
    }

    #[test]
    fn duplicate_keys_resolve_to_the_last_as_the_server_reads_them() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","name":"delete_all"}}"#,
        );
        assert_eq!(m.tool(), Some("delete_all"));
    }

    #[test]
    fn refuses_what_is_not_json_rpc_with_the_right_code() {
        for (body, code, needle) in [
            ("{not json", PARSE_ERROR, "not JSON"),
            ("", PARSE_ERROR, "not JSON"),
            ("[]", INVALID_REQUEST, "empty batch"),
            ("42", INVALID_REQUEST, "expected an object, got a number"),
            (
                r#"{"id":1,"method":"x"}"#,
                INVALID_REQUEST,
                "\"jsonrpc\" must be \"2.0\"",
            ),
            (
                r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
                INVALID_REQUEST,
                "\"id\" must be",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
                INVALID_REQUEST,
                "\"method\" must be a string",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1}"#,
                INVALID_REQUEST,
                "no \"method\"",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_x"]}}"#,
                INVALID_REQUEST,
                "tools/call needs a string \"params.name\"",
            ),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},7]"#,
                INVALID_REQUEST,
                "batch member 1",
            ),
        ] {
            let e = parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.code(), code, "{body}: {e}");
            assert!(e.to_string().contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn keys_that_differ_only_in_case_are_refused() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"delete_all"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"METHOD":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","paramſ":{}}"#,
        ] {
            let err = parse(body.as_bytes()).unwrap_err();
            assert_eq!(err.code(), INVALID_REQUEST, "{body}");
            assert!(err.to_string().contains("only in case"), "{err}");
        }
        // Other keys are not the gate's business.
        assert!(parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping","Extra":1}"#).is_ok());
    }

    #[test]
    fn oversized_batches_are_refused() {
        let one = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let batch = |n: usize| format!("[{}]", vec![one; n].join(","));
        assert!(parse(batch(MAX_BATCH).as_bytes()).is_ok());
        let err = parse(batch(MAX_BATCH + 1).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }
}
