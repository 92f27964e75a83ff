//! The response body as the client receives it: upstream frames passed on one by one as
//! they arrive (no buffering, no coalescing), counted, and logged when the response ends.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tracing::info;

use super::metrics::{ProxyMetrics, StreamGuard};
use super::{is_event_stream, BoxError, ProxyBody};
use crate::deadline::BodyTimeout;

/// What the request log line needs, captured before the request moves upstream.
pub(super) struct RequestLog {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) peer: SocketAddr,
    pub(super) started: Instant,
    pub(super) metrics: Arc<ProxyMetrics>,
}

/// A response body that counts what passes and logs the request when it ends or is dropped
/// (a client that goes away mid-stream still gets its line, marked incomplete).
pub(super) struct Tracked {
    inner: ProxyBody,
    log: RequestLog,
    status: StatusCode,
    bytes: u64,
    complete: bool,
    stream: Option<StreamGuard>,
}

impl Tracked {
    pub(super) fn wrap(response: Response<ProxyBody>, log: RequestLog) -> Response<ProxyBody> {
        let status = response.status();
        let stream = is_event_stream(response.headers()).then(|| log.metrics.stream_opened());
        response.map(|inner| {
            let complete = inner.is_end_stream();
            http_body_util::BodyExt::boxed(Tracked {
                inner,
                log,
                status,
                bytes: 0,
                complete,
                stream,
            })
        })
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // hyper stops polling once the body says it has ended, so that is asked here, once,
        // rather than after every frame (on an h2 body each ask takes h2's stream lock).
        let complete = self.complete || self.inner.is_end_stream();
        self.log.metrics.response_bytes(self.bytes);
        info!(
            client.addr = %self.log.peer,
            http.method = %self.log.method,
            http.path = %self.log.path,
            http.status = self.status.as_u16(),
            http.bytes = self.bytes,
            http.stream = self.stream.is_some(),
            http.complete = complete,
            duration_ms = self.log.started.elapsed().as_millis() as u64,
            "Request"
        );
    }
}

/// How long a refused request's unread body is still read (and discarded) after the answer.
pub(super) const LINGER: Duration = Duration::from_secs(5);

/// What became of a request body, for the proxy to tell a timeout from an upstream failure
/// (an h2 upstream hop does not hand the body's error back).
#[derive(Debug, Default)]
pub(super) struct BodyState {
    timed_out: AtomicBool,
}

impl BodyState {
    pub(super) fn timed_out(&self) -> bool {
        self.timed_out.load(Relaxed)
    }
}

/// The client's request body: cut with [`BodyTimeout`] when it is not complete within the
/// deadline, and, when dropped unread (a refusal answered before the body: 401, 413, 421,
/// 429, 503...), still read and discarded for up to [`LINGER`] and `max` bytes, as nginx
/// does. Without that, hyper resets the h2 stream (or closes the connection) right after
/// the answer, and a client still sending sees the reset instead of the status.
pub(super) struct RequestBody<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    inner: Option<B>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    read: u64,
    max: u64,
    ended: bool,
    state: Arc<BodyState>,
}

impl<B> RequestBody<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    pub(super) fn new(inner: B, timeout: Duration, max: u64) -> (Self, Arc<BodyState>) {
        let state = Arc::<BodyState>::default();
        let body = Self {
            ended: inner.is_end_stream(),
            inner: Some(inner),
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            read: 0,
            max,
            state: state.clone(),
        };
        (body, state)
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut().filter(|_| !this.ended) else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                }
                this.ended = inner.is_end_stream();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.ended = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    // Not worth lingering on: a body this slow will not end in time.
                    this.ended = true;
                    this.state.timed_out.store(true, Relaxed);
                    Poll::Ready(Some(Err(BodyTimeout(this.timeout).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl<B> Drop for RequestBody<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    fn drop(&mut self) {
        if self.ended || self.read >= self.max {
            return;
        }
        let (Some(mut body), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let mut budget = self.max - self.read;
        runtime.spawn(async move {
            let drain = async {
                while let Some(Ok(frame)) = body.frame().await {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    match budget.checked_sub(n) {
                        Some(left) => budget = left,
                        None => return,
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        });
    }
}

/// An upstream response body that holds what the request took (an upstream permit, a
/// stream on a pooled connection) until the body ends or is dropped: an SSE stream holds
/// them as long as it is open.
pub(super) struct Holding<G> {
    inner: Incoming,
    held: Option<G>,
}

impl<G: Send + Sync + Unpin + 'static> Holding<G> {
    pub(super) fn wrap(inner: Incoming, held: G) -> ProxyBody {
        let held = (!inner.is_end_stream()).then_some(held);
        Holding { inner, held }.boxed()
    }
}

impl<G: Unpin> Body for Holding<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // A body that says it has ended is dropped by hyper right away, which lets go of
        // `held`; asking `is_end_stream` after every frame would cost an h2 lock each.
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.held = None;
        }
        polled.map(|f| f.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
