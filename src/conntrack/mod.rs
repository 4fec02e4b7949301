//! NAT awareness of connections: which backend a connection reached when NAT changed the
//! destination it dialed (a Kubernetes Service's ClusterIP, a published Docker port), from
//! the kernel's conntrack table (docs/ARCHITECTURE.md, "NAT").
//!
//! For a new outbound connection, the cache, keyed by (netns, protocol, source, destination),
//! holds the answer; on a miss the kernel is asked with a conntrack GET by the connection's
//! tuple (as `conntrack -G` does), over a socket kept per namespace
//! ([`crate::gateway::netns`]), in two places, in this order:
//!
//! 1. the connection's own namespace: rules in its OUTPUT chain translate there, before the
//!    packet leaves, so an entry there that shows destination NAT is the answer. An entry
//!    without it gives the tuple the packet leaves the namespace with (its reply, reversed:
//!    an SNAT there changes the source the host sees);
//! 2. the host's namespace (the one of `<procfs>/1`), asked with that tuple: kube-proxy's and
//!    Docker's DNAT rules are in its PREROUTING chain, which the packet crosses after leaving
//!    the connection's namespace. Skipped for connections in the host's namespace.
//!
//! The first translation found wins: after a DNAT in the connection's own namespace the
//! host only ever sees the translated destination, so nothing more can be learnt there.
//! Where conntrack is not tracking (no rule needs it in a namespace) the kernel answers
//! "no entry", which is cached as such. Failures are cached for [`NEGATIVE_TTL`]; a kernel
//! without conntrack over netlink (no module, or no `CAP_NET_ADMIN`) is logged once and not
//! asked again for [`UNAVAILABLE_RETRY`].

pub mod netlink;
mod settings;
pub mod telemetry;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use prometheus::proto::MetricFamily;

use self::netlink::{ConntrackSocket, Entry, FiveTuple, NetlinkError};
use self::telemetry::{Telemetry, TelemetrySnapshot, Where};
use crate::ebpf::conn::{ConnKey, IPPROTO_TCP, IPPROTO_UDP};
use crate::gateway::netns::{NetnsError, NetnsHandles};
use crate::gateway::{MAX_NETNS_HANDLES, PRUNE_EVERY};
use crate::sync;

pub use self::settings::ConntrackArgs;

/// Failed lookups are cached this long before the kernel is asked again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// A kernel without conntrack over netlink is not asked again for this long.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(60);

/// The conntrack settings (`--conntrack.*`, `--no-conntrack`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackConfig {
    pub enabled: bool,
    pub cache_ttl: Duration,
    pub cache_size: u64,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cache_ttl: Duration::from_secs(120),
            cache_size: 65_536,
        }
    }
}

/// A connection whose destination NAT changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nat {
    /// The backend actually reached (the reply's source).
    pub backend: SocketAddr,
    /// The address the client dialed.
    pub dialed: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    netns: u32,
    tuple: FiveTuple,
}

#[derive(Debug, Clone)]
enum Answer {
    /// `None`: no destination NAT (or no entry).
    Found(Option<Arc<Nat>>),
    Failed,
}

struct AnswerExpiry {
    ttl: Duration,
}

impl moka::Expiry<Key, Answer> for AnswerExpiry {
    fn expire_after_create(&self, _key: &Key, answer: &Answer, _created_at: Instant) -> Option<Duration> {
        Some(match answer {
            Answer::Found(_) => self.ttl,
            Answer::Failed => NEGATIVE_TTL.min(self.ttl),
        })
    }
}

/// Why a lookup failed: the `reason` label, and whether conntrack is missing altogether.
#[derive(Debug)]
struct Failure {
    reason: &'static str,
    unavailable: bool,
}

/// Errnos that say this kernel (or sonde's privileges) has no conntrack over netlink at
/// all, not that one namespace or one query failed: no `nfnetlink`
/// (`EPROTONOSUPPORT` at the socket), no `nf_conntrack_netlink` (`EOPNOTSUPP`), no
/// `CAP_NET_ADMIN` (`EPERM`).
pub fn means_unavailable(errno: i32) -> bool {
    matches!(
        errno,
        libc::EPROTONOSUPPORT | libc::EOPNOTSUPP | libc::EPERM | libc::EACCES
    )
}

pub struct ConntrackLookup {
    handles: NetnsHandles<ConntrackSocket>,
    /// The host's namespace (the one of `<procfs>/1`), where kube-proxy's and Docker's
    /// PREROUTING rules are.
    host: u32,
    cache: Cache<Key, Answer>,
    telemetry: Arc<Telemetry>,
    /// Until when conntrack is taken as absent (no query sent).
    unavailable_until: Mutex<Option<Instant>>,
    /// Whether the absence was logged (once per process).
    logged: AtomicBool,
    last_prune: Mutex<Instant>,
}

impl ConntrackLookup {
    /// Namespaces are found under `procfs` (`<pid>/ns/net`) and in `named` (`/run/netns`);
    /// nothing is opened until the first lookup.
    pub fn new(config: &ConntrackConfig, procfs: &Path, named: &Path) -> Self {
        let handles = NetnsHandles::new(procfs, named, MAX_NETNS_HANDLES);
        let host = crate::netns::inode_of(&procfs.join("1/ns/net")).map_or(handles.own(), |inode| inode as u32);
        Self {
            handles,
            host,
            cache: Cache::builder()
                .max_capacity(config.cache_size)
                .support_invalidation_closures()
                .expire_after(AnswerExpiry { ttl: config.cache_ttl })
                .build(),
            telemetry: Arc::new(Telemetry::default()),
            unavailable_until: Mutex::new(None),
            logged: AtomicBool::new(false),
            last_prune: Mutex::new(Instant::now()),
        }
    }

    /// The NAT of an outbound connection seen by the probes, if its destination was
    /// translated.
    pub fn lookup(&self, conn: &ConnKey) -> Option<Arc<Nat>> {
        if conn.protocol != IPPROTO_TCP && conn.protocol != IPPROTO_UDP {
            return None;
        }
        let (src, dst) = (conn.local_addr()?, conn.remote_addr()?);
        self.lookup_tuple(
            FiveTuple {
                protocol: conn.protocol,
                src: SocketAddr::new(src, conn.sport),
                dst: SocketAddr::new(dst, conn.dport),
            },
            conn.netns,
        )
    }

    /// As [`Self::lookup`], for a tuple in the namespace with inode `netns` (0: sonde's own).
    pub fn lookup_tuple(&self, tuple: FiveTuple, netns: u32) -> Option<Arc<Nat>> {
        let dst = tuple.dst.ip();
        // Never translated on the way (loopback), or no peer yet: not worth an entry.
        if dst.is_unspecified()
            || dst.is_loopback()
            || tuple.dst.port() == 0
            || tuple.src.ip().is_ipv4() != dst.is_ipv4()
        {
            return None;
        }
        let netns = if netns == 0 { self.handles.own() } else { netns };
        self.telemetry.lookups.fetch_add(1, Relaxed);
        let key = Key { netns, tuple };
        if let Some(answer) = self.cache.get(&key) {
            return match answer {
                Answer::Found(nat) => nat,
                Answer::Failed => None,
            };
        }
        self.telemetry.misses.fetch_add(1, Relaxed);
        let answer = match self.resolve(key) {
            Ok(nat) => Answer::Found(nat),
            Err(failure) => {
                self.telemetry.lookup_error(failure.reason);
                if failure.unavailable {
                    self.mark_unavailable(failure.reason);
                }
                Answer::Failed
            }
        };
        self.cache.insert(key, answer.clone());
        match answer {
            Answer::Found(nat) => nat,
            Answer::Failed => None,
        }
    }

    /// The connection's namespace first, then the host's (the module comment says why).
    fn resolve(&self, key: Key) -> Result<Option<Arc<Nat>>, Failure> {
        if self.unavailable() {
            return Err(Failure {
                reason: "conntrack_unavailable",
                unavailable: false,
            });
        }
        let dialed = key.tuple.dst;
        let translated = |entry: Entry| {
            Arc::new(Nat {
                backend: entry.reply.src,
                dialed,
            })
        };
        let mut leaving = key.tuple;
        let mut failure = None;
        let mut untranslated = false;
        match self.query(key.netns, key.tuple, Where::Connection) {
            Ok(Some(entry)) if entry.destination_translated() => {
                self.telemetry.translated.fetch_add(1, Relaxed);
                return Ok(Some(translated(entry)));
            }
            Ok(Some(entry)) => {
                untranslated = true;
                leaving = entry.reply.reversed();
            }
            Ok(None) => {}
            // A namespace gone or not enterable: the host may still know the connection.
            Err(f) if !f.unavailable && key.netns != self.host => failure = Some(f),
            Err(f) => return Err(f),
        }
        if key.netns != self.host {
            match self.query(self.host, leaving, Where::Host) {
                Ok(Some(entry)) if entry.destination_translated() => {
                    self.telemetry.translated.fetch_add(1, Relaxed);
                    return Ok(Some(translated(entry)));
                }
                Ok(Some(_)) => untranslated = true,
                Ok(None) => {}
                Err(f) => return Err(f),
            }
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        if untranslated {
            self.telemetry.untranslated.fetch_add(1, Relaxed);
        } else {
            self.telemetry.not_found.fetch_add(1, Relaxed);
        }
        Ok(None)
    }

    /// One conntrack GET in namespace `netns`.
    fn query(&self, netns: u32, tuple: FiveTuple, place: Where) -> Result<Option<Entry>, Failure> {
        let handle = self.handles.get(netns).map_err(|e| {
            tracing::debug!(error = %e, "conntrack lookup: no socket in the namespace");
            let errno = match &e {
                NetnsError::Socket { source, .. } => source.raw_os_error(),
                _ => None,
            };
            Failure {
                reason: e.reason(),
                unavailable: errno.is_some_and(means_unavailable),
            }
        })?;
        self.telemetry.query(place);
        handle.socket().get(tuple).map_err(|e| {
            tracing::debug!(error = %e, ?tuple, netns, "conntrack lookup failed");
            self.telemetry.netlink_error(e.errno_label());
            let errno = match &e {
                NetlinkError::Kernel(errno) => Some(*errno),
                NetlinkError::Io(io) => io.raw_os_error(),
                NetlinkError::Decode(_) => None,
            };
            Failure {
                reason: "query",
                unavailable: errno.is_some_and(means_unavailable),
            }
        })
    }

    fn unavailable(&self) -> bool {
        let mut until = sync::lock(&self.unavailable_until);
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// No queries for [`UNAVAILABLE_RETRY`]; said once in the log.
    fn mark_unavailable(&self, reason: &'static str) {
        *sync::lock(&self.unavailable_until) = Some(Instant::now() + UNAVAILABLE_RETRY);
        if !self.logged.swap(true, Relaxed) {
            tracing::warn!(
                reason,
                retry_after_s = UNAVAILABLE_RETRY.as_secs(),
                "conntrack is not available over netlink (no nf_conntrack_netlink module, or no CAP_NET_ADMIN); connections are reported as dialed, without NAT translation or service label"
            );
        }
    }

    /// Once per scrape: every [`PRUNE_EVERY`], drops the sockets of vanished namespaces and
    /// their cached answers (a freed namespace's inode can name a new one).
    pub fn maintain(&self) {
        let mut last = sync::lock(&self.last_prune);
        if last.elapsed() >= PRUNE_EVERY && self.handles.holds_foreign() {
            *last = Instant::now();
            drop(last);
            self.prune_vanished();
        }
    }

    /// Drops the sockets and answers of namespaces nothing holds any more; returns how many.
    pub fn prune_vanished(&self) -> usize {
        let dropped = self.handles.prune_vanished();
        if !dropped.is_empty() {
            let gone = dropped.clone();
            if let Err(e) = self
                .cache
                .invalidate_entries_if(move |key, _| gone.contains(&key.netns))
            {
                tracing::warn!(error = %e, "cannot drop the cached conntrack answers of vanished namespaces");
            }
        }
        dropped.len()
    }

    /// The host namespace's inode (where PREROUTING DNAT is looked for).
    pub fn host_netns(&self) -> u32 {
        self.host
    }

    pub fn snapshot(&self) -> TelemetrySnapshot {
        self.cache.run_pending_tasks();
        self.telemetry
            .snapshot(self.cache.entry_count(), self.handles.len() as u64)
    }

    /// The `sonde_conntrack_*` families.
    pub fn families(&self) -> Vec<MetricFamily> {
        self.snapshot().families()
    }
}

/// `address:port` of a service, IPv6 in brackets.
pub fn address_port(address: &str, port: u16, ip: IpAddr) -> String {
    if ip.is_ipv6() {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use moka::Expiry;

    use super::*;

    #[test]
    fn failures_live_shorter_than_answers() {
        let key = Key {
            netns: 7,
            tuple: FiveTuple {
                protocol: 6,
                src: "198.18.1.2:40000".parse().expect("address"),
                dst: "198.18.9.9:80".parse().expect("address"),
            },
        };
        let expiry = AnswerExpiry {
            ttl: Duration::from_secs(120),
        };
        let now = Instant::now();
        assert_eq!(
            expiry.expire_after_create(&key, &Answer::Found(None), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            expiry.expire_after_create(&key, &Answer::Failed, now),
            Some(NEGATIVE_TTL)
        );
    }

    #[test]
    fn only_errnos_of_a_missing_conntrack_stop_the_queries() {
        for errno in [libc::EPROTONOSUPPORT, libc::EOPNOTSUPP, libc::EPERM] {
            assert!(means_unavailable(errno), "{errno}");
        }
        for errno in [libc::ENOENT, libc::EAGAIN, libc::EINVAL, libc::ENOBUFS] {
            assert!(!means_unavailable(errno), "{errno}");
        }
    }

    #[test]
    fn loopback_unspecified_and_mixed_families_are_not_looked_up() {
        let ct = ConntrackLookup::new(
            &ConntrackConfig::default(),
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        );
        for (src, dst) in [
            ("127.0.0.1:40000", "127.0.0.1:80"),
            ("198.18.1.2:40000", "0.0.0.0:80"),
            ("198.18.1.2:40000", "198.18.9.9:0"),
            ("198.18.1.2:40000", "[2001:db8::1]:80"),
        ] {
            let tuple = FiveTuple {
                protocol: 6,
                src: src.parse().expect("address"),
                dst: dst.parse().expect("address"),
            };
            assert_eq!(ct.lookup_tuple(tuple, 7), None);
        }
        let s = ct.snapshot();
        assert_eq!((s.lookups, s.entries, s.netns_handles), (0, 0, 0));
        assert_eq!(
            address_port("198.18.9.0/24", 80, "198.18.9.9".parse().expect("ip")),
            "198.18.9.0/24:80"
        );
        assert_eq!(
            address_port("2001:db8::1", 80, "2001:db8::1".parse().expect("ip")),
            "[2001:db8::1]:80"
        );
    }
}
