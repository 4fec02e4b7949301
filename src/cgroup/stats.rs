//! What sonde reads of a cgroup, in cAdvisor's model. A part is `None` when its files are
//! absent (controller not enabled, older kernel) or failed; never a made-up zero.

use super::parse::{DeviceIo, Pressure};

/// Values that change between scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub cpu: Option<Cpu>,
    /// Only read when a CFS quota is set, as cAdvisor reports these only then.
    pub cfs: Option<Cfs>,
    pub memory: Option<Memory>,
    pub oom_events: Option<u64>,
    pub io: Option<Vec<DeviceIo>>,
    pub threads: Option<u64>,
    pub processes: Option<u64>,
    pub cpu_pressure: Option<Pressure>,
    pub memory_pressure: Option<Pressure>,
    pub io_pressure: Option<Pressure>,
}

impl Stats {
    pub fn is_empty(&self) -> bool {
        self == &Stats::default()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu {
    pub usage_ns: u64,
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cfs {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
    /// `nr_bursts` and the burst time (CFS burst, Linux 5.14); `None` before.
    pub bursts: Option<u64>,
    pub burst_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub usage: u64,
    /// `memory.max_usage_in_bytes` (v1) or `memory.peak` (v2, kernel 5.19+; else 0).
    pub max_usage: u64,
    /// usage − inactive file pages, clamped at 0.
    pub working_set: u64,
    pub rss: u64,
    pub cache: u64,
    pub mapped_file: u64,
    /// `None` without swap accounting.
    pub swap: Option<u64>,
    /// Always 0 on v2, which has no failcnt.
    pub failcnt: u64,
    pub pgfault: u64,
    pub pgmajfault: u64,
    pub hierarchy_pgfault: u64,
    pub hierarchy_pgmajfault: u64,
    /// `total_active_file` (v1), `active_file` (v2).
    pub active_file: Option<u64>,
    /// `total_inactive_file` (v1), `inactive_file` (v2).
    pub inactive_file: u64,
    /// `memory.kmem.usage_in_bytes` (v1 only: runc's v2 reader, cAdvisor's, has none).
    pub kernel_usage: Option<u64>,
    /// What cAdvisor takes from v2's `memory.stat` and `memory.events` only (it reports 0 for
    /// them on v1, where sonde leaves them out).
    pub v2: Option<MemoryV2>,
}

/// v2-only memory figures; `None` where the kernel does not write the key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryV2 {
    pub file_dirty: Option<u64>,
    pub file_writeback: Option<u64>,
    pub pgscan: Option<u64>,
    pub pgsteal: Option<u64>,
    pub workingset_refault_anon: Option<u64>,
    pub workingset_refault_file: Option<u64>,
    /// `memory.events` `high` and `max`.
    pub events_high: Option<u64>,
    pub events_max: Option<u64>,
}

/// Limits: refreshed with the inventory. `Some(0)` is cAdvisor's "unlimited".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spec {
    pub cpu_period: Option<u64>,
    /// Set only when a quota is configured.
    pub cpu_quota: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub memory_limit: Option<u64>,
    pub memory_swap_limit: Option<u64>,
    pub memory_reservation: Option<u64>,
    pub threads_max: Option<u64>,
}
