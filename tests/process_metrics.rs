//! `process_open_fds` by the directory's size and by listing it, against the descriptors this
//! process holds, and the other `process_*` families against the kernel's other files. One
//! test in its own binary: no other test opens files meanwhile.

use std::time::Duration;

use sonde::self_metrics::process::ProcessMetrics;

/// Open descriptors, counted by asking about each number below the table's size.
fn open_descriptors() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let size: i32 = status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("FDSize");
    // SAFETY: F_GETFD only asks whether a descriptor number is open.
    (0..size)
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
        .count() as u64
}

fn open_some(n: usize) -> Vec<std::fs::File> {
    (0..n)
        .map(|_| std::fs::File::open("/proc/self/stat").expect("open"))
        .collect()
}

fn value(families: &[prometheus::proto::MetricFamily], name: &str) -> f64 {
    let family = families.iter().find(|f| f.name() == name).expect(name);
    let metric = &family.get_metric()[0];
    if name.ends_with("_total") {
        metric.get_counter().value()
    } else {
        metric.get_gauge().value()
    }
}

fn reported(metrics: &ProcessMetrics) -> f64 {
    value(&metrics.collect(), "process_open_fds")
}

/// A `Key:  value` line of a `/proc/self` file, its first number.
fn proc_field(file: &str, key: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/self/{file}")).expect(file);
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {file}"))
}

#[test]
fn open_descriptors_by_size_and_by_listing() {
    let first = open_some(40);
    let listing = ProcessMetrics::with_listing_window(Duration::ZERO);
    let truth = open_descriptors();
    assert!(truth >= 43, "stdin, stdout, stderr and the 40 opened: {truth}");
    assert_eq!(listing.listed_fds().expect("listing"), truth, "by listing");
    assert_eq!(listing.open_fds().expect("open fds"), truth, "by size (or listing)");
    assert_eq!(reported(&listing), truth as f64, "process_open_fds");
    let has_size = std::fs::metadata("/proc/self/fd").expect("fd dir").len() > 0;

    // A listing is reported for its window, then made again; a size is read each time.
    let windowed = ProcessMetrics::with_listing_window(Duration::from_secs(3600));
    assert_eq!(windowed.listed_fds().expect("listing"), truth);
    let more = open_some(25);
    assert_eq!(windowed.listed_fds().expect("listing"), truth, "within the window");
    assert_eq!(listing.listed_fds().expect("listing"), truth + 25, "a window of zero");
    let expected_now = if has_size { truth + 25 } else { truth };
    assert_eq!(windowed.open_fds().expect("open fds"), expected_now, "open_fds");
    drop((first, more));
    assert_eq!(listing.listed_fds().expect("listing"), truth - 40);
    assert_eq!(open_descriptors(), truth - 40);

    the_other_families_agree_with_the_kernels_other_files();
}

fn the_other_families_agree_with_the_kernels_other_files() {
    let families = ProcessMetrics::new().collect();
    let threads = std::fs::read_dir("/proc/self/task").expect("task").count() as f64;
    assert_eq!(value(&families, "process_threads"), threads);
    assert_eq!(
        value(&families, "process_max_fds"),
        proc_field("limits", "Max open files")
    );
    assert_eq!(
        value(&families, "process_virtual_memory_bytes"),
        proc_field("status", "VmSize:") * 1024.0
    );
    let rss = value(&families, "process_resident_memory_bytes");
    let status_rss = proc_field("status", "VmRSS:") * 1024.0;
    assert!(
        (rss - status_rss).abs() <= status_rss / 10.0,
        "{rss} against VmRSS {status_rss}"
    );
    // This test binary started moments ago, and has not yet used a minute of CPU.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let started = value(&families, "process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "started {started}, now {now}"
    );
    let cpu = value(&families, "process_cpu_seconds_total");
    assert!((0.0..60.0).contains(&cpu), "{cpu}");
}
