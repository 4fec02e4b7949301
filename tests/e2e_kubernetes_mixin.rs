//! Drop-in for real (issue 21): a real Prometheus loads the kubernetes-mixin's recording
//! rules and alerts and evaluates its dashboards' queries (all rendered from the mixin's own
//! sources, committed under `tests/data/kubernetes-mixin/` with its version; see the README
//! there and `scripts/render-kubernetes-mixin`), scraping sonde as the job `cadvisor` that the
//! mixin selects. The node is laid out as the kubelet lays it out with cri-dockerd: per pod a
//! sandbox container in `/kubepods/besteffort/pod<uid>` labelled `io.kubernetes.*`, the app
//! containers joining its network namespace; a stand-in Kubelet lists the pods, and a
//! stand-in kube-state-metrics serves the pods' static facts (`kube_pod_info`,
//! `kube_pod_owner`, `kube_replicaset_owner`, `kube_pod_status_phase`) the mixin joins on.
//! A client pod fetches a file from a server pod over and over, the server's sending shaped
//! to 1 MB/s in its own namespace; a third container burns a quarter of a CPU, a fourth holds
//! 16 MiB.
//!
//! Asserted: every per-pod, per-workload and per-namespace network rate of the mixin's
//! dashboards within 10% of the rate from the sandboxes' `/proc/<pid>/net/dev` read at both
//! ends of the same window (an `irate`, which spans two scrapes, within the bounds net/dev
//! gives over those scrapes, and within 10% of their middle); the mixin's CPU recording rule
//! (`sum_irate`) within the bounds the cgroup's CPU time gives over the same two scrapes, and
//! every raw CPU sample within what the cgroup read during its scrape; the memory recording
//! rules (working set, RSS, cache, swap) equal to the cgroup files' figures for every
//! container whose files held still around the recording (the idle ones must); every rule,
//! alert and dashboard expression parses. Printed: the comparisons, and how many
//! expressions return data (those of kube-state-metrics' other families, node-exporter, the
//! API server and the Kubelet's own metrics cannot here).
//! Needs root and a Docker engine (the test command starts dockerd).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::kubelet::{TestKubelet, lock};
use common::prometheus_server::Prometheus;
use common::*;
use serde_json::json;

const MIXIN: &str = "tests/data/kubernetes-mixin";
const NODE: &str = "node-1";
/// The window of the network comparison, also the dashboards' `$__rate_interval`.
const WINDOW_SECONDS: u64 = 30;
/// The CPU comparison's window: the mean of the per-second `sum_irate` recordings over it.
const CPU_WINDOW_SECONDS: u64 = 10;

fn mixin_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(MIXIN).join(relative)
}

/// One PromQL expression of the mixin and where it comes from.
#[derive(Debug, Clone)]
struct Expr {
    origin: String,
    promql: String,
}

fn rule_files() -> Vec<PathBuf> {
    vec![
        mixin_path("prometheus_rules.yaml"),
        mixin_path("prometheus_alerts.yaml"),
    ]
}

/// The expression of every recording rule and alert, in file order.
fn rule_exprs() -> Vec<Expr> {
    let mut out = Vec::new();
    for path in rule_files() {
        let file = path.file_name().expect("file name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("read the mixin's rules");
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("rules are YAML");
        for group in doc["groups"].as_sequence().expect("groups") {
            for rule in group["rules"].as_sequence().expect("rules") {
                let name = rule["alert"]
                    .as_str()
                    .or(rule["record"].as_str())
                    .expect("alert or record");
                out.push(Expr {
                    origin: format!("{file}: {name}"),
                    promql: rule["expr"].as_str().expect("expr").trim().to_owned(),
                });
            }
        }
    }
    out
}

/// Every `expr` of every rendered dashboard (panel targets, rows' panels included).
fn dashboard_exprs() -> Vec<Expr> {
    fn walk(value: &serde_json::Value, origin: &str, out: &mut Vec<Expr>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                    out.push(Expr {
                        origin: origin.to_owned(),
                        promql: expr.trim().to_owned(),
                    });
                }
                for (key, value) in map {
                    if key == "templating" {
                        continue; // Grafana's label_values() queries, not PromQL
                    }
                    let origin = match map.get("title").and_then(|t| t.as_str()) {
                        Some(title) if key == "targets" => format!("{origin}: panel {title:?}"),
                        _ => origin.to_owned(),
                    };
                    walk(value, &origin, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, origin, out)),
            _ => {}
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(mixin_path("dashboards_out"))
        .expect("read the rendered dashboards")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let file = path.file_name().expect("file name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("read dashboard");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
        walk(&dashboard, &file, &mut out);
    }
    out
}

/// The two pods of the scenario.
struct Scene {
    namespace: String,
    server: PodNames,
    client: PodNames,
}

#[derive(Clone)]
struct PodNames {
    pod: String,
    uid: String,
    workload: String,
    replicaset: String,
}

impl PodNames {
    fn new(workload: &str, hash: &str, suffix: &str) -> PodNames {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let uid = format!(
            "5e1de000-{:04x}-4{:03x}-8{:03x}-{:012x}",
            std::process::id() & 0xffff,
            suffix.len() & 0xfff,
            hash.len() & 0xfff,
            (nanos & 0xffff_ffff_ffff) as u64
        );
        PodNames {
            pod: format!("{workload}-{hash}-{suffix}"),
            uid,
            workload: workload.to_owned(),
            replicaset: format!("{workload}-{hash}"),
        }
    }
}

/// A Grafana variable picked as an operator would: this namespace, the client pod and its
/// workload, the stand-in node, every instance and volume, 30-second windows.
fn substitute(promql: &str, scene: &Scene) -> String {
    let out = promql
        .replace("$__rate_interval", &format!("{WINDOW_SECONDS}s"))
        .replace("$cluster", "")
        .replace("$namespace", &scene.namespace)
        .replace("$pod", &scene.client.pod)
        .replace("$workload", &scene.client.workload)
        .replace("$type", "deployment")
        .replace("$node", NODE)
        .replace("$instance", ".*")
        .replace("$volume", ".*");
    // `$1` and the like are label_replace()'s, not Grafana's.
    let unknown = out
        .split('$')
        .skip(1)
        .any(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '{'));
    assert!(!unknown, "unknown variable in {promql:?}");
    out
}

/// The kubelet's pod cgroup parent (cgroupfs driver, BestEffort QoS), removed when dropped
/// (after the containers in it), with the QoS and kubepods levels if this test made them.
struct PodCgroups {
    parents: Vec<String>,
    made: Vec<PathBuf>,
}

fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .collect()
        })
        .unwrap_or_default()
}

impl PodCgroups {
    fn new(uids: &[&str]) -> PodCgroups {
        let made = hierarchies()
            .into_iter()
            .flat_map(|h| [h.join("kubepods/besteffort"), h.join("kubepods")])
            .filter(|p| !p.exists())
            .collect();
        PodCgroups {
            parents: uids
                .iter()
                .map(|uid| format!("/kubepods/besteffort/pod{uid}"))
                .collect(),
            made,
        }
    }
}

impl Drop for PodCgroups {
    fn drop(&mut self) {
        for hierarchy in hierarchies() {
            for parent in &self.parents {
                let _ = std::fs::remove_dir(hierarchy.join(parent.trim_start_matches('/')));
            }
        }
        for dir in &self.made {
            let _ = std::fs::remove_dir(dir); // the deeper level first: `made` lists it first
        }
    }
}

/// `docker run` of a pod's container as cri-dockerd makes it.
fn pod_container(scene_ns: &str, pod: &PodNames, name: &str, extra: &[&str], script: &str) -> Container {
    let parent = format!("/kubepods/besteffort/pod{}", pod.uid);
    let kind = if name == "POD" { "podsandbox" } else { "container" };
    let labels = [
        format!("io.kubernetes.pod.name={}", pod.pod),
        format!("io.kubernetes.pod.namespace={scene_ns}"),
        format!("io.kubernetes.pod.uid={}", pod.uid),
        format!("io.kubernetes.container.name={name}"),
        format!("io.kubernetes.docker.type={kind}"),
    ];
    let mut args = vec!["--cgroup-parent".to_owned(), parent];
    for label in labels {
        args.push("--label".to_owned());
        args.push(label);
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Container::run(&format!("k8s_{name}_{}", pod.pod), &args, script)
}

/// The `/pods` document listing both pods' app containers.
fn pods_document(scene: &Scene, apps: &[(&PodNames, &str, &Container)], ips: &BTreeMap<String, String>) -> String {
    let items: Vec<serde_json::Value> = [&scene.server, &scene.client]
        .iter()
        .map(|pod| {
            let mine: Vec<_> = apps.iter().filter(|(p, _, _)| p.uid == pod.uid).collect();
            json!({
                "metadata": {
                    "name": pod.pod, "namespace": scene.namespace, "uid": pod.uid,
                    "labels": {"app": pod.workload},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": pod.replicaset, "uid": "0", "controller": true}]
                },
                "spec": {
                    "containers": mine.iter().map(|(_, name, _)| json!({"name": name, "image": busybox_image()})).collect::<Vec<_>>(),
                    "nodeName": NODE, "hostNetwork": false
                },
                "status": {
                    "phase": "Running", "hostIP": "192.0.2.10", "podIP": ips[&pod.uid], "qosClass": "BestEffort",
                    "containerStatuses": mine.iter().map(|(_, name, c)| json!({
                        "name": name, "ready": true, "restartCount": 0, "started": true,
                        "state": {"running": {"startedAt": "2026-12-01T10:00:00Z"}},
                        "image": busybox_image(), "imageID": format!("docker-pullable://{}", busybox_image()),
                        "containerID": format!("docker://{}", c.id)
                    })).collect::<Vec<_>>()
                }
            })
        })
        .collect();
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}).to_string()
}

/// What kube-state-metrics would say of the two pods: static facts, no measurement.
fn kube_state_metrics(scene: &Scene, ips: &BTreeMap<String, String>) -> String {
    let ns = &scene.namespace;
    let mut out = String::new();
    for family in [
        "kube_pod_info",
        "kube_pod_owner",
        "kube_replicaset_owner",
        "kube_pod_status_phase",
    ] {
        out.push_str(&format!("# TYPE {family} gauge\n"));
        for p in [&scene.server, &scene.client] {
            let (pod, uid, rs, workload) = (&p.pod, &p.uid, &p.replicaset, &p.workload);
            out.push_str(&match family {
                "kube_pod_info" => format!(
                    "{family}{{namespace=\"{ns}\",pod=\"{pod}\",uid=\"{uid}\",host_ip=\"192.0.2.10\",pod_ip=\"{}\",\
                     node=\"{NODE}\",created_by_kind=\"ReplicaSet\",created_by_name=\"{rs}\",priority_class=\"\",\
                     host_network=\"false\"}} 1\n",
                    ips[uid]
                ),
                "kube_pod_owner" => format!(
                    "{family}{{namespace=\"{ns}\",pod=\"{pod}\",uid=\"{uid}\",owner_kind=\"ReplicaSet\",\
                     owner_name=\"{rs}\",owner_is_controller=\"true\"}} 1\n"
                ),
                "kube_replicaset_owner" => format!(
                    "{family}{{namespace=\"{ns}\",replicaset=\"{rs}\",owner_kind=\"Deployment\",\
                     owner_name=\"{workload}\",owner_is_controller=\"true\"}} 1\n"
                ),
                _ => ["Pending", "Running", "Succeeded", "Failed", "Unknown"]
                    .iter()
                    .map(|phase| {
                        let v = u8::from(*phase == "Running");
                        format!("{family}{{namespace=\"{ns}\",pod=\"{pod}\",uid=\"{uid}\",phase=\"{phase}\"}} {v}\n")
                    })
                    .collect(),
            });
        }
    }
    out
}

/// A plain-HTTP server answering every request with `body` as Prometheus text.
async fn serve_text(body: String) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                if common::kubelet::read_request_head(&mut stream).await.is_none() {
                    return;
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// `/proc/<pid>/net/dev` summed over the interfaces cAdvisor counts (not `lo`, `veth*`,
/// `docker*`, `nerdctl*`): the 16 counters, receive then transmit.
fn net_dev(pid: &str) -> [u64; 16] {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).expect("read the sandbox's net/dev");
    let mut sums = [0u64; 16];
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if ["lo", "veth", "docker", "nerdctl"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        for (sum, value) in sums.iter_mut().zip(counters.split_whitespace()) {
            *sum += value.parse::<u64>().expect("a counter");
        }
    }
    sums
}

/// The net/dev column of a `container_network_*_total` family.
fn net_dev_column(family: &str) -> Option<usize> {
    Some(match family {
        "container_network_receive_bytes_total" => 0,
        "container_network_receive_packets_total" => 1,
        "container_network_receive_errors_total" => 2,
        "container_network_receive_packets_dropped_total" => 3,
        "container_network_transmit_bytes_total" => 8,
        "container_network_transmit_packets_total" => 9,
        "container_network_transmit_errors_total" => 10,
        "container_network_transmit_packets_dropped_total" => 11,
        _ => return None,
    })
}

/// The one `container_network_*` family an expression reads, when it reads exactly one.
fn network_family(promql: &str) -> Option<&'static str> {
    let families: Vec<&'static str> = [
        "container_network_receive_bytes_total",
        "container_network_receive_packets_total",
        "container_network_receive_errors_total",
        "container_network_receive_packets_dropped_total",
        "container_network_transmit_bytes_total",
        "container_network_transmit_packets_total",
        "container_network_transmit_errors_total",
        "container_network_transmit_packets_dropped_total",
    ]
    .into_iter()
    .filter(|f| promql.contains(f))
    .collect();
    (families.len() == 1).then(|| families[0])
}

/// Counters read every few milliseconds on a thread of its own.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

/// One reading: the instants (seconds since the epoch) before and after it, key -> counters.
type Sample = (f64, f64, BTreeMap<String, Vec<f64>>);

impl Sampler {
    fn start(every: Duration, read: impl Fn() -> BTreeMap<String, Vec<f64>> + Send + 'static) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let before = now();
                let counters = read();
                samples.push((before, now(), counters));
                std::thread::sleep(every);
            }
            samples
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the net/dev sampler")
    }
}

/// A counter at `time`, interpolated between the readings around it.
fn counter_at(samples: &[Sample], key: &str, column: usize, time: f64) -> f64 {
    let after = samples
        .iter()
        .position(|(before, after, _)| (before + after) / 2.0 >= time)
        .unwrap_or_else(|| panic!("no net/dev reading after {time}"));
    assert!(after > 0, "no net/dev reading before {time}");
    let ((a0, a1, a), (b0, b1, b)) = (&samples[after - 1], &samples[after]);
    let (ta, tb) = ((a0 + a1) / 2.0, (b0 + b1) / 2.0);
    let (a, b) = (a[key][column], b[key][column]);
    a + (b - a) * (time - ta) / (tb - ta)
}

/// Bounds of a monotonic counter at every instant of `from..=to`: the last reading that
/// ended before `from` and the first that began after `to`.
fn counter_bounds(samples: &[Sample], key: &str, column: usize, from: f64, to: f64) -> Option<(f64, f64)> {
    let low = samples.iter().rev().find(|(_, after, _)| *after <= from)?;
    let high = samples.iter().find(|(before, _, _)| *before >= to)?;
    Some((low.2[key][column], high.2[key][column]))
}

/// `scrape_duration_seconds` of sonde's scrapes over `seconds` before `time`: (timestamp, duration).
async fn scrape_durations(prometheus: &Prometheus, time: f64, seconds: u64) -> Vec<(f64, f64)> {
    let promql = format!("scrape_duration_seconds{{job=\"cadvisor\"}}[{seconds}s]");
    let result = prometheus
        .query_at(&promql, time)
        .await
        .expect("query scrape durations");
    assert_eq!(result.len(), 1, "{promql}: {result:?}");
    result[0]["values"]
        .as_array()
        .expect("a range")
        .iter()
        .map(|v| {
            let duration = v[1].as_str().and_then(|d| d.parse().ok()).expect("a duration");
            (v[0].as_f64().expect("a timestamp"), duration)
        })
        .collect()
}

/// How long the scrape stamped `stamp` took.
fn scrape_duration(durations: &[(f64, f64)], stamp: f64) -> f64 {
    durations
        .iter()
        .find(|(t, _)| (t - stamp).abs() < 1e-6)
        .map(|(_, d)| *d)
        .unwrap_or_else(|| panic!("no scrape_duration_seconds at {stamp}"))
}

/// The timestamps of the last two samples of a pod's `family` series at `time`: the
/// interval an `irate` there spans.
async fn last_two_scrapes(prometheus: &Prometheus, family: &str, ns: &str, pod: &str, time: f64) -> (f64, f64) {
    let promql = format!("{family}{{job=\"cadvisor\",namespace=\"{ns}\",pod=\"{pod}\"}}[5s]");
    let result = prometheus.query_at(&promql, time).await.expect("query the raw samples");
    assert_eq!(result.len(), 1, "one network series per pod: {promql}: {result:?}");
    let values = result[0]["values"].as_array().expect("a range of samples");
    assert!(values.len() >= 2, "{promql}: {values:?}");
    let stamp = |v: &serde_json::Value| v[0].as_f64().expect("a timestamp");
    (stamp(&values[values.len() - 2]), stamp(&values[values.len() - 1]))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn value_of(series: &serde_json::Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a sample value")
}

/// A cgroup v1 controller file of a container in its pod, or the v2 equivalent.
fn cgroup_file(pod_uid: &str, id: &str, controller: &str, file: &str) -> String {
    let relative = format!("kubepods/besteffort/pod{pod_uid}/{id}");
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let path = if v2 {
        format!("/sys/fs/cgroup/{relative}/{file}")
    } else {
        format!("/sys/fs/cgroup/{controller}/{relative}/{file}")
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn stat_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time used, seconds: `cpuacct.usage` (v1) or `cpu.stat` `usage_usec` (v2).
fn cpu_seconds(pod_uid: &str, id: &str) -> f64 {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        stat_field(&cgroup_file(pod_uid, id, "cpu", "cpu.stat"), "usage_usec") as f64 / 1e6
    } else {
        cgroup_file(pod_uid, id, "cpuacct", "cpuacct.usage")
            .trim()
            .parse::<f64>()
            .expect("cpuacct.usage")
            / 1e9
    }
}

/// Working set, RSS, cache and swap as cAdvisor computes them from the memory files:
/// usage - inactive_file (clamped at 0), and the `total_*` (v1) / plain (v2) stat fields.
fn memory_figures(pod_uid: &str, id: &str) -> [u64; 4] {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let usage: u64 = cgroup_file(pod_uid, id, "memory", "memory.current")
            .trim()
            .parse()
            .expect("usage");
        let stat = cgroup_file(pod_uid, id, "memory", "memory.stat");
        let swap: u64 = cgroup_file(pod_uid, id, "memory", "memory.swap.current")
            .trim()
            .parse()
            .unwrap_or(0);
        [
            usage.saturating_sub(stat_field(&stat, "inactive_file")),
            stat_field(&stat, "anon"),
            stat_field(&stat, "file"),
            swap,
        ]
    } else {
        let usage: u64 = cgroup_file(pod_uid, id, "memory", "memory.usage_in_bytes")
            .trim()
            .parse()
            .expect("usage");
        let stat = cgroup_file(pod_uid, id, "memory", "memory.stat");
        [
            usage.saturating_sub(stat_field(&stat, "total_inactive_file")),
            stat_field(&stat, "total_rss"),
            stat_field(&stat, "total_cache"),
            stat_field(&stat, "total_swap"),
        ]
    }
}

const MEMORY_RULES: [&str; 4] = [
    "node_namespace_pod_container:container_memory_working_set_bytes",
    "node_namespace_pod_container:container_memory_rss",
    "node_namespace_pod_container:container_memory_cache",
    "node_namespace_pod_container:container_memory_swap",
];
const CPU_RULE: &str = "node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate";

/// The network rates: the sandboxes' net/dev read every 5 ms through one window; every
/// dashboard expression of one container_network_* family by pod, workload or namespace,
/// evaluated at the window's end: `rate` against net/dev over the same window, `irate`
/// against net/dev between the two scrapes it uses.
async fn check_network(prometheus: &Prometheus, scene: &Scene, sandboxes: [&Container; 2], started: Instant) {
    let ns = &scene.namespace;
    let [server_sandbox, client_sandbox] = sandboxes;
    let sandbox_pid = |c: &Container| c.inspect("{{.State.Pid}}");
    let pids: BTreeMap<String, String> = [
        (scene.server.pod.clone(), sandbox_pid(server_sandbox)),
        (scene.client.pod.clone(), sandbox_pid(client_sandbox)),
    ]
    .into();
    tokio::time::sleep(Duration::from_secs(WINDOW_SECONDS).saturating_sub(started.elapsed())).await;
    let sampler = {
        let pids = pids.clone();
        Sampler::start(Duration::from_millis(5), move || {
            pids.iter()
                .map(|(pod, pid)| (pod.clone(), net_dev(pid).iter().map(|&c| c as f64).collect()))
                .collect()
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t1 = now() + WINDOW_SECONDS as f64;
    tokio::time::sleep(Duration::from_secs(WINDOW_SECONDS)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = sampler.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await; // the last scrapes ingested
    let truth = |pod: &str, column: usize, from: f64, to: f64| {
        (counter_at(&samples, pod, column, to) - counter_at(&samples, pod, column, from)) / (to - from)
    };
    let t0 = t1 - WINDOW_SECONDS as f64;
    let workload_pod: BTreeMap<&str, &str> = [
        (scene.server.workload.as_str(), scene.server.pod.as_str()),
        (scene.client.workload.as_str(), scene.client.pod.as_str()),
    ]
    .into();
    let pod_names = [scene.server.pod.as_str(), scene.client.pod.as_str()];
    let durations = scrape_durations(prometheus, t1, WINDOW_SECONDS + 5).await;
    let dashboards = dashboard_exprs();
    let mut compared = 0;
    let mut compared_exprs = 0;
    for expr in &dashboards {
        let Some(family) = network_family(&expr.promql) else {
            continue;
        };
        let compact: String = expr.promql.split_whitespace().collect();
        let by = ["pod", "workload", "namespace"]
            .into_iter()
            .find(|label| compact.contains(&format!("by({label})")));
        let Some(by) = by else { continue };
        let column = net_dev_column(family).expect("a net/dev column");
        let bits = if compact.contains("8*rate") || compact.contains("8*irate") {
            8.0
        } else {
            1.0
        };
        let irate = compact.contains("irate(");
        let promql = substitute(&expr.promql, scene);
        let result = prometheus
            .query_at(&promql, t1)
            .await
            .unwrap_or_else(|e| panic!("{}: {promql}: {e}", expr.origin));
        compared_exprs += 1;
        let mut seen = 0;
        for series in &result {
            let label = series["metric"][by].as_str().expect("the label summed by");
            let pods: Vec<&str> = match by {
                "pod" => vec![label],
                "workload" => vec![workload_pod[label]],
                _ if label == ns.as_str() => pod_names.to_vec(),
                _ => continue, // another namespace of this machine
            };
            let got = value_of(series) / bits;
            if irate {
                // Between the two scrapes it uses: sonde read each within [the scrape's
                // timestamp, + its duration], so the rate lies within what net/dev gives
                // over the narrowest and the widest of those spans. That is the whole claim
                // the readings allow: where the spans are within 10% of each other (scrapes
                // of a few ms a second apart) it holds the rate within 10% of net/dev's;
                // on a loaded machine, where scrapes take hundreds of ms, they are wider,
                // and a rate off by its sharing (2x, 3x) still falls outside.
                let mut bounds = (0.0, 0.0);
                for pod in &pods {
                    let (a, b) = last_two_scrapes(prometheus, family, ns, pod, t1).await;
                    let window = |stamp: f64| (stamp, stamp + scrape_duration(&durations, stamp) + 0.001);
                    let ((a_from, a_to), (b_from, b_to)) = (window(a), window(b));
                    let (a_low, a_high) =
                        counter_bounds(&samples, pod, column, a_from, a_to).expect("net/dev readings");
                    let (b_low, b_high) =
                        counter_bounds(&samples, pod, column, b_from, b_to).expect("net/dev readings");
                    bounds.0 += (b_low - a_high) / (b - a);
                    bounds.1 += (b_high - a_low) / (b - a);
                }
                println!(
                    "{}: {family} by {by} {label}: {got:.1}/s from Prometheus (irate), {:.1}..={:.1}/s from net/dev over the same scrapes (+-{:.0}%)",
                    expr.origin,
                    bounds.0,
                    bounds.1,
                    50.0 * (bounds.1 - bounds.0) / (bounds.0 + bounds.1).max(1e-9)
                );
                assert!(
                    bounds.0 - 1e-6 <= got && got <= bounds.1 + 1e-6,
                    "{}: {label}: {got}/s outside {bounds:?} from net/dev: {promql}",
                    expr.origin
                );
                compared += 1;
                seen += 1;
                continue;
            }
            let mut want: f64 = pods.iter().map(|pod| truth(pod, column, t0, t1)).sum();
            if compact.starts_with("avg") {
                want /= pods.len() as f64;
            }
            println!(
                "{}: {family} by {by} {label}: {got:.1}/s from Prometheus, {want:.1}/s from net/dev",
                expr.origin
            );
            if want == 0.0 {
                assert_eq!(got, 0.0, "{}: {label}: {promql}", expr.origin);
            } else {
                assert!(
                    (got - want).abs() <= 0.10 * want,
                    "{}: {label}: {got}/s against {want}/s from net/dev: {promql}",
                    expr.origin
                );
            }
            compared += 1;
            seen += 1;
        }
        assert!(seen > 0, "{}: no data for this test's pods: {promql}", expr.origin);
    }
    let bytes_per_second = truth(&scene.client.pod, 0, t0, t1);
    println!(
        "network: {compared} per-pod/per-workload rates of {compared_exprs} dashboard expressions within 10% of net/dev \
         (the client pod received {bytes_per_second:.0} B/s)"
    );
    assert!(
        bytes_per_second > 100_000.0,
        "the traffic flowed: {bytes_per_second} B/s"
    );
    assert!(
        compared_exprs >= 8,
        "only {compared_exprs} network expressions compared"
    );
}

/// The CPU rule: the cgroup's CPU time read here every 20 ms bounds what sonde can have read
/// during each scrape (Prometheus stamps a sample with the scrape's start and records how
/// long it took): every sample sonde gave lies within those bounds, and every per-second
/// `sum_irate` recording is the rate between two of those samples (found by recomputing it
/// from the raw series) and lies within the bounds they give. No tolerance beyond the
/// milliseconds of Prometheus's timestamps.
async fn check_cpu(prometheus: &Prometheus, scene: &Scene, all: &[(&PodNames, &str, &Container)]) {
    let ns = &scene.namespace;
    let cpu_reader = {
        let containers: Vec<(String, String, String)> = all
            .iter()
            .map(|(p, name, c)| (format!("{}/{name}", p.pod), p.uid.clone(), c.id.clone()))
            .collect();
        move || {
            containers
                .iter()
                .map(|(key, uid, id)| (key.clone(), vec![cpu_seconds(uid, id)]))
                .collect()
        }
    };
    let sampler = Sampler::start(Duration::from_millis(20), cpu_reader);
    tokio::time::sleep(Duration::from_secs(CPU_WINDOW_SECONDS + 2)).await;
    let c1 = now() - 0.5;
    let samples = sampler.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let range = |promql: String| {
        let prometheus = &prometheus;
        async move {
            let result = prometheus.query_at(&promql, c1).await.expect("query a range");
            assert_eq!(result.len(), 1, "{promql}: {result:?}");
            result[0]["values"]
                .as_array()
                .expect("a range of samples")
                .iter()
                .map(|v| {
                    let value = v[1].as_str().and_then(|v| v.parse::<f64>().ok()).expect("a value");
                    (v[0].as_f64().expect("a timestamp"), value)
                })
                .collect::<Vec<(f64, f64)>>()
        }
    };
    let lookback = CPU_WINDOW_SECONDS + 3;
    let durations = scrape_durations(prometheus, c1, lookback).await;
    let duration_at = |stamp: f64| scrape_duration(&durations, stamp);
    let slack = |v: f64| 1e-9 * v.abs().max(1.0);
    for (pod, name, _) in all {
        let key = format!("{}/{name}", pod.pod);
        let selector = format!(
            "{{job=\"cadvisor\",namespace=\"{ns}\",pod=\"{}\",container=\"{name}\"}}",
            pod.pod
        );
        let raw = range(format!("container_cpu_usage_seconds_total{selector}[{lookback}s]")).await;
        // A sample's read happened within [its timestamp, + the scrape's duration]; the
        // timestamp is in milliseconds, truncated.
        let read_window = |stamp: f64| (stamp, stamp + duration_at(stamp) + 0.001);
        let mut samples_checked = 0;
        for (stamp, value) in &raw {
            let (from, to) = read_window(*stamp);
            let Some((low, high)) = counter_bounds(&samples, &key, 0, from, to) else {
                continue;
            };
            assert!(
                low - slack(low) <= *value && *value <= high + slack(high),
                "{key}: sonde's sample {value} at {stamp} outside the cgroup's {low}..={high} during the scrape"
            );
            samples_checked += 1;
        }
        let recorded = range(format!(
            "{CPU_RULE}{{namespace=\"{ns}\",pod=\"{}\",container=\"{name}\",node=\"{NODE}\"}}[{CPU_WINDOW_SECONDS}s]",
            pod.pod
        ))
        .await;
        let (mut got, mut low_sum, mut high_sum, mut matched) = (0.0, 0.0, 0.0, 0);
        for (evaluated, value) in &recorded {
            let pair = raw.windows(2).rev().find(|w| {
                let irate = (w[1].1 - w[0].1) / (w[1].0 - w[0].0);
                w[1].0 <= *evaluated && (irate - value).abs() <= slack(*value)
            });
            let Some(pair) = pair else { continue };
            let ((a_from, a_to), (b_from, b_to)) = (read_window(pair[0].0), read_window(pair[1].0));
            let (Some((a_low, a_high)), Some((b_low, b_high))) = (
                counter_bounds(&samples, &key, 0, a_from, a_to),
                counter_bounds(&samples, &key, 0, b_from, b_to),
            ) else {
                continue; // outside the cgroup readings
            };
            let span = pair[1].0 - pair[0].0;
            let (low, high) = ((b_low - a_high) / span, (b_high - a_low) / span);
            assert!(
                low - slack(low) <= *value && *value <= high + slack(high),
                "{key}: {CPU_RULE} {value} at {evaluated} outside the cgroup's {low}..={high} over the same scrapes"
            );
            got += value;
            low_sum += low;
            high_sum += high;
            matched += 1;
        }
        assert!(
            matched >= 5 && samples_checked >= 5,
            "{key}: only {matched} recordings and {samples_checked} samples within the cgroup readings: {recorded:?} {raw:?}"
        );
        let n = matched as f64;
        println!(
            "{CPU_RULE} {key}: {:.4} cores (mean of {matched} recordings), the cgroup's bounds {:.4}..={:.4}; \
             {samples_checked} raw samples within the cgroup's bounds",
            got / n,
            low_sum / n,
            high_sum / n
        );
        if *name == "busy" {
            assert!((got / n - 0.25).abs() < 0.02, "the burner ran its quota: {}", got / n);
        }
    }
}

/// The memory rules: each recording against the cgroup's files read before and after it; compared
/// exactly when the files did not move in between.
async fn check_memory(prometheus: &Prometheus, scene: &Scene, all: &[(&PodNames, &str, &Container)]) {
    let ns = &scene.namespace;
    let mut exact = Vec::new();
    for (pod, name, container) in all {
        let selector = format!(
            "{{namespace=\"{ns}\",pod=\"{}\",container=\"{name}\",node=\"{NODE}\"}}",
            pod.pod
        );
        let mut moved = 0;
        loop {
            let first = memory_figures(&pod.uid, &container.id);
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let at = now();
            let mut recorded = [0u64; 4];
            let mut missing = None;
            for (slot, rule) in recorded.iter_mut().zip(MEMORY_RULES) {
                let result = prometheus
                    .query_at(&format!("{rule}{selector}"), at)
                    .await
                    .expect("query");
                assert!(result.len() <= 1, "{rule}{selector}: {result:?}");
                match result.first() {
                    Some(series) => *slot = value_of(series) as u64,
                    None => missing = Some(rule),
                }
            }
            let second = memory_figures(&pod.uid, &container.id);
            if let Some(rule) = missing {
                // Said, and tried again: a scrape that failed or timed out leaves the
                // recording without a value until the next one.
                let scrapes = prometheus
                    .query_at("scrape_duration_seconds{job=\"cadvisor\"}[5s]", at)
                    .await
                    .unwrap_or_default();
                let up = prometheus
                    .query_at("up{job=\"cadvisor\"}[5s]", at)
                    .await
                    .unwrap_or_default();
                println!(
                    "memory {}/{name}: no {rule} at {at:.3}; sonde's last scrapes: durations {}, up {}",
                    pod.pod,
                    scrapes.first().map_or(serde_json::Value::Null, |s| s["values"].clone()),
                    up.first().map_or(serde_json::Value::Null, |s| s["values"].clone())
                );
                moved += 1;
                assert!(moved < 10, "{}/{name}: {rule} missing or moving in 10 tries", pod.pod);
                continue;
            }
            if first != second {
                moved += 1;
                if moved < 10 {
                    continue;
                }
                println!(
                    "memory {}/{name}: the cgroup's figures moved in every one of 10 tries ({first:?} then {second:?}); \
                     recorded {recorded:?}",
                    pod.pod
                );
                break;
            }
            println!(
                "memory {}/{name}: working set, rss, cache, swap recorded {recorded:?}, cgroup {first:?}",
                pod.pod
            );
            assert_eq!(
                recorded, first,
                "{}/{name}: recordings against the cgroup files",
                pod.pod
            );
            exact.push(format!("{}/{name}", pod.pod));
            break;
        }
    }
    for name in ["POD", "busy", "cache"] {
        assert!(
            exact.iter().filter(|e| e.ends_with(&format!("/{name}"))).count() >= 1,
            "{name} was compared exactly: {exact:?}"
        );
    }
    println!("memory: {} containers compared exactly: {exact:?}", exact.len());
}

/// Every rule, alert and dashboard expression parses and evaluates (no rule failing); prints
/// how many return data.
async fn count_expressions(prometheus: &Prometheus, scene: &Scene) {
    let dashboards = dashboard_exprs();
    let rules = rule_exprs();
    let loaded = prometheus.rules().await;
    assert_eq!(loaded.len(), rules.len(), "Prometheus loaded every rule and alert");
    // "err" only: a rule of a group with a long interval (the mixin's apiserver availability
    // group runs every 3 minutes) may not have run yet, "unknown"; its expression is
    // evaluated below all the same.
    let unhealthy: Vec<String> = loaded
        .iter()
        .filter(|r| r["health"] == "err")
        .map(|r| format!("{}: {} ({})", r["name"], r["health"], r["lastError"]))
        .collect();
    let not_run = loaded.iter().filter(|r| r["health"] == "unknown").count();
    let mut counts = BTreeMap::new();
    for (kind, exprs) in [("rules and alerts", rules), ("dashboard queries", dashboards)] {
        let (mut with_data, mut execution_errors) = (0, Vec::new());
        // Per file (dashboards) or per rule name (rules and alerts): (with data, all).
        let mut by_origin: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for expr in &exprs {
            let promql = substitute(&expr.promql, scene);
            let origin = match kind {
                "rules and alerts" => expr.origin.clone(),
                _ => expr.origin.split(':').next().unwrap_or_default().to_owned(),
            };
            let counted = by_origin.entry(origin).or_default();
            counted.1 += 1;
            match prometheus.query(&promql).await {
                Ok(result) if !result.is_empty() => {
                    with_data += 1;
                    counted.0 += 1;
                }
                Ok(_) => {}
                Err(error) if error.starts_with("\"execution\"") => {
                    execution_errors.push(format!("{}: {error}", expr.origin))
                }
                Err(error) => panic!("{}: {promql}\ndoes not parse: {error}", expr.origin),
            }
        }
        println!(
            "{kind}: {} expressions, all parse; {with_data} return data; {} fail to evaluate{}",
            exprs.len(),
            execution_errors.len(),
            execution_errors.iter().map(|e| format!("\n  {e}")).collect::<String>()
        );
        for (origin, (data, all)) in &by_origin {
            if kind != "rules and alerts" || *data > 0 {
                println!("  {origin}: {data} of {all} with data");
            }
        }
        assert!(execution_errors.is_empty(), "{kind}: every expression evaluates");
        counts.insert(kind, with_data);
    }
    println!(
        "rules Prometheus reports failing: {}{}; not run yet: {not_run}",
        unhealthy.len(),
        unhealthy.iter().map(|e| format!("\n  {e}")).collect::<String>()
    );
    assert!(unhealthy.is_empty(), "every rule evaluates without error");
    assert!(counts["dashboard queries"] > 0 && counts["rules and alerts"] > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_mixin_gives_the_kernels_figures_on_sonde() {
    let test = "the_kubernetes_mixin_gives_the_kernels_figures_on_sonde";
    if !root_or_skip(test) || !docker_or_skip(test) {
        return;
    }
    println!(
        "kubernetes-mixin: {}",
        std::fs::read_to_string(mixin_path("VERSION"))
            .expect("VERSION")
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            .join("; ")
    );

    let scene = Scene {
        namespace: unique_name("mixin"),
        server: PodNames::new("web", "7d9f8c6b5", "x2k4q"),
        client: PodNames::new("client", "5c6b7d8f9", "p9z3m"),
    };
    let ns = scene.namespace.clone();
    // Dropped last: after every container in them is gone.
    let _cgroups = PodCgroups::new(&[&scene.server.uid, &scene.client.uid]);

    // The server pod: a sandbox and a web server with a 1 MiB file.
    let server_sandbox = pod_container(&ns, &scene.server, "POD", &[], "sleep 3600");
    let joined = format!("container:{}", server_sandbox.id);
    let web = pod_container(
        &ns,
        &scene.server,
        "web",
        &["--network", &joined],
        "mkdir -p /www && dd if=/dev/zero of=/www/payload bs=1024 count=1024 2>/dev/null && echo ready && httpd -f -p 8080 -h /www",
    );
    web.wait_for_log("ready", Duration::from_secs(30));
    let server_ip = server_sandbox.inspect("{{.NetworkSettings.IPAddress}}");
    // What the server sends is shaped to 1 MB/s (a token bucket of 4 KB) in the pod's own
    // network namespace: traffic steady at the millisecond scale.
    let shaped = std::process::Command::new("nsenter")
        .args(["-t", &server_sandbox.inspect("{{.State.Pid}}"), "-n"])
        .args(["tc", "qdisc", "add", "dev", "eth0", "root", "tbf"])
        .args(["rate", "8mbit", "burst", "4kb", "latency", "100ms"])
        .output()
        .expect("run nsenter tc");
    assert!(shaped.status.success(), "tc in the server pod: {shaped:?}");
    // The client pod: a sandbox, a fetcher, a CPU burner held to a quarter of a CPU in 10 ms
    // periods, and a container holding 16 MiB in its /dev/shm.
    let client_sandbox = pod_container(&ns, &scene.client, "POD", &[], "sleep 3600");
    let joined = format!("container:{}", client_sandbox.id);
    let fetch = pod_container(
        &ns,
        &scene.client,
        "fetch",
        &["--network", &joined],
        &format!("while :; do wget -q -O /dev/null http://{server_ip}:8080/payload; done"),
    );
    let busy = pod_container(
        &ns,
        &scene.client,
        "busy",
        &["--network", &joined, "--cpu-period", "10000", "--cpu-quota", "2500"],
        "while :; do :; done",
    );
    let cache = pod_container(
        &ns,
        &scene.client,
        "cache",
        &["--network", &joined],
        "dd if=/dev/zero of=/dev/shm/hold bs=1048576 count=16 2>/dev/null && echo held && sleep 3600",
    );
    cache.wait_for_log("held", Duration::from_secs(30));
    let client_ip = client_sandbox.inspect("{{.NetworkSettings.IPAddress}}");
    let ips: BTreeMap<String, String> = [
        (scene.server.uid.clone(), server_ip.clone()),
        (scene.client.uid.clone(), client_ip.clone()),
    ]
    .into();

    // Every container of the two pods: (pod, container name, container).
    let all: Vec<(&PodNames, &str, &Container)> = vec![
        (&scene.server, "POD", &server_sandbox),
        (&scene.server, "web", &web),
        (&scene.client, "POD", &client_sandbox),
        (&scene.client, "fetch", &fetch),
        (&scene.client, "busy", &busy),
        (&scene.client, "cache", &cache),
    ];
    let apps: Vec<_> = all.iter().filter(|(_, name, _)| *name != "POD").copied().collect();

    let kubelet = TestKubelet::start("mixin-token").await;
    *lock(&kubelet.state.pods) = Some(pods_document(&scene, &apps, &ips));
    let (ksm, _ksm_task) = serve_text(kube_state_metrics(&scene, &ips)).await;
    let mut flags = kubelet.flags();
    flags.extend([
        "--no-collector.connection".to_owned(),
        "--container.cache-validity=500ms".to_owned(),
        "--container.inventory-validity=1s".to_owned(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let sonde = Sonde::start(&flags);
    let prometheus = Prometheus::start_jobs(
        &[("cadvisor", &[sonde.addr]), ("kube-state-metrics", &[ksm])],
        &rule_files(),
    );
    prometheus.wait_for("up == 1", 2, Duration::from_secs(60)).await;
    let rule = MEMORY_RULES[0];
    let named = prometheus
        .wait_for(
            &format!("{rule}{{namespace=\"{ns}\"}}"),
            all.len(),
            Duration::from_secs(90),
        )
        .await;
    println!("{rule}: {} series for the two pods", named.len());
    let started = Instant::now();

    check_network(&prometheus, &scene, [&server_sandbox, &client_sandbox], started).await;
    check_cpu(&prometheus, &scene, &all).await;
    check_memory(&prometheus, &scene, &all).await;
    count_expressions(&prometheus, &scene).await;
    drop(prometheus);
}
