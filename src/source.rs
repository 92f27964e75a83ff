//! Client addresses as the budgets count them: one IPv4 address, or one IPv6 prefix (a
//! subscriber is handed a whole /64, so counting per /128 would give one client 2^64
//! budgets).

use std::net::{IpAddr, Ipv6Addr};

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
}
