//! The inventory: every reported cgroup with what changes rarely (limits, start time, the
//! process whose network namespace it owns, names). Rebuilt once per inventory window.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use rayon::prelude::*;

use super::discovery::{self, Discovered, Kind};
use super::filter::Filters;
use super::metadata::{Metadata, MetadataSource};
use crate::cgroup::{CgroupPaths, KeptFiles, Layout, Reader, Spec};

/// One reported cgroup.
#[derive(Debug, Clone)]
pub struct Entry {
    pub cgroup: Discovered,
    pub paths: CgroupPaths,
    pub spec: Spec,
    /// Seconds since the epoch; the cgroup directory's modification time, as cAdvisor uses.
    pub start_time: Option<f64>,
    /// A process of the container that owns a network namespace of its own (not the host's).
    pub net_pid: Option<u32>,
    pub metadata: Metadata,
    /// The stats files, kept open while the entry lives (until the next rebuild).
    pub files: Arc<KeptFiles>,
}

#[derive(Debug, Default)]
pub struct Inventory {
    pub entries: Vec<Entry>,
}

/// What building the inventory needs.
pub struct Settings {
    pub layout: Layout,
    pub procfs: PathBuf,
    pub raw_prefixes: Vec<String>,
    pub filters: Filters,
    pub sources: Vec<Arc<dyn MetadataSource>>,
}

impl Inventory {
    /// Walks the hierarchy, names and filters what it finds, and reads limits in parallel.
    pub fn build(settings: &Settings, reader: &Reader) -> Inventory {
        let discovered = discovery::discover(settings.layout.discovery_root(), &settings.raw_prefixes);
        let host_netns = host_netns(&settings.procfs);
        let entries = discovered
            .into_par_iter()
            .filter_map(|cgroup| {
                let mut metadata = Metadata::default();
                for source in &settings.sources {
                    source.describe(&cgroup, &mut metadata);
                }
                if settings.filters.excludes(&metadata) {
                    return None;
                }
                let paths = settings.layout.paths(&cgroup.id);
                let spec = paths.read_spec(reader).ok()?; // gone while listing
                let start_time = paths
                    .main_dir()
                    .and_then(|d| std::fs::metadata(d).ok())
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64());
                let net_pid = match cgroup.kind {
                    // A pod's network is its containers' (and, later, the Kubelet's).
                    Kind::Pod => None,
                    Kind::Container | Kind::Raw => paths
                        .procs(reader)
                        .and_then(|(_, first)| first)
                        .filter(|pid| host_netns.is_some() && netns(&settings.procfs, &pid.to_string()) != host_netns),
                };
                Some(Entry {
                    cgroup,
                    paths,
                    spec,
                    start_time,
                    net_pid,
                    metadata,
                    files: Arc::default(),
                })
            })
            .collect();
        Inventory { entries }
    }
}

/// The network namespace of a process, as the `net:[inode]` link names it.
fn netns(procfs: &Path, pid: &str) -> Option<PathBuf> {
    std::fs::read_link(procfs.join(pid).join("ns/net")).ok()
}

/// The host's network namespace: init's, or where init's link is out of reach (sandboxes
/// deny it even to root), sonde's own, which is the host's when it runs as a host process
/// or with host networking.
fn host_netns(procfs: &Path) -> Option<PathBuf> {
    netns(procfs, "1").or_else(|| netns(procfs, "self"))
}
