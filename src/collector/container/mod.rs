//! The `container` collector: cAdvisor's `container_*` families from cgroups, with the same
//! names, labels and formulas, read at most once per cache-validity window.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

mod families;
mod filesystems;
mod labels;
mod layers;
mod settings;

use self::families::{ContainerFamilies, CounterKind, FAMILIES, GaugeKind, SampleWriter, Source};
use self::filesystems::{DiskView, FsStat, Mounts, render_filesystems};
use self::labels::BaseLabels;
use self::layers::LayerUsage;
pub use self::settings::{ContainerArgs, ContainerConfig};
use super::{CollectError, Collection, Collector, CollectorSettings, ScrapeContext, Sources};
use crate::cache::{self, CacheFigures, ValidityCache};
use crate::cgroup::parse::{self, IGNORED_INTERFACE_PREFIXES, Interface};
use crate::cgroup::{CgroupPaths, File, KeptFiles, Layout, ReadBudget, Reader, Stats};
use crate::exposition::family::{self, Family};
use crate::identity::discovery::Kind;
use crate::identity::inventory::{Inventory, InventoryEntry, InventorySettings};
use crate::{prefetch, sync};

pub struct ContainerCollector {
    /// Without a cgroup hierarchy every collection fails with why.
    state: Result<Arc<ContainerState>, Arc<CollectError>>,
}

struct ContainerState {
    settings: InventorySettings,
    /// The sources' generation when the inventory was last asked for.
    sources_generation: AtomicU64,
    reader: Reader,
    procfs: PathBuf,
    sysfs: PathBuf,
    rootfs: PathBuf,
    inventory: ValidityCache<Inventory>,
    /// The last inventory built, whose open files the next one takes over.
    last_inventory: Mutex<Option<Arc<Inventory>>>,
    stats: ValidityCache<StatsSnapshot>,
    /// `major:minor` → `/dev/<name>`; device numbers do not change under a running kernel.
    devices: Mutex<HashMap<(u64, u64), String>>,
    /// Bytes of sample lines per container in each family at the last read: the buffers
    /// are sized from them once, instead of doubling (and copying) a dozen times.
    line_bytes: Vec<AtomicUsize>,
    /// What was rendered for the current inventory: see [`ContainerState::rendered_for`].
    rendered: Mutex<Option<InventoryRender>>,
    /// The one thread that reads and renders the stats (`None`: the blocking task's own,
    /// if it could not be started). Always the same thread, so the allocator serves every
    /// read from the same arena: on the blocking pool's changing threads, each kept the
    /// megabytes of an earlier read, and the peak RSS rose from 32 to 43 MiB.
    stats_thread: Option<rayon::ThreadPool>,
    /// The host's filesystems (`mountinfo`), re-read once per inventory window.
    mounts: Mounts,
    /// Writable layers' usage, measured by a background walk (never by a scrape).
    layers: LayerUsage,
}

/// What is rendered once per inventory: every container's labels, and the families of the
/// inventory's own figures once a read has found every container (see
/// [`ContainerState::inventory_families`]).
struct InventoryRender {
    /// The weak reference keeps the inventory's allocation, so no later inventory can take
    /// its address.
    of: Weak<Inventory>,
    labels: Arc<[BaseLabels]>,
    families: Option<Vec<Arc<Family>>>,
}

/// One read of every container's changing stats, rendered: every scrape inside the window
/// serves these same families (and their encodings).
struct StatsSnapshot {
    inventory: Arc<Inventory>,
    families: Vec<Arc<Family>>,
    /// Containers that were read (the others went away since the inventory was built).
    containers: usize,
}

impl ContainerCollector {
    pub fn new(settings: &CollectorSettings, sources: &Sources) -> Self {
        let state = Layout::detect(&settings.paths.sysfs)
            .map(|layout| {
                Arc::new(ContainerState {
                    settings: InventorySettings {
                        layout,
                        procfs: settings.paths.procfs.clone(),
                        raw_prefixes: settings.container.raw_cgroup_prefixes.clone(),
                        filters: settings.container.filters.clone(),
                        sources: sources.metadata.clone(),
                    },
                    sources_generation: AtomicU64::new(0),
                    reader: Reader::default(),
                    procfs: settings.paths.procfs.clone(),
                    sysfs: settings.paths.sysfs.clone(),
                    rootfs: settings.paths.rootfs.clone(),
                    inventory: ValidityCache::new("container_inventory", settings.container.inventory_validity),
                    last_inventory: Mutex::default(),
                    stats: ValidityCache::new("container_stats", settings.container.cache_validity),
                    devices: Mutex::default(),
                    line_bytes: (0..FAMILIES).map(|_| AtomicUsize::new(0)).collect(),
                    rendered: Mutex::default(),
                    stats_thread: rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .thread_name(|_| "sonde-cgroups".into())
                        .build()
                        .ok(),
                    mounts: Mounts::new(settings.container.inventory_validity),
                    layers: LayerUsage::new(
                        settings.container.fs_usage_window,
                        settings.container.fs_usage_files_per_second,
                        settings.paths.rootfs.clone(),
                    ),
                })
            })
            .map_err(|e| Arc::new(CollectError::from(e)));
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

    fn collect(&self, _ctx: ScrapeContext) -> BoxFuture<'_, Collection> {
        // cAdvisor's `container_scrape_error`: 0 with the families, 1 alone when they could
        // not be read (a collection cut off by the deadline has no families at all).
        Box::pin(async move {
            match self.families().await {
                Ok(families) => Collection::ok(families.into_iter().chain(scrape_error(0.0)).collect()),
                Err(error) => Collection {
                    families: scrape_error(1.0),
                    failure: Some(error),
                },
            }
        })
    }
}

impl ContainerCollector {
    /// The containers' families, with the caches' and the reader's telemetry.
    async fn families(&self) -> Result<Vec<Arc<Family>>, CollectError> {
        let state = self.state.as_ref().map_err(|e| CollectError::Shared(Arc::clone(e)))?;
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
        families.extend(family::shared(state.layers.families()));
        Ok(families)
    }
}

impl ContainerState {
    /// The current stats, read once per validity window whatever the number of scrapes.
    async fn snapshot(self: &Arc<Self>) -> Result<Arc<StatsSnapshot>, CollectError> {
        let state = Arc::clone(self);
        let generation = Sources::generation_of(&self.settings.sources);
        if self.sources_generation.swap(generation, Ordering::Relaxed) != generation {
            // A source saw a container start, die or change: rebuild now, not at window end.
            self.inventory.invalidate().await;
        }
        let (inventory, rebuilt) = self
            .inventory
            .get(blocking(move || {
                let last = sync::lock(&state.last_inventory).take();
                Inventory::build(&state.settings, &state.reader, last.as_deref())
            }))
            .await
            .map_err(CollectError::Shared)?;
        if rebuilt {
            *sync::lock(&self.last_inventory) = Some(Arc::clone(&inventory));
            let layers = inventory
                .entries
                .iter()
                .filter_map(|e| e.metadata.writable_layer.clone())
                .collect();
            self.layers.set_wanted(layers);
            // New containers should show at once, not when the stats window ends.
            self.stats.invalidate().await;
        }
        let state = Arc::clone(self);
        let (snapshot, _) = self
            .stats
            .get(blocking(move || match &state.stats_thread {
                Some(thread) => thread.install(|| state.read_stats(inventory)),
                None => state.read_stats(inventory),
            }))
            .await
            .map_err(CollectError::Shared)?;
        Ok(snapshot)
    }

    /// Reads and renders every container, in inventory order, into one buffer per family.
    fn read_stats(&self, inventory: Arc<Inventory>) -> StatsSnapshot {
        let read_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let (labels, inventory_families) = self.rendered_for(&inventory);
        // Filesystems only when a cgroup has some: the root, or a container's writable layer.
        let disks = inventory
            .entries
            .iter()
            .any(|e| is_root(e) || e.metadata.writable_layer.is_some())
            .then(|| DiskView::read(&self.mounts, &self.reader, &self.procfs, &self.rootfs));
        // One cgroup after another, on this one thread. Read on every CPU, a scrape of
        // 1,000 cgroups took 40% less time but 3-9% more CPU (measured side by side on the
        // 2-CPU build machine, `cargo bench --bench container`, issue 21): most of a read is
        // the kernel formatting files, which slows when both CPUs do it at once, and CPU is
        // what every node pays at every scrape, where 50 ms is well inside any timeout.
        let mut families = ContainerFamilies::new(Source::Read, &self.line_bytes, inventory.entries.len());
        let mut containers = 0;
        // The indices of the containers that went away since the inventory was built.
        let mut gone = Vec::new();
        let entries = &inventory.entries;
        let mut batch = Vec::with_capacity(RENDER_BATCH);
        for (i, (entry, base)) in entries.iter().zip(labels.iter()).enumerate() {
            // The next containers' state, cold by now (the kernel's work for this one pushed
            // it out): asked for ahead, one step of each chain of addresses per container,
            // so no step waits on the one before. The entry itself (ten cache lines, most
            // of them read while rendering), then the shared table of kept files its entry
            // points to, then the table's slots. The entry's own lines, asked for too, cut
            // 0.3 ms (0.6-0.7%) a cold scrape of 1,000 real cgroups (300 alternating scrapes
            // each way): the load of its table's address had waited on them.
            if let Some(third) = entries.get(i + 3) {
                prefetch::lines(third, std::mem::size_of::<InventoryEntry>());
            }
            if let Some(after_next) = entries.get(i + 2) {
                prefetch::line(Arc::as_ptr(&after_next.files));
            }
            if let (Some(next), Some(next_base)) = (entries.get(i + 1), labels.get(i + 1)) {
                next.files.prefetch();
                next_base.prefetch();
            }
            match self.read_container(entry) {
                Some(read) => batch.push((entry, base, read)),
                None => gone.push(i),
            }
            if batch.len() == RENDER_BATCH || i + 1 == entries.len() {
                for (entry, base, read) in batch.drain(..) {
                    self.render_container(entry, base, read, read_at, disks.as_ref(), &mut families);
                    containers += 1;
                }
            }
        }
        families.record_sizes(&self.line_bytes, containers);
        let mut families = families.into_families();
        families.extend(self.inventory_families(&inventory, &labels, inventory_families, &gone));
        StatsSnapshot {
            families,
            containers,
            inventory,
        }
    }

    /// What was rendered for `inventory`: every container's labels, made here at its first
    /// read (they change only with the inventory, and rendering them at every read cost
    /// 0.6 ms a scrape of 1,000 containers, measured with perf), and the families of its own
    /// figures once a read has rendered them.
    fn rendered_for(&self, inventory: &Arc<Inventory>) -> (Arc<[BaseLabels]>, Option<Vec<Arc<Family>>>) {
        let mut rendered = sync::lock(&self.rendered);
        if let Some(render) = rendered.as_ref()
            && Weak::ptr_eq(&render.of, &Arc::downgrade(inventory))
        {
            return (Arc::clone(&render.labels), render.families.clone());
        }
        let extra_keys = extra_label_keys(inventory);
        let labels: Arc<[BaseLabels]> = inventory
            .entries
            .iter()
            .map(|entry| BaseLabels::new(entry, &extra_keys))
            .collect();
        *rendered = Some(InventoryRender {
            of: Arc::downgrade(inventory),
            labels: Arc::clone(&labels),
            families: None,
        });
        (labels, None)
    }

    /// The families of the inventory's own figures (limits, health, start and creation
    /// times) for the containers read: rendered at the first read of an inventory and
    /// served again by every later read of it, `kept`, since they change only with it.
    /// A quarter of a container's series (9 of 37 on the benchmark's cgroups): kept, a cold
    /// scrape of 1,000 real cgroups took 9-10% less user CPU (perf) and 1.8% less CPU (two
    /// binaries side by side, 200 rounds), and their gzip segments are compressed once per
    /// inventory. Rendered afresh, and not kept, when containers went away since the
    /// inventory was built (`gone`, their indices in it): none of their series may stay.
    fn inventory_families(
        &self,
        inventory: &Arc<Inventory>,
        labels: &[BaseLabels],
        kept: Option<Vec<Arc<Family>>>,
        gone: &[usize],
    ) -> Vec<Arc<Family>> {
        if let Some(kept) = kept
            && gone.is_empty()
        {
            return kept;
        }
        let entries = &inventory.entries;
        let mut families = ContainerFamilies::new(Source::Inventory, &self.line_bytes, entries.len());
        let mut skipped = gone.iter().peekable();
        for (i, (entry, base)) in entries.iter().zip(labels).enumerate() {
            if skipped.next_if_eq(&&i).is_none() {
                render_inventory(&mut SampleWriter::new(base, &mut families), entry);
            }
        }
        families.record_sizes(&self.line_bytes, entries.len() - gone.len());
        let families = families.into_families();
        if gone.is_empty() {
            let mut rendered = sync::lock(&self.rendered);
            if let Some(render) = rendered.as_mut()
                && Weak::ptr_eq(&render.of, &Arc::downgrade(inventory))
            {
                render.families = Some(families.clone());
            }
        }
        families
    }

    /// One container's stats and network, read; `None` when it went away since the
    /// inventory was built.
    fn read_container(&self, entry: &InventoryEntry) -> Option<ContainerRead> {
        // Every file of this container, its network included, is read within one budget.
        let budget = ReadBudget::default();
        let Ok(mut stats) =
            entry
                .paths
                .read_stats_budgeted(&self.reader, Some(&entry.files), Some(&budget), &entry.spec)
        else {
            return None;
        };
        if let (CgroupPaths::V2 { root: true, .. }, Some(memory)) = (&entry.paths, stats.memory.as_mut()) {
            // The v2 root has no memory.swap.current: as runc's library (cAdvisor's) does,
            // the machine's swap in use.
            memory.swap = self
                .reader
                .parse(&self.procfs, File::Meminfo, parse::meminfo)
                .and_then(|m| m.swap_used());
        }
        let network = entry.net_pid.and_then(|pid| self.network(pid, &entry.files, &budget));
        Some(ContainerRead { stats, network })
    }

    /// One container's series, from what [`Self::read_container`] read.
    fn render_container(
        &self,
        entry: &InventoryEntry,
        base: &BaseLabels,
        ContainerRead { stats, network }: ContainerRead,
        read_at: f64,
        disks: Option<&DiskView>,
        families: &mut ContainerFamilies,
    ) {
        let mut out = SampleWriter::new(base, families);
        let filesystems = disks.map_or_else(Vec::new, |d| self.filesystems(entry, d));
        render_stats(&mut out, &stats, &|major, minor| self.device_name(major, minor));
        render_filesystems(&mut out, &stats, &filesystems, &|major, minor| {
            self.device_name(major, minor)
        });
        if let Some(interfaces) = &network {
            render_network(&mut out, interfaces);
        }
        out.gauge(GaugeKind::LastSeen, None, read_at);
    }

    /// The container's filesystems as cAdvisor fills them: every host filesystem for the
    /// root, the writable layer's once the background walk has measured it, else none.
    fn filesystems(&self, entry: &InventoryEntry, disks: &DiskView) -> Vec<FsStat> {
        if is_root(entry) {
            return disks.root();
        }
        entry
            .metadata
            .writable_layer
            .as_deref()
            .and_then(|layer| self.layers.get(layer))
            .and_then(|measured| disks.layer(&measured))
            .into_iter()
            .collect()
    }

    fn network(&self, pid: u32, kept: &KeptFiles, budget: &ReadBudget) -> Option<Vec<Interface>> {
        let dir = self.procfs.join(pid.to_string());
        let mut interfaces =
            self.reader
                .parse_budgeted(Some(kept), Some(budget), &dir, File::NetDev, parse::net_dev)?;
        interfaces.retain(|i| !IGNORED_INTERFACE_PREFIXES.iter().any(|p| i.name.starts_with(p)));
        Some(interfaces)
    }

    /// `/dev/<name>` for a block device number, from sysfs; `major:minor` when unknown.
    fn device_name(&self, major: u64, minor: u64) -> String {
        let mut devices = sync::lock(&self.devices);
        devices
            .entry((major, minor))
            .or_insert_with(|| {
                let uevent = self.sysfs.join(format!("dev/block/{major}:{minor}/uevent"));
                crate::fsread::read_to_string(&uevent)
                    .ok()
                    .and_then(|text| parse::uevent_devname(&text).map(|n| format!("/dev/{n}")))
                    .unwrap_or_else(|| format!("{major}:{minor}"))
            })
            .clone()
    }
}

fn is_root(entry: &InventoryEntry) -> bool {
    entry.cgroup.kind == Kind::System && entry.cgroup.id == "/"
}

fn scrape_error(value: f64) -> Vec<Arc<Family>> {
    family::shared(
        family::FamilyBuilder::gauge(
            "container_scrape_error",
            "1 if there was an error while getting container metrics, 0 otherwise",
        )
        .with_sample(&[], value)
        .build(),
    )
}

/// What one container's read brought, kept until its batch is rendered.
struct ContainerRead {
    stats: Stats,
    network: Option<Vec<Interface>>,
}

/// How many containers are read before they are rendered. Reading and rendering one
/// container after the other, each pushes the other's code and data out of the core's
/// caches at every container; a few in a row of each cut sonde's CPU of a cold scrape of
/// 1,000 real cgroups by about 1 ms (2%; 8 against 1, 300 alternating scrapes each way, two
/// binaries side by side). A whole scrape's worth read first was slower: 1,000 containers'
/// stats no longer fit in those caches.
const RENDER_BATCH: usize = 8;

/// Runs blocking filesystem work off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, CollectError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| CollectError::Stopped {
            work: "reading cgroups",
            source,
        })
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

/// A container's series of the inventory's own figures (see
/// [`ContainerState::inventory_families`]).
fn render_inventory(out: &mut SampleWriter, entry: &InventoryEntry) {
    render_spec(out, entry);
    render_health(out, entry);
    if let Some(start) = entry.start_time {
        out.gauge(GaugeKind::StartTime, None, start);
    }
    if let Some(created) = entry.creation_time {
        out.gauge(GaugeKind::CreationTime, None, created);
    }
}

fn render_spec(out: &mut SampleWriter, entry: &InventoryEntry) {
    let spec = &entry.spec;
    let pairs = [
        (GaugeKind::SpecCpuPeriod, spec.cpu_period),
        (GaugeKind::SpecCpuQuota, spec.cpu_quota),
        (GaugeKind::SpecCpuShares, spec.cpu_shares),
        (GaugeKind::SpecMemoryLimit, spec.memory_limit),
        (GaugeKind::SpecMemorySwapLimit, spec.memory_swap_limit),
        (GaugeKind::SpecMemoryReservation, spec.memory_reservation),
        (GaugeKind::ThreadsMax, spec.threads_max),
    ];
    for (g, value) in pairs {
        if let Some(value) = value {
            out.gauge(g, None, value as f64);
        }
    }
}

/// One series per container, as cAdvisor: 1 healthy, 0 starting or unhealthy, -1 without a
/// health check.
fn render_health(out: &mut SampleWriter, entry: &InventoryEntry) {
    if let Some(value) = entry.metadata.health.value() {
        out.gauge(GaugeKind::HealthState, None, value);
    }
}

const NANOS: f64 = 1e9;
const MICROS: f64 = 1e6;

fn render_stats(out: &mut SampleWriter, stats: &Stats, device_name: &dyn Fn(u64, u64) -> String) {
    if let Some(cpu) = stats.cpu {
        out.counter(CounterKind::CpuUsage, &[("cpu", "total")], cpu.usage_ns as f64 / NANOS);
        if let Some(user) = cpu.user_ns {
            out.counter(CounterKind::CpuUser, &[], user as f64 / NANOS);
        }
        if let Some(system) = cpu.system_ns {
            out.counter(CounterKind::CpuSystem, &[], system as f64 / NANOS);
        }
    }
    if let Some(cfs) = stats.cfs {
        out.counter(CounterKind::CfsPeriods, &[], cfs.periods as f64);
        out.counter(CounterKind::CfsThrottledPeriods, &[], cfs.throttled_periods as f64);
        out.counter(CounterKind::CfsThrottledSeconds, &[], cfs.throttled_ns as f64 / NANOS);
        if let Some(bursts) = cfs.bursts {
            out.counter(CounterKind::CfsBurstPeriods, &[], bursts as f64);
        }
        if let Some(burst) = cfs.burst_ns {
            out.counter(CounterKind::CfsBurstSeconds, &[], burst as f64 / NANOS);
        }
    }
    if let Some(m) = stats.memory {
        out.gauge(GaugeKind::MemoryUsage, None, m.usage as f64);
        out.gauge(GaugeKind::MemoryWorkingSet, None, m.working_set as f64);
        out.gauge(GaugeKind::MemoryRss, None, m.rss as f64);
        out.gauge(GaugeKind::MemoryCache, None, m.cache as f64);
        out.gauge(GaugeKind::MemoryMappedFile, None, m.mapped_file as f64);
        out.gauge(GaugeKind::MemoryMaxUsage, None, m.max_usage as f64);
        out.gauge(GaugeKind::MemoryFailcnt, None, m.failcnt as f64);
        if let Some(swap) = m.swap {
            out.gauge(GaugeKind::MemorySwap, None, swap as f64);
        }
        out.gauge(GaugeKind::MemoryInactiveFile, None, m.inactive_file as f64);
        let v2 = m.v2.unwrap_or_default();
        for (g, value) in [
            (GaugeKind::MemoryActiveFile, m.active_file),
            (GaugeKind::MemoryKernelUsage, m.kernel_usage),
            (GaugeKind::MemoryFileDirty, v2.file_dirty),
            (GaugeKind::MemoryFileWriteback, v2.file_writeback),
        ] {
            if let Some(value) = value {
                out.gauge(g, None, value as f64);
            }
        }
        for (c, value) in [
            (CounterKind::MemoryEventsHigh, v2.events_high),
            (CounterKind::MemoryEventsMax, v2.events_max),
            (CounterKind::MemoryPgscan, v2.pgscan),
            (CounterKind::MemoryPgsteal, v2.pgsteal),
            (CounterKind::MemoryRefaultFile, v2.workingset_refault_file),
            (CounterKind::MemoryRefaultAnon, v2.workingset_refault_anon),
        ] {
            if let Some(value) = value {
                out.counter(c, &[], value as f64);
            }
        }
        for (kind, scope, value) in [
            ("pgfault", "container", m.pgfault),
            ("pgmajfault", "container", m.pgmajfault),
            ("pgfault", "hierarchy", m.hierarchy_pgfault),
            ("pgmajfault", "hierarchy", m.hierarchy_pgmajfault),
        ] {
            out.counter(
                CounterKind::MemoryFailures,
                &[("failure_type", kind), ("scope", scope)],
                value as f64,
            );
        }
    }
    if let Some(oom) = stats.oom_events {
        out.counter(CounterKind::OomEvents, &[], oom as f64);
    }
    for io in stats.io.iter().flatten() {
        let device = device_name(io.major, io.minor);
        let label = [("device", device.as_str())];
        out.counter(CounterKind::FsReadsBytes, &label, io.read_bytes as f64);
        out.counter(CounterKind::FsWritesBytes, &label, io.write_bytes as f64);
        out.counter(CounterKind::FsReads, &label, io.reads as f64);
        out.counter(CounterKind::FsWrites, &label, io.writes as f64);
        for (c, value) in [
            (CounterKind::FsIoCostUsage, io.cost.usage_us),
            (CounterKind::FsIoCostWait, io.cost.wait_us),
            (CounterKind::FsIoCostIndebt, io.cost.indebt_us),
            (CounterKind::FsIoCostIndelay, io.cost.indelay_us),
        ] {
            if let Some(us) = value {
                out.counter(c, &label, us as f64 / MICROS);
            }
        }
        let (major, minor) = (io.major.to_string(), io.minor.to_string());
        for (operation, value) in io.bytes_by_operation.iter() {
            let labels = [
                ("device", device.as_str()),
                ("major", major.as_str()),
                ("minor", minor.as_str()),
                ("operation", operation),
            ];
            out.counter(CounterKind::BlkioDeviceUsage, &labels, value as f64);
        }
    }
    if let Some(processes) = stats.processes {
        out.gauge(GaugeKind::Processes, None, processes as f64);
    }
    if let Some(threads) = stats.threads {
        out.gauge(GaugeKind::Threads, None, threads as f64);
    }
    for (pressure, waiting, stalled) in [
        (stats.cpu_pressure, CounterKind::CpuWaiting, CounterKind::CpuStalled),
        (
            stats.memory_pressure,
            CounterKind::MemoryWaiting,
            CounterKind::MemoryStalled,
        ),
        (stats.io_pressure, CounterKind::IoWaiting, CounterKind::IoStalled),
    ] {
        if let Some(p) = pressure {
            out.counter(waiting, &[], p.some_us as f64 / MICROS);
            out.counter(stalled, &[], p.full_us as f64 / MICROS);
        }
    }
}

fn render_network(out: &mut SampleWriter, interfaces: &[Interface]) {
    for i in interfaces {
        let label = [("interface", i.name.as_str())];
        for (c, value) in [
            (CounterKind::RxBytes, i.rx_bytes),
            (CounterKind::RxPackets, i.rx_packets),
            (CounterKind::RxDropped, i.rx_dropped),
            (CounterKind::RxErrors, i.rx_errors),
            (CounterKind::TxBytes, i.tx_bytes),
            (CounterKind::TxPackets, i.tx_packets),
            (CounterKind::TxDropped, i.tx_dropped),
            (CounterKind::TxErrors, i.tx_errors),
        ] {
            out.counter(c, &label, value as f64);
        }
    }
}
