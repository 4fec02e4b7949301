//! A stand-in Kubelet: HTTPS on loopback with a CA and certificate made here, a bearer token
//! checked, serving `/pods` and `/stats/summary` in the real v1 and stats v1alpha1 schemas
//! for a fixed node, and faults on demand; and the fake cgroup forest (kubepods layouts)
//! whose ids match its pods.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cgroup_fixture::{FakeCgroup, write_v2};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

pub const UID_WEB: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e01";
pub const UID_DB: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e02";
pub const UID_AGENT: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e03";
pub const UID_HIDDEN: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e04";
pub const UID_BATCH: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e05";
pub const UID_PENDING: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e06";
pub const UID_UNKNOWN: &str = "3f9c7a10-5b2e-4d8a-9c61-0a1b2c3d4e07";

/// A 64-hex container id.
pub fn cid(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

pub const APP: u8 = 0xa1;
pub const LOG: u8 = 0xa2;
pub const PAUSE: u8 = 0xa0;
pub const DB: u8 = 0xb1;
pub const AGENT: u8 = 0xc1;
pub const HIDDEN: u8 = 0xd1;
pub const BATCH: u8 = 0xe1;
pub const PLAIN_DOCKER: u8 = 0xf1;

pub fn web_pod() -> String {
    format!("/kubepods/burstable/pod{UID_WEB}")
}
pub fn db_pod() -> String {
    format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        UID_DB.replace('-', "_")
    )
}
pub fn agent_pod() -> String {
    format!("/kubepods/pod{UID_AGENT}")
}

/// Every cgroup of the fake node: (path, seed).
pub fn forest() -> Vec<(String, u64)> {
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

pub fn write_forest(dir: &Path, cgroups: &[(String, u64)]) -> PathBuf {
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
pub fn pods_document() -> String {
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
pub fn summary_document() -> String {
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
pub enum Fault {
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
pub struct KubeletState {
    pub token: Mutex<String>,
    pub faults: Mutex<HashMap<String, Fault>>,
    /// Path → requests received (authorized or not).
    pub requests: Mutex<HashMap<String, u64>>,
    /// The Authorization header of each request, in order.
    pub tokens_seen: Mutex<Vec<String>>,
    /// Delays the `/pods` answer, so concurrent scrapes overlap the refresh.
    pub pods_delay: Mutex<Duration>,
    /// The `/pods` document served instead of [`pods_document`]'s fixed node, when set.
    pub pods: Mutex<Option<String>>,
}

/// The test Kubelet: HTTPS on loopback with a certificate from a CA made here.
pub struct TestKubelet {
    pub addr: SocketAddr,
    pub state: Arc<KubeletState>,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TestKubelet {
    pub async fn start(token: &str) -> TestKubelet {
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

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// The flags that point sonde at this Kubelet.
    pub fn flags(&self) -> Vec<String> {
        vec![
            format!("--kubelet.url={}", self.url()),
            format!("--kubelet.ca-file={}", self.ca_file().display()),
            format!("--kubelet.token-file={}", self.token_file().display()),
        ]
    }

    pub fn requests(&self, path: &str) -> u64 {
        lock(&self.state.requests).get(path).copied().unwrap_or(0)
    }

    pub fn set_fault(&self, fault: Fault) {
        let mut faults = lock(&self.state.faults);
        for path in ["/pods", "/stats/summary"] {
            faults.insert(path.to_owned(), fault);
        }
    }
}

/// An HTTP request's head (request line and headers), read up to its blank line; `None` when
/// the peer closes first or sends more than 64 KiB of head.
pub async fn read_request_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S, state: &KubeletState) {
    let Some(head) = read_request_head(&mut stream).await else {
        return;
    };
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
        "/pods" => {
            let delay = *lock(&state.pods_delay);
            tokio::time::sleep(delay).await;
            let custom = lock(&state.pods).clone();
            custom.unwrap_or_else(pods_document)
        }
        // A real Kubelet serves it; sonde does not ask for it (pod networks are read from
        // the sandbox's own namespace), which the tests check.
        "/stats/summary" => summary_document(),
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
