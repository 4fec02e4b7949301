//! The `connection` collector: per-container TCP and UDP connection metrics taken in the
//! kernel by the probes in `ebpf-probes/`.
//!
//! Each scrape, in [`LoadedProbes::collect`]: **drain** — take the full batches the ring buffer
//! announced, every CPU's partial batch (`BatchReader::read_all`), the live TCP connections
//! (the probes' iterator, in every network namespace) and the live UDP sockets;
//! **enrich** — each connection the tracker has not seen yet gets, if outbound, the backend
//! NAT sent it to (`crate::conntrack`), and the gateway, interface and subnet it leaves its
//! network namespace through towards that destination ([`LoadedProbes::route`],
//! `crate::gateway`);
//! **series** — totals of closed connections plus values of live ones become families.
//! When the probes cannot load (no privileges, no BTF, missing hooks) every collection fails
//! with the reason, and the rest of sonde is unaffected.

pub mod series;
mod settings;
pub mod tracker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use futures::future::BoxFuture;
use prometheus::proto::MetricFamily;

use self::series::{Direction, LabelPolicy};
pub use self::settings::{ConnectionArgs, ConnectionConfig};
use self::tracker::{Enrichment, Tracker};
use super::{CollectError, Collection, Collector, CollectorSettings, ScrapeContext, Sources};
use crate::conntrack::ConntrackLookup;
use crate::ebpf::batch::{BatchReader, STALE_AFTER};
use crate::ebpf::conn::{
    Batch, ClosedConn, ConnKey, IPPROTO_TCP, IPPROTO_UDP, LiveConn, TELEMETRY_IS_LOSS, TELEMETRY_REASONS,
    TM_FIRST_SEEN_LIVE, TM_TABLE_FULL, TM_UNBATCHED_LOST,
};
use crate::ebpf::live::{TcpIterator, UdpTable};
use crate::ebpf::loader::{self, MapBatches, Program};
use crate::exposition::family::{self, FamilyBuilder};
use crate::gateway::GatewayLookup;
use crate::identity::cgroup_ids::{CgroupNames, InodePaths, SourceNames};
use crate::{netns, sync};

/// How often full batches are taken from the ring buffer between scrapes.
const RING_DRAIN_EVERY: Duration = Duration::from_millis(100);

pub struct ConnectionCollector {
    inner: Arc<ProbesOnDemand>,
}

/// The probes load at the first collection (which sonde runs right after it starts
/// listening), so a start that fails earlier, on a bad flag or a taken port, loads nothing.
struct ProbesOnDemand {
    config: ConnectionConfig,
    /// The host's sysfs, where the kernel's BTF is.
    sysfs: PathBuf,
    /// Where network namespaces are found: processes' (`<procfs>/<pid>/ns/net`) and named
    /// ones.
    namespaces: Namespaces,
    names: Arc<dyn CgroupNames>,
    gateway: Option<Arc<GatewayLookup>>,
    conntrack: Option<Arc<ConntrackLookup>>,
    loaded: OnceLock<Result<Arc<LoadedProbes>, Arc<loader::LoadError>>>,
}

impl ProbesOnDemand {
    fn loaded(&self) -> Result<Arc<LoadedProbes>, CollectError> {
        self.loaded
            .get_or_init(|| {
                let probes = LoadedProbes::load(
                    &self.config,
                    &self.sysfs,
                    self.namespaces.clone(),
                    self.names.clone(),
                    Enrichers {
                        gateway: self.gateway.clone(),
                        conntrack: self.conntrack.clone(),
                    },
                )
                .map(Arc::new);
                if let Ok(probes) = &probes {
                    LoadedProbes::spawn_ring_drain(probes);
                }
                probes.map_err(|e| {
                    tracing::warn!(collector = "connection", reason = %e, "eBPF probes not loaded; the connection collector will report failure");
                    Arc::new(e)
                })
            })
            .clone()
            .map_err(CollectError::Probes)
    }
}

/// The lookups of the enrichment step.
struct Enrichers {
    gateway: Option<Arc<GatewayLookup>>,
    conntrack: Option<Arc<ConntrackLookup>>,
}

/// Where network namespaces are found.
#[derive(Clone)]
struct Namespaces {
    procfs: PathBuf,
    named: PathBuf,
}

/// The loaded probes and everything user space keeps about them.
struct LoadedProbes {
    reader: BatchReader<MapBatches>,
    state: Mutex<TrackingState>,
    namespaces: Namespaces,
    /// The programs attached, for `sonde_ebpf_attached`.
    attached: Vec<Program>,
    names: Arc<dyn CgroupNames>,
    /// Labels connections with their gateway (`--no-gateway`: none).
    gateway: Option<Arc<GatewayLookup>>,
    /// Finds the backend of NATed connections (`--no-conntrack`: none).
    conntrack: Option<Arc<ConntrackLookup>>,
    udp_idle: Duration,
    /// Keeps the programs attached for the collector's life.
    _ebpf: Mutex<aya::Ebpf>,
}

struct TrackingState {
    tracker: Tracker,
    ring: RingBuf<MapData>,
    tcp: TcpIterator,
    udp: UdpTable,
    telemetry: PerCpuArray<MapData, u64>,
    /// Ring buffer items too short to be a batch.
    malformed: u64,
    /// UDP sockets taken as closed after `--connection.udp-idle`.
    udp_idle_closed: u64,
    /// Namespaces the last scrape seeded (walked with the TCP iterator), and walks that failed.
    namespaces_walked: usize,
    namespace_failures: u64,
    /// Lost batches, lost records sent alone and malformed items at the last look.
    losses_seen: (u64, u64, u64),
}

impl ConnectionCollector {
    pub fn new(config: &CollectorSettings, sources: &Sources) -> Self {
        Self {
            inner: Arc::new(ProbesOnDemand {
                config: config.connection.clone(),
                sysfs: config.paths.sysfs.clone(),
                namespaces: Namespaces {
                    procfs: config.paths.procfs.clone(),
                    named: config.paths.rootfs.join("run/netns"),
                },
                names: Arc::new(SourceNames::filtered(
                    InodePaths::new(&config.paths.sysfs),
                    sources.metadata.clone(),
                    config.container.filters.clone(),
                )),
                gateway: config.gateway.enabled.then(|| {
                    Arc::new(GatewayLookup::new(
                        &config.gateway,
                        &config.paths.procfs,
                        &config.paths.rootfs.join("run/netns"),
                    ))
                }),
                conntrack: config.conntrack.enabled.then(|| {
                    Arc::new(ConntrackLookup::new(
                        &config.conntrack,
                        &config.paths.procfs,
                        &config.paths.rootfs.join("run/netns"),
                    ))
                }),
                loaded: OnceLock::new(),
            }),
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the probes' timestamps.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

impl LoadedProbes {
    fn load(
        config: &ConnectionConfig,
        sysfs: &Path,
        namespaces: Namespaces,
        names: Arc<dyn CgroupNames>,
        enrichers: Enrichers,
    ) -> Result<Self, loader::LoadError> {
        let mut options = loader::Options::under_sysfs(config.max_live, sysfs);
        if !config.udp {
            options = options.without_udp();
            tracing::info!(
                collector = "connection",
                "UDP not counted (--no-connection.udp): no probe at sends and receives"
            );
        }
        let probes = loader::load_with(&options)?;
        let attached: Vec<String> = probes
            .attached
            .iter()
            .map(|p| format!("{}={}", p.program, p.hook))
            .collect();
        tracing::info!(
            collector = "connection",
            attached = attached.join(","),
            lacking = probes.missing.join("; "),
            // Ways refused before the one that runs (e.g. UDP's fexit programs, tried first
            // from 6.9, where the kernel allows no trampolines): the tracepoints count the same.
            passed_over = probes.passed_over.join("; "),
            cpus = probes.cpus.len(),
            "eBPF probes attached"
        );
        let policy = LabelPolicy {
            ephemeral_ports: config.ephemeral_ports.clone(),
            remote: config.remote,
            max_series: config.max_series,
        };
        let reader = BatchReader::new(MapBatches(probes.batches), &probes.cpus, STALE_AFTER)
            .map_err(|e| loader::LoadError::Load(e.to_string()))?;
        Ok(Self {
            reader,
            state: Mutex::new(TrackingState {
                tracker: Tracker::new(policy),
                ring: probes.ring,
                tcp: probes.tcp,
                udp: probes.udp,
                telemetry: probes.telemetry,
                malformed: 0,
                udp_idle_closed: 0,
                namespaces_walked: 0,
                namespace_failures: 0,
                losses_seen: (0, 0, 0),
            }),
            namespaces,
            attached: probes.attached,
            names,
            gateway: enrichers.gateway,
            conntrack: enrichers.conntrack,
            udp_idle: config.udp_idle,
            _ebpf: Mutex::new(probes.ebpf),
        })
    }

    /// Takes every full batch the ring buffer holds into the tracker. Runs at each scrape
    /// and, between scrapes, every [`RING_DRAIN_EVERY`] on a thread of its own: the ring
    /// buffer must not fill up while nobody scrapes.
    fn drain_ring(&self, state: &mut TrackingState) {
        let mut closed: Vec<ClosedConn> = Vec::new();
        while let Some(item) = state.ring.next() {
            let consumed = Batch::from_bytes(&item).map(|batch| {
                self.reader
                    .consume_full(&batch, |_, records| closed.extend_from_slice(records))
            });
            if !matches!(consumed, Some(Ok(()))) {
                state.malformed += 1;
            }
        }
        for record in &closed {
            self.take(state, record);
        }
    }

    /// One record from the batches: a TCP connection's start goes to the live list only; a
    /// close leaves the live list and counts.
    fn take(&self, state: &mut TrackingState, record: &ClosedConn) {
        if let Some(closed) = state.tcp.record(record) {
            state
                .tracker
                .closed(&closed, &|key, direction| self.route(key, direction));
        }
    }

    /// Whether records may have been lost since the last look (batches overwritten before
    /// sonde read them, a record sent alone the ring buffer had no room for, a malformed
    /// item): a start among them would be missing from the live list.
    fn records_lost(&self, state: &mut TrackingState) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let unbatched = state
            .telemetry
            .get(&TM_UNBATCHED_LOST, 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum());
        let now = (self.reader.counters.lost.load(Relaxed), unbatched, state.malformed);
        let lost = now != state.losses_seen;
        state.losses_seen = now;
        lost
    }

    /// Scrape step 2, enrichment, asked by the tracker once per connection, when it first
    /// sees it: for an outbound connection, the backend NAT sent it to (conntrack); then
    /// where it leaves its network namespace (gateway, interface, subnet) towards the
    /// destination it actually has, the translated one if NATed. Inbound connections need
    /// no NAT lookup: their socket already holds the translated (local) address.
    fn route(&self, key: &ConnKey, direction: Direction) -> Enrichment {
        let nat = match (&self.conntrack, direction) {
            (Some(conntrack), Direction::Outbound) => conntrack.lookup(key),
            _ => None,
        };
        let via = self.gateway.as_ref().and_then(|gateway| match &nat {
            Some(nat) => gateway.lookup_with_ips(key.local_addr()?, nat.backend.ip(), key.netns),
            None => gateway.lookup(key),
        });
        Enrichment { via, nat }
    }

    /// Drains the ring buffer every [`RING_DRAIN_EVERY`] until the probes are dropped.
    fn spawn_ring_drain(probes: &Arc<LoadedProbes>) {
        let weak = Arc::downgrade(probes);
        let spawned = std::thread::Builder::new().name("sonde-ring".into()).spawn(move || {
            loop {
                std::thread::sleep(RING_DRAIN_EVERY);
                let Some(probes) = weak.upgrade() else { return };
                let mut state = sync::lock(&probes.state);
                probes.drain_ring(&mut state);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the ring buffer drain; full batches are taken at scrapes only");
        }
    }

    /// One scrape's worth of work; blocking (map syscalls, the drain's worker threads).
    fn collect(&self) -> Result<Vec<MetricFamily>, CollectError> {
        let mut state = sync::lock(&self.state);
        let state = &mut *state;

        // Drain, and enrich the connections not seen before (`route`, step 2), as they are
        // tracked. First the full batches announced since the last drain.
        self.drain_ring(state);
        // Every CPU's partial batch.
        let started = Instant::now();
        let partial = Mutex::new(Vec::new());
        let drained = self
            .reader
            .read_all(|_, records| sync::lock(&partial).extend_from_slice(records));
        let read_all_duration = started.elapsed();
        for record in sync::into_inner(partial) {
            self.take(state, &record);
        }
        drained?;
        if self.records_lost(state) {
            state.tcp.records_lost();
        }

        // Live UDP sockets; idle ones leave the table as if closed.
        let mut live: Vec<LiveConn> = Vec::with_capacity(state.tracker.live_len() + 1024);
        self.read_udp(state, &mut live)?;
        // Live TCP connections, from the probes' table (namespaces new to sonde seeded first).
        let namespaces = netns::all(&self.namespaces.procfs, &self.namespaces.named);
        let udp_entries = live.len();
        let walk = state.tcp.walk(&namespaces, &mut live).map_err(CollectError::Live)?;
        state.namespaces_walked = walk.namespaces;
        for (inode, error) in &walk.failures {
            state.namespace_failures += 1;
            tracing::debug!(collector = "connection", netns = inode, %error, "TCP iterator not run in a namespace");
        }
        let live_entries = live.len();
        let read_live_done = Instant::now();
        state
            .tracker
            .live_snapshot(&mut live, Instant::now(), &|key, direction| self.route(key, direction));
        // The TCP connections' slots in the tracker, for it to find them by at the next scrape.
        state.tcp.keep_tags(&live[udp_entries..]);
        // The enrichment's caches: namespaces that went away.
        if let Some(gateway) = &self.gateway {
            gateway.maintain();
        }
        if let Some(conntrack) = &self.conntrack {
            conntrack.maintain();
        }
        let tracked = Instant::now();

        // Series.
        let mut families = self.series_families(&state.tracker);
        families.extend(self.self_families(state, read_all_duration, live_entries));
        tracing::debug!(
            collector = "connection",
            read_all_us = read_all_duration.as_micros() as u64,
            read_live_us = read_live_done.duration_since(started).as_micros() as u64,
            track_us = tracked.duration_since(read_live_done).as_micros() as u64,
            families_us = tracked.elapsed().as_micros() as u64,
            live_entries,
            "connection scrape phases"
        );
        Ok(families)
    }

    /// The UDP table's live sockets into `live`; a socket idle for `--connection.udp-idle`
    /// leaves the table as if closed (UDP has no close event).
    fn read_udp(&self, state: &mut TrackingState, live: &mut Vec<LiveConn>) -> Result<(), CollectError> {
        let now_ns = monotonic_ns();
        let udp_idle_ns = u64::try_from(self.udp_idle.as_nanos()).unwrap_or(u64::MAX);
        let mut entries = Vec::new();
        state.udp.read_all(&mut entries).map_err(CollectError::Live)?;
        for (socket, entry) in entries {
            let idle = now_ns.saturating_sub(entry.stats.last_ns) > udp_idle_ns;
            if idle {
                match state.udp.remove_if_unchanged(socket, &entry) {
                    Ok(true) => {
                        state.udp_idle_closed += 1;
                        state
                            .tracker
                            .closed(&entry, &|key, direction| self.route(key, direction));
                        continue;
                    }
                    // A datagram came meanwhile: still live.
                    Ok(false) => {}
                    Err(e) => tracing::warn!(collector = "connection", error = %e, "idle UDP entry not deleted"),
                }
            }
            live.push(LiveConn::untracked(entry.key, entry.stats));
        }
        Ok(())
    }

    fn series_families(&self, tracker: &Tracker) -> Vec<MetricFamily> {
        let mut connects = FamilyBuilder::counter(
            "sonde_tcp_connects_total",
            "TCP connections established (connect or accept) while sonde ran",
        );
        let mut failures = FamilyBuilder::counter(
            "sonde_tcp_connect_failures_total",
            "TCP connects that failed (SYN_SENT to CLOSE)",
        );
        let mut active = FamilyBuilder::gauge("sonde_tcp_active_connections", "TCP connections in the live table now");
        let mut tcp_sent = FamilyBuilder::counter("sonde_tcp_bytes_sent_total", "Bytes sent on TCP connections");
        let mut tcp_received =
            FamilyBuilder::counter("sonde_tcp_bytes_received_total", "Bytes received on TCP connections");
        let mut retransmits = FamilyBuilder::counter("sonde_tcp_retransmits_total", "TCP segments retransmitted");
        let mut rtt = FamilyBuilder::histogram("sonde_tcp_rtt_seconds", "Smoothed RTT of TCP connections at close");
        let mut udp_sent = FamilyBuilder::counter("sonde_udp_bytes_sent_total", "Bytes sent on UDP sockets");
        let mut udp_received =
            FamilyBuilder::counter("sonde_udp_bytes_received_total", "Bytes received on UDP sockets");
        let mut names = std::collections::HashMap::new();
        for view in tracker.view() {
            let key = view.key;
            let who = names.entry(key.cgroup_id).or_insert_with(|| {
                if key.cgroup_id == 0 {
                    Default::default()
                } else {
                    self.names.labels(key.cgroup_id)
                }
            });
            if who.excluded {
                continue;
            }
            let port = key.port.map(|p| p.to_string()).unwrap_or_default();
            let mut labels = vec![
                ("id", who.id.as_str()),
                ("container", who.container.as_str()),
                ("pod", who.pod.as_str()),
                ("namespace", who.namespace.as_str()),
                ("direction", key.direction.map_or("", |d| d.label())),
                ("port", port.as_str()),
                ("remote", key.remote.as_str()),
            ];
            // Every series has the service label while the NAT lookup is on (empty: not NATed).
            if self.conntrack.is_some() {
                labels.push(("service", key.service.as_str()));
            }
            // Every series has the gateway labels while the lookup is on (empty: direct).
            if self.gateway.is_some() {
                let via = key.via.as_deref();
                labels.extend([
                    ("gateway", via.map_or("", |v| v.gateway.as_str())),
                    ("interface", via.map_or("", |v| v.interface.as_str())),
                    ("subnet", via.map_or("", |v| v.subnet.as_str())),
                ]);
            }
            let c = view.counters;
            match key.protocol {
                IPPROTO_TCP => {
                    connects.sample(&labels, c.connects as f64);
                    failures.sample(&labels, c.connect_failures as f64);
                    active.sample(&labels, view.active as f64);
                    tcp_sent.sample(&labels, c.bytes_sent as f64);
                    tcp_received.sample(&labels, c.bytes_received as f64);
                    retransmits.sample(&labels, c.retransmits as f64);
                    if let Some(h) = view.rtt {
                        rtt.histogram_sample(&labels, &h.cumulative(), h.sum, h.count);
                    }
                }
                IPPROTO_UDP => {
                    udp_sent.sample(&labels, c.bytes_sent as f64);
                    udp_received.sample(&labels, c.bytes_received as f64);
                }
                _ => {}
            }
        }
        [
            connects,
            failures,
            active,
            tcp_sent,
            tcp_received,
            retransmits,
            rtt,
            udp_sent,
            udp_received,
        ]
        .into_iter()
        .filter_map(FamilyBuilder::build)
        .collect()
    }

    fn self_families(&self, state: &TrackingState, read_all: Duration, live_entries: usize) -> Vec<MetricFamily> {
        use std::sync::atomic::Ordering::Relaxed;
        let kernel: Vec<u64> = (0..TELEMETRY_REASONS.len() as u32)
            .map(|i| state.telemetry.get(&i, 0).map_or(0, |per_cpu| per_cpu.iter().sum()))
            .collect();
        // Without their live table the probes leave the connections first seen live to
        // sonde's list, which counts them.
        let mut kernel = kernel;
        if let Some(first_seen) = kernel.get_mut(TM_FIRST_SEEN_LIVE as usize) {
            *first_seen += state.tcp.first_seen();
        }
        if let Some(table_full) = kernel.get_mut(TM_TABLE_FULL as usize) {
            *table_full += state.tcp.table_full();
        }
        let mut lost = FamilyBuilder::counter(
            "sonde_ebpf_events_lost_total",
            "Connection events the probes or sonde could not count, by reason",
        );
        let mut events = FamilyBuilder::counter(
            "sonde_ebpf_events_total",
            "Kernel-side events worth knowing that lose nothing, by event",
        );
        for (i, reason) in TELEMETRY_REASONS.iter().enumerate() {
            let value = kernel.get(i).copied().unwrap_or(0) as f64;
            if TELEMETRY_IS_LOSS[i] {
                lost.sample(&[("reason", reason)], value);
            } else {
                events.sample(&[("event", reason)], value);
            }
        }
        let counters = &self.reader.counters;
        lost.sample(&[("reason", "batch_overwritten")], counters.lost.load(Relaxed) as f64);
        lost.sample(&[("reason", "malformed_batch")], state.malformed as f64);
        let batches = FamilyBuilder::counter(
            "sonde_ebpf_batches_read_total",
            "Batches of closed connections read: partial (from the map at scrape time) or full (announced)",
        )
        .with_sample(&[("path", "partial")], counters.partial.load(Relaxed) as f64)
        .with_sample(&[("path", "full")], counters.full.load(Relaxed) as f64);
        let duration = FamilyBuilder::gauge(
            "sonde_ebpf_read_all_duration_seconds",
            "How long this scrape's drain of every CPU's batch took",
        )
        .with_sample(&[], read_all.as_secs_f64());
        let folded = FamilyBuilder::counter(
            "sonde_connection_series_folded_total",
            "Connections counted in the remote=\"overflow\" series because of --connection.max-series",
        )
        .with_sample(&[], state.tracker.folded as f64);
        let live = FamilyBuilder::gauge(
            "sonde_connection_live_entries",
            "Live connections read at this scrape: TCP ones by read_tcp from their sockets, UDP sockets from the probes' table",
        )
        .with_sample(&[], live_entries as f64);
        let walked = FamilyBuilder::gauge(
            "sonde_connection_namespaces_walked",
            "Network namespaces this scrape walked with the TCP iterator: those new to sonde, whose connections older than sonde it started counting (live TCP connections are read from the probes' table, every namespace at once)",
        )
        .with_sample(&[], state.namespaces_walked as f64);
        let walk_failures = FamilyBuilder::counter(
            "sonde_connection_namespace_walk_failures_total",
            "Network namespaces a scrape could not walk with the TCP iterator (gone meanwhile, or not enterable); each is tried again at the next scrape",
        )
        .with_sample(&[], state.namespace_failures as f64);
        let mut attached = FamilyBuilder::gauge(
            "sonde_ebpf_attached",
            "Whether each program of the probes is attached (1) or not (0: this kernel takes another way, or none)",
        );
        for program in loader::all_programs() {
            let on = self.attached.contains(&program);
            attached.sample(
                &[("program", program.program), ("hook", &program.hook.to_string())],
                f64::from(u8::from(on)),
            );
        }
        let udp_idle = FamilyBuilder::counter(
            "sonde_connection_udp_idle_closed_total",
            "UDP sockets taken as closed after --connection.udp-idle without a datagram (UDP has no close event)",
        )
        .with_sample(&[], state.udp_idle_closed as f64);
        let mut families: Vec<MetricFamily> = [
            lost,
            events,
            batches,
            duration,
            folded,
            live,
            udp_idle,
            walked,
            walk_failures,
            attached,
        ]
        .into_iter()
        .filter_map(FamilyBuilder::build)
        .collect();
        if let Some(gateway) = &self.gateway {
            families.extend(gateway.families());
        }
        if let Some(conntrack) = &self.conntrack {
            families.extend(conntrack.families());
        }
        families
    }
}

impl Collector for ConnectionCollector {
    fn name(&self) -> &'static str {
        "connection"
    }

    fn collect(&self, _ctx: ScrapeContext) -> BoxFuture<'_, Collection> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.loaded()?.collect())
                .await
                .map_err(|source| CollectError::Stopped {
                    work: "the drain stopped",
                    source,
                })
                .and_then(|collected| collected.map(family::shared))
                .into()
        })
    }
}
