//! The upstream's answers to `tools/list`, judged on their way to the client: a response
//! body that hands each `tools/list` result in it to a [`Judge`] (which may take tools out)
//! and passes everything else on as it came.
//!
//! Every response message whose `result` has a `tools` array is judged, whichever request it
//! answers and whatever stream it comes on: clients route answers by id, so a list slipped
//! onto a `tools/call`'s stream would be read as the answer to an earlier `tools/list`.
//!
//! An SSE body is read event by event ([`crate::sse`]): an event goes on as soon as its blank
//! line has come, unchanged unless it carries a `tools/list` result that lost tools; nothing
//! else is held. A JSON body is one message, read whole (at most [`MAX_EVENT_BYTES`]) since
//! it can only be judged whole. The gate fails closed: an event or a JSON body over that
//! bound, an encoded (`Content-Encoding`) body, a 200 body of another content type, and an
//! event or body that may hold a list (it mentions `tools`, or escapes characters) but does
//! not parse end the response with an error: a list the gate cannot read does not reach the
//! client, which may read it more leniently than `serde_json`.

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

/// The `tools/list` requests a body answers: the JSON text of each id, with whether it asked
/// for the first page (no cursor). They only tell a first page: every list is judged.
#[derive(Clone, Debug, Default)]
pub struct Answers(pub HashMap<String, bool>);

enum Mode {
    /// Encoded (`Content-Encoding`): refused.
    Unreadable,
    /// A 200 body of a type that is neither JSON nor SSE: refused if it has a byte.
    Unexpected,
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
    /// Judges `inner`, a response with `status` and `headers`.
    pub fn new(
        inner: B,
        status: http::StatusCode,
        headers: &HeaderMap,
        answers: Answers,
        judge: Arc<dyn Judge>,
    ) -> Self {
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
        } else if status == http::StatusCode::OK {
            // 202 and 204 carry no message (the legacy transport's 202 says "Accepted").
            Mode::Unexpected
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

/// The text of a body or event that cannot be judged: it may hold a list and does not parse.
#[derive(Debug)]
struct Unjudged;

/// Judges the `tools/list` results in one JSON-RPC message (or batch) text; `Some` with the
/// new text when any changed.
fn judge_text(
    text: &str,
    answers: &Answers,
    judge: &dyn Judge,
) -> Result<Option<String>, Unjudged> {
    // Most events are not lists: skipped unparsed. A `tools` key is spelled `tools`, or
    // with escapes.
    if !text.contains("tools") && !text.contains('\\') {
        return Ok(None);
    }
    let mut value: Value = serde_json::from_str(text).map_err(|_| Unjudged)?;
    let changed = match &mut value {
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |c, m| judge_message(m, answers, judge) | c),
        m => judge_message(m, answers, judge),
    };
    Ok(changed.then(|| value.to_string()))
}

fn judge_message(m: &mut Value, answers: &Answers, judge: &dyn Judge) -> bool {
    let first_page = m
        .get("id")
        .and_then(|id| answers.0.get(&id.to_string()))
        .copied()
        .unwrap_or(false);
    match m.get_mut("result") {
        Some(result) if result.get("tools").is_some_and(Value::is_array) => {
            judge.judge(result, first_page)
        }
        _ => false,
    }
}

fn event_bytes(e: &Event, answers: &Answers, judge: &dyn Judge) -> Result<Bytes, BoxError> {
    let Some(data) = e.data.as_deref() else {
        return Ok(e.raw.clone());
    };
    match judge_text(data, answers, judge) {
        Ok(Some(new)) => Ok(e.with_data(&new)),
        Ok(None) => Ok(e.raw.clone()),
        Err(Unjudged) => Err(unjudged()),
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
            return Poll::Ready(Some(Err("an answer came encoded (Content-Encoding); the gate does not pass what it cannot judge".into())));
        }
        loop {
            let frame = match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(f)) => f,
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => {
                    *this.ended = true;
                    return match held(this.mode, this.answers, &**this.judge) {
                        Ok(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
                        Ok(None) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(e))),
                    };
                }
            };
            let data = match frame.into_data() {
                Ok(d) => d,
                Err(trailers) => {
                    // Trailers come last: what is held goes first.
                    let held = held(this.mode, this.answers, &**this.judge);
                    *this.mode = Mode::Pass;
                    return match held {
                        Ok(Some(b)) => {
                            *this.queued = Some(trailers);
                            Poll::Ready(Some(Ok(Frame::data(b))))
                        }
                        Ok(None) => Poll::Ready(Some(Ok(trailers))),
                        Err(e) => {
                            *this.ended = true;
                            Poll::Ready(Some(Err(e)))
                        }
                    };
                }
            };
            match this.mode {
                Mode::Pass | Mode::Unreadable => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Mode::Unexpected if data.is_empty() => {}
                Mode::Unexpected => {
                    *this.ended = true;
                    return Poll::Ready(Some(Err("a 200 answer is neither JSON nor SSE; the gate does not pass what it cannot judge".into())));
                }
                Mode::Json(buf) => {
                    if buf.len() + data.len() > MAX_EVENT_BYTES {
                        *this.ended = true;
                        return Poll::Ready(Some(Err(too_large())));
                    }
                    buf.extend_from_slice(&data);
                }
                Mode::Sse(p) => {
                    let judged: Result<Vec<Bytes>, BoxError> = match p.push(&data) {
                        Ok(events) => events
                            .iter()
                            .map(|e| event_bytes(e, this.answers, &**this.judge))
                            .collect(),
                        Err(_) => Err(too_large()),
                    };
                    match judged {
                        Ok(out) if out.is_empty() => {}
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out.concat().into())))),
                        Err(e) => {
                            *this.ended = true;
                            return Poll::Ready(Some(Err(e)));
                        }
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
            Mode::Sse(_) | Mode::Json(_) | Mode::Unreadable | Mode::Unexpected => {
                SizeHint::default()
            }
            Mode::Pass => self.inner.size_hint(),
        }
    }
}

/// What a mode holds at the end of the body (or before its trailers), judged.
fn held(mode: &mut Mode, answers: &Answers, judge: &dyn Judge) -> Result<Option<Bytes>, BoxError> {
    let bytes = match mode {
        Mode::Sse(p) => match p.finish() {
            Some(e) => event_bytes(&e, answers, judge)?,
            None => return Ok(None),
        },
        Mode::Json(buf) => {
            let held = buf.split().freeze();
            let text = std::str::from_utf8(&held).map_err(|_| unjudged())?;
            match judge_text(text, answers, judge) {
                Ok(Some(new)) => Bytes::from(new),
                Ok(None) => held,
                Err(Unjudged) => return Err(unjudged()),
            }
        }
        Mode::Pass | Mode::Unreadable | Mode::Unexpected => return Ok(None),
    };
    Ok((!bytes.is_empty()).then_some(bytes))
}

fn unjudged() -> BoxError {
    "an answer that may hold a tools/list result does not parse as JSON; the gate does not pass what it cannot judge".into()
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

    /// A judged body of these chunks (one frame each), and its judge.
    fn listing(
        chunks: &[&'static [u8]],
        content_type: &str,
        answers: Answers,
    ) -> (Listing<Chunks>, Arc<HideBad>) {
        let judge = Arc::new(HideBad::default());
        let inner = Chunks(chunks.iter().map(|c| Bytes::from_static(c)).collect());
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
        let body = Listing::new(
            inner,
            http::StatusCode::OK,
            &headers,
            answers,
            judge.clone(),
        );
        (body, judge)
    }

    async fn run(
        chunks: &[&'static [u8]],
        content_type: &str,
        answers: Answers,
    ) -> (Vec<Bytes>, Arc<HideBad>) {
        let (mut body, judge) = listing(chunks, content_type, answers);
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
        let ids = Answers(HashMap::from([("1".to_owned(), true)]));
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
    async fn every_list_is_judged_asked_for_or_not() {
        let (out, judge) = run(&[LIST], "text/event-stream", Answers::default()).await;
        assert!(!out[0].windows(5).any(|w| w == b"\"bad\""), "{out:?}");
        assert_eq!(
            *judge.0.lock().unwrap(),
            [false],
            "not a first page it knows of"
        );
        // An escaped key is a key: parsed, judged.
        let escaped: &[u8] = b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"\\u0074ools\":[{\"name\":\"bad\"}]}}\n\n";
        let (out, _) = run(&[escaped], "text/event-stream", Answers::default()).await;
        assert!(!out[0].windows(5).any(|w| w == b"\"bad\""), "{out:?}");
    }

    async fn refused(chunks: &[&'static [u8]], content_type: &str) -> String {
        let (mut body, _) = listing(chunks, content_type, Answers::default());
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return e.to_string(),
                None => panic!("{content_type} {chunks:?} passed"),
            }
        }
    }

    #[tokio::test]
    async fn what_cannot_be_judged_does_not_pass() {
        // A lone surrogate: serde_json refuses it, lenient clients read it.
        let surrogate: &[u8] =
            b"data: {\"id\":1,\"result\":{\"tools\":[{\"name\":\"bad\\ud800\"}]}}\n\n";
        assert!(refused(&[surrogate], "text/event-stream")
            .await
            .contains("does not parse"));
        assert!(refused(
            &[b"\xEF\xBB\xBF{\"result\":{\"tools\":[]}}"],
            "application/json"
        )
        .await
        .contains("does not parse"));
        assert!(refused(&[b"{\"tools\": 1"], "application/json")
            .await
            .contains("does not parse"));
        assert!(refused(&[b"<html>"], "text/html")
            .await
            .contains("neither JSON nor SSE"));
    }

    #[tokio::test]
    async fn a_json_answer_is_judged_whole() {
        let (a, b) =
            br#"{"jsonrpc":"2.0","id":"x","result":{"tools":[{"name":"bad"}],"nextCursor":"c"}}"#
                .split_at(20);
        let ids = Answers(HashMap::from([("\"x\"".to_owned(), false)]));
        let (out, judge) = run(&[a, b], "application/json", ids).await;
        assert_eq!(out.len(), 1);
        let v: Value = serde_json::from_slice(&out[0]).unwrap();
        assert_eq!(v["result"]["tools"], serde_json::json!([]));
        assert_eq!(*judge.0.lock().unwrap(), [false]);
    }
}
