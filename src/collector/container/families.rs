//! The container collector's families, with cAdvisor's names and help texts: a buffer of
//! sample lines per family for one pass over the containers, and the writer that adds one
//! container's samples to them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::proto::MetricType;

use super::labels::BaseLabels;
use crate::exposition::family::{Family, RenderedFamily};

macro_rules! family_kinds {
    ($kind:ident, $type:expr, $($variant:ident => ($name:literal, $help:literal)),* $(,)?) => {
        #[derive(Clone, Copy)]
        pub(super) enum $kind { $($variant),* }
        impl $kind {
            pub(super) const ALL: &'static [$kind] = &[$($kind::$variant),*];
            fn family(self) -> RenderedFamily {
                match self { $($kind::$variant => RenderedFamily::new($name, $help, $type)),* }
            }
        }
    };
}

family_kinds!(GaugeKind, MetricType::GAUGE,
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
    CreationTime => ("container_creation_time_seconds", "Container creation time since unix epoch in seconds."),
    MemoryKernelUsage => ("container_memory_kernel_usage", "Size of kernel memory allocated in bytes."),
    MemoryActiveFile => ("container_memory_total_active_file_bytes", "Current total active file in bytes."),
    MemoryInactiveFile => ("container_memory_total_inactive_file_bytes", "Current total inactive file in bytes."),
    MemoryFileDirty => ("container_memory_file_dirty_bytes", "Number of bytes of file cache that has been modified but not yet written back to disk."),
    MemoryFileWriteback => ("container_memory_file_writeback_bytes", "Number of bytes of file cache that is currently being written back to disk."),
    LastSeen => ("container_last_seen", "Last time a container was seen by the exporter"),
    HealthState => ("container_health_state", "The result of the container's health check"),
    FsUsage => ("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem."),
    FsLimit => ("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem."),
    FsInodesFree => ("container_fs_inodes_free", "Number of available Inodes"),
    FsInodesTotal => ("container_fs_inodes_total", "Number of Inodes"),
    FsIoCurrent => ("container_fs_io_current", "Number of I/Os currently in progress"),
);

family_kinds!(CounterKind, MetricType::COUNTER,
    CpuUsage => ("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds."),
    CpuUser => ("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds."),
    CpuSystem => ("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds."),
    CfsPeriods => ("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals."),
    CfsThrottledPeriods => ("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals."),
    CfsThrottledSeconds => ("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled."),
    CfsBurstPeriods => ("container_cpu_cfs_burst_periods_total", "Number of periods when burst occurs."),
    CfsBurstSeconds => ("container_cpu_cfs_burst_seconds_total", "Total time duration the container has been bursted."),
    MemoryEventsHigh => ("container_memory_events_high_total", "Cumulative count of memory.high throttle events for the container"),
    MemoryEventsMax => ("container_memory_events_max_total", "Cumulative count of memory.max limit hit events for the container"),
    MemoryPgscan => ("container_memory_pgscan_total", "Cumulative number of pages scanned by the page reclaim algorithm."),
    MemoryPgsteal => ("container_memory_pgsteal_total", "Cumulative number of pages reclaimed by the page reclaim algorithm."),
    MemoryRefaultFile => ("container_memory_workingset_refault_file_total", "Cumulative number of refaults of previously evicted file pages."),
    MemoryRefaultAnon => ("container_memory_workingset_refault_anon_total", "Cumulative number of refaults of previously evicted anonymous pages."),
    MemoryFailures => ("container_memory_failures_total", "Cumulative count of memory allocation failures."),
    OomEvents => ("container_oom_events_total", "Count of out of memory events observed for the container"),
    FsReadsBytes => ("container_fs_reads_bytes_total", "Cumulative count of bytes read"),
    FsWritesBytes => ("container_fs_writes_bytes_total", "Cumulative count of bytes written"),
    FsReads => ("container_fs_reads_total", "Cumulative count of reads completed"),
    FsWrites => ("container_fs_writes_total", "Cumulative count of writes completed"),
    FsSectorReads => ("container_fs_sector_reads_total", "Cumulative count of sector reads completed"),
    FsReadsMerged => ("container_fs_reads_merged_total", "Cumulative count of reads merged"),
    FsReadSeconds => ("container_fs_read_seconds_total", "Cumulative count of seconds spent reading"),
    FsSectorWrites => ("container_fs_sector_writes_total", "Cumulative count of sector writes completed"),
    FsWritesMerged => ("container_fs_writes_merged_total", "Cumulative count of writes merged"),
    FsWriteSeconds => ("container_fs_write_seconds_total", "Cumulative count of seconds spent writing"),
    FsIoTime => ("container_fs_io_time_seconds_total", "Cumulative count of seconds spent doing I/Os"),
    FsIoTimeWeighted => ("container_fs_io_time_weighted_seconds_total", "Cumulative weighted I/O time in seconds"),
    FsIoCostUsage => ("container_fs_io_cost_usage_seconds_total", "Cumulative IOCost usage in seconds"),
    FsIoCostWait => ("container_fs_io_cost_wait_seconds_total", "Cumulative IOCost wait in seconds"),
    FsIoCostIndebt => ("container_fs_io_cost_indebt_seconds_total", "Cumulative IOCost debt in seconds"),
    FsIoCostIndelay => ("container_fs_io_cost_indelay_seconds_total", "Cumulative IOCost delay in seconds"),
    BlkioDeviceUsage => ("container_blkio_device_usage_total", "Blkio Device bytes usage"),
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

/// Where a family's figures come from, which says how often it must be rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The inventory's entry (limits, health, start and creation times): they change only
    /// with the inventory, so these families are rendered once for it.
    Inventory,
    /// The cgroup's files (and the read's own time), at every stats read.
    Read,
}

impl GaugeKind {
    pub(super) fn source(self) -> Source {
        match self {
            GaugeKind::SpecCpuPeriod
            | GaugeKind::SpecCpuQuota
            | GaugeKind::SpecCpuShares
            | GaugeKind::SpecMemoryLimit
            | GaugeKind::SpecMemorySwapLimit
            | GaugeKind::SpecMemoryReservation
            | GaugeKind::ThreadsMax
            | GaugeKind::HealthState
            | GaugeKind::StartTime
            | GaugeKind::CreationTime => Source::Inventory,
            _ => Source::Read,
        }
    }
}

/// How many families the collector renders.
pub(super) const FAMILIES: usize = GaugeKind::ALL.len() + CounterKind::ALL.len();

/// Every family's source, gauges first (the order of [`ContainerFamilies::get`]); every
/// counter is read.
fn sources() -> impl Iterator<Item = Source> {
    GaugeKind::ALL
        .iter()
        .map(|g| g.source())
        .chain(CounterKind::ALL.iter().map(|_| Source::Read))
}

/// The families of one source for one pass over the containers.
pub(super) struct ContainerFamilies {
    gauges: Vec<RenderedFamily>,
    counters: Vec<RenderedFamily>,
    source: Source,
}

impl ContainerFamilies {
    /// Empty families, those of `source` sized for `containers` from the bytes per
    /// container of the last pass (`line_bytes`, one per family, gauges first): sized once,
    /// instead of doubling (and copying) a dozen times.
    pub(super) fn new(source: Source, line_bytes: &[AtomicUsize], containers: usize) -> Self {
        let mut families = Self {
            gauges: GaugeKind::ALL.iter().map(|g| g.family()).collect(),
            counters: CounterKind::ALL.iter().map(|c| c.family()).collect(),
            source,
        };
        for ((family, per_container), of) in families
            .gauges
            .iter_mut()
            .chain(&mut families.counters)
            .zip(line_bytes)
            .zip(sources())
        {
            if of == source {
                family.reserve(per_container.load(Ordering::Relaxed) * containers);
            }
        }
        families
    }

    /// Family `i`, gauges first.
    fn get(&self, i: usize) -> &RenderedFamily {
        self.gauges
            .get(i)
            .unwrap_or_else(|| &self.counters[i - self.gauges.len()])
    }

    /// Keeps the bytes per container of this pass's families for the next pass's sizing.
    pub(super) fn record_sizes(&self, line_bytes: &[AtomicUsize], containers: usize) {
        for ((i, per_container), of) in line_bytes.iter().enumerate().zip(sources()) {
            if of == self.source {
                // A little over, so a container that grew a series fits without a copy.
                per_container.store((self.get(i).len() / containers.max(1)) * 9 / 8, Ordering::Relaxed);
            }
        }
    }

    /// Every family that has samples, gauges first.
    pub(super) fn into_families(self) -> Vec<Arc<Family>> {
        self.gauges
            .into_iter()
            .chain(self.counters)
            .filter_map(Family::rendered)
            .collect()
    }
}

/// Adds samples for one container: its base labels plus the family's own, in name order.
pub(super) struct SampleWriter<'a> {
    base: &'a BaseLabels,
    families: &'a mut ContainerFamilies,
}

impl<'a> SampleWriter<'a> {
    pub(super) fn new(base: &'a BaseLabels, families: &'a mut ContainerFamilies) -> Self {
        Self { base, families }
    }

    pub(super) fn gauge(&mut self, g: GaugeKind, own: Option<(&str, &str)>, value: f64) {
        debug_assert_eq!(g.source(), self.families.source, "a family rendered in the other pass");
        let base = self.base;
        self.families.gauges[g as usize].sample_with(|out| base.write_with(own.as_slice(), out), value);
    }

    pub(super) fn counter(&mut self, c: CounterKind, own: &[(&str, &str)], value: f64) {
        debug_assert_eq!(
            Source::Read,
            self.families.source,
            "a family rendered in the other pass"
        );
        let base = self.base;
        self.families.counters[c as usize].sample_with(|out| base.write_with(own, out), value);
    }
}
