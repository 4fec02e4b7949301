//! `process_open_fds` by the directory's size and by listing it, against the descriptors this
//! process holds. One test in its own binary: no other test opens files meanwhile.

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

fn reported(metrics: &ProcessMetrics) -> f64 {
    let families = metrics.collect();
    let family = families
        .iter()
        .find(|f| f.name() == "process_open_fds")
        .expect("process_open_fds");
    family.get_metric()[0].get_gauge().value()
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
}
