//! Latency samples and their percentiles.

use std::time::Duration;

use serde::Serialize;

/// Latency samples in microseconds; kept whole (a few MB for a million samples) so the
/// percentiles are exact, not estimated.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<u32>);

/// Percentiles of a run, in microseconds (0 when there were no samples).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Percentiles {
    /// Median.
    pub p50: u32,
    /// 90th percentile.
    pub p90: u32,
    /// 99th percentile.
    pub p99: u32,
    /// Slowest.
    pub max: u32,
}

impl Latencies {
    /// Adds one sample (saturating at u32::MAX µs, about 71 minutes).
    pub fn record(&mut self, d: Duration) {
        self.0
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    /// Adds another task's samples.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Nearest-rank percentiles.
    pub fn percentiles(mut self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        self.0.sort_unstable();
        let v = &self.0;
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Percentiles {
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: v[v.len() - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut lat = Latencies::default();
        for us in (1..=100).rev() {
            lat.record(Duration::from_micros(us));
        }
        let p = lat.percentiles();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50, 90, 99, 100));
        assert_eq!(Latencies::default().percentiles(), Percentiles::default());
        let mut one = Latencies::default();
        one.record(Duration::from_micros(7));
        assert_eq!(one.percentiles().p99, 7);
    }
}
