//! The client sidecar's h2 connections to the server sidecar: several, not one, so that the
//! tunnel carries more concurrent streams (SSE) than one connection allows.
//!
//! hyper-util's legacy `Client` multiplexes every request over a single h2 connection and,
//! once the server's `SETTINGS_MAX_CONCURRENT_STREAMS` is reached, queues the rest: an SSE
//! stream past the limit would wait forever for one of the open ones to end. Here, as Envoy
//! does, a request that finds every connection full dials another one.
//!
//! The per-connection limit is the server's advertised `SETTINGS_MAX_CONCURRENT_STREAMS`,
//! read from the h2 connection (`current_max_send_streams`, which h2 updates when a SETTINGS
//! frame arrives, also mid-connection). A new connection is used only once the server's
//! first SETTINGS has arrived (one round trip; bounded by [`SETTINGS_WAIT`]), since streams
//! sent past a limit we have not seen yet would be queued by h2. A server that advertises
//! no limit (or whose SETTINGS did not arrive in time) gets [`DEFAULT_STREAMS_PER_CONNECTION`],
//! RFC 9113's recommended minimum, which any server should accept.
//!
//! A stream is counted from the request until its response body ends or is dropped
//! ([`Lease`]). Closed connections are dropped from the pool; connections idle for
//! [`POOL_IDLE_TIMEOUT`] are closed (below the server's default idle timeout, so that the
//! server never closes one under a request). When the upstream negotiates HTTP/1.1 (ALPN),
//! the pool steps aside and the proxy uses its legacy client.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::connect::{Connected, Connection as _};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::debug;

use super::{BoxError, ProxyBody};
use crate::tls::{PqConnector, PqStream};

/// Streams per connection when the server advertises no limit.
pub const DEFAULT_STREAMS_PER_CONNECTION: usize = 100;
/// How long a new connection waits for the server's SETTINGS before it is used anyway.
pub const SETTINGS_WAIT: Duration = Duration::from_secs(2);
/// Idle pooled connections are closed after this (the server's `idle-timeout` is 60 s).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the pool could not carry a request.
#[derive(Debug, thiserror::Error)]
pub(super) enum PoolError {
    /// The upstream negotiated HTTP/1.1: send it with the legacy client.
    #[error("the upstream does not speak h2")]
    Http1(Box<Request<ProxyBody>>),
    /// Dialing or the h2 handshake failed.
    #[error("cannot connect: {0}")]
    Connect(BoxError),
    /// The server allows no streams at all.
    #[error("the upstream accepts no h2 streams (SETTINGS_MAX_CONCURRENT_STREAMS = 0)")]
    NoStreams,
    /// The request failed on its connection.
    #[error(transparent)]
    Request(hyper::Error),
}

/// h2 connections to one TLS upstream.
pub(super) struct H2Pool {
    connector: PqConnector,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// One dial at a time: a burst past the limit dials one connection, not one each.
    dialing: tokio::sync::Mutex<()>,
    http1: AtomicBool,
    reaper: std::sync::Once,
    opened: AtomicU64,
    epoch: Instant,
}

/// One h2 connection and its streams in flight.
struct Conn {
    tx: http2::SendRequest<ProxyBody>,
    connected: Connected,
    in_flight: AtomicUsize,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS (`usize::MAX` until it arrives).
    max: Arc<AtomicUsize>,
    /// Milliseconds since the pool's epoch when the last stream ended.
    idle_since: AtomicU64,
}

impl Conn {
    fn limit(&self) -> usize {
        match self.max.load(Relaxed) {
            usize::MAX => DEFAULT_STREAMS_PER_CONNECTION,
            n => n,
        }
    }

    fn reserve(self: &Arc<Self>) -> Option<Lease> {
        let limit = self.limit();
        self.in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()?;
        Some(Lease(self.clone(), None))
    }
}

/// A stream's place on its connection, given back when dropped (with the response body).
pub(super) struct Lease(Arc<Conn>, Option<Weak<H2Pool>>);

impl Drop for Lease {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Relaxed) == 1 {
            if let Some(pool) = self.1.as_ref().and_then(Weak::upgrade) {
                self.0.idle_since.store(pool.now_ms(), Relaxed);
            }
        }
    }
}

impl H2Pool {
    pub(super) fn new(connector: PqConnector) -> Self {
        Self {
            connector,
            conns: Mutex::default(),
            dialing: tokio::sync::Mutex::const_new(()),
            http1: AtomicBool::new(false),
            reaper: std::sync::Once::new(),
            opened: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether the upstream spoke HTTP/1.1 when last dialed (the legacy client serves it).
    pub(super) fn is_http1(&self) -> bool {
        self.http1.load(Relaxed)
    }

    /// h2 connections dialed so far.
    pub(super) fn opened(&self) -> u64 {
        self.opened.load(Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Conn>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn try_reserve(self: &Arc<Self>) -> Option<(http2::SendRequest<ProxyBody>, Lease)> {
        let mut conns = self.conns();
        conns.retain(|c| !c.tx.is_closed());
        conns.iter().find_map(|c| {
            let mut lease = c.reserve()?;
            lease.1 = Some(Arc::downgrade(self));
            Some((c.tx.clone(), lease))
        })
    }

    /// Sends `req` on a connection with a free stream, dialing one if all are full. The
    /// lease must live as long as the response body.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        // One retry: a pooled connection can close between the check and the send (GOAWAY,
        // idle close), and then hyper hands the unsent request back.
        for attempt in 0..2 {
            if self.is_http1() {
                return Err(PoolError::Http1(Box::new(req)));
            }
            let (mut tx, lease) = match self.checkout(req.uri()).await {
                Ok(found) => found,
                Err(_) if self.is_http1() => return Err(PoolError::Http1(Box::new(req))),
                Err(e) => return Err(e),
            };
            match tx.try_send_request(req).await {
                Ok(mut res) => {
                    lease.0.connected.get_extras(res.extensions_mut());
                    return Ok((res, lease));
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if attempt == 0 => {
                        debug!(error = %e.error(), "h2 connection closed before the request was sent; retrying on another");
                        self.conns().retain(|c| !Arc::ptr_eq(c, &lease.0));
                        req = back;
                    }
                    _ => return Err(PoolError::Request(e.into_error())),
                },
            }
        }
        unreachable!("the second attempt returns")
    }

    async fn checkout(
        self: &Arc<Self>,
        uri: &Uri,
    ) -> Result<(http2::SendRequest<ProxyBody>, Lease), PoolError> {
        if let Some(found) = self.try_reserve() {
            return Ok(found);
        }
        let _dialing = self.dialing.lock().await;
        // Another request may have dialed while this one waited.
        if let Some(found) = self.try_reserve() {
            return Ok(found);
        }
        let conn = self.dial(uri).await?;
        let mut lease = conn.reserve().ok_or(PoolError::NoStreams)?;
        lease.1 = Some(Arc::downgrade(self));
        let found = (conn.tx.clone(), lease);
        self.conns().push(conn);
        Ok(found)
    }

    async fn dial(self: &Arc<Self>, uri: &Uri) -> Result<Arc<Conn>, PoolError> {
        use tower_service::Service as _;
        self.start_reaper();
        let stream: PqStream = self
            .connector
            .clone()
            .call(uri.clone())
            .await
            .map_err(|e| PoolError::Connect(e.into()))?;
        let connected = stream.connected();
        if !connected.is_negotiated_h2() {
            self.http1.store(true, Relaxed);
            return Err(PoolError::Connect("http/1.1 negotiated".into()));
        }
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            // Until the server's SETTINGS say otherwise: "no limit seen yet".
            .initial_max_send_streams(usize::MAX)
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake::<_, ProxyBody>(stream)
            .await
            .map_err(|e| PoolError::Connect(e.into()))?;
        let (max, settled) = (Arc::new(AtomicUsize::new(usize::MAX)), Arc::default());
        tokio::spawn(Driver {
            conn: Box::pin(conn),
            max: max.clone(),
            settled: Arc::clone(&settled),
            tick: Some(Box::pin(tokio::time::sleep(SETTINGS_TICK))),
            watch_until: tokio::time::Instant::now() + SETTINGS_WAIT,
        });
        // The server's SETTINGS is its first frame: one round trip.
        let _ = tokio::time::timeout(SETTINGS_WAIT, settled.notified_or_set()).await;
        self.opened.fetch_add(1, Relaxed);
        debug!(
            max_streams = max.load(Relaxed),
            "h2 connection to the upstream opened"
        );
        Ok(Arc::new(Conn {
            tx,
            connected,
            in_flight: AtomicUsize::new(0),
            max,
            idle_since: AtomicU64::new(self.now_ms()),
        }))
    }

    /// Closes connections idle for [`POOL_IDLE_TIMEOUT`], every few seconds, while the pool
    /// lives.
    fn start_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.reaper.call_once(move || {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    let Some(pool) = weak.upgrade() else { return };
                    let now = pool.now_ms();
                    let idle = POOL_IDLE_TIMEOUT.as_millis() as u64;
                    pool.conns().retain(|c| {
                        !c.tx.is_closed()
                            && (c.in_flight.load(Relaxed) > 0
                                || now.saturating_sub(c.idle_since.load(Relaxed)) < idle)
                    });
                }
            });
        });
    }
}

/// Set once, when the server's SETTINGS has arrived.
#[derive(Default)]
struct Settled {
    set: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Settled {
    fn mark(&self) {
        if !self.set.swap(true, Relaxed) {
            self.notify.notify_waiters();
        }
    }

    async fn notified_or_set(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.set.load(Relaxed) {
            notified.await;
        }
    }
}

/// How often a new connection looks for the server's SETTINGS while waiting for it.
const SETTINGS_TICK: Duration = Duration::from_millis(2);

/// Drives one h2 connection and publishes the server's stream limit after every poll.
/// hyper drives the h2 connection in a task of its own, so the arrival of SETTINGS does not
/// wake this one: until it is seen, a short timer does.
struct Driver {
    conn: Pin<Box<http2::Connection<PqStream, ProxyBody, TokioExecutor>>>,
    max: Arc<AtomicUsize>,
    settled: Arc<Settled>,
    tick: Option<Pin<Box<tokio::time::Sleep>>>,
    watch_until: tokio::time::Instant,
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let done = self.conn.as_mut().poll(cx);
        let max = self.conn.current_max_send_streams();
        self.max.store(max, Relaxed);
        if max != usize::MAX {
            self.settled.mark();
            self.tick = None;
        }
        let watch_until = self.watch_until;
        if let Some(tick) = self.tick.as_mut() {
            while tick.as_mut().poll(cx).is_ready() {
                let next = tokio::time::Instant::now() + SETTINGS_TICK;
                if next > watch_until {
                    self.tick = None;
                    break;
                }
                tick.as_mut().reset(next);
            }
        }
        match done {
            Poll::Ready(result) => {
                if let Err(e) = result {
                    debug!(error = %e, "h2 connection to the upstream ended");
                }
                // Wake a dial still waiting for SETTINGS: there will be none.
                self.settled.mark();
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
