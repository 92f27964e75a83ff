//! Log lines a peer can cause, throttled: a line per event would let anyone fill the log
//! (and the disk) by repeating it, and none at all would hide the attack.

use std::time::{Duration, Instant};

/// Lets one line through per [`LogThrottle::EVERY`] and counts the rest. A line per failed
/// handshake would let anyone fill the log with garbage connections, and none at all would
/// hide them; so the first in each period is logged at info with the count not logged before
/// it (every one is in the metrics, and at debug).
#[derive(Debug, Default)]
pub struct LogThrottle {
    last: std::sync::Mutex<Option<Instant>>,
    not_logged: std::sync::atomic::AtomicU64,
}

impl LogThrottle {
    /// One line per this period.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// `Some(lines not logged since the last)` if this one may be logged.
    pub fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = Instant::now();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *last {
            Some(t) if now.duration_since(t) < Self::EVERY => {
                self.not_logged.fetch_add(1, Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.not_logged.swap(0, Relaxed))
            }
        }
    }
}

/// Logs a peer-caused event through a [`LogThrottle`]: at `$level` with `not_logged` (the
/// lines held back since the last one) when the throttle lets it through, else at debug.
///
/// `throttled!(self.log, warn, client.addr = %peer, "Refused request")`
#[macro_export]
macro_rules! throttled {
    ($throttle:expr, $level:ident, $($rest:tt)+) => {
        match $throttle.admit() {
            Some(not_logged) => ::tracing::$level!(not_logged, $($rest)+),
            None => ::tracing::debug!($($rest)+),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_lets_the_first_through_and_counts_the_rest() {
        let throttle = LogThrottle::default();
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..999 {
            assert_eq!(throttle.admit(), None);
        }
        // A period later (the clock moved back instead of waiting for it).
        *throttle.last.lock().unwrap() = Some(Instant::now() - LogThrottle::EVERY);
        assert_eq!(throttle.admit(), Some(999));
        assert_eq!(throttle.admit(), None);
    }
}
