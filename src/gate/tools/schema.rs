//! A tool's `inputSchema`, compiled once, against which the gate validates every
//! `tools/call`'s `arguments` (`validate-arguments`). JSON Schema 2020-12 (the MCP default
//! where the schema names no `$schema`) by the `jsonschema` crate.
//!
//! The schema comes from the upstream, so it is hostile input, and MCP says validators MUST
//! NOT dereference network `$ref`s and SHOULD bound depth, subschemas and time:
//! - no reference is fetched: the crate is built without its HTTP and file resolvers, and the
//!   validator's retriever refuses every URI (a schema with an external `$ref` does not
//!   compile);
//! - the schema's JSON text is at most [`MAX_SCHEMA_BYTES`], nested at most
//!   [`MAX_SCHEMA_DEPTH`] deep, with at most [`MAX_SUBSCHEMAS`] objects;
//! - `pattern`s run on the `regex` engine, linear in the input (no backtracking, so no
//!   catastrophic pattern), at most [`MAX_PATTERNS`] of them, each compiled to at most
//!   [`MAX_PATTERN_BYTES`]; with the arguments bounded by `max-body-bytes`, validation time is
//!   bounded by schema size times argument size.
//!
//! A schema refused by any of these makes its tool uncallable through the gate, with the
//! reason in the refusal.

use serde_json::Value;

/// Largest `inputSchema` compiled, as JSON text.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// Deepest nesting of arrays and objects in an `inputSchema`.
pub const MAX_SCHEMA_DEPTH: usize = 64;
/// Most JSON objects (each a potential subschema) in an `inputSchema`.
pub const MAX_SUBSCHEMAS: usize = 4096;
/// Most `pattern`s and `patternProperties` keys in an `inputSchema`.
pub const MAX_PATTERNS: usize = 64;
/// Largest compiled form of one pattern (and its lazy DFA's cache), in bytes: the `regex`
/// engine refuses a pattern that compiles larger (`a{1000}{1000}`).
pub const MAX_PATTERN_BYTES: usize = 256 * 1024;

/// A compiled `inputSchema`.
#[derive(Clone, Debug)]
pub struct ArgumentSchema {
    validator: jsonschema::Validator,
}

/// Why an `inputSchema` is not used (the tool is uncallable).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Over [`MAX_SCHEMA_BYTES`].
    #[error("its inputSchema is {bytes} bytes; the gate compiles at most {MAX_SCHEMA_BYTES}")]
    TooLarge {
        /// Its size as JSON text.
        bytes: usize,
    },
    /// Over [`MAX_SCHEMA_DEPTH`].
    #[error("its inputSchema nests deeper than {MAX_SCHEMA_DEPTH} levels")]
    TooDeep,
    /// Over [`MAX_SUBSCHEMAS`].
    #[error("its inputSchema has more than {MAX_SUBSCHEMAS} subschemas")]
    TooManySubschemas,
    /// Over [`MAX_PATTERNS`].
    #[error("its inputSchema has more than {MAX_PATTERNS} patterns")]
    TooManyPatterns,
    /// Not a schema the validator compiles (an unknown draft, a bad pattern, an external
    /// `$ref`...).
    #[error("its inputSchema does not compile: {0}")]
    Compile(String),
}

/// Arguments the schema refuses: the first failure, where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if path.is_empty() { "arguments" } else { path })]
#[non_exhaustive]
pub struct InvalidArguments {
    /// JSON Pointer into `arguments` (`/sku`); empty for `arguments` itself.
    pub path: String,
    /// The keyword that failed (`pattern`, `required`, `type`...).
    pub keyword: String,
    /// What failed, in the validator's words.
    pub message: String,
}

/// The retriever of every validator: nothing is fetched.
struct Offline;

impl jsonschema::Retrieve for Offline {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "the gate does not fetch `{uri}`: external $ref is not followed (MCP forbids network references)"
        )
        .into())
    }
}

impl ArgumentSchema {
    /// Checks the bounds, then compiles.
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        let bytes = serde_json::to_vec(schema).map_or(usize::MAX, |t| t.len());
        if bytes > MAX_SCHEMA_BYTES {
            return Err(SchemaError::TooLarge { bytes });
        }
        let shape = shape(schema);
        if shape.depth > MAX_SCHEMA_DEPTH {
            return Err(SchemaError::TooDeep);
        }
        if shape.objects > MAX_SUBSCHEMAS {
            return Err(SchemaError::TooManySubschemas);
        }
        if shape.patterns > MAX_PATTERNS {
            return Err(SchemaError::TooManyPatterns);
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_retriever(Offline)
            .with_pattern_options(
                jsonschema::PatternOptions::regex()
                    .size_limit(MAX_PATTERN_BYTES)
                    .dfa_size_limit(MAX_PATTERN_BYTES),
            )
            .build(schema)
            .map_err(|e| SchemaError::Compile(e.to_string()))?;
        Ok(Self { validator })
    }

    /// `Ok` when `arguments` is valid; else its first failure.
    pub fn validate(&self, arguments: &Value) -> Result<(), InvalidArguments> {
        self.validator
            .validate(arguments)
            .map_err(|e| InvalidArguments {
                path: e.instance_path().to_string(),
                keyword: e.kind().keyword().to_owned(),
                message: e.to_string(),
            })
    }
}

/// What a schema's size is bounded by.
struct Shape {
    depth: usize,
    objects: usize,
    /// `pattern` values and `patternProperties` keys (counted wherever they appear: an
    /// overcount of a property named `pattern` only errs on the side of refusing).
    patterns: usize,
}

/// The [`Shape`] of a JSON value, without recursion (a hostile value may be deep;
/// serde_json's reader bounds it at 128, but a `Value` built otherwise need not be).
fn shape(v: &Value) -> Shape {
    let mut s = Shape {
        depth: 0,
        objects: 0,
        patterns: 0,
    };
    let mut stack = vec![(v, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        s.depth = s.depth.max(depth);
        match v {
            Value::Object(m) => {
                s.objects += 1;
                s.patterns += usize::from(m.get("pattern").is_some_and(Value::is_string));
                s.patterns += m
                    .get("patternProperties")
                    .and_then(Value::as_object)
                    .map_or(0, serde_json::Map::len);
                stack.extend(m.values().map(|c| (c, depth + 1)));
            }
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, depth + 1))),
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn inventory() -> ArgumentSchema {
        ArgumentSchema::compile(&json!({
            "type": "object",
            "properties": {"sku": {"type": "string", "pattern": "^[A-Z0-9-]{5,15}$"}},
            "required": ["sku"],
        }))
        .expect("compiles")
    }

    #[test]
    fn arguments_are_checked_and_the_failure_is_named() {
        let s = inventory();
        assert_eq!(s.validate(&json!({"sku": "AB-1234"})), Ok(()));
        let bad = s.validate(&json!({"sku": "'; DROP TABLE x"})).unwrap_err();
        assert_eq!(bad.path, "/sku");
        assert_eq!(bad.keyword, "pattern");
        assert_eq!(
            bad.to_string(),
            r#"/sku: "'; DROP TABLE x" does not match "^[A-Z0-9-]{5,15}$""#
        );
        let missing = s.validate(&json!({})).unwrap_err();
        assert_eq!(
            (missing.path.as_str(), missing.keyword.as_str()),
            ("", "required")
        );
        assert!(missing.to_string().starts_with("arguments: "), "{missing}");
    }

    #[test]
    fn hostile_schemas_are_refused_not_run() {
        let external = json!({"$ref": "https://example.com/schema.json"});
        assert!(matches!(
            ArgumentSchema::compile(&external),
            Err(SchemaError::Compile(e)) if e.contains("does not fetch")
        ));
        let mut deep = json!({"type": "object"});
        for _ in 0..MAX_SCHEMA_DEPTH {
            deep = json!({"properties": {"a": deep}});
        }
        assert_eq!(
            ArgumentSchema::compile(&deep).unwrap_err(),
            SchemaError::TooDeep
        );
        let wide: serde_json::Map<String, Value> = (0..=MAX_SUBSCHEMAS)
            .map(|i| (format!("p{i}"), json!({})))
            .collect();
        assert_eq!(
            ArgumentSchema::compile(&json!({"properties": wide})).unwrap_err(),
            SchemaError::TooManySubschemas
        );
        let huge = json!({"description": "x".repeat(MAX_SCHEMA_BYTES)});
        assert!(matches!(
            ArgumentSchema::compile(&huge),
            Err(SchemaError::TooLarge { .. })
        ));
        // A backtracking-only construct does not compile on the linear engine.
        let backref = json!({"properties": {"a": {"type": "string", "pattern": "^(a+)\\1$"}}});
        assert!(matches!(
            ArgumentSchema::compile(&backref),
            Err(SchemaError::Compile(_))
        ));
        let patterns: serde_json::Map<String, Value> = (0..=MAX_PATTERNS)
            .map(|i| (format!("p{i}"), json!({"type": "string", "pattern": "^a$"})))
            .collect();
        assert_eq!(
            ArgumentSchema::compile(&json!({"properties": patterns})).unwrap_err(),
            SchemaError::TooManyPatterns
        );
        let huge_regex =
            json!({"properties": {"a": {"type": "string", "pattern": "\\w{1000}{1000}"}}});
        assert!(matches!(
            ArgumentSchema::compile(&huge_regex),
            Err(SchemaError::Compile(_))
        ));
        // A catastrophic pattern for a backtracking engine is linear here.
        let redos = ArgumentSchema::compile(
            &json!({"properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}),
        )
        .expect("compiles on the linear engine");
        let long = format!("{}!", "a".repeat(100_000));
        assert_eq!(
            redos.validate(&json!({"a": long})).unwrap_err().keyword,
            "pattern"
        );
    }
}
