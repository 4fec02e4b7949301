//! `process_*`: the exporter process's own CPU, memory, descriptors, threads and start time,
//! with client_golang's names, help texts and types (what node_exporter and cAdvisor export).
//!
//! Not the `prometheus` crate's process collector: on kernels before 6.2, whose
//! `/proc/<pid>/fd` does not give the count of open descriptors as its size, that collector
//! lists the directory at every scrape, and sonde keeps some fifteen files open per cgroup
//! (see `cgroup::KeptFiles`): 15,000 entries to list for 1,000 containers, 5.5 to 11 ms of
//! CPU, an eighth to a quarter of the least such a scrape costs (`cargo bench --bench
//! container` prints the listing's cost). Here the size is used where the kernel gives it,
//! and elsewhere the directory is listed at most once per [`LISTING_WINDOW`].

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::proto::MetricFamily;

use crate::exposition::family::FamilyBuilder;
use crate::procstat;

/// How long a count of open descriptors made by listing `/proc/self/fd` is reported before
/// the directory is listed again.
pub const LISTING_WINDOW: Duration = Duration::from_secs(60);

/// The `process_*` families of this process.
pub struct ProcessMetrics {
    proc_self: PathBuf,
    listing_window: Duration,
    /// The last count made by listing, and when.
    listed: Mutex<Option<(Instant, u64)>>,
    ticks_per_second: f64,
    page_size: u64,
    boot_time: Option<f64>,
}

impl ProcessMetrics {
    pub fn new() -> Self {
        Self::with_listing_window(LISTING_WINDOW)
    }

    /// With another window than [`LISTING_WINDOW`] for counts made by listing (tests use
    /// none, and one longer than they run).
    pub fn with_listing_window(listing_window: Duration) -> Self {
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let boot_time = crate::fsread::read_to_string(std::path::Path::new("/proc/stat"))
            .ok()
            .and_then(|stat| procstat::btime(&stat))
            .map(|secs| secs as f64);
        Self {
            proc_self: PathBuf::from("/proc/self"),
            listing_window,
            listed: Mutex::new(None),
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
            page_size: u64::try_from(page).unwrap_or(4096),
            boot_time,
        }
    }

    /// The open descriptors: the size of `/proc/self/fd` where the kernel gives it (6.2 and
    /// later), else [`Self::listed_fds`].
    pub fn open_fds(&self) -> std::io::Result<u64> {
        let size = std::fs::metadata(self.proc_self.join("fd"))?.len();
        if size > 0 {
            return Ok(size);
        }
        self.listed_fds()
    }

    /// The open descriptors by listing `/proc/self/fd` (without the listing's own), or the
    /// last such count while it is younger than the window.
    pub fn listed_fds(&self) -> std::io::Result<u64> {
        let mut listed = crate::sync::lock(&self.listed);
        if let Some((at, count)) = *listed
            && at.elapsed() < self.listing_window
        {
            return Ok(count);
        }
        let entries = std::fs::read_dir(self.proc_self.join("fd"))?.count();
        let count = (entries as u64).saturating_sub(1);
        *listed = Some((Instant::now(), count));
        Ok(count)
    }

    /// The soft limit on open descriptors; `None` when unlimited.
    fn max_fds() -> Option<u64> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable rlimit.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
    }

    /// Every family that could be read; one that cannot is left out, as client_golang does.
    pub fn collect(&self) -> Vec<MetricFamily> {
        let stat = crate::fsread::read_to_string(&self.proc_self.join("stat"))
            .ok()
            .and_then(|text| procstat::process_stat(&text));
        let mut families: Vec<MetricFamily> = stat
            .and_then(|stat| {
                FamilyBuilder::counter(
                    "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                )
                .with_sample(&[], stat.cpu_ticks as f64 / self.ticks_per_second)
                .build()
            })
            .into_iter()
            .collect();
        let mut gauge = |name: &str, help: &str, value: Option<f64>| {
            if let Some(value) = value {
                families.extend(FamilyBuilder::gauge(name, help).with_sample(&[], value).build());
            }
        };
        gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            self.open_fds().ok().map(|n| n as f64),
        );
        gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            Self::max_fds().map(|n| n as f64),
        );
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            stat.map(|s| s.virtual_bytes as f64),
        );
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            stat.map(|s| (s.resident_pages * self.page_size) as f64),
        );
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            stat.zip(self.boot_time)
                .map(|(s, boot)| boot + s.start_ticks as f64 / self.ticks_per_second),
        );
        gauge(
            "process_threads",
            "Number of OS threads in the process.",
            stat.map(|s| s.threads as f64),
        );
        families
    }
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_keep_the_process_collectors_names_help_and_types() {
        use prometheus::proto::MetricType;
        let ours = ProcessMetrics::new().collect();
        let expected = [
            (
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                MetricType::COUNTER,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                MetricType::GAUGE,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                MetricType::GAUGE,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                MetricType::GAUGE,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                MetricType::GAUGE,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                MetricType::GAUGE,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                MetricType::GAUGE,
            ),
        ];
        let got: Vec<(&str, &str, MetricType)> =
            ours.iter().map(|f| (f.name(), f.help(), f.get_field_type())).collect();
        assert_eq!(got, expected);
        for family in &ours {
            assert_eq!(family.get_metric().len(), 1, "{}", family.name());
            assert!(family.get_metric()[0].get_label().is_empty(), "{}", family.name());
        }
    }
}
