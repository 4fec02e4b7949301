//! Names for the cgroup ids the probes report: the cgroup's path in the v2 hierarchy (`id`
//! label), and the container, pod and namespace the metadata sources (Docker, the Kubelet)
//! give that path.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::discovery::classify;
use super::filter::Filters;
use super::metadata::MetadataSource;
use super::{Description, describe};
use crate::sync;

/// The labels a connection's cgroup gives its series; empty strings when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerLabels {
    /// The cgroup path, as cAdvisor's `id`.
    pub id: String,
    /// The Kubernetes container name, else the runtime's name (Docker's).
    pub container: String,
    pub pod: String,
    pub namespace: String,
    /// The container is excluded (`sonde.io/exclude`, or the container filters): its
    /// connections are not reported, as its `container_*` series are not.
    pub excluded: bool,
}

/// Resolves a cgroup v2 id (the inode of its directory) to labels.
pub trait CgroupNames: Send + Sync {
    fn labels(&self, cgroup_id: u64) -> ContainerLabels;
}

/// How often an unknown id may trigger a new walk of the hierarchy.
const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// Walks the cgroup v2 hierarchy and caches inode → path; an unknown id triggers a new walk,
/// at most every [`RESCAN_EVERY`].
pub struct InodePaths {
    root: PathBuf,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    paths: HashMap<u64, String>,
    scanned: Option<Instant>,
}

impl InodePaths {
    /// The v2 hierarchy under `sysfs`: `fs/cgroup` on a unified host, `fs/cgroup/unified` on
    /// a hybrid one.
    pub fn new(sysfs: &Path) -> Self {
        let cgroup = sysfs.join("fs/cgroup");
        let root = if cgroup.join("cgroup.controllers").exists() {
            cgroup
        } else {
            cgroup.join("unified")
        };
        Self::at(root)
    }

    pub fn at(root: PathBuf) -> Self {
        Self {
            root,
            cache: Mutex::default(),
        }
    }

    fn scan(&self) -> HashMap<u64, String> {
        let mut paths = HashMap::new();
        let mut stack = vec![(self.root.clone(), String::from("/"))];
        while let Some((dir, name)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else { continue };
            paths.insert(meta.ino(), name.clone());
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let child = entry.file_name().to_string_lossy().into_owned();
                    let child_name = if name == "/" {
                        format!("/{child}")
                    } else {
                        format!("{name}/{child}")
                    };
                    stack.push((entry.path(), child_name));
                }
            }
        }
        paths
    }

    /// The path of a cgroup id, or `None` when the hierarchy does not have it.
    pub fn path(&self, cgroup_id: u64) -> Option<String> {
        let mut cache = sync::lock(&self.cache);
        if let Some(path) = cache.paths.get(&cgroup_id) {
            return Some(path.clone());
        }
        if cache.scanned.is_some_and(|at| at.elapsed() < RESCAN_EVERY) {
            return None;
        }
        cache.paths = self.scan();
        cache.scanned = Some(Instant::now());
        cache.paths.get(&cgroup_id).cloned()
    }
}

impl CgroupNames for InodePaths {
    fn labels(&self, cgroup_id: u64) -> ContainerLabels {
        ContainerLabels {
            id: self.path(cgroup_id).unwrap_or_default(),
            ..ContainerLabels::default()
        }
    }
}

/// [`InodePaths`] named by the metadata sources: the path is classified by the runtime
/// layouts, as the container inventory does, described by each source in turn, and held
/// against the container filters.
pub struct SourceNames {
    paths: InodePaths,
    sources: Vec<Arc<dyn MetadataSource>>,
    filters: Filters,
}

impl SourceNames {
    pub fn new(paths: InodePaths, sources: Vec<Arc<dyn MetadataSource>>) -> Self {
        Self::filtered(paths, sources, Filters::default())
    }

    /// Names whose containers the filters exclude are marked [`ContainerLabels::excluded`].
    pub fn filtered(paths: InodePaths, sources: Vec<Arc<dyn MetadataSource>>, filters: Filters) -> Self {
        Self {
            paths,
            sources,
            filters,
        }
    }
}

impl CgroupNames for SourceNames {
    fn labels(&self, cgroup_id: u64) -> ContainerLabels {
        let Some(id) = self.paths.path(cgroup_id) else {
            return ContainerLabels::default();
        };
        // Only containers are described and filtered: a host service's cgroup has no name.
        let Description { metadata, excluded } = classify(&id)
            .map(|found| describe(&found, &self.sources, &self.filters))
            .unwrap_or_default();
        let container = if metadata.container.is_empty() {
            metadata.name
        } else {
            metadata.container
        };
        ContainerLabels {
            id,
            container,
            pod: metadata.pod,
            namespace: metadata.namespace,
            excluded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::discovery::Discovered;
    use crate::identity::metadata::Metadata;

    #[test]
    fn ids_are_the_inodes_of_cgroup_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        std::fs::create_dir_all(root.join("system.slice/docker-1.scope")).expect("mkdir");
        let paths = InodePaths::at(root.clone());
        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        assert_eq!(paths.path(ino(&root)).as_deref(), Some("/"));
        let scope = root.join("system.slice/docker-1.scope");
        assert_eq!(paths.path(ino(&scope)).as_deref(), Some("/system.slice/docker-1.scope"));
        assert_eq!(paths.labels(u64::MAX), ContainerLabels::default());
    }

    struct OnePod;

    impl MetadataSource for OnePod {
        fn describe(&self, cgroup: &Discovered, metadata: &mut Metadata) {
            if cgroup.container_id.as_deref() == Some(ID) {
                metadata.container = "web".into();
                metadata.pod = "web-0".into();
                metadata.namespace = "shop".into();
            }
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn sources_name_the_containers_of_known_layouts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let scope = root.join(format!("system.slice/docker-{ID}.scope"));
        let other = root.join("system.slice/cron.service");
        std::fs::create_dir_all(&scope).expect("mkdir");
        std::fs::create_dir_all(&other).expect("mkdir");
        let names = SourceNames::new(InodePaths::at(root), vec![Arc::new(OnePod)]);
        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        assert_eq!(
            names.labels(ino(&scope)),
            ContainerLabels {
                id: format!("/system.slice/docker-{ID}.scope"),
                container: "web".into(),
                pod: "web-0".into(),
                namespace: "shop".into(),
                excluded: false,
            }
        );
        assert_eq!(
            names.labels(ino(&other)),
            ContainerLabels {
                id: "/system.slice/cron.service".into(),
                ..ContainerLabels::default()
            }
        );
    }

    /// Names containers as Docker does: `db-<last hex digit>`, and excludes seed 2 by label.
    struct Docker;

    impl MetadataSource for Docker {
        fn describe(&self, cgroup: &Discovered, metadata: &mut Metadata) {
            if let Some(id) = &cgroup.container_id {
                metadata.name = format!("db-{}", &id[63..]);
                metadata.image = "postgres:16".into();
                metadata.exclude = id.ends_with('2');
            }
        }
    }

    #[test]
    fn docker_names_fill_container_and_filters_exclude() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let dirs: Vec<PathBuf> = (1..=3).map(|n| root.join(format!("docker/{n:064x}"))).collect();
        for d in &dirs {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let service = root.join("system.slice/sshd.service");
        std::fs::create_dir_all(&service).expect("mkdir");
        let filters = Filters {
            exclude_name: Some(regex::Regex::new("^db-3$").expect("regex")),
            include_image: Some(regex::Regex::new("^postgres:").expect("regex")),
            ..Filters::default()
        };
        let names = SourceNames::filtered(InodePaths::at(root), vec![Arc::new(Docker)], filters);
        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        assert_eq!(
            names.labels(ino(&dirs[0])),
            ContainerLabels {
                id: format!("/docker/{:064x}", 1),
                container: "db-1".into(),
                ..ContainerLabels::default()
            }
        );
        // db-2 carries sonde.io/exclude, db-3 is excluded by name.
        assert!(names.labels(ino(&dirs[1])).excluded);
        assert!(names.labels(ino(&dirs[2])).excluded);
        // The include-image filter does not hide a host service, which has no image.
        assert_eq!(
            names.labels(ino(&service)),
            ContainerLabels {
                id: "/system.slice/sshd.service".into(),
                ..ContainerLabels::default()
            }
        );
    }
}
