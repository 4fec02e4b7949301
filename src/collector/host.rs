//! The `host` collector: the machine facts cAdvisor reports as `machine_*`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::{CollectError, Collection, Collector, ScrapeContext};
use crate::exposition::family::{self, Family, FamilyBuilder};
use crate::paths::Paths;
use crate::sync;

/// Failed reads of the CPU list after which the runtime's count is used for good.
const CPU_READ_ATTEMPTS: u32 = 3;

pub struct HostCollector {
    cpu_online: PathBuf,
    meminfo: PathBuf,
    cpu_cores: Mutex<CpuCores>,
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
            cpu_cores: Mutex::default(),
        }
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

    fn memory_bytes(&self) -> Result<u64, CollectError> {
        parse_mem_total(&read(&self.meminfo)?).map_err(|reason| CollectError::Parse {
            path: self.meminfo.clone(),
            reason,
        })
    }
}

impl Collector for HostCollector {
    fn name(&self) -> &'static str {
        "host"
    }

    fn collect(&self, _ctx: ScrapeContext) -> BoxFuture<'_, Collection> {
        // Two small pseudo-files that the kernel answers from memory: read them inline
        // rather than paying for a blocking-pool hop.
        Box::pin(async move { self.families().into() })
    }
}

impl HostCollector {
    /// The two machine families.
    fn families(&self) -> Result<Vec<Arc<Family>>, CollectError> {
        let cores = self.cpu_cores()?;
        let memory = self.memory_bytes()?;
        Ok(family::shared(
            [
                FamilyBuilder::gauge("machine_cpu_cores", "Number of logical CPU cores.")
                    .with_sample(&[], cores as f64),
                FamilyBuilder::gauge("machine_memory_bytes", "Amount of memory installed on the machine.")
                    .with_sample(&[], memory as f64),
            ]
            .into_iter()
            .filter_map(FamilyBuilder::build),
        ))
    }
}

fn read(path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|source| CollectError::Read {
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
        count += last - first + 1;
    }
    Ok(count)
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
        for bad in ["", "a", "3-1", "0-", "0,,1"] {
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
