//! The Docker metadata source: names, images, allowlisted labels and health of the
//! containers the inventory finds, looked up by container id.

use std::sync::Arc;

use super::link::Link;
use super::map::ContainerMap;
use crate::identity::discovery::Discovered;
use crate::identity::metadata::{Health, Metadata, MetadataSource};

pub struct DockerSource {
    pub(super) map: Arc<ContainerMap>,
    pub(super) link: Arc<Link>,
}

impl MetadataSource for DockerSource {
    fn describe(&self, cgroup: &Discovered, metadata: &mut Metadata) {
        let Some(known) = cgroup.container_id.as_deref().and_then(|id| self.map.get(id)) else {
            return;
        };
        if !known.name.is_empty() {
            metadata.name.clone_from(&known.name);
        }
        if !known.image.is_empty() {
            metadata.image.clone_from(&known.image);
        }
        metadata.extra_labels.extend(known.extra_labels.iter().cloned());
        // Names outlive the engine's absence; health is only what the engine says now.
        metadata.health = if self.link.connected() {
            known.health
        } else {
            Health::Unknown
        };
        metadata.exclude |= known.exclude;
    }

    fn generation(&self) -> u64 {
        self.map.generation()
    }
}
