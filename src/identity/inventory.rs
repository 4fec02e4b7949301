//! The inventory: every reported cgroup with what changes rarely (limits, start time, the
//! process whose network namespace it owns, names). Rebuilt once per inventory window.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use rayon::prelude::*;

use super::discovery::{self, Discovered, Kind};
use super::filter::Filters;
use super::metadata::{Metadata, MetadataSource};
use super::{Description, describe};
use crate::cgroup::{CgroupPaths, File, KeptFiles, Layout, Reader, Spec, parse};

/// One reported cgroup.
#[derive(Debug, Clone)]
pub struct InventoryEntry {
    pub cgroup: Discovered,
    pub paths: CgroupPaths,
    pub spec: Spec,
    /// Seconds since the epoch; the cgroup directory's modification time, as cAdvisor uses.
    pub start_time: Option<f64>,
    /// Seconds since the epoch: cAdvisor's creation time (see
    /// [`CgroupPaths::creation_time`]), never before the machine booted.
    pub creation_time: Option<f64>,
    /// A process of the container, when the container owns a network namespace of its own
    /// (not the host's, and not one it joined): its network series are read through it.
    pub net_pid: Option<u32>,
    pub metadata: Metadata,
    /// The identity of the cgroup's main directory, its inode and change time: a cgroup
    /// removed and made again under the same path (a restarted container) has a new one
    /// (cgroupfs numbers its inodes cyclically, so a number comes back only after billions).
    pub dir_identity: Option<(u64, i64, i64)>,
    /// The stats files, kept open while the cgroup lives: handed on to the next inventory
    /// when the same directory is still there, so a rebuild reopens nothing.
    pub files: Arc<KeptFiles>,
}

#[derive(Debug, Default)]
pub struct Inventory {
    pub entries: Vec<InventoryEntry>,
}

/// What building the inventory needs.
pub struct InventorySettings {
    pub layout: Layout,
    pub procfs: PathBuf,
    pub raw_prefixes: Vec<String>,
    pub filters: Filters,
    pub sources: Vec<Arc<dyn MetadataSource>>,
}

impl Inventory {
    /// Walks the hierarchy, names and filters what it finds, and reads limits in parallel.
    /// Cgroups of the `previous` inventory whose directory is the same keep their open files.
    pub fn build(settings: &InventorySettings, reader: &Reader, previous: Option<&Inventory>) -> Inventory {
        let discovered = discovery::discover(settings.layout.discovery_root(), &settings.raw_prefixes);
        let host_netns = host_netns(&settings.procfs);
        let booted = boot_time(&settings.procfs);
        let kept: HashMap<(&str, (u64, i64, i64)), &InventoryEntry> = previous
            .map(|p| p.entries.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| Some(((e.cgroup.id.as_str(), e.dir_identity?), e)))
            .collect();
        let mut entries: Vec<(InventoryEntry, Option<PathBuf>)> = discovered
            .into_par_iter()
            .filter_map(|cgroup| {
                let Description { metadata, excluded } = describe(&cgroup, &settings.sources, &settings.filters);
                if excluded {
                    return None;
                }
                let paths = settings.layout.paths(&cgroup.id);
                let mut spec = paths.read_spec(reader).ok()?; // gone while listing
                if cgroup.id == "/" {
                    // As cAdvisor: the root's limits are the machine's memory and swap.
                    let machine = reader.parse(&settings.procfs, File::Meminfo, parse::meminfo);
                    spec.memory_limit = machine.map(|m| m.mem_total);
                    spec.memory_swap_limit = machine.and_then(|m| m.swap_total);
                }
                let dir = paths.main_dir().and_then(|d| std::fs::metadata(d).ok());
                let start_time = dir
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64());
                let dir_identity = dir.map(|m| (m.ino(), m.ctime(), m.ctime_nsec()));
                let creation_time = paths
                    .creation_time()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    // Whole seconds, as cAdvisor writes it (`Time.Unix()`).
                    .map(|d| (d.as_secs() as f64).max(booted.unwrap_or(0.0)));
                // A process in a network namespace of its own (not the host's), unless the
                // cgroup cannot own one: a pod's network is its sandbox's, and a container
                // that joined another's is reported on that one (as cAdvisor does).
                let net = match cgroup.kind {
                    Kind::Pod => None,
                    _ if metadata.joins_network => None,
                    // cAdvisor reads the root's network through init (the host's, reported
                    // on `/` only) and gives the other raw cgroups none.
                    Kind::System => None,
                    Kind::Container | Kind::Raw => paths
                        .procs(reader)
                        .and_then(|(_, first)| first)
                        .and_then(|pid| Some((pid, netns(&settings.procfs, &pid.to_string())?)))
                        .filter(|(_, ns)| host_netns.as_ref().is_some_and(|host| host != ns)),
                };
                let net_pid = match cgroup.id.as_str() {
                    "/" => Some(1),
                    _ => net.as_ref().map(|(pid, _)| *pid),
                };
                let entry = InventoryEntry {
                    cgroup,
                    paths,
                    spec,
                    start_time,
                    creation_time,
                    net_pid,
                    metadata,
                    dir_identity,
                    files: Arc::default(),
                };
                Some((entry, net.map(|(_, ns)| ns)))
            })
            .collect();
        one_owner_per_netns(&settings.procfs, &mut entries);
        let entries = entries
            .into_iter()
            .map(|(mut entry, _)| {
                // The kept files go on with the same directory and network process (whose
                // net/dev is one of them).
                if let Some(previous) = entry
                    .dir_identity
                    .and_then(|identity| kept.get(&(entry.cgroup.id.as_str(), identity)))
                    .filter(|previous| previous.net_pid == entry.net_pid)
                {
                    entry.files = Arc::clone(&previous.files);
                }
                entry
            })
            .collect();
        Inventory { entries }
    }
}

/// A network namespace is reported once, on the cgroup that owns it: of the cgroups whose
/// process is in the same namespace (containers that joined it without their runtime saying
/// so, a sandbox's containers on a runtime without a metadata source), the one whose process
/// started first — it made the namespace, the others joined (a pod's sandbox starts before
/// its containers). A process gone meanwhile comes last; ties go to the smallest cgroup path,
/// so the choice is the same at every rebuild.
fn one_owner_per_netns(procfs: &Path, entries: &mut [(InventoryEntry, Option<PathBuf>)]) {
    let mut by_netns: HashMap<&Path, Vec<usize>> = HashMap::new();
    for (i, (_, ns)) in entries.iter().enumerate() {
        if let Some(ns) = ns {
            by_netns.entry(ns.as_path()).or_default().push(i);
        }
    }
    let mut joined = Vec::new();
    for sharing in by_netns.into_values().filter(|s| s.len() > 1) {
        let key = |&i: &usize| {
            let (entry, _) = &entries[i];
            let started = entry
                .net_pid
                .and_then(|pid| process_start(procfs, pid))
                .unwrap_or(u64::MAX);
            (started, entry.cgroup.id.as_str())
        };
        if let Some(owner) = sharing.iter().min_by_key(|i| key(i)) {
            joined.extend(sharing.iter().filter(|i| *i != owner).copied());
        }
    }
    for i in joined {
        entries[i].0.net_pid = None;
    }
}

/// When the machine booted, in seconds since the epoch (`btime` of `/proc/stat`): cgroups made
/// before it (the root, at boot) carry older times on some filesystems; cAdvisor clamps them.
fn boot_time(procfs: &Path) -> Option<f64> {
    crate::procstat::btime(&crate::fsread::read_to_string(&procfs.join("stat")).ok()?).map(|secs| secs as f64)
}

/// When a process started, in clock ticks since boot (`/proc/<pid>/stat` field 22).
fn process_start(procfs: &Path, pid: u32) -> Option<u64> {
    let stat = crate::fsread::read_to_string(&procfs.join(pid.to_string()).join("stat")).ok()?;
    crate::procstat::process_stat(&stat).map(|s| s.start_ticks)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::fixture::{FakeCgroup, write_v2};

    const ID: &str = "/docker/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_rebuild_keeps_the_open_files_of_the_same_directory_only() {
        let root = tempfile::tempdir().expect("tempdir");
        write_v2(root.path(), &FakeCgroup::seeded(ID, 0)).expect("write");
        let settings = InventorySettings {
            layout: Layout::detect(root.path()).expect("layout"),
            procfs: root.path().join("proc"),
            raw_prefixes: Vec::new(),
            filters: Filters::default(),
            sources: Vec::new(),
        };
        let reader = Reader::default();
        // The root cgroup, always reported, comes first; the container second.
        let first = Inventory::build(&settings, &reader, None);
        let ids: Vec<&str> = first.entries.iter().map(|e| e.cgroup.id.as_str()).collect();
        assert_eq!(ids, ["/", ID]);
        let again = Inventory::build(&settings, &reader, Some(&first));
        assert!(
            Arc::ptr_eq(&first.entries[1].files, &again.entries[1].files),
            "the same cgroup keeps its files"
        );

        // Removed and made again under the same path (a restarted container): the old open
        // files belong to the removed directory and must not be read for the new one.
        let dir = root.path().join("fs/cgroup").join(ID.trim_start_matches('/'));
        std::fs::remove_dir_all(&dir).expect("rm");
        // Other filesystems than cgroupfs hand a freed inode number out again at once: take
        // it, as the many cgroups made between two inventories would on a real host.
        std::fs::create_dir(root.path().join("placeholder")).expect("mkdir");
        write_v2(root.path(), &FakeCgroup::seeded(ID, 1)).expect("write");
        let remade = Inventory::build(&settings, &reader, Some(&again));
        assert_eq!(remade.entries.len(), 2);
        assert_ne!(remade.entries[1].dir_identity, again.entries[1].dir_identity);
        assert!(!Arc::ptr_eq(&again.entries[1].files, &remade.entries[1].files));
    }

    #[test]
    fn a_process_start_time_is_read_past_any_command_name() {
        let procfs = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(procfs.path().join("42")).expect("mkdir");
        // Field 22 (starttime) is 98765; the name holds spaces and a closing parenthesis.
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 10 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        std::fs::write(procfs.path().join("42/stat"), stat).expect("write");
        assert_eq!(process_start(procfs.path(), 42), Some(98765));
        assert_eq!(process_start(procfs.path(), 43), None, "gone");
    }
}
