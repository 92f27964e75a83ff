//! Rate limits: a token bucket per (limit, client key), in a bounded map.
//!
//! Hand-written rather than `governor`: the gate needs all-or-nothing charges for a batch,
//! an exact Retry-After, and a hard bound on the number of buckets with idle ones evicted
//! first, which is a few lines here. Time is passed in, so the arithmetic is tested
//! without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::rules::Glob;

/// What a client is counted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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
pub struct Limited {
    /// The limit's name.
    pub limit: String,
    /// Time until the bucket holds enough again.
    pub retry_after: Duration,
}

impl Limited {
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
    pub fn charge(&self, charges: &[(usize, String)]) -> Result<(), Limited> {
        self.charge_at(self.epoch.elapsed(), charges)
    }

    /// Charges one token per `(limit index, client key)` at `now` (time since any fixed
    /// start): all of them or, if any bucket is short, none.
    pub fn charge_at(&self, now: Duration, charges: &[(usize, String)]) -> Result<(), Limited> {
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
        let mut worst: Option<Limited> = None;
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
                    worst = Some(Limited {
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
}
