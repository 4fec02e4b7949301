//! What sonde knows of each running Docker container, keyed by container id, and a
//! generation that moves with every change so the inventory is rebuilt at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bollard::models::{ContainerInspectResponse, HealthStatusEnum};

use super::labels::{self, Allowlists};
use crate::identity::metadata::{Health, WritableLayer};
use crate::sync;

/// One container as the engine describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Without the leading `/`.
    pub name: String,
    /// The image reference the container was created from (`Config.Image`), as cAdvisor uses.
    pub image: String,
    /// `container_label_*` and `container_env_*` labels, sorted by name.
    pub extra_labels: Vec<(String, String)>,
    /// `State.Health.Status`; [`Health::NoCheck`] without `State.Health` (no health check).
    pub health: Health,
    /// The `sonde.io/exclude=true` label.
    pub exclude: bool,
    /// The Kubernetes names the runtime labelled it with (cri-dockerd and dockershim write
    /// `io.kubernetes.*` labels), as the kubelet's own cAdvisor reads them; empty without.
    pub kubernetes: KubernetesLabels,
    /// `HostConfig.NetworkMode` is `container:<id>`: it runs in another container's network
    /// namespace (a pod's app container joins its sandbox's).
    pub joins_network: bool,
    /// The overlay drivers' upper directory and the container's own directory; `None` with
    /// other storage drivers (cAdvisor measures devicemapper and zfs with their own tools).
    pub writable_layer: Option<Arc<WritableLayer>>,
}

/// The `io.kubernetes.*` labels of a pod's container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesLabels {
    pub pod: String,
    pub namespace: String,
    /// `POD` for a sandbox, as dockershim and cri-dockerd name it.
    pub container: String,
    pub pod_uid: String,
}

impl KubernetesLabels {
    fn from_labels(labels: &HashMap<String, String>) -> Self {
        let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
        KubernetesLabels {
            pod: label("io.kubernetes.pod.name"),
            namespace: label("io.kubernetes.pod.namespace"),
            container: label("io.kubernetes.container.name"),
            pod_uid: label("io.kubernetes.pod.uid"),
        }
    }
}

impl Known {
    /// The container an inspect answer describes, with its id; `None` without an id.
    pub fn from_inspect(allow: &Allowlists, inspect: &ContainerInspectResponse) -> Option<(String, Known)> {
        let id = inspect.id.clone()?;
        let config = inspect.config.as_ref();
        let no_labels = HashMap::new();
        let container_labels = config.and_then(|c| c.labels.as_ref()).unwrap_or(&no_labels);
        let env = config.and_then(|c| c.env.as_deref()).unwrap_or_default();
        let health = inspect
            .state
            .as_ref()
            .filter(|s| s.running.unwrap_or(false))
            .and_then(|s| s.health.as_ref())
            .and_then(|h| h.status)
            .map_or(Health::NoCheck, |status| match status {
                HealthStatusEnum::STARTING => Health::Starting,
                HealthStatusEnum::HEALTHY => Health::Healthy,
                HealthStatusEnum::UNHEALTHY => Health::Unhealthy,
                HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => Health::NoCheck,
            });
        let known = Known {
            name: inspect
                .name
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
            extra_labels: allow.extra_labels(container_labels, env),
            health,
            exclude: labels::excluded(container_labels),
            kubernetes: KubernetesLabels::from_labels(container_labels),
            joins_network: inspect
                .host_config
                .as_ref()
                .and_then(|h| h.network_mode.as_deref())
                .is_some_and(|mode| mode.starts_with("container:")),
            writable_layer: writable_layer(inspect).map(Arc::new),
        };
        Some((id, known))
    }
}

/// The container's writable layer with Docker's `overlay2` (or `overlay`) driver: the upper
/// directory, and the directory of its `hostname` file (`<root>/containers/<id>`), as
/// cAdvisor's `rootfsStorageDir` and `otherStorageDir`.
fn writable_layer(inspect: &ContainerInspectResponse) -> Option<WritableLayer> {
    let driver = inspect.graph_driver.as_ref()?;
    if !matches!(driver.name.as_str(), "overlay2" | "overlay") {
        return None;
    }
    let upper_dir = driver.data.get("UpperDir").filter(|d| d.starts_with('/'))?;
    let container_dir = [&inspect.hostname_path, &inspect.resolv_conf_path]
        .into_iter()
        .flatten()
        .find_map(|file| std::path::Path::new(file).parent().filter(|d| d.is_absolute()))
        .map(std::path::Path::to_path_buf);
    Some(WritableLayer {
        upper_dir: upper_dir.into(),
        container_dir,
    })
}

/// The running containers, shared by the watcher (writer) and the inventory (readers).
#[derive(Debug, Default)]
pub struct ContainerMap {
    containers: RwLock<HashMap<String, Arc<Known>>>,
    generation: AtomicU64,
}

impl ContainerMap {
    pub fn get(&self, id: &str) -> Option<Arc<Known>> {
        self.read().get(id).cloned()
    }

    /// The Kubernetes pod name and namespace that the labels of a container of pod `uid` give.
    pub fn pod(&self, uid: &str) -> Option<(String, String)> {
        self.read()
            .values()
            .map(|k| &k.kubernetes)
            .find(|k| k.pod_uid == uid && !k.pod.is_empty())
            .map(|k| (k.pod.clone(), k.namespace.clone()))
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves whenever what the map says changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Marks a change the map itself does not hold (the engine came or went).
    pub fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces everything with a fresh listing.
    pub fn replace(&self, containers: HashMap<String, Known>) {
        let fresh: HashMap<String, Arc<Known>> = containers.into_iter().map(|(id, k)| (id, Arc::new(k))).collect();
        let mut current = self.write();
        if *current != fresh {
            *current = fresh;
            self.bump();
        }
    }

    pub fn upsert(&self, id: String, known: Known) {
        let mut current = self.write();
        if current.get(&id).map(|k| k.as_ref()) != Some(&known) {
            current.insert(id, Arc::new(known));
            self.bump();
        }
    }

    pub fn remove(&self, id: &str) {
        if self.write().remove(id).is_some() {
            self.bump();
        }
    }

    /// A container stopped: it has no health any more (its name stays until it is removed,
    /// so a restart is named at once).
    pub fn stopped(&self, id: &str) {
        let mut current = self.write();
        if let Some(known) = current.get_mut(id)
            && known.health != Health::NoCheck
        {
            Arc::make_mut(known).health = Health::NoCheck;
            self.bump();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Known>>> {
        sync::read(&self.containers)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Known>>> {
        sync::write(&self.containers)
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerConfig, ContainerState, Health as DockerHealth};

    use super::*;

    fn inspect(health: Option<HealthStatusEnum>, running: bool) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/web-1".into()),
            image: Some("sha256:0123".into()),
            config: Some(ContainerConfig {
                image: Some("registry.local/web:1.2".into()),
                labels: Some(HashMap::from([
                    ("team".to_owned(), "a\"b\\c\nd é".to_owned()),
                    (labels::EXCLUDE_LABEL.to_owned(), "true".to_owned()),
                ])),
                env: Some(vec!["MODE=fast".into()]),
                ..ContainerConfig::default()
            }),
            state: Some(ContainerState {
                running: Some(running),
                health: health.map(|status| DockerHealth {
                    status: Some(status),
                    ..DockerHealth::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerInspectResponse::default()
        }
    }

    #[test]
    fn overlay_drivers_give_the_writable_layer() {
        let allow = Allowlists::default();
        let mut overlay = inspect(None, true);
        overlay.graph_driver = Some(bollard::models::DriverData {
            name: "overlay2".into(),
            data: HashMap::from([
                ("UpperDir".to_owned(), "/var/lib/docker/overlay2/x/diff".to_owned()),
                ("LowerDir".to_owned(), "/var/lib/docker/overlay2/y/diff".to_owned()),
            ]),
        });
        overlay.hostname_path = Some("/var/lib/docker/containers/abc/hostname".into());
        let (_, known) = Known::from_inspect(&allow, &overlay).expect("known");
        assert_eq!(
            known.writable_layer.as_deref(),
            Some(&WritableLayer {
                upper_dir: "/var/lib/docker/overlay2/x/diff".into(),
                container_dir: Some("/var/lib/docker/containers/abc".into()),
            })
        );
        // Other drivers (vfs, devicemapper, zfs, btrfs) have no upper directory to measure.
        if let Some(driver) = overlay.graph_driver.as_mut() {
            driver.name = "vfs".into();
        }
        let (_, known) = Known::from_inspect(&allow, &overlay).expect("known");
        assert_eq!(known.writable_layer, None);
    }

    #[test]
    fn inspect_answers_become_known_containers() {
        let allow = Allowlists {
            labels: Some(regex::Regex::new("^team$").expect("regex")),
            env: Some(regex::Regex::new("^MODE$").expect("regex")),
        };
        let (id, known) = Known::from_inspect(&allow, &inspect(Some(HealthStatusEnum::HEALTHY), true)).expect("known");
        assert_eq!(id, "abc");
        assert_eq!(
            known,
            Known {
                name: "web-1".into(),
                image: "registry.local/web:1.2".into(),
                extra_labels: vec![
                    ("container_env_mode".into(), "fast".into()),
                    ("container_label_team".into(), "a\"b\\c\nd é".into()),
                ],
                health: Health::Healthy,
                exclude: true,
                kubernetes: KubernetesLabels::default(),
                joins_network: false,
                writable_layer: None,
            }
        );

        // A pod's app container as cri-dockerd makes it: Kubernetes labels, and the network
        // namespace of its sandbox.
        let mut app = inspect(None, true);
        if let Some(labels) = app.config.as_mut().and_then(|c| c.labels.as_mut()) {
            for (key, value) in [
                ("io.kubernetes.pod.name", "web-0"),
                ("io.kubernetes.pod.namespace", "shop"),
                ("io.kubernetes.container.name", "app"),
                ("io.kubernetes.pod.uid", "u-1"),
            ] {
                labels.insert(key.into(), value.into());
            }
        }
        app.host_config = Some(bollard::models::HostConfig {
            network_mode: Some("container:0123".into()),
            ..bollard::models::HostConfig::default()
        });
        let (_, app) = Known::from_inspect(&allow, &app).expect("known");
        assert_eq!(
            (app.kubernetes, app.joins_network),
            (
                KubernetesLabels {
                    pod: "web-0".into(),
                    namespace: "shop".into(),
                    container: "app".into(),
                    pod_uid: "u-1".into(),
                },
                true
            )
        );
        let health = |h, running| {
            Known::from_inspect(&allow, &inspect(h, running))
                .expect("known")
                .1
                .health
        };
        assert_eq!(health(Some(HealthStatusEnum::STARTING), true), Health::Starting);
        assert_eq!(health(Some(HealthStatusEnum::UNHEALTHY), true), Health::Unhealthy);
        assert_eq!(health(Some(HealthStatusEnum::NONE), true), Health::NoCheck);
        assert_eq!(health(None, true), Health::NoCheck, "no health check");
        assert_eq!(
            health(Some(HealthStatusEnum::UNHEALTHY), false),
            Health::NoCheck,
            "not running"
        );
    }

    #[test]
    fn every_change_moves_the_generation_and_nothing_else_does() {
        let map = ContainerMap::default();
        let web = Known {
            name: "web".into(),
            health: Health::Healthy,
            ..Known::default()
        };
        map.upsert("a".into(), web.clone());
        assert_eq!(map.generation(), 1);
        map.upsert("a".into(), web.clone());
        assert_eq!(map.generation(), 1, "the same description is no change");
        map.stopped("a");
        assert_eq!(
            (map.generation(), map.get("a").map(|k| k.health)),
            (2, Some(Health::NoCheck))
        );
        assert_eq!(map.get("a").map(|k| k.name.clone()).as_deref(), Some("web"));
        map.stopped("a");
        map.remove("missing");
        assert_eq!(map.generation(), 2);
        map.replace(HashMap::from([("b".to_owned(), web)]));
        assert_eq!((map.generation(), map.len()), (3, 1));
        map.remove("b");
        assert_eq!((map.generation(), map.is_empty()), (4, true));
    }
}
