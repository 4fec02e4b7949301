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
    /// `starting`, `healthy` or `unhealthy` for a container with a health check.
    pub health: Option<String>,
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
