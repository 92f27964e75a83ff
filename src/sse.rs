//! Server-sent events, split incrementally: bytes in, whole events out, each with the bytes
//! it came as (a proxy passes an event on unchanged) and its `event` and `data` fields, read
//! as the WHATWG EventSource rules say (lines end in CRLF, LF or CR; `field: value` with one
//! optional space after the colon; a line starting with `:` is a comment; a blank line ends
//! the event). The gate's `tools/list` inspection, `tools pin` and the load generator all
//! read events with it.
//!
//! Hand-written: the SSE crates (eventsource-stream and the like) are client-side streams
//! that hand out parsed fields only, and a proxy must forward every other event byte for
//! byte, as soon as its blank line arrives.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

/// One event: its bytes as they came (up to and including the blank line that ended it),
/// and its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// The event's bytes, terminator included.
    pub raw: Bytes,
    /// The `event` field (the type), if any.
    pub event: Option<String>,
    /// The `data` lines, joined with `\n`; `None` without a `data` line (a comment, say).
    pub data: Option<String>,
}

impl Event {
    fn parse(raw: Bytes) -> Self {
        let (mut event, mut data) = (None, None::<String>);
        for line in lines(&raw) {
            let (name, value) = field(line);
            match name {
                b"event" => event = Some(String::from_utf8_lossy(value).into_owned()),
                b"data" => {
                    let value = String::from_utf8_lossy(value);
                    match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(&value);
                        }
                        None => data = Some(value.into_owned()),
                    }
                }
                _ => {}
            }
        }
        Self { raw, event, data }
    }

    /// This event with its data replaced by `data` (one line: JSON text has no raw line
    /// breaks): its other lines kept as they were, the new `data` line where the first one was.
    pub fn with_data(&self, data: &str) -> Bytes {
        let mut out = BytesMut::with_capacity(data.len() + 64);
        let mut placed = false;
        for line in lines(&self.raw) {
            if field(line).0 == b"data" {
                if !placed {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(data.as_bytes());
                    out.extend_from_slice(b"\n");
                    placed = true;
                }
                continue;
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"\n");
        out.freeze()
    }
}

/// The lines of an event's bytes (without their ends, the final blank line not included).
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) => {
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                (&rest[..i], &rest[i + skip..])
            }
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        Some(line)
    })
    .filter(|l| !l.is_empty())
}

/// A line's field name and value (`:comment` has the empty name).
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b':') {
        Some(i) => {
            let value = &line[i + 1..];
            (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[]),
    }
}

/// An event grew past the parser's bound before its blank line came.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event exceeds {max} bytes")]
pub(crate) struct EventTooLarge {
    /// The bound.
    pub max: usize,
}

/// Splits a byte stream into [`Event`]s, whatever the chunking; holds the bytes of one
/// unfinished event at most, up to `max_event` bytes. A byte-order mark opening the stream
/// is dropped (EventSource does). A CR ends its line at once: when the next byte is its
/// LF, that LF is passed on as an event of its own (no fields) if the CR ended an event,
/// so that nothing waits for a byte that may never come.
#[derive(Debug)]
pub(crate) struct EventParser {
    pending: BytesMut,
    /// Bytes of `pending` already scanned for line ends.
    scanned: usize,
    /// Where the line being scanned starts.
    line_start: usize,
    max_event: usize,
    /// The last line ended in CR: an LF next belongs to it.
    after_cr: bool,
    /// Bytes seen so far, up to the length of a BOM (to drop one at the start).
    seen: usize,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl EventParser {
    /// A parser holding at most `max_event` bytes of an unfinished event.
    pub fn new(max_event: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            scanned: 0,
            line_start: 0,
            max_event,
            after_cr: false,
            seen: 0,
        }
    }

    /// Feeds one chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        let mut chunk = chunk;
        if self.seen < BOM.len() {
            // Only a stream's first bytes can be its BOM (they may come a byte at a time).
            let start = self.seen;
            let n = chunk.len().min(BOM.len() - start);
            self.seen += n;
            if chunk[..n] == BOM[start..start + n] && self.pending.len() == start {
                self.pending.extend_from_slice(&chunk[..n]);
                chunk = &chunk[n..];
                if self.seen < BOM.len() {
                    return Ok(Vec::new());
                }
                self.pending.clear();
            } else {
                self.seen = BOM.len();
            }
        }
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while self.scanned < self.pending.len() {
            let b = self.pending[self.scanned];
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                self.scanned += 1;
                self.line_start = self.scanned;
                if self.scanned == 1 {
                    // The CR ended an event: its LF goes on alone.
                    let raw = self.pending.split_to(1).freeze();
                    self.scanned = 0;
                    self.line_start = 0;
                    events.push(Event::parse(raw));
                }
                continue;
            }
            if b != b'\n' && b != b'\r' {
                self.scanned += 1;
                continue;
            }
            self.after_cr = b == b'\r';
            let end = self.scanned + 1;
            let blank = self.scanned == self.line_start;
            self.scanned = end;
            self.line_start = end;
            if blank {
                let raw = self.pending.split_to(end).freeze();
                self.scanned = 0;
                self.line_start = 0;
                events.push(Event::parse(raw));
            }
        }
        if self.pending.len() > self.max_event {
            return Err(EventTooLarge {
                max: self.max_event,
            });
        }
        Ok(events)
    }

    /// Whether it holds part of an event (between two events it holds nothing).
    pub fn holding(&self) -> bool {
        !self.pending.is_empty()
    }

    /// At the end of the stream: what is left (an event without its blank line), if anything.
    /// EventSource clients drop it; a proxy forwards it as it came.
    pub fn finish(&mut self) -> Option<Event> {
        self.scanned = 0;
        self.line_start = 0;
        (!self.pending.is_empty()).then(|| Event::parse(self.pending.split().freeze()))
    }
}

/// Whether a response is a Server-Sent Events stream: its `Content-Type` media type is
/// `text/event-stream` (any case, any parameters).
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"\xEF\xBB\xBFevent: message\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\nid: 7\rdata:x\rdata: y\r\rdata: tail";

    fn all(parser: &mut EventParser, parts: &[&[u8]]) -> Vec<Event> {
        let mut events: Vec<Event> = parts
            .iter()
            .flat_map(|p| parser.push(p).expect("within bound"))
            .collect();
        events.extend(parser.finish());
        events
    }

    #[test]
    fn events_are_the_same_whatever_the_chunking() {
        let whole = all(&mut EventParser::new(1024), &[STREAM]);
        let data: Vec<Option<&str>> = whole.iter().map(|e| e.data.as_deref()).collect();
        // The CRLF that ends the first event is split: its LF goes on as an empty event.
        assert_eq!(
            data,
            [Some("{\"a\":1}"), None, None, Some("x\ny"), Some("tail")]
        );
        assert_eq!(
            whole[0].event.as_deref(),
            Some("message"),
            "the BOM is dropped"
        );
        assert_eq!(&whole[1].raw[..], b"\n");
        assert_eq!(&whole[2].raw[..], b": keep-alive\n\n");
        let raw: Vec<u8> = whole.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(
            raw,
            &STREAM[3..],
            "every byte but the BOM is in exactly one event"
        );
        for cut in 0..STREAM.len() {
            let split = all(
                &mut EventParser::new(1024),
                &[&STREAM[..cut], &STREAM[cut..]],
            );
            assert_eq!(split, whole, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(all(&mut EventParser::new(1024), &bytewise), whole);
    }

    #[test]
    fn a_cr_ends_its_event_without_waiting_for_more() {
        let mut p = EventParser::new(1024);
        let got = p.push(b"data: a\r\r").unwrap();
        assert_eq!(got.len(), 1, "dispatched on the second CR");
        assert!(!p.holding());
        // A BOM later in the stream is data, not dropped.
        let mut p = EventParser::new(1024);
        let got = p.push(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n").unwrap();
        assert_eq!(got[1].raw.len(), 3 + 9);
    }

    #[test]
    fn an_event_past_the_bound_is_an_error() {
        let mut p = EventParser::new(16);
        assert_eq!(p.push(b"data: 0123456789").map(|e| e.len()), Ok(0));
        assert_eq!(p.push(b"abcdef"), Err(EventTooLarge { max: 16 }));
        // Whole events do not count against the bound, only the one being read.
        let mut p = EventParser::new(16);
        let many = b"data: 0123456\n\n".repeat(10);
        assert_eq!(p.push(&many).map(|e| e.len()), Ok(10));
    }

    #[test]
    fn new_data_keeps_the_other_lines() {
        let e = Event::parse(Bytes::from_static(
            b"event: message\r\nid: 3\r\ndata: {\r\ndata: }\r\n\r\n",
        ));
        assert_eq!(
            &e.with_data("{\"b\":2}")[..],
            b"event: message\nid: 3\ndata: {\"b\":2}\n\n"
        );
    }
}
