//! Loads the embedded probes with aya, attaches them, and hands out their maps.

use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};

use super::batch::{BatchError, BatchSource};
use super::conn::{BATCH_SLOTS, Batch};
use super::table::{LiveMaps, LiveTable};

/// The compiled probes (`ebpf-probes/`, rebuilt and checked by `scripts/test`).
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("CARGO_MANIFEST_DIR"), "/ebpf-probes/conn.bpf.o"));

/// A program of the object and the tracepoint (`category/name`) it attaches to.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    pub program: &'static str,
    pub tracepoint: &'static str,
    /// Whether the collector cannot work without it.
    pub required: bool,
}

/// Every program of the probes.
pub const PROGRAMS: [Program; 4] = [
    Program {
        program: "sock_send_length",
        tracepoint: "sock/sock_send_length",
        required: true,
    },
    Program {
        program: "sock_recv_length",
        tracepoint: "sock/sock_recv_length",
        required: true,
    },
    Program {
        program: "inet_sock_set_state",
        tracepoint: "sock/inet_sock_set_state",
        required: true,
    },
    Program {
        program: "tcp_retransmit_skb",
        tracepoint: "tcp/tcp_retransmit_skb",
        required: false,
    },
];

/// Where the kernel's BTF is, under the host's sysfs.
pub const BTF_UNDER_SYSFS: &str = "kernel/btf/vmlinux";

/// What to load and where the kernel's BTF is.
#[derive(Debug, Clone)]
pub struct Options {
    /// Entries of the live-connection table.
    pub max_live: u32,
    /// The kernel's BTF (`<sysfs>/kernel/btf/vmlinux`).
    pub btf: PathBuf,
    pub programs: Vec<Program>,
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
            programs: PROGRAMS.to_vec(),
        }
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
    #[error("the kernel lacks tracepoints the probes need: {0}")]
    MissingTracepoints(String),
    #[error("map {0} is missing from the probes' object")]
    MissingMap(&'static str),
    #[error("map {name}: {reason}")]
    Map { name: &'static str, reason: String },
}

/// The loaded and attached probes. Dropping it detaches them.
pub struct Probes {
    pub ebpf: Ebpf,
    pub live: LiveTable,
    pub batches: Array<MapData, Batch>,
    pub ring: RingBuf<MapData>,
    pub telemetry: PerCpuArray<MapData, u64>,
    /// Possible CPU ids, each with a ring of batch slots.
    pub cpus: Vec<u32>,
    /// What was attached, and what the kernel lacked (optional programs only).
    pub attached: Vec<&'static str>,
    pub missing: Vec<String>,
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

/// Loads the probes with a live table of `max_live` entries and attaches every program.
pub fn load(max_live: u32) -> Result<Probes, LoadError> {
    load_with(&Options::new(max_live))
}

/// Loads the probes and attaches the programs the options name.
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
    let homes = home_slots(options.max_live);
    let home_mask = u64::from(homes - 1);
    let ring_len = free_ring_size(options.max_live);
    let ring_mask = u64::from(ring_len - 1);
    let ring_shift = ring_len.trailing_zeros();
    let mut ebpf = EbpfLoader::new()
        .override_global("home_mask", &home_mask, true)
        .override_global("ring_mask", &ring_mask, true)
        .override_global("ring_shift", &ring_shift, true)
        .map_max_entries("slots", homes.saturating_add(options.max_live))
        .map_max_entries("free_ring", ring_len)
        .map_max_entries("sock_overflow", options.max_live)
        .map_max_entries("batches", nr_cpus * BATCH_SLOTS)
        .load(PROBES)
        .map_err(|e| LoadError::Load(error_chain(&e)))?;

    let mut attached = Vec::new();
    let mut missing = Vec::new();
    let mut required_missing = Vec::new();
    for &Program {
        program,
        tracepoint,
        required,
    } in &options.programs
    {
        let name = tracepoint.rsplit('/').next().unwrap_or(tracepoint);
        let outcome = (|| {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| "not in the object".to_owned())?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            prog.load(name, &btf).map_err(|e| error_chain(&e))?;
            prog.attach().map_err(|e| error_chain(&e))?;
            Ok::<(), String>(())
        })();
        match outcome {
            Ok(()) => attached.push(tracepoint),
            Err(reason) => {
                let reason = match tracepoint_listed(tracepoint) {
                    Some(false) => format!("{tracepoint} (not in this kernel)"),
                    _ => format!("{tracepoint} ({reason})"),
                };
                if required {
                    required_missing.push(reason);
                } else {
                    missing.push(reason);
                }
            }
        }
    }
    if !required_missing.is_empty() {
        return Err(LoadError::MissingTracepoints(required_missing.join(", ")));
    }
    if let Err(reason) = tracefs {
        missing.push(format!("tracefs ({reason}; tracepoints attached through BTF)"));
    }

    let batches = Array::try_from(take(&mut ebpf, "batches")?).map_err(|e| map_error("batches", e))?;
    let used = Array::try_from(take(&mut ebpf, "slots_used")?).map_err(|e| map_error("slots_used", e))?;
    let overflow = HashMap::try_from(take(&mut ebpf, "sock_overflow")?).map_err(|e| map_error("sock_overflow", e))?;
    let live = LiveTable::new(LiveMaps {
        slots: array_data(&mut ebpf, "slots")?,
        homes,
        overflow_slots: options.max_live,
        used,
        free_ring: array_data(&mut ebpf, "free_ring")?,
        free_ring_len: ring_len,
        free_ring_positions: array_data(&mut ebpf, "free_ring_pos")?,
        overflow,
    })
    .map_err(|e| LoadError::Map {
        name: "live table",
        reason: e.to_string(),
    })?;
    let ring = RingBuf::try_from(take(&mut ebpf, "full_batches")?).map_err(|e| map_error("full_batches", e))?;
    let telemetry = PerCpuArray::try_from(take(&mut ebpf, "telemetry")?).map_err(|e| map_error("telemetry", e))?;
    Ok(Probes {
        ebpf,
        live,
        batches,
        ring,
        telemetry,
        cpus: (0..nr_cpus).collect(),
        attached,
        missing,
    })
}

/// Home slots of the live table: a power of two, at least the table's size. Homes are named
/// by the socket's address, which falls much as a random hash would, so some live sockets
/// share one; the share that takes an overflow slot (and pays a hash lookup per event) is
/// about half the table's load: 0.8% with 1,000 live sockets in 65,536 homes, 7% with
/// 10,000, 30% with 50,000 (measured: ~400 of 1,100 in 1,024 homes, where a random hash
/// gives 426). The overflow slots after the homes are as many as the table's size, so every
/// socket finds a slot until that many are live, however their homes fall.
pub fn home_slots(max_live: u32) -> u32 {
    max_live.clamp(1, 1 << 29).next_power_of_two()
}

/// Cells of the ring of free slots: a power of two, twice what holds every overflow slot of
/// the live table, so that a push never reaches a cell whose pop is still under way on
/// another CPU.
pub fn free_ring_size(max_live: u32) -> u32 {
    max_live.clamp(1, 1 << 29).next_power_of_two() * 2
}

/// An array map's own data, for mapping it into this process.
fn array_data(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, LoadError> {
    match take(ebpf, name)? {
        Map::Array(data) => Ok(data),
        _ => Err(LoadError::Map {
            name,
            reason: "not an array".into(),
        }),
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
fn error_chain(e: &dyn std::error::Error) -> String {
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
    use super::{free_ring_size, home_slots};

    #[test]
    fn homes_are_a_power_of_two_at_least_the_live_table() {
        assert_eq!(home_slots(65_536), 65_536);
        assert_eq!(home_slots(3_000), 4_096);
        assert_eq!(home_slots(1), 1);
        assert_eq!(home_slots(u32::MAX), 1 << 29);
    }

    #[test]
    fn the_free_ring_holds_every_overflow_slot_twice() {
        assert_eq!(free_ring_size(65_536), 131_072);
        assert_eq!(free_ring_size(3_000), 8_192);
    }
}
