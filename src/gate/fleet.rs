//! A fleet of server sidecars sharing their state on Redis (`[fleet] redis = "..."`): with
//! three replicas behind a balancer, a limit of 60 a minute holds for the fleet, not 3 × 60,
//! and a call held for approval on one replica is listed and decided through any (see
//! `approvals`).
//!
//! Each charge is one round trip: a Lua script (GCRA, the token bucket's arithmetic as one
//! timestamp per bucket) that reads Redis's own clock (`TIME`, not the replicas': their
//! clocks may disagree), checks every bucket the request charges, and updates them all or
//! none, as the local limiter does. Bucket keys are `PREFIX:rl:` and the SHA-256 of the
//! limit and client key, so a client's identity never sits in Redis in the clear and a key is
//! bounded whatever a subject holds.
//!
//! Redis down or slow never hangs a request: each call has `timeout` (default 50 ms), and on
//! failure the gate does what `on-failure` says: `local` (default) charges the replica's own
//! limiter, `refuse` answers 503. Either way an ERROR line (once per 10 s, with the count),
//! `gate_fleet_errors_total` and `gate_fleet_redis_up 0` say so, and `/readyz` stays ready.
//! The connection is made in the background and remade by itself (redis's connection
//! manager); no request waits for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{error, info};

use super::approval::Desk;
use super::metrics::GateMetrics;
use super::rate::{Limit, RateLimited};
use super::tools::Digest;
use crate::throttle::LogThrottle;

mod approvals;
mod pins;

pub(super) use self::approvals::FleetLedger;
pub(super) use self::pins::FleetPins;

/// `timeout` when `[fleet]` does not set it: what a charge may take in Redis.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// How often a lost connection is tried again in the background.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// What the gate does when Redis cannot answer in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OnFailure {
    /// Charge this replica's own limits (each replica then allows its own share).
    Local,
    /// Refuse the request (503): no call beyond the fleet's limits, at the cost of
    /// availability.
    Refuse,
}

impl OnFailure {
    /// The keyword, as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Refuse => "refuse",
        }
    }
}

/// `[fleet]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetSettings {
    /// `redis`: `redis://[user:password@]host:port[/db]`.
    pub redis: String,
    /// `timeout`: what one call to Redis may take (a charge; a held call written, listed or
    /// decided; the pins agreed).
    pub timeout: Duration,
    /// `on-failure`.
    pub on_failure: OnFailure,
    /// `key-prefix`: every key this fleet writes starts with it.
    pub key_prefix: String,
}

impl FleetSettings {
    /// The URL without its password, for logs and summaries.
    pub fn shown(&self) -> String {
        match self.redis.split_once('@') {
            Some((scheme_user, host)) => {
                let scheme = scheme_user.split("://").next().unwrap_or("redis");
                format!("{scheme}://***@{host}")
            }
            None => self.redis.clone(),
        }
    }
}

/// What one charge came to.
#[derive(Debug)]
pub(super) enum Charged {
    /// Every bucket had room; all were charged.
    Allowed,
    /// This limit's bucket is short; none was charged.
    Limited(RateLimited),
    /// Redis did not answer in time, or failed: nothing is known.
    Failed,
}

/// The connection to the fleet's Redis, and its health.
pub struct Fleet {
    settings: FleetSettings,
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    connecting: AtomicBool,
    /// Stopping: no longer kept alive in the store (see `approvals`).
    leaving: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
    script: redis::Script,
    up: AtomicBool,
    errors: AtomicU64,
    error_log: LogThrottle,
    metrics: Arc<GateMetrics>,
    /// This replica's name in the fleet's store (random per process): its held calls are
    /// listed only while it is alive.
    replica: String,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("redis", &self.settings.shown())
            .field("up", &self.up.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// GCRA over every bucket a request charges, all or none, on Redis's clock. KEYS: the
/// buckets; ARGV: per bucket, the emission interval times the tokens taken, and the
/// tolerance (emission interval times burst), in microseconds. Returns `{0, 0}`, or the
/// 1-based index of the first short bucket and the microseconds until it has room.
/// Timestamps are written with `%.0f`: Lua's `tostring` keeps 14 digits, and a microsecond
/// clock has 16, so it would round a bucket's time by up to 50 µs, sometimes into the future.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
for i, key in ipairs(KEYS) do
  local cost = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + cost
  if new_tat - tolerance > now then
    return {i, new_tat - tolerance - now}
  end
  tats[i] = new_tat
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', math.floor((tats[i] - now) / 1000) + 1000)
end
return {0, 0}
"#;

impl Fleet {
    /// A fleet client for `settings` (nothing connects yet: see [`Fleet::connect`]).
    pub fn new(
        settings: FleetSettings,
        metrics: Arc<GateMetrics>,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(settings.redis.as_str())?;
        metrics.fleet_configured();
        Ok(Arc::new(Self {
            settings,
            client,
            conn: Mutex::new(None),
            connecting: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            last_attempt: Mutex::new(None),
            script: redis::Script::new(GCRA),
            up: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            error_log: LogThrottle::default(),
            metrics,
            replica: approvals::replica_name(),
        }))
    }

    /// The settings.
    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    /// Whether the last call reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Calls that failed or timed out.
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    /// Connects in the background (at most one attempt at a time, one a second); the
    /// connection manager then reconnects by itself.
    pub fn connect(self: &Arc<Self>) {
        {
            let mut last = self
                .last_attempt
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        if self.connecting.swap(true, Relaxed) {
            return;
        }
        let fleet = self.clone();
        tokio::spawn(async move {
            let timeout = fleet.settings.timeout.max(Duration::from_millis(500));
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(fleet.settings.timeout))
                .set_number_of_retries(1);
            match ConnectionManager::new_with_config(fleet.client.clone(), config).await {
                Ok(conn) => {
                    *fleet.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
                    info!(redis = %fleet.settings.shown(), "Fleet state on Redis: connected");
                    fleet.back_up();
                }
                Err(e) => fleet.failed("connect", &e.to_string()),
            }
            fleet.connecting.store(false, Relaxed);
        });
    }

    fn failed(&self, op: &'static str, error: &str) {
        self.errors.fetch_add(1, Relaxed);
        self.metrics.fleet_error();
        let was_up = self.up.swap(false, Relaxed);
        let fallback = match (self.settings.on_failure, op) {
            (OnFailure::Local, "rate-limit") => "charging this replica's own rate limits",
            (OnFailure::Refuse, "rate-limit") => "refusing rate-limited requests (503)",
            (_, "pins") => "keeping this replica's own tool pins until Redis answers",
            (OnFailure::Local, _) => "holding and deciding approvals on this replica alone",
            (OnFailure::Refuse, _) => "refusing calls that need approval (503)",
        };
        if was_up {
            error!(redis = %self.settings.shown(), op, %error, fallback, "Fleet state on Redis unreachable");
        } else {
            crate::throttled!(self.error_log, error, redis = %self.settings.shown(), op, %error, fallback,
                "Fleet state on Redis unreachable");
        }
    }

    /// Charges `charges` (`(limit, client key, tokens)`) in Redis, all or none.
    pub(super) async fn charge(
        self: &Arc<Self>,
        limits: &[Limit],
        charges: &[(usize, &str, u32)],
    ) -> Charged {
        let mut invocation = self.script.prepare_invoke();
        // The limits charged, in the script's KEYS order (its answer names one by index).
        let mut charged = Vec::with_capacity(charges.len());
        for (class, key, tokens) in charges {
            let Some(limit) = limits.get(*class) else {
                continue;
            };
            // At least 1 µs a token: a rate beyond 60,000,000 a minute is not limited.
            let emission_us = 60_000_000 / u64::from(limit.per_minute.max(1));
            let bucket = Digest::of(format!("{}\u{0}{key}", limit.name).as_bytes());
            invocation
                .key(self.key(&format!("rl:{bucket}")))
                .arg(emission_us * u64::from(*tokens))
                .arg(emission_us * u64::from(limit.burst));
            charged.push(limit);
        }
        match self.invoke::<(i64, i64)>("rate-limit", &invocation).await {
            Some((0, _)) => Charged::Allowed,
            Some((i, wait_us)) => {
                let name = usize::try_from(i - 1)
                    .ok()
                    .and_then(|i| charged.get(i))
                    .map_or_else(String::new, |l| l.name.clone());
                Charged::Limited(RateLimited {
                    limit: name,
                    retry_after: Duration::from_micros(wait_us.max(0).unsigned_abs()),
                })
            }
            None => Charged::Failed,
        }
    }

    /// A key of this fleet's: `PREFIX:rest`.
    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.settings.key_prefix)
    }

    /// The connection, if made; else a connection is started and the failure said.
    fn conn(self: &Arc<Self>, op: &'static str) -> Option<ConnectionManager> {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if conn.is_none() {
            self.connect();
            // No connection yet: one still being made is not a failure (a failed one is said
            // by `connect`); the caller falls back for these few milliseconds.
            if !self.connecting.load(Relaxed) {
                self.failed(op, "not connected");
            }
        }
        conn
    }

    /// Runs `invocation` within `timeout`: `None`, and the failure said loudly, if Redis does
    /// not answer in time or fails.
    async fn invoke<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        op: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        let mut conn = self.conn(op)?;
        let called = tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async::<T>(&mut conn),
        )
        .await;
        self.answered(op, called)
    }

    /// What a call came to, and the fleet's health from it.
    fn answered<T>(
        &self,
        op: &'static str,
        called: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        match called {
            Ok(Ok(v)) => {
                self.back_up();
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(op, &e.to_string());
                None
            }
            Err(_) => {
                self.failed(op, &format!("no answer within {:?}", self.settings.timeout));
                None
            }
        }
    }

    /// Agrees `registry`'s first-use pins with the fleet (`trust-on-first-use`; else
    /// nothing).
    pub fn share_pins(self: &Arc<Self>, registry: &Arc<super::tools::Registry>) {
        registry.share_pins(Arc::new(FleetPins(self.clone())));
    }

    /// Shares `desk`'s held calls with the fleet: from here on, decisions taken through any
    /// replica reach this one's calls, and this replica is known to be alive.
    pub fn share_approvals(self: &Arc<Self>, desk: &Arc<Desk>) {
        approvals::watch(self.clone(), desk.clone());
    }

    fn back_up(&self) {
        self.metrics.fleet_up(true);
        if !self.up.swap(true, Relaxed) && self.errors.load(Relaxed) > 0 {
            info!(redis = %self.settings.shown(), "Fleet state on Redis reachable again: the fleet's rate limits and approvals apply");
        }
    }
}
