//! What the conntrack lookup counts, and the `sonde_conntrack_*` families made of it (the
//! gateway's shape: cache lookups and misses, kernel queries, errors by errno and by reason,
//! cache entries).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus::proto::MetricFamily;

use crate::exposition::family::FamilyBuilder;
use crate::sync;

/// Which namespace a query went to: the connection's own, or the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    Connection,
    Host,
}

#[derive(Debug, Default)]
pub struct Telemetry {
    pub lookups: AtomicU64,
    pub misses: AtomicU64,
    pub connection_queries: AtomicU64,
    pub host_queries: AtomicU64,
    pub translated: AtomicU64,
    pub untranslated: AtomicU64,
    pub not_found: AtomicU64,
    netlink_errors: Mutex<BTreeMap<String, u64>>,
    lookup_errors: Mutex<BTreeMap<&'static str, u64>>,
}

/// The counters at one moment, for tests and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetrySnapshot {
    pub lookups: u64,
    pub misses: u64,
    pub entries: u64,
    pub connection_queries: u64,
    pub host_queries: u64,
    pub translated: u64,
    pub untranslated: u64,
    pub not_found: u64,
    pub netns_handles: u64,
    pub netlink_errors: BTreeMap<String, u64>,
    pub lookup_errors: BTreeMap<&'static str, u64>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *sync::lock(map).entry(key).or_default() += 1;
}

impl Telemetry {
    pub fn query(&self, place: Where) {
        match place {
            Where::Connection => &self.connection_queries,
            Where::Host => &self.host_queries,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn netlink_error(&self, errno: String) {
        bump(&self.netlink_errors, errno);
    }

    pub fn lookup_error(&self, reason: &'static str) {
        bump(&self.lookup_errors, reason);
    }

    pub fn snapshot(&self, entries: u64, netns_handles: u64) -> TelemetrySnapshot {
        TelemetrySnapshot {
            lookups: self.lookups.load(Relaxed),
            misses: self.misses.load(Relaxed),
            entries,
            connection_queries: self.connection_queries.load(Relaxed),
            host_queries: self.host_queries.load(Relaxed),
            translated: self.translated.load(Relaxed),
            untranslated: self.untranslated.load(Relaxed),
            not_found: self.not_found.load(Relaxed),
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
            "sonde_conntrack_netlink_errors_total",
            "Conntrack queries the kernel refused or did not answer, by errno (not found is no error)",
        )
        .with_samples_by("errno", self.netlink_errors.iter().map(|(k, n)| (k, *n)));
        let lookup_errors = FamilyBuilder::counter(
            "sonde_conntrack_lookup_errors_total",
            "Conntrack lookups that failed (and were cached negatively), by reason",
        )
        .with_samples_by("reason", self.lookup_errors.iter().map(|(k, n)| (k, *n)));
        let queries = FamilyBuilder::counter(
            "sonde_conntrack_netlink_lookups_total",
            "Conntrack GET queries sent, by the namespace asked: the connection's own or the host's",
        )
        .with_sample(&[("namespace", "connection")], self.connection_queries as f64)
        .with_sample(&[("namespace", "host")], self.host_queries as f64);
        let answers = FamilyBuilder::counter(
            "sonde_conntrack_answers_total",
            "Cache misses answered: translated (NAT changed the destination), untranslated (an entry without destination NAT), not_found (no entry in either namespace)",
        )
        .with_sample(&[("answer", "translated")], self.translated as f64)
        .with_sample(&[("answer", "untranslated")], self.untranslated as f64)
        .with_sample(&[("answer", "not_found")], self.not_found as f64);
        [
            counter(
                "sonde_conntrack_cache_lookups_total",
                "Conntrack cache lookups: one per new outbound connection with a routable destination",
                self.lookups,
            ),
            counter(
                "sonde_conntrack_cache_misses_total",
                "Conntrack cache lookups that had to ask the kernel (or failed before that)",
                self.misses,
            ),
            gauge(
                "sonde_conntrack_cache_entries",
                "Entries in the conntrack cache, negative ones included",
                self.entries,
            ),
            queries,
            answers,
            netlink_errors,
            lookup_errors,
            gauge(
                "sonde_conntrack_netns_handles",
                "Network namespaces with an open conntrack netlink socket",
                self.netns_handles,
            ),
        ]
        .into_iter()
        .filter_map(FamilyBuilder::build)
        .collect()
    }
}
