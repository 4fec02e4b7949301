//! An interface's name and addresses, and which of its subnets covers an address: the pure
//! part of the subnet lookup.

use std::net::IpAddr;

/// One address of an interface with its prefix length (`198.18.1.2/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// The network this prefix belongs to, as a CIDR (`198.18.1.0/24`).
    pub fn network(&self) -> String {
        match self.addr {
            IpAddr::V4(v4) => {
                let len = self.len.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let len = self.len.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                format!("{}/{len}", std::net::Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    /// Whether `addr` lies in this prefix's network (never across address families).
    pub fn covers(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let len = self.len.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let len = self.len.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What the subnet cache keeps per (netns, interface index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSubnets {
    pub name: String,
    pub prefixes: Vec<Prefix>,
}

impl InterfaceSubnets {
    /// The subnet of the connection: the interface's network that holds the source address;
    /// when none does (the source lives on another interface), the one that holds the
    /// gateway, which is on-link here by definition. The most specific wins.
    pub fn subnet_for(&self, source: IpAddr, gateway: IpAddr) -> Option<String> {
        let best = |addr: IpAddr| {
            self.prefixes
                .iter()
                .filter(|p| p.covers(addr))
                .max_by_key(|p| p.len)
                .map(Prefix::network)
        };
        best(source).or_else(|| best(gateway))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(addr: &str, len: u8) -> Prefix {
        Prefix {
            addr: addr.parse().expect("address"),
            len,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn networks_are_masked_cidrs() {
        assert_eq!(p("198.18.1.2", 24).network(), "198.18.1.0/24");
        assert_eq!(p("198.18.1.2", 32).network(), "198.18.1.2/32");
        assert_eq!(p("198.18.1.2", 0).network(), "0.0.0.0/0");
        assert_eq!(p("198.18.1.2", 40).network(), "198.18.1.2/32");
        assert_eq!(p("2001:db8::7", 64).network(), "2001:db8::/64");
        assert_eq!(p("2001:db8::7", 0).network(), "::/0");
    }

    #[test]
    fn coverage_never_crosses_families() {
        assert!(p("198.18.1.2", 24).covers(ip("198.18.1.200")));
        assert!(!p("198.18.1.2", 24).covers(ip("198.18.2.1")));
        assert!(p("198.18.1.2", 0).covers(ip("203.0.113.9")));
        assert!(!p("198.18.1.2", 0).covers(ip("::1")));
        assert!(p("2001:db8::7", 64).covers(ip("2001:db8::1:2")));
        assert!(!p("2001:db8::7", 64).covers(ip("2001:db8:0:1::1")));
    }

    #[test]
    fn the_subnet_is_the_one_holding_the_source_else_the_gateway() {
        let iface = InterfaceSubnets {
            name: "eth0".into(),
            prefixes: vec![p("198.18.1.2", 24), p("198.18.1.2", 16), p("198.18.3.2", 24)],
        };
        assert_eq!(
            iface.subnet_for(ip("198.18.1.2"), ip("198.18.1.1")).as_deref(),
            Some("198.18.1.0/24")
        );
        assert_eq!(
            iface.subnet_for(ip("198.19.0.5"), ip("198.18.3.1")).as_deref(),
            Some("198.18.3.0/24")
        );
        assert_eq!(iface.subnet_for(ip("10.0.0.1"), ip("10.0.0.2")), None);
    }
}
