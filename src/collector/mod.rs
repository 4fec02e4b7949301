//! The collector framework: one trait every source implements, and the list of built-in
//! collectors that flags can switch on and off.

pub mod connection;
pub mod container;
pub mod host;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::config::Config;
use crate::family::Family;
use crate::sources::Sources;

/// What a collector learns about the scrape it is part of.
#[derive(Debug, Clone, Copy)]
pub struct ScrapeContext {
    /// When the collector's answer stops being useful; the framework cancels it then.
    pub deadline: Instant,
}

impl ScrapeContext {
    /// A context whose deadline is `timeout` from now.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            deadline: Instant::now() + timeout,
        }
    }
}

/// Why a collector produced nothing this time.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{0}")]
    Failed(String),
    /// The collector failed, but still has families worth showing (its own telemetry, what
    /// it kept from the last good read): they are served, and its success is 0.
    #[error("{reason}")]
    Partial { reason: String, families: Vec<Arc<Family>> },
}

/// A source of metric families. A collector owns its source, its cache and its failure:
/// an error, a panic or a missed deadline costs only its own families.
pub trait Collector: Send + Sync + 'static {
    /// The name used in flags (`--collector.<name>`) and in `sonde_collector_*{collector}`.
    fn name(&self) -> &'static str;

    /// Reads the source and returns its families. Called concurrently by overlapping scrapes.
    fn collect(&self, ctx: ScrapeContext) -> BoxFuture<'_, Result<Vec<Arc<Family>>, CollectError>>;
}

/// A built-in collector: its flag name, whether it runs by default, and how to build it.
pub struct CollectorSpec {
    pub name: &'static str,
    pub help: &'static str,
    pub enabled_by_default: bool,
    pub build: fn(&Config, &Sources) -> Arc<dyn Collector>,
}

/// Every built-in collector, in the order they are listed in `--help` and the README.
pub fn builtin() -> &'static [CollectorSpec] {
    &[
        CollectorSpec {
            name: "host",
            help: "machine_cpu_cores and machine_memory_bytes of the host",
            enabled_by_default: true,
            build: |config, _| Arc::new(host::HostCollector::new(&config.paths)),
        },
        CollectorSpec {
            name: "container",
            help: "cAdvisor-compatible container_* metrics from cgroups",
            enabled_by_default: true,
            build: |config, sources| Arc::new(container::ContainerCollector::new(config, sources)),
        },
        CollectorSpec {
            name: "connection",
            help: "per-container TCP/UDP connection metrics from eBPF (needs CAP_BPF, CAP_PERFMON)",
            enabled_by_default: true,
            build: |config, sources| Arc::new(connection::ConnectionCollector::new(config, sources)),
        },
    ]
}

/// The collectors the configuration enables, and those of the enabled metadata sources.
/// Call inside the Tokio runtime (see [`Sources::from_config`]).
pub fn enabled(config: &Config) -> Vec<Arc<dyn Collector>> {
    let sources = Sources::from_config(config);
    let mut collectors: Vec<Arc<dyn Collector>> = builtin()
        .iter()
        .filter(|spec| config.collector_enabled(spec.name))
        .map(|spec| (spec.build)(config, &sources))
        .collect();
    collectors.extend(sources.collectors.iter().cloned());
    collectors
}
