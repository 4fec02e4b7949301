//! Files that are not what a cgroup file should be, among one container's files: a FIFO (a
//! plain open waits for a writer for ever), an endless file (`/dev/zero`, behind a symlink)
//! and a 10 MB file. The real binary reads a cgroup tree written under `--path.sysfs`: a real
//! cgroupfs lets no one make a FIFO or a symlink in a cgroup directory, and a bind mount over
//! a kernel file would need a private mount namespace for one test, while sonde's open and
//! read path is the same for both trees (the same `openat`, `fstat` and `read` calls, which
//! is what is tested here). Needs no root.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::cgroup_fixture::{FakeCgroup, write_v1, write_v2};
use common::*;

/// The containers: the second gets a FIFO, an endless file and a 10 MB file; the fourth a
/// 10 MB `memory.stat`, the fifth an endless one (the cases the issue measured); the first
/// and third are left alone.
fn ids() -> Vec<String> {
    (1..=5u64).map(|seed| format!("/docker/{seed:064x}")).collect()
}

fn write_tree(sysfs: &Path, version: &str) {
    for (seed, id) in (1..).zip(ids()) {
        let cgroup = FakeCgroup::seeded(id, seed);
        match version {
            "v2" => write_v2(sysfs, &cgroup),
            _ => write_v1(sysfs, &cgroup),
        }
        .expect("write the fake cgroup");
    }
}

/// Puts a FIFO, a symlink to `/dev/zero` and a 10 MB file in place of three of the bad
/// container's files, each read whatever the others hold (memory.stat is read only once
/// the usage file has been, so the endless file stands in for the process count instead);
/// returns their names.
fn break_files(sysfs: &Path, version: &str) -> [String; 3] {
    let id = &ids()[1];
    let (fifo, endless, large) = match version {
        "v2" => ("memory.current", "pids.current", "io.stat"),
        _ => (
            "memory/memory.usage_in_bytes",
            "pids/pids.current",
            "blkio/blkio.throttle.io_service_bytes_recursive",
        ),
    };
    let at = |file: &str| -> std::path::PathBuf {
        match file.split_once('/') {
            Some((controller, name)) => sysfs
                .join("fs/cgroup")
                .join(controller)
                .join(id.trim_start_matches('/'))
                .join(name),
            None => sysfs.join("fs/cgroup").join(id.trim_start_matches('/')).join(file),
        }
    };
    let fifo_path = at(fifo);
    std::fs::remove_file(&fifo_path).expect("rm");
    let name = std::ffi::CString::new(fifo_path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
    let endless_path = at(endless);
    std::fs::remove_file(&endless_path).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", &endless_path).expect("symlink");
    // Ten megabytes of lines in the file's own format.
    let large_path = at(large);
    let line = match version {
        "v2" => "8:0 rbytes=1 wbytes=1 rios=1 wios=1 dbytes=0 dios=0\n",
        _ => "8:0 Read 1\n",
    };
    std::fs::write(&large_path, line.repeat(10_000_000 / line.len())).expect("write");
    // The fourth and fifth containers' memory.stat: 10 MB of its own lines, and /dev/zero.
    let memory_stat = |id: &str| match version {
        "v2" => sysfs
            .join("fs/cgroup")
            .join(id.trim_start_matches('/'))
            .join("memory.stat"),
        _ => sysfs
            .join("fs/cgroup/memory")
            .join(id.trim_start_matches('/'))
            .join("memory.stat"),
    };
    let ids = ids();
    std::fs::write(memory_stat(&ids[3]), "cache 1\n".repeat(10_000_000 / 8)).expect("write");
    std::fs::remove_file(memory_stat(&ids[4])).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", memory_stat(&ids[4])).expect("symlink");
    [fifo, endless, large].map(str::to_owned)
}

/// Every container series (name and labels) and its value, by container id; the time each
/// container was last seen changes with every read and is left out.
fn by_container(text: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for sample in parse_samples(text) {
        if sample.name == "container_last_seen" {
            continue;
        }
        if let Some((_, id)) = sample.labels.iter().find(|(k, _)| k == "id") {
            out.entry(id.clone())
                .or_default()
                .insert(sample.series.to_owned(), sample.value);
        }
    }
    out
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn start(dir: &Path) -> Sonde {
    let sysfs = format!("--path.sysfs={}", dir.join("sys").display());
    let procfs = format!("--path.procfs={}", dir.join("proc").display());
    Sonde::start(&[
        &sysfs,
        &procfs,
        "--no-collector.host",
        "--no-collector.connection",
        "--no-docker",
        // Every scrape reads every file again.
        "--container.cache-validity=1ms",
    ])
}

fn families(series: &BTreeMap<String, f64>) -> BTreeSet<String> {
    series
        .keys()
        .map(|s| s.split_once('{').map_or(s.as_str(), |(name, _)| name).to_owned())
        .collect()
}

fn check(version: &str, lost_families: &[&str], memory_families: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("proc")).expect("mkdir");
    let sysfs = dir.path().join("sys");
    write_tree(&sysfs, version);
    let before = {
        let sonde = start(dir.path());
        by_container(&scrape(&sonde))
    };
    let ids = ids();
    for id in &ids {
        assert!(before.contains_key(id), "{id} reported on the intact tree");
    }

    let broken = break_files(&sysfs, version);
    let mut sonde = start(dir.path());
    let timeout = Duration::from_secs(10);
    let mut text = String::new();
    for _ in 0..5 {
        let started = Instant::now();
        text = scrape(&sonde);
        let took = started.elapsed();
        assert!(
            took < timeout,
            "a scrape took {took:?}, not within its {timeout:?} deadline"
        );
    }
    assert!(
        text.contains("sonde_collector_success{collector=\"container\"} 1"),
        "the container collector succeeds:\n{}",
        text.lines()
            .filter(|l| l.contains("collector_success"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let after = by_container(&text);
    // The other containers keep every series, with the same values.
    for id in [&ids[0], &ids[2]] {
        assert_eq!(after.get(id), before.get(id), "{id} unchanged");
    }
    // The bad one loses exactly the families its broken files feed, and keeps the rest.
    // The fourth and fifth lose their memory families, as the second does.
    for (bad, expected) in [
        (&ids[1], lost_families),
        (&ids[3], memory_families),
        (&ids[4], memory_families),
    ] {
        let lost: Vec<String> = families(&before[bad])
            .difference(&families(&after[bad]))
            .cloned()
            .collect();
        assert_eq!(lost, expected, "{version}: families lost by {bad}");
        for (series, value) in &after[bad] {
            // Its start time is its directory's time, which replacing the files moved; so is
            // its creation time on v2, where the fixture has no `cgroup.events` to date it by
            // (a run that replaced them across a second's boundary saw it move by 1 s).
            let moved = series.starts_with("container_start_time_seconds")
                || (version == "v2" && series.starts_with("container_creation_time_seconds"));
            if !moved {
                assert_eq!(before[bad].get(series), Some(value), "{series} kept as it was");
            }
        }
    }
    // Each broken file is counted as a failed read (memory.stat twice a scrape).
    let memory_stat_errors = parse_samples(&text)
        .into_iter()
        .find(|s| {
            s.name == "sonde_cgroup_read_errors_total"
                && s.labels.iter().any(|(k, v)| k == "file" && v == "memory.stat")
        })
        .map(|s| s.value);
    assert!(
        memory_stat_errors.is_some_and(|n| n >= 10.0),
        "memory.stat: read errors {memory_stat_errors:?}"
    );
    for file in &broken {
        let name = file.rsplit('/').next().unwrap_or(file);
        let errors = parse_samples(&text)
            .into_iter()
            .find(|s| {
                s.name == "sonde_cgroup_read_errors_total" && s.labels.iter().any(|(k, v)| k == "file" && v == name)
            })
            .map(|s| s.value);
        assert!(errors.is_some_and(|n| n >= 5.0), "{name}: read errors {errors:?}");
    }
    let hwm_mib = vm_hwm_kib(sonde.child.id()) / 1024;
    eprintln!("{version}: peak RSS (VmHWM) after 5 scrapes with the broken files: {hwm_mib} MiB");
    assert!(hwm_mib < 100, "peak RSS {hwm_mib} MiB");

    // SIGTERM with a scrape under way: every read ends at once, so the process exits.
    let scraper = {
        let addr = sonde.addr;
        std::thread::spawn(move || {
            for _ in 0..20 {
                if fetch(&addr, TEXT_ACCEPT).is_err() {
                    break;
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = sonde.terminate();
    let took = started.elapsed();
    eprintln!("{version}: exited {status} {took:?} after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    scraper.join().expect("scraper");
}

/// The block I/O families come from the 10 MB file, the process count from the endless one. A container's memory figures are read
/// as one group (usage, working set and the rest are worked out together from the usage
/// file and memory.stat, and the v2 events and swap are read only with them), so the FIFO
/// and the endless memory.stat take every `container_memory_*` family of that container;
/// its CPU, processes, pressure, limits and the rest stay.
const IO_AND_PIDS: &[&str] = &[
    "container_blkio_device_usage_total",
    "container_fs_reads_bytes_total",
    "container_fs_reads_total",
    "container_fs_writes_bytes_total",
    "container_fs_writes_total",
    "container_threads",
];

#[test]
fn broken_files_of_one_container_cost_only_its_own_figures_v2() {
    let memory = [
        "container_memory_cache",
        "container_memory_events_high_total",
        "container_memory_events_max_total",
        "container_memory_failcnt",
        "container_memory_failures_total",
        "container_memory_file_dirty_bytes",
        "container_memory_file_writeback_bytes",
        "container_memory_mapped_file",
        "container_memory_max_usage_bytes",
        "container_memory_pgscan_total",
        "container_memory_pgsteal_total",
        "container_memory_rss",
        "container_memory_swap",
        "container_memory_total_active_file_bytes",
        "container_memory_total_inactive_file_bytes",
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
        "container_memory_workingset_refault_anon_total",
        "container_memory_workingset_refault_file_total",
        "container_oom_events_total",
    ];
    check("v2", &lost(&memory), &memory);
}

#[test]
fn broken_files_of_one_container_cost_only_its_own_figures_v1() {
    let memory = [
        "container_memory_cache",
        "container_memory_failcnt",
        "container_memory_failures_total",
        "container_memory_kernel_usage",
        "container_memory_mapped_file",
        "container_memory_max_usage_bytes",
        "container_memory_rss",
        "container_memory_swap",
        "container_memory_total_active_file_bytes",
        "container_memory_total_inactive_file_bytes",
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
    ];
    check("v1", &lost(&memory), &memory);
}

fn lost<'a>(memory: &[&'a str]) -> Vec<&'a str> {
    let mut all: Vec<&str> = IO_AND_PIDS.iter().chain(memory).copied().collect();
    all.sort_unstable();
    all
}

/// A stand-in engine whose container list is 200 MB (one endless name): what bollard would
/// read whole into memory before decoding.
fn start_huge_engine(socket: &Path) {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let reply = |body: &str| {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.47\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                if path.ends_with("/_ping") {
                    let _ = stream.write_all(reply("OK").as_bytes());
                } else if path.ends_with("/version") {
                    let body = r#"{"Version":"27.5.1","ApiVersion":"1.47","MinAPIVersion":"1.24","Os":"linux"}"#;
                    let _ = stream.write_all(reply(body).as_bytes());
                } else if path.contains("/containers/json") {
                    let size: usize = 200_000_000;
                    let (open, close) = (r#"[{"Id":""#, r#""}]"#);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.47\r\nContent-Length: {}\r\n\r\n{open}",
                        size + open.len() + close.len()
                    );
                    if stream.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let chunk = vec![b'a'; 1 << 16];
                    for _ in 0..size / chunk.len() {
                        if stream.write_all(&chunk).is_err() {
                            return; // sonde hung up
                        }
                    }
                    let _ = stream.write_all(&chunk[..size % chunk.len()]);
                    let _ = stream.write_all(close.as_bytes());
                } else {
                    let _ = stream.write_all(b"HTTP/1.1 404 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            });
        }
    });
}

/// A 200 MB answer from the engine fails the `docker` collector alone, past the 16 MiB cap,
/// and costs no more memory than that.
#[test]
fn a_huge_docker_answer_is_cut_at_the_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("proc")).expect("mkdir");
    write_tree(&dir.path().join("sys"), "v2");
    let socket = dir.path().join("docker.sock");
    start_huge_engine(&socket);
    let sysfs = format!("--path.sysfs={}", dir.path().join("sys").display());
    let procfs = format!("--path.procfs={}", dir.path().join("proc").display());
    let host = format!("--docker.host=unix://{}", socket.display());
    let sonde = Sonde::start(&[
        &sysfs,
        &procfs,
        &host,
        "--no-collector.host",
        "--no-collector.connection",
    ]);
    let text = scrape(&sonde);
    let line = sonde.wait_for_log(&["collector failed", "collector=docker"]);
    assert!(line.contains("larger than 16777216 bytes"), "{line}");
    assert!(
        text.contains("sonde_collector_success{collector=\"docker\"} 0"),
        "docker fails"
    );
    assert!(
        text.contains("sonde_collector_success{collector=\"container\"} 1"),
        "containers stay"
    );
    // A few more attempts (the watcher reconnects with backoff).
    std::thread::sleep(Duration::from_secs(3));
    let hwm_mib = vm_hwm_kib(sonde.child.id()) / 1024;
    eprintln!("peak RSS (VmHWM) after 200 MB Docker answers: {hwm_mib} MiB");
    assert!(hwm_mib < 100, "peak RSS {hwm_mib} MiB");
}
