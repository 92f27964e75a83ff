//! Client addresses as the budgets count them: one IPv4 address, or one IPv6 prefix (a
//! subscriber is handed a whole /64, so counting per /128 would give one client 2^64
//! budgets).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// The source `ip` is counted under: IPv4 (and IPv4-mapped IPv6) as the address, IPv6 as
/// its first `ipv6_prefix` bits (clamped to 0..=128), the rest zeroed.
pub fn source_of(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// What each source holds of a shared resource (connections, upstream requests, buffered
/// body bytes), capped per source so that one host cannot take what all the others need.
#[derive(Debug)]
pub struct SourceShares {
    held: Mutex<HashMap<IpAddr, u64>>,
    max: u64,
    ipv6_prefix: u8,
}

impl SourceShares {
    /// At most `max` per source, IPv6 counted per `ipv6_prefix`.
    pub fn new(max: u64, ipv6_prefix: u8) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::default(),
            max,
            ipv6_prefix,
        })
    }

    /// One more for `ip`'s source, or `None` if it holds `max` already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut slot = self.empty(ip);
        slot.grow(1).then_some(slot)
    }

    /// A slot holding nothing yet for `ip`'s source; see [`SourceSlot::grow`].
    pub fn empty(self: &Arc<Self>, ip: IpAddr) -> SourceSlot {
        SourceSlot {
            shares: self.clone(),
            source: source_of(ip, self.ipv6_prefix),
            amount: 0,
        }
    }
}

/// What one user (a connection, a request, a body) holds of its source's share, until
/// dropped; see [`SourceShares`].
#[derive(Debug)]
pub struct SourceSlot {
    shares: Arc<SourceShares>,
    source: IpAddr,
    amount: u64,
}

impl SourceSlot {
    /// Takes `n` more; false, taking nothing, when the source would hold more than its
    /// share. No entry is made for a source refused with nothing held.
    pub fn grow(&mut self, n: u64) -> bool {
        let shares = &self.shares;
        let mut held = shares.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = held.get(&self.source).copied().unwrap_or(0);
        match now.checked_add(n) {
            Some(total) if total <= shares.max => {
                held.insert(self.source, total);
                self.amount += n;
                true
            }
            _ => false,
        }
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if self.amount == 0 {
            return;
        }
        let mut held = self
            .shares
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.source) {
            *n = n.saturating_sub(self.amount);
            if *n == 0 {
                held.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(ip: &str, prefix: u8) -> String {
        source_of(ip.parse().unwrap(), prefix).to_string()
    }

    #[test]
    fn ipv6_is_counted_per_prefix_and_ipv4_per_address() {
        for (ip, prefix, expected) in [
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::"),
            ("2001:db8:1:2::1", 64, "2001:db8:1:2::"),
            ("2001:db8:1:2:aaaa::1", 48, "2001:db8:1::"),
            ("2001:db8:1:2::1", 128, "2001:db8:1:2::1"),
            ("2001:db8:1:2::1", 0, "::"),
            ("::ffff:192.0.2.7", 64, "192.0.2.7"),
            ("192.0.2.7", 64, "192.0.2.7"),
            ("::1", 64, "::"),
        ] {
            assert_eq!(source(ip, prefix), expected, "{ip}/{prefix}");
        }
    }

    #[test]
    fn a_source_holds_at_most_its_share_and_leaves_no_entry_when_refused() {
        let shares = SourceShares::new(2, 64);
        let a = "2001:db8::1".parse().unwrap();
        let same_64 = "2001:db8::ffff".parse().unwrap();
        let first = shares.admit(a).unwrap();
        let second = shares.admit(same_64).unwrap();
        assert!(shares.admit(a).is_none());
        assert!(shares.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
        drop(first);
        assert!(shares.admit(a).is_some());
        drop(second);
        let none = SourceShares::new(0, 64);
        assert!(none.admit(a).is_none());
        assert!(none.held.lock().unwrap().is_empty());
    }
}
