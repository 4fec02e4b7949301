//! Writes cgroup trees in the real file formats under a fake sysfs root, for tests and
//! benchmarks that cannot or should not create thousands of real cgroups.
//!
//! Standard library only, so that it can be included by path anywhere: the integration tests
//! and benchmarks (`mod cgroup_fixture;` under `tests/common`, or `#[path]`), and unit tests
//! in `src`.
#![allow(dead_code)] // each includer uses its own subset

use std::io;
use std::path::Path;

/// The values a fake cgroup's files report.
#[derive(Debug, Clone)]
pub struct FakeCgroup {
    /// The cgroup path, e.g. `/docker/<id>`.
    pub id: String,
    pub usage_ns: u64,
    pub user_ticks: u64,
    pub system_ticks: u64,
    pub memory_usage: u64,
    pub inactive_file: u64,
    pub active_file: u64,
    /// v2 `memory.stat` only: `(file_dirty, file_writeback, pgscan, pgsteal,
    /// workingset_refault_anon, workingset_refault_file)`.
    pub reclaim: (u64, u64, u64, u64, u64, u64),
    /// v2 `memory.events` `high` and `max`.
    pub memory_events: (u64, u64),
    /// v1 `memory.kmem.usage_in_bytes`.
    pub kernel_usage: u64,
    /// `cpu.stat` `nr_bursts` and burst time in ns.
    pub bursts: (u64, u64),
    pub rss: u64,
    pub cache: u64,
    pub mapped_file: u64,
    pub swap: u64,
    /// `(quota_us, period_us)` when a CFS quota is set.
    pub quota: Option<(u64, u64)>,
    pub throttled: (u64, u64, u64),
    pub memory_limit: Option<u64>,
    pub pids: Vec<u32>,
    /// `(major, minor, read_bytes, write_bytes, reads, writes)`.
    pub io: Vec<(u64, u64, u64, u64, u64, u64)>,
    /// Discarded bytes and discards of each device in `io`. v1's Sync and Async split each
    /// file's total as the kernel does (every I/O is one of read, write, discard and one of
    /// sync, async): sync is the reads and a quarter of the writes.
    pub io_discard: (u64, u64),
    pub oom_kills: u64,
    /// Whether PSI files exist (v2 only).
    pub pressure: Option<(u64, u64)>,
}

impl FakeCgroup {
    /// A cgroup whose every value is derived from `seed`, so tests can predict them.
    pub fn seeded(id: impl Into<String>, seed: u64) -> Self {
        Self {
            id: id.into(),
            usage_ns: 1_000_000_000 * (seed + 1) + 7,
            user_ticks: 60 * (seed + 1),
            system_ticks: 40 * (seed + 1),
            memory_usage: (64 << 20) + seed * 4096,
            inactive_file: 8 << 20,
            active_file: (12 << 20) + seed * 4096,
            reclaim: (
                4096 * seed + 8192,
                4096 * seed,
                500 + seed,
                400 + seed,
                30 + seed,
                50 + seed,
            ),
            memory_events: (20 + seed, 10 + seed),
            kernel_usage: (3 << 20) + seed * 4096,
            bursts: (7 + seed, 2_000_000 + seed * 1000),
            rss: 40 << 20,
            cache: 20 << 20,
            mapped_file: 4 << 20,
            swap: 0,
            quota: (seed % 2 == 1).then_some((50_000, 100_000)),
            throttled: (100 + seed, 10 + seed, 5_000_000 + seed),
            memory_limit: seed.is_multiple_of(3).then_some(512 << 20),
            pids: vec![1000 + seed as u32, 2000 + seed as u32],
            io: vec![(8, 0, 4096 * seed, 8192 * seed, seed, 2 * seed)],
            io_discard: (512 * seed, seed),
            oom_kills: seed % 4,
            pressure: Some((1_500_000 + seed, 500_000 + seed)),
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    std::fs::write(dir.join(name), text)
}

/// Writes the v1 controller directories (`cpu`, `cpuacct`, `memory`, `blkio`, `pids`).
pub fn write_v1(sysfs: &Path, cgroup: &FakeCgroup) -> io::Result<()> {
    let base = sysfs.join("fs/cgroup");
    let rel = cgroup.id.trim_start_matches('/');
    let dir = |ctrl: &str| -> io::Result<std::path::PathBuf> {
        let d = base.join(ctrl).join(rel);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    };
    let procs: String = cgroup.pids.iter().map(|p| format!("{p}\n")).collect();

    let cpu = dir("cpu")?;
    write(&cpu, "cgroup.procs", &procs)?;
    write(&cpu, "cpu.shares", "1024\n")?;
    write(
        &cpu,
        "cpu.cfs_period_us",
        &format!("{}\n", cgroup.quota.map_or(100_000, |q| q.1)),
    )?;
    write(
        &cpu,
        "cpu.cfs_quota_us",
        &cgroup.quota.map_or("-1\n".to_owned(), |q| format!("{}\n", q.0)),
    )?;
    let (periods, throttled, throttled_time) = cgroup.throttled;
    write(
        &cpu,
        "cpu.stat",
        &format!(
            "nr_periods {periods}\nnr_throttled {throttled}\nthrottled_time {throttled_time}\nnr_bursts {}\nburst_time {}\n",
            cgroup.bursts.0, cgroup.bursts.1
        ),
    )?;

    let cpuacct = dir("cpuacct")?;
    write(&cpuacct, "cgroup.procs", &procs)?;
    write(&cpuacct, "cpuacct.usage", &format!("{}\n", cgroup.usage_ns))?;
    write(
        &cpuacct,
        "cpuacct.stat",
        &format!("user {}\nsystem {}\n", cgroup.user_ticks, cgroup.system_ticks),
    )?;

    let memory = dir("memory")?;
    write(&memory, "cgroup.procs", &procs)?;
    write(&memory, "memory.usage_in_bytes", &format!("{}\n", cgroup.memory_usage))?;
    write(
        &memory,
        "memory.max_usage_in_bytes",
        &format!("{}\n", cgroup.memory_usage + 4096),
    )?;
    write(&memory, "memory.failcnt", "0\n")?;
    write(
        &memory,
        "memory.kmem.usage_in_bytes",
        &format!("{}\n", cgroup.kernel_usage),
    )?;
    let unlimited = "9223372036854771712\n";
    let limit = cgroup.memory_limit.map_or(unlimited.to_owned(), |l| format!("{l}\n"));
    write(&memory, "memory.limit_in_bytes", &limit)?;
    write(&memory, "memory.memsw.limit_in_bytes", unlimited)?;
    write(&memory, "memory.soft_limit_in_bytes", unlimited)?;
    write(
        &memory,
        "memory.oom_control",
        &format!("oom_kill_disable 0\nunder_oom 0\noom_kill {}\n", cgroup.oom_kills),
    )?;
    write(
        &memory,
        "memory.stat",
        &format!(
            "cache {c}\nrss {r}\nrss_huge 0\nshmem 0\nmapped_file {m}\ndirty 0\nwriteback 0\nswap {s}\npgpgin 10\npgpgout 5\npgfault 300\npgmajfault 3\ninactive_anon 0\nactive_anon {r}\ninactive_file {i}\nactive_file 0\nunevictable 0\nhierarchical_memory_limit 9223372036854771712\nhierarchical_memsw_limit 9223372036854771712\ntotal_cache {c}\ntotal_rss {r}\ntotal_rss_huge 0\ntotal_shmem 0\ntotal_mapped_file {m}\ntotal_dirty 0\ntotal_writeback 0\ntotal_swap {s}\ntotal_pgpgin 10\ntotal_pgpgout 5\ntotal_pgfault 600\ntotal_pgmajfault 6\ntotal_inactive_anon 0\ntotal_active_anon {r}\ntotal_inactive_file {i}\ntotal_active_file {a}\ntotal_unevictable 0\n",
            c = cgroup.cache,
            r = cgroup.rss,
            m = cgroup.mapped_file,
            s = cgroup.swap,
            i = cgroup.inactive_file,
            a = cgroup.active_file
        ),
    )?;

    let blkio = dir("blkio")?;
    let (mut bytes, mut ops) = (String::new(), String::new());
    let (db, d) = cgroup.io_discard;
    let (mut bytes_total, mut ops_total) = (0, 0);
    for (major, minor, rb, wb, r, w) in &cgroup.io {
        let line = |text: &mut String, read: u64, write: u64, discard: u64| {
            let sync = read + write / 4;
            let total = read + write + discard;
            text.push_str(&format!(
                "{major}:{minor} Read {read}\n{major}:{minor} Write {write}\n{major}:{minor} Sync {sync}\n{major}:{minor} Async {}\n{major}:{minor} Discard {discard}\n{major}:{minor} Total {total}\n",
                total - sync
            ));
            total
        };
        bytes_total += line(&mut bytes, *rb, *wb, db);
        ops_total += line(&mut ops, *r, *w, d);
    }
    bytes.push_str(&format!("Total {bytes_total}\n"));
    ops.push_str(&format!("Total {ops_total}\n"));
    write(&blkio, "blkio.throttle.io_service_bytes_recursive", &bytes)?;
    write(&blkio, "blkio.throttle.io_serviced_recursive", &ops)?;

    let pids = dir("pids")?;
    write(&pids, "cgroup.procs", &procs)?;
    write(&pids, "pids.current", &format!("{}\n", cgroup.pids.len()))?;
    write(&pids, "pids.max", "max\n")?;
    Ok(())
}

/// Writes one v2 cgroup directory (and marks the root as unified).
pub fn write_v2(sysfs: &Path, cgroup: &FakeCgroup) -> io::Result<()> {
    let base = sysfs.join("fs/cgroup");
    std::fs::create_dir_all(&base)?;
    write(&base, "cgroup.controllers", "cpuset cpu io memory pids\n")?;
    let dir = base.join(cgroup.id.trim_start_matches('/'));
    std::fs::create_dir_all(&dir)?;
    let procs: String = cgroup.pids.iter().map(|p| format!("{p}\n")).collect();
    write(&dir, "cgroup.procs", &procs)?;
    let (periods, throttled, throttled_ns) = cgroup.throttled;
    write(
        &dir,
        "cpu.stat",
        &format!(
            "usage_usec {}\nuser_usec {}\nsystem_usec {}\nnr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec {}\nnr_bursts {}\nburst_usec {}\n",
            cgroup.usage_ns / 1000,
            cgroup.user_ticks * 10_000,
            cgroup.system_ticks * 10_000,
            throttled_ns / 1000,
            cgroup.bursts.0,
            cgroup.bursts.1 / 1000
        ),
    )?;
    write(
        &dir,
        "cpu.max",
        &cgroup
            .quota
            .map_or("max 100000\n".to_owned(), |(q, p)| format!("{q} {p}\n")),
    )?;
    write(&dir, "cpu.weight", "100\n")?;
    write(&dir, "memory.current", &format!("{}\n", cgroup.memory_usage))?;
    write(&dir, "memory.peak", &format!("{}\n", cgroup.memory_usage + 4096))?;
    write(&dir, "memory.swap.current", &format!("{}\n", cgroup.swap))?;
    write(
        &dir,
        "memory.max",
        &cgroup.memory_limit.map_or("max\n".to_owned(), |l| format!("{l}\n")),
    )?;
    write(&dir, "memory.swap.max", "max\n")?;
    write(&dir, "memory.min", "0\n")?;
    write(
        &dir,
        "memory.events",
        &format!(
            "low 0\nhigh {}\nmax {}\noom 0\noom_kill {}\noom_group_kill 0\n",
            cgroup.memory_events.0, cgroup.memory_events.1, cgroup.oom_kills
        ),
    )?;
    write(
        &dir,
        "memory.stat",
        &format!(
            "anon {r}\nfile {c}\nkernel 0\nkernel_stack 0\npagetables 0\nsec_pagetables 0\npercpu 0\nsock 0\nvmalloc 0\nshmem 0\nfile_mapped {m}\nfile_dirty {dirty}\nfile_writeback {wb}\nswapcached 0\nanon_thp 0\ninactive_anon 0\nactive_anon {r}\ninactive_file {i}\nactive_file {a}\nunevictable 0\nworkingset_refault_anon {ra}\nworkingset_refault_file {rf}\nworkingset_activate_anon 0\nworkingset_activate_file 0\npgscan {scan}\npgsteal {steal}\npgscan_kswapd 0\npgfault 300\npgmajfault 3\n",
            r = cgroup.rss,
            c = cgroup.cache,
            m = cgroup.mapped_file,
            i = cgroup.inactive_file,
            a = cgroup.active_file,
            dirty = cgroup.reclaim.0,
            wb = cgroup.reclaim.1,
            scan = cgroup.reclaim.2,
            steal = cgroup.reclaim.3,
            ra = cgroup.reclaim.4,
            rf = cgroup.reclaim.5
        ),
    )?;
    let io: String = cgroup
        .io
        .iter()
        .map(|(major, minor, rb, wb, r, w)| {
            let (db, d) = cgroup.io_discard;
            format!("{major}:{minor} rbytes={rb} wbytes={wb} rios={r} wios={w} dbytes={db} dios={d}\n")
        })
        .collect();
    write(&dir, "io.stat", &io)?;
    write(&dir, "pids.current", &format!("{}\n", cgroup.pids.len()))?;
    write(&dir, "pids.max", "max\n")?;
    if let Some((some, full)) = cgroup.pressure {
        for file in ["cpu.pressure", "memory.pressure", "io.pressure"] {
            write(
                &dir,
                file,
                &format!(
                    "some avg10=0.00 avg60=0.00 avg300=0.00 total={some}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total={full}\n"
                ),
            )?;
        }
    }
    Ok(())
}
