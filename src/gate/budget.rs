//! The gate's budget for the request bodies it buffers: bytes held across all connections
//! (`max-buffered-body-bytes`), and a share of them per source (a quarter, as with
//! connections), so that one host's unfinished bodies cannot take the budget from all the
//! others. Bytes are taken as they arrive, before they are kept: what is held is what is in
//! memory, never what a `Content-Length` merely announces.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget; shared by every request of the gate.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    global: Arc<Semaphore>,
    per_source: u64,
    held: Mutex<HashMap<IpAddr, u64>>,
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
            per_source: (total / 4).max(max_body).min(total),
            held: Mutex::default(),
        })
    }

    /// An empty hold for a body from `source` (see [`crate::source::source_of`]).
    pub(crate) fn hold(self: &Arc<Self>, source: IpAddr) -> BodyHold {
        BodyHold {
            budget: self.clone(),
            source,
            bytes: 0,
            permit: None,
        }
    }
}

/// The bytes one body holds; released when dropped (after the body went upstream).
#[derive(Debug)]
pub(crate) struct BodyHold {
    budget: Arc<BodyBudget>,
    source: IpAddr,
    bytes: u64,
    permit: Option<OwnedSemaphorePermit>,
}

impl BodyHold {
    /// Takes `n` more bytes; false, taking nothing, when the source's share or the whole
    /// budget has not that much left.
    pub(crate) fn grow(&mut self, n: u64) -> bool {
        let Ok(permits) = u32::try_from(n) else {
            return false;
        };
        let budget = &self.budget;
        let mut held = budget.held.lock().unwrap_or_else(PoisonError::into_inner);
        let source = held.get(&self.source).copied().unwrap_or(0);
        if source.saturating_add(n) > budget.per_source {
            return false;
        }
        let Ok(p) = budget.global.clone().try_acquire_many_owned(permits) else {
            return false;
        };
        held.insert(self.source, source + n);
        match &mut self.permit {
            Some(permit) => permit.merge(p),
            None => self.permit = Some(p),
        }
        self.bytes += n;
        true
    }
}

impl Drop for BodyHold {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut held = self
            .budget
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.source) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                held.remove(&self.source);
            }
        }
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
        assert!(budget.held.lock().unwrap().len() == 2);
    }

    #[test]
    fn a_share_is_never_less_than_one_whole_body() {
        let budget = BodyBudget::new(100, 100);
        let mut h = budget.hold("192.0.2.1".parse().unwrap());
        assert!(h.grow(100));
    }
}
