//! cgroup v2: one directory per cgroup with every enabled controller's files.

use std::path::Path;

use super::parse::{self, ParseError};
use super::read::{CgroupFiles, File, Reader};
use super::stats::{Cfs, Cpu, Memory, MemoryV2, Spec, Stats};

pub(super) fn stats(reader: CgroupFiles<'_>, dir: &Path, root: bool, spec: &Spec) -> Stats {
    let mut stats = Stats::default();
    if let Some((cpu, cfs)) = reader.parse(dir, File::CpuStat, cpu_stat) {
        stats.cpu = Some(cpu);
        stats.cfs = spec.cpu_quota.map(|_| cfs);
    }
    stats.memory = memory_stats(reader, dir, root);
    if let Some(memory) = stats.memory.as_mut() {
        // One read of memory.events gives the OOM kills and cAdvisor's high/max events.
        let events = reader.parse(dir, File::MemoryEvents, |text| {
            let (mut oom_kill, mut high, mut max) = (None, None, None);
            parse::flat_keyed(text, |key, value| match key {
                "oom_kill" => oom_kill = Some(value),
                "high" => high = Some(value),
                "max" => max = Some(value),
                _ => {}
            })?;
            Ok((oom_kill, high, max))
        });
        if let Some((oom_kill, high, max)) = events {
            stats.oom_events = oom_kill;
            if let Some(v2) = memory.v2.as_mut() {
                v2.events_high = high;
                v2.events_max = max;
            }
        }
    }
    stats.io = reader.parse(dir, File::IoStat, parse::v2_io_stat);
    stats.threads = reader.parse(dir, File::PidsCurrent, parse::single_u64);
    stats.processes = reader
        .parse(dir, File::CgroupProcs, parse::procs)
        .map(|(count, _)| count);
    pressure(reader, dir, &mut stats);
    stats
}

/// PSI totals, where the kernel has them (v2, and the unified tree of hybrid hosts).
pub(super) fn pressure(reader: CgroupFiles<'_>, dir: &Path, stats: &mut Stats) {
    stats.cpu_pressure = reader.parse(dir, File::CpuPressure, parse::pressure);
    stats.memory_pressure = reader.parse(dir, File::MemoryPressure, parse::pressure);
    stats.io_pressure = reader.parse(dir, File::IoPressure, parse::pressure);
}

fn cpu_stat(text: &str) -> Result<(Cpu, Cfs), ParseError> {
    let mut usage = None;
    let mut cpu = Cpu::default();
    let mut cfs = Cfs::default();
    parse::flat_keyed(text, |key, value| match key {
        "usage_usec" => usage = Some(value.saturating_mul(1000)),
        "user_usec" => cpu.user_ns = Some(value.saturating_mul(1000)),
        "system_usec" => cpu.system_ns = Some(value.saturating_mul(1000)),
        "nr_periods" => cfs.periods = value,
        "nr_throttled" => cfs.throttled_periods = value,
        "throttled_usec" => cfs.throttled_ns = value.saturating_mul(1000),
        "nr_bursts" => cfs.bursts = Some(value),
        "burst_usec" => cfs.burst_ns = Some(value.saturating_mul(1000)),
        _ => {}
    })?;
    cpu.usage_ns = usage.ok_or_else(|| ParseError("cpu.stat lacks usage_usec".into()))?;
    Ok((cpu, cfs))
}

thread_local! {
    /// The order of `memory.stat`'s keys as this thread last read them (see
    /// [`parse::flat_keyed_wanted`]).
    static MEMORY_STAT_KEYS: std::cell::RefCell<parse::KeyOrder> = std::cell::RefCell::default();
}

fn memory_stats(reader: CgroupFiles<'_>, dir: &Path, root: bool) -> Option<Memory> {
    // The root cgroup has no memory.current: as runc's cgroup library (which cAdvisor uses)
    // does, its usage is memory.stat's anon + file.
    let current = reader.parse(dir, File::MemoryCurrent, parse::single_u64);
    if current.is_none() && !root {
        return None;
    }
    let (mut memory, inactive_file) = reader.parse(dir, File::MemoryStat, |text| {
        let [
            anon,
            file,
            file_mapped,
            inactive_file,
            active_file,
            pgfault,
            pgmajfault,
            file_dirty,
            file_writeback,
            pgscan,
            pgsteal,
            workingset_refault_anon,
            workingset_refault_file,
        ] = MEMORY_STAT_KEYS.with_borrow_mut(|order| {
            parse::flat_keyed_wanted(
                text,
                &[
                    "anon",
                    "file",
                    "file_mapped",
                    "inactive_file",
                    "active_file",
                    "pgfault",
                    "pgmajfault",
                    "file_dirty",
                    "file_writeback",
                    "pgscan",
                    "pgsteal",
                    "workingset_refault_anon",
                    "workingset_refault_file",
                ],
                order,
            )
        })?;
        let mut m = Memory {
            rss: anon.unwrap_or(0),
            cache: file.unwrap_or(0),
            mapped_file: file_mapped.unwrap_or(0),
            active_file,
            pgfault: pgfault.unwrap_or(0),
            pgmajfault: pgmajfault.unwrap_or(0),
            ..Memory::default()
        };
        let v2 = MemoryV2 {
            file_dirty,
            file_writeback,
            pgscan,
            pgsteal,
            workingset_refault_anon,
            workingset_refault_file,
            ..MemoryV2::default()
        };
        m.v2 = Some(v2);
        let inactive_file = inactive_file.ok_or_else(|| ParseError("memory.stat lacks inactive_file".into()))?;
        // v2 has no separate hierarchical counters: both scopes show the same values.
        m.hierarchy_pgfault = m.pgfault;
        m.hierarchy_pgmajfault = m.pgmajfault;
        Ok((m, inactive_file))
    })?;
    memory.inactive_file = inactive_file;
    memory.usage = current.unwrap_or(memory.rss.saturating_add(memory.cache));
    memory.working_set = memory.usage.saturating_sub(inactive_file);
    memory.max_usage = reader.parse(dir, File::MemoryPeak, parse::single_u64).unwrap_or(0);
    memory.swap = reader.parse(dir, File::MemorySwapCurrent, parse::single_u64);
    Some(memory)
}

pub(super) fn spec(reader: &Reader, dir: &Path) -> Spec {
    let mut spec = Spec::default();
    if let Some((quota, period)) = reader.parse(dir, File::CpuMax, parse::v2_cpu_max) {
        spec.cpu_quota = quota;
        spec.cpu_period = Some(period);
    }
    spec.cpu_shares = reader.parse(dir, File::CpuWeight, parse::v2_weight_to_shares);
    let limit = |file| reader.parse(dir, file, parse::v2_max).map(|l| l.unwrap_or(0));
    spec.memory_limit = limit(File::MemoryMax);
    spec.memory_swap_limit = limit(File::MemorySwapMax);
    spec.memory_reservation = limit(File::MemoryMin);
    spec.threads_max = reader
        .parse(dir, File::PidsMax, parse::pids_max)
        .map(|m| m.unwrap_or(0));
    spec
}
