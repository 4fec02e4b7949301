//! The filesystems behind cAdvisor's `container_fs_*` usage families and the per-filesystem
//! half of its IO families: for the root cgroup every host filesystem (capacity from
//! `statvfs`, IO from `/proc/diskstats`), for a Docker container with an overlay driver the
//! filesystem of its writable layer (usage from the background walk, capacity from
//! `statvfs`, IO of the whole device from `/proc/diskstats`), as cAdvisor's raw and Docker
//! handlers fill `ContainerStats.Filesystem`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::layers::Measured;
use super::{CounterKind, GaugeKind, NANOS, SampleWriter};
use crate::cgroup::Stats;
use crate::cgroup::{File, Reader};
use crate::disk::diskstats::{self, DiskStats, DiskStatsTable};
use crate::disk::mounts::{self, Partition};
use crate::disk::{self as disk, Capacity, under_root};
use crate::sync;

/// One filesystem of a container, as cAdvisor's `FsStats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsStat {
    pub device: String,
    pub limit: u64,
    pub usage: u64,
    pub inodes: u64,
    pub inodes_free: u64,
    pub disk: DiskStats,
}

/// The host's filesystems, re-read from `mountinfo` at most once per window.
pub struct Mounts {
    window: Duration,
    last: Mutex<Option<(Instant, Arc<Vec<Partition>>)>>,
}

impl Mounts {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last: Mutex::default(),
        }
    }

    fn partitions(&self, reader: &Reader, procfs: &Path) -> Arc<Vec<Partition>> {
        let mut last = sync::lock(&self.last);
        if let Some((_, partitions)) = last.as_ref().filter(|(at, _)| at.elapsed() < self.window) {
            return Arc::clone(partitions);
        }
        // The host's mounts: init's, not this process's (sonde may run in a container).
        let partitions = Arc::new(
            reader
                .parse(procfs, File::Mountinfo, |text| {
                    mounts::mountinfo(text).map(|m| mounts::partitions(&m))
                })
                .unwrap_or_default(),
        );
        *last = Some((Instant::now(), Arc::clone(&partitions)));
        partitions
    }
}

/// What one stats read knows of the filesystems: mounts, one read of `/proc/diskstats`, and
/// each filesystem's `statvfs` once, when first asked.
pub struct DiskView {
    partitions: Arc<Vec<Partition>>,
    diskstats: DiskStatsTable,
    rootfs: PathBuf,
    capacities: OnceLock<Vec<Option<Capacity>>>,
}

impl DiskView {
    pub fn read(mounts: &Mounts, reader: &Reader, procfs: &Path, rootfs: &Path) -> Self {
        Self {
            partitions: mounts.partitions(reader, procfs),
            diskstats: reader
                .parse(procfs, File::Diskstats, diskstats::diskstats)
                .unwrap_or_default(),
            rootfs: rootfs.to_owned(),
            capacities: OnceLock::new(),
        }
    }

    fn capacities(&self) -> &[Option<Capacity>] {
        self.capacities.get_or_init(|| {
            self.partitions
                .iter()
                .map(|p| disk::capacity(&under_root(&self.rootfs, Path::new(&p.mountpoint))).ok())
                .collect()
        })
    }

    fn disk(&self, p: &Partition) -> DiskStats {
        self.diskstats
            .find(&p.device, p.major, p.minor)
            .copied()
            .unwrap_or_default()
    }

    /// The root cgroup's: every host filesystem whose `statvfs` answers.
    pub fn root(&self) -> Vec<FsStat> {
        self.partitions
            .iter()
            .zip(self.capacities())
            .filter_map(|(p, c)| {
                let c = (*c)?;
                Some(FsStat {
                    device: p.device.clone(),
                    limit: c.bytes,
                    usage: c.bytes.saturating_sub(c.free),
                    inodes: c.inodes,
                    inodes_free: c.inodes_free,
                    disk: self.disk(p),
                })
            })
            .collect()
    }

    /// A Docker container's writable layer: cAdvisor's `limit` is the filesystem's size, its
    /// `inodes` the layer's entries, and it sets no free inodes (0).
    pub fn layer(&self, measured: &Measured) -> Option<FsStat> {
        let (major, minor) = measured.device;
        let p = mounts::partition_of(&self.partitions, major, minor)?;
        let i = self.partitions.iter().position(|q| std::ptr::eq(q, p))?;
        let capacity = self.capacities()[i]?;
        Some(FsStat {
            device: p.device.clone(),
            limit: capacity.bytes,
            usage: measured.bytes,
            inodes: measured.inodes,
            inodes_free: 0,
            disk: self.disk(p),
        })
    }
}

/// cAdvisor's per-filesystem series (its `fsValues`, and the second half of its `ioValues`).
/// A series whose device the cgroup's own IO series already has is left out: cAdvisor would
/// collect it twice and its registry keeps the first, the cgroup's. The times are
/// `/proc/diskstats`' milliseconds divided by 10^9, exactly as cAdvisor divides them.
pub(super) fn render_filesystems(
    out: &mut SampleWriter,
    stats: &Stats,
    filesystems: &[FsStat],
    device_name: &dyn Fn(u64, u64) -> String,
) {
    if filesystems.is_empty() {
        return;
    }
    let io_devices: Vec<String> = stats
        .io
        .iter()
        .flatten()
        .map(|io| device_name(io.major, io.minor))
        .collect();
    for fs in filesystems {
        let label = [("device", fs.device.as_str())];
        out.gauge(GaugeKind::FsInodesFree, Some(label[0]), fs.inodes_free as f64);
        out.gauge(GaugeKind::FsInodesTotal, Some(label[0]), fs.inodes as f64);
        out.gauge(GaugeKind::FsLimit, Some(label[0]), fs.limit as f64);
        out.gauge(GaugeKind::FsUsage, Some(label[0]), fs.usage as f64);
        out.gauge(GaugeKind::FsIoCurrent, Some(label[0]), fs.disk.io_in_progress as f64);
        let d = &fs.disk;
        let seconds = |ms: u64| ms as f64 / NANOS;
        if !io_devices.contains(&fs.device) {
            out.counter(CounterKind::FsReads, &label, d.reads_completed as f64);
            out.counter(CounterKind::FsWrites, &label, d.writes_completed as f64);
        }
        for (c, value) in [
            (CounterKind::FsSectorReads, d.sectors_read as f64),
            (CounterKind::FsReadsMerged, d.reads_merged as f64),
            (CounterKind::FsReadSeconds, seconds(d.read_time_ms)),
            (CounterKind::FsSectorWrites, d.sectors_written as f64),
            (CounterKind::FsWritesMerged, d.writes_merged as f64),
            (CounterKind::FsWriteSeconds, seconds(d.write_time_ms)),
            (CounterKind::FsIoTime, seconds(d.io_time_ms)),
            (CounterKind::FsIoTimeWeighted, seconds(d.weighted_io_time_ms)),
        ] {
            out.counter(c, &label, value);
        }
    }
}
