//! The container collector over cgroup trees written in the real formats under a fake
//! `--path.sysfs` and `--path.procfs`: exact values, cAdvisor label sets, strict exposition,
//! and one read per file per validity window however many scrapes come in.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::cgroup_fixture::{FakeCgroup, write_v1, write_v2};
use common::*;
use sonde::cgroup::File;
use sonde::collector::Sources;
use sonde::collector::container::ContainerCollector;
use sonde::collector::{Collector, ScrapeContext};

const DOCKER: &str = "/docker/1111111111111111111111111111111111111111111111111111111111111111";
const SCOPE: &str = "/system.slice/docker-2222222222222222222222222222222222222222222222222222222222222222.scope";
const POD: &str = "/kubepods/burstable/pod8e1a3d5c-1b2f-4c6d-9e0a-112233445566";
const RAW: &str = "/sonde-raw/job";

fn k8s_container() -> String {
    format!("{POD}/3333333333333333333333333333333333333333333333333333333333333333")
}

/// A host with a Docker container (CFS quota, own network namespace), a systemd-scoped one
/// (host network), a pod with one container, a raw cgroup and a system service.
fn fake_host(root: &Path, version: &str) {
    let sysfs = root.join("sys");
    let write = |cgroup: &FakeCgroup| match version {
        "v2" => write_v2(&sysfs, cgroup),
        _ => write_v1(&sysfs, cgroup),
    };
    let mut docker = FakeCgroup::seeded(DOCKER, 1);
    docker.pids = vec![4242];
    write(&docker).expect("write");
    if version == "v2" {
        // blk-iocost on for the device: the kernel adds its rate (not an integer) and four
        // times in microseconds to the container's io.stat line.
        let io_stat = sysfs
            .join("fs/cgroup")
            .join(DOCKER.trim_start_matches('/'))
            .join("io.stat");
        let line = std::fs::read_to_string(&io_stat).expect("read io.stat");
        let line = line.trim_end().to_owned()
            + " cost.vrate=100.00 cost.usage=7000 cost.wait=8000 cost.indebt=9 cost.indelay=10\n";
        std::fs::write(&io_stat, line).expect("write io.stat");
    }
    let mut scope = FakeCgroup::seeded(SCOPE, 2);
    scope.pids = vec![4343];
    write(&scope).expect("write");
    write(&FakeCgroup::seeded(POD, 4)).expect("write");
    write(&FakeCgroup::seeded(k8s_container(), 5)).expect("write");
    write(&FakeCgroup::seeded(RAW, 6)).expect("write");
    write(&FakeCgroup::seeded("/system.slice/sshd.service", 7)).expect("write");
    let block = sysfs.join("dev/block/8:0");
    std::fs::create_dir_all(&block).expect("mkdir");
    std::fs::write(block.join("uevent"), "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n").expect("write");

    // The root cgroup's files as the kernel writes them: v2's root has cpu.stat and
    // memory.stat but no memory.current; v1's has the controllers' usual files.
    let top = sysfs.join("fs/cgroup");
    let root_files: &[(&str, &str)] = match version {
        "v2" => &[
            (
                "cpu.stat",
                "usage_usec 7000001\nuser_usec 5000000\nsystem_usec 2000001\n",
            ),
            (
                "memory.stat",
                "anon 3000000\nfile 9000000\nfile_mapped 100\nactive_file 4000000\ninactive_file 5000000\npgfault 7\npgmajfault 1\n",
            ),
        ],
        _ => &[
            ("cpuacct/cpuacct.usage", "7000001000\n"),
            ("cpuacct/cpuacct.stat", "user 500\nsystem 200\n"),
            ("memory/memory.usage_in_bytes", "12000000\n"),
            ("memory/memory.max_usage_in_bytes", "13000000\n"),
            (
                "memory/memory.stat",
                "cache 1\nrss 2\ntotal_cache 9000000\ntotal_rss 3000000\ntotal_mapped_file 100\ntotal_swap 4096\ntotal_active_file 4000000\ntotal_inactive_file 5000000\npgfault 7\npgmajfault 1\ntotal_pgfault 70\ntotal_pgmajfault 10\n",
            ),
        ],
    };
    for (file, text) in root_files {
        std::fs::write(top.join(file), text).expect("write");
    }

    // PID 4242 has a network namespace of its own, PID 4343 shares the host's.
    let proc = root.join("proc");
    std::fs::create_dir_all(proc.join("1")).expect("mkdir");
    // The host's filesystems as init sees them: an ext4 root on sda (also bind-mounted), a
    // tmpfs, procfs (not a filesystem cAdvisor reports); and the disks' counters.
    std::fs::write(
        proc.join("1/mountinfo"),
        [
            "22 1 8:0 / / rw,relatime shared:1 - ext4 /dev/sda rw",
            "23 22 0:21 / /proc rw,nosuid shared:5 - proc proc rw",
            "24 22 8:0 /var/lib/docker /var/lib/docker rw shared:1 - ext4 /dev/sda rw",
            "25 22 0:30 / /run rw,nosuid shared:8 - tmpfs tmpfs rw",
            "",
        ]
        .join("\n"),
    )
    .expect("write");
    std::fs::write(
        proc.join("diskstats"),
        "   7       0 loop0 9 9 9 9 9 9 9 9 0 9 9 0 0 0 0 0 0
   8       0 sda 1001 1002 1003 1004 1005 1006 1007 1008 3 1010 1011 0 0 0 0 0 0
",
    )
    .expect("write");
    for dir in ["run", "var/lib/docker"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    std::fs::write(
        proc.join("meminfo"),
        "MemTotal:       16318412 kB\nMemFree:         8123456 kB\nSwapTotal:       2097148 kB\nSwapFree:        2000000 kB\n",
    )
    .expect("write");
    for (pid, ns) in [
        (1, "net:[4026531840]"),
        (4242, "net:[4026532999]"),
        (4343, "net:[4026531840]"),
    ] {
        let dir = proc.join(pid.to_string());
        std::fs::create_dir_all(dir.join("ns")).expect("mkdir");
        std::os::unix::fs::symlink(ns, dir.join("ns/net")).expect("symlink");
        std::fs::create_dir_all(dir.join("net")).expect("mkdir");
        std::fs::write(
            dir.join("net/dev"),
            "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:  123456     789    1    2    0     0          0         0    65432     321    3    4    0     0       0          0\n",
        )
        .expect("write");
    }
}

/// A fake host of `count` Docker containers (`/docker/<seed as 64 hex>`, seeded values) in
/// the given cgroup version, and the configuration that points sonde at it.
pub fn fake_forest(dir: &std::path::Path, version: &str, count: u64, flags: &[&str]) -> sonde::cli::Config {
    let sysfs = dir.join("sys");
    for seed in 0..count {
        let cgroup = FakeCgroup::seeded(format!("/docker/{seed:064x}"), seed);
        match version {
            "v2" => write_v2(&sysfs, &cgroup),
            _ => write_v1(&sysfs, &cgroup),
        }
        .expect("write the fake cgroup");
    }
    std::fs::create_dir_all(dir.join("proc")).expect("mkdir");
    let args = [
        "sonde".to_owned(),
        format!("--path.sysfs={}", sysfs.display()),
        format!("--path.procfs={}", dir.join("proc").display()),
    ];
    sonde::cli::from_args(args.into_iter().chain(flags.iter().map(|f| (*f).to_owned()))).expect("config")
}

fn series(id: &str, extra: &[(&str, &str)]) -> String {
    container_labels(id, extra)
}

/// For every `container_*` family: the label key sets of its series.
fn label_keys(text: &str) -> BTreeMap<String, BTreeSet<Vec<String>>> {
    let mut families: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    for sample in parse_samples(text)
        .into_iter()
        .filter(|s| s.name.starts_with("container_"))
    {
        let keys = sample.labels.iter().map(|(k, _)| k.clone()).collect();
        families.entry(sample.name.to_owned()).or_default().insert(keys);
    }
    families
}

async fn check_fake_host(version: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    fake_host(dir.path(), version);
    let sysfs = format!("--path.sysfs={}", dir.path().join("sys").display());
    let procfs = format!("--path.procfs={}", dir.path().join("proc").display());
    let rootfs = format!("--path.rootfs={}", dir.path().display());
    let sonde = Sonde::start(&[
        &sysfs,
        &procfs,
        &rootfs,
        "--container.raw-cgroup-prefix=/sonde-raw",
        "--no-collector.host",
    ]);
    let text = scrape(&sonde);

    let (ok, complaints) = promtool_check_metrics(text.as_bytes());
    assert!(ok && complaints.trim().is_empty(), "promtool: {complaints}");
    let openmetrics = scrape_as(&sonde, OPENMETRICS_ACCEPT);
    python_openmetrics_families(openmetrics.as_bytes()).expect("strict OpenMetrics");

    // Protobuf: the rendered families read back into the model carry the same samples.
    let protobuf = fetch(&sonde, PROTOBUF_ACCEPT).unwrap_or_else(|e| panic!("protobuf scrape: {e}"));
    let usage = decode_protobuf(&protobuf)
        .into_iter()
        .find(|f| f.name() == "container_cpu_usage_seconds_total");
    let usage = usage.expect("container_cpu_usage_seconds_total in protobuf");
    // Every reported cgroup with CPU files: the containers, the pod, the raw job, the service
    // and the root (not `/sonde-raw`, `/kubepods` and the slices, whose fake directories are
    // empty).
    assert_eq!(usage.get_metric().len(), 7, "one series per cgroup with CPU stats");
    let docker = usage
        .get_metric()
        .iter()
        .find(|m| m.get_label().iter().any(|l| l.name() == "id" && l.value() == DOCKER))
        .expect("the Docker container's series");
    let labels: Vec<&str> = docker.get_label().iter().map(|l| l.name()).collect();
    assert_eq!(labels, ["container", "cpu", "id", "image", "name", "namespace", "pod"]);
    assert!(docker.get_counter().value() >= 2.0);

    // Exactly the container, pod and raw cgroups, and those cAdvisor reports as the kubelet
    // runs it: the root, the kubepods hierarchy, system.slice and its services.
    let ids = label_values(&text, "container_last_seen", "id");
    let ids: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let k8s = k8s_container();
    let expected: BTreeSet<&str> = [
        DOCKER,
        SCOPE,
        POD,
        k8s.as_str(),
        "/sonde-raw",
        RAW,
        "/",
        "/kubepods",
        "/kubepods/burstable",
        "/system.slice",
        "/system.slice/sshd.service",
    ]
    .into();
    assert_eq!(ids, expected);

    // Every series of a family has the same label keys.
    for (family, key_sets) in label_keys(&text) {
        assert_eq!(key_sets.len(), 1, "{family} mixes label sets: {key_sets:?}");
    }

    let value =
        |name: &str, id: &str, extra: &[(&str, &str)]| sample_value(&text, &format!("{name}{}", series(id, extra)));
    // Seed 1: usage 2 s + 7 ns (v2 counts in µs), user 120 ticks, system 80 ticks, quota 50000/100000.
    let (usage_1, usage_2) = if version == "v2" {
        (2.0, 3.0)
    } else {
        (2.000000007, 3.000000007)
    };
    assert_eq!(
        value("container_cpu_usage_seconds_total", DOCKER, &[("cpu", "total")]),
        Some(usage_1)
    );
    assert_eq!(value("container_cpu_user_seconds_total", DOCKER, &[]), Some(1.2));
    assert_eq!(value("container_cpu_system_seconds_total", DOCKER, &[]), Some(0.8));
    assert_eq!(value("container_cpu_cfs_periods_total", DOCKER, &[]), Some(101.0));
    assert_eq!(
        value("container_cpu_cfs_throttled_periods_total", DOCKER, &[]),
        Some(11.0)
    );
    assert_eq!(value("container_spec_cpu_quota", DOCKER, &[]), Some(50_000.0));
    assert_eq!(value("container_spec_cpu_period", DOCKER, &[]), Some(100_000.0));
    // usage 64 MiB + 4096, inactive_file 8 MiB.
    assert_eq!(
        value("container_memory_usage_bytes", DOCKER, &[]),
        Some(((64 << 20) + 4096) as f64)
    );
    assert_eq!(
        value("container_memory_working_set_bytes", DOCKER, &[]),
        Some(((56 << 20) + 4096) as f64)
    );
    assert_eq!(value("container_memory_rss", DOCKER, &[]), Some((40 << 20) as f64));
    assert_eq!(value("container_memory_cache", DOCKER, &[]), Some((20 << 20) as f64));
    assert_eq!(
        value("container_memory_mapped_file", DOCKER, &[]),
        Some((4 << 20) as f64)
    );
    assert_eq!(value("container_oom_events_total", DOCKER, &[]), Some(1.0));
    assert_eq!(
        value("container_spec_memory_limit_bytes", DOCKER, &[]),
        Some(0.0),
        "unlimited is 0"
    );
    assert_eq!(
        value("container_fs_reads_bytes_total", DOCKER, &[("device", "/dev/sda")]),
        Some(4096.0)
    );
    assert_eq!(
        value("container_fs_writes_total", DOCKER, &[("device", "/dev/sda")]),
        Some(2.0)
    );
    // Bytes by operation, from the same files. Seed 1: read 4096, write 8192, discard 512;
    // v1's sync is the reads and a quarter of the writes. On v2 cAdvisor (runc's library)
    // maps only rbytes and wbytes, so only Read and Write.
    let usage: Vec<(String, f64)> = samples_with(&text, "container_blkio_device_usage_total", &[("id", DOCKER)])
        .iter()
        .map(|s| (s.series.to_owned(), s.value))
        .collect();
    let operations: &[(&str, f64)] = match version {
        "v2" => &[("Read", 4096.0), ("Write", 8192.0)],
        _ => &[
            ("Async", 6656.0),
            ("Discard", 512.0),
            ("Read", 4096.0),
            ("Sync", 6144.0),
            ("Total", 12_800.0),
            ("Write", 8192.0),
        ],
    };
    let expected: Vec<(String, f64)> = operations
        .iter()
        .map(|(operation, figure)| {
            let labels = [
                ("device", "/dev/sda"),
                ("major", "8"),
                ("minor", "0"),
                ("operation", *operation),
            ];
            (
                format!("container_blkio_device_usage_total{}", series(DOCKER, &labels)),
                *figure,
            )
        })
        .collect();
    assert_eq!(usage, expected);
    assert!(
        text.contains("# HELP container_blkio_device_usage_total Blkio Device bytes usage\n# TYPE container_blkio_device_usage_total counter\n"),
        "cAdvisor's help and type"
    );
    assert_eq!(value("container_processes", DOCKER, &[]), Some(1.0));
    assert_eq!(value("container_threads", DOCKER, &[]), Some(1.0));
    assert_eq!(
        value(
            "container_network_receive_bytes_total",
            DOCKER,
            &[("interface", "eth0")]
        ),
        Some(123_456.0)
    );
    assert_eq!(
        value(
            "container_network_transmit_packets_dropped_total",
            DOCKER,
            &[("interface", "eth0")]
        ),
        Some(4.0)
    );
    assert_eq!(
        value("container_network_receive_bytes_total", DOCKER, &[("interface", "lo")]),
        None
    );
    // Seed 2: no quota, so no CFS families; host network, so no network families.
    assert_eq!(value("container_cpu_cfs_periods_total", SCOPE, &[]), None);
    assert_eq!(value("container_spec_cpu_quota", SCOPE, &[]), None);
    assert_eq!(
        value("container_network_receive_bytes_total", SCOPE, &[("interface", "eth0")]),
        None
    );
    assert_eq!(
        value("container_cpu_usage_seconds_total", SCOPE, &[("cpu", "total")]),
        Some(usage_2)
    );
    // The families from files already read (memory.stat, memory.events, cpu.stat), and the
    // kmem counter (v1). Seed 1: active file 12 MiB + 4096, inactive 8 MiB; v2's reclaim
    // figures and events; bursts 8 and 2001 µs (seed 1 has a quota).
    assert_eq!(
        value("container_memory_total_active_file_bytes", DOCKER, &[]),
        Some(((12 << 20) + 4096) as f64)
    );
    assert_eq!(
        value("container_memory_total_inactive_file_bytes", DOCKER, &[]),
        Some((8 << 20) as f64)
    );
    let v2_only = |figure: f64| (version == "v2").then_some(figure);
    for (family, figure) in [
        ("container_memory_file_dirty_bytes", 12_288.0),
        ("container_memory_file_writeback_bytes", 4096.0),
        ("container_memory_pgscan_total", 501.0),
        ("container_memory_pgsteal_total", 401.0),
        ("container_memory_workingset_refault_anon_total", 31.0),
        ("container_memory_workingset_refault_file_total", 51.0),
        ("container_memory_events_high_total", 21.0),
        ("container_memory_events_max_total", 11.0),
    ] {
        assert_eq!(value(family, DOCKER, &[]), v2_only(figure), "{family}");
    }
    assert_eq!(
        value("container_memory_kernel_usage", DOCKER, &[]),
        (version == "v1").then_some(((3 << 20) + 4096) as f64)
    );
    assert_eq!(value("container_cpu_cfs_burst_periods_total", DOCKER, &[]), Some(8.0));
    assert_eq!(
        value("container_cpu_cfs_burst_seconds_total", DOCKER, &[]),
        Some(0.002001)
    );
    assert_eq!(value("container_cpu_cfs_burst_periods_total", SCOPE, &[]), None);
    // Creation time: the earliest modification time of the cgroup's directories (the fake
    // ones have no cgroup.events or cgroup.clone_children), in whole seconds.
    let top = dir.path().join("sys/fs/cgroup");
    let rel = DOCKER.trim_start_matches('/');
    let dirs: Vec<std::path::PathBuf> = match version {
        "v2" => vec![top.join(rel)],
        _ => ["cpu", "cpuacct", "memory", "blkio", "pids"]
            .iter()
            .map(|c| top.join(c).join(rel))
            .collect(),
    };
    let earliest = dirs
        .iter()
        .filter_map(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok())
        .min()
        .expect("times");
    let seconds = earliest
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert_eq!(
        value("container_creation_time_seconds", DOCKER, &[]),
        Some(seconds as f64)
    );
    assert_eq!(sample_value(&text, "container_scrape_error"), Some(0.0));

    // The root, by cAdvisor's formulas: usage is v2 memory.stat's anon + file (the v2 root
    // has no memory.current), or v1's root memory.usage_in_bytes; the working set takes
    // inactive file pages off; the limits are the machine's memory and swap (meminfo); swap
    // in use is the machine's on v2 (SwapTotal - SwapFree), total_swap on v1; the network is
    // init's (`/proc/1/net/dev`, the host's).
    assert_eq!(
        value("container_cpu_usage_seconds_total", "/", &[("cpu", "total")]),
        Some(7.000001)
    );
    assert_eq!(value("container_memory_usage_bytes", "/", &[]), Some(12_000_000.0));
    assert_eq!(value("container_memory_working_set_bytes", "/", &[]), Some(7_000_000.0));
    let swap = if version == "v2" { 97_148.0 * 1024.0 } else { 4096.0 };
    assert_eq!(value("container_memory_swap", "/", &[]), Some(swap));
    assert_eq!(
        value("container_spec_memory_limit_bytes", "/", &[]),
        Some(16_318_412.0 * 1024.0)
    );
    assert_eq!(
        value("container_spec_memory_swap_limit_bytes", "/", &[]),
        Some(2_097_148.0 * 1024.0)
    );
    assert_eq!(
        value("container_network_receive_bytes_total", "/", &[("interface", "eth0")]),
        Some(123_456.0)
    );
    assert_eq!(
        value("container_threads", "/", &[]),
        None,
        "no pids.current at the root"
    );

    // Seed 6 (the raw cgroup): a 512 MiB limit.
    assert_eq!(
        value("container_spec_memory_limit_bytes", RAW, &[]),
        Some((512 << 20) as f64)
    );

    if version == "v2" {
        assert_eq!(
            value("container_pressure_cpu_waiting_seconds_total", DOCKER, &[]),
            Some(1.500001)
        );
        assert_eq!(
            value("container_pressure_io_stalled_seconds_total", DOCKER, &[]),
            Some(0.500001)
        );
        assert_eq!(
            value(
                "container_memory_failures_total",
                DOCKER,
                &[("failure_type", "pgfault"), ("scope", "hierarchy")]
            ),
            Some(300.0)
        );
    } else {
        assert_eq!(value("container_pressure_cpu_waiting_seconds_total", DOCKER, &[]), None);
        assert_eq!(
            value(
                "container_memory_failures_total",
                DOCKER,
                &[("failure_type", "pgfault"), ("scope", "hierarchy")]
            ),
            Some(600.0)
        );
    }
    assert_eq!(collector_success(&text, "container"), Some(1.0));
    assert_eq!(
        sample_value(&text, "sonde_cgroup_read_errors_total{file=\"memory.stat\"}"),
        Some(0.0)
    );
    // cAdvisor's IOCost families: v2's cost.* keys (µs) where blk-iocost is on, none on v1.
    for (family, seconds) in [
        ("container_fs_io_cost_usage_seconds_total", 0.007),
        ("container_fs_io_cost_wait_seconds_total", 0.008),
        ("container_fs_io_cost_indebt_seconds_total", 0.000009),
        ("container_fs_io_cost_indelay_seconds_total", 0.00001),
    ] {
        let expected = (version == "v2").then_some(seconds);
        assert_eq!(value(family, DOCKER, &[("device", "/dev/sda")]), expected, "{family}");
    }
    check_root_filesystems(&text, dir.path());
}

/// The root cgroup's filesystems, as cAdvisor's raw handler fills them: each host filesystem
/// (sda once for its two mounts, the tmpfs by its mountpoint) with `statvfs`'s figures, and
/// sda's `/proc/diskstats` counters, times in milliseconds divided by 10^9 as cAdvisor does;
/// no other cgroup has any (no writable layer without Docker).
fn check_root_filesystems(text: &str, root: &Path) {
    let value = |name: &str, device: &str| sample_value(text, &format!("{name}{}", series("/", &[("device", device)])));
    for (device, dir) in [("/dev/sda", root.to_path_buf()), ("/run", root.join("run"))] {
        let c = statvfs(&dir);
        assert_eq!(value("container_fs_limit_bytes", device), Some(c.0 as f64), "{device}");
        assert_eq!(value("container_fs_inodes_total", device), Some(c.2 as f64), "{device}");
        // Free space and inodes move with everything else on the disk: between two reads.
        let usage = value("container_fs_usage_bytes", device).expect("usage");
        assert!(usage <= c.0 as f64, "{device}: usage {usage}");
        assert!(value("container_fs_inodes_free", device).is_some_and(|v| v <= c.2 as f64));
    }
    for (name, expected) in [
        ("container_fs_reads_total", 1001.0),
        ("container_fs_reads_merged_total", 1002.0),
        ("container_fs_sector_reads_total", 1003.0),
        ("container_fs_read_seconds_total", 1004.0 / 1e9),
        ("container_fs_writes_total", 1005.0),
        ("container_fs_writes_merged_total", 1006.0),
        ("container_fs_sector_writes_total", 1007.0),
        ("container_fs_write_seconds_total", 1008.0 / 1e9),
        ("container_fs_io_current", 3.0),
        ("container_fs_io_time_seconds_total", 1010.0 / 1e9),
        ("container_fs_io_time_weighted_seconds_total", 1011.0 / 1e9),
    ] {
        assert_eq!(value(name, "/dev/sda"), Some(expected), "{name}");
        // A tmpfs has no disk: zeros, as cAdvisor.
        assert_eq!(value(name, "/run"), Some(0.0), "{name} of the tmpfs");
    }
    let devices = label_values(text, "container_fs_limit_bytes", "device");
    assert_eq!(
        devices,
        ["/dev/sda", "/run"],
        "one series per filesystem, proc left out"
    );
    let ids = label_values(text, "container_fs_usage_bytes", "id");
    assert!(
        ids.iter().all(|id| id == "/"),
        "only the root has filesystems here: {ids:?}"
    );
}

#[tokio::test]
async fn cgroup_v1_host() {
    check_fake_host("v1").await;
}

#[tokio::test]
async fn cgroup_v2_host() {
    check_fake_host("v2").await;
}

#[tokio::test]
async fn the_host_namespace_falls_back_to_sondes_own_when_init_is_out_of_reach() {
    let dir = tempfile::tempdir().expect("tempdir");
    fake_host(dir.path(), "v1");
    let proc = dir.path().join("proc");
    std::fs::rename(proc.join("1"), proc.join("self")).expect("rename");
    let sysfs = format!("--path.sysfs={}", dir.path().join("sys").display());
    let procfs = format!("--path.procfs={}", proc.display());
    let sonde = Sonde::start(&[&sysfs, &procfs, "--no-collector.host", "--no-collector.connection"]);
    let text = scrape(&sonde);
    let rx = |id: &str| {
        sample_value(
            &text,
            &format!(
                "container_network_receive_bytes_total{}",
                series(id, &[("interface", "eth0")])
            ),
        )
    };
    assert_eq!(rx(DOCKER), Some(123_456.0), "own namespace: reported");
    assert_eq!(rx(SCOPE), None, "the host's namespace: not a container's network");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_scrapes_in_one_window_read_each_file_once() {
    const CONTAINERS: u64 = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fake_forest(
        dir.path(),
        "v1",
        CONTAINERS,
        &["--container.cache-validity=1s", "--container.inventory-validity=1h"],
    );
    let collector = Arc::new(ContainerCollector::new(&config.collectors, &Sources::default()));
    let collect_50 = || {
        let scrapes = (0..50).map(|_| {
            let collector = Arc::clone(&collector);
            tokio::spawn(async move {
                collector
                    .collect(ScrapeContext::with_timeout(Duration::from_secs(10)))
                    .await
                    .into_result()
            })
        });
        futures::future::join_all(scrapes)
    };
    let counters = collector.reader().expect("cgroups found").counters().clone();

    let first = collect_50().await;
    let reference = format!(
        "{:?}",
        first[0]
            .as_ref()
            .expect("task")
            .as_ref()
            .expect("collects")
            .iter()
            .find(|f| f.name() == "container_cpu_usage_seconds_total")
    );
    for result in &first {
        let families = result.as_ref().expect("task").as_ref().expect("collects");
        let cpu = families
            .iter()
            .find(|f| f.name() == "container_cpu_usage_seconds_total");
        assert_eq!(format!("{cpu:?}"), reference, "every scrape saw the same read");
    }
    // Stats files: one read each per container. Limits: read once, with the inventory.
    for file in [
        File::CpuacctUsage,
        File::CpuacctStat,
        File::MemoryUsage,
        File::MemoryStat,
        File::BlkioServiceBytes,
        File::PidsCurrent,
        File::CpuCfsQuota,
        File::MemoryLimit,
    ] {
        // And the root cgroup's (`id="/"`), whose fake directories are empty: each file is
        // tried once, except those read only after another was found.
        let root = u64::from(!matches!(file, File::CpuacctStat | File::MemoryStat));
        assert_eq!(counters.reads(file), CONTAINERS + root, "{}", file.name());
    }
    // cpu.stat only where a quota is set (odd seeds).
    assert_eq!(counters.reads(File::CpuStat), CONTAINERS / 2);

    // The next window reads the stats again, once; the inventory window has not ended.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    collect_50().await;
    assert_eq!(counters.reads(File::MemoryStat), 2 * CONTAINERS);
    assert_eq!(counters.reads(File::MemoryLimit), CONTAINERS + 1);
    assert!(File::ALL.iter().all(|f| counters.errors(*f) == 0));
}

/// One collection in the text format.
async fn collect_text(collector: &ContainerCollector) -> String {
    let families = collector
        .collect(ScrapeContext::with_timeout(Duration::from_secs(10)))
        .await
        .into_result()
        .expect("collects");
    let mut text = Vec::new();
    sonde::exposition::Format::Text
        .encode_shared(&families, &mut text)
        .expect("encodes");
    String::from_utf8(text).expect("utf-8")
}

/// Names containers as a runtime would: `web-<seed>`, image `nginx` or `pause`, and marks
/// one with the `sonde.io/exclude` label.
struct FakeRuntime;

impl sonde::identity::metadata::MetadataSource for FakeRuntime {
    fn describe(
        &self,
        cgroup: &sonde::identity::discovery::Discovered,
        metadata: &mut sonde::identity::metadata::Metadata,
    ) {
        let Some(id) = &cgroup.container_id else { return };
        let seed = u64::from_str_radix(&id[56..], 16).unwrap_or_default();
        metadata.name = format!("web-{seed}");
        metadata.image = if seed == 2 {
            "registry.k8s.io/pause:3.9".into()
        } else {
            "nginx:1.27".into()
        };
        metadata.exclude = seed == 3;
    }
}

#[tokio::test]
async fn metadata_names_containers_and_filters_drop_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fake_forest(
        dir.path(),
        "v2",
        5,
        &["--container.exclude-image=pause", "--container.exclude-name=^web-4$"],
    );
    let collector = ContainerCollector::new(
        &config.collectors,
        &Sources {
            metadata: vec![Arc::new(FakeRuntime)],
            ..Sources::default()
        },
    );
    let text = collect_text(&collector).await;
    let names = label_values(&text, "container_last_seen", "name");
    let names: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    // web-2 runs the pause image, web-3 carries sonde.io/exclude, web-4 is excluded by name;
    // the root cgroup has no name.
    assert_eq!(names, BTreeSet::from(["", "web-0", "web-1"]));
    let series = format!(
        "container_memory_rss{{container=\"\",id=\"/docker/{:064x}\",image=\"nginx:1.27\",name=\"web-1\",namespace=\"\",pod=\"\"}}",
        1
    );
    assert_eq!(sample_value(&text, &series), Some((40u64 << 20) as f64));
}

/// Names every container `gen-<generation>`; its generation moves as events would move it.
struct RenamingRuntime(std::sync::atomic::AtomicU64);

impl sonde::identity::metadata::MetadataSource for RenamingRuntime {
    fn describe(
        &self,
        _cgroup: &sonde::identity::discovery::Discovered,
        metadata: &mut sonde::identity::metadata::Metadata,
    ) {
        metadata.name = format!("gen-{}", self.generation());
    }

    fn generation(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_source_generation_change_rebuilds_the_inventory_inside_its_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Windows far longer than the test: only the generation can cause a rebuild.
    let config = fake_forest(
        dir.path(),
        "v2",
        1,
        &["--container.inventory-validity=1h", "--container.cache-validity=1h"],
    );
    let runtime = Arc::new(RenamingRuntime(std::sync::atomic::AtomicU64::new(0)));
    let collector = ContainerCollector::new(
        &config.collectors,
        &Sources {
            metadata: vec![runtime.clone()],
            ..Sources::default()
        },
    );
    let names = || async {
        let text = collect_text(&collector).await;
        label_values(&text, "container_last_seen", "name")
            .into_iter()
            .collect::<BTreeSet<String>>()
    };
    assert_eq!(names().await, BTreeSet::from(["gen-0".to_owned()]));
    assert_eq!(
        names().await,
        BTreeSet::from(["gen-0".to_owned()]),
        "no rebuild without a change"
    );
    runtime.0.store(7, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(names().await, BTreeSet::from(["gen-7".to_owned()]));
}

/// Gives container 0 an extra label whose value needs escaping and an unhealthy health
/// check; container 1 has neither.
struct LabellingRuntime;

const AWKWARD: &str = "a \"b\" \\ c\nd ü";

impl sonde::identity::metadata::MetadataSource for LabellingRuntime {
    fn describe(
        &self,
        cgroup: &sonde::identity::discovery::Discovered,
        metadata: &mut sonde::identity::metadata::Metadata,
    ) {
        let Some(id) = &cgroup.container_id else { return };
        let seed = u64::from_str_radix(&id[56..], 16).unwrap_or_default();
        metadata.name = format!("web-{seed}");
        if seed == 0 {
            metadata.extra_labels = vec![("container_label_team".into(), AWKWARD.into())];
            metadata.health = sonde::identity::metadata::Health::Unhealthy;
        }
    }
}

#[tokio::test]
async fn extra_labels_are_on_every_series_and_health_is_one_series_per_container() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fake_forest(dir.path(), "v2", 2, &[]);
    let collector = ContainerCollector::new(
        &config.collectors,
        &Sources {
            metadata: vec![Arc::new(LabellingRuntime)],
            ..Sources::default()
        },
    );
    let families = collector
        .collect(ScrapeContext::with_timeout(Duration::from_secs(10)))
        .await
        .into_result()
        .expect("collects");
    let mut text = Vec::new();
    sonde::exposition::Format::Text
        .encode_shared(&families, &mut text)
        .expect("encodes");
    let text = String::from_utf8(text).expect("utf-8");
    let labels = |seed: u64, team: &str| {
        format!(
            "container=\"\",container_label_team=\"{team}\",id=\"/docker/{seed:064x}\",image=\"\",name=\"web-{seed}\",namespace=\"\",pod=\"\""
        )
    };
    let escaped = "a \\\"b\\\" \\\\ c\\nd ü";
    assert_eq!(
        sample_value(&text, &format!("container_memory_rss{{{}}}", labels(0, escaped))),
        Some((40u64 << 20) as f64)
    );
    assert_eq!(
        sample_value(&text, &format!("container_memory_rss{{{}}}", labels(1, ""))),
        Some((40u64 << 20) as f64),
        "the container without the label carries it empty"
    );
    let health: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("container_health_state{"))
        .collect();
    // cAdvisor's values: 0 for unhealthy, -1 for a container without a health check.
    let expected = [
        "container_health_state{container=\"\",container_label_team=\"\",id=\"/\",image=\"\",name=\"\",namespace=\"\",pod=\"\"} -1".to_owned(),
        format!("container_health_state{{{}}} 0", labels(0, escaped)),
        format!("container_health_state{{{}}} -1", labels(1, "")),
    ];
    assert_eq!(health, expected);

    // Read back from the protobuf model, the value is the original text.
    let mut proto = Vec::new();
    sonde::exposition::Format::Protobuf
        .encode_shared(&families, &mut proto)
        .expect("encodes");
    let decoded = decode_protobuf(&proto);
    let rss = decoded
        .iter()
        .find(|f| f.name() == "container_memory_rss")
        .expect("the rss family");
    let teams: BTreeSet<String> = rss
        .get_metric()
        .iter()
        .flat_map(|m| m.get_label().iter())
        .filter(|l| l.name() == "container_label_team")
        .map(|l| l.value().to_owned())
        .collect();
    assert_eq!(teams, BTreeSet::from([String::new(), AWKWARD.to_owned()]));
}

/// Every container healthy at even generations, unhealthy at odd ones, as a runtime's health
/// events would move them.
struct HealthByGeneration(std::sync::atomic::AtomicU64);

impl sonde::identity::metadata::MetadataSource for HealthByGeneration {
    fn describe(
        &self,
        cgroup: &sonde::identity::discovery::Discovered,
        metadata: &mut sonde::identity::metadata::Metadata,
    ) {
        if cgroup.container_id.is_some() {
            metadata.health = match self.generation() % 2 {
                0 => sonde::identity::metadata::Health::Healthy,
                _ => sonde::identity::metadata::Health::Unhealthy,
            };
        }
    }

    fn generation(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The families of the inventory's own figures (limits, health, start and creation times)
/// are rendered once per inventory: a later stats read serves the very same families while
/// it renders the read ones anew, and a new inventory renders them again, with its values.
#[tokio::test]
async fn the_inventorys_own_families_are_rendered_once_per_inventory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fake_forest(
        dir.path(),
        "v1",
        2,
        &["--container.cache-validity=50ms", "--container.inventory-validity=1h"],
    );
    let runtime = Arc::new(HealthByGeneration(std::sync::atomic::AtomicU64::new(0)));
    let collector = ContainerCollector::new(
        &config.collectors,
        &Sources {
            metadata: vec![runtime.clone()],
            ..Sources::default()
        },
    );
    let collect = || async {
        collector
            .collect(ScrapeContext::with_timeout(Duration::from_secs(10)))
            .await
            .into_result()
            .expect("collects")
    };
    let family = |families: &[Arc<sonde::exposition::family::Family>], name: &str| {
        families
            .iter()
            .find(|f| f.name() == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let text = |families: &[Arc<sonde::exposition::family::Family>]| {
        let mut text = Vec::new();
        sonde::exposition::Format::Text
            .encode_shared(families, &mut text)
            .expect("encodes");
        String::from_utf8(text).expect("utf-8")
    };
    let inventory_families = [
        "container_health_state",
        "container_spec_cpu_shares",
        "container_spec_memory_limit_bytes",
        "container_start_time_seconds",
    ];

    let first = collect().await;
    tokio::time::sleep(Duration::from_millis(120)).await; // past the stats window
    let second = collect().await;
    assert!(
        !Arc::ptr_eq(
            &family(&first, "container_last_seen"),
            &family(&second, "container_last_seen")
        ),
        "a second stats read"
    );
    for name in inventory_families {
        assert!(
            Arc::ptr_eq(&family(&first, name), &family(&second, name)),
            "{name}: served again, not rendered again"
        );
    }
    // HELP and TYPE, and one series for each container and the root.
    assert_eq!(
        text(&[family(&second, "container_health_state")]).lines().count(),
        2 + 3
    );
    let healthy = |families: &[Arc<sonde::exposition::family::Family>]| {
        let text = text(&[family(families, "container_health_state")]);
        (0..2u64)
            .map(|seed| {
                let id = format!("/docker/{seed:064x}");
                sample_value(&text, &format!("container_health_state{}", series(&id, &[])))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(healthy(&second), [Some(1.0), Some(1.0)]);

    // A new generation: a new inventory, whose own families are rendered again.
    runtime.0.store(1, std::sync::atomic::Ordering::SeqCst);
    let third = collect().await;
    for name in inventory_families {
        assert!(
            !Arc::ptr_eq(&family(&second, name), &family(&third, name)),
            "{name}: rendered for the new inventory"
        );
    }
    assert_eq!(healthy(&third), [Some(0.0), Some(0.0)]);
}
