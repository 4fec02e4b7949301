//! `/pods`: the Kubelet's `v1.PodList`, read for pod identity (name, namespace, UID,
//! annotations, host networking) and which container id is which container of which pod.
//! Every field is optional and unknown fields are ignored: the schema only grows.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

/// The annotation that keeps a pod out of sonde's metrics.
pub const EXCLUDE_ANNOTATION: &str = "sonde.io/exclude";

#[derive(Debug, Default, Deserialize)]
pub struct PodList {
    pub items: Option<Vec<Pod>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Pod {
    pub metadata: Option<ObjectMeta>,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub annotations: Option<HashMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub host_network: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub container_statuses: Option<Vec<ContainerStatus>>,
    pub init_container_statuses: Option<Vec<ContainerStatus>>,
    pub ephemeral_container_statuses: Option<Vec<ContainerStatus>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ContainerStatus {
    pub name: Option<String>,
    /// `<runtime>://<id>`, e.g. `containerd://0123…`; absent until the container is created.
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
    pub image: Option<String>,
}

/// What sonde knows of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// `sonde.io/exclude: "true"`.
    pub exclude: bool,
    /// The pod shares the node's network: its network stats are the node's, not its own.
    pub host_network: bool,
}

/// What sonde knows of a container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIdentity {
    pub pod: Arc<PodIdentity>,
    /// The container's name in the pod spec.
    pub name: String,
    pub image: String,
}

/// The pods of a `/pods` answer, by UID and by container id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodIndex {
    pub pods: HashMap<String, Arc<PodIdentity>>,
    /// Bare container id (the 64 hex digits the cgroup path has) → container.
    pub containers: HashMap<String, ContainerIdentity>,
}

impl PodIndex {
    /// Indexes a pod list; pods without a UID cannot be matched to cgroups and are left out.
    pub fn from_list(list: PodList) -> Self {
        let mut index = PodIndex::default();
        for pod in list.items.unwrap_or_default() {
            let meta = pod.metadata.unwrap_or_default();
            let Some(uid) = meta.uid.filter(|u| !u.is_empty()) else {
                continue;
            };
            let exclude = meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(EXCLUDE_ANNOTATION))
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
            let identity = Arc::new(PodIdentity {
                name: meta.name.unwrap_or_default(),
                namespace: meta.namespace.unwrap_or_default(),
                uid: uid.clone(),
                exclude,
                host_network: pod.spec.and_then(|s| s.host_network).unwrap_or(false),
            });
            let status = pod.status.unwrap_or_default();
            let statuses = [
                status.container_statuses,
                status.init_container_statuses,
                status.ephemeral_container_statuses,
            ];
            for container in statuses.into_iter().flatten().flatten() {
                let Some(id) = container.container_id.as_deref().and_then(bare_container_id) else {
                    continue; // not created yet
                };
                index.containers.insert(
                    id.to_owned(),
                    ContainerIdentity {
                        pod: Arc::clone(&identity),
                        name: container.name.unwrap_or_default(),
                        image: container.image.unwrap_or_default(),
                    },
                );
            }
            index.pods.insert(uid, identity);
        }
        index
    }
}

/// `containerd://<id>` → `<id>`; a bare id stays as it is.
fn bare_container_id(id: &str) -> Option<&str> {
    let bare = id.rsplit_once("://").map_or(id, |(_, bare)| bare).trim();
    (!bare.is_empty()).then_some(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_pods_and_their_containers_and_tolerates_missing_fields() {
        let json = r#"{
          "kind": "PodList", "apiVersion": "v1", "metadata": {},
          "items": [
            {"metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1",
                          "annotations": {"sonde.io/exclude": "True"}, "labels": {"app": "web"}},
             "spec": {"hostNetwork": false, "containers": [{"name": "app", "image": "nginx:1"}]},
             "status": {"phase": "Running",
                        "containerStatuses": [
                          {"name": "app", "containerID": "containerd://aaaa", "image": "nginx:1", "ready": true},
                          {"name": "waiting", "image": "busybox", "state": {"waiting": {"reason": "ContainerCreating"}}}],
                        "initContainerStatuses": [{"name": "init", "containerID": "cri-o://bbbb", "image": "busybox"}]}},
            {"metadata": {"name": "agent", "namespace": "kube-system", "uid": "u-2", "annotations": null},
             "spec": {"hostNetwork": true}, "status": {}},
            {"metadata": {"name": "no-uid"}},
            {}
          ]
        }"#;
        let index = PodIndex::from_list(serde_json::from_str(json).expect("parses"));
        assert_eq!(index.pods.len(), 2);
        let web = &index.pods["u-1"];
        assert_eq!((web.name.as_str(), web.namespace.as_str()), ("web-0", "shop"));
        assert!(web.exclude && !web.host_network);
        assert!(index.pods["u-2"].host_network && !index.pods["u-2"].exclude);
        assert_eq!(index.containers.len(), 2);
        assert_eq!(index.containers["aaaa"].name, "app");
        assert_eq!(index.containers["aaaa"].image, "nginx:1");
        assert_eq!(index.containers["bbbb"].pod.uid, "u-1");
        let empty = PodIndex::from_list(serde_json::from_str(r#"{"items": null}"#).expect("parses"));
        assert!(empty.pods.is_empty());
    }
}
