//! Reading a request body for inspection: within `request-body-timeout` and
//! `max-body-bytes`, taking its bytes from the body budget (see [`super::budget`]), then
//! sent upstream from memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH};
use http::StatusCode;
use http_body_util::BodyExt;

use super::budget::BodyHold;
use super::caller::Caller;
use super::reason::RefusalReason;
use super::{jsonrpc, BoxError, Gate, Refused};

impl Gate {
    /// Reads the body within `request-body-timeout`, taking its bytes from the body budget
    /// (see [`budget`]) chunk by chunk before keeping them. The hold is released when the
    /// body the gate built is dropped (sent upstream).
    pub(super) async fn read_body<B>(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        body: B,
    ) -> Result<(Bytes, BodyHold), Refused>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let limit = self.max_body_bytes;
        let too_big = || {
            self.refuse_whole(
                caller,
                StatusCode::PAYLOAD_TOO_LARGE,
                RefusalReason::BodyTooLarge,
                "body-size",
                jsonrpc::INVALID_REQUEST,
                &format!("request body larger than max-body-bytes ({limit} bytes)"),
            )
        };
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_big());
        }
        let no_budget = || {
            let mut r = self.refuse_whole(
                caller,
                StatusCode::SERVICE_UNAVAILABLE,
                RefusalReason::BodyBudget,
                "body-budget",
                jsonrpc::INVALID_REQUEST,
                "the gate holds as many request bodies as max-buffered-body-bytes allows; retry shortly",
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            r
        };
        let mut hold = self.body_budget.hold(caller.source);
        let read = async {
            // Not the declared length: that is only what the client says it will send.
            let mut buf: Vec<u8> = Vec::new();
            tokio::pin!(body);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    let e: BoxError = e.into();
                    if crate::deadline::BodyTimeout::in_chain(&*e) {
                        ReadError::Timeout
                    } else {
                        ReadError::Body(e)
                    }
                })?;
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                let total = (buf.len() + data.len()) as u64;
                if total > limit {
                    return Err(ReadError::TooBig);
                }
                if !hold.grow(data.len() as u64) {
                    return Err(ReadError::NoBudget);
                }
                buf.extend_from_slice(&data);
            }
            Ok(buf)
        };
        let timeout = self.budgets.request_body_timeout;
        let outcome = tokio::time::timeout(timeout, read).await;
        match outcome {
            Ok(Ok(buf)) => Ok((Bytes::from(buf), hold)),
            Ok(Err(ReadError::TooBig)) => Err(too_big()),
            Ok(Err(ReadError::NoBudget)) => Err(no_budget()),
            Ok(Err(ReadError::Body(e))) => Err(self.refuse_whole(
                caller,
                StatusCode::BAD_REQUEST,
                RefusalReason::ParseError,
                "parse",
                jsonrpc::PARSE_ERROR,
                &format!("could not read the request body: {e}"),
            )),
            Ok(Err(ReadError::Timeout)) | Err(_) => Err(self.refuse_whole(
                caller,
                StatusCode::REQUEST_TIMEOUT,
                RefusalReason::BodyTimeout,
                "body-timeout",
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "the request body did not arrive whole within request-body-timeout ({})",
                    humantime::format_duration(timeout)
                ),
            )),
        }
    }
}

/// Why a body could not be read whole.
enum ReadError {
    TooBig,
    NoBudget,
    /// The proxy's own `request-body-timeout` cut the body first.
    Timeout,
    Body(BoxError),
}

/// A body the gate read, on its way upstream, holding its share of
/// `max-buffered-body-bytes` until it is dropped.
pub(super) struct Buffered {
    pub(super) data: Option<Bytes>,
    pub(super) _hold: BodyHold,
}

impl hyper::body::Body for Buffered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.data.take().map(|d| Ok(hyper::body::Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
