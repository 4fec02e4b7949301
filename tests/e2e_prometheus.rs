//! The operator kit end to end: a real Prometheus scrapes the real sonde every second while
//! busybox containers make a real workload (CPU throttling, memory near its limit, an OOM
//! kill, HTTP transfers, refused connects, UDP datagrams, a lossy link), and every PromQL
//! expression of dashboards/ and alerts/ is evaluated through Prometheus's HTTP API: each
//! parses and returns data, except the few listed in [`NO_DATA`]. Needs root and a Docker
//! engine (the test command installs `prometheus` and starts dockerd).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::kit::{dashboard_exprs, rule_exprs, rule_files, substitute, substitute_instance};
use common::prometheus_server::Prometheus;
use common::*;

/// Expressions that cannot have data in this scenario, each named by a substring of its
/// expression or origin, and why.
const NO_DATA: &[(&str, &str)] = &[
    // Scrapes here take milliseconds; the alert's promtool unit test shows it firing.
    ("SondeScrapeSlow", "no scrape is slow"),
    // Every route lookup of the scenario succeeds (the gateway tests make netlink fail).
    ("sonde_gateway_netlink_errors_total", "no netlink error"),
    // No Kubelet runs here (the Kubelet source's own tests use an HTTPS stand-in).
    ("sonde_kubelet_requests_total", "no Kubelet"),
];

/// Disk IO families have data only where the block layer accounts IO to cgroups: some
/// virtual machines (this one among them) report zero even for the root cgroup, and cgroup
/// v1 never attributes buffered writeback.
const NO_DATA_WITHOUT_BLOCK_IO: &str = "container_fs_";

/// Whether the root cgroup has any block IO accounted (v1 blkio or v2 io.stat).
fn host_accounts_block_io() -> bool {
    let v1 =
        std::fs::read_to_string("/sys/fs/cgroup/blkio/blkio.throttle.io_service_bytes_recursive").unwrap_or_default();
    let v1_total = v1
        .lines()
        .find_map(|l| l.strip_prefix("Total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/io.stat").unwrap_or_default();
    let v2_bytes = v2
        .split_whitespace()
        .filter_map(|field| field.strip_prefix("rbytes=").or(field.strip_prefix("wbytes=")))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum::<u64>();
    v1_total > 0 || v2_bytes > 0
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().expect("run docker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_rule_expression_returns_data_from_a_real_prometheus() {
    let test = "every_dashboard_and_rule_expression_returns_data_from_a_real_prometheus";
    if !root_or_skip(test) || !docker_or_skip(test) {
        return;
    }

    // The workload.
    let server = Container::run(
        "sonde-e2e-server",
        &["--health-cmd", "true", "--health-interval", "1s"],
        "mkdir -p /www && dd if=/dev/zero of=/www/payload bs=1024 count=256 2>/dev/null && echo ready && httpd -f -p 8080 -h /www",
    );
    server.wait_for_log("ready", Duration::from_secs(30));
    let address = server.inspect("{{.NetworkSettings.IPAddress}}");
    // A transfer, a refused connect (nothing listens on 8081) and a DNS datagram to the
    // server (nothing answers it: UDP bytes sent) every half second.
    let client = Container::run(
        "sonde-e2e-client",
        &[],
        &format!(
            "(while :; do nslookup sonde.test {address}; sleep 1; done) >/dev/null 2>&1 & \
             while :; do wget -q -O /dev/null http://{address}:8080/payload; \
             wget -q -O /dev/null http://{address}:8081/ 2>/dev/null; sleep 0.5; done"
        ),
    );
    // The same transfer over a link that drops 30% of what the server sends: it retransmits.
    let lossy = Container::run(
        "sonde-e2e-lossy",
        &[],
        &format!("sleep 1; while :; do wget -q -O /dev/null http://{address}:8080/payload; sleep 0.2; done"),
    );
    let lossy_pid = lossy.inspect("{{.State.Pid}}");
    let lossy_rule = Command::new("nsenter")
        .args([
            "-t", &lossy_pid, "-n", "iptables", "-A", "INPUT", "-p", "tcp", "--sport", "8080",
        ])
        .args([
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.3",
            "-j",
            "DROP",
        ])
        .output()
        .expect("run nsenter iptables");
    assert!(
        lossy_rule.status.success(),
        "iptables in the lossy container: {lossy_rule:?}"
    );
    // A tenth of a CPU for an endless loop: throttled in nearly every period.
    let _burner = Container::run(
        "sonde-e2e-burner",
        &["--cpus", "0.1", "--pids-limit", "64"],
        "while :; do :; done",
    );
    // 60 MiB held in shared memory under a 64 MiB limit.
    let holder = Container::run(
        "sonde-e2e-holder",
        &["-m", "64m", "--memory-swap", "64m", "--shm-size", "128m"],
        "dd if=/dev/zero of=/dev/shm/hold bs=1048576 count=60 2>/dev/null && echo held && sleep 3600",
    );
    holder.wait_for_log("held", Duration::from_secs(30));
    // OOM-killed later, once Prometheus has seen its counter at 0.
    let oom = Container::run("sonde-e2e-oom", &["-m", "32m", "--memory-swap", "32m"], "sleep 3600");

    // sonde as deployed, and a second one that fails: no procfs for the host collector, a
    // live-connection table of 2 entries (events lost).
    let sonde = Sonde::start(&["--container.cache-validity=500ms", "--container.inventory-validity=1s"]);
    let empty = tempfile::tempdir().expect("tempdir");
    let broken = Sonde::start(&[
        &format!("--path.procfs={}", empty.path().display()),
        "--connection.max-live=2",
        "--no-collector.container",
    ]);
    let prometheus = Prometheus::start(&[sonde.addr, broken.addr], &rule_files());

    let up = prometheus.wait_for("up == 1", 2, Duration::from_secs(60)).await;
    println!("up == 1 for {} targets", up.len());

    let oom_series = format!("container_oom_events_total{{id=~\".*{}.*\"}}", oom.id);
    prometheus
        .wait_for(
            &format!("count_over_time({oom_series}[1m]) >= 3"),
            1,
            Duration::from_secs(60),
        )
        .await;
    let killed = docker(&["exec", &oom.id, "awk", "BEGIN { s = \"x\"; while (1) s = s s }"]);
    assert_eq!(killed.status.code(), Some(137), "awk was not OOM-killed: {killed:?}");
    prometheus
        .wait_for(&format!("{oom_series} == 1"), 1, Duration::from_secs(60))
        .await;

    // Every expression; those without data are retried while the workload goes on.
    let block_io = host_accounts_block_io();
    let exprs: Vec<_> = dashboard_exprs().into_iter().chain(rule_exprs()).collect();
    let expected_empty = |e: &common::kit::Expr| {
        NO_DATA
            .iter()
            .any(|(key, _)| e.promql.contains(key) || e.origin.contains(key))
            || (!block_io && e.promql.contains(NO_DATA_WITHOUT_BLOCK_IO))
    };
    println!(
        "{} expressions, {} allowed to be empty",
        exprs.len(),
        exprs.iter().filter(|e| expected_empty(e)).count()
    );
    let start = Instant::now();
    loop {
        let mut missing = Vec::new();
        for expr in &exprs {
            let promql = substitute(&expr.promql);
            match prometheus.query(&promql).await {
                Err(error) => panic!("{}: {promql}\ndoes not evaluate: {error}", expr.origin),
                Ok(result) if result.is_empty() && !expected_empty(expr) => {
                    missing.push(format!("{}: {promql}", expr.origin))
                }
                Ok(_) => {}
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "{} expressions return no data:\n{}",
            missing.len(),
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!("every expression returned data after {:?}", start.elapsed());

    // The same dashboards with one instance picked: still data, and only that instance's.
    let picked = sonde.addr.to_string();
    let scoped = |e: &common::kit::Expr| e.promql.contains("$instance") && !expected_empty(e);
    for expr in dashboard_exprs().iter().filter(|e| scoped(e)) {
        let promql = substitute_instance(&expr.promql, &picked);
        let result = prometheus
            .query(&promql)
            .await
            .unwrap_or_else(|e| panic!("{}: {promql}: {e}", expr.origin));
        assert!(
            !result.is_empty(),
            "{}: no data for instance {picked}: {promql}",
            expr.origin
        );
        for series in &result {
            let instance = &series["metric"]["instance"];
            assert!(
                instance.is_null() || instance == picked.as_str(),
                "{}: instance {instance} when {picked} was picked: {promql}",
                expr.origin
            );
        }
    }

    // Prometheus evaluates every rule without error; the alerts without `for` fire.
    let rules = prometheus.rules().await;
    assert_eq!(rules.len(), rule_exprs().len(), "rules loaded: {rules:?}");
    for rule in &rules {
        assert_eq!(
            rule["health"], "ok",
            "rule {} is unhealthy: {}",
            rule["name"], rule["lastError"]
        );
    }
    for alert in ["SondeContainerOOMKilled", "SondeEBPFEventsLost"] {
        prometheus
            .wait_for(
                &format!("ALERTS{{alertname=\"{alert}\", alertstate=\"firing\"}}"),
                1,
                Duration::from_secs(30),
            )
            .await;
    }
    for alert in [
        "SondeContainerCPUThrottlingHigh",
        "SondeContainerMemoryNearLimit",
        "SondeTCPConnectFailureRatioHigh",
        "SondeTCPRetransmitRatioHigh",
        "SondeCollectorFailing",
    ] {
        prometheus
            .wait_for(&format!("ALERTS{{alertname=\"{alert}\"}}"), 1, Duration::from_secs(30))
            .await;
    }
    drop((client, lossy, server));
}
