//! The image as operators run it: docker/build-static.sh builds sonde statically linked on
//! this machine and the image FROM scratch around it (nothing is pulled); the image runs
//! against the real Docker engine with exactly the privileges and mounts the README
//! documents, and its /metrics has container metrics for the host's other containers and
//! their connection metrics. Needs root and a Docker engine; the first run makes one release
//! build (target/static).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::kit::repo_path;
use common::*;

/// The documented way to run the image (README, "Privileges"), less the image name.
const RUN_FLAGS: &[&str] = &[
    "--pid=host",
    "--cap-drop=ALL",
    "--cap-add=SYS_ADMIN",
    "--cap-add=SYS_PTRACE",
    "--security-opt=apparmor=unconfined",
    "--read-only",
    "-v",
    "/proc:/host/proc:ro",
    "-v",
    "/sys:/host/sys:ro",
    "-v",
    "/:/host/root:ro",
    "-v",
    "/var/run/docker.sock:/var/run/docker.sock:ro",
];

/// An image tag or container removed when dropped.
struct Removed {
    kind: &'static str,
    name: String,
}

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args([self.kind, "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The largest value among the samples of `name` whose series contain both strings.
fn sample(text: &str, name: &str, id_contains: &str, label: &str) -> Option<f64> {
    samples_containing(text, name, &[id_contains, label])
        .iter()
        .map(|s| s.value)
        .reduce(f64::max)
}

/// Prints the image's log when the test fails while it is alive.
struct LogsOnFailure<'a>(&'a dyn Fn() -> String);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the image's log:\n{}", (self.0)());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scratch_image_runs_with_the_documented_privileges_and_sees_the_hosts_containers() {
    let test = "the_scratch_image_runs_with_the_documented_privileges_and_sees_the_hosts_containers";
    if !root_or_skip(test) || !docker_or_skip(test) {
        return;
    }
    let tag = format!("sonde-e2e-image:{}", unique_name("t"));
    let built = Command::new(repo_path("docker/build-static.sh"))
        .arg(&tag)
        .stderr(Stdio::inherit())
        .output()
        .expect("run docker/build-static.sh");
    let _image = Removed {
        kind: "rmi",
        name: tag.clone(),
    };
    assert!(built.status.success(), "docker/build-static.sh failed");
    let binary = String::from_utf8_lossy(&built.stdout).trim().to_owned();
    let file = Command::new("readelf")
        .args(["-d", &binary])
        .output()
        .expect("run readelf");
    assert!(
        !String::from_utf8_lossy(&file.stdout).contains("(NEEDED)"),
        "{binary} needs shared libraries"
    );

    // The host's other containers: an HTTP server and a client fetching from it.
    let server = Container::run(
        "sonde-img-server",
        &[],
        "mkdir -p /www && dd if=/dev/zero of=/www/payload bs=1024 count=64 2>/dev/null && echo ready && httpd -f -p 8080 -h /www",
    );
    server.wait_for_log("ready", Duration::from_secs(30));
    let address = server.inspect("{{.NetworkSettings.IPAddress}}");
    let client = Container::run(
        "sonde-img-client",
        &[],
        &format!("while :; do wget -q -O /dev/null http://{address}:8080/payload; sleep 0.3; done"),
    );

    let name = unique_name("sonde-img-sonde");
    let _sonde = Removed {
        kind: "rm",
        name: name.clone(),
    };
    let run = |flags: &[&str]| {
        Command::new("docker")
            .args(["run", "-d", "--name", &name])
            .args(flags)
            .arg(&tag)
            .output()
            .expect("docker run the image")
    };
    // CAP_SYS_ADMIN stands for CAP_BPF and CAP_PERFMON (and engines before 23.0 do not know
    // those names), so the kit asks for neither.
    let out = run(RUN_FLAGS);
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sonde_ip = String::from_utf8_lossy(
        &Command::new("docker")
            .args(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &name])
            .output()
            .expect("docker inspect")
            .stdout,
    )
    .trim()
    .to_owned();
    let logs = || {
        let out = Command::new("docker")
            .args(["logs", &name])
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // Scrape until every collector has succeeded and a whole fetch of the client shows up on
    // both sides: a scrape taken while the server has sent and the client not yet read (or
    // inside the container stats' cache window) would see only part of one.
    let sonde_addr: std::net::SocketAddr = format!("{sonde_ip}:9977").parse().expect("the container's address");
    let _logs = LogsOnFailure(&logs);
    let whole_fetch = 64.0 * 1024.0;
    let text = scrape_until(&sonde_addr, "every collector and a whole fetch of the client", |text| {
        ["host", "container", "connection"]
            .iter()
            .all(|c| collector_success(text, c) == Some(1.0))
            && sample(text, "sonde_tcp_bytes_sent_total", &server.id, "port=\"8080\"").is_some_and(|v| v > 0.0)
            && sample(
                text,
                "sonde_tcp_bytes_received_total",
                &client.id,
                "direction=\"outbound\"",
            )
            .is_some_and(|v| v >= whole_fetch)
            && sample(
                text,
                "container_network_transmit_bytes_total",
                &server.id,
                "interface=\"eth0\"",
            )
            .is_some_and(|v| v >= whole_fetch)
    });

    // Container metrics for both containers of the host, network included (host PID
    // namespace, CAP_SYS_PTRACE, the host's /proc).
    for container in [&server, &client] {
        let cpu = sample(
            &text,
            "container_cpu_usage_seconds_total",
            &container.id,
            "cpu=\"total\"",
        );
        assert!(cpu.is_some_and(|v| v > 0.0), "{}: CPU {cpu:?}", container.name);
        let memory = sample(&text, "container_memory_working_set_bytes", &container.id, "id=");
        assert!(memory.is_some_and(|v| v > 0.0), "{}: memory {memory:?}", container.name);
    }
    let sent = sample(
        &text,
        "container_network_transmit_bytes_total",
        &server.id,
        "interface=\"eth0\"",
    );
    assert!(sent.is_some_and(|v| v >= 64.0 * 1024.0), "server transmitted {sent:?}");
    // Connection metrics from the probes: the server's inbound side, the client's outbound.
    let received = sample(
        &text,
        "sonde_tcp_bytes_received_total",
        &client.id,
        "direction=\"outbound\"",
    );
    assert!(
        received.is_some_and(|v| v >= 64.0 * 1024.0),
        "client received {received:?}"
    );
    let accepted = sample(&text, "sonde_tcp_connects_total", &server.id, "direction=\"inbound\"");
    assert!(accepted.is_some_and(|v| v >= 1.0), "server accepted {accepted:?}");
    // The Docker source names the connection series too (the socket is mounted).
    for (container, family, direction) in [
        (&client, "sonde_tcp_bytes_received_total", "outbound"),
        (&server, "sonde_tcp_connects_total", "inbound"),
    ] {
        let by_id = sample(&text, family, &container.id, &format!("direction=\"{direction}\""));
        let by_name = sample(
            &text,
            family,
            &format!("container=\"{}\"", container.name),
            &format!("direction=\"{direction}\""),
        );
        assert_eq!(by_name, by_id, "{family} of {} under its Docker name", container.name);
    }
    println!(
        "image {tag}: server sent {sent:?} bytes on eth0, client received {received:?} bytes over TCP, server accepted {accepted:?} connections"
    );
}
