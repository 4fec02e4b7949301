//! The Docker metadata source: names, images, allowlisted labels and health of the
//! containers the inventory finds, looked up by container id.

use std::sync::Arc;

use super::link::Link;
use super::map::ContainerMap;
use crate::identity::discovery::{Discovered, Kind};
use crate::identity::metadata::{Health, Metadata, MetadataSource};

pub struct DockerSource {
    pub(super) map: Arc<ContainerMap>,
    pub(super) link: Arc<Link>,
}

impl MetadataSource for DockerSource {
    fn describe(&self, cgroup: &Discovered, metadata: &mut Metadata) {
        if cgroup.kind == Kind::Pod {
            // A pod cgroup is no container of Docker's: its pod is the one its containers'
            // labels name.
            if let Some((pod, namespace)) = cgroup.pod_uid.as_deref().and_then(|uid| self.map.pod(uid)) {
                metadata.pod = pod;
                metadata.namespace = namespace;
            }
            return;
        }
        let Some(known) = cgroup.container_id.as_deref().and_then(|id| self.map.get(id)) else {
            return;
        };
        // The names the kubelet's cAdvisor gives pods' containers without asking the Kubelet;
        // a Kubelet source, asked after this one, overrides them.
        let k8s = &known.kubernetes;
        for (field, value) in [
            (&mut metadata.pod, &k8s.pod),
            (&mut metadata.namespace, &k8s.namespace),
            (&mut metadata.container, &k8s.container),
        ] {
            if !value.is_empty() {
                field.clone_from(value);
            }
        }
        metadata.joins_network |= known.joins_network;
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
        metadata.writable_layer.clone_from(&known.writable_layer);
    }

    fn generation(&self) -> u64 {
        self.map.generation()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::docker::map::{Known, KubernetesLabels};
    use crate::identity::discovery::classify;
    use crate::identity::filter::Filters;
    use crate::identity::metadata::Health;
    use crate::kubelet::pods::{PodIndex, PodList};
    use crate::kubelet::source::KubeletSource;

    const UID: &str = "8e1a3d5c-1b2f-4c6d-9e0a-112233445566";
    const APP: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const SANDBOX: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    /// The app container and sandbox of one pod as cri-dockerd labels them.
    fn docker() -> Arc<DockerSource> {
        let map = Arc::new(ContainerMap::default());
        for (id, container, joins_network) in [(APP, "app", true), (SANDBOX, "POD", false)] {
            let known = Known {
                name: format!("k8s_{container}_web-0_shop_{UID}_0"),
                image: "registry.local/web:1".into(),
                kubernetes: KubernetesLabels {
                    pod: "web-0".into(),
                    namespace: "shop".into(),
                    container: container.into(),
                    pod_uid: UID.into(),
                },
                joins_network,
                ..Known::default()
            };
            map.upsert(id.into(), known);
        }
        let link = Arc::new(Link::default());
        link.up();
        Arc::new(DockerSource { map, link })
    }

    fn describe(sources: &[Arc<dyn MetadataSource>], path: &str) -> Metadata {
        crate::identity::describe(&classify(path).expect("classified"), sources, &Filters::default()).metadata
    }

    fn names(m: &Metadata) -> (&str, &str, &str, bool) {
        (
            m.container.as_str(),
            m.pod.as_str(),
            m.namespace.as_str(),
            m.joins_network,
        )
    }

    #[test]
    fn pods_are_named_from_runtime_labels_and_the_kubelet_wins() {
        let pod = format!("/kubepods/burstable/pod{UID}");
        let app = format!("{pod}/{APP}");
        let sandbox = format!("{pod}/{SANDBOX}");
        let alone: Vec<Arc<dyn MetadataSource>> = vec![docker()];
        assert_eq!(names(&describe(&alone, &app)), ("app", "web-0", "shop", true));
        assert_eq!(names(&describe(&alone, &sandbox)), ("POD", "web-0", "shop", false));
        assert_eq!(names(&describe(&alone, &pod)), ("", "web-0", "shop", false));
        assert_eq!(describe(&alone, &app).health, Health::NoCheck);

        // The Kubelet, asked after Docker, names what it lists; the sandbox, which it does not
        // list, keeps the runtime's container name with the Kubelet's pod.
        let kubelet = Arc::new(KubeletSource::new(Duration::from_secs(60)));
        let json = format!(
            r#"{{"items": [{{"metadata": {{"name": "web-0-renamed", "namespace": "store", "uid": "{UID}"}},
                 "status": {{"containerStatuses": [{{"name": "main", "containerID": "docker://{APP}"}}]}}}}]}}"#
        );
        let list: PodList = serde_json::from_str(&json).expect("parses");
        kubelet.update(Arc::new(PodIndex::from_list(list)));
        let both: Vec<Arc<dyn MetadataSource>> = vec![docker(), kubelet];
        assert_eq!(names(&describe(&both, &app)), ("main", "web-0-renamed", "store", true));
        assert_eq!(
            names(&describe(&both, &sandbox)),
            ("POD", "web-0-renamed", "store", false)
        );
        assert_eq!(names(&describe(&both, &pod)), ("", "web-0-renamed", "store", false));
    }
}
