//! Loads the embedded probes with aya, attaches them, and hands out their maps.

use std::path::{Path, PathBuf};

use std::os::fd::AsFd;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, FExit, Iter, RawTracePoint};
use aya::{Btf, Ebpf, EbpfLoader};

use super::batch::{BatchError, BatchSource};
use super::conn::{BATCH_SLOTS, Batch};
use super::live::{TcpIterator, TcpParts, UdpTable};

/// The compiled probes (`ebpf-probes/`, rebuilt and checked by `scripts/test`).
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("CARGO_MANIFEST_DIR"), "/ebpf-probes/conn.bpf.o"));

/// Where a program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// A BTF-typed raw tracepoint, `category/name`.
    TracePoint(&'static str),
    /// The return of a kernel function (fexit), by the function's name.
    FExit(&'static str),
    /// A BPF iterator, by its target (`tcp`).
    Iter(&'static str),
    /// Attached nowhere: a raw tracepoint program that sonde runs itself at each scrape
    /// (BPF_PROG_TEST_RUN).
    Run,
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::TracePoint(tp) => write!(f, "tp_btf/{}", tp.rsplit('/').next().unwrap_or(tp)),
            Hook::FExit(function) => write!(f, "fexit/{function}"),
            Hook::Iter(target) => write!(f, "iter/{target}"),
            Hook::Run => write!(f, "run"),
        }
    }
}

/// A program of the object and where it attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    pub program: &'static str,
    pub hook: Hook,
}

const fn tracepoint(program: &'static str, tracepoint: &'static str) -> Program {
    Program {
        program,
        hook: Hook::TracePoint(tracepoint),
    }
}

const fn fexit(program: &'static str, function: &'static str) -> Program {
    Program {
        program,
        hook: Hook::FExit(function),
    }
}

/// Something the collector needs from the kernel, and the ways to get it: the first way
/// whose programs all attach is the one that runs (docs/ARCHITECTURE.md#hooks).
#[derive(Debug, Clone, Copy)]
pub struct Need {
    pub what: &'static str,
    /// Whether the collector cannot work without it (else it works without these figures).
    pub required: bool,
    /// Whether it is UDP's per-call accounting, which `--no-connection.udp` leaves out.
    pub udp: bool,
    /// The ways, best first on a kernel before 6.9.
    pub ways: &'static [&'static [Program]],
    /// The way tried before all others from 6.9 (one of `ways`): UDP's own functions'
    /// fexit programs, which only UDP calls enter, where the tracepoints are entered by
    /// every TCP call too. Before 6.9 fexit trampolines can deadlock at detach
    /// (`tasks_rcu_exit_srcu`, fixed in 6.9), so there they come after the tracepoints.
    pub first_from_6_9: Option<&'static [Program]>,
}

impl Need {
    /// The ways in the order a kernel of `version` (major, minor) tries them; an unknown
    /// version keeps the order before 6.9.
    pub fn ways_for(&self, version: Option<(u32, u32)>) -> Vec<&'static [Program]> {
        let mut ways = self.ways.to_vec();
        if let Some(first) = self.first_from_6_9.filter(|_| fexit_first(version)) {
            ways.retain(|way| *way != first);
            ways.insert(0, first);
        }
        ways
    }
}

/// Whether UDP's fexit programs go before the tracepoints: from 6.9, where fexit
/// trampolines are free of the deadlock at detach.
pub fn fexit_first(version: Option<(u32, u32)>) -> bool {
    version.is_some_and(|v| v >= (6, 9))
}

/// (major, minor) of a kernel release as `uname -r` prints it (`6.12.12+bpo-amd64`,
/// `5.10.0-32-amd64`, `6.9.0-rc3`); `None` when it does not start so.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?;
    // The minor number ends at the first non-digit (`6.9-rc1`, `6.18+deb`).
    let digits = minor.find(|c: char| !c.is_ascii_digit()).unwrap_or(minor.len());
    Some((major, minor[..digits].parse().ok()?))
}

/// The running kernel's (major, minor), from its release; `None` when unreadable.
pub fn running_kernel() -> Option<(u32, u32)> {
    parse_release(&std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
}

const UDP_SEND_FEXIT: &[Program] = &[
    fexit("udp_sendmsg_exit", "udp_sendmsg"),
    fexit("udpv6_sendmsg_exit", "udpv6_sendmsg"),
];

const UDP_RECV_FEXIT: &[Program] = &[
    fexit("udp_recvmsg_exit", "udp_recvmsg"),
    fexit("udpv6_recvmsg_exit", "udpv6_recvmsg"),
];

/// Before 5.19 the receive functions had a `noblock` argument; a later kernel refuses this
/// variant, which reads the return value past its arguments.
const UDP_RECV_FEXIT_NOBLOCK: &[Program] = &[
    fexit("udp_recvmsg_noblock_exit", "udp_recvmsg"),
    fexit("udpv6_recvmsg_noblock_exit", "udpv6_recvmsg"),
];

/// Everything the probes hook, best way first.
pub const NEEDS: [Need; 4] = [
    Need {
        what: "TCP state changes",
        required: true,
        udp: false,
        ways: &[&[tracepoint("inet_sock_set_state", "sock/inet_sock_set_state")]],
        first_from_6_9: None,
    },
    Need {
        what: "live TCP connections",
        required: true,
        udp: false,
        ways: &[&[
            Program {
                program: "seed_tcp",
                hook: Hook::Iter("tcp"),
            },
            Program {
                program: "read_tcp",
                hook: Hook::Run,
            },
        ]],
        first_from_6_9: None,
    },
    Need {
        what: "UDP sends",
        required: false,
        udp: true,
        ways: &[
            &[tracepoint("sock_send_length", "sock/sock_send_length")],
            UDP_SEND_FEXIT,
        ],
        first_from_6_9: Some(UDP_SEND_FEXIT),
    },
    Need {
        what: "UDP receives",
        required: false,
        udp: true,
        ways: &[
            &[tracepoint("sock_recv_length", "sock/sock_recv_length")],
            UDP_RECV_FEXIT_NOBLOCK,
            UDP_RECV_FEXIT,
        ],
        first_from_6_9: Some(UDP_RECV_FEXIT),
    },
];

/// Every program of the object, once, in the order of [`NEEDS`].
pub fn all_programs() -> Vec<Program> {
    let mut all: Vec<Program> = Vec::new();
    for need in &NEEDS {
        for program in need.ways.iter().flat_map(|way| way.iter()) {
            if !all.iter().any(|p| p.program == program.program) {
                all.push(*program);
            }
        }
    }
    all
}

/// Where the kernel's BTF is, under the host's sysfs.
pub const BTF_UNDER_SYSFS: &str = "kernel/btf/vmlinux";

/// What to load and where the kernel's BTF is.
#[derive(Debug, Clone)]
pub struct Options {
    /// Entries of each live table (TCP connections, UDP sockets).
    pub max_live: u32,
    /// The kernel's BTF (`<sysfs>/kernel/btf/vmlinux`).
    pub btf: PathBuf,
    pub needs: Vec<Need>,
    /// The kernel's (major, minor), which orders the ways ([`Need::ways_for`]); `None`
    /// when unknown (the order before 6.9).
    pub kernel: Option<(u32, u32)>,
}

impl Options {
    /// Every program, the BTF of the host's `/sys`.
    pub fn new(max_live: u32) -> Self {
        Self::under_sysfs(max_live, Path::new("/sys"))
    }

    /// Every program, the BTF under another sysfs mount (`--path.sysfs`).
    pub fn under_sysfs(max_live: u32, sysfs: &Path) -> Self {
        Self {
            max_live,
            btf: sysfs.join(BTF_UNDER_SYSFS),
            needs: NEEDS.to_vec(),
            kernel: running_kernel(),
        }
    }

    /// Without UDP's per-call hooks: then no program runs at any send or receive, of any
    /// protocol, on any kernel (from 6.3 the UDP hooks are tracepoints every TCP call
    /// enters too).
    pub fn without_udp(mut self) -> Self {
        self.needs.retain(|need| !need.udp);
        self
    }
}

const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the kernel has no BTF ({0} is missing), which the probes need (CO-RE)")]
    NoBtf(PathBuf),
    #[error("counting possible CPUs: {0}")]
    Cpus(String),
    #[error("loading the probes: {0} (needs CAP_BPF and CAP_PERFMON, or root)")]
    Load(String),
    #[error("the kernel lacks hooks the probes need: {0}")]
    MissingHooks(String),
    #[error("{0}")]
    Live(#[from] super::live::LiveError),
    #[error("map {0} is missing from the probes' object")]
    MissingMap(&'static str),
    #[error("map {name}: {reason}")]
    Map { name: &'static str, reason: String },
}

/// The loaded and attached probes. Dropping it detaches them.
pub struct Probes {
    pub ebpf: Ebpf,
    pub tcp: TcpIterator,
    pub udp: UdpTable,
    pub batches: Array<MapData, Batch>,
    pub ring: RingBuf<MapData>,
    pub telemetry: PerCpuArray<MapData, u64>,
    /// Possible CPU ids, each with a ring of batch slots.
    pub cpus: Vec<u32>,
    /// The programs attached, and what the kernel lacked (optional needs only), with why.
    pub attached: Vec<Program>,
    pub missing: Vec<String>,
    /// Ways tried and refused before the one that runs, with why (e.g. fexit where the
    /// kernel allows no trampolines): not a fault, since another way counts the same.
    pub passed_over: Vec<String>,
}

/// The batch slots, read straight from the kernel's array map.
pub struct MapBatches(pub Array<MapData, Batch>);

impl BatchSource for MapBatches {
    fn slot(&self, cpu: u32, slot: u32) -> Result<Batch, BatchError> {
        let index = cpu * BATCH_SLOTS + slot;
        self.0.get(&index, 0).map_err(|e| BatchError::Slot {
            cpu,
            slot,
            reason: e.to_string(),
        })
    }
}

/// Mounts tracefs at /sys/kernel/tracing when it is not there, so tracepoints can be listed;
/// says why when it cannot. The BTF-typed raw tracepoints themselves attach without it.
pub fn ensure_tracefs() -> Result<(), String> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let target = std::ffi::CString::new(TRACEFS).map_err(|e| e.to_string())?;
    let fstype = c"tracefs";
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::EPERM) => format!("cannot mount tracefs at {TRACEFS}: {err} (needs CAP_SYS_ADMIN)"),
        _ => format!("cannot mount tracefs at {TRACEFS}: {err}"),
    })
}

/// Whether tracefs lists the tracepoint (`None` when tracefs is not there to ask).
fn tracepoint_listed(tracepoint: &str) -> Option<bool> {
    let events = Path::new(TRACEFS).join("events");
    events.is_dir().then(|| events.join(tracepoint).is_dir())
}

/// Loads the probes with live tables of `max_live` entries and attaches every need.
pub fn load(max_live: u32) -> Result<Probes, LoadError> {
    load_with(&Options::new(max_live))
}

/// Whether tracing programs may call bpf_get_socket_cookie: from 5.12 (commit c5dbb89fc2ac).
fn tracing_has_cookie_helper() -> bool {
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 12, 0))
}

/// Before 5.11 the kernel charges BPF maps to RLIMIT_MEMLOCK, often 64 KiB (a container's
/// default); the probes' maps take tens of MiB. Lifts the limit as far as the process may
/// (no limit with CAP_SYS_RESOURCE, else up to the hard limit); a later kernel charges
/// maps to the memory cgroup instead, and this changes nothing there.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit and getrlimit read and write an rlimit we own.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) == 0 {
            return;
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
    }
}

/// Loads the probes and attaches, for each need the options name, the first way the kernel
/// takes.
pub fn load_with(options: &Options) -> Result<Probes, LoadError> {
    if !options.btf.exists() {
        return Err(LoadError::NoBtf(options.btf.clone()));
    }
    let btf = Btf::parse_file(&options.btf, aya::Endianness::default()).map_err(|e| {
        LoadError::Load(format!(
            "reading the kernel's BTF from {}: {}",
            options.btf.display(),
            error_chain(&e)
        ))
    })?;
    let tracefs = ensure_tracefs();
    let nr_cpus = aya::util::nr_cpus().map_err(|(path, e)| LoadError::Cpus(format!("{path}: {e}")))?;
    let nr_cpus = u32::try_from(nr_cpus).map_err(|e| LoadError::Cpus(e.to_string()))?;
    raise_memlock_limit();
    let cookie_helper = u8::from(tracing_has_cookie_helper());
    let max_live = options.max_live.max(1);
    let mut ebpf = EbpfLoader::new()
        .override_global("cookie_helper", &cookie_helper, true)
        // The cookie names every connection: its start and close are joined by it in user
        // space, and the live table is left out (live.rs).
        .override_global("tables_off", &cookie_helper, true)
        // Unused without the table: one entry, not the ~10 MiB a full-size preallocated
        // hash holds at the default.
        .map_max_entries("tcp_conns", if cookie_helper == 1 { 1 } else { max_live })
        .map_max_entries("udp_socks", max_live)
        .map_max_entries("live_reads", max_live)
        .map_max_entries("batches", nr_cpus * BATCH_SLOTS)
        .load(PROBES)
        .map_err(|e| LoadError::Load(error_chain(&e)))?;

    let mut attached = Vec::new();
    let mut missing = Vec::new();
    let mut passed_over = Vec::new();
    let mut required_missing = Vec::new();
    for need in &options.needs {
        let mut tried = Vec::new();
        // One way at a time: a way that fails is unloaded (detached) before the next is
        // tried, so no call is ever counted by two ways.
        let way = need
            .ways_for(options.kernel)
            .into_iter()
            .find(|way| match attach_all(&mut ebpf, &btf, way) {
                Ok(()) => true,
                Err(reason) => {
                    tried.push(reason);
                    false
                }
            });
        match way {
            Some(way) => {
                attached.extend_from_slice(way);
                if !tried.is_empty() {
                    tracing::debug!(need = need.what, refused = tried.join("; "), "took a later way");
                    let briefly: Vec<String> = tried.iter().map(|reason| brief(reason)).collect();
                    passed_over.push(format!("{}: {}", need.what, briefly.join("; ")));
                }
            }
            None if need.required => required_missing.push(format!("{}: {}", need.what, tried.join("; "))),
            None => missing.push(format!("{}: {}", need.what, tried.join("; "))),
        }
    }
    if !required_missing.is_empty() {
        return Err(LoadError::MissingHooks(required_missing.join(", ")));
    }
    if let Err(reason) = tracefs {
        missing.push(format!("tracefs ({reason}; tracepoints attached through BTF)"));
    }

    let tcp = {
        let program_fd = |name: &'static str| {
            ebpf.program(name)
                .ok_or_else(|| LoadError::Load(format!("program {name} is not in the object")))?
                .fd()
                .map(|fd| fd.as_fd())
                .map_err(|e| LoadError::Load(format!("program {name}: {}", error_chain(&e))))
        };
        let map_fd = |name: &'static str| match ebpf.map(name) {
            Some(aya::maps::Map::HashMap(data) | aya::maps::Map::Array(data)) => Ok(data.fd().as_fd()),
            _ => Err(LoadError::MissingMap(name)),
        };
        TcpIterator::new(TcpParts {
            seed: program_fd("seed_tcp")?,
            read: program_fd("read_tcp")?,
            table: map_fd("tcp_conns")?,
            reads: map_fd("live_reads")?,
            capacity: max_live,
            tables_off: cookie_helper == 1,
        })?
    };
    let batches = Array::try_from(take(&mut ebpf, "batches")?).map_err(|e| map_error("batches", e))?;
    let udp = UdpTable::new(HashMap::try_from(take(&mut ebpf, "udp_socks")?).map_err(|e| map_error("udp_socks", e))?);
    let ring = RingBuf::try_from(take(&mut ebpf, "full_batches")?).map_err(|e| map_error("full_batches", e))?;
    let telemetry = PerCpuArray::try_from(take(&mut ebpf, "telemetry")?).map_err(|e| map_error("telemetry", e))?;
    Ok(Probes {
        ebpf,
        tcp,
        udp,
        batches,
        ring,
        telemetry,
        cpus: (0..nr_cpus).collect(),
        attached,
        missing,
        passed_over,
    })
}

/// The program of the object named `name`, as its kind.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| LoadError::Load(format!("program {name} is not in the object")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| LoadError::Load(format!("program {name}: {e}")))
}

/// Loads and attaches every program of one way; on a failure, unloads those of the way that
/// did load (so that the next way can take the same hooks) and says which failed and why.
fn attach_all(ebpf: &mut Ebpf, btf: &Btf, way: &[Program]) -> Result<(), String> {
    for (i, p) in way.iter().enumerate() {
        if let Err(reason) = attach_one(ebpf, btf, p) {
            for done in &way[..=i] {
                // One that did not load has nothing to undo.
                let _ = match ebpf.program_mut(done.program) {
                    Some(aya::programs::Program::BtfTracePoint(p)) => p.unload(),
                    Some(aya::programs::Program::FExit(p)) => p.unload(),
                    Some(aya::programs::Program::Iter(p)) => p.unload(),
                    Some(aya::programs::Program::RawTracePoint(p)) => p.unload(),
                    _ => Ok(()),
                };
            }
            return Err(reason);
        }
    }
    Ok(())
}

fn attach_one(ebpf: &mut Ebpf, btf: &Btf, p: &Program) -> Result<(), String> {
    let fail = |reason: String| match p.hook {
        Hook::TracePoint(tp) if tracepoint_listed(tp) == Some(false) => format!("{} (not in this kernel)", p.hook),
        _ => format!("{} ({reason})", p.hook),
    };
    match p.hook {
        Hook::TracePoint(tp) => {
            let prog: &mut BtfTracePoint = program(ebpf, p.program).map_err(|e| fail(e.to_string()))?;
            let name = tp.rsplit('/').next().unwrap_or(tp);
            prog.load(name, btf).map_err(|e| fail(error_chain(&e)))?;
            prog.attach().map_err(|e| fail(error_chain(&e)))?;
        }
        Hook::FExit(function) => {
            let prog: &mut FExit = program(ebpf, p.program).map_err(|e| fail(e.to_string()))?;
            prog.load(function, btf).map_err(|e| fail(error_chain(&e)))?;
            prog.attach().map_err(|e| fail(error_chain(&e)))?;
        }
        // Linked by the TCP iterator itself (crate::ebpf::live), which makes its iterators.
        Hook::Iter(target) => {
            let prog: &mut Iter = program(ebpf, p.program).map_err(|e| fail(e.to_string()))?;
            prog.load(target, btf).map_err(|e| fail(error_chain(&e)))?;
        }
        // Loaded only: crate::ebpf::live runs it at each scrape.
        Hook::Run => {
            let prog: &mut RawTracePoint = program(ebpf, p.program).map_err(|e| fail(e.to_string()))?;
            prog.load().map_err(|e| fail(error_chain(&e)))?;
        }
    }
    Ok(())
}

/// A refused way's reason without the verifier's log, which the debug line keeps: the
/// collector's one log line says which way runs and, briefly, why the ones before did not.
fn brief(reason: &str) -> String {
    match reason.split_once(". Verifier output:") {
        Some((head, _)) => format!("{head})"),
        None => reason.to_owned(),
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
}

fn map_error(name: &'static str, e: aya::maps::MapError) -> LoadError {
    LoadError::Map {
        name,
        reason: e.to_string(),
    }
}

/// An error and its sources on one line: aya's top-level messages alone are vague.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{Hook, NEEDS, all_programs, brief, fexit_first, parse_release};

    #[test]
    fn every_program_is_named_once_and_each_need_has_a_way() {
        let all = all_programs();
        assert_eq!(all.len(), 11);
        assert!(
            NEEDS
                .iter()
                .all(|n| !n.ways.is_empty() && n.ways.iter().all(|w| !w.is_empty()))
        );
        assert_eq!(
            Hook::TracePoint("sock/sock_send_length").to_string(),
            "tp_btf/sock_send_length"
        );
        assert_eq!(Hook::FExit("udp_recvmsg").to_string(), "fexit/udp_recvmsg");
        assert_eq!(Hook::Iter("tcp").to_string(), "iter/tcp");
        assert_eq!(Hook::Run.to_string(), "run");
    }

    #[test]
    fn a_refused_way_is_named_briefly_without_the_verifier_log() {
        let refused = "fexit/udp_recvmsg (the BPF_PROG_LOAD syscall returned Permission denied (os error 13). \
                       Verifier output: reg type unsupported for arg#0\n0: R1=ctx()\n: Permission denied (os error 13))";
        assert_eq!(
            brief(refused),
            "fexit/udp_recvmsg (the BPF_PROG_LOAD syscall returned Permission denied (os error 13))"
        );
        let plain = "tp_btf/sock_send_length (not in this kernel)";
        assert_eq!(brief(plain), plain);
    }

    #[test]
    fn releases_parse_to_major_and_minor() {
        assert_eq!(parse_release("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(parse_release("6.12.95+deb12-amd64\n"), Some((6, 12)));
        assert_eq!(parse_release("5.10.0-32-amd64"), Some((5, 10)));
        assert_eq!(parse_release("6.9.0-rc3"), Some((6, 9)));
        assert_eq!(parse_release("6.9-rc1"), Some((6, 9)));
        assert_eq!(parse_release("6.8"), Some((6, 8)));
        assert_eq!(parse_release("4.18.0-553.el8_10.x86_64"), Some((4, 18)));
        for bad in ["", "6", "six.nine", "6.", "6.x"] {
            assert_eq!(parse_release(bad), None, "{bad:?}");
        }
        assert!(fexit_first(Some((6, 9))) && fexit_first(Some((7, 0))));
        assert!(!fexit_first(Some((6, 8))) && !fexit_first(Some((5, 10))) && !fexit_first(None));
    }

    /// The hooks of a need's ways, in the order a kernel tries them.
    fn order(what: &str, kernel: Option<(u32, u32)>) -> Vec<String> {
        let need = NEEDS.iter().find(|n| n.what == what).expect("a need");
        need.ways_for(kernel)
            .iter()
            .map(|way| way.iter().map(|p| p.program).collect::<Vec<_>>().join("+"))
            .collect()
    }

    #[test]
    fn from_6_9_udp_tries_its_own_functions_first_and_before_keeps_the_tracepoints_first() {
        let tp_send = "sock_send_length";
        let fexit_send = "udp_sendmsg_exit+udpv6_sendmsg_exit";
        for kernel in [Some((6, 9)), Some((6, 18))] {
            assert_eq!(order("UDP sends", kernel), [fexit_send, tp_send]);
            assert_eq!(
                order("UDP receives", kernel),
                [
                    "udp_recvmsg_exit+udpv6_recvmsg_exit",
                    "sock_recv_length",
                    "udp_recvmsg_noblock_exit+udpv6_recvmsg_noblock_exit"
                ]
            );
        }
        for kernel in [Some((6, 8)), Some((6, 3)), Some((5, 10)), None] {
            assert_eq!(order("UDP sends", kernel), [tp_send, fexit_send]);
            assert_eq!(
                order("UDP receives", kernel),
                [
                    "sock_recv_length",
                    "udp_recvmsg_noblock_exit+udpv6_recvmsg_noblock_exit",
                    "udp_recvmsg_exit+udpv6_recvmsg_exit"
                ]
            );
        }
        // TCP has one way everywhere.
        assert_eq!(order("TCP state changes", Some((6, 18))), ["inet_sock_set_state"]);
        assert_eq!(order("live TCP connections", Some((6, 18))), ["seed_tcp+read_tcp"]);
    }
}
