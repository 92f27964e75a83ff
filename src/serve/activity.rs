//! Requests in flight on one connection, and when it last went quiet: what the
//! first-request and idle timeouts judge.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Body;

use crate::metrics::Closed;

/// How long a connection may wait for its first request, and then between requests.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub(super) first_request: Duration,
    pub(super) idle: Duration,
}

/// Requests in flight on one connection (a response counts until its body ends) and when
/// the count last dropped to zero: what the first-request and idle timeouts judge.
#[derive(Debug)]
pub(super) struct Activity {
    pub(super) in_flight: AtomicU64,
    /// Requests begun; 0 means none yet (the first-request timeout applies).
    begun: AtomicU64,
    /// When the last request ended (or the connection started).
    quiet_since: Mutex<Instant>,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            begun: AtomicU64::new(0),
            quiet_since: Mutex::new(Instant::now()),
        }
    }

    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// When to look again, or why the connection is to be closed now.
    pub(super) fn expired(&self, timeouts: &Timeouts) -> Result<Instant, Closed> {
        let now = Instant::now();
        if self.in_flight.load(Relaxed) > 0 {
            return Ok(now + timeouts.idle);
        }
        let quiet_since = *self
            .quiet_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (limit, why) = match self.begun.load(Relaxed) {
            0 => (timeouts.first_request, Closed::FirstRequestTimeout),
            _ => (timeouts.idle, Closed::IdleTimeout),
        };
        let deadline = quiet_since + limit;
        if now >= deadline {
            Err(why)
        } else {
            Ok(deadline)
        }
    }
}

/// One request in flight; see [`Activity`].
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first: a timer that sees the count at zero must see the new time.
        *self
            .0
            .quiet_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted in flight until it ends or is dropped.
    pub(super) struct Busy<B> {
        #[pin]
        body: B,
        _busy: InFlight,
    }
}

impl<B> Busy<B> {
    /// `body`, keeping `busy` counted until it ends.
    pub(super) fn new(body: B, busy: InFlight) -> Self {
        Self { body, _busy: busy }
    }
}

impl<B: Body> Body for Busy<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
