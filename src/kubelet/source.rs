//! The Kubelet as a metadata source: the last good `/pods` answer names container and pod
//! cgroups (`container`, `pod`, `namespace`, and `image` when no runtime gave one), and
//! excludes annotated pods. It stays in use until `--kubelet.max-staleness` after it was
//! fetched, so a Kubelet that fails for a while does not strip every series of its names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::pods::{PodIdentity, PodIndex};
use crate::identity::discovery::{Discovered, Kind};
use crate::identity::metadata::{Metadata, MetadataSource};
use crate::sync;

pub struct KubeletSource {
    identity: RwLock<Option<Identity>>,
    max_staleness: Duration,
    generation: AtomicU64,
}

#[derive(Clone)]
struct Identity {
    index: Arc<PodIndex>,
    fetched_at: Instant,
}

impl KubeletSource {
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            identity: RwLock::new(None),
            max_staleness,
            generation: AtomicU64::new(0),
        }
    }

    /// Takes a fresh `/pods` answer; moves the generation when the pods changed, so the
    /// container inventory is rebuilt with the new names at once.
    pub fn update(&self, index: Arc<PodIndex>) {
        let mut identity = sync::write(&self.identity);
        let changed = identity.as_ref().is_none_or(|old| old.index != index);
        *identity = Some(Identity {
            index,
            fetched_at: Instant::now(),
        });
        if changed {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The pod identity in use and its age; `None` once it is older than the staleness limit
    /// (it is then dropped, and the generation moves so names go away at once).
    pub fn current(&self) -> Option<(Arc<PodIndex>, Duration)> {
        let identity = sync::read(&self.identity).clone()?;
        let age = identity.fetched_at.elapsed();
        if age <= self.max_staleness {
            return Some((identity.index, age));
        }
        let mut slot = sync::write(&self.identity);
        if slot.as_ref().is_some_and(|i| i.fetched_at == identity.fetched_at) {
            *slot = None;
            self.generation.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                max_staleness = ?self.max_staleness,
                "the last good pod list from the Kubelet is too old: pod names are dropped until it answers again"
            );
        }
        None
    }
}

/// Fills in a pod's identity.
fn describe_pod(pod: &PodIdentity, metadata: &mut Metadata) {
    metadata.pod = pod.name.clone();
    metadata.namespace = pod.namespace.clone();
    metadata.exclude |= pod.exclude;
}

impl MetadataSource for KubeletSource {
    fn describe(&self, cgroup: &Discovered, metadata: &mut Metadata) {
        let Some((index, _)) = self.current() else {
            return;
        };
        let pod_of_cgroup = || cgroup.pod_uid.as_deref().and_then(|uid| index.pods.get(uid));
        match cgroup.kind {
            Kind::Container => {
                let known = cgroup.container_id.as_deref().and_then(|id| index.containers.get(id));
                if let Some(container) = known {
                    describe_pod(&container.pod, metadata);
                    metadata.container = container.name.clone();
                    // The pods' own containers run in their sandbox's network namespace (the
                    // sandbox, which the Kubelet does not list, owns it).
                    metadata.joins_network = true;
                    if metadata.image.is_empty() {
                        metadata.image = container.image.clone();
                    }
                } else if let Some(pod) = pod_of_cgroup() {
                    // A container of the pod the Kubelet does not list (its sandbox, "pause"):
                    // the pod's, with no container name.
                    describe_pod(pod, metadata);
                }
            }
            Kind::Pod => {
                if let Some(pod) = pod_of_cgroup() {
                    describe_pod(pod, metadata);
                }
            }
            Kind::Raw | Kind::System => {}
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::discovery::classify;
    use crate::kubelet::pods::PodList;

    const UID: &str = "8e1a3d5c-1b2f-4c6d-9e0a-112233445566";
    const APP: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const PAUSE: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn index(exclude: bool) -> Arc<PodIndex> {
        let json = format!(
            r#"{{"items": [{{"metadata": {{"name": "web-0", "namespace": "shop", "uid": "{UID}",
                 "annotations": {{"sonde.io/exclude": "{exclude}"}}}},
                 "status": {{"containerStatuses": [{{"name": "app", "containerID": "containerd://{APP}", "image": "nginx:1"}}]}}}}]}}"#
        );
        let list: PodList = serde_json::from_str(&json).expect("parses");
        Arc::new(PodIndex::from_list(list))
    }

    fn describe(source: &KubeletSource, path: &str) -> Metadata {
        let mut metadata = Metadata::default();
        source.describe(&classify(path).expect("classified"), &mut metadata);
        metadata
    }

    #[test]
    fn names_the_connection_series_of_a_pod_container() {
        use std::os::unix::fs::MetadataExt;

        use crate::identity::cgroup_ids::{CgroupNames, ContainerLabels, InodePaths, SourceNames};

        let dir = tempfile::tempdir().expect("tempdir");
        let uid_ = UID.replace('-', "_");
        let rel = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{APP}.scope"
        );
        let scope = dir.path().join(&rel);
        std::fs::create_dir_all(&scope).expect("mkdir");
        let source = Arc::new(KubeletSource::new(Duration::from_secs(60)));
        source.update(index(false));
        let names = SourceNames::new(InodePaths::at(dir.path().to_owned()), vec![source]);
        let inode = std::fs::metadata(&scope).expect("stat").ino();
        assert_eq!(
            names.labels(inode),
            ContainerLabels {
                id: format!("/{rel}"),
                container: "app".into(),
                pod: "web-0".into(),
                namespace: "shop".into(),
                excluded: false,
            }
        );
    }

    #[test]
    fn names_containers_pods_and_sandboxes_and_expires() {
        let source = KubeletSource::new(Duration::from_millis(200));
        assert_eq!(
            describe(&source, &format!("/kubepods/pod{UID}/{APP}")),
            Metadata::default()
        );
        source.update(index(false));
        let generation = source.generation();
        source.update(index(false));
        assert_eq!(
            source.generation(),
            generation,
            "the same pods do not move the generation"
        );

        let app = describe(&source, &format!("/kubepods/burstable/pod{UID}/{APP}"));
        assert_eq!(
            (
                app.container.as_str(),
                app.pod.as_str(),
                app.namespace.as_str(),
                app.image.as_str()
            ),
            ("app", "web-0", "shop", "nginx:1")
        );
        let sandbox = describe(&source, &format!("/kubepods/burstable/pod{UID}/{PAUSE}"));
        assert_eq!((sandbox.container.as_str(), sandbox.pod.as_str()), ("", "web-0"));
        let pod = describe(&source, &format!("/kubepods/burstable/pod{UID}"));
        assert_eq!((pod.container.as_str(), pod.namespace.as_str()), ("", "shop"));
        assert!(!pod.exclude);

        source.update(index(true));
        assert_ne!(source.generation(), generation);
        assert!(describe(&source, &format!("/kubepods/burstable/pod{UID}")).exclude);

        std::thread::sleep(Duration::from_millis(300));
        let before = source.generation();
        assert_eq!(
            describe(&source, &format!("/kubepods/burstable/pod{UID}")),
            Metadata::default()
        );
        assert_ne!(source.generation(), before, "expiry moves the generation");
    }
}
