//! The gate's budget for the request bodies it buffers: bytes held across all connections
//! (`max-buffered-body-bytes`), and a share of them per source (a quarter, as with
//! connections), so that one host's unfinished bodies cannot take the budget from all the
//! others. Bytes are taken as they arrive, before they are kept: what is held is what is in
//! memory, never what a `Content-Length` merely announces.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::source::{SourceShares, SourceSlot};

/// The budget; shared by every request of the gate.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    global: Arc<Semaphore>,
    /// Bytes per source; the sources come already keyed (see `hold`).
    shares: Arc<SourceShares>,
}

impl BodyBudget {
    /// `total` bytes in all; each source at most a quarter of them, but never less than one
    /// whole body of `max_body` bytes.
    pub(crate) fn new(total: u64, max_body: u64) -> Arc<Self> {
        let permits = usize::try_from(total)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Arc::new(Self {
            global: Arc::new(Semaphore::new(permits)),
            shares: SourceShares::new((total / 4).max(max_body).min(total), 128),
        })
    }

    /// An empty hold for a body from `source` (already keyed by
    /// [`crate::source::source_of`]).
    pub(crate) fn hold(self: &Arc<Self>, source: IpAddr) -> BodyHold {
        BodyHold {
            budget: self.clone(),
            share: self.shares.empty(source),
            permit: None,
        }
    }
}

/// The bytes one body holds; released when dropped (after the body went upstream).
#[derive(Debug)]
pub(crate) struct BodyHold {
    budget: Arc<BodyBudget>,
    share: SourceSlot,
    permit: Option<OwnedSemaphorePermit>,
}

impl BodyHold {
    /// Takes `n` more bytes; false, taking nothing, when the source's share or the whole
    /// budget has not that much left.
    pub(crate) fn grow(&mut self, n: u64) -> bool {
        let Ok(permits) = u32::try_from(n) else {
            return false;
        };
        // The global permit first: if the share then refuses, dropping it gives it back.
        let Ok(p) = self.budget.global.clone().try_acquire_many_owned(permits) else {
            return false;
        };
        if !self.share.grow(n) {
            return false;
        }
        match &mut self.permit {
            Some(permit) => permit.merge(p),
            None => self.permit = Some(p),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_share_and_all_at_most_the_total() {
        let budget = BodyBudget::new(400, 50);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut first = budget.hold(a);
        assert!(first.grow(60));
        assert!(first.grow(40));
        assert!(!first.grow(1), "past the source's share of 100");
        let mut other = budget.hold(a);
        assert!(!other.grow(1), "the share is per source, not per body");
        drop(first);
        assert!(other.grow(100), "released when the body is dropped");
        let mut holds: Vec<_> = ["192.0.2.3", "192.0.2.4", "192.0.2.5"]
            .iter()
            .map(|ip| budget.hold(ip.parse().unwrap()))
            .collect();
        for h in &mut holds {
            assert!(h.grow(100));
        }
        let mut last = budget.hold(b);
        assert!(!last.grow(1), "the whole budget is held");
        drop(holds);
        assert!(last.grow(100));
        assert_eq!(budget.global.available_permits(), 200);
    }

    #[test]
    fn a_share_is_never_less_than_one_whole_body() {
        let budget = BodyBudget::new(100, 100);
        let mut h = budget.hold("192.0.2.1".parse().unwrap());
        assert!(h.grow(100));
    }
}
