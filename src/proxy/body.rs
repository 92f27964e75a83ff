//! The response body as the client receives it: upstream frames passed on one by one as
//! they arrive (no buffering, no coalescing), counted, and logged when the response ends.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tracing::info;

use super::metrics::{ProxyMetrics, StreamGuard};
use super::{is_event_stream, BoxError, ProxyBody};

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
                // hyper stops polling once the body says it has ended.
                if self.inner.is_end_stream() {
                    self.complete = true;
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
        self.log.metrics.response_bytes(self.bytes);
        info!(
            client.addr = %self.log.peer,
            http.method = %self.log.method,
            http.path = %self.log.path,
            http.status = self.status.as_u16(),
            http.bytes = self.bytes,
            http.stream = self.stream.is_some(),
            http.complete = self.complete,
            duration_ms = self.log.started.elapsed().as_millis() as u64,
            "Request"
        );
    }
}
