//! File access for cgroup readers: counts every read and every failure per file name
//! (`sonde_cgroup_reads_total`, `sonde_cgroup_read_errors_total`) and logs a failing file
//! once, not on every scrape.

use std::io::{ErrorKind, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::parse::ParseError;
use crate::family::FamilyBuilder;

macro_rules! files {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// Every file sonde reads for a cgroup, named as on disk.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum File { $($variant),* }

        impl File {
            pub const ALL: &'static [File] = &[$(File::$variant),*];

            pub fn name(self) -> &'static str {
                match self { $(File::$variant => $name),* }
            }
        }
    };
}

files! {
    CpuacctUsage => "cpuacct.usage",
    CpuacctStat => "cpuacct.stat",
    CpuStat => "cpu.stat",
    CpuCfsQuota => "cpu.cfs_quota_us",
    CpuCfsPeriod => "cpu.cfs_period_us",
    CpuShares => "cpu.shares",
    CpuMax => "cpu.max",
    CpuWeight => "cpu.weight",
    MemoryUsage => "memory.usage_in_bytes",
    MemoryMaxUsage => "memory.max_usage_in_bytes",
    MemoryFailcnt => "memory.failcnt",
    MemoryStat => "memory.stat",
    MemoryOomControl => "memory.oom_control",
    MemoryLimit => "memory.limit_in_bytes",
    MemoryMemswLimit => "memory.memsw.limit_in_bytes",
    MemorySoftLimit => "memory.soft_limit_in_bytes",
    MemoryCurrent => "memory.current",
    MemoryPeak => "memory.peak",
    MemorySwapCurrent => "memory.swap.current",
    MemoryMax => "memory.max",
    MemorySwapMax => "memory.swap.max",
    MemoryMin => "memory.min",
    MemoryEvents => "memory.events",
    BlkioServiceBytes => "blkio.throttle.io_service_bytes_recursive",
    BlkioServiced => "blkio.throttle.io_serviced_recursive",
    IoStat => "io.stat",
    PidsCurrent => "pids.current",
    PidsMax => "pids.max",
    CgroupProcs => "cgroup.procs",
    CpuPressure => "cpu.pressure",
    MemoryPressure => "memory.pressure",
    IoPressure => "io.pressure",
    NetDev => "net/dev",
}

/// Reads and failures per file, for the life of the process.
pub struct FileCounters {
    reads: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
    warned: Vec<AtomicBool>,
}

impl Default for FileCounters {
    fn default() -> Self {
        let n = File::ALL.len();
        Self {
            reads: (0..n).map(|_| AtomicU64::new(0)).collect(),
            errors: (0..n).map(|_| AtomicU64::new(0)).collect(),
            warned: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }
}

impl FileCounters {
    pub fn reads(&self, file: File) -> u64 {
        self.reads[file as usize].load(Ordering::Relaxed)
    }

    pub fn errors(&self, file: File) -> u64 {
        self.errors[file as usize].load(Ordering::Relaxed)
    }

    /// `sonde_cgroup_reads_total{file}` and `sonde_cgroup_read_errors_total{file}`, for files
    /// read at least once.
    pub fn families(&self) -> impl Iterator<Item = prometheus::proto::MetricFamily> {
        let mut reads = FamilyBuilder::counter(
            "sonde_cgroup_reads_total",
            "cgroup and procfs files read, by file name.",
        );
        let mut errors = FamilyBuilder::counter(
            "sonde_cgroup_read_errors_total",
            "cgroup and procfs files that could not be read or parsed, by file name.",
        );
        for &file in File::ALL {
            if self.reads(file) > 0 {
                reads.sample(&[("file", file.name())], self.reads(file) as f64);
                errors.sample(&[("file", file.name())], self.errors(file) as f64);
            }
        }
        [reads.build(), errors.build()].into_iter().flatten()
    }
}

/// Reads cgroup files into a reusable buffer and parses them.
#[derive(Clone, Default)]
pub struct Reader {
    counters: Arc<FileCounters>,
}

impl Reader {
    pub fn new(counters: Arc<FileCounters>) -> Self {
        Self { counters }
    }

    pub fn counters(&self) -> &Arc<FileCounters> {
        &self.counters
    }

    /// Reads `dir/<file>` and parses it. `None` when the file does not exist (an absent
    /// controller or optional file, or a cgroup that just went away) or when it failed: a
    /// failure is counted, and logged the first time for that file name.
    pub fn parse<T>(&self, dir: &Path, file: File, parse: impl FnOnce(&str) -> Result<T, ParseError>) -> Option<T> {
        BUFFER.with_borrow_mut(|buffer| {
            let path = dir.join(file.name());
            self.counters.reads[file as usize].fetch_add(1, Ordering::Relaxed);
            let outcome = match read_into(&path, buffer) {
                Ok(len) => match std::str::from_utf8(&buffer[..len]) {
                    Ok(text) => parse(text).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("not UTF-8: {e}")),
                },
                Err(e) if e.kind() == ErrorKind::NotFound => return None,
                // ENODEV: the cgroup was removed between open and read.
                Err(e) if e.raw_os_error() == Some(19) => return None,
                Err(e) => Err(e.to_string()),
            };
            outcome
                .map_err(|error| {
                    self.counters.errors[file as usize].fetch_add(1, Ordering::Relaxed);
                    if !self.counters.warned[file as usize].swap(true, Ordering::Relaxed) {
                        tracing::warn!(path = %path.display(), %error, "cannot use cgroup file (logged once per file name)");
                    }
                })
                .ok()
        })
    }
}

/// Reads a whole file into `buffer` and returns its length. Unlike `read_to_string`, asks
/// for no size hint (a `statx` per file is a third more system calls for these small
/// pseudo-files) and reuses the buffer's zeroed space.
fn read_into(path: &Path, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            buffer.resize((buffer.len() * 2).max(8192), 0);
        }
        match file.read(&mut buffer[filled..]) {
            Ok(0) => return Ok(filled),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

thread_local! {
    // One buffer per reading thread: these files are read thousands of times per scrape.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
