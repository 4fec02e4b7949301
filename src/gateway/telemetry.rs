//! What the gateway lookup counts, and the `sonde_gateway_*` families made of it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus::proto::MetricFamily;

use crate::exposition::family::FamilyBuilder;
use crate::sync;

#[derive(Debug, Default)]
pub struct Telemetry {
    pub route_lookups: AtomicU64,
    pub route_misses: AtomicU64,
    pub route_expirations: AtomicU64,
    pub netlink_lookups: AtomicU64,
    pub subnet_lookups: AtomicU64,
    pub subnet_misses: AtomicU64,
    netlink_errors: Mutex<BTreeMap<String, u64>>,
    lookup_errors: Mutex<BTreeMap<&'static str, u64>>,
}

/// The counters at one moment, for tests and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetrySnapshot {
    pub route_lookups: u64,
    pub route_misses: u64,
    pub route_expirations: u64,
    pub route_entries: u64,
    pub netlink_lookups: u64,
    pub subnet_lookups: u64,
    pub subnet_misses: u64,
    pub netns_handles: u64,
    pub netlink_errors: BTreeMap<String, u64>,
    pub lookup_errors: BTreeMap<&'static str, u64>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *sync::lock(map).entry(key).or_default() += 1;
}

impl Telemetry {
    pub fn netlink_error(&self, errno: String) {
        bump(&self.netlink_errors, errno);
    }

    pub fn lookup_error(&self, reason: &'static str) {
        bump(&self.lookup_errors, reason);
    }

    /// The counters; the gauges come from the caches (`entries`, `handles`).
    pub fn snapshot(&self, route_entries: u64, netns_handles: u64) -> TelemetrySnapshot {
        TelemetrySnapshot {
            route_lookups: self.route_lookups.load(Relaxed),
            route_misses: self.route_misses.load(Relaxed),
            route_expirations: self.route_expirations.load(Relaxed),
            route_entries,
            netlink_lookups: self.netlink_lookups.load(Relaxed),
            subnet_lookups: self.subnet_lookups.load(Relaxed),
            subnet_misses: self.subnet_misses.load(Relaxed),
            netns_handles,
            netlink_errors: sync::lock(&self.netlink_errors).clone(),
            lookup_errors: sync::lock(&self.lookup_errors).clone(),
        }
    }
}

impl TelemetrySnapshot {
    pub fn families(&self) -> Vec<MetricFamily> {
        let counter =
            |name: &str, help: &str, value: u64| FamilyBuilder::counter(name, help).with_sample(&[], value as f64);
        let gauge =
            |name: &str, help: &str, value: u64| FamilyBuilder::gauge(name, help).with_sample(&[], value as f64);
        let netlink_errors = FamilyBuilder::counter(
            "sonde_gateway_netlink_errors_total",
            "Route and interface queries the kernel refused or did not answer, by errno",
        )
        .with_samples_by("errno", self.netlink_errors.iter().map(|(k, n)| (k, *n)));
        let lookup_errors = FamilyBuilder::counter(
            "sonde_gateway_lookup_errors_total",
            "Gateway lookups that failed (and were cached negatively), by reason",
        )
        .with_samples_by("reason", self.lookup_errors.iter().map(|(k, n)| (k, *n)));
        [
            counter(
                "sonde_gateway_route_cache_lookups_total",
                "Route cache lookups: one per new connection with a routable destination",
                self.route_lookups,
            ),
            counter(
                "sonde_gateway_route_cache_misses_total",
                "Route cache lookups that had to ask the kernel",
                self.route_misses,
            ),
            counter(
                "sonde_gateway_route_cache_expirations_total",
                "Route cache entries dropped at the end of their time to live",
                self.route_expirations,
            ),
            gauge(
                "sonde_gateway_route_cache_entries",
                "Entries in the route cache, negative ones included",
                self.route_entries,
            ),
            counter(
                "sonde_gateway_netlink_lookups_total",
                "RTM_GETROUTE queries sent to the kernel",
                self.netlink_lookups,
            ),
            netlink_errors,
            counter(
                "sonde_gateway_subnet_cache_lookups_total",
                "Subnet cache lookups (interface name and subnet of a route's outgoing interface)",
                self.subnet_lookups,
            ),
            counter(
                "sonde_gateway_subnet_cache_misses_total",
                "Subnet cache lookups that had to ask the kernel",
                self.subnet_misses,
            ),
            lookup_errors,
            gauge(
                "sonde_gateway_netns_handles",
                "Network namespaces with an open netlink socket",
                self.netns_handles,
            ),
        ]
        .into_iter()
        .filter_map(FamilyBuilder::build)
        .collect()
    }
}
