//! File access for cgroup readers: counts every read and every failure per file name
//! (`sonde_cgroup_reads_total`, `sonde_cgroup_read_errors_total`) and logs a failing file
//! once, not on every scrape.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::parse::ParseError;
use crate::exposition::family::FamilyBuilder;
use crate::fsread::{self, End};

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
    MemoryKmemUsage => "memory.kmem.usage_in_bytes",
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
    Meminfo => "meminfo",
    Diskstats => "diskstats",
    Mountinfo => "1/mountinfo",
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
        self.parse_kept(None, dir, file, parse)
    }

    /// [`Reader::parse`] through the cgroup's kept-open files, when it has them.
    pub fn parse_kept<T>(
        &self,
        kept: Option<&KeptFiles>,
        dir: &Path,
        file: File,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        self.parse_budgeted(kept, None, dir, file, parse)
    }

    /// [`Reader::parse_kept`], charging the bytes read to a container's [`ReadBudget`]: once
    /// it is spent, the container's remaining files are refused (and counted as failures).
    pub fn parse_budgeted<T>(
        &self,
        kept: Option<&KeptFiles>,
        budget: Option<&ReadBudget>,
        dir: &Path,
        file: File,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        BUFFER.with_borrow_mut(|buffer| {
            self.counters.reads[file as usize].fetch_add(1, Ordering::Relaxed);
            let read = if budget.is_some_and(ReadBudget::spent) {
                Err(std::io::Error::other("the container's read budget is spent"))
            } else {
                match kept {
                    Some(kept) => kept.read_into(dir, file, buffer),
                    None => read_into(&dir.join(file.name()), buffer),
                }
            };
            if let (Some(budget), Ok(len)) = (budget, &read) {
                budget.charge(*len);
            }
            let outcome = match read {
                Ok(len) => match std::str::from_utf8(&buffer[..len]) {
                    Ok(text) => parse(text).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("not UTF-8: {e}")),
                },
                Err(e) if e.kind() == ErrorKind::NotFound => return None,
                // ENODEV: the cgroup was removed between open and read.
                Err(e) if e.raw_os_error() == Some(19) => return None,
                Err(e) => Err(e.to_string()),
            };
            // A file that was large (up to the cap) must not keep its buffer on every
            // reading thread for the life of the process.
            if buffer.len() > KEPT_BUFFER_BYTES {
                *buffer = Vec::new();
            }
            outcome
                .map_err(|error| {
                    self.counters.errors[file as usize].fetch_add(1, Ordering::Relaxed);
                    if !self.counters.warned[file as usize].swap(true, Ordering::Relaxed) {
                        let path = dir.join(file.name());
                        tracing::warn!(path = %path.display(), %error, "cannot use cgroup file (logged once per file name)");
                    }
                })
                .ok()
        })
    }
}

/// The largest read buffer a reading thread keeps between reads: more than any usual
/// pseudo-file.
const KEPT_BUFFER_BYTES: usize = 64 * 1024;

/// How many bytes one container's files may add up to in one read of its stats: a few
/// hundred times what a real container's files hold (tens of kilobytes), so only a broken or
/// hostile tree reaches it, and then only that container loses figures.
pub const CONTAINER_READ_BUDGET: usize = 4 << 20;

/// The bytes one container's stats may still read in this pass (see
/// [`CONTAINER_READ_BUDGET`]). Each container is read by one thread, so a `Cell` will do.
#[derive(Debug)]
pub struct ReadBudget {
    left: std::cell::Cell<usize>,
}

impl Default for ReadBudget {
    fn default() -> Self {
        Self::new(CONTAINER_READ_BUDGET)
    }
}

impl ReadBudget {
    pub fn new(bytes: usize) -> Self {
        Self {
            left: std::cell::Cell::new(bytes),
        }
    }

    fn spent(&self) -> bool {
        self.left.get() == 0
    }

    fn charge(&self, bytes: usize) {
        self.left.set(self.left.get().saturating_sub(bytes));
    }
}

/// Reads a whole file into `buffer` and returns its length: opened non-blocking, only if
/// regular, at most [`crate::fsread::MAX_FILE_BYTES`]. Unlike `read_to_string`, asks for no
/// size hint (a `statx` per file is a third more system calls for these small
/// pseudo-files) and reuses the buffer's zeroed space.
fn read_into(path: &Path, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    read_whole(fsread::open_regular(path)?, buffer)
}

/// Reads a file just opened to its end into `buffer` and returns its length.
fn read_whole(mut file: std::fs::File, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    fsread::read_capped(&mut file, buffer)
}

/// Reads `cgroup.procs` just opened: one line per process, many seq_file records (see
/// [`fsread::End::ShortRecords`]), so an empty or small list is one read.
fn read_procs(file: std::fs::File, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::io::Read;
    let mut file = file;
    fsread::read_with(
        buffer,
        |buffer, filled| file.read(&mut buffer[filled..]),
        End::ShortRecords,
    )
}

/// A reader bound to one cgroup's kept files, for the stats read at every scrape.
#[derive(Clone, Copy)]
pub struct CgroupFiles<'a> {
    pub reader: &'a Reader,
    pub kept: Option<&'a KeptFiles>,
    /// The container's bytes for this pass, when it has a budget.
    pub budget: Option<&'a ReadBudget>,
}

impl CgroupFiles<'_> {
    pub fn parse<T>(&self, dir: &Path, file: File, parse: impl FnOnce(&str) -> Result<T, ParseError>) -> Option<T> {
        self.reader.parse_budgeted(self.kept, self.budget, dir, file, parse)
    }
}

/// Re-reads a kept-open file from its start: one `pread`, mostly. A cgroup stats file is a
/// single seq_file record that one read copies whole when the buffer has room, so a read
/// that leaves room in the buffer has reached the end (as it does for a regular file).
/// `net/dev` and `cgroup.procs` are a record per interface or process, and one read stops
/// at a page: see [`File::end`].
fn reread_into(file: &std::fs::File, end: End, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    fsread::read_with(
        buffer,
        |buffer, filled| fsread::pread(file, &mut buffer[filled..], filled as u64),
        end,
    )
}

impl File {
    /// When a read of this file has reached its end: see [`reread_into`].
    fn end(self) -> End {
        match self {
            File::NetDev | File::CgroupProcs | File::Diskstats | File::Mountinfo => End::ShortRecords,
            _ => End::Short,
        }
    }
}

/// Open files kept by every [`KeptFiles`], against [`KEPT_BUDGET`].
static KEPT_OPEN: AtomicUsize = AtomicUsize::new(0);
/// How many files may be kept open (from the soft descriptor limit, read once): see
/// [`budget_for`].
static KEPT_BUDGET: OnceLock<usize> = OnceLock::new();

/// Descriptors never taken by kept files, whatever the limit: sockets, eBPF maps, procfs and
/// uncached reads need at most a few hundred.
const KEPT_RESERVE: u64 = 4096;

/// The kept-file budget under a soft limit of `soft` descriptors: all but a reserve of half
/// the limit, at most [`KEPT_RESERVE`]. Under small limits that is half (512 of 1024); under
/// a limit of tens of thousands (a systemd or container default of 20,000 to 65,536), the
/// ~15 files of each of a thousand or more cgroups still fit, where half would leave a
/// third of them to a path lookup, open and close at every read.
fn budget_for(soft: u64) -> usize {
    usize::try_from(soft - (soft / 2).min(KEPT_RESERVE)).unwrap_or(usize::MAX)
}

fn kept_budget() -> usize {
    *KEPT_BUDGET.get_or_init(|| crate::fdlimit::soft().map_or(0, budget_for))
}

/// One cgroup's stats files, opened at their first read and kept open for the life of the
/// inventory entry: re-reading a kept file is one `pread` instead of a path lookup, open,
/// two reads and a close — most of the cost of a scrape of many containers. Within one
/// cgroup each [`File`] lives in exactly one directory, so the file names the slot.
/// `net/dev` of the container's network process is kept too (a seq_file re-read from
/// offset 0 is generated afresh, and the open file follows the network namespace, which is
/// the container's for its whole life). Files that cannot be opened are not kept (and read
/// the usual way every time); beyond the process-wide budget nothing more is kept. A kept
/// file of a removed cgroup reads ENODEV, which the reader treats as gone. `cgroup.procs`
/// is kept on v2 only (see [`KeptFiles::procs`]); on v1 it is opened afresh at every read,
/// relative to its directory, kept open (`O_PATH`): one name to look up instead of every
/// component of the path (a fifth of the cost of its read on a v1 host); in a removed
/// directory it is not found, which the reader treats as gone too.
pub struct KeptFiles {
    slots: Box<[OnceLock<Option<std::fs::File>>]>,
    procs: OnceLock<Procs>,
}

/// How `cgroup.procs` is read, decided at its first read from the directory's filesystem.
enum Procs {
    /// Kept open and re-read: on cgroup v2, a read from offset 0 walks the cgroup's tasks
    /// afresh.
    Kept(std::fs::File),
    /// Opened afresh in the kept directory at every read (v1, where a kept one reads a
    /// stale list); on cgroupfs, whose files are all the kernel's regular files, without
    /// the `fstat` that checks it.
    InDir { dir: std::fs::File, cgroupfs: bool },
    /// Nothing kept (the budget is spent, or the directory cannot be opened): by path.
    ByPath,
}

impl KeptFiles {
    /// Asks the CPU for this cgroup's table of kept files ahead of its read (see
    /// [`crate::prefetch`]): the read of its stats starts there.
    pub fn prefetch(&self) {
        crate::prefetch::lines(self.slots.as_ptr(), std::mem::size_of_val(&*self.slots));
    }
}

impl Default for KeptFiles {
    fn default() -> Self {
        Self {
            slots: File::ALL.iter().map(|_| OnceLock::new()).collect(),
            procs: OnceLock::new(),
        }
    }
}

/// Takes one descriptor from the budget and opens it with `open`; gives it back when the
/// budget is spent or the open fails.
fn keep(open: impl FnOnce() -> std::io::Result<std::fs::File>) -> Option<std::fs::File> {
    if KEPT_OPEN.fetch_add(1, Ordering::Relaxed) >= kept_budget() {
        KEPT_OPEN.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    let opened = open().ok();
    if opened.is_none() {
        KEPT_OPEN.fetch_sub(1, Ordering::Relaxed);
    }
    opened
}

impl std::fmt::Debug for KeptFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.slots.iter().filter(|s| matches!(s.get(), Some(Some(_)))).count();
        f.debug_struct("KeptFiles").field("open", &open).finish()
    }
}

impl KeptFiles {
    /// Reads `dir/<file>` whole into `buffer`: through the kept file, or a fresh open of
    /// `cgroup.procs` in the kept directory, or by path when nothing can be kept.
    fn read_into(&self, dir: &Path, file: File, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
        if file == File::CgroupProcs {
            return match self.procs(dir) {
                Procs::Kept(open) => reread_into(open, file.end(), buffer),
                Procs::InDir { dir, cgroupfs } => read_procs(open_procs_in(dir, *cgroupfs)?, buffer),
                Procs::ByPath => read_into(&dir.join(file.name()), buffer),
            };
        }
        match self.get(dir, file) {
            Some(open) => reread_into(open, file.end(), buffer),
            None => read_into(&dir.join(file.name()), buffer),
        }
    }

    /// The kept file for `file` in `dir`, opened the first time; `None` when it cannot be
    /// (or may not be) kept. Not for `cgroup.procs`: see [`KeptFiles::procs`].
    fn get(&self, dir: &Path, file: File) -> Option<&std::fs::File> {
        self.slots[file as usize]
            .get_or_init(|| keep(|| open_noatime(&dir.join(file.name()))))
            .as_ref()
    }

    /// How this cgroup's `cgroup.procs` is read. v1 builds a process list at the first read
    /// after an open and serves it to every later read until a second after the last one
    /// (so a kept one, read at every scrape, would never change); v2 walks the tasks again
    /// at every read from the start.
    fn procs(&self, dir: &Path) -> &Procs {
        self.procs.get_or_init(|| {
            let fs_type = filesystem_type(dir);
            if fs_type == Some(CGROUP2_SUPER_MAGIC)
                && let Some(open) = keep(|| open_noatime(&dir.join(File::CgroupProcs.name())))
            {
                return Procs::Kept(open);
            }
            let opened = keep(|| {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                    .open(dir)
            });
            match opened {
                Some(dir) => Procs::InDir {
                    dir,
                    cgroupfs: matches!(fs_type, Some(CGROUP_SUPER_MAGIC | CGROUP2_SUPER_MAGIC)),
                },
                None => Procs::ByPath,
            }
        })
    }
}

const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The `f_type` of the filesystem holding `dir`; `None` when `statfs` fails.
fn filesystem_type(dir: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes only into `stat`, a plain struct of integers; the path is
    // NUL-terminated and outlives the call.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 or u32 by target
    Some(stat.f_type as i64)
}

/// Opens `cgroup.procs` afresh in a directory kept open; checks it is a regular file unless
/// the directory is on cgroupfs.
fn open_procs_in(dir: &std::fs::File, cgroupfs: bool) -> std::io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: `dir` is an open descriptor and the name a NUL-terminated string; openat
    // returns a new descriptor that nothing else owns.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c"cgroup.procs".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by the File from here on.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    if !cgroupfs {
        fsread::check_regular(&file)?;
    }
    Ok(file)
}

/// Opens for reading without access-time updates (a kept file is read at every scrape, and
/// on tmpfs or a filesystem with atime each read would otherwise write the inode); falls
/// back to a plain open where O_NOATIME is refused (not the file's owner, no CAP_FOWNER).
/// Non-blocking and regular files only, as every read here.
fn open_noatime(path: &Path) -> std::io::Result<std::fs::File> {
    fsread::open_regular_with(path, libc::O_NOATIME).or_else(|e| match e.raw_os_error() {
        Some(libc::EPERM) => fsread::open_regular(path),
        _ => Err(e),
    })
}

impl Drop for KeptFiles {
    fn drop(&mut self) {
        let procs = matches!(self.procs.get(), Some(Procs::Kept(_) | Procs::InDir { .. }));
        let open = self.slots.iter().filter(|s| matches!(s.get(), Some(Some(_)))).count() + usize::from(procs);
        KEPT_OPEN.fetch_sub(open, Ordering::Relaxed);
    }
}

thread_local! {
    // One buffer per reading thread: these files are read thousands of times per scrape.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::parse;

    /// `cgroup.procs` is opened afresh at every read, in its kept directory: a new list is
    /// seen (here a new file in its place), and a removed directory reads as gone.
    #[test]
    fn cgroup_procs_is_opened_afresh_in_its_kept_directory() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("cg");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("cgroup.procs"), "10\n").expect("write");
        let reader = Reader::default();
        let kept = KeptFiles::default();
        let procs = || reader.parse_kept(Some(&kept), &dir, File::CgroupProcs, parse::procs);
        assert_eq!(procs(), Some((1, Some(10))));
        assert!(
            matches!(kept.procs.get(), Some(Procs::InDir { cgroupfs: false, .. })),
            "directory kept"
        );
        std::fs::write(dir.join("new"), "20\n21\n").expect("write");
        std::fs::rename(dir.join("new"), dir.join("cgroup.procs")).expect("rename");
        assert_eq!(procs(), Some((2, Some(20))));
        std::fs::remove_dir_all(&dir).expect("rm");
        assert_eq!(procs(), None);
        assert_eq!(reader.counters().errors(File::CgroupProcs), 0);
    }

    /// Once a container's budget is spent its next files are refused and counted, while a
    /// reader without a budget (another container's) reads on.
    #[test]
    fn a_spent_budget_refuses_the_containers_next_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("memory.current"), "123456789012\n").expect("write");
        std::fs::write(dir.path().join("pids.current"), "7\n").expect("write");
        let reader = Reader::default();
        let budget = ReadBudget::new(10);
        let read = |file, budget| reader.parse_budgeted(None, budget, dir.path(), file, parse::single_u64);
        assert_eq!(read(File::MemoryCurrent, Some(&budget)), Some(123_456_789_012));
        assert_eq!(read(File::PidsCurrent, Some(&budget)), None);
        assert_eq!(reader.counters().errors(File::PidsCurrent), 1);
        assert_eq!(read(File::PidsCurrent, None), Some(7));
    }

    #[test]
    fn the_kept_budget_leaves_a_reserve() {
        assert_eq!(budget_for(0), 0);
        assert_eq!(budget_for(1024), 512);
        assert_eq!(budget_for(8192), 4096);
        assert_eq!(budget_for(20_000), 20_000 - 4096);
        assert_eq!(budget_for(1 << 20), (1 << 20) - 4096);
        assert_eq!(
            budget_for(u64::MAX),
            usize::try_from(u64::MAX - 4096).unwrap_or(usize::MAX)
        );
    }

    /// A kept `net/dev` re-read from offset 0 is generated afresh (a procfs seq_file), so
    /// keeping it open loses no traffic.
    #[test]
    fn a_kept_net_dev_sees_new_traffic() {
        let reader = Reader::default();
        let kept = KeptFiles::default();
        let dir = Path::new("/proc/self");
        let loopback_rx = || {
            reader
                .parse_kept(Some(&kept), dir, File::NetDev, parse::net_dev)
                .and_then(|interfaces| interfaces.into_iter().find(|i| i.name == "lo"))
                .map(|lo| lo.rx_bytes)
                .expect("lo in /proc/self/net/dev")
        };
        let before = loopback_rx();
        assert!(kept.get(dir, File::NetDev).is_some(), "net/dev is kept open");
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sent = sender
            .send_to(&[7u8; 1000], receiver.local_addr().expect("address"))
            .expect("send");
        assert_eq!(sent, 1000);
        let after = loopback_rx();
        assert!(after >= before + 1000, "lo received {before} then {after} bytes");
    }
}
