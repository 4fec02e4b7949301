//! cgroup v1: one directory per controller.

use std::path::Path;

use super::parse::{self, DeviceIo, ParseError};
use super::read::{CgroupFiles, File, Reader};
use super::stats::{Cfs, Cpu, Memory, Spec, Stats};
use super::{CgroupPaths, v2};

/// USER_HZ, the unit of `cpuacct.stat`, is 100 on every Linux ABI.
const NANOS_PER_TICK: u64 = 1_000_000_000 / 100;

pub(super) fn stats(reader: CgroupFiles<'_>, paths: &CgroupPaths, spec: &Spec) -> Stats {
    let CgroupPaths::V1 {
        cpu,
        cpuacct,
        memory,
        blkio,
        pids,
        unified,
    } = paths
    else {
        return Stats::default();
    };
    let mut stats = Stats::default();
    if let Some(dir) = cpuacct {
        stats.cpu = reader
            .parse(dir, File::CpuacctUsage, parse::single_u64)
            .map(|usage_ns| {
                let ticks = reader.parse(dir, File::CpuacctStat, cpuacct_stat);
                Cpu {
                    usage_ns,
                    user_ns: ticks.map(|(user, _)| user * NANOS_PER_TICK),
                    system_ns: ticks.map(|(_, system)| system * NANOS_PER_TICK),
                }
            });
    }
    if let (Some(dir), Some(_)) = (cpu, spec.cpu_quota) {
        stats.cfs = reader.parse(dir, File::CpuStat, |text| {
            let mut cfs = Cfs::default();
            parse::flat_keyed(text, |key, value| match key {
                "nr_periods" => cfs.periods = value,
                "nr_throttled" => cfs.throttled_periods = value,
                "throttled_time" => cfs.throttled_ns = value,
                "nr_bursts" => cfs.bursts = Some(value),
                "burst_time" => cfs.burst_ns = Some(value),
                _ => {}
            })?;
            Ok(cfs)
        });
    }
    if let Some(dir) = memory {
        stats.memory = memory_stats(reader, dir);
        stats.oom_events = reader
            .parse(dir, File::MemoryOomControl, |text| {
                parse::flat_keyed_value(text, "oom_kill")
            })
            .flatten();
    }
    if let Some(dir) = blkio {
        let bytes = reader.parse(dir, File::BlkioServiceBytes, parse::v1_blkio);
        let ops = reader.parse(dir, File::BlkioServiced, parse::v1_blkio);
        if let (Some(bytes), Some(ops)) = (bytes, ops) {
            stats.io = Some(merge_blkio(&bytes, &ops));
        }
    }
    if let Some(dir) = pids {
        stats.threads = reader.parse(dir, File::PidsCurrent, parse::single_u64);
    }
    stats.processes = paths
        .main_dir()
        .and_then(|dir| reader.parse(dir, File::CgroupProcs, parse::procs))
        .map(|(count, _)| count);
    if let Some(dir) = unified {
        v2::pressure(reader, dir, &mut stats);
    }
    stats
}

/// Joins the bytes and operations files into one entry per device. A device only in the
/// operations file has no bytes by operation, as in cAdvisor (which reports the bytes file).
fn merge_blkio(bytes: &[parse::ReadWrite], ops: &[parse::ReadWrite]) -> Vec<DeviceIo> {
    let mut devices: Vec<DeviceIo> = bytes
        .iter()
        .map(|b| DeviceIo {
            major: b.major,
            minor: b.minor,
            read_bytes: b.read(),
            write_bytes: b.write(),
            bytes_by_operation: b.operations,
            ..DeviceIo::default()
        })
        .collect();
    for op in ops {
        match devices.iter_mut().find(|d| d.major == op.major && d.minor == op.minor) {
            Some(device) => {
                device.reads = op.read();
                device.writes = op.write();
            }
            None => devices.push(DeviceIo {
                major: op.major,
                minor: op.minor,
                reads: op.read(),
                writes: op.write(),
                ..DeviceIo::default()
            }),
        }
    }
    devices
}

fn cpuacct_stat(text: &str) -> Result<(u64, u64), ParseError> {
    let (mut user, mut system) = (None, None);
    parse::flat_keyed(text, |key, value| match key {
        "user" => user = Some(value),
        "system" => system = Some(value),
        _ => {}
    })?;
    match (user, system) {
        (Some(user), Some(system)) => Ok((user, system)),
        _ => Err(ParseError("cpuacct.stat lacks user or system".into())),
    }
}

thread_local! {
    /// The order of `memory.stat`'s keys as this thread last read them (see
    /// [`parse::flat_keyed_wanted`]).
    static MEMORY_STAT_KEYS: std::cell::RefCell<parse::KeyOrder> = std::cell::RefCell::default();
}

fn memory_stats(reader: CgroupFiles<'_>, dir: &Path) -> Option<Memory> {
    let usage = reader.parse(dir, File::MemoryUsage, parse::single_u64)?;
    let mut memory = reader.parse(dir, File::MemoryStat, |text| {
        let [
            rss,
            cache,
            mapped_file,
            swap,
            inactive_file,
            active_file,
            pgfault,
            pgmajfault,
            total_pgfault,
            total_pgmajfault,
        ] = MEMORY_STAT_KEYS.with_borrow_mut(|order| {
            parse::flat_keyed_wanted(
                text,
                &[
                    "total_rss",
                    "total_cache",
                    "total_mapped_file",
                    "total_swap",
                    "total_inactive_file",
                    "total_active_file",
                    "pgfault",
                    "pgmajfault",
                    "total_pgfault",
                    "total_pgmajfault",
                ],
                order,
            )
        })?;
        let inactive_file = inactive_file.ok_or_else(|| ParseError("memory.stat lacks total_inactive_file".into()))?;
        Ok(Memory {
            rss: rss.unwrap_or(0),
            cache: cache.unwrap_or(0),
            mapped_file: mapped_file.unwrap_or(0),
            swap,
            inactive_file,
            active_file,
            pgfault: pgfault.unwrap_or(0),
            pgmajfault: pgmajfault.unwrap_or(0),
            hierarchy_pgfault: total_pgfault.unwrap_or(0),
            hierarchy_pgmajfault: total_pgmajfault.unwrap_or(0),
            working_set: usage.saturating_sub(inactive_file),
            ..Memory::default()
        })
    })?;
    memory.usage = usage;
    memory.max_usage = reader.parse(dir, File::MemoryMaxUsage, parse::single_u64).unwrap_or(0);
    memory.failcnt = reader.parse(dir, File::MemoryFailcnt, parse::single_u64).unwrap_or(0);
    // Absent on kernels built without kernel memory accounting.
    memory.kernel_usage = reader.parse(dir, File::MemoryKmemUsage, parse::single_u64);
    Some(memory)
}

pub(super) fn spec(reader: &Reader, paths: &CgroupPaths) -> Spec {
    let CgroupPaths::V1 { cpu, memory, pids, .. } = paths else {
        return Spec::default();
    };
    let mut spec = Spec::default();
    if let Some(dir) = cpu {
        spec.cpu_period = reader.parse(dir, File::CpuCfsPeriod, parse::single_u64);
        spec.cpu_quota = reader.parse(dir, File::CpuCfsQuota, parse::v1_cfs_quota).flatten();
        spec.cpu_shares = reader.parse(dir, File::CpuShares, parse::single_u64);
    }
    if let Some(dir) = memory {
        let limit = |file| reader.parse(dir, file, parse::v1_limit).map(|l| l.unwrap_or(0));
        spec.memory_limit = limit(File::MemoryLimit);
        spec.memory_swap_limit = limit(File::MemoryMemswLimit);
        spec.memory_reservation = limit(File::MemorySoftLimit);
    }
    if let Some(dir) = pids {
        spec.threads_max = reader
            .parse(dir, File::PidsMax, parse::pids_max)
            .map(|m| m.unwrap_or(0));
    }
    spec
}
