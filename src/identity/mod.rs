//! Who a cgroup is: finding container cgroups (`discovery`), what the metadata sources
//! (Docker, the Kubelet) say of them (`metadata`), which are reported (`filter`), and the one
//! [`describe`] that the container inventory, the connection names and the Kubelet collector
//! all ask.

pub mod cgroup_ids;
pub mod discovery;
pub mod filter;
pub mod inventory;
pub mod metadata;

use std::sync::Arc;

use self::discovery::Discovered;
use self::filter::Filters;
use self::metadata::{Metadata, MetadataSource};

/// What the sources say of a cgroup, and whether the filters leave it out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Description {
    pub metadata: Metadata,
    /// The filters (or the `sonde.io/exclude` label or annotation) leave it out: none of its
    /// series are reported.
    pub excluded: bool,
}

/// Asks each source in turn about `cgroup`, then holds the answer against the filters.
pub fn describe(cgroup: &Discovered, sources: &[Arc<dyn MetadataSource>], filters: &Filters) -> Description {
    let mut metadata = Metadata::default();
    for source in sources {
        source.describe(cgroup, &mut metadata);
    }
    let excluded = filters.excludes(&metadata);
    Description { metadata, excluded }
}
