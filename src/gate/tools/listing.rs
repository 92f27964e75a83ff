//! The upstream's answers to `tools/list`, judged on their way to the client: a response
//! body that hands each `tools/list` result to a [`Judge`] (which may take tools out) and
//! passes everything else on as it came.
//!
//! An SSE body is read event by event ([`crate::sse`]): an event goes on as soon as its blank
//! line has come, unchanged unless it carries a `tools/list` result that lost tools; nothing
//! else is held. A JSON body is one message, read whole (at most [`MAX_EVENT_BYTES`]) since
//! it can only be judged whole. An event or a JSON body over that bound, or an encoded
//! (`Content-Encoding`) body, ends the response with an error: a list the gate cannot read
//! does not reach the client.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use serde_json::Value;

use crate::sse::{Event, EventParser};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Largest SSE event, or JSON body, of a judged response.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Decides what of a `tools/list` result the client sees.
pub trait Judge: Send + Sync + std::fmt::Debug {
    /// Judges one result, editing it in place; true if it changed. `first_page`: the
    /// request asked for no cursor.
    fn judge(&self, result: &mut Value, first_page: bool) -> bool;
}

/// Which responses of a body are `tools/list` results.
#[derive(Clone, Debug)]
pub enum Answers {
    /// The responses to these request ids (JSON text of the id), each with whether its
    /// request asked for the first page: a POST's body.
    To(HashMap<String, bool>),
    /// Any response whose result has a `tools` array: a GET stream (legacy HTTP+SSE carries
    /// the answers to every POST on it).
    Any,
}

enum Mode {
    /// Encoded (`Content-Encoding`): refused.
    Unreadable,
    Sse(EventParser),
    Json(BytesMut),
    Pass,
}

pin_project_lite::pin_project! {
    /// A response body whose `tools/list` results are judged; see the module docs.
    pub struct Listing<B> {
        #[pin]
        inner: B,
        mode: Mode,
        answers: Answers,
        judge: Arc<dyn Judge>,
        ended: bool,
        queued: Option<Frame<Bytes>>,
    }
}

impl<B> Listing<B> {
    /// Judges `inner`, a response with `headers`.
    pub fn new(inner: B, headers: &HeaderMap, answers: Answers, judge: Arc<dyn Judge>) -> Self {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mode = if !Self::readable(headers) {
            Mode::Unreadable
        } else if content_type.starts_with("text/event-stream") {
            Mode::Sse(EventParser::new(MAX_EVENT_BYTES))
        } else if content_type.starts_with("application/json") {
            Mode::Json(BytesMut::new())
        } else {
            Mode::Pass
        };
        Self {
            inner,
            mode,
            answers,
            judge,
            ended: false,
            queued: None,
        }
    }

    /// Whether a response with `headers` can be judged: not encoded. The caller removes
    /// `Accept-Encoding` from the requests it judges; an upstream that encodes anyway gets
    /// its list refused.
    fn readable(headers: &HeaderMap) -> bool {
        headers
            .get(http::header::CONTENT_ENCODING)
            .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
    }
}

/// Judges the `tools/list` results in one JSON-RPC message (or batch) text; `Some` with the
/// new text when any changed.
fn judge_text(text: &str, answers: &Answers, judge: &dyn Judge) -> Option<String> {
    // Most events are not tools/list results: skip them unparsed.
    if !text.contains("\"tools\"") {
        return None;
    }
    let mut value: Value = serde_json::from_str(text).ok()?;
    let changed = match &mut value {
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |c, m| judge_message(m, answers, judge) | c),
        m => judge_message(m, answers, judge),
    };
    changed.then(|| value.to_string())
}

fn judge_message(m: &mut Value, answers: &Answers, judge: &dyn Judge) -> bool {
    let first_page = match answers {
        Answers::To(ids) => match m.get("id").and_then(|id| ids.get(&id.to_string())) {
            Some(first) => *first,
            None => return false,
        },
        Answers::Any => false,
    };
    match m.get_mut("result") {
        Some(result) if result.get("tools").is_some_and(Value::is_array) => {
            judge.judge(result, first_page)
        }
        _ => false,
    }
}

fn event_bytes(e: &Event, answers: &Answers, judge: &dyn Judge) -> Bytes {
    match e
        .data
        .as_deref()
        .and_then(|d| judge_text(d, answers, judge))
    {
        Some(new) => e.with_data(&new),
        None => e.raw.clone(),
    }
}

impl<B> Body for Listing<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(f) = this.queued.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        if *this.ended {
            return Poll::Ready(None);
        }
        if matches!(this.mode, Mode::Unreadable) {
            *this.ended = true;
            return Poll::Ready(Some(Err("a tools/list answer came encoded (Content-Encoding); the gate does not pass what it cannot judge".into())));
        }
        loop {
            let frame = match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(f)) => f,
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => {
                    *this.ended = true;
                    let tail = match this.mode {
                        Mode::Sse(p) => p
                            .finish()
                            .map(|e| event_bytes(&e, this.answers, &**this.judge)),
                        Mode::Json(buf) => Some(json_bytes(buf, this.answers, &**this.judge)),
                        Mode::Pass | Mode::Unreadable => None,
                    };
                    return Poll::Ready(tail.filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b))));
                }
            };
            let data = match frame.into_data() {
                Ok(d) => d,
                Err(trailers) => {
                    // Trailers come last: what is held goes first.
                    let held = match this.mode {
                        Mode::Sse(p) => p
                            .finish()
                            .map(|e| event_bytes(&e, this.answers, &**this.judge)),
                        Mode::Json(buf) => Some(json_bytes(buf, this.answers, &**this.judge)),
                        Mode::Pass | Mode::Unreadable => None,
                    };
                    *this.mode = Mode::Pass;
                    return match held.filter(|b| !b.is_empty()) {
                        Some(b) => {
                            *this.queued = Some(trailers);
                            Poll::Ready(Some(Ok(Frame::data(b))))
                        }
                        None => Poll::Ready(Some(Ok(trailers))),
                    };
                }
            };
            match this.mode {
                Mode::Pass | Mode::Unreadable => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Mode::Json(buf) => {
                    if buf.len() + data.len() > MAX_EVENT_BYTES {
                        return Poll::Ready(Some(Err(too_large())));
                    }
                    buf.extend_from_slice(&data);
                }
                Mode::Sse(p) => {
                    let events = match p.push(&data) {
                        Ok(e) => e,
                        Err(_) => return Poll::Ready(Some(Err(too_large()))),
                    };
                    let out: Vec<Bytes> = events
                        .iter()
                        .map(|e| event_bytes(e, this.answers, &**this.judge))
                        .collect();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.concat().into()))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.queued.is_none()
            && (self.ended || (matches!(self.mode, Mode::Pass) && self.inner.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        match self.mode {
            // Judged bodies may shrink.
            Mode::Sse(_) | Mode::Json(_) | Mode::Unreadable => SizeHint::default(),
            Mode::Pass => self.inner.size_hint(),
        }
    }
}

fn json_bytes(buf: &mut BytesMut, answers: &Answers, judge: &dyn Judge) -> Bytes {
    let held = buf.split().freeze();
    match std::str::from_utf8(&held)
        .ok()
        .and_then(|t| judge_text(t, answers, judge))
    {
        Some(new) => Bytes::from(new),
        None => held,
    }
}

fn too_large() -> BoxError {
    format!("a tools/list answer (an SSE event or JSON body) exceeds {MAX_EVENT_BYTES} bytes; the gate does not pass what it cannot judge").into()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use http_body_util::BodyExt;

    use super::*;

    /// Hides tool `bad`, records what it was asked.
    #[derive(Debug, Default)]
    struct HideBad(Mutex<Vec<bool>>);

    impl Judge for HideBad {
        fn judge(&self, result: &mut Value, first_page: bool) -> bool {
            self.0.lock().unwrap().push(first_page);
            let tools = result["tools"].as_array_mut().unwrap();
            let before = tools.len();
            tools.retain(|t| t["name"] != "bad");
            tools.len() != before
        }
    }

    /// A body of these chunks, one frame each.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
        }
    }

    async fn run(
        chunks: &[&'static [u8]],
        content_type: &str,
        answers: Answers,
    ) -> (Vec<Bytes>, Arc<HideBad>) {
        let judge = Arc::new(HideBad::default());
        let inner = Chunks(chunks.iter().map(|c| Bytes::from_static(c)).collect());
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
        let mut body = Listing::new(inner, &headers, answers, judge.clone());
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            out.push(f.unwrap().into_data().unwrap());
        }
        (out, judge)
    }

    const LIST: &[u8] = br#"event: message
data: {"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"},{"name":"bad"}]}}

"#;

    #[tokio::test]
    async fn other_events_pass_as_they_come_and_the_list_loses_its_hidden_tool() {
        let progress: &[u8] = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"tools\":1}}\n\n";
        let ids = Answers::To(HashMap::from([("1".to_owned(), true)]));
        let (out, judge) = run(
            &[progress, b": ping\n", b"\n", LIST],
            "text/event-stream",
            ids,
        )
        .await;
        // One frame per chunk that completed an event: nothing is held past its blank line.
        assert_eq!(out[0], progress);
        assert_eq!(&out[1][..], b": ping\n\n");
        assert_eq!(
            &out[2][..],
            br#"event: message
data: {"id":1,"jsonrpc":"2.0","result":{"tools":[{"name":"ok"}]}}

"#
        );
        assert_eq!(*judge.0.lock().unwrap(), [true]);
    }

    #[tokio::test]
    async fn only_the_answers_asked_for_are_judged() {
        let other = Answers::To(HashMap::from([("2".to_owned(), true)]));
        let (out, judge) = run(&[LIST], "text/event-stream", other).await;
        assert_eq!(out, [Bytes::from_static(LIST)]);
        assert!(judge.0.lock().unwrap().is_empty());
        let (out, _) = run(&[LIST], "text/event-stream", Answers::Any).await;
        assert!(!out[0].windows(5).any(|w| w == b"\"bad\""));
    }

    #[tokio::test]
    async fn a_json_answer_is_judged_whole() {
        let (a, b) =
            br#"{"jsonrpc":"2.0","id":"x","result":{"tools":[{"name":"bad"}],"nextCursor":"c"}}"#
                .split_at(20);
        let ids = Answers::To(HashMap::from([("\"x\"".to_owned(), false)]));
        let (out, judge) = run(&[a, b], "application/json", ids).await;
        assert_eq!(out.len(), 1);
        let v: Value = serde_json::from_slice(&out[0]).unwrap();
        assert_eq!(v["result"]["tools"], serde_json::json!([]));
        assert_eq!(*judge.0.lock().unwrap(), [false]);
    }
}
