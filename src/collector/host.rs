//! The `host` collector: the machine facts cAdvisor reports as `machine_*`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::dimm::{self, Dimms};
use super::version_info::VersionInfo;
use super::{CollectError, Collection, Collector, ScrapeContext};
use crate::exposition::family::{self, Family, FamilyBuilder};
use crate::paths::Paths;
use crate::sync;

/// Failed reads of the CPU list after which the runtime's count is used for good.
const CPU_READ_ATTEMPTS: u32 = 3;

pub struct HostCollector {
    cpu_online: PathBuf,
    meminfo: PathBuf,
    cpuinfo: PathBuf,
    cpu_dir: PathBuf,
    cpu_cores: Mutex<CpuCores>,
    /// Physical cores and sockets, read once (the hardware does not change under a running
    /// kernel); `None` until a read succeeds.
    topology: Mutex<Option<Topology>>,
    sysfs: PathBuf,
    /// Memory modules by type (EDAC), read once like the topology; `None` until read.
    dimms: Mutex<Option<std::collections::BTreeMap<String, Dimms>>>,
    version: VersionInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Topology {
    physical_cores: u64,
    sockets: u64,
}

#[derive(Default)]
struct CpuCores {
    known: Option<u64>,
    failures: u32,
}

impl HostCollector {
    pub fn new(paths: &Paths) -> Self {
        Self {
            cpu_online: paths.sysfs.join("devices/system/cpu/online"),
            meminfo: paths.procfs.join("meminfo"),
            cpuinfo: paths.procfs.join("cpuinfo"),
            cpu_dir: paths.sysfs.join("devices/system/cpu"),
            cpu_cores: Mutex::default(),
            topology: Mutex::default(),
            sysfs: paths.sysfs.clone(),
            dimms: Mutex::default(),
            version: VersionInfo::read(&paths.procfs),
        }
    }

    /// `machine_dimm_count` and `machine_dimm_capacity_bytes`, one series per memory type.
    /// Unreadable EDAC files leave both out (and are logged once): cAdvisor fails its whole
    /// machine info then; here only these two families go.
    fn dimm_families(&self) -> Vec<Option<FamilyBuilder>> {
        let mut known = sync::lock(&self.dimms);
        let dimms = known.get_or_insert_with(|| {
            dimm::by_type(&self.sysfs).unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot read the memory modules (EDAC); machine_dimm_* left out");
                Default::default()
            })
        });
        if dimms.is_empty() {
            return Vec::new();
        }
        let mut count = FamilyBuilder::gauge(
            "machine_dimm_count",
            "Number of RAM DIMM (all types memory modules) value labeled by dimm type.",
        );
        let mut capacity = FamilyBuilder::gauge(
            "machine_dimm_capacity_bytes",
            "Total RAM DIMM capacity (all types memory modules) value labeled by dimm type.",
        );
        for (kind, d) in dimms.iter() {
            count.sample(&[("type", kind)], d.count as f64);
            capacity.sample(&[("type", kind)], d.capacity_bytes as f64);
        }
        vec![Some(count), Some(capacity)]
    }

    /// Logical CPUs of the host, read once and cached; after repeated failures, the
    /// runtime's parallelism, cached too (and said in the log).
    fn cpu_cores(&self) -> Result<u64, CollectError> {
        let mut state = sync::lock(&self.cpu_cores);
        if let Some(cores) = state.known {
            return Ok(cores);
        }
        match read(&self.cpu_online).and_then(|text| {
            parse_cpu_list(&text).map_err(|reason| CollectError::Parse {
                path: self.cpu_online.clone(),
                reason,
            })
        }) {
            Ok(cores) => {
                state.known = Some(cores);
                Ok(cores)
            }
            Err(error) => {
                state.failures += 1;
                if state.failures < CPU_READ_ATTEMPTS {
                    return Err(error);
                }
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
                tracing::warn!(%error, cores, "cannot read the host's CPU list; using the runtime's CPU count from now on");
                state.known = Some(cores);
                Ok(cores)
            }
        }
    }

    /// `MemTotal` and, when the file has it, `SwapTotal`, in bytes.
    fn memory_bytes(&self) -> Result<(u64, Option<u64>), CollectError> {
        let text = read(&self.meminfo)?;
        let parse_error = |reason| CollectError::Parse {
            path: self.meminfo.clone(),
            reason,
        };
        let total = parse_mem_total(&text).map_err(parse_error)?;
        let swap = parse_meminfo_bytes(&text, "SwapTotal").map_err(parse_error)?;
        Ok((total, swap))
    }

    /// Physical cores and sockets as cAdvisor counts them (`GetPhysicalCores`,
    /// `GetSockets`): the distinct `core id` and `physical id` values of `cpuinfo`, else of
    /// each CPU's `topology/core_id` and `topology/physical_package_id` in sysfs (where
    /// `cpuinfo` has no such lines, as on arm64). Like cAdvisor, core ids that repeat on
    /// each socket count once. `None` when neither source says.
    fn topology(&self) -> Option<Topology> {
        let mut known = sync::lock(&self.topology);
        if known.is_none() {
            let cpuinfo = crate::fsread::read_to_string(&self.cpuinfo).unwrap_or_default();
            let count = |key: &str, property: &str| {
                Some(distinct_cpuinfo_values(&cpuinfo, key))
                    .filter(|n| *n > 0)
                    .or_else(|| Some(distinct_topology_values(&self.cpu_dir, property)).filter(|n| *n > 0))
            };
            *known = match (count("core id", "core_id"), count("physical id", "physical_package_id")) {
                (Some(physical_cores), Some(sockets)) => Some(Topology {
                    physical_cores,
                    sockets,
                }),
                _ => None,
            };
        }
        *known
    }
}

impl Collector for HostCollector {
    fn name(&self) -> &'static str {
        "host"
    }

    fn collect(&self, _ctx: ScrapeContext) -> BoxFuture<'_, Collection> {
        // Two small pseudo-files that the kernel answers from memory: read them inline
        // rather than paying for a blocking-pool hop.
        Box::pin(async move { self.families() })
    }
}

impl HostCollector {
    /// The machine families; `machine_scrape_error` is 1, alone, when they cannot be read.
    fn families(&self) -> Collection {
        match self.machine() {
            Ok(families) => Collection::ok(families.into_iter().chain(scrape_error(0.0)).collect()),
            Err(error) => Collection {
                families: scrape_error(1.0).into_iter().collect(),
                failure: Some(error),
            },
        }
    }

    fn machine(&self) -> Result<Vec<Arc<Family>>, CollectError> {
        let cores = self.cpu_cores()?;
        let (memory, swap) = self.memory_bytes()?;
        let topology = self.topology();
        let gauge =
            |name, help, value: Option<u64>| value.map(|v| FamilyBuilder::gauge(name, help).with_sample(&[], v as f64));
        Ok(family::shared(
            [
                gauge("machine_cpu_cores", "Number of logical CPU cores.", Some(cores)),
                gauge(
                    "machine_cpu_physical_cores",
                    "Number of physical CPU cores.",
                    topology.map(|t| t.physical_cores),
                ),
                gauge(
                    "machine_cpu_sockets",
                    "Number of CPU sockets.",
                    topology.map(|t| t.sockets),
                ),
                gauge(
                    "machine_memory_bytes",
                    "Amount of memory installed on the machine.",
                    Some(memory),
                ),
                gauge(
                    "machine_swap_bytes",
                    "Amount of swap memory available on the machine.",
                    swap,
                ),
            ]
            .into_iter()
            .chain(self.dimm_families())
            .flatten()
            .filter_map(FamilyBuilder::build)
            .chain(self.version.family()),
        ))
    }
}

/// cAdvisor's `machine_scrape_error`: 0 when the machine's figures were read, else 1.
fn scrape_error(value: f64) -> Vec<Arc<Family>> {
    family::shared(
        FamilyBuilder::gauge(
            "machine_scrape_error",
            "1 if there was an error while getting machine metrics, 0 otherwise.",
        )
        .with_sample(&[], value)
        .build(),
    )
}

/// How many distinct values the `key : value` lines of `cpuinfo` give.
pub fn distinct_cpuinfo_values(cpuinfo: &str, key: &str) -> u64 {
    let values: std::collections::BTreeSet<&str> = cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(k, v)| k.trim() == key && !v.trim().is_empty() && v.trim().bytes().all(|b| b.is_ascii_digit()))
        .map(|(_, v)| v.trim())
        .collect();
    values.len() as u64
}

/// How many distinct values `cpu<N>/topology/<property>` holds across the CPUs of sysfs.
fn distinct_topology_values(cpu_dir: &Path, property: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(cpu_dir) else {
        return 0;
    };
    let values: std::collections::BTreeSet<String> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("cpu"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| crate::fsread::read_to_string(&e.path().join("topology").join(property)).ok())
        .map(|v| v.trim().to_owned())
        .collect();
    values.len() as u64
}

impl HostCollector {}

fn read(path: &Path) -> Result<String, CollectError> {
    crate::fsread::read_to_string(path).map_err(|source| CollectError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Counts the CPUs in a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty CPU list".into());
    }
    let mut count = 0u64;
    for part in text.split(',') {
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("bad CPU number {s:?} in {text:?}"))
        };
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if last < first {
            return Err(format!("descending CPU range {part:?}"));
        }
        // Checked: a range such as 0-18446744073709551615 is no CPU list (found by fuzzing).
        count = (last - first)
            .checked_add(1)
            .and_then(|n| count.checked_add(n))
            .ok_or_else(|| format!("CPU range {part:?} too large"))?;
    }
    Ok(count)
}

/// A `Key:   value kB` line of `/proc/meminfo` in bytes; `None` when the file has none.
pub fn parse_meminfo_bytes(text: &str, key: &str) -> Result<Option<u64>, String> {
    let Some(line) = text
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
    else {
        return Ok(None);
    };
    let kib = line.trim().strip_suffix("kB").unwrap_or(line).trim();
    kib.parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(1024))
        .map(Some)
        .ok_or_else(|| format!("bad {key} value {line:?}"))
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_mem_total(text: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .ok_or("no MemTotal line")?;
    let mut fields = line.split_whitespace();
    let value = fields
        .next()
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| format!("bad MemTotal value {line:?}"))?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024).ok_or_else(|| "MemTotal overflows".to_owned()),
        None => Ok(value),
        Some(unit) => Err(format!("unknown MemTotal unit {unit:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Ok(1));
        assert_eq!(parse_cpu_list("0-1\n"), Ok(2));
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Ok(7));
        for bad in [
            "",
            "a",
            "3-1",
            "0-",
            "0,,1",
            "0-18446744073709551615",
            "0-9223372036854775807,0-9223372036854775807",
        ] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mem_total() {
        let text = "MemTotal:       24567012 kB\nMemFree:        23000000 kB\n";
        assert_eq!(parse_mem_total(text), Ok(24_567_012 * 1024));
        for bad in [
            "MemFree: 1 kB\n",
            "MemTotal: lots kB\n",
            "MemTotal: 1 MB\n",
            "MemTotal: 18446744073709551615 kB\n",
        ] {
            assert!(parse_mem_total(bad).is_err(), "{bad:?}");
        }
    }

    fn fake_host(cpu_online: Option<&str>) -> (tempfile::TempDir, HostCollector) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path().join("sys/devices/system/cpu");
        std::fs::create_dir_all(&sys).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("proc")).expect("mkdir");
        if let Some(list) = cpu_online {
            std::fs::write(sys.join("online"), list).expect("write");
        }
        std::fs::write(dir.path().join("proc/meminfo"), "MemTotal: 2048 kB\n").expect("write");
        let paths = Paths {
            procfs: dir.path().join("proc"),
            sysfs: dir.path().join("sys"),
            rootfs: dir.path().to_owned(),
        };
        let collector = HostCollector::new(&paths);
        (dir, collector)
    }

    fn gauge(families: &[Arc<Family>], name: &str) -> f64 {
        let family = families.iter().find(|f| f.name() == name).expect(name);
        family.model().get_metric()[0].get_gauge().value()
    }

    #[tokio::test]
    async fn reads_under_the_configured_roots() {
        let (_dir, host) = fake_host(Some("0-5\n"));
        let families = host
            .collect(ScrapeContext::with_timeout(std::time::Duration::from_secs(1)))
            .await
            .into_result()
            .expect("collects");
        assert_eq!(gauge(&families, "machine_cpu_cores"), 6.0);
        assert_eq!(gauge(&families, "machine_memory_bytes"), 2048.0 * 1024.0);
        assert_eq!(gauge(&families, "machine_scrape_error"), 0.0);
        // No SwapTotal line, no cpuinfo, no topology: those families are left out.
        for absent in [
            "machine_swap_bytes",
            "machine_cpu_physical_cores",
            "machine_cpu_sockets",
            "machine_dimm_count",
            "machine_dimm_capacity_bytes",
        ] {
            assert!(families.iter().all(|f| f.name() != absent), "{absent}");
        }
    }

    /// EDAC's per-DIMM files give one series per memory type; the version family is cAdvisor's
    /// with sonde's version and the kernel's release.
    #[tokio::test]
    async fn dimms_by_type_and_version_info() {
        let (dir, _) = fake_host(Some("0\n"));
        for (at, kind, mib) in [
            ("mc0/dimm0", "Registered-DDR4", "32768"),
            ("mc0/dimm1", "Registered-DDR4", "32768"),
            ("mc1/dimm0", "Registered-DDR5", "65536"),
        ] {
            let d = dir.path().join("sys/devices/system/edac/mc").join(at);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("dimm_mem_type"), kind).expect("write");
            std::fs::write(d.join("size"), mib).expect("write");
        }
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).expect("mkdir");
        std::fs::write(dir.path().join("proc/sys/kernel/osrelease"), "6.1.0-test\n").expect("write");
        let host = HostCollector::new(&Paths {
            procfs: dir.path().join("proc"),
            sysfs: dir.path().join("sys"),
            rootfs: dir.path().to_owned(),
        });
        let families = host.families().into_result().expect("collects");
        let series = |name: &str| -> Vec<(String, f64)> {
            let family = families.iter().find(|f| f.name() == name).expect(name);
            family
                .model()
                .get_metric()
                .iter()
                .map(|m| {
                    let labels: Vec<String> = m
                        .get_label()
                        .iter()
                        .map(|l| format!("{}={}", l.name(), l.value()))
                        .collect();
                    (labels.join(","), m.get_gauge().value())
                })
                .collect()
        };
        assert_eq!(
            series("machine_dimm_count"),
            [
                ("type=Registered-DDR4".to_owned(), 2.0),
                ("type=Registered-DDR5".to_owned(), 1.0)
            ]
        );
        assert_eq!(
            series("machine_dimm_capacity_bytes"),
            [
                ("type=Registered-DDR4".to_owned(), (64u64 << 30) as f64),
                ("type=Registered-DDR5".to_owned(), (64u64 << 30) as f64)
            ]
        );
        let version = series("cadvisor_version_info");
        assert_eq!(version.len(), 1);
        assert_eq!(version[0].1, 1.0);
        let labels = &version[0].0;
        assert!(
            labels.starts_with(&format!(
                "cadvisorRevision={},cadvisorVersion={},dockerVersion=,kernelVersion=6.1.0-test,osVersion=",
                crate::build_info::REVISION,
                crate::build_info::VERSION
            )),
            "{labels}"
        );
    }

    /// Two sockets of two cores with two threads each, as x86 `cpuinfo` writes them: cAdvisor
    /// counts distinct `core id` values (2: the ids repeat on each socket) and `physical id`
    /// values (2); swap is `SwapTotal`.
    #[tokio::test]
    async fn topology_and_swap_as_cadvisor_counts_them() {
        let (dir, host) = fake_host(Some("0-7\n"));
        let mut cpuinfo = String::new();
        for cpu in 0..8 {
            let (socket, core) = (cpu / 4, (cpu / 2) % 2);
            cpuinfo.push_str(&format!(
                "processor\t: {cpu}\nvendor_id\t: GenuineIntel\nphysical id\t: {socket}\nsiblings\t: 4\ncore id\t\t: {core}\ncpu cores\t: 2\n\n"
            ));
        }
        std::fs::write(dir.path().join("proc/cpuinfo"), cpuinfo).expect("write");
        std::fs::write(
            dir.path().join("proc/meminfo"),
            "MemTotal: 2048 kB\nSwapTotal:       1048572 kB\nSwapFree: 1000 kB\n",
        )
        .expect("write");
        let families = host
            .collect(ScrapeContext::with_timeout(std::time::Duration::from_secs(1)))
            .await
            .into_result()
            .expect("collects");
        assert_eq!(gauge(&families, "machine_cpu_physical_cores"), 2.0);
        assert_eq!(gauge(&families, "machine_cpu_sockets"), 2.0);
        assert_eq!(gauge(&families, "machine_swap_bytes"), 1_048_572.0 * 1024.0);
    }

    /// Where `cpuinfo` has no `core id`/`physical id` lines (arm64), sysfs's topology says.
    #[tokio::test]
    async fn topology_from_sysfs_without_cpuinfo_ids() {
        let (dir, host) = fake_host(Some("0-3\n"));
        std::fs::write(dir.path().join("proc/cpuinfo"), "processor\t: 0\nBogoMIPS\t: 50.00\n\n").expect("write");
        for cpu in 0..4 {
            let topology = dir.path().join(format!("sys/devices/system/cpu/cpu{cpu}/topology"));
            std::fs::create_dir_all(&topology).expect("mkdir");
            std::fs::write(topology.join("core_id"), format!("{cpu}\n")).expect("write");
            std::fs::write(topology.join("physical_package_id"), "0\n").expect("write");
        }
        let families = host
            .collect(ScrapeContext::with_timeout(std::time::Duration::from_secs(1)))
            .await
            .into_result()
            .expect("collects");
        assert_eq!(gauge(&families, "machine_cpu_physical_cores"), 4.0);
        assert_eq!(gauge(&families, "machine_cpu_sockets"), 1.0);
    }

    #[tokio::test]
    async fn a_failed_read_says_machine_scrape_error_1() {
        let (dir, host) = fake_host(Some("0-1\n"));
        std::fs::remove_file(dir.path().join("proc/meminfo")).expect("rm");
        let collection = host
            .collect(ScrapeContext::with_timeout(std::time::Duration::from_secs(1)))
            .await;
        assert!(collection.failure.is_some());
        assert_eq!(gauge(&collection.families, "machine_scrape_error"), 1.0);
        assert_eq!(collection.families.len(), 1);
    }

    #[tokio::test]
    async fn cpu_count_is_cached_once_known() {
        let (dir, host) = fake_host(Some("0-5\n"));
        assert_eq!(host.cpu_cores().expect("reads"), 6);
        std::fs::remove_file(dir.path().join("sys/devices/system/cpu/online")).expect("rm");
        assert_eq!(host.cpu_cores().expect("cached"), 6);
    }

    #[tokio::test]
    async fn cpu_count_falls_back_after_three_failures() {
        let (dir, host) = fake_host(Some("garbage"));
        let ctx = ScrapeContext::with_timeout(std::time::Duration::from_secs(1));
        for attempt in 1..CPU_READ_ATTEMPTS {
            let err = host
                .collect(ctx)
                .await
                .into_result()
                .expect_err("fails before the fallback");
            assert!(err.to_string().contains("online"), "attempt {attempt}: {err}");
        }
        let runtime = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let families = host.collect(ctx).await.into_result().expect("falls back");
        assert_eq!(gauge(&families, "machine_cpu_cores"), runtime);
        // The fallback is cached: a list that appears later does not change the answer.
        std::fs::write(dir.path().join("sys/devices/system/cpu/online"), "0-63").expect("write");
        let families = host.collect(ctx).await.into_result().expect("cached");
        assert_eq!(gauge(&families, "machine_cpu_cores"), runtime);
    }
}
