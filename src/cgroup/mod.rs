//! cgroup v1, v2 and hybrid hierarchies: where they are, and reading a cgroup's stats and
//! limits. Parsing lives in [`parse`], free of file access; every path is under
//! `--path.sysfs` (and `--path.procfs` for network).

// The fake cgroup forest lives with the tests (it is no part of the exporter); the unit tests
// here include it by path, as the integration tests, benchmarks and the example do.
#[cfg(test)]
#[path = "../../tests/common/cgroup_fixture.rs"]
pub(crate) mod fixture;
pub mod parse;
mod read;
pub mod stats;
mod v1;
mod v2;

use std::path::{Path, PathBuf};

pub use read::{CONTAINER_READ_BUDGET, CgroupFiles, File, FileCounters, KeptFiles, ReadBudget, Reader};
pub use stats::{Spec, Stats};

/// Why the cgroup hierarchy could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy under {0} (neither cgroup.controllers nor v1 controller directories)")]
    NoHierarchy(PathBuf),
}

/// The cgroup hierarchies of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Unified hierarchy only.
    V2 { root: PathBuf },
    /// v1 controllers, each at its own root; `unified` is the v2 mount of a hybrid host,
    /// used only for pressure (PSI) files.
    V1 { roots: V1Roots, unified: Option<PathBuf> },
}

/// The roots of the v1 controllers sonde reads; absent controllers are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V1Roots {
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
    pub pids: Option<PathBuf>,
}

impl Layout {
    /// Finds the hierarchies under `<sysfs>/fs/cgroup`.
    pub fn detect(sysfs: &Path) -> Result<Layout, CgroupError> {
        let base = sysfs.join("fs/cgroup");
        if base.join("cgroup.controllers").is_file() {
            return Ok(Layout::V2 { root: base });
        }
        // Controllers may be co-mounted ("cpu,cpuacct") with or without the usual symlinks.
        let find = |names: &[&str]| names.iter().map(|n| base.join(n)).find(|p| p.is_dir());
        let roots = V1Roots {
            cpu: find(&["cpu", "cpu,cpuacct", "cpuacct,cpu"]),
            cpuacct: find(&["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]),
            memory: find(&["memory"]),
            blkio: find(&["blkio"]),
            pids: find(&["pids"]),
        };
        if roots == V1Roots::default() {
            return Err(CgroupError::NoHierarchy(base));
        }
        let unified = Some(base.join("unified")).filter(|p| p.join("cgroup.procs").is_file());
        Ok(Layout::V1 { roots, unified })
    }

    /// The hierarchy whose tree is walked to discover cgroups.
    pub fn discovery_root(&self) -> &Path {
        match self {
            Layout::V2 { root } => root,
            Layout::V1 { roots, .. } => [&roots.cpuacct, &roots.cpu, &roots.memory, &roots.pids, &roots.blkio]
                .into_iter()
                .flatten()
                .next()
                .map_or(Path::new("/"), PathBuf::as_path),
        }
    }

    /// The directories of the cgroup at `id` (a path like `/docker/<id>`) in every hierarchy.
    pub fn paths(&self, id: &str) -> CgroupPaths {
        let relative = id.trim_start_matches('/');
        let at = |root: &Option<PathBuf>| root.as_ref().map(|r| r.join(relative));
        match self {
            Layout::V2 { root } => CgroupPaths::V2 {
                dir: root.join(relative),
                root: relative.is_empty(),
            },
            Layout::V1 { roots, unified } => CgroupPaths::V1 {
                cpu: at(&roots.cpu),
                cpuacct: at(&roots.cpuacct),
                memory: at(&roots.memory),
                blkio: at(&roots.blkio),
                pids: at(&roots.pids),
                unified: at(unified).filter(|p| p.is_dir()),
            },
        }
    }
}

/// Where one cgroup's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPaths {
    V2 {
        dir: PathBuf,
        /// The root cgroup, which has no `memory.current` (nor limits, nor `pids.*`).
        root: bool,
    },
    V1 {
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        memory: Option<PathBuf>,
        blkio: Option<PathBuf>,
        pids: Option<PathBuf>,
        unified: Option<PathBuf>,
    },
}

/// The cgroup went away while it was being read: normal churn, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl CgroupPaths {
    /// The directory that best stands for the cgroup (for its start time and process list).
    pub fn main_dir(&self) -> Option<&Path> {
        match self {
            CgroupPaths::V2 { dir, .. } => Some(dir),
            CgroupPaths::V1 {
                cpuacct,
                cpu,
                memory,
                pids,
                blkio,
                ..
            } => [cpuacct, cpu, memory, pids, blkio]
                .into_iter()
                .flatten()
                .next()
                .map(PathBuf::as_path),
        }
    }

    fn still_there(&self) -> Result<(), Gone> {
        match self.main_dir() {
            Some(dir) if dir.is_dir() => Ok(()),
            _ => Err(Gone),
        }
    }

    /// The stats that change between scrapes. Files that are missing leave their part empty;
    /// malformed or unreadable ones are counted and logged by the reader.
    pub fn read_stats(&self, reader: &Reader, spec: &Spec) -> Result<Stats, Gone> {
        self.read_stats_kept(reader, None, spec)
    }

    /// [`CgroupPaths::read_stats`] through the cgroup's kept-open files.
    pub fn read_stats_kept(&self, reader: &Reader, kept: Option<&KeptFiles>, spec: &Spec) -> Result<Stats, Gone> {
        self.read_stats_budgeted(reader, kept, None, spec)
    }

    /// [`CgroupPaths::read_stats_kept`] within a container's [`ReadBudget`]: a container
    /// whose files hold far more than any real one's loses its own figures, not the others'.
    pub fn read_stats_budgeted(
        &self,
        reader: &Reader,
        kept: Option<&KeptFiles>,
        budget: Option<&ReadBudget>,
        spec: &Spec,
    ) -> Result<Stats, Gone> {
        let reader = CgroupFiles { reader, kept, budget };
        let stats = match self {
            CgroupPaths::V2 { dir, root } => v2::stats(reader, dir, *root, spec),
            CgroupPaths::V1 { .. } => v1::stats(reader, self, spec),
        };
        if stats.is_empty() {
            self.still_there()?;
        }
        Ok(stats)
    }

    /// The limits, which change rarely and are refreshed with the inventory.
    pub fn read_spec(&self, reader: &Reader) -> Result<Spec, Gone> {
        let spec = match self {
            CgroupPaths::V2 { dir, .. } => v2::spec(reader, dir),
            CgroupPaths::V1 { .. } => v1::spec(reader, self),
        };
        self.still_there()?;
        Ok(spec)
    }

    /// When the cgroup was made, as cAdvisor tells it: the earliest modification time of its
    /// directories and of a file the kernel writes once at creation (`cgroup.events` on v2,
    /// `cgroup.clone_children` on v1), since a directory's own time moves when a child is
    /// made. `None` when none of them can be read.
    pub fn creation_time(&self) -> Option<std::time::SystemTime> {
        let (dirs, marker): (Vec<&Path>, &str) = match self {
            CgroupPaths::V2 { dir, .. } => (vec![dir.as_path()], "cgroup.events"),
            CgroupPaths::V1 {
                cpu,
                cpuacct,
                memory,
                blkio,
                pids,
                ..
            } => (
                [cpu, cpuacct, memory, blkio, pids]
                    .into_iter()
                    .flatten()
                    .map(PathBuf::as_path)
                    .collect(),
                "cgroup.clone_children",
            ),
        };
        dirs.into_iter()
            .flat_map(|dir| [dir.to_path_buf(), dir.join(marker)])
            .filter_map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
            .min()
    }

    /// The number of processes and the first PID, from `cgroup.procs`.
    pub fn procs(&self, reader: &Reader) -> Option<(u64, Option<u32>)> {
        reader.parse(self.main_dir()?, File::CgroupProcs, parse::procs)
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{FakeCgroup, write_v1, write_v2};
    use super::parse::{BlkioOperations, DeviceIo, Pressure};
    use super::stats::{Cfs, Cpu, Memory, MemoryV2};
    use super::*;

    const ID: &str = "/docker/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn sysfs() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn detects_v1_v2_and_hybrid() {
        let v2 = sysfs();
        write_v2(v2.path(), &FakeCgroup::seeded(ID, 0)).expect("write");
        assert!(matches!(Layout::detect(v2.path()), Ok(Layout::V2 { .. })));

        let hybrid = sysfs();
        write_v1(hybrid.path(), &FakeCgroup::seeded(ID, 0)).expect("write");
        let unified = hybrid.path().join("fs/cgroup/unified");
        std::fs::create_dir_all(&unified).expect("mkdir");
        std::fs::write(unified.join("cgroup.procs"), "").expect("write");
        let Ok(Layout::V1 {
            roots,
            unified: Some(found),
        }) = Layout::detect(hybrid.path())
        else {
            panic!("hybrid not detected");
        };
        assert_eq!(found, unified);
        assert!(roots.cpu.is_some() && roots.memory.is_some() && roots.pids.is_some());

        assert!(Layout::detect(sysfs().path()).is_err());
    }

    #[test]
    fn reads_v1_stats_and_spec() {
        let root = sysfs();
        let mut fake = FakeCgroup::seeded(ID, 3); // seed 3: quota set, 512 MiB limit
        fake.quota = Some((20_000, 100_000));
        write_v1(root.path(), &fake).expect("write");
        let layout = Layout::detect(root.path()).expect("layout");
        let paths = layout.paths(ID);
        let reader = Reader::default();
        let spec = paths.read_spec(&reader).expect("present");
        assert_eq!(
            spec,
            Spec {
                cpu_period: Some(100_000),
                cpu_quota: Some(20_000),
                cpu_shares: Some(1024),
                memory_limit: Some(512 << 20),
                memory_swap_limit: Some(0),
                memory_reservation: Some(0),
                threads_max: Some(0),
            }
        );
        let stats = paths.read_stats(&reader, &spec).expect("present");
        assert_eq!(
            stats.cpu,
            Some(Cpu {
                usage_ns: 4_000_000_007,
                user_ns: Some(240 * 10_000_000),
                system_ns: Some(160 * 10_000_000),
            })
        );
        assert_eq!(
            stats.cfs,
            Some(Cfs {
                periods: 103,
                throttled_periods: 13,
                throttled_ns: 5_000_003,
                bursts: Some(10),
                burst_ns: Some(2_003_000),
            })
        );
        assert_eq!(
            stats.memory,
            Some(Memory {
                usage: (64 << 20) + 3 * 4096,
                max_usage: (64 << 20) + 4 * 4096,
                working_set: (56 << 20) + 3 * 4096,
                rss: 40 << 20,
                cache: 20 << 20,
                mapped_file: 4 << 20,
                swap: Some(0),
                failcnt: 0,
                pgfault: 300,
                pgmajfault: 3,
                hierarchy_pgfault: 600,
                hierarchy_pgmajfault: 6,
                active_file: Some((12 << 20) + 3 * 4096),
                inactive_file: 8 << 20,
                kernel_usage: Some((3 << 20) + 3 * 4096),
                // cAdvisor takes these from v2 files only.
                v2: None,
            })
        );
        assert_eq!(stats.oom_events, Some(3));
        assert_eq!(
            stats.io,
            Some(vec![DeviceIo {
                major: 8,
                minor: 0,
                read_bytes: 3 * 4096,
                write_bytes: 3 * 8192,
                reads: 3,
                writes: 6,
                // Seed 3: discards 1536 bytes; sync is the reads and a quarter of the writes.
                bytes_by_operation: BlkioOperations([
                    Some(3 * 6144 + 1536),
                    Some(1536),
                    Some(3 * 4096),
                    Some(3 * 6144),
                    Some(3 * 12288 + 1536),
                    Some(3 * 8192),
                ]),
                ..DeviceIo::default()
            }])
        );
        assert_eq!((stats.threads, stats.processes), (Some(2), Some(2)));
        // No unified tree here: no PSI.
        assert_eq!(stats.cpu_pressure, None);
    }

    #[test]
    fn reads_v2_stats_and_spec() {
        let root = sysfs();
        let fake = FakeCgroup::seeded(ID, 1); // seed 1: quota 50000/100000, no limit
        write_v2(root.path(), &fake).expect("write");
        let paths = Layout::detect(root.path()).expect("layout").paths(ID);
        let reader = Reader::default();
        let spec = paths.read_spec(&reader).expect("present");
        assert_eq!(
            spec,
            Spec {
                cpu_period: Some(100_000),
                cpu_quota: Some(50_000),
                cpu_shares: Some(2 + (99 * 262_142) / 9_999),
                memory_limit: Some(0),
                memory_swap_limit: Some(0),
                memory_reservation: Some(0),
                threads_max: Some(0),
            }
        );
        let stats = paths.read_stats(&reader, &spec).expect("present");
        assert_eq!(
            stats.cpu,
            Some(Cpu {
                usage_ns: 2_000_000_000,
                user_ns: Some(120 * 10_000_000),
                system_ns: Some(80 * 10_000_000),
            })
        );
        assert_eq!(
            stats.cfs,
            Some(Cfs {
                periods: 101,
                throttled_periods: 11,
                throttled_ns: 5_000_000,
                bursts: Some(8),
                burst_ns: Some(2_001_000),
            })
        );
        let memory = stats.memory.expect("memory");
        assert_eq!(memory.working_set, (56 << 20) + 4096);
        assert_eq!(memory.max_usage, (64 << 20) + 2 * 4096);
        assert_eq!(
            (memory.failcnt, memory.hierarchy_pgfault, memory.swap),
            (0, 300, Some(0))
        );
        assert_eq!(
            (memory.active_file, memory.inactive_file, memory.kernel_usage),
            (Some((12 << 20) + 4096), 8 << 20, None)
        );
        assert_eq!(
            memory.v2,
            Some(MemoryV2 {
                file_dirty: Some(12_288),
                file_writeback: Some(4096),
                pgscan: Some(501),
                pgsteal: Some(401),
                workingset_refault_anon: Some(31),
                workingset_refault_file: Some(51),
                events_high: Some(21),
                events_max: Some(11),
            })
        );
        assert_eq!(stats.oom_events, Some(1));
        // Bytes by operation on v2: Read and Write only (no dbytes), as cAdvisor.
        assert_eq!(
            stats.io,
            Some(vec![DeviceIo {
                major: 8,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 8192,
                reads: 1,
                writes: 2,
                bytes_by_operation: BlkioOperations([None, None, Some(4096), None, None, Some(8192)]),
                ..DeviceIo::default()
            }])
        );
        assert_eq!(
            stats.cpu_pressure,
            Some(Pressure {
                some_us: 1_500_001,
                full_us: 500_001
            })
        );
        assert_eq!((stats.threads, stats.processes), (Some(2), Some(2)));
    }

    /// The v2 root has cpu.stat and memory.stat but no memory.current, memory.peak or
    /// pids.*: usage is anon + file, as runc's library (cAdvisor's) makes it.
    #[test]
    fn reads_the_v2_root() {
        let root = sysfs();
        write_v2(root.path(), &FakeCgroup::seeded(ID, 0)).expect("write");
        let top = root.path().join("fs/cgroup");
        std::fs::write(
            top.join("cpu.stat"),
            "usage_usec 7000001\nuser_usec 5000000\nsystem_usec 2000001\nnice_usec 0\n",
        )
        .expect("write");
        std::fs::write(
            top.join("memory.stat"),
            "anon 3000000\nfile 9000000\nfile_mapped 100\nactive_file 4000000\ninactive_file 5000000\npgfault 7\npgmajfault 1\n",
        )
        .expect("write");
        let paths = Layout::detect(root.path()).expect("layout").paths("/");
        assert!(matches!(paths, CgroupPaths::V2 { root: true, .. }));
        let reader = Reader::default();
        let spec = paths.read_spec(&reader).expect("present");
        assert_eq!(spec.memory_limit, None, "no memory.max at the root");
        let stats = paths.read_stats(&reader, &spec).expect("present");
        assert_eq!(stats.cpu.map(|c| c.usage_ns), Some(7_000_001_000));
        let memory = stats.memory.expect("memory from memory.stat");
        assert_eq!(
            (memory.usage, memory.working_set, memory.max_usage, memory.swap),
            (12_000_000, 7_000_000, 0, None)
        );
        assert_eq!(stats.threads, None);
        assert!(File::ALL.iter().all(|f| reader.counters().errors(*f) == 0));
    }

    #[test]
    fn odd_v2_files() {
        let root = sysfs();
        let mut fake = FakeCgroup::seeded(ID, 0);
        fake.pressure = None;
        write_v2(root.path(), &fake).expect("write");
        let dir = root.path().join("fs/cgroup").join(ID.trim_start_matches('/'));
        // A zero quota is still a quota; an old kernel has no memory.peak; no io controller.
        std::fs::write(dir.join("cpu.max"), "0 100000\n").expect("write");
        std::fs::remove_file(dir.join("memory.peak")).expect("rm");
        std::fs::remove_file(dir.join("io.stat")).expect("rm");
        std::fs::write(dir.join("memory.max"), "268435456\n").expect("write");
        let paths = Layout::detect(root.path()).expect("layout").paths(ID);
        let reader = Reader::default();
        let spec = paths.read_spec(&reader).expect("present");
        assert_eq!((spec.cpu_quota, spec.memory_limit), (Some(0), Some(268_435_456)));
        let stats = paths.read_stats(&reader, &spec).expect("present");
        assert!(stats.cfs.is_some());
        assert_eq!(stats.memory.map(|m| m.max_usage), Some(0));
        assert_eq!((stats.io, stats.cpu_pressure), (None, None));
        assert_eq!(
            reader.counters().errors(File::IoStat),
            0,
            "a missing file is not an error"
        );
    }

    #[test]
    fn malformed_files_are_counted_not_zeroed() {
        let root = sysfs();
        write_v2(root.path(), &FakeCgroup::seeded(ID, 0)).expect("write");
        let dir = root.path().join("fs/cgroup").join(ID.trim_start_matches('/'));
        std::fs::write(dir.join("memory.stat"), "anon 1\nfile\n").expect("write");
        std::fs::write(dir.join("cpu.stat"), "usage_usec lots\n").expect("write");
        let paths = Layout::detect(root.path()).expect("layout").paths(ID);
        let reader = Reader::default();
        let stats = paths.read_stats(&reader, &Spec::default()).expect("present");
        assert_eq!((stats.memory, stats.cpu), (None, None));
        assert_eq!(reader.counters().errors(File::MemoryStat), 1);
        assert_eq!(reader.counters().errors(File::CpuStat), 1);
        assert_eq!(reader.counters().reads(File::MemoryStat), 1);
        assert!(stats.io.is_some(), "other parts are still read");
    }

    #[test]
    fn unreadable_files_are_counted_on_every_read() {
        let root = sysfs();
        write_v2(root.path(), &FakeCgroup::seeded(ID, 0)).expect("write");
        let dir = root.path().join("fs/cgroup").join(ID.trim_start_matches('/'));
        // An I/O error other than "not found" (EISDIR here; EACCES for an unprivileged sonde).
        std::fs::remove_file(dir.join("memory.stat")).expect("rm");
        std::fs::create_dir(dir.join("memory.stat")).expect("mkdir");
        let paths = Layout::detect(root.path()).expect("layout").paths(ID);
        let reader = Reader::default();
        for _ in 0..3 {
            let stats = paths.read_stats(&reader, &Spec::default()).expect("present");
            assert_eq!(stats.memory, None);
            assert!(stats.cpu.is_some());
        }
        assert_eq!(reader.counters().errors(File::MemoryStat), 3);
    }

    #[test]
    fn a_removed_cgroup_is_gone_not_failed() {
        let root = sysfs();
        write_v1(root.path(), &FakeCgroup::seeded(ID, 0)).expect("write");
        let layout = Layout::detect(root.path()).expect("layout");
        let paths = layout.paths(ID);
        for ctrl in ["cpu", "cpuacct", "memory", "blkio", "pids"] {
            std::fs::remove_dir_all(root.path().join("fs/cgroup").join(ctrl).join("docker")).expect("rm");
        }
        let reader = Reader::default();
        assert_eq!(paths.read_stats(&reader, &Spec::default()), Err(Gone));
        assert_eq!(paths.read_spec(&reader), Err(Gone));
        assert!(File::ALL.iter().all(|f| reader.counters().errors(*f) == 0));
    }
}
