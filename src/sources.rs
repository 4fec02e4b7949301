//! The metadata sources (Docker, the Kubelet) that several collectors share: built once at
//! start, consulted by the container inventory and by the connection collector's names, and
//! reporting their own health as collectors of their own.

use std::sync::Arc;

use crate::collector::Collector;
use crate::config::Config;
use crate::container::metadata::MetadataSource;

/// Every metadata source the configuration enables.
#[derive(Clone, Default)]
pub struct Sources {
    /// Consulted, in order, for each cgroup when the inventory is rebuilt.
    pub metadata: Vec<Arc<dyn MetadataSource>>,
    /// The sources' own collectors (`docker`, `kubelet`): their success and their families.
    pub collectors: Vec<Arc<dyn Collector>>,
}

impl Sources {
    /// Builds the enabled sources. Call inside the Tokio runtime: sources may start
    /// background tasks (event streams, refreshes).
    pub fn from_config(config: &Config) -> Self {
        let mut sources = Self::default();
        if config.docker.enabled {
            let (source, collector) = crate::docker::start(&config.docker);
            sources.metadata.push(source);
            sources.collectors.push(collector);
        }
        crate::kubelet::register(config, &mut sources);
        sources
    }

    /// The sum of the sources' generations: it changes whenever a source learns of a change
    /// (a container started, renamed, died), so the inventory is rebuilt at once.
    pub fn generation(&self) -> u64 {
        Self::generation_of(&self.metadata)
    }

    /// [`Sources::generation`] of a list of sources.
    pub fn generation_of(sources: &[Arc<dyn MetadataSource>]) -> u64 {
        sources.iter().map(|s| s.generation()).fold(0, u64::wrapping_add)
    }
}
