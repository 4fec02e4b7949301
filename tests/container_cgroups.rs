//! The container collector against real cgroups of this machine's kernel (v1 controllers on
//! hybrid hosts, the unified tree on v2 hosts): CPU, memory, throttling and block I/O of
//! real processes.
//! Needs root; cgroups get unique names and are removed even when the test fails.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::*;
use sonde::cgroup::Layout;

/// A process that reports `ready`, waits for a line, does its work, reports, and waits for
/// another line before exiting.
const WORKER: &str = r#"
import resource, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
print("ready", flush=True)
sys.stdin.readline()
start = cpu()
if sys.argv[1] == "burn":
    t0 = time.monotonic()
    while time.monotonic() - t0 < float(sys.argv[2]):
        pass
    print(f"{cpu() - start:.6f}", flush=True)
elif sys.argv[1] == "file":
    # Page cache charged to this cgroup: write a file, then read it twice (active pages).
    size = int(sys.argv[2])
    with open(sys.argv[3], "wb") as f:
        f.write(b"x" * size)
    for _ in range(2):
        with open(sys.argv[3], "rb") as f:
            f.read()
    print("touched", flush=True)
elif sys.argv[1] == "direct":
    # Block I/O charged to this cgroup: O_DIRECT bypasses the page cache, whose writeback
    # the kernel may charge elsewhere. An anonymous map is the aligned buffer it needs.
    import mmap, os
    size = int(sys.argv[2])
    buf = mmap.mmap(-1, size)
    buf.write(b"x" * size)
    fd = os.open(sys.argv[3], os.O_RDWR | os.O_CREAT | os.O_DIRECT)
    os.write(fd, buf)
    os.fsync(fd)
    os.lseek(fd, 0, os.SEEK_SET)
    os.readv(fd, [buf])
    os.close(fd)
    print("touched", flush=True)
else:
    size = int(sys.argv[2])
    buf = bytearray(size)
    for i in range(0, size, 4096):
        buf[i] = 1
    print("touched", flush=True)
sys.stdin.readline()
"#;

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn start(args: &[&str]) -> Worker {
        let mut child = Command::new(require_tool("python3"))
            .args(["-c", WORKER])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut worker = Worker { child, stdin, stdout };
        assert_eq!(worker.line(), "ready");
        worker
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("worker output");
        line.trim().to_owned()
    }

    fn go(&mut self) {
        writeln!(self.stdin, "go").expect("worker stdin");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Test cgroups under one unique parent in every hierarchy; removed on drop, workers first.
struct Cgroups {
    layout: Layout,
    parent: String,
    created: Vec<PathBuf>,
    workers: Vec<Worker>,
}

impl Cgroups {
    /// No cgroup of its own yet: the caller makes them (`make`, `make_if_missing`).
    fn empty(layout: Layout) -> Cgroups {
        Cgroups {
            layout,
            parent: String::new(),
            created: Vec::new(),
            workers: Vec::new(),
        }
    }

    fn new(layout: Layout, parent: String) -> Cgroups {
        let mut cgroups = Cgroups {
            layout,
            parent,
            created: Vec::new(),
            workers: Vec::new(),
        };
        let parent = cgroups.parent.clone();
        cgroups.make(&parent);
        if let Layout::V2 { root } = &cgroups.layout {
            // Children of the test parent need the controllers delegated to them.
            write(&root.join("cgroup.subtree_control"), "+cpu +memory +pids");
            write(
                &root.join(parent.trim_start_matches('/')).join("cgroup.subtree_control"),
                "+cpu +memory +pids",
            );
        }
        cgroups
    }

    fn dirs(&self, id: &str) -> Vec<PathBuf> {
        let rel = id.trim_start_matches('/');
        match &self.layout {
            Layout::V2 { root } => vec![root.join(rel)],
            Layout::V1 { roots, .. } => [&roots.cpu, &roots.cpuacct, &roots.memory, &roots.pids, &roots.blkio]
                .into_iter()
                .flatten()
                .map(|r| r.join(rel))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        }
    }

    /// Makes `id` in the hierarchies where it is missing (a shared parent such as
    /// `/system.slice`); only what this made is removed.
    fn make_if_missing(&mut self, id: &str) {
        for dir in self.dirs(id) {
            if !dir.is_dir() {
                std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.created.push(dir);
            }
        }
    }

    fn make(&mut self, id: &str) {
        for dir in self.dirs(id) {
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            self.created.push(dir);
        }
    }

    fn set_quota(&self, id: &str, quota_us: u64, period_us: u64) {
        match &self.layout {
            Layout::V2 { root } => write(
                &root.join(id.trim_start_matches('/')).join("cpu.max"),
                &format!("{quota_us} {period_us}"),
            ),
            Layout::V1 { roots, .. } => {
                let dir = roots
                    .cpu
                    .as_ref()
                    .expect("cpu controller")
                    .join(id.trim_start_matches('/'));
                write(&dir.join("cpu.cfs_period_us"), &period_us.to_string());
                write(&dir.join("cpu.cfs_quota_us"), &quota_us.to_string());
            }
        }
    }

    fn adopt(&mut self, id: &str, worker: Worker) {
        for dir in self.dirs(id) {
            write(&dir.join("cgroup.procs"), &worker.child.id().to_string());
        }
        self.workers.push(worker);
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.workers.clear(); // kill and reap before the cgroups can be removed
        for dir in self.created.iter().rev() {
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {text:?} to {}: {e}", path.display()));
}

fn value(text: &str, family: &str, id: &str, extra: &str) -> Option<f64> {
    let series = format!("{family}{{container=\"\",{extra}id=\"{id}\",image=\"\",name=\"\",namespace=\"\",pod=\"\"}}");
    sample_value(text, &series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cgroups_report_cpu_memory_and_throttling() {
    if !root_or_skip("real_cgroups_report_cpu_memory_and_throttling") {
        return;
    }
    const HELD: u64 = 64 << 20;
    let layout = Layout::detect(Path::new("/sys")).expect("this machine has cgroups");
    let parent = format!("/{}", unique_name("sonde-test"));
    let mut cgroups = Cgroups::new(layout, parent.clone());
    let (burner, holder, throttled) = (
        format!("{parent}/burner"),
        format!("{parent}/holder"),
        format!("{parent}/throttled"),
    );
    for id in [&burner, &holder, &throttled] {
        cgroups.make(id);
    }
    cgroups.set_quota(&throttled, 10_000, 100_000);
    cgroups.adopt(&burner, Worker::start(&["burn", "1.5"]));
    cgroups.adopt(&holder, Worker::start(&["touch", &HELD.to_string()]));
    cgroups.adopt(&throttled, Worker::start(&["burn", "1.0"]));

    let prefix = format!("--container.raw-cgroup-prefix={parent}");
    let sonde = Sonde::start(&[
        &prefix,
        "--container.cache-validity=100ms",
        "--container.inventory-validity=100ms",
        "--no-collector.host",
    ]);
    let before = scrape(&sonde);
    let usage_before = value(&before, "container_cpu_usage_seconds_total", &burner, "cpu=\"total\",")
        .unwrap_or_else(|| panic!("no CPU usage for {burner}:\n{before}"));

    for worker in &mut cgroups.workers {
        worker.go();
    }
    let reported_cpu: f64 = cgroups.workers[0].line().parse().expect("burner reports its CPU time");
    assert_eq!(cgroups.workers[1].line(), "touched");
    cgroups.workers[2].line();
    tokio::time::sleep(Duration::from_millis(300)).await; // past both validity windows

    let after = scrape(&sonde);
    let usage_after = value(&after, "container_cpu_usage_seconds_total", &burner, "cpu=\"total\",").expect("usage");
    let grew = usage_after - usage_before;
    println!("burner: cgroup CPU grew {grew:.4}s, the process reports {reported_cpu:.4}s");
    assert!(
        (grew - reported_cpu).abs() <= 0.05 * reported_cpu,
        "cgroup CPU grew {grew}s, the process reports {reported_cpu}s"
    );

    let working_set = value(&after, "container_memory_working_set_bytes", &holder, "").expect("working set");
    println!("holder: working set {working_set} bytes for {HELD} bytes touched");
    assert!(
        (working_set - HELD as f64).abs() <= 0.10 * HELD as f64,
        "working set {working_set} vs {HELD} touched"
    );

    let throttled_periods =
        value(&after, "container_cpu_cfs_throttled_periods_total", &throttled, "").expect("CFS families");
    assert!(throttled_periods > 0.0, "a 10% quota burner was never throttled");
    assert_eq!(
        value(&after, "container_spec_cpu_quota", &throttled, ""),
        Some(10_000.0)
    );
    assert_eq!(
        value(&after, "container_cpu_cfs_periods_total", &burner, ""),
        None,
        "no quota, no CFS families"
    );
    assert_eq!(collector_success(&after, "container"), Some(1.0));
}

#[test]
fn kept_open_files_follow_a_real_cgroup_and_see_it_go() {
    if !root_or_skip("kept_open_files_follow_a_real_cgroup_and_see_it_go") {
        return;
    }
    use sonde::cgroup::{Gone, KeptFiles, Reader};
    let layout = Layout::detect(Path::new("/sys")).expect("this machine has cgroups");
    let parent = format!("/{}", unique_name("sonde-kept"));
    let mut cgroups = Cgroups::new(layout.clone(), parent.clone());
    let id = format!("{parent}/worker");
    cgroups.make(&id);
    let paths = layout.paths(&id);
    let reader = Reader::default();
    let kept = KeptFiles::default();
    let spec = paths.read_spec(&reader).expect("present");

    let empty = paths.read_stats_kept(&reader, Some(&kept), &spec).expect("present");
    assert_eq!(empty.processes, Some(0));
    assert_eq!(
        empty,
        paths.read_stats(&reader, &spec).expect("present"),
        "kept and fresh reads agree"
    );

    // The same open files see what changed since: a process, and the memory it touched.
    let mut worker = Worker::start(&["touch", &(16u64 << 20).to_string()]);
    for dir in cgroups.dirs(&id) {
        write(&dir.join("cgroup.procs"), &worker.child.id().to_string());
    }
    worker.go();
    assert_eq!(worker.line(), "touched");
    let busy = paths.read_stats_kept(&reader, Some(&kept), &spec).expect("present");
    assert_eq!(busy.processes, Some(1));
    let usage = busy.memory.expect("memory").usage;
    assert!(usage >= 16 << 20, "memory usage {usage} after touching 16 MiB");
    assert_eq!(
        busy.processes,
        paths.read_stats(&reader, &spec).expect("present").processes
    );

    // Removed while its files are open: the kept files read as gone, not as failures.
    drop(worker);
    let dirs = cgroups.dirs(&id);
    for dir in &dirs {
        for _ in 0..100 {
            if std::fs::remove_dir(dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!dir.exists(), "{} removed with its files open", dir.display());
    }
    assert_eq!(paths.read_stats_kept(&reader, Some(&kept), &spec), Err(Gone));
    assert!(
        sonde::cgroup::File::ALL
            .iter()
            .all(|f| reader.counters().errors(*f) == 0),
        "no read counted as an error"
    );
}

/// The collector reads a few containers, then renders them: over more containers than one
/// batch holds (and not a whole number of batches), each keeps its own figures, and one
/// removed inside the inventory's window, mid-batch or last, is gone from every family at
/// the next read, its limits' included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_read_in_batches_keep_their_own_figures_and_removed_ones_leave_every_family() {
    if !root_or_skip("containers_read_in_batches_keep_their_own_figures_and_removed_ones_leave_every_family") {
        return;
    }
    let layout = Layout::detect(Path::new("/sys")).expect("this machine has cgroups");
    let parent = format!("/{}", unique_name("sonde-batch"));
    let mut cgroups = Cgroups::new(layout, parent.clone());
    let ids: Vec<String> = (0..21).map(|i| format!("{parent}/c{i:02}")).collect();
    let quota = |i: usize| 10_000 + 1_000 * i as u64;
    for (i, id) in ids.iter().enumerate() {
        cgroups.make(id);
        cgroups.set_quota(id, quota(i), 100_000);
    }
    let prefix = format!("--container.raw-cgroup-prefix={parent}");
    let sonde = Sonde::start(&[
        &prefix,
        "--container.cache-validity=100ms",
        "--container.inventory-validity=1h",
        "--no-collector.host",
    ]);
    let check = |text: &str, present: &[usize]| {
        for (i, id) in ids.iter().enumerate() {
            let reported = text.lines().any(|l| l.contains(&format!("id=\"{id}\"")));
            if present.contains(&i) {
                assert_eq!(
                    value(text, "container_spec_cpu_quota", id, ""),
                    Some(quota(i) as f64),
                    "{id}"
                );
                assert_eq!(value(text, "container_processes", id, ""), Some(0.0), "{id}");
                assert_eq!(
                    value(text, "container_memory_usage_bytes", id, ""),
                    Some(0.0),
                    "{id}: an empty cgroup"
                );
            } else {
                assert!(!reported, "{id} was removed, yet has series:\n{text}");
            }
        }
        assert_eq!(collector_success(text, "container"), Some(1.0));
    };
    let all: Vec<usize> = (0..ids.len()).collect();
    check(&scrape(&sonde), &all);

    // Removed while the inventory still lists them (its window is an hour): the next read
    // finds them gone.
    let removed = [5, 20];
    for i in removed {
        for dir in cgroups.dirs(&ids[i]) {
            std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // past the stats window
    let left: Vec<usize> = all.iter().copied().filter(|i| !removed.contains(i)).collect();
    check(&scrape(&sonde), &left);
}

/// A restarted container's cgroup is removed and made again under the same path: the
/// inventory hands a cgroup's open files on from one window to the next, and must not hand
/// on those of the removed directory, which would read as gone for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgroup_made_again_under_the_same_path_is_read_afresh() {
    if !root_or_skip("a_cgroup_made_again_under_the_same_path_is_read_afresh") {
        return;
    }
    const FIRST: u64 = 16 << 20;
    const SECOND: u64 = 64 << 20;
    let layout = Layout::detect(Path::new("/sys")).expect("this machine has cgroups");
    let parent = format!("/{}", unique_name("sonde-remade"));
    let mut cgroups = Cgroups::new(layout, parent.clone());
    let id = format!("{parent}/app");
    cgroups.make(&id);
    let mut worker = Worker::start(&["touch", &FIRST.to_string()]);
    worker.go();
    assert_eq!(worker.line(), "touched");
    cgroups.adopt(&id, worker);

    let prefix = format!("--container.raw-cgroup-prefix={parent}");
    let sonde = Sonde::start(&[
        &prefix,
        "--container.cache-validity=50ms",
        "--container.inventory-validity=200ms",
        "--no-collector.host",
    ]);
    // Two inventories, so the second has taken the first's open files over.
    let mut first = String::new();
    for _ in 0..2 {
        first = scrape(&sonde);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(value(&first, "container_processes", &id, ""), Some(1.0), "{first}");

    cgroups.workers.clear();
    for dir in cgroups.dirs(&id) {
        for _ in 0..100 {
            if std::fs::remove_dir(&dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!dir.exists(), "{} removed", dir.display());
    }
    cgroups.make(&id);
    // Moved in before touching its memory, so the new cgroup is charged for all of it.
    let mut worker = Worker::start(&["touch", &SECOND.to_string()]);
    for dir in cgroups.dirs(&id) {
        write(&dir.join("cgroup.procs"), &worker.child.id().to_string());
    }
    worker.go();
    assert_eq!(worker.line(), "touched");
    cgroups.workers.push(worker);
    tokio::time::sleep(Duration::from_millis(300)).await; // past both windows

    let after = scrape(&sonde);
    assert_eq!(
        value(&after, "container_processes", &id, ""),
        Some(1.0),
        "the remade cgroup is reported:\n{after}"
    );
    let usage = value(&after, "container_memory_usage_bytes", &id, "").expect("memory usage");
    assert!(
        usage >= SECOND as f64,
        "memory usage {usage} of the remade cgroup, whose process touched {SECOND} bytes"
    );
}

/// `(user + nice + system + irq + softirq) / USER_HZ` of `/proc/stat`'s `cpu` line: the CPU
/// time the kernel charges to the root cgroup (v2's root `cpu.stat` is made of exactly these;
/// v1's root `cpuacct.usage` counts the same time from the scheduler).
fn host_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat.lines().next().expect("cpu line");
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().expect("a number"))
        .collect();
    (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / 100.0
}

/// The host's working set from `/proc/meminfo`, as the root cgroup's is made: file pages
/// (`Buffers` + `Cached` + `SwapCached`) plus anonymous pages (`AnonPages`), less inactive
/// file pages. That is v1's root `memory.usage_in_bytes`, and runc's (cAdvisor's) v2 root
/// usage, anon + file of the root's `memory.stat`, less `inactive_file`.
fn host_working_set() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let kib = |key: &str| -> f64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/meminfo"))
            * 1024.0
    };
    kib("AnonPages") + kib("Buffers") + kib("Cached") + kib("SwapCached") - kib("Inactive(file)")
}

/// The root cgroup (`id="/"`) and a system service (`/system.slice/<unique>.service`) are
/// reported as cAdvisor reports them, with `id` only; the root's CPU and working set agree
/// with the host's own figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_and_system_cgroups_are_reported() {
    if !root_or_skip("the_root_and_system_cgroups_are_reported") {
        return;
    }
    let layout = Layout::detect(Path::new("/sys")).expect("this machine has cgroups");
    let mut cgroups = Cgroups::empty(layout.clone());
    cgroups.make_if_missing("/system.slice");
    let service = format!("/system.slice/{}.service", unique_name("sonde-test"));
    cgroups.make(&service);
    cgroups.adopt(&service, Worker::start(&["touch", "0"]));

    let sonde = Sonde::start(&[
        "--container.cache-validity=100ms",
        "--container.inventory-validity=100ms",
        "--no-collector.host",
    ]);
    let text = scrape(&sonde);
    let cpu_before = host_cpu_seconds();
    let text_cpu = scrape(&sonde);
    let cpu_after = host_cpu_seconds();
    let working_set_host = host_working_set();

    let cpu = value(&text_cpu, "container_cpu_usage_seconds_total", "/", "cpu=\"total\",")
        .unwrap_or_else(|| panic!("no CPU for id=\"/\":\n{text}"));
    println!("root CPU: sonde {cpu:.2}s, /proc/stat {cpu_before:.2}..{cpu_after:.2}s");
    assert!(
        (cpu - cpu_before).abs() <= 0.05 * cpu_before,
        "root CPU {cpu}s against the host's {cpu_before}s"
    );
    let working_set = value(&text_cpu, "container_memory_working_set_bytes", "/", "").expect("root working set");
    println!("root working set: sonde {working_set}, /proc/meminfo {working_set_host}");
    assert!(
        (working_set - working_set_host).abs() <= 0.05 * working_set_host,
        "root working set {working_set} against the host's {working_set_host}"
    );
    // As cAdvisor: the root's memory limit is the machine's memory.
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .expect("meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .expect("MemTotal")
        * 1024.0;
    assert_eq!(
        value(&text_cpu, "container_spec_memory_limit_bytes", "/", ""),
        Some(mem_total)
    );

    // The service: its one process, and the kubelet's label set (id only).
    assert_eq!(
        value(&text, "container_processes", &service, ""),
        Some(1.0),
        "{service} not reported:\n{text}"
    );
    assert!(
        value(&text, "container_memory_usage_bytes", "/system.slice", "").is_some(),
        "/system.slice itself is reported"
    );
    assert_eq!(collector_success(&text, "container"), Some(1.0));
}

/// A `key value` of a flat-keyed cgroup file, `None` when the kernel does not write it.
fn kernel_value(path: &Path, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

/// The families cAdvisor takes from memory.stat, memory.events, cpu.stat and the kmem
/// counter, and the creation time, equal to what the kernel's files say of real, idle
/// cgroups (read right after the scrape: nothing moves in a cgroup whose processes wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_families_equal_the_kernels_files() {
    if !root_or_skip("new_families_equal_the_kernels_files") {
        return;
    }
    let layout = Layout::detect(Path::new("/sys")).expect("this machine has cgroups");
    let parent = format!("/{}", unique_name("sonde-families"));
    let mut cgroups = Cgroups::new(layout.clone(), parent.clone());
    let (cache, throttled) = (format!("{parent}/cache"), format!("{parent}/throttled"));
    cgroups.make(&cache);
    cgroups.make(&throttled);
    cgroups.set_quota(&throttled, 10_000, 100_000);
    // CFS burst where the kernel has it (5.14): a quota's unused time may be spent later.
    let burst = match &layout {
        Layout::V2 { root } => root.join(throttled.trim_start_matches('/')).join("cpu.max.burst"),
        Layout::V1 { roots, .. } => roots
            .cpu
            .as_ref()
            .expect("cpu controller")
            .join(throttled.trim_start_matches('/'))
            .join("cpu.cfs_burst_us"),
    };
    if burst.exists() {
        write(&burst, "5000");
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let file = scratch.path().join("cached");
    let file_arg = file.display().to_string();
    cgroups.adopt(&cache, Worker::start(&["file", &(8u64 << 20).to_string(), &file_arg]));
    cgroups.adopt(&throttled, Worker::start(&["burn", "0.5"]));
    for worker in &mut cgroups.workers {
        worker.go();
    }
    assert_eq!(cgroups.workers[0].line(), "touched");
    cgroups.workers[1].line();

    let prefix = format!("--container.raw-cgroup-prefix={parent}");
    let sonde = Sonde::start(&[&prefix, "--no-collector.host"]);
    let text = scrape(&sonde);
    let v = |family: &str, id: &str| value(&text, family, id, "");
    let (memory_dir, cpu_dir) = match &layout {
        Layout::V2 { root } => (root.clone(), root.clone()),
        Layout::V1 { roots, .. } => (
            roots.memory.clone().expect("memory controller"),
            roots.cpu.clone().expect("cpu controller"),
        ),
    };
    let memory_stat = memory_dir.join(cache.trim_start_matches('/')).join("memory.stat");
    let cpu_stat = cpu_dir.join(throttled.trim_start_matches('/')).join("cpu.stat");
    let v2 = matches!(layout, Layout::V2 { .. });
    let (active, inactive) = if v2 {
        ("active_file", "inactive_file")
    } else {
        ("total_active_file", "total_inactive_file")
    };
    let active_file = kernel_value(&memory_stat, active).expect("active file");
    println!("cache cgroup: {active} {active_file}");
    assert!(active_file > 0.0, "the worker's file pages are charged to its cgroup");
    assert_eq!(v("container_memory_total_active_file_bytes", &cache), Some(active_file));
    assert_eq!(
        v("container_memory_total_inactive_file_bytes", &cache),
        kernel_value(&memory_stat, inactive)
    );
    if v2 {
        for (family, key) in [
            ("container_memory_file_dirty_bytes", "file_dirty"),
            ("container_memory_file_writeback_bytes", "file_writeback"),
            ("container_memory_pgscan_total", "pgscan"),
            ("container_memory_pgsteal_total", "pgsteal"),
            (
                "container_memory_workingset_refault_anon_total",
                "workingset_refault_anon",
            ),
            (
                "container_memory_workingset_refault_file_total",
                "workingset_refault_file",
            ),
        ] {
            assert_eq!(v(family, &cache), kernel_value(&memory_stat, key), "{family}");
        }
        let events = memory_dir.join(cache.trim_start_matches('/')).join("memory.events");
        assert_eq!(
            v("container_memory_events_high_total", &cache),
            kernel_value(&events, "high")
        );
        assert_eq!(
            v("container_memory_events_max_total", &cache),
            kernel_value(&events, "max")
        );
        assert_eq!(
            v("container_memory_kernel_usage", &cache),
            None,
            "none on v2, as runc reads it"
        );
    } else {
        // cAdvisor reads these from v2 files only; sonde leaves them out on v1.
        assert_eq!(v("container_memory_file_dirty_bytes", &cache), None);
        assert_eq!(v("container_memory_events_max_total", &cache), None);
        let kmem = memory_dir
            .join(cache.trim_start_matches('/'))
            .join("memory.kmem.usage_in_bytes");
        if let Ok(text) = std::fs::read_to_string(&kmem) {
            let kmem: f64 = text.trim().parse().expect("a number");
            assert_eq!(v("container_memory_kernel_usage", &cache), Some(kmem));
        }
    }
    // CFS bursts, only with a quota (as the other CFS families).
    let (bursts_key, burst_time_key, unit) = if v2 {
        ("nr_bursts", "burst_usec", 1e6)
    } else {
        ("nr_bursts", "burst_time", 1e9)
    };
    if let Some(bursts) = kernel_value(&cpu_stat, bursts_key) {
        println!("throttled cgroup: {bursts} bursts");
        assert_eq!(v("container_cpu_cfs_burst_periods_total", &throttled), Some(bursts));
        let burst_time = kernel_value(&cpu_stat, burst_time_key).expect("burst time");
        assert_eq!(
            v("container_cpu_cfs_burst_seconds_total", &throttled),
            Some(burst_time / unit)
        );
    }
    assert_eq!(v("container_cpu_cfs_burst_periods_total", &cache), None, "no quota");

    // Creation time as cAdvisor takes it: the earliest modification time of the cgroup's
    // directories and of the file the kernel writes at creation, in whole seconds.
    let marker = if v2 { "cgroup.events" } else { "cgroup.clone_children" };
    let earliest = cgroups
        .dirs(&cache)
        .iter()
        .flat_map(|d| [d.clone(), d.join(marker)])
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .min()
        .expect("times");
    let seconds = earliest
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as f64;
    assert_eq!(v("container_creation_time_seconds", &cache), Some(seconds));
    assert_eq!(sample_value(&text, "container_scrape_error"), Some(0.0));
}

/// `container_blkio_device_usage_total` of a real cgroup that did direct I/O equals the
/// kernel's file line for line: v1's bytes file (every operation), v2's `io.stat` rbytes and
/// wbytes (Read, Write: all runc's library, cAdvisor's, maps). Some kernels account no
/// direct I/O in v1's throttle files; then the file and the family are both empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blkio_device_usage_equals_the_kernels_file() {
    if !root_or_skip("blkio_device_usage_equals_the_kernels_file") {
        return;
    }
    let layout = Layout::detect(Path::new("/sys")).expect("this machine has cgroups");
    let parent = format!("/{}", unique_name("sonde-blkio"));
    let mut cgroups = Cgroups::new(layout.clone(), parent.clone());
    let v2 = matches!(layout, Layout::V2 { .. });
    if let Layout::V2 { root } = &layout {
        // The io controller, for io.stat in the test's cgroup.
        for dir in [root.clone(), root.join(parent.trim_start_matches('/'))] {
            write(&dir.join("cgroup.subtree_control"), "+io");
        }
    }
    let disk = format!("{parent}/disk");
    cgroups.make(&disk);
    // On a block device (not a tmpfs /tmp), so the I/O reaches one.
    let scratch = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let file = scratch.path().join("direct").display().to_string();
    let mut throttled_disk = None;
    if let Layout::V1 { roots, .. } = &layout {
        // Linux 6.x counts v1's throttle statistics only on a disk with a throttle rule: a
        // limit no test reaches (1 TiB/s). A partition or mapped device may refuse it.
        let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(scratch.path()).expect("stat"));
        let number = format!("{}:{}", libc::major(dev), libc::minor(dev));
        let rule = roots
            .blkio
            .as_ref()
            .expect("blkio controller")
            .join(disk.trim_start_matches('/'))
            .join("blkio.throttle.write_bps_device");
        match std::fs::write(&rule, format!("{number} 1099511627776")) {
            Ok(()) => throttled_disk = Some(number),
            Err(e) => println!("no throttle rule on {number} ({e}): the kernel may count nothing"),
        }
    }
    cgroups.adopt(&disk, Worker::start(&["direct", &(1u64 << 20).to_string(), &file]));
    cgroups.workers[0].go();
    assert_eq!(cgroups.workers[0].line(), "touched");

    let prefix = format!("--container.raw-cgroup-prefix={parent}");
    let sonde = Sonde::start(&[&prefix, "--no-collector.host"]);
    let text = scrape(&sonde);
    type Series = (String, String, String, String);
    let reported: std::collections::BTreeMap<Series, f64> =
        samples_with(&text, "container_blkio_device_usage_total", &[("id", &disk)])
            .iter()
            .map(|s| {
                let label = |key| s.label(key).unwrap_or_default().to_owned();
                let series = (label("device"), label("major"), label("minor"), label("operation"));
                (series, s.value)
            })
            .collect();

    // The kernel's file, read after the scrape: the worker is idle, nothing moves.
    let dir = match &layout {
        Layout::V2 { root } => root.clone(),
        Layout::V1 { roots, .. } => roots.blkio.clone().expect("blkio controller"),
    }
    .join(disk.trim_start_matches('/'));
    let kernel_file = if v2 {
        "io.stat"
    } else {
        "blkio.throttle.io_service_bytes_recursive"
    };
    let kernel_text = std::fs::read_to_string(dir.join(kernel_file)).expect("the kernel's file");
    let mut expected: std::collections::BTreeMap<Series, f64> = std::collections::BTreeMap::new();
    for line in kernel_text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some((major, minor)) = fields.first().and_then(|f| f.split_once(':')) else {
            continue; // v1's closing `Total` line
        };
        let mut add = |operation: &str, value: &str| {
            let series = (device_name(fields[0]), major.into(), minor.into(), operation.into());
            expected.insert(series, value.parse().expect("a number"));
        };
        if v2 {
            for (key, value) in fields[1..].iter().filter_map(|f| f.split_once('=')) {
                match key {
                    "rbytes" => add("Read", value),
                    "wbytes" => add("Write", value),
                    _ => {}
                }
            }
        } else if let [_, operation, value] = fields.as_slice() {
            add(operation, value);
        }
    }
    println!("{kernel_file} of the direct-I/O cgroup:\n{kernel_text}");
    // Equal but empty would prove nothing.
    assert!(
        !expected.is_empty(),
        "the kernel counted none of the worker's direct I/O: nothing to compare"
    );
    assert_eq!(reported, expected);
    if let Some(number) = throttled_disk {
        // With the rule the kernel counts the worker's direct read of 1 MiB on that disk.
        let (major, minor) = number.split_once(':').expect("major:minor");
        let series = (device_name(&number), major.into(), minor.into(), "Read".into());
        let read = reported.get(&series);
        assert!(
            read.is_some_and(|r| *r >= (1u64 << 20) as f64),
            "Read on {number}: {read:?}"
        );
    }
    assert_eq!(collector_success(&text, "container"), Some(1.0));
}

/// `/dev/<name>` of a block device number, as sonde names it; the number when sysfs has none.
fn device_name(number: &str) -> String {
    std::fs::read_to_string(format!("/sys/dev/block/{number}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_else(|| number.to_owned())
}

/// The root cgroup's filesystems on this machine, as cAdvisor's raw handler reports them:
/// the filesystem of `/` under its mount source, its size and inodes from `statvfs`, and its
/// disk's counters between two reads of `/proc/diskstats` around the scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roots_filesystems_equal_statvfs_and_diskstats() {
    use std::os::unix::fs::MetadataExt;
    if !root_or_skip("the_roots_filesystems_equal_statvfs_and_diskstats") {
        return;
    }
    let sonde = Sonde::start(&[
        "--container.cache-validity=100ms",
        "--no-collector.host",
        "--no-collector.connection",
    ]);
    let root_dev = std::fs::metadata("/").expect("stat /").dev();
    let disk = || std::fs::read_to_string("/proc/diskstats").expect("read /proc/diskstats");
    let before = disk();
    std::thread::sleep(Duration::from_millis(150));
    let text = scrape(&sonde);
    let after = disk();
    let samples = parse_samples(&text);
    let of_root = |family: &str| -> Vec<(String, f64)> {
        samples
            .iter()
            .filter(|s| s.name == family && s.label("id") == Some("/"))
            .map(|s| (s.label("device").unwrap_or_default().to_owned(), s.value))
            .collect()
    };
    // The filesystem of `/`: the series whose device node is the root's device.
    let device = of_root("container_fs_limit_bytes")
        .into_iter()
        .map(|(d, _)| d)
        .find(|d| std::fs::metadata(d).is_ok_and(|m| m.rdev() == root_dev))
        .unwrap_or_else(|| panic!("no root filesystem series for device {root_dev:x}:\n{text}"));
    let value = |family: &str| {
        of_root(family)
            .into_iter()
            .find(|(d, _)| *d == device)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("{family}{{device={device}}} of the root"))
    };
    let (size, _, inodes, _) = statvfs(Path::new("/"));
    println!("root filesystem {device}: {size} bytes, {inodes} inodes");
    assert_eq!(value("container_fs_limit_bytes"), size as f64);
    assert_eq!(value("container_fs_inodes_total"), inodes as f64);
    let name = device.trim_start_matches("/dev/");
    let column = |text: &str, i: usize| -> f64 {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(2) == Some(&name))
            .map_or(0.0, |f| f[3 + i].parse().expect("a number"))
    };
    for (family, i, scale) in [
        ("container_fs_reads_merged_total", 1, 1.0),
        ("container_fs_sector_reads_total", 2, 1.0),
        ("container_fs_read_seconds_total", 3, 1e9),
        ("container_fs_writes_merged_total", 5, 1.0),
        ("container_fs_sector_writes_total", 6, 1.0),
        ("container_fs_write_seconds_total", 7, 1e9),
        ("container_fs_io_time_seconds_total", 9, 1e9),
        ("container_fs_io_time_weighted_seconds_total", 10, 1e9),
    ] {
        let v = (value(family) * scale).round();
        let (low, high) = (column(&before, i), column(&after, i));
        assert!(
            low <= v && v <= high,
            "{family}: {v} not within /proc/diskstats' {low}..{high}"
        );
    }
}

/// A process killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A cgroup directory removed when dropped (after its processes, dropped first).
struct CgroupDir(PathBuf);

impl Drop for CgroupDir {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A kept `net/dev` of a namespace with more interfaces than one read of the seq_file
/// hands out (a page): every interface is read, as a fresh read of the whole file gives.
#[test]
fn a_kept_net_dev_of_many_interfaces_reads_them_all() {
    if !root_or_skip("a_kept_net_dev_of_many_interfaces_reads_them_all") {
        return;
    }
    use sonde::cgroup::{File, KeptFiles, Reader, parse};
    let mut namespaces = netns::Namespaces(Vec::new());
    let ns = namespaces.add(unique_name("sonde-ifs"));
    let pairs: String = (0..40)
        .map(|i| format!("link add sa{i} type veth peer name sb{i}\n"))
        .collect();
    netns::batch(&ns, &pairs);
    let sleeper = Reaped(
        Command::new(require_tool("ip"))
            .args(["netns", "exec", &ns, "sleep", "60"])
            .spawn()
            .expect("start a process in the namespace"),
    );
    let dir = PathBuf::from(format!("/proc/{}", sleeper.0.id()));
    // `ip netns exec` enters the namespace, then becomes sleep (the same process).
    for _ in 0..250 {
        if std::fs::read_to_string(dir.join("net/dev")).is_ok_and(|t| t.contains("sa39:")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let whole = std::fs::read_to_string(dir.join("net/dev")).expect("net/dev");
    let names = |interfaces: Vec<parse::Interface>| interfaces.into_iter().map(|i| i.name).collect::<Vec<_>>();
    let expected = names(parse::net_dev(&whole).expect("parses"));
    assert_eq!(expected.len(), 81, "lo and 40 veth pairs: {expected:?}");
    assert!(whole.len() > 8192, "more than a page: {} bytes", whole.len());
    let reader = Reader::default();
    let kept = KeptFiles::default();
    for read in ["first, opened", "again, kept"] {
        let interfaces = reader
            .parse_kept(Some(&kept), &dir, File::NetDev, parse::net_dev)
            .expect("net/dev");
        assert_eq!(names(interfaces), expected, "{read}");
    }
    drop(sleeper);
    drop(namespaces);
}

/// On cgroup v2 `cgroup.procs` is kept open: a read from its start lists the cgroup's
/// processes as they are now (on v1 a kept one would list them as at its first read).
#[test]
fn a_kept_cgroup_procs_on_cgroup2_lists_the_processes_of_now() {
    if !root_or_skip("a_kept_cgroup_procs_on_cgroup2_lists_the_processes_of_now") {
        return;
    }
    use sonde::cgroup::{File, KeptFiles, Reader, parse};
    let unified = match Layout::detect(Path::new("/sys")).expect("this machine has cgroups") {
        Layout::V2 { root } => root,
        Layout::V1 {
            unified: Some(unified), ..
        } => unified,
        Layout::V1 { unified: None, .. } => {
            panic!("no cgroup2 hierarchy mounted (neither v2 nor the unified tree of a hybrid host)")
        }
    };
    let dir = CgroupDir(unified.join(unique_name("sonde-procs")));
    std::fs::create_dir(&dir.0).expect("make a cgroup");
    let reader = Reader::default();
    let kept = KeptFiles::default();
    let procs = || reader.parse_kept(Some(&kept), &dir.0, File::CgroupProcs, parse::procs);
    assert_eq!(procs(), Some((0, None)));
    let sleeper = Reaped(Command::new("sleep").arg("60").spawn().expect("start sleep"));
    write(&dir.0.join("cgroup.procs"), &sleeper.0.id().to_string());
    assert_eq!(procs(), Some((1, Some(sleeper.0.id()))));
    drop(sleeper);
    assert_eq!(procs(), Some((0, None)));
    assert_eq!(reader.counters().errors(File::CgroupProcs), 0);
}
