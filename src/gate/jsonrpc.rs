//! Reading an MCP request body (one JSON-RPC message or a batch) down to what the gate
//! decides on: kind, method, the tool, prompt or resource it names, and the id. Only request
//! bodies are read; responses are never looked at.
//!
//! The body is walked once by serde without building a `serde_json::Value`: `params`,
//! `result` and every other value are skipped (checked as JSON, not kept), so a large body
//! costs its bytes and a few small strings, not the ~16x of a tree of values.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// JSON-RPC 2.0 parse error: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0 invalid request: JSON, but not a JSON-RPC message (or batch of them).
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC 2.0: invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC 2.0: internal error.
pub const INTERNAL_ERROR: i64 = -32603;

/// What one JSON-RPC message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
pub struct Message {
    /// Request, notification or response.
    pub kind: Kind,
    /// The `id` (requests and responses): a string, a number or null.
    pub id: Option<Value>,
    /// The `method` (requests and notifications).
    pub method: Option<String>,
    /// What the method acts on, as the 2026-07-28 `Mcp-Name` header carries it:
    /// `params.name` of `tools/call` and `prompts/get`, `params.uri` of `resources/read`,
    /// `resources/subscribe` and `resources/unsubscribe`.
    pub name: Option<String>,
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
#[non_exhaustive]
pub struct Body {
    /// One for a single message; the members of a batch in order.
    pub messages: Vec<Message>,
    /// The body was a JSON array.
    pub batch: bool,
}

/// A body the gate cannot read as JSON-RPC.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
/// differ from the ones decided on only in case are refused (see `collision`).
pub fn parse(bytes: &[u8]) -> Result<Body, ParseError> {
    // The values skipped unread below are not checked for UTF-8 by serde_json; JSON text
    // must be UTF-8 whole (RFC 8259 section 8.1), as the old whole-`Value` reader required.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ParseError::NotJson(format!("the body is not UTF-8: {e}")))?;
    let top: Top = serde_json::from_str(text).map_err(|e| ParseError::NotJson(e.to_string()))?;
    match top {
        Top::Batch(members, count) => {
            if count == 0 {
                return Err(ParseError::Invalid("empty batch".into()));
            }
            if count > MAX_BATCH {
                return Err(ParseError::Invalid(format!(
                    "batch of {count} messages; at most {MAX_BATCH} are accepted"
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
        Top::One(m) => Ok(Body {
            messages: vec![message(m).map_err(ParseError::Invalid)?],
            batch: false,
        }),
    }
}

/// The messages of a body [`parse`] accepted, as compact JSON text (whitespace outside
/// strings removed, keys as sent), one per message: what an audit log with
/// `include-bodies` records, without a tree of values per message.
pub fn message_texts(bytes: &[u8], batch: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            cur.push(b);
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if batch && depth == 1 {
                    continue;
                }
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if batch && depth == 0 {
                    continue;
                }
            }
            b',' if batch && depth == 1 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(b);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.into_iter()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .collect()
}

/// Batch members accepted at most: a batch is parsed whole before any decision, and MCP
/// (2025-06-18 on) no longer sends batches at all.
pub const MAX_BATCH: usize = 256;

/// Keys the gate decides on, at the top level and in `params`.
const MESSAGE_KEYS: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];
const PARAMS_KEYS: &[&str] = &["name", "uri"];

/// Why `key`, not one of `keys`, is refused: it folds to one of them. Go's `encoding/json`
/// (and so some MCP servers) matches keys without case and folds `ſ` to `s` and the Kelvin
/// sign to `k`: `{"method":"tools/list","Method":"tools/call"}` would be `tools/list` here
/// and `tools/call` there.
fn collision(key: &str, keys: &[&str], at: &str) -> Option<String> {
    if keys.contains(&key) {
        return None;
    }
    let folded: String = key
        .chars()
        .map(|c| match c {
            '\u{017F}' => 's',
            '\u{212A}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let canonical = keys.iter().find(|k| **k == folded)?;
    Some(format!(
        "{at}key {key:?} differs from \"{canonical}\" only in case; refused, since \
         servers that match keys without case would read it as \"{canonical}\""
    ))
}

/// A JSON value the gate looks at: scalars kept (small: ids, methods, names), containers
/// skipped with only their type kept.
#[derive(Clone, Debug, PartialEq)]
enum Loose {
    Null,
    Bool,
    Num(serde_json::Number),
    Str(String),
    Array,
    Object,
}

impl Loose {
    fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool => "a boolean",
            Self::Num(_) => "a number",
            Self::Str(_) => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        }
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }
    fn visit_none<E>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Loose, E> {
        Ok(Loose::Bool)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Loose, E> {
        Ok(Loose::Num(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Loose, E> {
        Ok(Loose::Num(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Loose, E> {
        serde_json::Number::from_f64(v)
            .map(Loose::Num)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Loose, E> {
        Ok(Loose::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Loose, E> {
        Ok(Loose::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Object)
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

/// `params` as far as the gate reads it.
#[derive(Debug, Default)]
struct Params {
    name: Option<Loose>,
    uri: Option<Loose>,
    collision: Option<String>,
}

/// One message as written, before it is checked; `Err` holds the type of a member that
/// is not an object.
#[derive(Debug, Default)]
struct RawMessage {
    jsonrpc: Option<Loose>,
    id: Option<Loose>,
    method: Option<Loose>,
    /// `Some(None)`: params present, not an object.
    params: Option<Option<Params>>,
    result_or_error: bool,
    collision: Option<String>,
}

/// Reads a map (or anything else, by type) into a [`RawMessage`].
struct MessageVisitor;

/// A map key, owned: keys are short in any honest body.
fn next_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<String>, A::Error> {
    map.next_key::<String>()
}

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Result<RawMessage, &'static str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = RawMessage::default();
        while let Some(key) = next_key(&mut map)? {
            match key.as_str() {
                "jsonrpc" => m.jsonrpc = Some(map.next_value()?),
                "id" => m.id = Some(map.next_value()?),
                "method" => m.method = Some(map.next_value()?),
                "params" => m.params = Some(map.next_value::<ParamsSeed>()?.0),
                "result" | "error" => {
                    map.next_value::<IgnoredAny>()?;
                    m.result_or_error = true;
                }
                other => {
                    if m.collision.is_none() {
                        m.collision = collision(other, MESSAGE_KEYS, "");
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Ok(m))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        LooseVisitor.visit_seq(seq).map(|l| Err(l.type_name()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err("null"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err("a string"))
    }
}

struct Member(Result<RawMessage, &'static str>);

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MessageVisitor).map(Member)
    }
}

/// `params`: an object is read for `name` and `uri`; anything else is skipped.
struct ParamsSeed(Option<Params>);

impl<'de> Deserialize<'de> for ParamsSeed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamsSeed;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("params")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ParamsSeed, A::Error> {
                let mut p = Params::default();
                while let Some(key) = next_key(&mut map)? {
                    match key.as_str() {
                        "name" => p.name = Some(map.next_value()?),
                        "uri" => p.uri = Some(map.next_value()?),
                        other => {
                            if p.collision.is_none() {
                                p.collision = collision(other, PARAMS_KEYS, "params: ");
                            }
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(ParamsSeed(Some(p)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ParamsSeed, A::Error> {
                LooseVisitor.visit_seq(seq).map(|_| ParamsSeed(None))
            }
            fn visit_unit<E>(self) -> Result<ParamsSeed, E> {
                Ok(ParamsSeed(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ParamsSeed, E> {
                Ok(ParamsSeed(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ParamsSeed, E> {
                Ok(ParamsSeed(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ParamsSeed, E> {
                Ok(ParamsSeed(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ParamsSeed, E> {
                Ok(ParamsSeed(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<ParamsSeed, E> {
                Ok(ParamsSeed(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A whole body: one message, or a batch (members past [`MAX_BATCH`] are counted, checked
/// as JSON and skipped).
enum Top {
    One(Result<RawMessage, &'static str>),
    Batch(Vec<Result<RawMessage, &'static str>>, usize),
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON-RPC message or batch")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
                let mut members = Vec::new();
                let mut count = 0usize;
                loop {
                    if count < MAX_BATCH {
                        match seq.next_element::<Member>()? {
                            Some(m) => members.push(m.0),
                            None => break,
                        }
                    } else if seq.next_element::<IgnoredAny>()?.is_none() {
                        break;
                    }
                    count += 1;
                }
                Ok(Top::Batch(members, count))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Top, A::Error> {
                MessageVisitor.visit_map(map).map(Top::One)
            }
            fn visit_unit<E>(self) -> Result<Top, E> {
                Ok(Top::One(Err("null")))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
                Ok(Top::One(Err("a boolean")))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
                Ok(Top::One(Err("a number")))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
                Ok(Top::One(Err("a number")))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
                Ok(Top::One(Err("a number")))
            }
            fn visit_str<E>(self, _: &str) -> Result<Top, E> {
                Ok(Top::One(Err("a string")))
            }
        }
        d.deserialize_any(V)
    }
}

fn message(raw: Result<RawMessage, &'static str>) -> Result<Message, String> {
    let m = raw.map_err(|t| format!("expected an object, got {t}"))?;
    if let Some(c) = m.collision {
        return Err(c);
    }
    if let Some(Some(Params {
        collision: Some(c), ..
    })) = m.params
    {
        return Err(c);
    }
    if !matches!(&m.jsonrpc, Some(Loose::Str(v)) if v == "2.0") {
        return Err("\"jsonrpc\" must be \"2.0\"".into());
    }
    let id = match m.id {
        None => None,
        Some(Loose::Str(s)) => Some(Value::String(s)),
        Some(Loose::Num(n)) => Some(Value::Number(n)),
        Some(Loose::Null) => Some(Value::Null),
        Some(other) => {
            return Err(format!(
                "\"id\" must be a string or a number, got {}",
                other.type_name()
            ))
        }
    };
    let params = m.params.flatten();
    let (kind, method, name) = match m.method {
        Some(Loose::Str(method)) => {
            let kind = if id.is_some() {
                Kind::Request
            } else {
                Kind::Notification
            };
            let name = subject_of(&method, params)?;
            (kind, Some(method), name)
        }
        Some(other) => {
            return Err(format!(
                "\"method\" must be a string, got {}",
                other.type_name()
            ))
        }
        None if id.is_some() && m.result_or_error => (Kind::Response, None, None),
        None => return Err("no \"method\" (nor a response's \"result\" or \"error\")".into()),
    };
    Ok(Message {
        kind,
        id,
        method,
        name,
    })
}

/// The name a method acts on. A `tools/call` without a string name is refused here: rules
/// on tool names must not be dodged by a name the gate cannot read.
fn subject_of(method: &str, params: Option<Params>) -> Result<Option<String>, String> {
    let (key, value) = match method {
        "tools/call" | "prompts/get" => ("name", params.and_then(|p| p.name)),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            ("uri", params.and_then(|p| p.uri))
        }
        _ => return Ok(None),
    };
    match value {
        Some(Loose::Str(s)) => Ok(Some(s)),
        None if method != "tools/call" => Ok(None),
        _ => Err(format!("{method} needs a string \"params.{key}\"")),
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

    #[test]
    fn message_texts_are_compact_and_split_per_batch_member() {
        let body = b"{ \"jsonrpc\" : \"2.0\",\n \"id\": 1, \"method\": \"x\", \"params\": {\"s\": \"a ,[ \\\" ]\"} }";
        assert_eq!(
            message_texts(body, false),
            [r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"a ,[ \" ]"}}"#]
        );
        let batch = b" [ {\"id\":1, \"a\":[1, 2]} ,\n {\"id\":2} ] ";
        assert_eq!(
            message_texts(batch, true),
            [r#"{"id":1,"a":[1,2]}"#, r#"{"id":2}"#]
        );
    }

    #[test]
    fn large_params_and_deep_batches_are_skipped_not_kept() {
        // A 1 MB argument is checked as JSON and skipped; the name is still read.
        let big = "x".repeat(1 << 20);
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"arguments":{{"a":"{big}","b":[0,0,0]}},"name":"echo"}}}}"#
        );
        assert_eq!(one(&body).tool(), Some("echo"));
        // Past MAX_BATCH the members are counted, not kept.
        let many = format!("[{}]", vec!["0"; 100_000].join(","));
        let e = parse(many.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("batch of 100000 messages"), "{e}");
        // Broken JSON deep inside a skipped value is still a parse error.
        let e = parse(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[1,}}"#).unwrap_err();
        assert_eq!(e.code(), PARSE_ERROR);
    }
}
