//! The Kubelet source against an HTTPS server made in the test (its CA and certificate
//! generated here, bearer token checked) that serves `/pods` and `/stats/summary` in the real
//! v1 and stats v1alpha1 schemas, with a fake cgroup forest in the kubepods layouts whose ids
//! match the pods. The real binary is scraped; labels and counters are compared exactly.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cgroup_fixture::FakeCgroup;
use common::kubelet::*;
use common::*;

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
    format!("{family}{}", label_set(&pairs))
}

fn memory_usage(seed: u64) -> f64 {
    FakeCgroup::seeded("/x", seed).memory_usage as f64
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

fn requests(text: &str, endpoint: &str, code: &str) -> f64 {
    sample_value(
        text,
        &format!("sonde_kubelet_requests_total{{code=\"{code}\",endpoint=\"{endpoint}\"}}"),
    )
    .unwrap_or(0.0)
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

/// sonde on the Kubelet's fake node (in a new temporary directory, kept as long as the
/// first value) and pointed at `kubelet`, with `extra` flags.
fn start_on_node(kubelet: &TestKubelet, extra: &[&str]) -> (tempfile::TempDir, Sonde) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sysfs = write_forest(dir.path(), &forest());
    let sonde = start(&sonde_args(&sysfs, &dir.path().join("proc"), &kubelet.flags(), extra));
    (dir, sonde)
}

fn start(args: &[String]) -> Sonde {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Sonde::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_name_container_series_and_no_pod_series_carries_network() {
    let kubelet = TestKubelet::start("token-1").await;
    let (_dir, sonde) = start_on_node(&kubelet, &[]);
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
    let text = scrape_until(&sonde, "the pods' names", |t| {
        t.contains(&app_series) && series_values(t, "container_memory_usage_bytes") == expected_memory
    });
    assert_eq!(series_values(&text, "container_memory_usage_bytes"), expected_memory);

    // No network on any series: as in cAdvisor, pod cgroups carry none, the app containers
    // joined their sandbox's namespace, and this fake node has no process whose namespace
    // a sandbox could be read through. sonde does not ask for `/stats/summary`.
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
    .flat_map(|family| series_values(&text, family))
    .collect();
    assert_eq!(network, BTreeMap::new());
    assert_eq!(kubelet.requests("/stats/summary"), 0);

    assert_eq!(collector_success(&text, "kubelet"), Some(1.0));
    assert_eq!(collector_success(&text, "container"), Some(1.0));
    assert_eq!(sample_value(&text, "sonde_kubelet_pods"), Some(6.0));
    assert_eq!(
        sample_value(&text, "sonde_cache_entries{cache=\"kubelet_pods\"}"),
        Some(6.0)
    );
    assert!(requests(&text, "/pods", "200") >= 1.0);
    let (ok, complaints) = promtool_check_metrics(text.as_bytes());
    assert!(ok, "promtool: {complaints}");
    assert!(
        lock(&kubelet.state.tokens_seen).iter().all(|t| t == "Bearer token-1"),
        "the token from the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_scrapes_in_one_window_make_one_pods_request() {
    let kubelet = TestKubelet::start("token-1").await;
    // Slow enough that the scrapes arrive while the one refresh is in flight.
    *lock(&kubelet.state.pods_delay) = Duration::from_secs(2);
    let (_dir, sonde) = start_on_node(&kubelet, &["--kubelet.cache-validity=1h", "--web.max-requests=0"]);
    let addr = sonde.addr;
    let scrapes = (0..50).map(|_| tokio::task::spawn_blocking(move || scrape(&addr)));
    for text in futures::future::join_all(scrapes).await {
        let text = text.expect("scrape task");
        assert_eq!(collector_success(&text, "kubelet"), Some(1.0));
        assert_eq!(
            sample_value(&text, "sonde_kubelet_pods"),
            Some(6.0),
            "every waiter gets the one refresh"
        );
    }
    assert_eq!(kubelet.requests("/pods"), 1);
    assert_eq!(kubelet.requests("/stats/summary"), 0);
    // The start-up fetch, the start-up collection, the 50 scrapes and this one: one refresh
    // (a miss), every other a hit.
    let text = scrape(&sonde);
    assert_eq!(requests(&text, "/pods", "200"), 1.0);
    assert_eq!(
        sample_value(
            &text,
            "sonde_cache_requests_total{cache=\"kubelet_pods\",result=\"hit\"}"
        ),
        Some(52.0)
    );
    assert_eq!(
        sample_value(
            &text,
            "sonde_cache_requests_total{cache=\"kubelet_pods\",result=\"miss\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_faults_are_counted_logged_and_retried_and_the_token_is_reread() {
    let kubelet = TestKubelet::start("token-1").await;
    // A window shorter than the time between scrapes: every scrape asks the Kubelet again.
    let (_dir, sonde) = start_on_node(
        &kubelet,
        &[
            "--kubelet.cache-validity=1ms",
            "--kubelet.timeout=2s",
            "--scrape.timeout=60s",
        ],
    );
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
        t.contains(&app_series) && collector_success(t, "kubelet") == Some(1.0)
    });

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
        let before = requests(&text, "/pods", code);
        let started = Instant::now();
        let failed = scrape(&sonde);
        let took = started.elapsed();
        println!("{what}: the scrape took {:.3} s", took.as_secs_f64());
        assert_eq!(collector_success(&failed, "kubelet"), Some(0.0), "{what}");
        assert_eq!(collector_success(&failed, "container"), Some(1.0), "{what}");
        assert_eq!(
            requests(&failed, "/pods", code),
            before + 1.0,
            "{what}: one failed request, counted as {code}"
        );
        let line = sonde.wait_for_log(&["Kubelet request failed", &format!("code={code}")]);
        println!("{what}: {line}");
        // The last good pod list is still in use: names stay on the container series.
        assert!(failed.contains(&app_series), "{what}: pod names kept");

        // Retriable: the next scrape after the fault goes asks again and succeeds.
        kubelet.set_fault(Fault::None);
        if code == "401" {
            std::fs::write(kubelet.token_file(), "token-2\n").expect("rotate the token");
        }
        text = scrape(&sonde);
        assert_eq!(collector_success(&text, "kubelet"), Some(1.0), "{what}: recovered");
        assert_eq!(
            requests(&text, "/pods", "200"),
            requests(&failed, "/pods", "200") + 1.0,
            "{what}"
        );
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
    // The Kubelet's own timeout is longer than the scrape's deadline.
    let (_dir, sonde) = start_on_node(&kubelet, &["--scrape.timeout=2s", "--kubelet.timeout=3s"]);
    // The start-up collection first (it gives up at its own deadline).
    wait_ready(&sonde).await;
    let started = Instant::now();
    let text = scrape(&sonde);
    let took = started.elapsed();
    println!(
        "stalled Kubelet, 2s scrape deadline: the scrape took {:.3} s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_millis(2500), "the scrape waited {took:?}");
    assert_eq!(collector_success(&text, "kubelet"), Some(0.0));
    assert_eq!(collector_success(&text, "container"), Some(1.0));
    // The stalled request (the start-up fetch's, which scrapes wait on) is counted when it
    // times out at --kubelet.timeout.
    let text = scrape_until(&sonde, "the stalled request counted", |t| {
        requests(t, "/pods", "timeout") >= 1.0
    });
    assert_eq!(collector_success(&text, "kubelet"), Some(0.0));
    sonde.wait_for_log(&["Kubelet request failed", "code=timeout", "/pods"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_names_expire_after_max_staleness() {
    let kubelet = TestKubelet::start("token-1").await;
    let (_dir, sonde) = start_on_node(
        &kubelet,
        &[
            "--kubelet.cache-validity=1ms",
            "--kubelet.max-staleness=1s",
            "--container.inventory-validity=1ms",
        ],
    );
    let app = format!("{}/{}", web_pod(), cid(APP));
    let named = series(
        "container_memory_usage_bytes",
        &k8s_labels(&app, "app", "registry.local/shop/web:2.1", "shop", "web-0"),
        &[],
    );
    scrape_until(&sonde, "the pods' names", |t| t.contains(&named));
    kubelet.set_fault(Fault::Status(500));
    let unnamed = series("container_memory_usage_bytes", &k8s_labels(&app, "", "", "", ""), &[]);
    let text = scrape_until(&sonde, "the names dropped after max-staleness", |t| {
        t.contains(&unnamed)
    });
    assert!(!text.contains(&named));
    assert_eq!(sample_value(&text, "sonde_kubelet_pods"), Some(0.0));
    sonde.wait_for_log(&["too old"]);
    kubelet.set_fault(Fault::None);
    scrape_until(&sonde, "the names back", |t| t.contains(&named));
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
    let text = scrape(&sonde);
    assert_eq!(collector_success(&text, "kubelet"), Some(0.0));
    assert!(requests(&text, "/pods", "connect_error") >= 1.0);
    sonde.wait_for_log(&["Kubelet request failed", "code=connect_error"]);
    assert_eq!(
        kubelet.requests("/pods"),
        0,
        "no request, so no token, went to an unverified server"
    );

    let mut insecure = wrong_ca.to_vec();
    insecure.push("--kubelet.insecure-skip-verify".to_owned());
    let sonde = start(&sonde_args(&sysfs, &procfs, &insecure, &[]));
    scrape_until(&sonde, "the Kubelet without verification", |t| {
        collector_success(t, "kubelet") == Some(1.0)
    });
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
    let text = scrape(&sonde);
    let expected: BTreeMap<String, f64> = cgroups
        .iter()
        .map(|(id, seed)| {
            (
                series("container_memory_usage_bytes", &k8s_labels(id, "", "", "", ""), &[]),
                memory_usage(*seed),
            )
        })
        .collect();
    assert_eq!(series_values(&text, "container_memory_usage_bytes"), expected);
    assert_eq!(collector_success(&text, "container"), Some(1.0));
    assert_eq!(collector_success(&text, "kubelet"), Some(0.0));
    assert!(requests(&text, "/pods", "connect_error") >= 1.0);
    sonde.wait_for_log(&["Kubelet request failed", "code=connect_error"]);

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
    let text = scrape(&sonde);
    assert_eq!(collector_success(&text, "container"), Some(1.0));
    assert_eq!(collector_success(&text, "kubelet"), Some(0.0));
    let found = text
        .lines()
        .filter(|l| l.starts_with("container_memory_usage_bytes{"))
        .any(|l| l.contains(&container.id));
    assert!(found, "the Docker container's series:\n{text}");
}
