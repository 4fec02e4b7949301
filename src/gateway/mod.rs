//! Gateway enrichment of connections: which router a connection leaves its network
//! namespace through, on which interface and subnet (docs/ARCHITECTURE.md, "Gateway enrichment").
//!
//! For a connection, the route cache, keyed by (source, destination, netns), holds the
//! answer; on a miss the kernel is asked (`RTM_GETROUTE` for the destination from the
//! source, as `ip route get` does) inside the connection's own network namespace, over a
//! socket kept per namespace ([`netns`]). A route without a gateway means no enrichment,
//! and that answer is cached too; a failure is cached for [`NEGATIVE_TTL`] so a broken
//! namespace cannot cause a storm of netlink queries. For a route with a gateway, the
//! subnet cache, keyed by (netns, interface index), gives the interface's name and the
//! subnet that holds the source.

pub mod netlink;
pub mod netns;
mod settings;
pub mod subnet;
pub mod telemetry;

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache;
use prometheus::proto::MetricFamily;

use self::netns::{Handle, NetnsHandles};
use self::subnet::InterfaceSubnets;
use self::telemetry::{Telemetry, TelemetrySnapshot};
use crate::ebpf::conn::ConnKey;

pub use self::settings::GatewayArgs;
use crate::sync;

/// Failed lookups are cached this long before the kernel is asked again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// An interface that could not be read is not asked for again for this long.
pub const SUBNET_NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Interfaces kept in the subnet cache.
pub const SUBNET_CACHE_SIZE: u64 = 4096;
/// Namespaces with a kept socket; the least recently used goes beyond it.
pub const MAX_NETNS_HANDLES: usize = 1024;
/// How often [`GatewayLookup::maintain`] looks for namespaces that vanished.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The gateway settings (`--gateway.*`, `--no-gateway`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub enabled: bool,
    pub route_cache_ttl: Duration,
    pub route_cache_size: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            route_cache_ttl: Duration::from_secs(120),
            route_cache_size: 65_536,
        }
    }
}

/// Where a connection leaves its network: the label values of a routed connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Via {
    /// The next hop's address.
    pub gateway: String,
    /// The outgoing interface's name (empty if it could not be read).
    pub interface: String,
    /// The CIDR of the interface's network that holds the source (empty if none does).
    pub subnet: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RouteKey {
    src: IpAddr,
    dst: IpAddr,
    netns: u32,
}

#[derive(Debug, Clone)]
enum Answer {
    /// `None`: a route without a gateway.
    Route(Option<Arc<Via>>),
    Failed,
}

impl Answer {
    fn via(&self) -> Option<Arc<Via>> {
        match self {
            Self::Route(via) => via.clone(),
            Self::Failed => None,
        }
    }
}

/// Routes live for the configured TTL, failures for [`NEGATIVE_TTL`].
struct RouteExpiry {
    ttl: Duration,
}

impl moka::Expiry<RouteKey, Answer> for RouteExpiry {
    fn expire_after_create(&self, _key: &RouteKey, answer: &Answer, _created_at: Instant) -> Option<Duration> {
        Some(match answer {
            Answer::Route(_) => self.ttl,
            Answer::Failed => NEGATIVE_TTL.min(self.ttl),
        })
    }
}

struct SubnetExpiry {
    ttl: Duration,
}

impl moka::Expiry<(u32, u32), Option<Arc<InterfaceSubnets>>> for SubnetExpiry {
    fn expire_after_create(
        &self,
        _key: &(u32, u32),
        interface: &Option<Arc<InterfaceSubnets>>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if interface.is_some() {
            self.ttl
        } else {
            SUBNET_NEGATIVE_TTL
        })
    }
}

pub struct GatewayLookup {
    handles: NetnsHandles,
    routes: Cache<RouteKey, Answer>,
    subnets: Cache<(u32, u32), Option<Arc<InterfaceSubnets>>>,
    telemetry: Arc<Telemetry>,
    last_prune: Mutex<Instant>,
}

impl GatewayLookup {
    /// Namespaces are found under `procfs` (`<pid>/ns/net`) and in `named` (`/run/netns`).
    /// Nothing is opened until the first lookup.
    pub fn new(config: &GatewayConfig, procfs: &Path, named: &Path) -> Self {
        let telemetry = Arc::new(Telemetry::default());
        let counted = telemetry.clone();
        let routes = Cache::builder()
            .max_capacity(config.route_cache_size)
            .support_invalidation_closures()
            .expire_after(RouteExpiry {
                ttl: config.route_cache_ttl,
            })
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Expired {
                    counted.route_expirations.fetch_add(1, Relaxed);
                }
            })
            .build();
        // Interfaces change as seldom as routes: the same TTL.
        let subnets = Cache::builder()
            .max_capacity(SUBNET_CACHE_SIZE)
            .support_invalidation_closures()
            .expire_after(SubnetExpiry {
                ttl: config.route_cache_ttl,
            })
            .build();
        Self {
            handles: NetnsHandles::new(procfs, named, MAX_NETNS_HANDLES),
            routes,
            subnets,
            telemetry,
            last_prune: Mutex::new(Instant::now()),
        }
    }

    /// The gateway of a connection seen by the probes: the route from its local address to
    /// its remote one, in its namespace.
    pub fn lookup(&self, conn: &ConnKey) -> Option<Arc<Via>> {
        self.lookup_with_ips(conn.local_addr()?, conn.remote_addr()?, conn.netns)
    }

    /// The gateway towards `dst` from `src` in the network namespace with inode `netns`
    /// (0: sonde's own). `None` when the route has none, or the lookup failed.
    pub fn lookup_with_ips(&self, src: IpAddr, dst: IpAddr, netns: u32) -> Option<Arc<Via>> {
        // Never routed through a gateway: not worth a cache entry.
        if dst.is_unspecified() || dst.is_loopback() {
            return None;
        }
        self.telemetry.route_lookups.fetch_add(1, Relaxed);
        let key = RouteKey { src, dst, netns };
        if let Some(answer) = self.routes.get(&key) {
            return answer.via();
        }
        self.telemetry.route_misses.fetch_add(1, Relaxed);
        let answer = match self.resolve(key) {
            Ok(via) => Answer::Route(via),
            Err(reason) => {
                self.telemetry.lookup_error(reason);
                Answer::Failed
            }
        };
        let via = answer.via();
        self.routes.insert(key, answer);
        via
    }

    /// Asks the kernel; the error is the `reason` label.
    fn resolve(&self, key: RouteKey) -> Result<Option<Arc<Via>>, &'static str> {
        let handle = self.handles.get(key.netns).map_err(|e| {
            tracing::debug!(error = %e, "gateway lookup: no socket in the connection's namespace");
            e.reason()
        })?;
        self.telemetry.netlink_lookups.fetch_add(1, Relaxed);
        let route = handle.socket().route_get(key.src, key.dst).map_err(|e| {
            tracing::debug!(error = %e, src = %key.src, dst = %key.dst, netns = key.netns, "route lookup failed");
            self.telemetry.netlink_error(e.errno_label());
            "route"
        })?;
        let Some(route) = route else {
            return Ok(None);
        };
        let interface = self.interface(key.netns, route.oif, &handle);
        let (interface, subnet) = interface.map_or_else(Default::default, |i| {
            (i.name.clone(), i.subnet_for(key.src, route.gateway).unwrap_or_default())
        });
        Ok(Some(Arc::new(Via {
            gateway: route.gateway.to_string(),
            interface,
            subnet,
        })))
    }

    fn interface(&self, netns: u32, index: u32, handle: &Handle) -> Option<Arc<InterfaceSubnets>> {
        self.telemetry.subnet_lookups.fetch_add(1, Relaxed);
        let key = (netns, index);
        if let Some(cached) = self.subnets.get(&key) {
            return cached;
        }
        self.telemetry.subnet_misses.fetch_add(1, Relaxed);
        let interface = match handle.socket().interface(index) {
            Ok(interface) => Some(Arc::new(interface)),
            Err(e) => {
                tracing::debug!(error = %e, index, netns, "interface lookup failed");
                self.telemetry.netlink_error(e.errno_label());
                self.telemetry.lookup_error("interface");
                None
            }
        };
        self.subnets.insert(key, interface.clone());
        interface
    }

    /// Once per scrape: every [`PRUNE_EVERY`], drops the sockets of vanished namespaces
    /// (a scan of `/proc`, skipped while only sonde's own namespace has one).
    pub fn maintain(&self) {
        let mut last = sync::lock(&self.last_prune);
        if last.elapsed() >= PRUNE_EVERY && self.handles.holds_foreign() {
            *last = Instant::now();
            drop(last);
            self.prune_vanished();
        }
    }

    /// Drops the sockets of namespaces that no process and no name holds any more, and
    /// their cached answers: once freed, a namespace's inode can name a new one. Returns
    /// how many namespaces were dropped.
    pub fn prune_vanished(&self) -> usize {
        let dropped = self.handles.prune_vanished();
        if !dropped.is_empty() {
            let routes = dropped.clone();
            let invalidated = self
                .routes
                .invalidate_entries_if(move |key, _| routes.contains(&key.netns))
                .and_then(|_| {
                    let subnets = dropped.clone();
                    self.subnets
                        .invalidate_entries_if(move |(netns, _), _| subnets.contains(netns))
                });
            if let Err(e) = invalidated {
                tracing::warn!(error = %e, "cannot drop the cached routes of vanished namespaces");
            }
        }
        dropped.len()
    }

    /// Namespaces with an open socket now.
    pub fn netns_handles(&self) -> usize {
        self.handles.len()
    }

    /// The counters and cache sizes now (pending cache work done first, so expirations and
    /// entries are current).
    pub fn snapshot(&self) -> TelemetrySnapshot {
        self.routes.run_pending_tasks();
        self.telemetry
            .snapshot(self.routes.entry_count(), self.handles.len() as u64)
    }

    /// The `sonde_gateway_*` families.
    pub fn families(&self) -> Vec<MetricFamily> {
        self.snapshot().families()
    }
}

#[cfg(test)]
mod tests {
    use moka::Expiry;

    use super::*;

    fn key() -> RouteKey {
        RouteKey {
            src: "198.18.1.2".parse().expect("ip"),
            dst: "198.18.2.2".parse().expect("ip"),
            netns: 7,
        }
    }

    #[test]
    fn failures_live_shorter_than_answers_and_never_longer_than_the_ttl() {
        let now = Instant::now();
        let long = RouteExpiry {
            ttl: Duration::from_secs(120),
        };
        assert_eq!(
            long.expire_after_create(&key(), &Answer::Route(None), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            long.expire_after_create(&key(), &Answer::Failed, now),
            Some(NEGATIVE_TTL)
        );
        let short = RouteExpiry {
            ttl: Duration::from_secs(1),
        };
        assert_eq!(
            short.expire_after_create(&key(), &Answer::Failed, now),
            Some(Duration::from_secs(1))
        );
        let subnets = SubnetExpiry {
            ttl: Duration::from_secs(120),
        };
        assert_eq!(
            subnets.expire_after_create(&(7, 2), &None, now),
            Some(SUBNET_NEGATIVE_TTL)
        );
    }

    #[test]
    fn unroutable_destinations_are_not_looked_up() {
        let gw = GatewayLookup::new(
            &GatewayConfig::default(),
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        );
        let any = "198.18.1.2".parse().expect("ip");
        for dst in ["127.0.0.1", "::1", "0.0.0.0", "::"] {
            assert_eq!(gw.lookup_with_ips(any, dst.parse().expect("ip"), 7), None);
        }
        let s = gw.snapshot();
        assert_eq!((s.route_lookups, s.route_entries, s.netns_handles), (0, 0, 0));
    }
}
