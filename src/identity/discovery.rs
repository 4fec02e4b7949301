//! Finds container and pod cgroups by the path layouts runtimes use.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

/// What a discovered cgroup stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Container,
    /// A Kubernetes pod's cgroup, parent of its containers' (reported as cAdvisor does).
    Pod,
    /// A cgroup under a `--container.raw-cgroup-prefix`.
    Raw,
    /// A cgroup that is not a container but that cAdvisor (as the kubelet runs it) reports:
    /// the root (`/`), `/kubepods` and its QoS cgroups, `/system.slice` and its services.
    System,
}

/// A cgroup sonde reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The cgroup path, the `id` label: `/docker/<id>`, `/kubepods/…`.
    pub id: String,
    pub kind: Kind,
    /// The runtime that created it, when the layout says.
    pub runtime: Option<&'static str>,
    /// The runtime's 64-hex container id.
    pub container_id: Option<String>,
    /// The Kubernetes pod UID (dashed form), for pod cgroups and their containers.
    pub pod_uid: Option<String>,
}

static SCOPE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(docker|cri-containerd|crio|libpod|nerdctl|containerd)-([0-9a-f]{64})\.scope$").expect("valid regex")
});
static BARE_ID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(?:libpod-)?([0-9a-f]{64})$").expect("valid regex"));
static CGROUPFS_POD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^pod([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$").expect("valid regex")
});
static SYSTEMD_POD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^kubepods(?:-[a-z]+)?-pod([0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12})\.slice$")
        .expect("valid regex")
});

fn runtime_of_scope(prefix: &str) -> &'static str {
    match prefix {
        "docker" => "docker",
        "crio" => "cri-o",
        "libpod" => "podman",
        _ => "containerd",
    }
}

/// The pod UID a path component names, in either cgroup driver's spelling.
fn pod_uid(component: &str) -> Option<String> {
    if let Some(c) = CGROUPFS_POD.captures(component) {
        return Some(c[1].to_owned());
    }
    SYSTEMD_POD.captures(component).map(|c| c[1].replace('_', "-"))
}

/// Classifies a cgroup path by the runtime layouts; `None` for anything else.
pub fn classify(id: &str) -> Option<Discovered> {
    let components: Vec<&str> = id.split('/').filter(|c| !c.is_empty()).collect();
    let (&name, parents) = components.split_last()?;
    let in_kubepods = components.first().is_some_and(|c| c.starts_with("kubepods"));
    let parent_pod = parents.iter().rev().find_map(|c| pod_uid(c));
    let found = |kind, runtime, container_id: Option<&str>, pod_uid: Option<String>| Discovered {
        id: id.to_owned(),
        kind,
        runtime,
        container_id: container_id.map(str::to_owned),
        pod_uid,
    };
    if let Some(c) = SCOPE.captures(name) {
        let runtime = runtime_of_scope(&c[1]);
        return Some(found(
            Kind::Container,
            Some(runtime),
            c.get(2).map(|m| m.as_str()),
            parent_pod,
        ));
    }
    if let Some(c) = BARE_ID.captures(name) {
        let runtime = match parents.last() {
            Some(&"docker") => Some("docker"),
            Some(&"libpod_parent") => Some("podman"),
            _ if name.starts_with("libpod-") => Some("podman"),
            _ => None,
        };
        return Some(found(
            Kind::Container,
            runtime,
            c.get(1).map(|m| m.as_str()),
            parent_pod,
        ));
    }
    if in_kubepods && let Some(uid) = pod_uid(name) {
        return Some(found(Kind::Pod, None, None, Some(uid)));
    }
    None
}

/// The QoS cgroups of the kubelet's two drivers (Guaranteed pods sit in the kubepods root).
const KUBEPODS_QOS: [&str; 4] = [
    "/kubepods/burstable",
    "/kubepods/besteffort",
    "/kubepods.slice/kubepods-burstable.slice",
    "/kubepods.slice/kubepods-besteffort.slice",
];

/// Whether `id` is one of the few non-container cgroups cAdvisor reports as the kubelet runs
/// it: `/kubepods` and its QoS cgroups, `/system.slice` and its services. The root is added
/// by [`discover`] itself.
pub fn is_system(id: &str) -> bool {
    matches!(id, "/kubepods" | "/kubepods.slice" | "/system.slice")
        || KUBEPODS_QOS.contains(&id)
        || id
            .strip_prefix("/system.slice/")
            .and_then(|unit| unit.strip_suffix(".service"))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

fn system(id: String) -> Discovered {
    Discovered {
        id,
        kind: Kind::System,
        runtime: None,
        container_id: None,
        pod_uid: None,
    }
}

/// Walks the hierarchy under `root` and returns the root cgroup and every container, pod,
/// system and raw-prefix cgroup. Container cgroups are not descended into: their sub-cgroups
/// belong to them.
pub fn discover(root: &Path, raw_prefixes: &[String]) -> Vec<Discovered> {
    const MAX_DEPTH: usize = 16;
    let mut found = vec![system("/".to_owned())];
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, id, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // removed while walking, or unreadable: nothing to report below it
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let child = format!("{id}/{name}");
            let descend = match classify(&child) {
                Some(d) if d.kind == Kind::Container => {
                    found.push(d);
                    false
                }
                Some(d) => {
                    found.push(d);
                    true
                }
                None if is_system(&child) => {
                    found.push(system(child.clone()));
                    true
                }
                None if under_prefix(&child, raw_prefixes) => {
                    found.push(Discovered {
                        id: child.clone(),
                        kind: Kind::Raw,
                        runtime: None,
                        container_id: None,
                        pod_uid: None,
                    });
                    true
                }
                None => true,
            };
            if descend && depth + 1 < MAX_DEPTH {
                stack.push((entry.path(), child, depth + 1));
            }
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

fn under_prefix(id: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| {
        let p = p.trim_end_matches('/');
        !p.is_empty() && (id == p || id.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "8e1a3d5c-1b2f-4c6d-9e0a-112233445566";

    fn check(path: &str, kind: Kind, runtime: Option<&str>, container: bool, pod: bool) {
        let d = classify(path).unwrap_or_else(|| panic!("{path} not classified"));
        assert_eq!(d.kind, kind, "{path}");
        assert_eq!(d.runtime, runtime, "{path}");
        assert_eq!(d.container_id.as_deref(), container.then_some(ID), "{path}");
        assert_eq!(d.pod_uid.as_deref(), pod.then_some(UID), "{path}");
    }

    #[test]
    fn runtime_layouts() {
        let uid_ = UID.replace('-', "_");
        use Kind::*;
        check(&format!("/docker/{ID}"), Container, Some("docker"), true, false);
        check(
            &format!("/system.slice/docker-{ID}.scope"),
            Container,
            Some("docker"),
            true,
            false,
        );
        check(
            &format!("/kubepods/burstable/pod{UID}/{ID}"),
            Container,
            None,
            true,
            true,
        );
        check(&format!("/kubepods/pod{UID}/{ID}"), Container, None, true, true);
        check(&format!("/kubepods/besteffort/pod{UID}"), Pod, None, false, true);
        check(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
            ),
            Container,
            Some("containerd"),
            true,
            true,
        );
        check(
            &format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope"),
            Container,
            Some("cri-o"),
            true,
            true,
        );
        check(
            &format!("/kubepods.slice/kubepods-pod{uid_}.slice"),
            Pod,
            None,
            false,
            true,
        );
        check(
            &format!("/machine.slice/libpod-{ID}.scope"),
            Container,
            Some("podman"),
            true,
            false,
        );
        check(
            &format!("/libpod_parent/libpod-{ID}"),
            Container,
            Some("podman"),
            true,
            false,
        );
        check(
            &format!("/system.slice/nerdctl-{ID}.scope"),
            Container,
            Some("containerd"),
            true,
            false,
        );
        check(&format!("/default/{ID}"), Container, None, true, false);
    }

    #[test]
    fn other_cgroups_are_not_containers() {
        for path in [
            "/",
            "/system.slice",
            "/system.slice/sshd.service",
            "/kubepods",
            "/kubepods/burstable",
            "/kubepods.slice/kubepods-burstable.slice",
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("/system.slice/crio-conmon-{ID}.scope"),
            &format!("/docker/{}", &ID[..63]),
            &format!("/user.slice/pod{UID}"),
        ] {
            assert_eq!(classify(path), None, "{path}");
        }
    }

    #[test]
    fn walks_a_tree_and_stops_at_containers() {
        let root = tempfile::tempdir().expect("tempdir");
        for dir in [
            format!("docker/{ID}/init.scope"),
            format!("kubepods/burstable/pod{UID}/{ID}"),
            "system.slice/sshd.service".to_owned(),
            "sonde-raw/a/b".to_owned(),
        ] {
            std::fs::create_dir_all(root.path().join(dir)).expect("mkdir");
        }
        let found = discover(root.path(), &["/sonde-raw/".to_owned()]);
        let ids: Vec<(&str, Kind)> = found.iter().map(|d| (d.id.as_str(), d.kind)).collect();
        assert_eq!(
            ids,
            [
                ("/", Kind::System),
                (format!("/docker/{ID}").as_str(), Kind::Container),
                ("/kubepods", Kind::System),
                ("/kubepods/burstable", Kind::System),
                (format!("/kubepods/burstable/pod{UID}").as_str(), Kind::Pod),
                (format!("/kubepods/burstable/pod{UID}/{ID}").as_str(), Kind::Container),
                ("/sonde-raw", Kind::Raw),
                ("/sonde-raw/a", Kind::Raw),
                ("/sonde-raw/a/b", Kind::Raw),
                ("/system.slice", Kind::System),
                ("/system.slice/sshd.service", Kind::System),
            ]
        );
        assert!(!under_prefix("/sonde-rawer", &["/sonde-raw".to_owned()]));
    }

    #[test]
    fn system_cgroups_are_the_kubelets_few() {
        for id in [
            "/kubepods",
            "/kubepods/besteffort",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/system.slice",
            "/system.slice/containerd.service",
        ] {
            assert!(is_system(id), "{id}");
        }
        for id in [
            "/",
            "/kubepods/guaranteed",
            "/system.slice/",
            "/system.slice/a.service/nested",
            "/system.slice/.service",
            "/system.slice/run-r1.scope",
            "/user.slice",
            "/user.slice/user-0.slice",
        ] {
            assert!(!is_system(id), "{id}");
        }
    }
}
