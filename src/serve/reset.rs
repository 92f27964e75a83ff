//! The rapid-reset detector (CVE-2023-44487): a connection whose streams are mostly reset
//! before they are answered is sent GOAWAY and closed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Streams a connection may see before [`ResetWatch`] judges it.
pub(super) const RESET_FLOOD_MIN_STREAMS: u64 = 100;
/// A stream reset sooner than this after it started, before its response, is premature.
pub(super) const PREMATURE_RESET_WINDOW: Duration = Duration::from_secs(1);
/// At this many streams both counts are halved, so that a long-lived connection (a client
/// sidecar's tunnel) is judged on its recent streams: answered requests long ago cannot
/// pay for a flood now.
pub(super) const RESET_WATCH_DECAY: u64 = 1000;

/// Premature resets on one connection: streams whose request was dropped (the client reset
/// the stream, or left) before the service answered, within [`PREMATURE_RESET_WINDOW`].
///
/// h2 itself only limits resets of streams still waiting to be accepted; a server that
/// keeps up accepts every stream of a rapid-reset flood (CVE-2023-44487) and works on each.
/// As Envoy does, a connection on which at least half of [`RESET_FLOOD_MIN_STREAMS`] or more
/// streams ended that way is sent GOAWAY and closed. No crate does this at the service layer.
#[derive(Debug, Default)]
pub(super) struct ResetWatch {
    pub(super) streams: AtomicU64,
    pub(super) premature: AtomicU64,
    pub(super) flood: tokio::sync::Notify,
}

impl ResetWatch {
    pub(super) fn started(self: &Arc<Self>) -> StreamGuard {
        let streams = self.streams.fetch_add(1, Relaxed) + 1;
        if streams >= RESET_WATCH_DECAY {
            // Not atomic as a pair; a heuristic does not need it to be.
            self.streams.store(streams / 2, Relaxed);
            self.premature
                .store(self.premature.load(Relaxed) / 2, Relaxed);
        }
        StreamGuard {
            watch: self.clone(),
            started: Instant::now(),
            answered: false,
        }
    }
}

/// Counts its stream as a premature reset if dropped unanswered; see [`ResetWatch`].
pub(super) struct StreamGuard {
    watch: Arc<ResetWatch>,
    started: Instant,
    answered: bool,
}

impl StreamGuard {
    pub(super) fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.answered || self.started.elapsed() > PREMATURE_RESET_WINDOW {
            return;
        }
        let premature = self.watch.premature.fetch_add(1, Relaxed) + 1;
        let streams = self.watch.streams.load(Relaxed);
        if streams >= RESET_FLOOD_MIN_STREAMS && premature * 2 >= streams {
            // Stored: the connection task may be busy and pick it up on its next poll.
            self.watch.flood.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn flooded(watch: &ResetWatch) -> bool {
        // A stored notification resolves at once; 10 ms only bounds the wait for none.
        tokio::time::timeout(Duration::from_millis(10), watch.flood.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn answered_streams_never_flood() {
        let watch = Arc::new(ResetWatch::default());
        for _ in 0..5000 {
            watch.started().answered();
        }
        assert!(!flooded(&watch).await);
    }

    #[tokio::test]
    async fn a_majority_of_quick_unanswered_drops_floods_once_past_the_minimum() {
        let watch = Arc::new(ResetWatch::default());
        for _ in 0..RESET_FLOOD_MIN_STREAMS - 1 {
            drop(watch.started());
        }
        assert!(!flooded(&watch).await, "judged before the minimum");
        drop(watch.started());
        assert!(flooded(&watch).await);
    }

    #[tokio::test]
    async fn a_minority_of_drops_or_slow_drops_do_not_flood() {
        let watch = Arc::new(ResetWatch::default());
        for i in 0..1000 {
            let stream = watch.started();
            if i % 3 == 0 {
                drop(stream);
            } else {
                stream.answered();
            }
        }
        // Long calls the client gave up on are not premature.
        for _ in 0..1000 {
            let mut stream = watch.started();
            stream.started -= PREMATURE_RESET_WINDOW * 2;
            drop(stream);
        }
        assert!(!flooded(&watch).await);
    }

    #[tokio::test]
    async fn old_answered_streams_do_not_pay_for_a_flood_now() {
        let watch = Arc::new(ResetWatch::default());
        for _ in 0..100_000 {
            watch.started().answered();
        }
        for _ in 0..RESET_WATCH_DECAY {
            drop(watch.started());
        }
        assert!(flooded(&watch).await);
    }
}
