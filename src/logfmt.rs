//! Text log lines that a peer cannot forge: every field value is written with its control
//! characters escaped, whatever the call site wrote (`%` or `?`).
//!
//! tracing-subscriber's text format escapes only the message, and writes `%`-formatted
//! fields raw, so a JWT `kid` or an SNI carrying `\n2026-12-01T00:00:00Z INFO ...` would
//! start a line of its own, and an ANSI escape could rewrite the terminal. Call sites log
//! peer strings with `?` (quoted); this is the backstop for those that don't. The JSON
//! format escapes by itself.

use std::fmt::{self, Write as _};

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::fmt::FormatFields;

/// The field formatter of the text log format: `name=value` pairs separated by spaces, the
/// message first and bare, each value with control characters escaped (see [`escaped`]).
pub fn text_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(
        |w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn fmt::Debug| {
            let text = format!("{value:?}");
            if field.name() == "message" {
                write!(w, "{}", Escaped(&text))
            } else {
                write!(w, "{field}={}", Escaped(&text))
            }
        },
    )
    .delimited(" ")
}

/// `s` with every character that could end a log line or drive a terminal escaped: ASCII
/// and Unicode control characters as `\n`, `\r`, `\t` or `\u{..}`, and the Unicode line
/// separators and bidirectional overrides as `\u{..}`.
pub fn escaped(s: &str) -> String {
    Escaped(s).to_string()
}

struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if needs_escape(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escaped("a\nb\r\tc\u{1b}[31m"), "a\\nb\\r\\tc\\u{1b}[31m");
        assert_eq!(escaped("x\u{2028}y\u{202e}z"), "x\\u{2028}y\\u{202e}z");
        assert_eq!(escaped("café spiffe://a/b"), "café spiffe://a/b");
    }

    #[test]
    fn a_peer_string_cannot_start_a_line_of_its_own() {
        let out = Buffer::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(text_fields())
            .finish();
        let kid = "x\n2026-12-01T00:00:00Z  INFO mcp_pqtls: Request http.status=200";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(error = %format!("unknown kid {kid}"), sni = kid, "Refused request");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("Refused request error=unknown kid x\\n2026"),
            "{text}"
        );
        assert!(text.contains("sni=\"x\\n2026"), "{text}");
    }
}
