//! What one Kubelet refresh costs sonde once the bytes have arrived: decoding `/pods` into the
//! pod index, for nodes of 110 pods (the Kubelet's
//! default limit) and 500 pods, 3 containers each, in the real schemas with the fields a
//! Kubelet writes. Prints document sizes, median and spread, and the naming cost per cgroup.
//! Run: `cargo bench --bench kubelet`; `SONDE_BENCH_ITERATIONS` (default 21) sets the timed
//! runs. Run by `cargo test` (no `--bench` argument) it does one run of each, as a smoke test.

use std::time::{Duration, Instant};

use serde_json::json;
use sonde::identity::discovery::classify;
use sonde::identity::metadata::{Metadata, MetadataSource};
use sonde::kubelet::pods::{PodIndex, PodList};
use sonde::kubelet::source::KubeletSource;

const CONTAINERS: usize = 3;

fn uid(p: usize) -> String {
    format!("{p:08x}-0000-4000-8000-{p:012x}")
}

fn container_id(p: usize, c: usize) -> String {
    format!("{:064x}", p * 16 + c)
}

fn pods_document(pods: usize) -> String {
    let items: Vec<_> = (0..pods)
        .map(|p| {
            let containers: Vec<_> = (0..CONTAINERS)
                .map(|c| json!({
                    "name": format!("c{c}"), "image": format!("registry.example/team-{}/app:{c}", p % 40),
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                    "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"
                }))
                .collect();
            let statuses: Vec<_> = (0..CONTAINERS)
                .map(|c| json!({
                    "name": format!("c{c}"), "state": {"running": {"startedAt": "2026-11-23T10:00:00Z"}}, "lastState": {},
                    "ready": true, "restartCount": 0, "image": format!("registry.example/team-{}/app:{c}", p % 40),
                    "imageID": format!("registry.example/app@sha256:{:064x}", c), "containerID": format!("containerd://{}", container_id(p, c)),
                    "started": true
                }))
                .collect();
            json!({
                "metadata": {"name": format!("app-{p}-7d9f8b6c5-x{p:04}"), "namespace": format!("namespace-{}", p % 40), "uid": uid(p),
                             "resourceVersion": "81234", "creationTimestamp": "2026-11-23T09:59:58Z",
                             "labels": {"app": format!("app-{p}"), "pod-template-hash": "7d9f8b6c5"},
                             "annotations": {"kubernetes.io/config.seen": "2026-11-23T09:59:58Z", "kubernetes.io/config.source": "api"},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{p}-7d9f8b6c5"), "uid": uid(p + 100_000), "controller": true}]},
                "spec": {"containers": containers, "restartPolicy": "Always", "nodeName": "node-1", "serviceAccountName": "default",
                         "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
                         "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]},
                "status": {"phase": "Running", "hostIP": "192.0.2.10", "podIP": format!("10.244.{}.{}", p / 250, p % 250),
                           "startTime": "2026-11-23T09:59:59Z", "qosClass": "Burstable", "containerStatuses": statuses,
                           "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-11-23T10:00:01Z"}]}
            })
        })
        .collect();
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}).to_string()
}

/// Median, min and max of `runs` timed calls of `work`, after one warm-up.
fn time(runs: usize, mut work: impl FnMut()) -> (Duration, Duration, Duration) {
    work();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    (times[times.len() / 2], times[0], times[times.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("SONDE_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(if benchmarking { 21 } else { 1 });
    println!("{runs} timed runs each (after one warm-up), {CONTAINERS} containers per pod");
    println!(
        "{:<34} {:>10} {:>10} {:>9} {:>9}",
        "work", "bytes", "median ms", "min ms", "max ms"
    );
    for pods in [110, 500] {
        let pods_json = pods_document(pods);
        let (median, min, max) = time(runs, || {
            let list: PodList = serde_json::from_str(&pods_json).expect("valid /pods");
            let index = PodIndex::from_list(list);
            assert_eq!(index.containers.len(), pods * CONTAINERS);
        });
        let work = format!("/pods, {pods} pods: decode + index");
        println!(
            "{work:<34} {:>10} {:>10.3} {:>9.3} {:>9.3}",
            pods_json.len(),
            ms(median),
            ms(min),
            ms(max)
        );

        // Naming every container cgroup of the node, as an inventory rebuild does.
        let source = KubeletSource::new(Duration::from_secs(300));
        let list: PodList = serde_json::from_str(&pods_json).expect("valid /pods");
        source.update(std::sync::Arc::new(PodIndex::from_list(list)));
        let cgroups: Vec<_> = (0..pods)
            .flat_map(|p| {
                let uid_ = uid(p).replace('-', "_");
                (0..CONTAINERS).map(move |c| {
                    classify(&format!(
                        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{}.scope",
                        container_id(p, c)
                    ))
                    .expect("a container cgroup")
                })
            })
            .collect();
        let (median, min, max) = time(runs, || {
            for cgroup in &cgroups {
                let mut metadata = Metadata::default();
                source.describe(cgroup, &mut metadata);
                assert!(!metadata.pod.is_empty());
            }
        });
        let work = format!("describe {} cgroups", cgroups.len());
        println!(
            "{work:<34} {:>10} {:>10.3} {:>9.3} {:>9.3}",
            "-",
            ms(median),
            ms(min),
            ms(max)
        );
    }
}
