//! Refusals on the legacy HTTP+SSE transport (MCP 2024-11-05; deprecated): its client POSTs
//! each message to `/messages/?session_id=X` and reads every answer on the `GET /sse` stream
//! that announced session X (its `endpoint` event). The POST's own response is only an
//! acknowledgement that the SDK clients do not read (the Python client even stops sending
//! after a 4xx), so a refusal answered there would leave the client waiting for its answer
//! until its timeout. Instead the gate delivers a refused request's JSON-RPC errors where the
//! client reads: as an `event: message` on that session's stream, between two of the
//! upstream's events, and answers the POST 202 Accepted, as the server would have.
//!
//! Only the caller that opened a stream has refusals delivered on it (its mTLS identity, else
//! token subject, else address: as the rate limits key it), so that whoever learns a session
//! id cannot write into another client's stream. Bounded: at most [`MAX_STREAMS`] streams
//! are known, [`MAX_STREAMS_PER_CALLER`] of one caller, each with [`QUEUE`] undelivered
//! refusals; past any of these, the refusal is answered on the POST as on the other
//! transports. The session is the query's `session_id` (the Python SDK's) or `sessionId`
//! (the TypeScript SDK's).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::sse::EventParser;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Legacy streams known at most (one per open `GET /sse`).
pub const MAX_STREAMS: usize = 4096;
/// Legacy streams of one caller known at most.
pub const MAX_STREAMS_PER_CALLER: usize = 64;
/// Refusals waiting for delivery on one stream at most.
pub const QUEUE: usize = 16;
/// Largest event of a legacy stream the gate holds while it reads it (the `endpoint` event
/// and the upstream's answers pass through it whole).
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The legacy session a request posts to: a POST with `session_id` in its query and no
/// `Mcp-Session-Id` header (which Streamable HTTP uses).
pub(super) fn legacy_session(method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<String> {
    if method != Method::POST || headers.contains_key("mcp-session-id") {
        return None;
    }
    session_in(uri.query()?)
}

/// The session id of a query: `session_id=` or `sessionId=`.
fn session_in(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|p| {
            p.strip_prefix("session_id=")
                .or_else(|| p.strip_prefix("sessionId="))
        })
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An open stream: who opened it, and its queue.
#[derive(Debug)]
struct Open {
    owner: String,
    tx: mpsc::Sender<Bytes>,
}

/// The open legacy streams, by session id.
#[derive(Debug, Default)]
pub(super) struct Streams {
    senders: Mutex<HashMap<String, Open>>,
}

impl Streams {
    /// Queues `errors` (the JSON-RPC text of a refusal) on `session`'s stream; false when
    /// there is none opened by `owner`, or its queue is full.
    pub(super) fn deliver(&self, session: &str, owner: &str, errors: &[u8]) -> bool {
        let senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(Open { tx, .. }) = senders.get(session).filter(|o| o.owner == owner) else {
            return false;
        };
        let mut event = Vec::with_capacity(errors.len() + 24);
        event.extend_from_slice(b"event: message\ndata: ");
        event.extend_from_slice(errors);
        event.extend_from_slice(b"\n\n");
        tx.try_send(Bytes::from(event)).is_ok()
    }

    fn register(&self, session: String, owner: String, tx: mpsc::Sender<Bytes>) -> bool {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if senders.contains_key(&session) {
            // Taken (a second stream naming the same session): the first keeps it.
            return false;
        }
        let of_owner = senders.values().filter(|o| o.owner == owner).count();
        if senders.len() >= MAX_STREAMS || of_owner >= MAX_STREAMS_PER_CALLER {
            return false;
        }
        senders.insert(session, Open { owner, tx });
        true
    }
}

/// A stream's place in [`Streams`], given up when the stream ends.
#[derive(Debug)]
struct Registration {
    streams: Arc<Streams>,
    session: String,
    tx: mpsc::Sender<Bytes>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut senders = self
            .streams
            .senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A reconnect under the same id may have taken the place since.
        if senders
            .get(&self.session)
            .is_some_and(|o| o.tx.same_channel(&self.tx))
        {
            senders.remove(&self.session);
        }
    }
}

pin_project_lite::pin_project! {
    /// A `GET` SSE stream, read event by event: an `endpoint` event registers the stream
    /// under its session, and the refusals queued for it are sent between events.
    pub struct LegacyStream<B> {
        #[pin]
        inner: B,
        parser: EventParser,
        rx: mpsc::Receiver<Bytes>,
        tx: Option<mpsc::Sender<Bytes>>,
        streams: Arc<Streams>,
        owner: String,
        registration: Option<Registration>,
        ended: bool,
        queued: Option<Frame<Bytes>>,
    }
}

impl<B> LegacyStream<B> {
    /// Reads `inner`, a `GET` response's SSE body, opened by `owner`.
    pub(super) fn new(inner: B, streams: Arc<Streams>, owner: String) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            inner,
            parser: EventParser::new(MAX_EVENT_BYTES),
            rx,
            tx: Some(tx),
            streams,
            owner,
            registration: None,
            ended: false,
            queued: None,
        }
    }
}

/// The session of an `endpoint` event's URL (`/messages/?session_id=X`).
fn endpoint_session(data: &str) -> Option<String> {
    session_in(data.split_once('?')?.1)
}

impl<B> Body for LegacyStream<B>
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
        loop {
            if *this.ended {
                return Poll::Ready(None);
            }
            // A refusal goes between two events, never into one.
            if this.registration.is_some() && !this.parser.holding() {
                if let Poll::Ready(Some(event)) = this.rx.poll_recv(cx) {
                    return Poll::Ready(Some(Ok(Frame::data(event))));
                }
            }
            let frame = match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(f)) => f,
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => {
                    *this.ended = true;
                    let tail = this.parser.finish().map(|e| e.raw);
                    return Poll::Ready(tail.map(|b| Ok(Frame::data(b))));
                }
            };
            let data = match frame.into_data() {
                Ok(d) => d,
                // Trailers come last: a partial event goes first.
                Err(trailers) => match this.parser.finish() {
                    Some(e) => {
                        *this.queued = Some(trailers);
                        return Poll::Ready(Some(Ok(Frame::data(e.raw))));
                    }
                    None => return Poll::Ready(Some(Ok(trailers))),
                },
            };
            let events = this
                .parser
                .push(&data)
                .map_err(|e| -> BoxError { Box::new(e) })?;
            if this.registration.is_none() {
                let session = events
                    .iter()
                    .filter(|e| e.event.as_deref() == Some("endpoint"))
                    .find_map(|e| endpoint_session(e.data.as_deref()?));
                if let (Some(session), Some(tx)) = (session, this.tx.take()) {
                    if this
                        .streams
                        .register(session.clone(), this.owner.clone(), tx.clone())
                    {
                        *this.registration = Some(Registration {
                            streams: this.streams.clone(),
                            session,
                            tx,
                        });
                    }
                }
            }
            if !events.is_empty() {
                let out: Vec<Bytes> = events.into_iter().map(|e| e.raw).collect();
                return Poll::Ready(Some(Ok(Frame::data(out.concat().into()))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.queued.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_legacy_posts_have_a_legacy_session() {
        let uri: Uri = "/messages/?session_id=abc".parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(
            legacy_session(&Method::POST, &uri, &none).as_deref(),
            Some("abc")
        );
        assert_eq!(legacy_session(&Method::GET, &uri, &none), None);
        let mut streamable = HeaderMap::new();
        streamable.insert("mcp-session-id", "s".parse().unwrap());
        assert_eq!(legacy_session(&Method::POST, &uri, &streamable), None);
        assert_eq!(
            endpoint_session("/messages/?session_id=0f9e&x=1").as_deref(),
            Some("0f9e")
        );
        assert_eq!(endpoint_session("/messages/"), None);
        assert_eq!(
            endpoint_session("/message?sessionId=ts-1").as_deref(),
            Some("ts-1")
        );
    }

    #[test]
    fn a_refusal_needs_a_registered_stream_of_its_caller_with_room() {
        let streams = Arc::new(Streams::default());
        assert!(!streams.deliver("abc", "id:a", b"{}"));
        let (tx, mut rx) = mpsc::channel(1);
        let held = Registration {
            streams: streams.clone(),
            session: "abc".into(),
            tx: tx.clone(),
        };
        assert!(streams.register("abc".into(), "id:a".into(), tx));
        let (other, _) = mpsc::channel(1);
        assert!(
            !streams.register("abc".into(), "id:b".into(), other),
            "taken"
        );
        assert!(!streams.deliver("abc", "id:b", b"{}"), "not its stream");
        assert!(streams.deliver("abc", "id:a", br#"{"id":1}"#));
        assert!(!streams.deliver("abc", "id:a", b"{}"), "the queue is full");
        assert_eq!(
            &rx.try_recv().unwrap()[..],
            b"event: message\ndata: {\"id\":1}\n\n"
        );
        drop(held);
        assert!(
            !streams.deliver("abc", "id:a", b"{}"),
            "gone with its stream"
        );
        for i in 0..MAX_STREAMS_PER_CALLER {
            let (tx, _) = mpsc::channel(1);
            assert!(streams.register(format!("s{i}"), "id:greedy".into(), tx));
        }
        let (tx, _) = mpsc::channel(1);
        assert!(
            !streams.register("one-more".into(), "id:greedy".into(), tx),
            "per-caller cap"
        );
    }
}
