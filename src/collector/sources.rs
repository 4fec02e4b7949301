//! The metadata sources (Docker, the Kubelet) that several collectors share: started once,
//! consulted by the container inventory and by the connection collector's names, and
//! reporting their own health through collectors of their own (`docker`, `kubelet`).

use std::sync::Arc;

use super::docker::DockerCollector;
use super::kubelet::KubeletCollector;
use super::{Collector, CollectorSettings};
use crate::identity::metadata::MetadataSource;

/// Every metadata source the settings enable.
#[derive(Clone, Default)]
pub struct Sources {
    /// Consulted, in order, for each cgroup when the inventory is rebuilt.
    pub metadata: Vec<Arc<dyn MetadataSource>>,
    /// The `docker` collector, when the Docker source is on.
    pub docker: Option<Arc<dyn Collector>>,
    /// The `kubelet` collector, when a Kubelet URL is set (or found from the downward API):
    /// it refreshes the Kubelet source as well as reporting on it.
    pub kubelet: Option<Arc<dyn Collector>>,
}

impl Sources {
    /// Starts the enabled sources. Call inside the Tokio runtime: sources may start
    /// background tasks (event streams, refreshes).
    pub fn start(settings: &CollectorSettings) -> Self {
        let mut sources = Self::default();
        if settings.docker.enabled {
            let (source, watched) = crate::docker::start(&settings.docker);
            sources.metadata.push(source);
            sources.docker = Some(Arc::new(DockerCollector::new(watched)));
        }
        if let Some(url) = settings.kubelet.url.as_deref() {
            let collector = Arc::new(KubeletCollector::new(settings, url));
            sources.metadata.push(collector.source());
            // Ask for the pods at once, so the first inventory already has their names.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let prefetching = Arc::clone(&collector);
                runtime.spawn(async move { prefetching.prefetch().await });
            }
            sources.kubelet = Some(collector);
        }
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
