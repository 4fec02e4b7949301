//! What a connection is counted under: the series key and the label policy (server port,
//! remote address, cap on series).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;

use crate::conntrack::{self, Nat};
use crate::ebpf::conn::{ConnKey, ConnStats, DIR_INBOUND, DIR_OUTBOUND};
use crate::gateway::Via;

/// How the remote address becomes the `remote` label (`--connection.remote-address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteMode {
    /// The address itself.
    Ip,
    /// The network of the address with this many leading bits (IPv4; IPv6 uses the same
    /// count of bits out of 128).
    Prefix(u8),
    /// No `remote` label value (empty).
    None,
}

impl std::str::FromStr for RemoteMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ip" => Ok(Self::Ip),
            "none" => Ok(Self::None),
            _ => {
                let bits = s
                    .strip_prefix("prefix:")
                    .ok_or_else(|| "expected ip, prefix:<N> or none".to_owned())?;
                let bits: u8 = bits.parse().map_err(|_| format!("{bits:?} is not a prefix length"))?;
                if bits > 128 {
                    return Err("a prefix length is at most 128".into());
                }
                Ok(Self::Prefix(bits))
            }
        }
    }
}

/// Parses `LOW-HIGH` (`--connection.ephemeral-port-range`).
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (low, high) = s
        .split_once('-')
        .ok_or_else(|| "expected LOW-HIGH, e.g. 32768-60999".to_owned())?;
    let low: u16 = low.trim().parse().map_err(|_| format!("{low:?} is not a port"))?;
    let high: u16 = high.trim().parse().map_err(|_| format!("{high:?} is not a port"))?;
    if low > high {
        return Err("the low port is above the high one".into());
    }
    Ok(low..=high)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// One series of the connection families.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub protocol: u8,
    /// The cgroup (v2) id; 0 when unknown or folded.
    pub cgroup_id: u64,
    /// `None` only for the overflow series.
    pub direction: Option<Direction>,
    /// The server side's port; `None` when ephemeral (or folded).
    pub port: Option<u16>,
    pub remote: String,
    /// The `address:port` the client dialed when NAT changed the destination (`remote` and
    /// `port` are then the backend reached); empty otherwise.
    pub service: String,
    /// The gateway the connection leaves through (`gateway`, `interface`, `subnet` labels);
    /// `None` when direct or when the lookup is off.
    pub via: Option<Arc<Via>>,
}

impl SeriesKey {
    /// The one series that connections beyond the cap fold into, per protocol.
    pub fn overflow(protocol: u8) -> Self {
        Self {
            protocol,
            cgroup_id: 0,
            direction: None,
            port: None,
            remote: "overflow".into(),
            service: String::new(),
            via: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LabelPolicy {
    pub ephemeral_ports: RangeInclusive<u16>,
    pub remote: RemoteMode,
    pub max_series: usize,
}

impl LabelPolicy {
    /// The series a connection belongs to, before the cap.
    pub fn series(&self, key: &ConnKey, stats: &ConnStats) -> SeriesKey {
        let direction = match stats.direction {
            DIR_OUTBOUND => Direction::Outbound,
            DIR_INBOUND => Direction::Inbound,
            _ => self.guess_direction(key.sport, key.dport),
        };
        let server_port = match direction {
            Direction::Outbound => key.dport,
            Direction::Inbound => key.sport,
        };
        SeriesKey {
            protocol: key.protocol,
            cgroup_id: stats.cgroup_id,
            direction: Some(direction),
            port: (!self.ephemeral_ports.contains(&server_port)).then_some(server_port),
            remote: key.remote_addr().map(|a| self.remote_label(a)).unwrap_or_default(),
            service: String::new(),
            via: None,
        }
    }

    /// A connection NAT sent elsewhere: `remote` and `port` become the backend reached, and
    /// `service` the address dialed, shaped as `remote` is (empty when `remote` would be).
    pub fn translate(&self, series: &mut SeriesKey, nat: &Nat) {
        series.remote = self.remote_label(nat.backend.ip());
        if series.direction == Some(Direction::Outbound) {
            let port = nat.backend.port();
            series.port = (!self.ephemeral_ports.contains(&port)).then_some(port);
        }
        series.service = self.service_label(nat.dialed);
    }

    fn service_label(&self, dialed: SocketAddr) -> String {
        let address = self.remote_label(dialed.ip());
        if address.is_empty() {
            return address;
        }
        conntrack::address_port(&address, dialed.port(), dialed.ip())
    }

    /// For connections whose start the probes did not see (and UDP): the side on an
    /// ephemeral port is the client; a socket without a peer serves.
    fn guess_direction(&self, local: u16, remote: u16) -> Direction {
        let ephemeral = |p: u16| self.ephemeral_ports.contains(&p);
        if ephemeral(local) && !ephemeral(remote) && remote != 0 {
            Direction::Outbound
        } else if remote == 0 || (ephemeral(remote) && !ephemeral(local)) || local < remote {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    }

    fn remote_label(&self, addr: IpAddr) -> String {
        if addr.is_unspecified() {
            return String::new();
        }
        match self.remote {
            RemoteMode::Ip => addr.to_string(),
            RemoteMode::None => String::new(),
            RemoteMode::Prefix(bits) => match addr {
                IpAddr::V4(v4) => {
                    let bits = bits.min(32);
                    let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
                    format!("{}/{bits}", std::net::Ipv4Addr::from(u32::from(v4) & mask))
                }
                IpAddr::V6(v6) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
                    format!("{}/{bits}", std::net::Ipv6Addr::from(u128::from(v6) & mask))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::conn::{AF_INET, IPPROTO_TCP};

    fn policy(remote: RemoteMode) -> LabelPolicy {
        LabelPolicy {
            ephemeral_ports: 32768..=60999,
            remote,
            max_series: 10,
        }
    }

    fn key(sport: u16, dport: u16, daddr: [u8; 4]) -> ConnKey {
        let mut key = ConnKey {
            sport,
            dport,
            family: AF_INET,
            protocol: IPPROTO_TCP,
            ..ConnKey::default()
        };
        key.daddr[..4].copy_from_slice(&daddr);
        key
    }

    #[test]
    fn the_server_port_is_the_label_and_ephemeral_ports_never_are() {
        let p = policy(RemoteMode::Ip);
        let out = ConnStats {
            direction: DIR_OUTBOUND,
            ..ConnStats::default()
        };
        let s = p.series(&key(40000, 443, [10, 1, 2, 3]), &out);
        assert_eq!(
            (s.direction, s.port, s.remote.as_str()),
            (Some(Direction::Outbound), Some(443), "10.1.2.3")
        );
        let s = p.series(&key(40000, 50000, [10, 1, 2, 3]), &out);
        assert_eq!(s.port, None);
        let inbound = ConnStats {
            direction: DIR_INBOUND,
            ..ConnStats::default()
        };
        assert_eq!(p.series(&key(8080, 41000, [10, 0, 0, 9]), &inbound).port, Some(8080));
        // Unknown direction: guessed from which side is ephemeral.
        let unknown = ConnStats::default();
        let s = p.series(&key(45000, 5432, [10, 0, 0, 9]), &unknown);
        assert_eq!((s.direction, s.port), (Some(Direction::Outbound), Some(5432)));
        let s = p.series(&key(53, 0, [0, 0, 0, 0]), &unknown);
        assert_eq!(
            (s.direction, s.port, s.remote.as_str()),
            (Some(Direction::Inbound), Some(53), "")
        );
    }

    #[test]
    fn remote_modes() {
        let out = ConnStats::default();
        let k = key(40000, 443, [10, 1, 2, 3]);
        assert_eq!(policy(RemoteMode::Prefix(24)).series(&k, &out).remote, "10.1.2.0/24");
        assert_eq!(policy(RemoteMode::Prefix(0)).series(&k, &out).remote, "0.0.0.0/0");
        assert_eq!(policy(RemoteMode::None).series(&k, &out).remote, "");
        assert_eq!("prefix:16".parse::<RemoteMode>(), Ok(RemoteMode::Prefix(16)));
        assert!("prefix:200".parse::<RemoteMode>().is_err());
        assert!("cidr".parse::<RemoteMode>().is_err());
        assert_eq!(parse_port_range("1024-2048"), Ok(1024..=2048));
        assert!(parse_port_range("9-1").is_err());
    }

    #[test]
    fn a_translated_connection_shows_the_backend_and_the_dialed_service() {
        let out = ConnStats {
            direction: DIR_OUTBOUND,
            ..ConnStats::default()
        };
        let k = key(40000, 80, [198, 18, 9, 9]);
        let nat = Nat {
            backend: "198.18.4.2:8080".parse().expect("address"),
            dialed: "198.18.9.9:80".parse().expect("address"),
        };
        let shaped = |mode| {
            let p = policy(mode);
            let mut s = p.series(&k, &out);
            p.translate(&mut s, &nat);
            (s.remote, s.port, s.service)
        };
        assert_eq!(
            shaped(RemoteMode::Ip),
            ("198.18.4.2".into(), Some(8080), "198.18.9.9:80".into())
        );
        assert_eq!(
            shaped(RemoteMode::Prefix(24)),
            ("198.18.4.0/24".into(), Some(8080), "198.18.9.0/24:80".into())
        );
        assert_eq!(shaped(RemoteMode::None), (String::new(), Some(8080), String::new()));
        // A backend on an ephemeral port has no port label, as any server there.
        let p = policy(RemoteMode::Ip);
        let mut s = p.series(&k, &out);
        p.translate(
            &mut s,
            &Nat {
                backend: "198.18.4.2:40001".parse().expect("address"),
                ..nat
            },
        );
        assert_eq!(s.port, None);
    }
}
