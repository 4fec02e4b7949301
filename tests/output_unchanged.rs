//! The whole output of the binary on one fixed fake host, compared with golden files made by
//! an earlier binary: a change that should change no output (a restructure) proves it here.
//!
//! The host: a cgroup v2 forest under a fake `--path.sysfs` with Docker containers in the
//! systemd layout (`system.slice/docker-<id>.scope`) and one in the cgroupfs layout, the
//! Kubelet's pods in both kubepods layouts, a raw cgroup under `--container.raw-cgroup-prefix`
//! and a system service that is not reported; a fake `--path.procfs` with network namespaces
//! and `net/dev`; a stand-in Docker engine on a Unix socket and a stand-in Kubelet over HTTPS,
//! both with fixed answers. The connection collector (eBPF, the kernel's live sockets) is off.
//!
//! Compared: `/metrics` in the Prometheus text format and in OpenMetrics, and `sonde --help`
//! (flags, defaults, environment variable names). Only values that move by themselves are
//! normalised; see [`normalise`] for each one and why.
//!
//! `SONDE_BLESS=1 cargo test --test output_unchanged` rewrites the golden files under
//! `tests/data/output_unchanged/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::cgroup_fixture::{FakeCgroup, write_v2};
use common::fake_docker::{FakeContainer, FakeDocker};
use common::kubelet::{PLAIN_DOCKER, TestKubelet, cid, forest, write_forest};
use common::*;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/output_unchanged");

/// The Docker containers in the systemd layout: (id byte, seed, pid).
const WEB: (u8, u64, u32) = (0x11, 21, 4242);
const WORKER: (u8, u64, u32) = (0x12, 22, 4343);
const EXCLUDED: (u8, u64, u32) = (0x13, 23, 4444);
/// A scope the engine does not list (it went away): reported without names.
const UNKNOWN: (u8, u64, u32) = (0x14, 24, 4545);

fn scope(id: u8) -> String {
    format!("/system.slice/docker-{}.scope", cid(id))
}

/// The fake host under `root`: cgroups, devices, CPUs, memory and processes.
fn fake_host(root: &Path) -> (PathBuf, PathBuf) {
    let sysfs = write_forest(root, &forest());
    for (id, seed, pid) in [WEB, WORKER, EXCLUDED, UNKNOWN] {
        let mut cgroup = FakeCgroup::seeded(scope(id), seed);
        cgroup.pids = vec![pid, pid + 1];
        write_v2(&sysfs, &cgroup).expect("write a Docker scope");
    }
    write_v2(&sysfs, &FakeCgroup::seeded("/sonde-raw/job", 30)).expect("write the raw cgroup");
    write_v2(&sysfs, &FakeCgroup::seeded("/system.slice/sshd.service", 31)).expect("write a service");

    let write = |path: PathBuf, text: &str| {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    write(
        sysfs.join("dev/block/8:0/uevent"),
        "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n",
    );
    write(sysfs.join("devices/system/cpu/online"), "0-3\n");

    let procfs = root.join("proc");
    write(
        procfs.join("meminfo"),
        "MemTotal:       16318412 kB\nMemFree:         8123456 kB\nMemAvailable:   12345678 kB\nSwapTotal:       2097148 kB\nSwapFree:        2000000 kB\n",
    );
    // WEB has a network namespace of its own, WORKER shares the host's (init's).
    for (pid, ns) in [
        (1, "net:[4026531840]"),
        (WEB.2, "net:[4026532999]"),
        (WORKER.2, "net:[4026531840]"),
    ] {
        let dir = procfs.join(pid.to_string());
        std::fs::create_dir_all(dir.join("ns")).expect("mkdir");
        std::os::unix::fs::symlink(ns, dir.join("ns/net")).expect("symlink");
        write(
            dir.join("net/dev"),
            "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:  123456     789    1    2    0     0          0         0    65432     321    3    4    0     0       0          0\n  veth1a2b:  9       9    0    0    0     0          0         0        9       9    0    0    0     0       0          0\n",
        );
    }

    // A container's start time is its cgroup directory's modification time: fixed here.
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let mut dirs = vec![sysfs.join("fs/cgroup")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("list a cgroup").flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
        std::fs::File::open(&dir)
            .and_then(|d| d.set_modified(start))
            .unwrap_or_else(|e| panic!("set the time of {}: {e}", dir.display()));
    }
    (sysfs, procfs)
}

fn engine_containers() -> Vec<FakeContainer> {
    vec![
        FakeContainer {
            id: cid(WEB.0),
            name: "web-frontend".into(),
            image: "registry.local/shop/frontend:1.4".into(),
            labels: vec![
                ("com.example.team", "payments"),
                ("com.example/owner", "say \"hi\" \\ ünï"),
                ("maintainer", "ops@example.com"),
            ],
            env: vec!["APP_MODE=fast", "APP_EMPTY=", "PATH=/usr/bin:/bin"],
            health: Some("healthy"),
        },
        FakeContainer {
            id: cid(WORKER.0),
            name: "queue-worker".into(),
            image: "registry.local/shop/worker@sha256:".to_owned() + &"ab".repeat(32),
            labels: vec![("com.example.team", "batch")],
            env: vec!["HOME=/root"],
            health: Some("starting"),
        },
        FakeContainer {
            id: cid(EXCLUDED.0),
            name: "excluded".into(),
            image: "registry.local/secret:1".into(),
            labels: vec![("sonde.io/exclude", "true"), ("com.example.team", "hidden")],
            env: vec![],
            health: None,
        },
        // The cgroupfs-layout container of the Kubelet's forest (`/docker/<id>`).
        FakeContainer {
            id: cid(PLAIN_DOCKER),
            name: "plain".into(),
            image: "busybox:1.36".into(),
            labels: vec![],
            env: vec![],
            health: Some("unhealthy"),
        },
    ]
}

/// `sonde` with nothing from this environment that it reads (`SONDE_*`, `DOCKER_HOST`).
fn sonde_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde"));
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("SONDE_") || text == "DOCKER_HOST" {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// What stands in for a value that moves by itself.
const MOVES: &str = "<moves>";

/// The families whose sample values move by themselves, and why. Each was seen to differ
/// between two runs of the same binary on this host (the cache and read counters also from
/// one scrape to the next). A name ending in `_` is a prefix. Their series (names and
/// labels) are still compared.
const MOVING: &[(&str, &str)] = &[
    (
        "process_",
        "this process's CPU time, memory, threads, open files and start time",
    ),
    ("container_last_seen", "the time of the read, by definition"),
    ("sonde_collector_duration_seconds", "how long each collector took"),
    (
        "sonde_kubelet_pod_list_age_seconds",
        "the time since the pod list was fetched",
    ),
    (
        "sonde_cache_requests_total",
        "one lookup per scrape, and the number of scrapes before the output settles is not \
         fixed; nor is whether the start-up collection ran before or after the Docker and \
         Kubelet answers (one inventory rebuild more or less)",
    ),
    (
        "sonde_cgroup_reads_total",
        "file reads: one per file per inventory rebuild and stats read, as above",
    ),
];

/// Labels whose values move by themselves: (family, label, why).
const MOVING_LABELS: &[(&str, &str, &str)] = &[
    (
        "sonde_build_info",
        "revision",
        "the git commit the binary was built from: another commit, another value",
    ),
    (
        "cadvisor_version_info",
        "cadvisorRevision",
        "the same git commit, in cAdvisor's family",
    ),
    (
        "cadvisor_version_info",
        "osVersion",
        "the OS sonde itself runs on (its own /etc/os-release, as cAdvisor reads it), not the fake host's",
    ),
];

/// The exposition with every value that moves by itself ([`MOVING`], [`MOVING_LABELS`])
/// replaced by [`MOVES`]; everything else, every container series and its value among it,
/// is kept to the byte.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with('#') {
            out.push_str(line);
        } else {
            out.push_str(&normalise_sample(line));
        }
        out.push('\n');
    }
    out
}

/// Whether sample `name` is `family` (or, for a prefix, starts with it).
fn of_family(name: &str, family: &str) -> bool {
    if family.ends_with('_') {
        name.starts_with(family)
    } else {
        name == family
    }
}

fn normalise_sample(line: &str) -> String {
    let Some((series, value)) = line.rsplit_once(' ') else {
        return line.to_owned();
    };
    let name = series.split('{').next().unwrap_or(series);
    let mut series = series.to_owned();
    for (family, label, _why) in MOVING_LABELS {
        if of_family(name, family) {
            series = replace_label(&series, label);
        }
    }
    let value = if MOVING.iter().any(|(family, _why)| of_family(name, family)) {
        MOVES
    } else {
        value
    };
    format!("{series} {value}")
}

/// `series` with the value of label `key` replaced by [`MOVES`].
fn replace_label(series: &str, key: &str) -> String {
    let needle = format!("{key}=\"");
    let Some(start) = series.find(&needle).map(|i| i + needle.len()) else {
        return series.to_owned();
    };
    let end = series[start..].find('"').map_or(series.len(), |i| start + i);
    format!("{}{MOVES}{}", &series[..start], &series[end..])
}

/// A line-based diff of `expected` and `actual`: the first differing lines, with context.
fn first_differences(expected: &str, actual: &str, limit: usize) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a_mid, b_mid) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    // Longest common subsequence of the differing middle, for a readable -/+ listing.
    let (n, m) = (a_mid.len(), b_mid.len());
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * (m + 1) + j] = if a_mid[i] == b_mid[j] {
                lcs[(i + 1) * (m + 1) + j + 1] + 1
            } else {
                lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
            };
        }
    }
    // The edit script: ' ' same, '-' only in the golden file, '+' only now.
    let mut ops: Vec<(char, &str)> = a[prefix.saturating_sub(3)..prefix].iter().map(|l| (' ', *l)).collect();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a_mid[i] == b_mid[j] {
            ops.push((' ', a_mid[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || lcs[(i + 1) * (m + 1) + j] >= lcs[i * (m + 1) + j + 1]) {
            ops.push(('-', a_mid[i]));
            i += 1;
        } else {
            ops.push(('+', b_mid[j]));
            j += 1;
        }
    }
    ops.extend(b[b.len() - suffix..].iter().take(3).map(|l| (' ', *l)));
    // Changed lines with three lines of context; longer runs of equal lines are elided.
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let near = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= 3);
    let mut out = format!("@@ from line {} of the golden file @@\n", prefix + 1);
    let (mut shown, mut elided) = (0, false);
    for (k, (op, line)) in ops.iter().enumerate() {
        if shown == limit {
            out.push_str("  ... (more differences)\n");
            break;
        }
        if *op == ' ' && !near(k) {
            if !elided {
                out.push_str("  ...\n");
                elided = true;
            }
            continue;
        }
        elided = false;
        if *op != ' ' {
            shown += 1;
        }
        out.push_str(&format!("{op} {line}\n"));
    }
    out
}

/// Compares `actual` with the golden file `name`, or rewrites it under `SONDE_BLESS=1`.
fn check_golden(name: &str, actual: &str) -> Result<(), String> {
    let path = Path::new(GOLDEN).join(name);
    if std::env::var("SONDE_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(GOLDEN).expect("mkdir the golden directory");
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return Ok(());
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {} (SONDE_BLESS=1 writes it): {e}", path.display()));
    if expected == actual {
        return Ok(());
    }
    Err(format!(
        "{name} differs from {} (- golden, + now):\n{}",
        path.display(),
        first_differences(&expected, actual, 40)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_help_are_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sysfs, procfs) = fake_host(dir.path());
    let docker = FakeDocker::start(&dir.path().join("docker.sock"), engine_containers());
    let kubelet = TestKubelet::start("token-1").await;

    let mut args = vec![
        format!("--path.sysfs={}", sysfs.display()),
        format!("--path.procfs={}", procfs.display()),
        format!("--path.rootfs={}", dir.path().display()),
        "--no-collector.connection".to_owned(),
        "--no-gateway".to_owned(),
        "--container.raw-cgroup-prefix=/sonde-raw".to_owned(),
        "--container.exclude-namespace=^ignored-ns$".to_owned(),
        format!("--docker.host={}", docker.host()),
        "--docker.label-allowlist=^com\\.example".to_owned(),
        "--docker.env-allowlist=^APP_".to_owned(),
        // Windows longer than any run: what is read and asked for does not depend on how
        // long the scrapes take (a new Docker or Kubelet answer still rebuilds at once).
        "--container.cache-validity=1h".to_owned(),
        "--container.inventory-validity=1h".to_owned(),
        "--kubelet.cache-validity=1h".to_owned(),
    ];
    args.extend(kubelet.flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sonde = Sonde::start_command(sonde_command(), &args);

    // Until the sources are connected and two scrapes in a row say the same.
    let mut last = String::new();
    let text = scrape_until(&sonde, "the sources connected and two equal scrapes in a row", |text| {
        let normalised = normalise(text);
        let connected =
            collector_success(text, "docker") == Some(1.0) && collector_success(text, "kubelet") == Some(1.0);
        let settled = connected && normalised == last;
        last = normalised;
        settled
    });
    let openmetrics = scrape_as(&sonde, OPENMETRICS_ACCEPT);

    let help = sonde_command().arg("--help").output().expect("run sonde --help");
    assert!(help.status.success(), "sonde --help: {help:?}");
    let help = String::from_utf8(help.stdout).expect("UTF-8 help");

    let mismatches: Vec<String> = [
        check_golden("metrics.txt", &normalise(&text)),
        check_golden("metrics.openmetrics.txt", &normalise(&openmetrics)),
        check_golden("help.txt", &help),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
