//! The Kubelet source against an HTTPS server made in the test (its CA and certificate
//! generated here, bearer token checked) that serves `/pods` and `/stats/summary` in the real
//! v1 and stats v1alpha1 schemas, with a fake cgroup forest in the kubepods layouts whose ids
//! match the pods. The real binary is scraped; labels and counters are compared exactly.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sonde::cgroup::fixture::{FakeCgroup, write_v2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

const UID_WEB: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e01";
const UID_DB: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e02";
const UID_AGENT: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e03";
const UID_HIDDEN: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e04";
const UID_BATCH: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e05";
const UID_PENDING: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e06";
const UID_UNKNOWN: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e07";

/// A 64-hex container id.
fn cid(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

const APP: u8 = 0xa1;
const LOG: u8 = 0xa2;
const PAUSE: u8 = 0xa0;
const DB: u8 = 0xb1;
const AGENT: u8 = 0xc1;
const HIDDEN: u8 = 0xd1;
const BATCH: u8 = 0xe1;
const PLAIN_DOCKER: u8 = 0xf1;

fn web_pod() -> String {
    format!("/kubepods/burstable/pod{UID_WEB}")
}
fn db_pod() -> String {
    format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        UID_DB.replace('-', "_")
    )
}
fn agent_pod() -> String {
    format!("/kubepods/pod{UID_AGENT}")
}

/// Every cgroup of the fake node: (path, seed).
fn forest() -> Vec<(String, u64)> {
    vec![
        (web_pod(), 0),
        (format!("{}/{}", web_pod(), cid(APP)), 1),
        (format!("{}/{}", web_pod(), cid(LOG)), 2),
        (format!("{}/{}", web_pod(), cid(PAUSE)), 3),
        (db_pod(), 4),
        (format!("{}/cri-containerd-{}.scope", db_pod(), cid(DB)), 5),
        (agent_pod(), 6),
        (format!("{}/{}", agent_pod(), cid(AGENT)), 7),
        (format!("/kubepods/besteffort/pod{UID_HIDDEN}"), 8),
        (format!("/kubepods/besteffort/pod{UID_HIDDEN}/{}", cid(HIDDEN)), 9),
        (format!("/kubepods/besteffort/pod{UID_BATCH}"), 10),
        (format!("/kubepods/besteffort/pod{UID_BATCH}/{}", cid(BATCH)), 11),
        (format!("/docker/{}", cid(PLAIN_DOCKER)), 12),
    ]
}

fn write_forest(dir: &Path, cgroups: &[(String, u64)]) -> PathBuf {
    let sysfs = dir.join("sys");
    for (id, seed) in cgroups {
        write_v2(&sysfs, &FakeCgroup::seeded(id.clone(), *seed)).expect("write the fake cgroup");
    }
    std::fs::create_dir_all(dir.join("proc")).expect("mkdir proc");
    sysfs
}

fn container_status(name: &str, id: Option<u8>, image: &str) -> serde_json::Value {
    let mut status = json!({
        "name": name,
        "state": {"running": {"startedAt": "2026-11-23T10:00:00Z"}},
        "lastState": {},
        "ready": true,
        "restartCount": 0,
        "image": image,
        "imageID": format!("{image}@sha256:{}", "9".repeat(64)),
        "started": true
    });
    if let Some(id) = id {
        status["containerID"] = json!(format!("containerd://{}", cid(id)));
    }
    status
}

fn pod(
    name: &str,
    namespace: &str,
    uid: &str,
    extra_meta: serde_json::Value,
    spec: serde_json::Value,
    statuses: Vec<serde_json::Value>,
) -> serde_json::Value {
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "resourceVersion": "81234",
        "creationTimestamp": "2026-11-23T09:59:58Z",
        "labels": {"app": name},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-rs"), "uid": "0000", "controller": true}]
    });
    if let (Some(meta), Some(extra)) = (metadata.as_object_mut(), extra_meta.as_object()) {
        meta.extend(extra.clone());
    }
    json!({
        "metadata": metadata,
        "spec": spec,
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-11-23T10:00:01Z"}],
            "hostIP": "192.0.2.10",
            "podIP": "10.244.1.7",
            "podIPs": [{"ip": "10.244.1.7"}],
            "startTime": "2026-11-23T09:59:59Z",
            "containerStatuses": statuses,
            "qosClass": "Burstable"
        }
    })
}

fn spec(containers: &[(&str, &str)], host_network: bool) -> serde_json::Value {
    json!({
        "containers": containers.iter().map(|(name, image)| json!({
            "name": name, "image": image,
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"
        })).collect::<Vec<_>>(),
        "restartPolicy": "Always",
        "nodeName": "node-1",
        "hostNetwork": host_network,
        "serviceAccountName": "default"
    })
}

/// `/pods` as the Kubelet writes it (a `v1.PodList`).
fn pods_document() -> String {
    let items = vec![
        pod(
            "web-0",
            "shop",
            UID_WEB,
            json!({"annotations": {"kubernetes.io/config.seen": "2026-11-23T09:59:58Z", "sonde.io/exclude": "false"}}),
            spec(
                &[
                    ("app", "registry.local/shop/web:2.1"),
                    ("log-shipper", "registry.local/fluent-bit:3"),
                ],
                false,
            ),
            vec![
                container_status("app", Some(APP), "registry.local/shop/web:2.1"),
                container_status("log-shipper", Some(LOG), "registry.local/fluent-bit:3"),
            ],
        ),
        pod(
            "db-0",
            "data",
            UID_DB,
            json!({}),
            spec(&[("postgres", "postgres:16")], false),
            vec![container_status("postgres", Some(DB), "postgres:16")],
        ),
        pod(
            "node-agent-x7k2p",
            "kube-system",
            UID_AGENT,
            json!({}),
            spec(&[("agent", "registry.local/agent:1")], true),
            vec![container_status("agent", Some(AGENT), "registry.local/agent:1")],
        ),
        pod(
            "hidden-0",
            "shop",
            UID_HIDDEN,
            json!({"annotations": {"sonde.io/exclude": "true"}}),
            spec(&[("secret", "registry.local/secret:1")], false),
            vec![container_status("secret", Some(HIDDEN), "registry.local/secret:1")],
        ),
        pod(
            "batch-0",
            "ignored-ns",
            UID_BATCH,
            json!({}),
            spec(&[("job", "registry.local/job:1")], false),
            vec![container_status("job", Some(BATCH), "registry.local/job:1")],
        ),
        // Still being created: no container id, no image, no spec, no annotations.
        json!({
            "metadata": {"name": "pending-0", "namespace": "shop", "uid": UID_PENDING},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}, "ready": false, "restartCount": 0}
            ]}
        }),
    ];
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}).to_string()
}

fn interface(name: &str, rx: u64, rx_errors: u64, tx: u64, tx_errors: u64) -> serde_json::Value {
    json!({"name": name, "rxBytes": rx, "rxErrors": rx_errors, "txBytes": tx, "txErrors": tx_errors})
}

fn pod_stats(name: &str, namespace: &str, uid: &str, network: Option<serde_json::Value>) -> serde_json::Value {
    let mut stats = json!({
        "podRef": {"name": name, "namespace": namespace, "uid": uid},
        "startTime": "2026-11-23T09:59:59Z",
        "containers": [{
            "name": "app", "startTime": "2026-11-23T10:00:00Z",
            "cpu": {"time": "2026-11-23T10:05:00Z", "usageNanoCores": 1200000, "usageCoreNanoSeconds": 9000000000u64,
                    "psi": {"full": {"total": 10, "avg10": 0.0, "avg60": 0.0, "avg300": 0.0}, "some": {"total": 20, "avg10": 0.0, "avg60": 0.0, "avg300": 0.0}}},
            "memory": {"time": "2026-11-23T10:05:00Z", "workingSetBytes": 1000, "rssBytes": 900, "pageFaults": 3, "majorPageFaults": 0},
            "swap": {"time": "2026-11-23T10:05:00Z", "swapUsageBytes": 0, "swapAvailableBytes": 0},
            "rootfs": {"time": "2026-11-23T10:05:00Z", "usedBytes": 4096},
            "logs": {"time": "2026-11-23T10:05:00Z", "usedBytes": 1024}
        }],
        "cpu": {"time": "2026-11-23T10:05:00Z", "usageNanoCores": 1300000},
        "memory": {"time": "2026-11-23T10:05:00Z", "workingSetBytes": 2000},
        "volume": [{"time": "2026-11-23T10:05:00Z", "name": "kube-api-access", "usedBytes": 12288}],
        "ephemeral-storage": {"time": "2026-11-23T10:05:00Z", "usedBytes": 5120},
        "process_stats": {"process_count": 3},
        "swap": {"time": "2026-11-23T10:05:00Z", "swapUsageBytes": 0}
    });
    if let Some(network) = network {
        stats["network"] = network;
    }
    stats
}

/// `/stats/summary` as the Kubelet writes it (a stats `v1alpha1.Summary`).
fn summary_document() -> String {
    let web_eth0 = interface("eth0", 1_000_001, 2, 2_000_003, 4);
    let mut web_network = web_eth0.clone();
    web_network["time"] = json!("2026-11-23T10:05:00Z");
    // A second interface (a CNI add-on's) with the error counts left out.
    web_network["interfaces"] = json!([web_eth0, {"name": "net1", "rxBytes": 5000, "txBytes": 6000}]);
    let pods = vec![
        pod_stats("web-0", "shop", UID_WEB, Some(web_network)),
        // An older Kubelet: only the default interface, inline.
        pod_stats(
            "db-0",
            "data",
            UID_DB,
            Some(
                json!({"time": "2026-11-23T10:05:00Z", "name": "eth0", "rxBytes": 777, "rxErrors": 0, "txBytes": 888, "txErrors": 0}),
            ),
        ),
        // Host networking: these are the node's figures, not the pod's.
        pod_stats(
            "node-agent-x7k2p",
            "kube-system",
            UID_AGENT,
            Some(
                json!({"name": "eth0", "rxBytes": 999_999_999, "txBytes": 888_888_888, "interfaces": [interface("eth0", 999_999_999, 0, 888_888_888, 0)]}),
            ),
        ),
        pod_stats("hidden-0", "shop", UID_HIDDEN, Some(interface("eth0", 11, 0, 12, 0))),
        pod_stats(
            "batch-0",
            "ignored-ns",
            UID_BATCH,
            Some(interface("eth0", 21, 0, 22, 0)),
        ),
        pod_stats("pending-0", "shop", UID_PENDING, None),
        pod_stats("gone-0", "shop", UID_UNKNOWN, Some(interface("eth0", 31, 0, 32, 0))),
    ];
    json!({
        "node": {
            "nodeName": "node-1",
            "systemContainers": [{"name": "kubelet", "startTime": "2026-11-23T09:00:00Z"}],
            "startTime": "2026-11-23T09:00:00Z",
            "cpu": {"time": "2026-11-23T10:05:00Z", "usageNanoCores": 250000000, "usageCoreNanoSeconds": 123456789000u64},
            "memory": {"time": "2026-11-23T10:05:00Z", "availableBytes": 1000000000u64, "workingSetBytes": 500000000},
            "network": {"time": "2026-11-23T10:05:00Z", "name": "eth0", "rxBytes": 5, "txBytes": 6, "interfaces": [interface("eth0", 5, 0, 6, 0)]},
            "fs": {"time": "2026-11-23T10:05:00Z", "availableBytes": 1, "capacityBytes": 2, "usedBytes": 1},
            "runtime": {"imageFs": {"time": "2026-11-23T10:05:00Z", "usedBytes": 1}},
            "rlimit": {"time": "2026-11-23T10:05:00Z", "maxpid": 4194304, "curproc": 300},
            "swap": {"time": "2026-11-23T10:05:00Z", "swapAvailableBytes": 0, "swapUsageBytes": 0}
        },
        "pods": pods
    })
    .to_string()
}

/// How the test Kubelet answers an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Status(u16),
    /// Holds the request without answering (longer than any timeout the tests set).
    Stall,
    /// A complete HTTP answer whose JSON is cut in the middle.
    Truncated,
    /// 50 MB of JSON, without a Content-Length, so the client sees its size only by reading.
    Huge,
}

#[derive(Default)]
struct KubeletState {
    token: Mutex<String>,
    faults: Mutex<HashMap<String, Fault>>,
    /// Path → requests received (authorized or not).
    requests: Mutex<HashMap<String, u64>>,
    /// The Authorization header of each request, in order.
    tokens_seen: Mutex<Vec<String>>,
    /// Delays the `/stats/summary` answer, so concurrent scrapes overlap the refresh.
    summary_delay: Mutex<Duration>,
}

/// The test Kubelet: HTTPS on loopback with a certificate from a CA made here.
struct TestKubelet {
    addr: SocketAddr,
    state: Arc<KubeletState>,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TestKubelet {
    async fn start(token: &str) -> TestKubelet {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test kubelet CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("certificate");
        std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).expect("write CA");
        std::fs::write(dir.path().join("token"), format!("{token}\n")).expect("write token");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(KubeletState::default());
        *lock(&state.token) = token.to_owned();
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), Arc::clone(&served));
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, &state).await;
                    }
                });
            }
        });
        TestKubelet { addr, state, dir, task }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// The flags that point sonde at this Kubelet.
    fn flags(&self) -> Vec<String> {
        vec![
            format!("--kubelet.url={}", self.url()),
            format!("--kubelet.ca-file={}", self.ca_file().display()),
            format!("--kubelet.token-file={}", self.token_file().display()),
        ]
    }

    fn requests(&self, path: &str) -> u64 {
        lock(&self.state.requests).get(path).copied().unwrap_or(0)
    }

    fn set_fault(&self, fault: Fault) {
        let mut faults = lock(&self.state.faults);
        for path in ["/pods", "/stats/summary"] {
            faults.insert(path.to_owned(), fault);
        }
    }
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S, state: &KubeletState) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let authorization = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization").then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    *lock(&state.requests).entry(path.clone()).or_default() += 1;
    lock(&state.tokens_seen).push(authorization.clone());
    let expected = format!("Bearer {}", lock(&state.token));
    if authorization != expected {
        return respond(&mut stream, 401, b"Unauthorized").await;
    }
    let fault = lock(&state.faults).get(&path).copied().unwrap_or(Fault::None);
    let document = match path.as_str() {
        "/pods" => pods_document(),
        "/stats/summary" => {
            let delay = *lock(&state.summary_delay);
            tokio::time::sleep(delay).await;
            summary_document()
        }
        _ => return respond(&mut stream, 404, b"404 page not found").await,
    };
    match fault {
        Fault::None => respond(&mut stream, 200, document.as_bytes()).await,
        Fault::Status(403) => {
            respond(
                &mut stream,
                403,
                b"Forbidden (user=system:serviceaccount:monitoring:sonde, verb=get, resource=nodes, subresource=stats)",
            )
            .await
        }
        Fault::Status(code) => respond(&mut stream, code, b"Internal Server Error").await,
        Fault::Stall => tokio::time::sleep(Duration::from_secs(120)).await,
        Fault::Truncated => respond(&mut stream, 200, &document.as_bytes()[..document.len() / 2]).await,
        Fault::Huge => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let _ = stream.write_all(b"{\"items\": [").await;
            let filler = format!("{},", json!({"metadata": {"name": "x".repeat(1000)}})).into_bytes();
            let mut sent = 0;
            while sent < 50_000_000 {
                if stream.write_all(&filler).await.is_err() {
                    return; // the client gave up, as it should
                }
                sent += filler.len();
            }
            let _ = stream.write_all(b"{}]}").await;
            let _ = stream.shutdown().await;
        }
    }
}

async fn respond<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, status: u16, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_ok() && stream.write_all(body).await.is_ok() {
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    }
}

async fn scrape(sonde: &Sonde) -> String {
    scrape_url(&sonde.url("/metrics")).await
}

async fn scrape_url(url: &str) -> String {
    let response = reqwest::get(url).await.expect("scrape");
    assert_eq!(response.status(), 200);
    response.text().await.expect("body")
}

/// Every sample of a family: series (name and labels) → value.
fn samples(text: &str, family: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The label set of a container series, sorted by name.
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut pairs = pairs.to_vec();
    pairs.sort_unstable();
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

fn k8s_labels(id: &str, container: &str, image: &str, namespace: &str, pod: &str) -> Vec<(&'static str, String)> {
    vec![
        ("container", container.to_owned()),
        ("id", id.to_owned()),
        ("image", image.to_owned()),
        ("name", String::new()),
        ("namespace", namespace.to_owned()),
        ("pod", pod.to_owned()),
    ]
}

fn series(family: &str, base: &[(&'static str, String)], extra: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.extend_from_slice(extra);
    format!("{family}{}", labels(&pairs))
}

fn memory_usage(seed: u64) -> f64 {
    FakeCgroup::seeded("/x", seed).memory_usage as f64
}

/// Scrapes until `ready` holds for a scrape (the first inventory may be built before the
/// first `/pods` answer arrives); bounded in count.
async fn scrape_until(sonde: &Sonde, what: &str, ready: impl Fn(&str) -> bool) -> String {
    for _ in 0..200 {
        let text = scrape(sonde).await;
        if ready(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never saw {what}:\n{}", scrape(sonde).await);
}

/// Waits until `/readyz` answers 200: the start-up collection has finished.
async fn wait_ready(sonde: &Sonde) {
    for _ in 0..300 {
        let ready = reqwest::get(sonde.url("/readyz")).await.expect("readyz");
        if ready.status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sonde never got ready");
}

fn success(text: &str, collector: &str) -> Option<f64> {
    sample_value(text, &format!("sonde_collector_success{{collector=\"{collector}\"}}"))
}

fn requests(text: &str, endpoint: &str, code: &str) -> f64 {
    sample_value(
        text,
        &format!("sonde_kubelet_requests_total{{code=\"{code}\",endpoint=\"{endpoint}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Waits for a log line that contains every one of `parts`.
fn wait_for_log(sonde: &Sonde, parts: &[&str]) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(line) = sonde.log.recv_timeout(Duration::from_millis(200))
            && parts.iter().all(|p| line.contains(p))
        {
            return line;
        }
    }
    panic!("no log line with {parts:?}");
}

fn sonde_args(sysfs: &Path, procfs: &Path, kubelet: &[String], extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--no-collector.host".to_owned(),
        "--no-collector.connection".to_owned(),
        format!("--path.sysfs={}", sysfs.display()),
        format!("--path.procfs={}", procfs.display()),
        "--container.exclude-namespace=^ignored-ns$".to_owned(),
    ];
    args.extend(kubelet.iter().cloned());
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn start(args: &[String]) -> Sonde {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Sonde::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_name_container_series_and_pod_networks_land_on_pod_series() {
    let kubelet = TestKubelet::start("token-1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sysfs = write_forest(dir.path(), &forest());
    let sonde = start(&sonde_args(&sysfs, &dir.path().join("proc"), &kubelet.flags(), &[]));
    let app = format!("{}/{}", web_pod(), cid(APP));
    let app_series = series(
        "container_memory_usage_bytes",
        &k8s_labels(&app, "app", "registry.local/shop/web:2.1", "shop", "web-0"),
        &[],
    );
    // Every container_* series of every cgroup: the pods' names, the sandbox with its pod's,
    // the pod-level series with container="", the annotated pod and the filtered namespace
    // gone, the plain Docker container without Kubernetes names.
    let web = web_pod();
    let db = db_pod();
    let agent = agent_pod();
    let expected_memory: BTreeMap<String, f64> = [
        (k8s_labels(&web, "", "", "shop", "web-0"), 0),
        (
            k8s_labels(&app, "app", "registry.local/shop/web:2.1", "shop", "web-0"),
            1,
        ),
        (
            k8s_labels(
                &format!("{web}/{}", cid(LOG)),
                "log-shipper",
                "registry.local/fluent-bit:3",
                "shop",
                "web-0",
            ),
            2,
        ),
        (k8s_labels(&format!("{web}/{}", cid(PAUSE)), "", "", "shop", "web-0"), 3),
        (k8s_labels(&db, "", "", "data", "db-0"), 4),
        (
            k8s_labels(
                &format!("{db}/cri-containerd-{}.scope", cid(DB)),
                "postgres",
                "postgres:16",
                "data",
                "db-0",
            ),
            5,
        ),
        (k8s_labels(&agent, "", "", "kube-system", "node-agent-x7k2p"), 6),
        (
            k8s_labels(
                &format!("{agent}/{}", cid(AGENT)),
                "agent",
                "registry.local/agent:1",
                "kube-system",
                "node-agent-x7k2p",
            ),
            7,
        ),
        (
            k8s_labels(&format!("/docker/{}", cid(PLAIN_DOCKER)), "", "", "", ""),
            12,
        ),
    ]
    .into_iter()
    .map(|(base, seed)| (series("container_memory_usage_bytes", &base, &[]), memory_usage(seed)))
    .collect();
    // The pod list can land while an inventory is being built: that inventory names only
    // some cgroups, and the source's new generation has the next scrape rebuild it whole.
    let text = scrape_until(&sonde, "the pods' names and networks", |t| {
        t.contains(&app_series)
            && t.contains("container_network_receive_bytes_total{")
            && samples(t, "container_memory_usage_bytes") == expected_memory
    })
    .await;
    assert_eq!(samples(&text, "container_memory_usage_bytes"), expected_memory);

    // Pod networks on the pod-level series only, with exactly that series' labels plus
    // `interface`; the host-network pod, the excluded ones and the unknown one have none.
    let web_base = k8s_labels(&web, "", "", "shop", "web-0");
    let db_base = k8s_labels(&db, "", "", "data", "db-0");
    let net = |family: &str, base: &[(&'static str, String)], interface: &str, value: f64| {
        (
            series(
                &format!("container_network_{family}_total"),
                base,
                &[("interface", interface)],
            ),
            value,
        )
    };
    let expected_network: BTreeMap<String, f64> = [
        net("receive_bytes", &web_base, "eth0", 1_000_001.0),
        net("receive_errors", &web_base, "eth0", 2.0),
        net("transmit_bytes", &web_base, "eth0", 2_000_003.0),
        net("transmit_errors", &web_base, "eth0", 4.0),
        net("receive_bytes", &web_base, "net1", 5000.0),
        net("transmit_bytes", &web_base, "net1", 6000.0),
        net("receive_bytes", &db_base, "eth0", 777.0),
        net("receive_errors", &db_base, "eth0", 0.0),
        net("transmit_bytes", &db_base, "eth0", 888.0),
        net("transmit_errors", &db_base, "eth0", 0.0),
    ]
    .into_iter()
    .collect();
    let network: BTreeMap<String, f64> = [
        "container_network_receive_bytes_total",
        "container_network_receive_errors_total",
        "container_network_transmit_bytes_total",
        "container_network_transmit_errors_total",
        "container_network_receive_packets_total",
        "container_network_transmit_packets_total",
        "container_network_receive_packets_dropped_total",
        "container_network_transmit_packets_dropped_total",
    ]
    .iter()
    .flat_map(|family| samples(&text, family))
    .collect();
    assert_eq!(network, expected_network);
    // One family of each name in the exposition, though two collectors fill it.
    let names = family_names(&text);
    assert_eq!(
        names
            .iter()
            .filter(|n| *n == "container_network_receive_bytes_total")
            .count(),
        1
    );

    assert_eq!(success(&text, "kubelet"), Some(1.0));
    assert_eq!(success(&text, "container"), Some(1.0));
    assert_eq!(sample_value(&text, "sonde_kubelet_pods"), Some(6.0));
    assert_eq!(
        sample_value(&text, "sonde_cache_entries{cache=\"kubelet_pods\"}"),
        Some(6.0)
    );
    // Pods with network figures in the summary, known to /pods or not (pending-0 has none).
    assert_eq!(
        sample_value(&text, "sonde_cache_entries{cache=\"kubelet_summary\"}"),
        Some(6.0)
    );
    assert!(requests(&text, "/pods", "200") >= 1.0);
    assert!(requests(&text, "/stats/summary", "200") >= 1.0);
    let (ok, complaints) = promtool_check_metrics(text.as_bytes());
    assert!(ok, "promtool: {complaints}");
    assert!(
        lock(&kubelet.state.tokens_seen).iter().all(|t| t == "Bearer token-1"),
        "the token from the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_scrapes_in_one_window_make_one_summary_request() {
    let kubelet = TestKubelet::start("token-1").await;
    // Slow enough that the scrapes arrive while the one refresh is in flight.
    *lock(&kubelet.state.summary_delay) = Duration::from_secs(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let sysfs = write_forest(dir.path(), &forest());
    let sonde = start(&sonde_args(
        &sysfs,
        &dir.path().join("proc"),
        &kubelet.flags(),
        &["--kubelet.cache-validity=1h", "--web.max-requests=0"],
    ));
    let url = sonde.url("/metrics");
    let scrapes = (0..50).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { scrape_url(&url).await })
    });
    let web_eth0 = series(
        "container_network_receive_bytes_total",
        &k8s_labels(&web_pod(), "", "", "shop", "web-0"),
        &[("interface", "eth0")],
    );
    for text in futures::future::join_all(scrapes).await {
        let text = text.expect("scrape task");
        assert_eq!(success(&text, "kubelet"), Some(1.0));
        assert_eq!(
            sample_value(&text, &web_eth0),
            Some(1_000_001.0),
            "every waiter gets the one refresh"
        );
    }
    assert_eq!(kubelet.requests("/stats/summary"), 1);
    assert_eq!(kubelet.requests("/pods"), 1, "the start-up fetch serves the window");
    // The start-up collection and the 51 scrapes: one refresh (a miss), every other a hit.
    let text = scrape(&sonde).await;
    assert_eq!(requests(&text, "/stats/summary", "200"), 1.0);
    assert_eq!(
        sample_value(
            &text,
            "sonde_cache_requests_total{cache=\"kubelet_summary\",result=\"hit\"}"
        ),
        Some(51.0)
    );
    assert_eq!(
        sample_value(
            &text,
            "sonde_cache_requests_total{cache=\"kubelet_summary\",result=\"miss\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_faults_are_counted_logged_and_retried_and_the_token_is_reread() {
    let kubelet = TestKubelet::start("token-1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sysfs = write_forest(dir.path(), &forest());
    // A window shorter than the time between scrapes: every scrape asks the Kubelet again.
    let sonde = start(&sonde_args(
        &sysfs,
        &dir.path().join("proc"),
        &kubelet.flags(),
        &[
            "--kubelet.cache-validity=1ms",
            "--kubelet.timeout=2s",
            "--scrape.timeout=60s",
        ],
    ));
    let app_series = series(
        "container_memory_usage_bytes",
        &k8s_labels(
            &format!("{}/{}", web_pod(), cid(APP)),
            "app",
            "registry.local/shop/web:2.1",
            "shop",
            "web-0",
        ),
        &[],
    );
    let mut text = scrape_until(&sonde, "a healthy Kubelet source", |t| {
        t.contains(&app_series) && success(t, "kubelet") == Some(1.0)
    })
    .await;

    let faults: [(&str, Fault, &str); 6] = [
        ("unauthorized (the token rotated)", Fault::None, "401"),
        ("forbidden", Fault::Status(403), "403"),
        ("server error", Fault::Status(500), "500"),
        ("stalled past the timeout", Fault::Stall, "timeout"),
        ("truncated JSON", Fault::Truncated, "invalid_body"),
        ("a 50 MB body", Fault::Huge, "body_too_large"),
    ];
    for (what, fault, code) in faults {
        if code == "401" {
            *lock(&kubelet.state.token) = "token-2".to_owned(); // the file still says token-1
        }
        kubelet.set_fault(fault);
        let before = [requests(&text, "/pods", code), requests(&text, "/stats/summary", code)];
        let started = Instant::now();
        let failed = scrape(&sonde).await;
        let took = started.elapsed();
        println!("{what}: the scrape took {:.3} s", took.as_secs_f64());
        assert_eq!(success(&failed, "kubelet"), Some(0.0), "{what}");
        assert_eq!(success(&failed, "container"), Some(1.0), "{what}");
        assert_eq!(
            [
                requests(&failed, "/pods", code),
                requests(&failed, "/stats/summary", code)
            ],
            [before[0] + 1.0, before[1] + 1.0],
            "{what}: one failed request per endpoint, counted as {code}"
        );
        let line = wait_for_log(&sonde, &["Kubelet request failed", &format!("code={code}")]);
        println!("{what}: {line}");
        // The last good pod list is still in use: names stay on the container series.
        assert!(failed.contains(&app_series), "{what}: pod names kept");
        assert!(
            !failed.contains("container_network_receive_bytes_total{"),
            "{what}: no pod network from a failed read"
        );

        // Retriable: the next scrape after the fault goes asks again and succeeds.
        kubelet.set_fault(Fault::None);
        if code == "401" {
            std::fs::write(kubelet.token_file(), "token-2\n").expect("rotate the token");
        }
        text = scrape(&sonde).await;
        assert_eq!(success(&text, "kubelet"), Some(1.0), "{what}: recovered");
        assert!(text.contains("container_network_receive_bytes_total{"), "{what}");
        if code == "401" {
            assert_eq!(
                lock(&kubelet.state.tokens_seen).last().map(String::as_str),
                Some("Bearer token-2"),
                "the rotated token is used"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_kubelet_is_given_up_before_the_scrape_deadline_and_counted() {
    let kubelet = TestKubelet::start("token-1").await;
    kubelet.set_fault(Fault::Stall);
    let dir = tempfile::tempdir().expect("tempdir");
    let sysfs = write_forest(dir.path(), &forest());
    // The Kubelet's own timeout (default 10s) is longer than the scrape's deadline.
    let sonde = start(&sonde_args(
        &sysfs,
        &dir.path().join("proc"),
        &kubelet.flags(),
        &["--scrape.timeout=2s"],
    ));
    // The start-up collection's request first (it times out at its own deadline).
    wait_ready(&sonde).await;
    let started = Instant::now();
    let text = scrape(&sonde).await;
    println!(
        "stalled Kubelet, 2s scrape deadline: the scrape took {:.3} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(success(&text, "kubelet"), Some(0.0));
    assert_eq!(success(&text, "container"), Some(1.0));
    // Counted, in the same scrape: the collector handed over its telemetry, not cut off.
    assert_eq!(requests(&text, "/stats/summary", "timeout"), 2.0);
    wait_for_log(&sonde, &["Kubelet request failed", "code=timeout", "/stats/summary"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_names_expire_after_max_staleness() {
    let kubelet = TestKubelet::start("token-1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sysfs = write_forest(dir.path(), &forest());
    let sonde = start(&sonde_args(
        &sysfs,
        &dir.path().join("proc"),
        &kubelet.flags(),
        &[
            "--kubelet.cache-validity=1ms",
            "--kubelet.max-staleness=1s",
            "--container.inventory-validity=1ms",
        ],
    ));
    let app = format!("{}/{}", web_pod(), cid(APP));
    let named = series(
        "container_memory_usage_bytes",
        &k8s_labels(&app, "app", "registry.local/shop/web:2.1", "shop", "web-0"),
        &[],
    );
    scrape_until(&sonde, "the pods' names", |t| t.contains(&named)).await;
    kubelet.set_fault(Fault::Status(500));
    let unnamed = series("container_memory_usage_bytes", &k8s_labels(&app, "", "", "", ""), &[]);
    let text = scrape_until(&sonde, "the names dropped after max-staleness", |t| {
        t.contains(&unnamed)
    })
    .await;
    assert!(!text.contains(&named));
    assert_eq!(sample_value(&text, "sonde_kubelet_pods"), Some(0.0));
    wait_for_log(&sonde, &["too old"]);
    kubelet.set_fault(Fault::None);
    scrape_until(&sonde, "the names back", |t| t.contains(&named)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_unless_verification_is_skipped() {
    let kubelet = TestKubelet::start("token-1").await;
    let other = TestKubelet::start("token-1").await; // its CA did not sign `kubelet`'s certificate
    let dir = tempfile::tempdir().expect("tempdir");
    let sysfs = write_forest(dir.path(), &forest());
    let procfs = dir.path().join("proc");
    let wrong_ca = [
        format!("--kubelet.url={}", kubelet.url()),
        format!("--kubelet.ca-file={}", other.ca_file().display()),
        format!("--kubelet.token-file={}", kubelet.token_file().display()),
    ];
    let sonde = start(&sonde_args(&sysfs, &procfs, &wrong_ca, &[]));
    let text = scrape(&sonde).await;
    assert_eq!(success(&text, "kubelet"), Some(0.0));
    assert!(requests(&text, "/pods", "connect_error") + requests(&text, "/stats/summary", "connect_error") >= 1.0);
    wait_for_log(&sonde, &["Kubelet request failed", "code=connect_error"]);
    assert_eq!(
        kubelet.requests("/pods"),
        0,
        "no request, so no token, went to an unverified server"
    );

    let mut insecure = wrong_ca.to_vec();
    insecure.push("--kubelet.insecure-skip-verify".to_owned());
    let sonde = start(&sonde_args(&sysfs, &procfs, &insecure, &[]));
    scrape_until(&sonde, "the Kubelet without verification", |t| {
        success(t, "kubelet") == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_and_docker_sources_work_with_the_kubelet_configured_but_down() {
    // A port nobody listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), "t\n").expect("token");
    let down = [
        format!("--kubelet.url=https://127.0.0.1:{port}"),
        format!("--kubelet.token-file={}", dir.path().join("token").display()),
        "--kubelet.insecure-skip-verify".to_owned(),
    ];
    let cgroups: Vec<(String, u64)> = (0..3)
        .map(|seed| (format!("/docker/{}", cid(0x10 + seed as u8)), seed))
        .collect();
    let sysfs = write_forest(dir.path(), &cgroups);
    let sonde = start(&sonde_args(&sysfs, &dir.path().join("proc"), &down, &[]));
    let text = scrape(&sonde).await;
    let expected: BTreeMap<String, f64> = cgroups
        .iter()
        .map(|(id, seed)| {
            (
                series("container_memory_usage_bytes", &k8s_labels(id, "", "", "", ""), &[]),
                memory_usage(*seed),
            )
        })
        .collect();
    assert_eq!(samples(&text, "container_memory_usage_bytes"), expected);
    assert_eq!(success(&text, "container"), Some(1.0));
    assert_eq!(success(&text, "kubelet"), Some(0.0));
    assert!(requests(&text, "/stats/summary", "connect_error") >= 1.0);
    wait_for_log(&sonde, &["Kubelet request failed", "code=connect_error"]);

    // A real Docker container on the real hierarchy, the Kubelet still down.
    let test = "cgroup_and_docker_sources_work_with_the_kubelet_configured_but_down";
    if !root_or_skip(test) || !docker_or_skip(test) {
        return;
    }
    let container = Container::run("sonde-kubelet-down", &[], "echo up && sleep 3600");
    container.wait_for_log("up", Duration::from_secs(30));
    let mut args: Vec<String> = vec!["--no-collector.host".into(), "--no-collector.connection".into()];
    args.extend(down.iter().cloned());
    let sonde = start(&args);
    let text = scrape(&sonde).await;
    assert_eq!(success(&text, "container"), Some(1.0));
    assert_eq!(success(&text, "kubelet"), Some(0.0));
    let found = text
        .lines()
        .filter(|l| l.starts_with("container_memory_usage_bytes{"))
        .any(|l| l.contains(&container.id));
    assert!(found, "the Docker container's series:\n{text}");
}
