//! Names and identity of containers, from the sources that know them (Docker, the Kubelet).

use super::discovery::Discovered;

/// What a runtime or orchestrator says about a container; empty strings where unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The runtime's name for it (Docker's, without the leading `/`).
    pub name: String,
    pub image: String,
    /// The Kubernetes container name.
    pub container: String,
    pub pod: String,
    pub namespace: String,
    /// Set by the `sonde.io/exclude=true` label or annotation.
    pub exclude: bool,
    /// Labels beyond cAdvisor's six, sorted by name, names already valid
    /// (`container_label_<key>`, `container_env_<name>`).
    pub extra_labels: Vec<(String, String)>,
    pub health: Health,
    /// The runtime or orchestrator says the container joins another container's network
    /// namespace (Docker's `--network container:<id>`, a Kubernetes pod's app container,
    /// which joins its sandbox's): its network is reported on that container, not on this one.
    pub joins_network: bool,
    /// Where the runtime keeps the container's own files, for `container_fs_usage_bytes`.
    pub writable_layer: Option<std::sync::Arc<WritableLayer>>,
}

/// A container's writable files as its runtime lays them out (host paths): what cAdvisor
/// measures for `container_fs_usage_bytes` with Docker's overlay drivers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WritableLayer {
    /// The overlay's upper directory (`GraphDriver.Data.UpperDir`): the container's changes to
    /// its image. Its filesystem is the series' `device`, and its entries the inodes.
    pub upper_dir: std::path::PathBuf,
    /// The runtime's directory for the container (logs, `hostname`, `resolv.conf`), which
    /// cAdvisor adds to the usage.
    pub container_dir: Option<std::path::PathBuf>,
}

/// A container's health check, as `container_health_state` reports it (cAdvisor's values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Health {
    /// No health check defined, or no runtime that runs one (cAdvisor's -1).
    #[default]
    NoCheck,
    Starting,
    Healthy,
    Unhealthy,
    /// The runtime that knows is away (the Docker engine stopped): no series rather than a
    /// guess.
    Unknown,
}

impl Health {
    /// The gauge's value: 1 healthy, 0 starting or unhealthy, -1 without a check.
    pub fn value(self) -> Option<f64> {
        match self {
            Health::Healthy => Some(1.0),
            Health::Starting | Health::Unhealthy => Some(0.0),
            Health::NoCheck => Some(-1.0),
            Health::Unknown => None,
        }
    }
}

/// A source of container metadata, consulted when the inventory is rebuilt.
pub trait MetadataSource: Send + Sync {
    /// Fills in what this source knows of the cgroup; leaves the rest alone.
    fn describe(&self, cgroup: &Discovered, metadata: &mut Metadata);

    /// A counter that moves whenever what the source knows changes (an event arrived), so
    /// the inventory is rebuilt without waiting for its window. Sources without events: 0.
    fn generation(&self) -> u64 {
        0
    }
}
