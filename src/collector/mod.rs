//! The collectors: the trait each implements, their settings, and the one registry that
//! builds them all over the metadata sources they share.

pub mod connection;
pub mod container;
mod dimm;
pub mod docker;
pub mod host;
pub mod kubelet;
pub mod sources;
mod switches;
mod version_info;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use self::connection::ConnectionConfig;
use self::container::ContainerConfig;
pub use self::sources::Sources;
pub use self::switches::CollectorSwitches;
use crate::cgroup::CgroupError;
use crate::conntrack::ConntrackConfig;
use crate::docker::settings::DockerConfig;
use crate::ebpf::batch::BatchError;
use crate::ebpf::live::LiveError;
use crate::ebpf::loader::LoadError;
use crate::exposition::family::Family;
use crate::gateway::GatewayConfig;
use crate::kubelet::settings::KubeletConfig;
use crate::paths::Paths;

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

/// What one collection came to: the families to serve, and why the collection failed if it
/// did. A failed collection may still have families worth showing (its own telemetry, what
/// it kept from the last good read): they are served, and its success is 0.
#[derive(Debug, Default)]
pub struct Collection {
    pub families: Vec<Arc<Family>>,
    pub failure: Option<CollectError>,
}

impl Collection {
    pub fn ok(families: Vec<Arc<Family>>) -> Self {
        Self {
            families,
            failure: None,
        }
    }

    /// Nothing to show, and why.
    pub fn failed(error: impl Into<CollectError>) -> Self {
        Self {
            families: Vec::new(),
            failure: Some(error.into()),
        }
    }
}

impl Collection {
    /// The families of a collection that succeeded, or its failure (what a failed
    /// collection still had to show is dropped).
    pub fn into_result(self) -> Result<Vec<Arc<Family>>, CollectError> {
        match self.failure {
            None => Ok(self.families),
            Some(failure) => Err(failure),
        }
    }
}

impl From<Result<Vec<Arc<Family>>, CollectError>> for Collection {
    fn from(result: Result<Vec<Arc<Family>>, CollectError>) -> Self {
        result.map_or_else(Self::failed, Self::ok)
    }
}

/// Why a collection failed, with the cause's own type kept up to where it is shown (the
/// landing page, the log).
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// No cgroup hierarchy where one was expected.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// Blocking work handed to a thread of its own stopped before it answered.
    #[error("{work}: {source}")]
    Stopped {
        work: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The eBPF probes did not load; every collection reports it.
    #[error(transparent)]
    Probes(Arc<LoadError>),
    #[error(transparent)]
    Drain(#[from] BatchError),
    #[error("reading the live connections: {0}")]
    Live(#[source] LiveError),
    #[error("Docker engine at {host}: {reason}")]
    DockerEngine { host: String, reason: String },
    #[error(transparent)]
    Kubelet(#[from] kubelet::KubeletFailures),
    /// A failure shared by every scrape of one validity window.
    #[error(transparent)]
    Shared(#[from] Arc<CollectError>),
    /// A collector's own failure, of any type.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl CollectError {
    /// A failure of any error type (or a message).
    pub fn other(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Other(error.into())
    }
}

/// A source of metric families. A collector owns its source, its cache and its failure:
/// an error, a panic or a missed deadline costs only its own families.
pub trait Collector: Send + Sync + 'static {
    /// The name used in flags (`--collector.<name>`) and in `sonde_collector_*{collector}`.
    fn name(&self) -> &'static str;

    /// Reads the source and returns its families. Called concurrently by overlapping scrapes.
    fn collect(&self, ctx: ScrapeContext) -> BoxFuture<'_, Collection>;
}

/// What the collectors and the metadata sources they share are built from.
#[derive(Debug, Clone)]
pub struct CollectorSettings {
    pub paths: Paths,
    /// Which of the switchable collectors run (`--collector.<name>`, `--no-collector.<name>`).
    pub switches: CollectorSwitches,
    pub container: ContainerConfig,
    pub connection: ConnectionConfig,
    pub docker: DockerConfig,
    pub kubelet: KubeletConfig,
    pub gateway: GatewayConfig,
    pub conntrack: ConntrackConfig,
}

impl CollectorSettings {
    pub fn collector_enabled(&self, name: &str) -> bool {
        self.switches.enabled(name)
    }
}

/// How a collector is switched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// By its own `--collector.<name>` and `--no-collector.<name>` flags; `help` says what
    /// it collects, in `--help`.
    Flags { on_by_default: bool, help: &'static str },
    /// With the metadata source it reports on (`--docker`, `--kubelet.url`).
    WithItsSource,
}

/// A collector of the registry: its name, how it is switched on, and how it is built.
pub struct CollectorSpec {
    pub name: &'static str,
    pub switch: Switch,
    /// `None` when what it reports on is off.
    pub build: fn(&CollectorSettings, &Sources) -> Option<Arc<dyn Collector>>,
}

/// The registry: every collector, in the order their families are served and their flags
/// are listed in `--help` and the README.
pub fn registry() -> &'static [CollectorSpec] {
    &[
        CollectorSpec {
            name: "host",
            switch: Switch::Flags {
                on_by_default: true,
                help: "machine_cpu_cores and machine_memory_bytes of the host",
            },
            build: |settings, _| Some(Arc::new(host::HostCollector::new(&settings.paths))),
        },
        CollectorSpec {
            name: "container",
            switch: Switch::Flags {
                on_by_default: true,
                help: "cAdvisor-compatible container_* metrics from cgroups",
            },
            build: |settings, sources| Some(Arc::new(container::ContainerCollector::new(settings, sources))),
        },
        CollectorSpec {
            name: "connection",
            switch: Switch::Flags {
                on_by_default: true,
                help: "per-container TCP/UDP connection metrics from eBPF (needs CAP_BPF, CAP_PERFMON)",
            },
            build: |settings, sources| Some(Arc::new(connection::ConnectionCollector::new(settings, sources))),
        },
        CollectorSpec {
            name: "docker",
            switch: Switch::WithItsSource,
            build: |_, sources| sources.docker.clone(),
        },
        CollectorSpec {
            name: "kubelet",
            switch: Switch::WithItsSource,
            build: |_, sources| sources.kubelet.clone(),
        },
    ]
}

/// The collectors the settings enable, built over the metadata sources they share. Call
/// inside the Tokio runtime (see [`Sources::start`]).
pub fn enabled(settings: &CollectorSettings) -> Vec<Arc<dyn Collector>> {
    let sources = Sources::start(settings);
    registry()
        .iter()
        .filter(|spec| match spec.switch {
            Switch::Flags { .. } => settings.collector_enabled(spec.name),
            Switch::WithItsSource => true,
        })
        .filter_map(|spec| (spec.build)(settings, &sources))
        .collect()
}
