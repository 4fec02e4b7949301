//! The Docker metadata source against real engines: names, images, allowlisted labels and
//! health from the system engine, updated by its events; agreement with Docker's own stats
//! API; and a private engine stopped and started under a running sonde. Needs root and a
//! Docker engine (the test command starts one).

mod common;

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::StatsOptions;
use common::dockerd::PrivateDockerd;
use common::*;
use futures::StreamExt;

/// A label and environment value that needs every escape, and text beyond ASCII.
const AWKWARD: &str = "say \"hi\" \\ back\\slash\nline two: ünïcødé ✓ 日本";
/// `AWKWARD` as both exposition formats write it inside a label value.
const AWKWARD_ESCAPED: &str = "say \\\"hi\\\" \\\\ back\\\\slash\\nline two: ünïcødé ✓ 日本";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_labels_and_health_follow_the_engine_events() {
    let test = "names_labels_and_health_follow_the_engine_events";
    if !root_or_skip(test) || !docker_or_skip(test) {
        return;
    }
    busybox_image();
    // A window of an hour: whatever changes below can only come from the engine's events.
    let sonde = Sonde::start(&[
        "--no-collector.host",
        "--no-collector.connection",
        "--container.cache-validity=100ms",
        "--container.inventory-validity=1h",
        "--container.exclude-name=^sonde-hidden-",
        "--docker.label-allowlist=^com\\.example/",
        "--docker.env-allowlist=^APP_",
    ]);
    scrape_until(&sonde, "the engine connected", |t| {
        collector_success(t, "docker") == Some(1.0)
    });

    let label = format!("com.example/note={AWKWARD}");
    let env = format!("APP_NOTE={AWKWARD}");
    let labelled = Container::run(
        "sonde-labelled",
        &[
            "--label",
            &label,
            "--label",
            "com.example/team=db",
            "--label",
            "other=not allowlisted",
            "--env",
            &env,
            "--health-cmd=true",
            "--health-interval=1s",
        ],
        "sleep 3600",
    );
    let failing = Container::run(
        "sonde-failing",
        &["--health-cmd=false", "--health-interval=1s", "--health-retries=1"],
        "sleep 3600",
    );
    let hidden = Container::run("sonde-hidden", &[], "sleep 3600");
    let opted_out = Container::run("sonde-optout", &["--label", "sonde.io/exclude=true"], "sleep 3600");
    let plain = Container::run("sonde-plain", &[], "sleep 3600");

    // No check ever completes in the first hour: the health stays `starting`.
    let starting = Container::run(
        "sonde-starting",
        &["--health-cmd=true", "--health-interval=1h"],
        "sleep 3600",
    );

    let image = busybox_image();
    // One series per container, as cAdvisor: no `state` label.
    let health = |text: &str, c: &Container| {
        let samples = samples_containing(text, "container_health_state", &[&c.id]);
        assert!(samples.len() <= 1, "one series per container: {samples:?}");
        assert!(samples.iter().all(|s| s.label("state").is_none()), "{samples:?}");
        samples.first().map(|s| s.value)
    };
    // `unhealthy` and `starting` both read 0: wait until the engine says the failing one is
    // unhealthy, so 0 is checked for that state.
    let started = Instant::now();
    while failing.inspect("{{.State.Health.Status}}") != "unhealthy" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the failing check never failed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = scrape_until(&sonde, "the passing check healthy", |t| {
        health(t, &labelled) == Some(1.0) && health(t, &plain).is_some()
    });
    println!(
        "the passing check read 1 {:?} after the failing one turned unhealthy",
        started.elapsed()
    );
    assert_eq!(starting.inspect("{{.State.Health.Status}}"), "starting");
    assert_eq!(failing.inspect("{{.State.Health.Status}}"), "unhealthy");
    for (c, value) in [(&labelled, 1.0), (&failing, 0.0), (&starting, 0.0), (&plain, -1.0)] {
        assert_eq!(health(&text, c), Some(value), "{}", c.name);
    }

    // Names and images, and the allowlisted labels with their values escaped.
    let labelled_cgroup = cgroup_of(&text, &labelled.id).expect("the labelled container is reported");
    let extra = [
        ("container_env_app_note", AWKWARD_ESCAPED),
        ("container_label_com_example_note", AWKWARD_ESCAPED),
        ("container_label_com_example_team", "db"),
    ];
    let series = format!(
        "container_last_seen{}",
        named_container_labels(&labelled_cgroup, &labelled.name, image, &extra)
    );
    assert!(
        text.lines().any(|l| l.starts_with(&format!("{series} "))),
        "no {series} in:\n{text}"
    );
    // Every series carries the same label names: the plain container's extra labels are empty.
    let plain_cgroup = cgroup_of(&text, &plain.id).expect("the plain container is reported");
    let empty = [
        ("container_env_app_note", ""),
        ("container_label_com_example_note", ""),
        ("container_label_com_example_team", ""),
    ];
    let series = format!(
        "container_last_seen{}",
        named_container_labels(&plain_cgroup, &plain.name, image, &empty)
    );
    assert!(
        text.lines().any(|l| l.starts_with(&format!("{series} "))),
        "no {series}"
    );
    assert!(!text.contains("container_label_other"), "not allowlisted");

    // The exclusion filters apply to Docker names and to the sonde.io/exclude label.
    for excluded in [&hidden, &opted_out] {
        assert!(!text.contains(&excluded.id), "{} is reported", excluded.name);
    }

    // Both formats, read back by Python's parsers (the strict one for OpenMetrics).
    let openmetrics = scrape_as(&sonde, OPENMETRICS_ACCEPT);
    python_openmetrics_families(openmetrics.as_bytes())
        .unwrap_or_else(|e| panic!("the strict OpenMetrics parser refused:\n{e}"));
    for (body, is_openmetrics) in [(openmetrics.as_bytes(), true), (text.as_bytes(), false)] {
        for label in ["container_label_com_example_note", "container_env_app_note"] {
            let values = python_label_values(body, is_openmetrics, "container_last_seen", &labelled.name, label)
                .unwrap_or_else(|e| panic!("the parser refused (openmetrics: {is_openmetrics}):\n{e}"));
            assert_eq!(values, [AWKWARD], "{label}, openmetrics: {is_openmetrics}");
        }
    }

    // A rename reaches the series at once, without waiting for the (hour-long) window.
    let renamed = unique_name("sonde-renamed");
    let status = std::process::Command::new("docker")
        .args(["rename", &labelled.id, &renamed])
        .status()
        .expect("run docker rename");
    assert!(status.success());
    let wanted = format!("name=\"{renamed}\"");
    let started = Instant::now();
    scrape_until(&sonde, "the new name", |t| {
        samples_containing(t, "container_last_seen", &[&labelled.id])
            .iter()
            .any(|s| s.series.contains(&wanted))
    });
    println!("the rename arrived after {:?}", started.elapsed());
}

/// Docker's own figures for a container, computed as `docker stats` does: CPU is the
/// cumulative `cpu_usage.total_usage` (ns), memory is usage less inactive file pages.
async fn docker_figures(docker: &Docker, id: &str) -> (f64, f64) {
    let options = StatsOptions {
        stream: false,
        one_shot: true,
    };
    let stats = docker
        .stats(id, Some(options))
        .next()
        .await
        .expect("one stats answer")
        .expect("stats");
    let cpu = stats
        .cpu_stats
        .and_then(|c| c.cpu_usage)
        .and_then(|u| u.total_usage)
        .expect("total_usage");
    let memory = stats.memory_stats.expect("memory_stats");
    let usage = memory.usage.expect("memory usage");
    let detail = memory.stats.unwrap_or_default();
    let inactive = detail
        .get("total_inactive_file")
        .or_else(|| detail.get("inactive_file"))
        .copied()
        .filter(|&v| v < usage)
        .unwrap_or(0);
    (cpu as f64 / 1e9, (usage - inactive) as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_agree_with_the_docker_stats_api() {
    let test = "cpu_and_memory_agree_with_the_docker_stats_api";
    if !root_or_skip(test) || !docker_or_skip(test) {
        return;
    }
    let burner = Container::run("sonde-stats-burner", &[], "while :; do :; done");
    let holder = Container::run(
        "sonde-stats-holder",
        &["--shm-size=128m"],
        "dd if=/dev/zero of=/dev/shm/hold bs=1048576 count=64 2>/dev/null && echo held && sleep 3600",
    );
    holder.wait_for_log("held", Duration::from_secs(30));
    let docker = Docker::connect_with_host("unix:///var/run/docker.sock")
        .expect("docker client")
        .negotiate_version()
        .await
        .expect("API version");
    let sonde = Sonde::start(&[
        "--no-collector.host",
        "--no-collector.connection",
        "--container.cache-validity=10ms",
        "--container.inventory-validity=100ms",
    ]);
    let image = busybox_image();
    let ids = |text: &str| (cgroup_of(text, &burner.id), cgroup_of(text, &holder.id));
    let named = |t: &str| {
        [&burner, &holder].iter().all(|c| {
            samples_containing(t, "container_last_seen", &[&c.id])
                .iter()
                .any(|s| s.series.contains(&c.name))
        })
    };
    let text = scrape_until(&sonde, "both containers named", named);
    let (Some(burner_cgroup), Some(holder_cgroup)) = ids(&text) else {
        panic!("both containers are reported")
    };
    // Enough CPU accumulated that a scrape-to-stats gap is far below 5% of it.
    while docker_figures(&docker, &burner.id).await.0 < 3.0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for (container, cgroup) in [(&burner, &burner_cgroup), (&holder, &holder_cgroup)] {
        // Docker, sonde, Docker again, back to back: sonde's figure is of a moment between.
        let before = docker_figures(&docker, &container.id).await;
        let text = scrape(&sonde);
        let after = docker_figures(&docker, &container.id).await;
        let series = |family: &str, extra: &[(&str, &str)]| {
            let labels = named_container_labels(cgroup, &container.name, image, extra);
            sample_value(&text, &format!("{family}{labels}"))
                .unwrap_or_else(|| panic!("{family} of {}", container.name))
        };
        let cpu = series("container_cpu_usage_seconds_total", &[("cpu", "total")]);
        let memory = series("container_memory_working_set_bytes", &[]);
        println!(
            "{}: CPU docker {:.3}..{:.3} s, sonde {cpu:.3} s; memory docker {}..{}, sonde {memory}",
            container.name, before.0, after.0, before.1, after.1
        );
        let within = |value: f64, low: f64, high: f64| {
            let (low, high) = (low.min(high), low.max(high));
            value >= low * 0.95 && value <= high * 1.05
        };
        assert!(
            within(cpu, before.0, after.0),
            "CPU of {}: {cpu} vs {before:?}..{after:?}",
            container.name
        );
        assert!(
            within(memory, before.1, after.1),
            "memory of {}: {memory} vs {before:?}..{after:?}",
            container.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_goes_away_and_comes_back() {
    let test = "the_engine_goes_away_and_comes_back";
    if !root_or_skip(test) || !docker_or_skip(test) {
        return;
    }
    let mut engine = PrivateDockerd::start();
    let (first_id, first_name) = engine.run("sonde-fault-first", "sleep 3600");
    // An hour-long window: the new container below can only be named through the events.
    let host = format!("--docker.host={}", engine.host());
    let sonde = Sonde::start(&[
        "--no-collector.host",
        "--no-collector.connection",
        "--container.cache-validity=100ms",
        "--container.inventory-validity=1h",
        &host,
    ]);
    let named = |id: &str, name: &str, t: &str| {
        samples_containing(t, "container_cpu_usage_seconds_total", &[id])
            .iter()
            .any(|s| s.series.contains(&format!("name=\"{name}\"")))
    };
    scrape_until(&sonde, "the first container named", |t| {
        collector_success(t, "docker") == Some(1.0) && named(&first_id, &first_name, t)
    });

    engine.stop();
    let started = Instant::now();
    let away = scrape_until(&sonde, "docker success 0", |t| {
        collector_success(t, "docker") == Some(0.0)
    });
    println!(
        "docker success went to 0 {:?} after the engine stopped",
        started.elapsed()
    );
    assert!(!engine.answers());
    assert_eq!(collector_success(&away, "container"), Some(1.0));
    assert!(
        named(&first_id, &first_name, &away),
        "the running container keeps its cgroup metrics and last known name:\n{away}"
    );
    assert!(
        samples_containing(&away, "container_health_state", &[&first_id]).is_empty(),
        "no health while the engine that knows it is away"
    );
    // More scrapes while it is away: still 200, still named, still 0.
    for _ in 0..3 {
        let text = scrape(&sonde);
        assert_eq!(collector_success(&text, "docker"), Some(0.0));
        assert!(named(&first_id, &first_name, &text));
    }

    engine.resume();
    let (second_id, second_name) = engine.run("sonde-fault-second", "sleep 3600");
    let started = Instant::now();
    let back = scrape_until(&sonde, "the new container named", |t| {
        named(&second_id, &second_name, t)
    });
    println!(
        "the container started after the engine came back was named {:?} after it started",
        started.elapsed()
    );
    assert_eq!(collector_success(&back, "docker"), Some(1.0));
    assert!(named(&first_id, &first_name, &back));
    let health: Vec<f64> = samples_containing(&back, "container_health_state", &[&first_id])
        .iter()
        .map(|s| s.value)
        .collect();
    assert_eq!(health, [-1.0], "no health check, the engine back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_is_not_there_costs_only_the_docker_collector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = format!("--docker.host=unix://{}", dir.path().join("no-engine.sock").display());
    let sonde = Sonde::start(&["--no-collector.connection", &host]);
    let text = scrape(&sonde);
    assert_eq!(collector_success(&text, "docker"), Some(0.0), "{text}");
    for other in ["host", "container"] {
        assert_eq!(collector_success(&text, other), Some(1.0), "{other}");
    }
    assert!(
        !text.contains("sonde_docker_containers"),
        "no figures from a source that failed"
    );
    let said_why = sonde.wait_for_log(&["collector=docker"]);
    assert!(
        said_why.contains("no-engine.sock"),
        "the log names the engine: {said_why}"
    );
}

/// The value of the one series of `family` whose labels contain every item of `labels`.
fn series_value(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    match samples_containing(text, family, labels).as_slice() {
        [one] => Some(one.value),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_series_carry_docker_names() {
    let test = "connection_series_carry_docker_names";
    if !root_or_skip(test) || !docker_or_skip(test) {
        return;
    }
    const PAYLOAD: u64 = 256 * 1024;
    let server = Container::run(
        "sonde-conn-server",
        &[],
        &format!(
            "mkdir -p /www && dd if=/dev/zero of=/www/payload bs=1024 count={} 2>/dev/null && echo ready && httpd -f -p 8080 -h /www",
            PAYLOAD / 1024
        ),
    );
    server.wait_for_log("ready", Duration::from_secs(30));
    let address = server.inspect("{{.NetworkSettings.IPAddress}}");
    let sonde = Sonde::start(&["--no-collector.host", "--connection.ephemeral-port-range=32768-60999"]);
    // The probes attach at the first collection: the fetch must come after.
    scrape_until(&sonde, "the probes attached", |text| {
        collector_success(text, "connection") == Some(1.0)
    });
    let client = Container::run(
        "sonde-conn-client",
        &[],
        &format!("wget -q -O /dev/null http://{address}:8080/payload && echo fetched && sleep 3600"),
    );
    client.wait_for_log("fetched", Duration::from_secs(30));
    let client_name = format!("container=\"{}\"", client.name);
    let server_name = format!("container=\"{}\"", server.name);
    let text = scrape_until(&sonde, "the fetch under both Docker names", |text| {
        series_value(
            text,
            "sonde_tcp_bytes_received_total",
            &[&client_name, "direction=\"outbound\"", "port=\"8080\""],
        )
        .is_some()
            && series_value(
                text,
                "sonde_tcp_bytes_sent_total",
                &[&server_name, "direction=\"inbound\"", "port=\"8080\""],
            )
            .is_some()
    });
    let received = series_value(
        &text,
        "sonde_tcp_bytes_received_total",
        &[&client_name, "direction=\"outbound\"", "port=\"8080\""],
    )
    .unwrap_or_default();
    let sent = series_value(
        &text,
        "sonde_tcp_bytes_sent_total",
        &[&server_name, "direction=\"inbound\"", "port=\"8080\""],
    )
    .unwrap_or_default();
    // The payload and httpd's response header, counted on both ends alike.
    assert!(
        (PAYLOAD as f64..PAYLOAD as f64 + 1024.0).contains(&received),
        "client received {received}"
    );
    assert_eq!(sent, received, "what the server sent is what the client received");
    // Both series are the containers' own: their cgroup ids carry the Docker ids.
    for (name, id) in [(&client_name, &client.id), (&server_name, &server.id)] {
        let line = text
            .lines()
            .find(|l| l.starts_with("sonde_tcp_connects_total{") && l.contains(name.as_str()))
            .unwrap_or_else(|| panic!("no connects series for {name}:\n{text}"));
        assert!(line.contains(id.as_str()), "{line}");
    }
}
