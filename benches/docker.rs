//! One sonde scrape versus Docker's own stats API for the same running containers: the
//! real `sonde` binary over HTTP (stats read from cgroups, names from its Docker source)
//! against `GET /containers/<id>/stats?stream=false&one-shot=true` for every container
//! (bollard), on the system engine, both with all requests in flight at once and one after
//! the other (Docker batches concurrent requests onto its 1 s collection tick, so one by one
//! can be the faster). Prints medians, spread and the ratio against Docker's faster way
//! (target: a sonde scrape at least 20 times faster).
//!
//! Run as root with a Docker engine: `cargo bench --bench docker`. Without `--bench` it
//! makes a tiny run (3 containers, 3 rounds) as a smoke test. `SONDE_BENCH_CONTAINERS`
//! (default 50) and `SONDE_BENCH_ROUNDS` (default 30) change the size.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::StatsOptions;
use common::{Container, Sonde, busybox_image};
use futures::StreamExt;

const SEQUENTIAL_ROUNDS: usize = 3;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn engine_answers() -> bool {
    std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Median, min and max in milliseconds.
fn summary(mut times: Vec<Duration>) -> (f64, f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(times[times.len() / 2]), ms(times[0]), ms(times[times.len() - 1]))
}

/// One scrape of sonde, read to the end; returns how long it took and the body's size.
async fn scrape(client: &reqwest::Client, url: &str) -> (Duration, usize) {
    let start = Instant::now();
    let body = client
        .get(url)
        .send()
        .await
        .expect("scrape")
        .bytes()
        .await
        .expect("body");
    (start.elapsed(), body.len())
}

async fn one_shot(docker: &Docker, id: &str) -> bool {
    let options = StatsOptions {
        stream: false,
        one_shot: true,
    };
    matches!(docker.stats(id, Some(options)).next().await, Some(Ok(_)))
}

/// One-shot stats of every container, all requests in flight at once.
async fn docker_stats_concurrent(docker: &Docker, ids: &[String]) -> Duration {
    let start = Instant::now();
    let answers = futures::future::join_all(ids.iter().map(|id| one_shot(docker, id))).await;
    let elapsed = start.elapsed();
    assert!(answers.iter().all(|ok| *ok), "every container answered its stats");
    elapsed
}

/// One-shot stats of every container, one request after the other: Docker answers a lone
/// one-shot request at once, but batches concurrent ones onto its 1 s collection tick.
async fn docker_stats_sequential(docker: &Docker, ids: &[String]) -> Duration {
    let start = Instant::now();
    for id in ids {
        assert!(one_shot(docker, id).await, "every container answered its stats");
    }
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let count = env_number("SONDE_BENCH_CONTAINERS", if benchmarking { 50 } else { 3 });
    let rounds = env_number("SONDE_BENCH_ROUNDS", if benchmarking { 30 } else { 3 });
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root || !engine_answers() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the docker benchmark needs root and a Docker engine under CI=true");
        }
        println!("docker benchmark skipped: it needs root and a Docker engine");
        return;
    }
    busybox_image();
    // Started from a few threads at once: `docker run` takes a while each.
    let containers: Vec<Container> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|_| scope.spawn(|| Container::run("sonde-bench", &[], "sleep 3600")))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    assert_eq!(containers.len(), count, "every container started");
    let ids: Vec<String> = containers.iter().map(|c| c.id.clone()).collect();

    let docker = Docker::connect_with_host("unix:///var/run/docker.sock")
        .expect("docker client")
        .negotiate_version()
        .await
        .expect("API version");
    // Fresh stats on every scrape (a 1 ms window), names and limits inside their window,
    // as a steady scrape every 15 s or more sees them.
    let sonde = Sonde::start(&[
        "--no-collector.host",
        "--no-collector.connection",
        "--container.cache-validity=1ms",
        "--container.inventory-validity=1h",
    ]);
    let client = reqwest::Client::builder().no_gzip().build().expect("client");
    let url = sonde.url("/metrics");
    // Wait until sonde names every benchmark container (its Docker source listed them).
    let start = Instant::now();
    loop {
        let text = client
            .get(&url)
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        if containers
            .iter()
            .all(|c| text.contains(&format!("name=\"{}\"", c.name)))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "sonde never named the containers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Warm both sides once.
    let (_, bytes) = scrape(&client, &url).await;
    docker_stats_concurrent(&docker, &ids).await;

    let (mut sonde_times, mut concurrent_times, mut sequential_times) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        sonde_times.push(scrape(&client, &url).await.0);
        concurrent_times.push(docker_stats_concurrent(&docker, &ids).await);
        // One by one takes about a second per container: a few rounds tell enough.
        if round < SEQUENTIAL_ROUNDS {
            sequential_times.push(docker_stats_sequential(&docker, &ids).await);
        }
    }
    let (s50, smin, smax) = summary(sonde_times);
    let (c50, cmin, cmax) = summary(concurrent_times);
    let (q50, qmin, qmax) = summary(sequential_times);
    println!(
        "{count} running containers, {rounds} rounds; sonde scrape body {bytes} bytes (every container on the host)"
    );
    println!("{:<50} {:>10} {:>10} {:>10}", "", "median ms", "min ms", "max ms");
    println!(
        "{:<50} {s50:>10.2} {smin:>10.2} {smax:>10.2}",
        "sonde scrape (fresh cgroup stats)"
    );
    println!(
        "{:<50} {c50:>10.2} {cmin:>10.2} {cmax:>10.2}",
        format!("docker stats one-shot x{count}, all at once")
    );
    println!(
        "{:<50} {q50:>10.2} {qmin:>10.2} {qmax:>10.2}",
        format!(
            "docker stats one-shot x{count}, one by one ({} rounds)",
            SEQUENTIAL_ROUNDS.min(rounds)
        )
    );
    // Against Docker's faster way, so the ratio does not flatter sonde.
    let docker_best = c50.min(q50);
    println!(
        "ratio docker (faster way) / sonde, medians: {:.1}x (target >= 20x)",
        docker_best / s50
    );
}
