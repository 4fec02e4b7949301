//! The records the probes share with user space (`ebpf-probes/conn.h`), byte for byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Closed-connection records per batch (`BATCH_RECORDS`).
pub const BATCH_RECORDS: usize = 16;
/// Batch slots in each CPU's ring (`BATCH_SLOTS`).
pub const BATCH_SLOTS: u32 = 4;
/// Batch id of a record the kernel sent alone (`UNBATCHED_ID`).
pub const UNBATCHED_ID: u64 = u64::MAX;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const FLAG_CONNECTED: u8 = 1;
pub const FLAG_CONNECT_FAILED: u8 = 2;
/// A TCP connection's start, not a closed connection (`FLAG_OPENED`): its counts are the
/// connection's base and `last_ns` its socket's address ([`TcpConn::opened`]).
pub const FLAG_OPENED: u8 = 4;
/// A close the probes wrote without their live table (`FLAG_ABSOLUTE`): its counts are the
/// socket's own, to be joined with the connection's start ([`TcpConn::closed`]).
pub const FLAG_ABSOLUTE: u8 = 8;

pub const DIR_OUTBOUND: u8 = 1;
pub const DIR_INBOUND: u8 = 2;

/// The kernel's telemetry counters, by index, with the `reason` label each one gets.
pub const TELEMETRY_REASONS: [&str; 6] = [
    "no_socket",
    "live_table_full",
    "ring_buffer_full",
    "unbatched_lost",
    "nested_close",
    "first_seen_live",
];
/// The telemetry counter of records sent alone that the ring buffer had no room for.
pub const TM_UNBATCHED_LOST: u32 = 3;
/// The telemetry counter of connections a live table had no room for.
pub const TM_TABLE_FULL: u32 = 1;
/// The telemetry counter of TCP connections older than the probes, first seen by the seed.
pub const TM_FIRST_SEEN_LIVE: u32 = 5;
/// Which telemetry counters are losses (the others are informational).
pub const TELEMETRY_IS_LOSS: [bool; 6] = [true, true, false, true, false, false];

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub netns: u32,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub sends: u64,
    pub recvs: u64,
    pub cgroup_id: u64,
    /// The socket's cookie: with the key, the identity of one connection.
    pub cookie: u64,
    /// The last send or receive, for UDP (idle UDP sockets age out); 0 for TCP.
    pub last_ns: u64,
    pub tgid: u32,
    pub retransmits: u32,
    pub srtt_us: u32,
    pub direction: u8,
    pub flags: u8,
    pub pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClosedConn {
    pub key: ConnKey,
    pub pad: u32,
    pub stats: ConnStats,
}

/// A live TCP connection's entry in the probes' `tcp_conns` table.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpConn {
    pub key: ConnKey,
    pub base_retrans: u32,
    pub cgroup_id: u64,
    pub cookie: u64,
    pub base_sent: u64,
    pub base_received: u64,
    /// The socket's address, which `read_tcp` reads the counters through.
    pub sk: u64,
    pub direction: u8,
    pub flags: u8,
    pub pad: u16,
    pub pad2: u32,
}

impl TcpConn {
    /// The live connection a start record (`FLAG_OPENED`) announces, as its `tcp_conns`
    /// entry holds it.
    pub fn opened(record: &ClosedConn) -> Self {
        let stats = &record.stats;
        Self {
            key: record.key,
            base_retrans: stats.retransmits,
            cgroup_id: stats.cgroup_id,
            cookie: stats.cookie,
            base_sent: stats.bytes_sent,
            base_received: stats.bytes_received,
            sk: stats.last_ns,
            direction: stats.direction,
            flags: stats.flags & !FLAG_OPENED,
            ..Self::default()
        }
    }

    /// The final record of the connection from its close written without the live table
    /// (`FLAG_ABSOLUTE`): what it counted since the probes first saw it, with the key,
    /// direction and flags its start gave, as the probes' own final record has them.
    pub fn closed(&self, close: &ClosedConn) -> ClosedConn {
        let now = &close.stats;
        ClosedConn {
            key: self.key,
            pad: 0,
            stats: ConnStats {
                bytes_sent: now.bytes_sent.saturating_sub(self.base_sent),
                bytes_received: now.bytes_received.saturating_sub(self.base_received),
                cgroup_id: self.cgroup_id,
                cookie: self.cookie,
                retransmits: now.retransmits.saturating_sub(self.base_retrans),
                srtt_us: now.srtt_us,
                direction: self.direction,
                flags: self.flags,
                ..ConnStats::default()
            },
        }
    }

    /// The connection's record: what it counted since the probes first saw it, from
    /// counts `read_tcp` read now.
    pub fn record(&self, now: &LiveRead) -> ClosedConn {
        ClosedConn {
            key: self.key,
            pad: 0,
            stats: ConnStats {
                bytes_sent: now.sent.saturating_sub(self.base_sent),
                bytes_received: now.received.saturating_sub(self.base_received),
                cgroup_id: self.cgroup_id,
                cookie: self.cookie,
                retransmits: now.retransmits.saturating_sub(self.base_retrans),
                direction: self.direction,
                flags: self.flags,
                ..ConnStats::default()
            },
        }
    }
}

/// One slot of the probes' `live_reads` array: a connection's socket and identity, written
/// by user space, and its counts, written by `read_tcp`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveRead {
    pub sk: u64,
    pub cookie: u64,
    pub sport: u16,
    pub dport: u16,
    pub retransmits: u32,
    pub sent: u64,
    pub received: u64,
    /// [`Self::LIVE`], [`Self::NOT_YET`], or 0: the socket is closed, or another's.
    pub live: u32,
    pub pad: u32,
}

impl LiveRead {
    /// `live`: the socket is the connection's, and live (its counts are read).
    pub const LIVE: u32 = 1;
    /// `live`: the socket is the connection's, and its handshake is ending (the start record
    /// is written just before the socket's state becomes ESTABLISHED).
    pub const NOT_YET: u32 = 2;

    /// The slot for `conn`, its counts not read yet.
    pub fn of(conn: &TcpConn) -> Self {
        Self {
            sk: conn.sk,
            cookie: conn.cookie,
            sport: conn.key.sport,
            dport: conn.key.dport,
            ..Self::default()
        }
    }
}

/// A live connection as a scrape read it, with a number its reader keeps with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveConn {
    pub key: ConnKey,
    pub stats: ConnStats,
    /// Where the reader of the live connections (`TcpIterator`) keeps it, so that `tag` can
    /// be given back; [`LiveConn::NO_SLOT`] for a connection it does not keep (UDP).
    pub slot: u32,
    /// A number the consumer of the reads keeps with the connection (the tracker's slot for
    /// it), given back with each read so that the consumer need not look the connection up;
    /// [`LiveConn::NO_TAG`] until it sets one.
    pub tag: u32,
}

impl LiveConn {
    pub const NO_SLOT: u32 = u32::MAX;
    pub const NO_TAG: u32 = u32::MAX;

    /// A connection the reader does not keep (a UDP socket's entry).
    pub fn untracked(key: ConnKey, stats: ConnStats) -> Self {
        Self {
            key,
            stats,
            slot: Self::NO_SLOT,
            tag: Self::NO_TAG,
        }
    }
}

/// Connections `read_tcp` reads in one run (`READ_CHUNK`).
pub const READ_CHUNK: u32 = 128;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    pub id: u64,
    pub len: u16,
    pub cap: u16,
    pub cpu: u32,
    pub records: [ClosedConn; BATCH_RECORDS],
}

impl Batch {
    /// The records from `from` up to the batch's length, clamped to what the batch can hold:
    /// the length comes from the kernel, so it is not trusted to be in range.
    pub fn records_from(&self, from: usize) -> &[ClosedConn] {
        let len = usize::from(self.len).min(BATCH_RECORDS);
        self.records.get(from.min(len)..len).unwrap_or_default()
    }

    pub fn is_full(&self) -> bool {
        usize::from(self.len) >= BATCH_RECORDS
    }

    /// Reads a batch from the bytes the ring buffer delivered; `None` when too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Batch> {
        if bytes.len() < std::mem::size_of::<Batch>() {
            return None;
        }
        // SAFETY: the length is checked above, `Batch` is plain old data (every bit pattern
        // is valid) and read_unaligned has no alignment requirement.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Batch>()) })
    }
}

// SAFETY: plain `repr(C)` structs of integers and arrays of them, with explicit padding
// fields, so every bit pattern is a valid value; this is what aya's maps require.
unsafe impl aya::Pod for ConnKey {}
unsafe impl aya::Pod for ConnStats {}
unsafe impl aya::Pod for ClosedConn {}
unsafe impl aya::Pod for Batch {}
unsafe impl aya::Pod for TcpConn {}
unsafe impl aya::Pod for LiveRead {}

impl ConnKey {
    fn addr(&self, bytes: &[u8; 16]) -> Option<IpAddr> {
        match self.family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
            AF_INET6 => {
                let v6 = Ipv6Addr::from(*bytes);
                Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
            }
            _ => None,
        }
    }

    pub fn local_addr(&self) -> Option<IpAddr> {
        self.addr(&self.saddr)
    }

    pub fn remote_addr(&self) -> Option<IpAddr> {
        self.addr(&self.daddr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_header() {
        // Sizes of the C structs as clang lays them out for -target bpf (see conn.h).
        assert_eq!(std::mem::size_of::<ConnKey>(), 44);
        assert_eq!(std::mem::size_of::<ConnStats>(), 72);
        assert_eq!(std::mem::size_of::<ClosedConn>(), 120);
        assert_eq!(std::mem::offset_of!(ClosedConn, stats), 48);
        assert_eq!(std::mem::offset_of!(ConnStats, retransmits), 60);
        assert_eq!(std::mem::size_of::<Batch>(), 16 + BATCH_RECORDS * 120);
        assert_eq!(std::mem::size_of::<TcpConn>(), 96);
        assert_eq!(std::mem::offset_of!(TcpConn, base_retrans), 44);
        assert_eq!(std::mem::offset_of!(TcpConn, sk), 80);
        assert_eq!(std::mem::offset_of!(TcpConn, direction), 88);
        assert_eq!(std::mem::size_of::<LiveRead>(), 48);
        assert_eq!(std::mem::offset_of!(LiveRead, retransmits), 20);
        assert_eq!(std::mem::offset_of!(LiveRead, live), 40);
    }

    #[test]
    fn a_close_with_the_sockets_own_counts_joins_its_start() {
        let key = ConnKey {
            sport: 40_000,
            dport: 80,
            protocol: IPPROTO_TCP,
            family: AF_INET,
            ..ConnKey::default()
        };
        let start = ClosedConn {
            key,
            pad: 0,
            stats: ConnStats {
                bytes_sent: 1,
                bytes_received: 0,
                retransmits: 2,
                cgroup_id: 7,
                cookie: 99,
                last_ns: 0xffff_8880_0000_1000,
                direction: DIR_OUTBOUND,
                flags: FLAG_CONNECTED | FLAG_OPENED,
                ..ConnStats::default()
            },
        };
        // The close's key lost its local port (the kernel zeroes it at release); the start's
        // key is the one counted.
        let close = ClosedConn {
            key: ConnKey { sport: 0, ..key },
            pad: 0,
            stats: ConnStats {
                bytes_sent: 1_001,
                bytes_received: 500,
                retransmits: 5,
                cgroup_id: 7,
                cookie: 99,
                srtt_us: 30,
                flags: FLAG_ABSOLUTE,
                ..ConnStats::default()
            },
        };
        let joined = TcpConn::opened(&start).closed(&close);
        assert_eq!(joined.key, key);
        assert_eq!(
            joined.stats,
            ConnStats {
                bytes_sent: 1_000,
                bytes_received: 500,
                retransmits: 3,
                cgroup_id: 7,
                cookie: 99,
                srtt_us: 30,
                direction: DIR_OUTBOUND,
                flags: FLAG_CONNECTED,
                ..ConnStats::default()
            }
        );
    }

    #[test]
    fn a_kernel_length_out_of_range_is_clamped() {
        let batch = Batch {
            len: 60_000,
            ..Batch::default()
        };
        assert_eq!(batch.records_from(0).len(), BATCH_RECORDS);
        assert!(batch.records_from(BATCH_RECORDS + 1).is_empty());
        assert!(Batch::from_bytes(&[0; 10]).is_none());
    }

    #[test]
    fn v4_mapped_addresses_read_as_v4() {
        let mut key = ConnKey {
            family: AF_INET6,
            ..ConnKey::default()
        };
        key.daddr[10] = 0xff;
        key.daddr[11] = 0xff;
        key.daddr[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(key.remote_addr(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
