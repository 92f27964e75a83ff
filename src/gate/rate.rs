//! Rate limits: a token bucket per (limit, client key), in a bounded map.
//!
//! Hand-written rather than `governor`: the gate needs all-or-nothing charges for a batch,
//! an exact Retry-After, and a hard bound on the number of buckets with idle ones evicted
//! first, which is a few lines here. Time is passed in, so the arithmetic is tested
//! without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::rules::Glob;

/// What a client is counted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KeyKind {
    /// The mTLS client identity; without one the token subject, then the address.
    Identity,
    /// The token subject; without one the address.
    Subject,
    /// The client's IP address.
    Address,
}

/// One `[[rate-limit]]` entry, validated.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Limit {
    /// `name`, or `rate-limit[N]`.
    pub name: String,
    /// The methods this limit counts (its class); the first limit whose `method` matches a
    /// message counts it. Requests without a JSON-RPC method (GET, DELETE) count as `""`,
    /// which only `*` matches.
    pub method: Glob,
    /// What a client is counted as.
    pub key: KeyKind,
    /// Sustained rate.
    pub per_minute: u32,
    /// Bucket size: how many may come at once after a quiet spell.
    pub burst: u32,
}

impl Limit {
    fn per_second(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }
}

/// A charge refused: which limit, and when one more would fit.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimited {
    /// The limit's name.
    pub limit: String,
    /// Time until the bucket holds enough again.
    pub retry_after: Duration,
}

impl RateLimited {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        (self.retry_after.as_secs_f64().ceil() as u64).max(1)
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Duration,
}

/// The limits and their buckets.
#[derive(Debug)]
pub struct Limiter {
    limits: Vec<Limit>,
    buckets: Mutex<HashMap<(usize, String), Bucket>>,
    max_buckets: usize,
    epoch: Instant,
}

/// Buckets kept at most by default: a few MB at worst.
pub const DEFAULT_MAX_BUCKETS: usize = 100_000;

impl Limiter {
    /// A limiter keeping at most `max_buckets` buckets.
    pub fn new(limits: Vec<Limit>, max_buckets: usize) -> Self {
        Self {
            limits,
            buckets: Mutex::default(),
            max_buckets: max_buckets.max(1),
            epoch: Instant::now(),
        }
    }

    /// The limits, in order.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// The limit that counts messages of `method` (first match).
    pub fn class_of(&self, method: &str) -> Option<usize> {
        self.limits.iter().position(|l| l.method.matches(method))
    }

    /// Charges one token per `(limit index, client key)`, now.
    pub fn charge(&self, charges: &[(usize, String)]) -> Result<(), RateLimited> {
        self.charge_at(self.epoch.elapsed(), charges)
    }

    /// Charges one token per `(limit index, client key)` at `now` (time since any fixed
    /// start): all of them or, if any bucket is short, none.
    pub fn charge_at(&self, now: Duration, charges: &[(usize, String)]) -> Result<(), RateLimited> {
        // A poisoned lock only means another request panicked mid-update; the buckets are
        // still plain numbers.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut needed: Vec<(&(usize, String), f64)> = Vec::new();
        for c in charges {
            match needed.iter_mut().find(|(k, _)| *k == c) {
                Some((_, n)) => *n += 1.0,
                None => needed.push((c, 1.0)),
            }
        }
        let mut worst: Option<RateLimited> = None;
        for (key, n) in &needed {
            let Some(limit) = self.limits.get(key.0) else {
                continue;
            };
            let tokens = buckets
                .get(*key)
                .map_or(f64::from(limit.burst), |b| refill(limit, b, now));
            if tokens < *n {
                let wait = Duration::from_secs_f64((n - tokens) / limit.per_second());
                if worst.as_ref().is_none_or(|w| wait > w.retry_after) {
                    worst = Some(RateLimited {
                        limit: limit.name.clone(),
                        retry_after: wait,
                    });
                }
            }
        }
        if let Some(w) = worst {
            return Err(w);
        }
        for (key, n) in needed {
            let Some(limit) = self.limits.get(key.0) else {
                continue;
            };
            if !buckets.contains_key(key) && buckets.len() >= self.max_buckets {
                self.evict(&mut buckets, now);
            }
            let tokens = buckets
                .get(key)
                .map_or(f64::from(limit.burst), |b| refill(limit, b, now));
            buckets.insert(
                key.clone(),
                Bucket {
                    tokens: tokens - n,
                    at: now,
                },
            );
        }
        Ok(())
    }

    /// Whether one more token would be there for `charge` at `now`, without taking it.
    pub fn peek_at(&self, now: Duration, charge: &(usize, String)) -> Result<(), RateLimited> {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(limit) = self.limits.get(charge.0) else {
            return Ok(());
        };
        let tokens = buckets
            .get(charge)
            .map_or(f64::from(limit.burst), |b| refill(limit, b, now));
        if tokens >= 1.0 {
            return Ok(());
        }
        Err(RateLimited {
            limit: limit.name.clone(),
            retry_after: Duration::from_secs_f64((1.0 - tokens) / limit.per_second()),
        })
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.len())
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room: first drops the buckets that have refilled (a full bucket is the same as
    /// none), then, if every bucket is in use, the least recently charged tenth.
    fn evict(&self, buckets: &mut HashMap<(usize, String), Bucket>, now: Duration) {
        buckets.retain(|(i, _), b| {
            self.limits
                .get(*i)
                .is_some_and(|l| refill(l, b, now) < f64::from(l.burst))
        });
        if buckets.len() < self.max_buckets {
            return;
        }
        let mut ages: Vec<Duration> = buckets.values().map(|b| b.at).collect();
        ages.sort_unstable();
        let cut = ages[(ages.len() / 10).min(ages.len() - 1)];
        buckets.retain(|_, b| b.at > cut);
    }
}

fn refill(limit: &Limit, b: &Bucket, now: Duration) -> f64 {
    let elapsed = now.saturating_sub(b.at).as_secs_f64();
    (b.tokens + elapsed * limit.per_second()).min(f64::from(limit.burst))
}

/// The key an address is counted under: an IPv4 address (IPv4-mapped IPv6 too) as itself,
/// an IPv6 address by its network of `prefix` bits, since one subscriber holds a whole /64
/// and may send from any address in it.
pub fn address_key(ip: IpAddr, prefix: u8) -> String {
    match crate::source::source_of(ip, prefix) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/{}", prefix.min(128)),
    }
}

/// The cheap per-address check before any token or body is looked at: an address that
/// caused more than `refusals-per-ip-per-minute` refusals (a token bucket of that size,
/// refilled at that rate) has its next requests refused unread, and those are not logged
/// or audited one by one but summed up: one audit record per address per minute.
#[derive(Debug)]
pub struct RefusalGuard {
    limiter: Limiter,
    summaries: Mutex<HashMap<String, Summary>>,
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    unrecorded: u64,
    recorded_at: Duration,
}

/// Addresses whose flood summary is kept at most.
const MAX_SUMMARIES: usize = 10_000;
/// One summary audit record per address per this.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

impl RefusalGuard {
    /// A guard allowing `per_minute` refusals per address per minute.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        Self {
            limiter: Limiter::new(
                vec![Limit {
                    name: "refusals-per-ip-per-minute".into(),
                    method: Glob::new("*").unwrap_or_else(|_| unreachable!("`*` is a glob")),
                    key: KeyKind::Address,
                    per_minute,
                    burst: per_minute,
                }],
                DEFAULT_MAX_BUCKETS,
            ),
            summaries: Mutex::default(),
        }
    }

    /// `Err` when `key` is over its refusals: refuse it unread.
    pub fn check(&self, key: &str) -> Result<(), RateLimited> {
        self.limiter
            .peek_at(self.limiter.epoch.elapsed(), &(0, key.to_owned()))
    }

    /// Counts one refusal against `key`.
    pub fn refused(&self, key: &str) {
        let _ = self.limiter.charge(&[(0, key.to_owned())]);
    }

    /// Counts one request of `key` refused unread; `Some(n)`: write the summary record now,
    /// for these `n` requests (this one included).
    pub fn flooded(&self, key: &str) -> Option<u64> {
        self.flooded_at(self.limiter.epoch.elapsed(), key)
    }

    fn flooded_at(&self, now: Duration, key: &str) -> Option<u64> {
        let mut map = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(key) && map.len() >= MAX_SUMMARIES {
            map.retain(|_, s| now.saturating_sub(s.recorded_at) < SUMMARY_EVERY);
            if map.len() >= MAX_SUMMARIES {
                map.clear();
            }
        }
        match map.get_mut(key) {
            Some(s) if now.saturating_sub(s.recorded_at) < SUMMARY_EVERY => {
                s.unrecorded += 1;
                None
            }
            Some(s) => {
                let n = s.unrecorded + 1;
                *s = Summary {
                    unrecorded: 0,
                    recorded_at: now,
                };
                Some(n)
            }
            None => {
                map.insert(
                    key.to_owned(),
                    Summary {
                        unrecorded: 0,
                        recorded_at: now,
                    },
                );
                Some(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(method: &str, per_minute: u32, burst: u32) -> Limit {
        Limit {
            name: format!("{method} limit"),
            method: Glob::new(method).unwrap(),
            key: KeyKind::Address,
            per_minute,
            burst,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn key(i: usize, k: &str) -> (usize, String) {
        (i, k.to_owned())
    }

    #[test]
    fn a_full_bucket_allows_burst_then_refills_at_the_rate() {
        // 60/min = 1 per second, bucket of 3.
        let l = Limiter::new(vec![limit("tools/call", 60, 3)], 10);
        let a = [key(0, "a")];
        for _ in 0..3 {
            l.charge_at(secs(10.0), &a).unwrap();
        }
        let refused = l.charge_at(secs(10.0), &a).unwrap_err();
        assert_eq!(refused.limit, "tools/call limit");
        assert_eq!(refused.retry_after, secs(1.0));
        assert_eq!(refused.retry_after_secs(), 1);
        // Half a second later, half a token: still short, by half a second.
        let refused = l.charge_at(secs(10.5), &a).unwrap_err();
        assert!((refused.retry_after.as_secs_f64() - 0.5).abs() < 1e-9);
        assert_eq!(refused.retry_after_secs(), 1);
        l.charge_at(secs(11.0), &a).unwrap();
        // A long pause refills to the burst, no further.
        for _ in 0..3 {
            l.charge_at(secs(1000.0), &a).unwrap();
        }
        assert!(l.charge_at(secs(1000.0), &a).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        // 2 per minute: one token every 30 s.
        let l = Limiter::new(vec![limit("*", 2, 1)], 10);
        l.charge_at(secs(0.0), &[key(0, "a")]).unwrap();
        let r = l.charge_at(secs(0.2), &[key(0, "a")]).unwrap_err();
        assert_eq!(r.retry_after_secs(), 30); // 29.8 s, rounded up
    }

    #[test]
    fn clients_and_classes_have_their_own_buckets() {
        let l = Limiter::new(vec![limit("tools/call", 60, 1), limit("*", 60, 1)], 10);
        assert_eq!(l.class_of("tools/call"), Some(0));
        assert_eq!(l.class_of("tools/list"), Some(1));
        assert_eq!(l.class_of(""), Some(1));
        l.charge_at(secs(0.0), &[key(0, "a")]).unwrap();
        assert!(l.charge_at(secs(0.0), &[key(0, "a")]).is_err());
        l.charge_at(secs(0.0), &[key(0, "b")]).unwrap();
        l.charge_at(secs(0.0), &[key(1, "a")]).unwrap();
    }

    #[test]
    fn a_batch_is_charged_all_or_nothing() {
        let l = Limiter::new(vec![limit("tools/call", 60, 2)], 10);
        // Three calls in one batch do not fit a bucket of two: none is charged.
        let three = [key(0, "a"), key(0, "a"), key(0, "a")];
        let refused = l.charge_at(secs(0.0), &three).unwrap_err();
        assert_eq!(refused.retry_after, secs(1.0));
        l.charge_at(secs(0.0), &three[..2]).unwrap();
        assert!(l.charge_at(secs(0.0), &three[..1]).is_err());
    }

    #[test]
    fn buckets_are_bounded_and_idle_ones_go_first() {
        let l = Limiter::new(vec![limit("*", 60, 1)], 3);
        for k in ["a", "b", "c"] {
            l.charge_at(secs(0.0), &[key(0, k)]).unwrap();
        }
        assert_eq!(l.len(), 3);
        // At 5 s all three have refilled: they are dropped, and nothing is lost by it.
        l.charge_at(secs(5.0), &[key(0, "d")]).unwrap();
        assert_eq!(l.len(), 1);
        // Every bucket in use: the least recently charged go.
        l.charge_at(secs(5.1), &[key(0, "e")]).unwrap();
        l.charge_at(secs(5.2), &[key(0, "f")]).unwrap();
        l.charge_at(secs(5.3), &[key(0, "g")]).unwrap();
        assert!(l.len() <= 3);
        // "d", the oldest, went: it has a full bucket again.
        l.charge_at(secs(5.3), &[key(0, "d")]).unwrap();
        for i in 0..1000 {
            let _ = l.charge_at(secs(6.0), &[key(0, &i.to_string())]);
            assert!(l.len() <= 3);
        }
    }

    #[test]
    fn ipv6_is_keyed_by_its_prefix_and_ipv4_by_itself() {
        let k = |s: &str, p| address_key(s.parse().unwrap(), p);
        assert_eq!(k("192.0.2.7", 64), "192.0.2.7");
        assert_eq!(k("::ffff:192.0.2.7", 64), "192.0.2.7");
        assert_eq!(k("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::/64");
        assert_eq!(
            k("2001:db8:1:2:ffff:ffff:ffff:ffff", 64),
            k("2001:db8:1:2::1", 64),
            "one /64 is one key"
        );
        assert_ne!(k("2001:db8:1:3::1", 64), k("2001:db8:1:2::1", 64));
        assert_eq!(k("2001:db8:1:2::1", 48), "2001:db8:1::/48");
        assert_eq!(k("2001:db8::1", 128), "2001:db8::1/128");
        assert_eq!(k("2001:db8::1", 0), "::/0");
    }

    #[test]
    fn the_refusal_guard_closes_after_its_budget_and_sums_up_once_a_minute() {
        let g = RefusalGuard::new(3);
        for _ in 0..3 {
            g.check("a").unwrap();
            g.refused("a");
        }
        let r = g.check("a").unwrap_err();
        assert_eq!(r.retry_after_secs(), 20);
        g.check("b").unwrap();
        // Refused unread: one summary now, then the count, a minute later.
        assert_eq!(g.flooded_at(secs(0.0), "a"), Some(1));
        for _ in 0..99 {
            assert_eq!(g.flooded_at(secs(1.0), "a"), None);
        }
        assert_eq!(g.flooded_at(secs(61.0), "a"), Some(100));
    }
}
