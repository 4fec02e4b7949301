//! Scrape cost of the container collector over a forest of 1,000 container cgroups written in
//! the real v1 formats on tmpfs, measured on the real `sonde` binary over HTTP: latency
//! p50/p99, sonde's CPU time per scrape and its peak RSS, in three rows:
//! - `rebuild`: both windows expire between scrapes: every scrape walks the hierarchy,
//!   rebuilds the inventory (limits, names) and rereads every stats file;
//! - `cold`: the stats cache is cold at every scrape (its window expires), the inventory
//!   inside its window: every scrape rereads what changes, the scrape the 2 s default
//!   window costs once per window;
//! - `warm`: inside the validity window, every scrape serves the last read.
//!
//! `+gz` rows ask for gzip, as Prometheus does. Latency runs from the request to the
//! response's last byte, read by a plain client (compressed, in the `+gz` rows: sonde's
//! part ends there); `bytes` is what crossed the wire.
//!
//! Run: `cargo bench --bench container`. `SONDE_BENCH_CONTAINERS` (default 1000) and
//! `SONDE_BENCH_SCRAPES` (default 200) change the size; `SONDE_BENCH_ROWS=cold,warm` runs
//! only the rows named.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/common/cgroup_fixture.rs"]
mod cgroup_fixture;

use cgroup_fixture::{FakeCgroup, write_v1};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A fake host: containers with a process each that owns a network namespace.
fn forest(root: &Path, containers: u64) -> std::io::Result<()> {
    let sysfs = root.join("sys");
    let proc = root.join("proc");
    let net_dev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:  123456     789    1    2    0     0          0         0    65432     321    3    4    0     0       0          0\n";
    for (pid, ns) in [(1u64, "net:[1]".to_owned())]
        .into_iter()
        .chain((0..containers).map(|seed| (100_000 + seed, format!("net:[{}]", 2 + seed))))
    {
        let dir = proc.join(pid.to_string());
        std::fs::create_dir_all(dir.join("ns"))?;
        std::fs::create_dir_all(dir.join("net"))?;
        std::os::unix::fs::symlink(ns, dir.join("ns/net"))?;
        std::fs::write(dir.join("net/dev"), net_dev)?;
    }
    for seed in 0..containers {
        let mut cgroup = FakeCgroup::seeded(format!("/docker/{seed:064x}"), seed);
        cgroup.pids = vec![100_000 + seed as u32];
        write_v1(&sysfs, &cgroup)?;
    }
    let block = sysfs.join("dev/block/8:0");
    std::fs::create_dir_all(&block)?;
    std::fs::write(block.join("uevent"), "MAJOR=8\nMINOR=0\nDEVNAME=sda\n")
}

struct Sonde {
    child: Child,
    port: u16,
}

impl Drop for Sonde {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(root: &Path, stats_window: &str, inventory_window: &str) -> Sonde {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--path.sysfs={}", root.join("sys").display()))
        .arg(format!("--path.procfs={}", root.join("proc").display()))
        .arg(format!("--container.cache-validity={stats_window}"))
        .arg(format!("--container.inventory-validity={inventory_window}"))
        .arg("--no-collector.connection") // its probes and tables are another benchmark's
        .arg("--log.level=error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start sonde");
    Sonde { child, port }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11..13)
        .map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// Times `scrapes` scrapes, each from the request to the body's last byte as sonde sends it,
/// with a plain blocking client (like curl: a fresh connection, read to the end, bytes
/// counted and not kept), so the figure is sonde's and the wire's, not an HTTP client
/// library's. With `gzip` it asks for gzip, as Prometheus does, and the time is the
/// compressed body's arrival (decompressing is the scraper's cost).
async fn measure(label: &str, sonde: &Sonde, scrapes: u64, containers: u64, gzip: bool) {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/metrics", sonde.port);
    let mut ready = false;
    for _ in 0..500 {
        if client.get(&url).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "sonde did not start");
    // One scrape decoded in full, to check that sonde reports every container.
    let probe = reqwest::Client::builder()
        .gzip(true)
        .build()
        .expect("client")
        .get(&url)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let reported = probe.lines().filter(|l| l.starts_with("container_last_seen{")).count() as u64;
    assert_eq!(reported, containers, "sonde reports every container");
    let cpu_before = cpu_seconds(sonde.child.id());
    let mut times = Vec::with_capacity(scrapes as usize);
    let mut bytes = 0;
    let mut buffer = vec![0u8; 256 * 1024];
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{}\r\n",
        if gzip { "Accept-Encoding: gzip\r\n" } else { "" }
    );
    for _ in 0..scrapes {
        let start = Instant::now();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", sonde.port)).expect("connect");
        stream.write_all(request.as_bytes()).expect("request");
        bytes = 0;
        let mut head = Vec::new();
        loop {
            match stream.read(&mut buffer).expect("response") {
                0 => break,
                n => {
                    if head.len() < 512 {
                        head.extend_from_slice(&buffer[..n.min(512)]);
                    }
                    bytes += n;
                }
            }
        }
        times.push(start.elapsed());
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(
            head.contains("content-encoding: gzip"),
            gzip,
            "Content-Encoding as asked"
        );
    }
    let cpu = (cpu_seconds(sonde.child.id()) - cpu_before) / scrapes as f64;
    times.sort_unstable();
    println!(
        "{label:<10} {containers:>10} {scrapes:>8} {:>9.2} {:>9.2} {:>9.2} {:>11.2} {:>10.1} {bytes:>11}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&times, 1.0),
        cpu * 1e3,
        peak_rss_mib(sonde.child.id()),
    );
}

/// The cost of one small-file read (open, read, close) here, the floor of a cold scrape.
fn floor(root: &Path) {
    let reader = sonde::cgroup::Reader::default();
    let tmpfs = root.join("sys/fs/cgroup/memory/docker").join(format!("{:064x}", 0));
    let real = Path::new("/sys/fs/cgroup/memory");
    for (label, dir, file) in [
        (
            "tmpfs memory.usage_in_bytes",
            tmpfs.as_path(),
            sonde::cgroup::File::MemoryUsage,
        ),
        ("tmpfs memory.stat", tmpfs.as_path(), sonde::cgroup::File::MemoryStat),
        ("cgroupfs memory.usage_in_bytes", real, sonde::cgroup::File::MemoryUsage),
        ("cgroupfs memory.stat", real, sonde::cgroup::File::MemoryStat),
    ] {
        if !dir.join(file.name()).exists() {
            continue;
        }
        let reads = 20_000;
        let start = Instant::now();
        for _ in 0..reads {
            reader.parse(dir, file, |t| Ok(t.len()));
        }
        println!(
            "floor: {label}: {:.2} µs per read",
            start.elapsed().as_secs_f64() * 1e6 / reads as f64
        );
    }
}

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let containers = env_number("SONDE_BENCH_CONTAINERS", if benchmarking { 1000 } else { 20 });
    let scrapes = env_number("SONDE_BENCH_SCRAPES", if benchmarking { 200 } else { 5 });
    let base = Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    forest(dir.path(), containers).expect("write the forest");
    println!(
        "container scrapes over {containers} v1 cgroups on tmpfs ({}), {scrapes} scrapes each",
        dir.path().display()
    );
    floor(dir.path());
    println!(
        "{:<10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>11} {:>10} {:>11}",
        "cache", "containers", "scrapes", "p50 ms", "p99 ms", "max ms", "CPU ms/scr", "peak MiB", "bytes"
    );
    let rows = std::env::var("SONDE_BENCH_ROWS").unwrap_or_else(|_| "rebuild,cold,warm".into());
    let row = |name: &str| rows.split(',').any(|r| r == name);
    if row("rebuild") {
        // A 1 ms window expires between scrapes: every scrape rebuilds and rereads everything.
        let rebuild = start(dir.path(), "1ms", "1ms");
        measure("rebuild", &rebuild, scrapes, containers, false).await;
        measure("rebuild+gz", &rebuild, scrapes, containers, true).await;
    }
    if row("cold") {
        // Stats reread on every scrape, the inventory (limits, names) inside its window.
        let cold = start(dir.path(), "1ms", "1h");
        measure("cold", &cold, scrapes, containers, false).await;
        measure("cold+gz", &cold, scrapes, containers, true).await;
    }
    if row("warm") {
        let warm = start(dir.path(), "1h", "1h");
        measure("warm", &warm, scrapes, containers, false).await;
        measure("warm+gz", &warm, scrapes, containers, true).await;
    }
}
