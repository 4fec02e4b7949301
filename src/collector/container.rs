//! The `container` collector: cAdvisor's `container_*` families from cgroups, with the same
//! names, labels and formulas, read at most once per cache-validity window.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use prometheus::proto::MetricType;
use rayon::prelude::*;

use super::{CollectError, Collector, ScrapeContext};
use crate::cache::{self, CacheFigures, ValidityCache};
use crate::cgroup::parse::{self, Interface};
use crate::cgroup::{File, Layout, Reader, Stats};
use crate::config::Config;
use crate::container::discovery::Kind;
use crate::container::inventory::{Entry, Inventory, Settings};
use crate::family::{self, Family, RenderedFamily};
use crate::sources::Sources;

/// Interfaces cAdvisor leaves out of container network stats.
pub(crate) const IGNORED_INTERFACE_PREFIXES: [&str; 4] = ["lo", "veth", "docker", "nerdctl"];

pub struct ContainerCollector {
    state: Result<Arc<State>, String>,
}

struct State {
    settings: Settings,
    /// The sources' generation when the inventory was last asked for.
    sources_generation: AtomicU64,
    reader: Reader,
    procfs: PathBuf,
    sysfs: PathBuf,
    inventory: ValidityCache<Inventory>,
    stats: ValidityCache<Snapshot>,
    /// `major:minor` → `/dev/<name>`; device numbers do not change under a running kernel.
    devices: Mutex<HashMap<(u64, u64), String>>,
}

/// One container's stats and network interfaces; `None` stats: it went away.
type ContainerRead = (Option<Stats>, Option<Vec<Interface>>);

/// One read of every container's changing stats, rendered: every scrape inside the window
/// serves these same families (and their encodings).
struct Snapshot {
    inventory: Arc<Inventory>,
    families: Vec<Arc<Family>>,
    /// Containers that were read (the others went away since the inventory was built).
    containers: usize,
}

impl ContainerCollector {
    pub fn new(config: &Config, sources: &Sources) -> Self {
        let state = Layout::detect(&config.paths.sysfs)
            .map(|layout| {
                Arc::new(State {
                    settings: Settings {
                        layout,
                        procfs: config.paths.procfs.clone(),
                        raw_prefixes: config.container.raw_cgroup_prefixes.clone(),
                        filters: config.container.filters.clone(),
                        sources: sources.metadata.clone(),
                    },
                    sources_generation: AtomicU64::new(0),
                    reader: Reader::default(),
                    procfs: config.paths.procfs.clone(),
                    sysfs: config.paths.sysfs.clone(),
                    inventory: ValidityCache::new("container_inventory", config.container.inventory_validity),
                    stats: ValidityCache::new("container_stats", config.container.cache_validity),
                    devices: Mutex::default(),
                })
            })
            .map_err(|e| e.to_string());
        Self { state }
    }

    /// The file read counters, for tests and benchmarks.
    pub fn reader(&self) -> Option<&Reader> {
        self.state.as_ref().ok().map(|s| &s.reader)
    }
}

impl Collector for ContainerCollector {
    fn name(&self) -> &'static str {
        "container"
    }

    fn collect(&self, _ctx: ScrapeContext) -> BoxFuture<'_, Result<Vec<Arc<Family>>, CollectError>> {
        Box::pin(async move {
            let state = self.state.as_ref().map_err(|e| CollectError::Failed(e.clone()))?;
            let snapshot = state.snapshot().await?;
            let mut families = snapshot.families.clone();
            families.extend(family::shared(cache::telemetry(&[
                CacheFigures {
                    name: state.inventory.name(),
                    hits: state.inventory.requests().0,
                    misses: state.inventory.requests().1,
                    entries: snapshot.inventory.entries.len(),
                },
                CacheFigures {
                    name: state.stats.name(),
                    hits: state.stats.requests().0,
                    misses: state.stats.requests().1,
                    entries: snapshot.containers,
                },
            ])));
            families.extend(family::shared(state.reader.counters().families()));
            Ok(families)
        })
    }
}

impl State {
    /// The current stats, read once per validity window whatever the number of scrapes.
    async fn snapshot(self: &Arc<Self>) -> Result<Arc<Snapshot>, CollectError> {
        let failed = |e: Arc<CollectError>| CollectError::Failed(e.to_string());
        let state = Arc::clone(self);
        let generation = Sources::generation_of(&self.settings.sources);
        if self.sources_generation.swap(generation, Ordering::Relaxed) != generation {
            // A source saw a container start, die or change: rebuild now, not at window end.
            self.inventory.invalidate().await;
        }
        let (inventory, rebuilt) = self
            .inventory
            .get(blocking(move || Inventory::build(&state.settings, &state.reader)))
            .await
            .map_err(failed)?;
        if rebuilt {
            // New containers should show at once, not when the stats window ends.
            self.stats.invalidate().await;
        }
        let state = Arc::clone(self);
        let (snapshot, _) = self
            .stats
            .get(blocking(move || state.read_stats(inventory)))
            .await
            .map_err(failed)?;
        Ok(snapshot)
    }

    fn read_stats(&self, inventory: Arc<Inventory>) -> Snapshot {
        let read: Vec<ContainerRead> = inventory
            .entries
            .par_iter()
            .map(|entry| {
                let stats = entry
                    .paths
                    .read_stats_kept(&self.reader, Some(&entry.files), &entry.spec)
                    .ok();
                let network = stats.as_ref().and(entry.net_pid).and_then(|pid| self.network(pid));
                (stats, network)
            })
            .collect();
        let read_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let families = self.render(&inventory, &read, read_at);
        Snapshot {
            containers: read.iter().filter(|(stats, _)| stats.is_some()).count(),
            inventory,
            families,
        }
    }

    fn network(&self, pid: u32) -> Option<Vec<Interface>> {
        let dir = self.procfs.join(pid.to_string());
        let mut interfaces = self.reader.parse(&dir, File::NetDev, parse::net_dev)?;
        interfaces.retain(|i| !IGNORED_INTERFACE_PREFIXES.iter().any(|p| i.name.starts_with(p)));
        Some(interfaces)
    }

    /// `/dev/<name>` for a block device number, from sysfs; `major:minor` when unknown.
    fn device_name(&self, major: u64, minor: u64) -> String {
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        devices
            .entry((major, minor))
            .or_insert_with(|| {
                let uevent = self.sysfs.join(format!("dev/block/{major}:{minor}/uevent"));
                std::fs::read_to_string(uevent)
                    .ok()
                    .and_then(|text| parse::uevent_devname(&text).map(|n| format!("/dev/{n}")))
                    .unwrap_or_else(|| format!("{major}:{minor}"))
            })
            .clone()
    }

    /// Renders a read: cAdvisor's families for every container that was still there.
    fn render(&self, inventory: &Inventory, read: &[ContainerRead], read_at: f64) -> Vec<Arc<Family>> {
        let mut f = Families::new();
        let extra_keys = extra_label_keys(inventory);
        for (entry, (stats, network)) in inventory.entries.iter().zip(read) {
            let Some(stats) = stats else {
                continue; // went away since the inventory was built
            };
            let base = base_labels(entry, &extra_keys);
            let mut out = Out { base: &base, f: &mut f };
            render_spec(&mut out, entry);
            render_health(&mut out, entry);
            render_stats(&mut out, stats, &|major, minor| self.device_name(major, minor));
            if let Some(interfaces) = network {
                render_network(&mut out, interfaces);
            }
            if let Some(start) = entry.start_time {
                out.gauge(G::StartTime, None, start);
            }
            out.gauge(G::LastSeen, None, read_at);
        }
        f.build()
    }
}

/// Runs blocking filesystem work off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, CollectError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CollectError::Failed(format!("reading cgroups: {e}")))
}

/// The extra label names (`container_label_*`, `container_env_*`) of any reported container:
/// every series carries all of them, empty where a container has none, so every series of
/// a family has the same label names.
fn extra_label_keys(inventory: &Inventory) -> Vec<&str> {
    let keys: BTreeSet<&str> = inventory
        .entries
        .iter()
        .flat_map(|e| e.metadata.extra_labels.iter().map(|(k, _)| k.as_str()))
        .collect();
    keys.into_iter().collect()
}

/// The six labels every container series has, then the extra ones, in the order the
/// family's labels are merged into (by name, as cAdvisor's are).
fn base_labels<'e>(entry: &'e Entry, extra_keys: &[&'e str]) -> Vec<(&'e str, &'e str)> {
    let m = &entry.metadata;
    let container = match entry.cgroup.kind {
        Kind::Pod => "",
        _ => m.container.as_str(),
    };
    let mut labels = vec![
        ("container", container),
        ("id", entry.cgroup.id.as_str()),
        ("image", m.image.as_str()),
        ("name", m.name.as_str()),
        ("namespace", m.namespace.as_str()),
        ("pod", m.pod.as_str()),
    ];
    let own = &m.extra_labels;
    labels.extend(extra_keys.iter().map(|key| {
        let value = own.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str());
        (*key, value)
    }));
    labels
}

macro_rules! family_kinds {
    ($kind:ident, $type:expr, $($variant:ident => ($name:literal, $help:literal)),* $(,)?) => {
        #[derive(Clone, Copy)]
        enum $kind { $($variant),* }
        impl $kind {
            const ALL: &'static [$kind] = &[$($kind::$variant),*];
            fn family(self) -> RenderedFamily {
                match self { $($kind::$variant => RenderedFamily::new($name, $help, $type)),* }
            }
        }
    };
}

family_kinds!(G, MetricType::GAUGE,
    MemoryUsage => ("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed"),
    MemoryWorkingSet => ("container_memory_working_set_bytes", "Current working set in bytes."),
    MemoryRss => ("container_memory_rss", "Size of RSS in bytes."),
    MemoryCache => ("container_memory_cache", "Number of bytes of page cache memory."),
    MemorySwap => ("container_memory_swap", "Container swap usage in bytes."),
    MemoryMappedFile => ("container_memory_mapped_file", "Size of memory mapped files in bytes."),
    MemoryMaxUsage => ("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes"),
    // cAdvisor types this a counter; a gauge keeps the name the same in OpenMetrics, where
    // a counter's samples would gain a `_total` suffix and break existing queries.
    MemoryFailcnt => ("container_memory_failcnt", "Number of memory usage hits limits"),
    SpecCpuPeriod => ("container_spec_cpu_period", "CPU period of the container."),
    SpecCpuQuota => ("container_spec_cpu_quota", "CPU quota of the container."),
    SpecCpuShares => ("container_spec_cpu_shares", "CPU share of the container."),
    SpecMemoryLimit => ("container_spec_memory_limit_bytes", "Memory limit for the container."),
    SpecMemorySwapLimit => ("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container."),
    SpecMemoryReservation => ("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container."),
    Processes => ("container_processes", "Number of processes running inside the container."),
    Threads => ("container_threads", "Number of threads running inside the container"),
    ThreadsMax => ("container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero"),
    StartTime => ("container_start_time_seconds", "Start time of the container since unix epoch in seconds."),
    LastSeen => ("container_last_seen", "Last time a container was seen by the exporter"),
    HealthState => ("container_health_state", "Health check state of the container: 1 for its current state, 0 for the others."),
);

family_kinds!(C, MetricType::COUNTER,
    CpuUsage => ("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds."),
    CpuUser => ("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds."),
    CpuSystem => ("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds."),
    CfsPeriods => ("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals."),
    CfsThrottledPeriods => ("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals."),
    CfsThrottledSeconds => ("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled."),
    MemoryFailures => ("container_memory_failures_total", "Cumulative count of memory allocation failures."),
    OomEvents => ("container_oom_events_total", "Count of out of memory events observed for the container"),
    FsReadsBytes => ("container_fs_reads_bytes_total", "Cumulative count of bytes read"),
    FsWritesBytes => ("container_fs_writes_bytes_total", "Cumulative count of bytes written"),
    FsReads => ("container_fs_reads_total", "Cumulative count of reads completed"),
    FsWrites => ("container_fs_writes_total", "Cumulative count of writes completed"),
    CpuWaiting => ("container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion."),
    CpuStalled => ("container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion."),
    MemoryWaiting => ("container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion."),
    MemoryStalled => ("container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion."),
    IoWaiting => ("container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion."),
    IoStalled => ("container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion."),
    RxBytes => ("container_network_receive_bytes_total", "Cumulative count of bytes received"),
    RxPackets => ("container_network_receive_packets_total", "Cumulative count of packets received"),
    RxDropped => ("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving"),
    RxErrors => ("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving"),
    TxBytes => ("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted"),
    TxPackets => ("container_network_transmit_packets_total", "Cumulative count of packets transmitted"),
    TxDropped => ("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting"),
    TxErrors => ("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting"),
);

struct Families {
    gauges: Vec<RenderedFamily>,
    counters: Vec<RenderedFamily>,
}

impl Families {
    fn new() -> Self {
        Self {
            gauges: G::ALL.iter().map(|g| g.family()).collect(),
            counters: C::ALL.iter().map(|c| c.family()).collect(),
        }
    }

    fn build(self) -> Vec<Arc<Family>> {
        self.gauges
            .into_iter()
            .chain(self.counters)
            .filter_map(Family::rendered)
            .collect()
    }
}

/// Adds samples for one container: its base labels plus the family's own, in name order.
struct Out<'a> {
    base: &'a [(&'a str, &'a str)],
    f: &'a mut Families,
}

fn labels<'l>(base: &'l [(&'l str, &'l str)], extra: &[(&'l str, &'l str)]) -> Vec<(&'l str, &'l str)> {
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(base.len() + extra.len());
    labels.extend_from_slice(base);
    labels.extend_from_slice(extra);
    labels.sort_unstable_by_key(|(k, _)| *k);
    labels
}

impl Out<'_> {
    fn gauge(&mut self, g: G, extra: Option<(&str, &str)>, value: f64) {
        self.f.gauges[g as usize].sample(&labels(self.base, extra.as_slice()), value);
    }

    fn counter(&mut self, c: C, extra: &[(&str, &str)], value: f64) {
        self.f.counters[c as usize].sample(&labels(self.base, extra), value);
    }
}

fn render_spec(out: &mut Out, entry: &Entry) {
    let spec = &entry.spec;
    let pairs = [
        (G::SpecCpuPeriod, spec.cpu_period),
        (G::SpecCpuQuota, spec.cpu_quota),
        (G::SpecCpuShares, spec.cpu_shares),
        (G::SpecMemoryLimit, spec.memory_limit),
        (G::SpecMemorySwapLimit, spec.memory_swap_limit),
        (G::SpecMemoryReservation, spec.memory_reservation),
        (G::ThreadsMax, spec.threads_max),
    ];
    for (g, value) in pairs {
        if let Some(value) = value {
            out.gauge(g, None, value as f64);
        }
    }
}

/// The states of a Docker health check, each a series: 1 for the current one.
const HEALTH_STATES: [&str; 3] = ["healthy", "starting", "unhealthy"];

fn render_health(out: &mut Out, entry: &Entry) {
    if let Some(current) = entry.metadata.health.as_deref() {
        for state in HEALTH_STATES {
            out.gauge(
                G::HealthState,
                Some(("state", state)),
                f64::from(u8::from(state == current)),
            );
        }
    }
}

const NANOS: f64 = 1e9;
const MICROS: f64 = 1e6;

fn render_stats(out: &mut Out, stats: &Stats, device_name: &dyn Fn(u64, u64) -> String) {
    if let Some(cpu) = stats.cpu {
        out.counter(C::CpuUsage, &[("cpu", "total")], cpu.usage_ns as f64 / NANOS);
        if let Some(user) = cpu.user_ns {
            out.counter(C::CpuUser, &[], user as f64 / NANOS);
        }
        if let Some(system) = cpu.system_ns {
            out.counter(C::CpuSystem, &[], system as f64 / NANOS);
        }
    }
    if let Some(cfs) = stats.cfs {
        out.counter(C::CfsPeriods, &[], cfs.periods as f64);
        out.counter(C::CfsThrottledPeriods, &[], cfs.throttled_periods as f64);
        out.counter(C::CfsThrottledSeconds, &[], cfs.throttled_ns as f64 / NANOS);
    }
    if let Some(m) = stats.memory {
        out.gauge(G::MemoryUsage, None, m.usage as f64);
        out.gauge(G::MemoryWorkingSet, None, m.working_set as f64);
        out.gauge(G::MemoryRss, None, m.rss as f64);
        out.gauge(G::MemoryCache, None, m.cache as f64);
        out.gauge(G::MemoryMappedFile, None, m.mapped_file as f64);
        out.gauge(G::MemoryMaxUsage, None, m.max_usage as f64);
        out.gauge(G::MemoryFailcnt, None, m.failcnt as f64);
        if let Some(swap) = m.swap {
            out.gauge(G::MemorySwap, None, swap as f64);
        }
        for (kind, scope, value) in [
            ("pgfault", "container", m.pgfault),
            ("pgmajfault", "container", m.pgmajfault),
            ("pgfault", "hierarchy", m.hierarchy_pgfault),
            ("pgmajfault", "hierarchy", m.hierarchy_pgmajfault),
        ] {
            out.counter(
                C::MemoryFailures,
                &[("failure_type", kind), ("scope", scope)],
                value as f64,
            );
        }
    }
    if let Some(oom) = stats.oom_events {
        out.counter(C::OomEvents, &[], oom as f64);
    }
    for io in stats.io.iter().flatten() {
        let device = device_name(io.major, io.minor);
        let label = [("device", device.as_str())];
        out.counter(C::FsReadsBytes, &label, io.read_bytes as f64);
        out.counter(C::FsWritesBytes, &label, io.write_bytes as f64);
        out.counter(C::FsReads, &label, io.reads as f64);
        out.counter(C::FsWrites, &label, io.writes as f64);
    }
    if let Some(processes) = stats.processes {
        out.gauge(G::Processes, None, processes as f64);
    }
    if let Some(threads) = stats.threads {
        out.gauge(G::Threads, None, threads as f64);
    }
    for (pressure, waiting, stalled) in [
        (stats.cpu_pressure, C::CpuWaiting, C::CpuStalled),
        (stats.memory_pressure, C::MemoryWaiting, C::MemoryStalled),
        (stats.io_pressure, C::IoWaiting, C::IoStalled),
    ] {
        if let Some(p) = pressure {
            out.counter(waiting, &[], p.some_us as f64 / MICROS);
            out.counter(stalled, &[], p.full_us as f64 / MICROS);
        }
    }
}

fn render_network(out: &mut Out, interfaces: &[Interface]) {
    for i in interfaces {
        let label = [("interface", i.name.as_str())];
        for (c, value) in [
            (C::RxBytes, i.rx_bytes),
            (C::RxPackets, i.rx_packets),
            (C::RxDropped, i.rx_dropped),
            (C::RxErrors, i.rx_errors),
            (C::TxBytes, i.tx_bytes),
            (C::TxPackets, i.tx_packets),
            (C::TxDropped, i.tx_dropped),
            (C::TxErrors, i.tx_errors),
        ] {
            out.counter(c, &label, value as f64);
        }
    }
}
