//! The container collector against containers of a real Docker engine, run from a busybox
//! image built `FROM scratch`: a CPU burner, a memory holder and a chatty pair over the
//! Docker bridge, reported under their Docker names and images. Needs root and a Docker
//! engine (the test command starts one).

mod common;

use std::time::Duration;

use common::*;

const HELD: u64 = 64 << 20;
const PAYLOAD: u64 = 8 << 20;

/// The `id` label of the cgroup of a Docker container, as found in a scrape.
fn cgroup_of(text: &str, container_id: &str) -> String {
    common::cgroup_of(text, container_id)
        .unwrap_or_else(|| panic!("no cgroup for container {container_id} in:\n{text}"))
}

/// Scrapes until every container's series carry its Docker name.
fn scrape_until_named(sonde: &Sonde, containers: &[&Container]) -> String {
    scrape_until(sonde, "every container named", |text| {
        containers.iter().all(|c| {
            parse_samples(text)
                .iter()
                .filter(|s| s.name == "container_last_seen" && s.series.contains(&c.id))
                .any(|s| s.label("name") == Some(c.name.as_str()))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_containers_cpu_memory_and_network() {
    let test = "docker_containers_cpu_memory_and_network";
    if !root_or_skip(test) || !docker_or_skip(test) {
        return;
    }
    let burner = Container::run("sonde-burner", &[], "while :; do :; done");
    let holder = Container::run(
        "sonde-holder",
        &["--shm-size=128m"],
        &format!(
            "dd if=/dev/zero of=/dev/shm/hold bs=1048576 count={} 2>/dev/null && echo held && sleep 3600",
            HELD >> 20
        ),
    );
    let server = Container::run(
        "sonde-server",
        &[],
        &format!(
            "mkdir -p /www && dd if=/dev/zero of=/www/payload bs=1048576 count={} 2>/dev/null && echo ready && httpd -f -p 8080 -h /www",
            PAYLOAD >> 20
        ),
    );
    server.wait_for_log("ready", Duration::from_secs(30));
    holder.wait_for_log("held", Duration::from_secs(30));

    let sonde = Sonde::start(&[
        "--no-collector.host",
        "--no-collector.connection",
        "--container.cache-validity=100ms",
        "--container.inventory-validity=100ms",
    ]);
    // The Docker source lists the engine's containers right after start: wait for the names.
    let before = scrape_until_named(&sonde, &[&burner, &holder, &server]);
    let burner_id = cgroup_of(&before, &burner.id);
    let image = busybox_image();
    let cpu = |text: &str| {
        sample_value(
            text,
            &format!(
                "container_cpu_usage_seconds_total{}",
                named_container_labels(&burner_id, &burner.name, image, &[("cpu", "total")])
            ),
        )
        .expect("the burner's CPU")
    };

    // The client fetches the payload over the bridge from the server's httpd.
    let address = server.inspect("{{.NetworkSettings.IPAddress}}");
    let client = Container::run(
        "sonde-client",
        &[],
        &format!("wget -q -O /dev/null http://{address}:8080/payload && echo fetched && sleep 3600"),
    );
    client.wait_for_log("fetched", Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = scrape_until_named(&sonde, &[&burner, &holder, &server, &client]);

    let grew = cpu(&after) - cpu(&before);
    println!("burner: CPU grew {grew:.3} s in about 1.5 s");
    assert!(grew > 0.1, "the burner's CPU grew only {grew} s");

    let holder_id = cgroup_of(&after, &holder.id);
    let working_set = sample_value(
        &after,
        &format!(
            "container_memory_working_set_bytes{}",
            named_container_labels(&holder_id, &holder.name, image, &[])
        ),
    )
    .expect("the holder's working set");
    println!("holder: working set {working_set} bytes for {HELD} bytes held");
    assert!(
        (working_set - HELD as f64).abs() <= 0.10 * HELD as f64,
        "working set {working_set}"
    );

    let eth0 = [("interface", "eth0")];
    let server_id = cgroup_of(&after, &server.id);
    let sent = sample_value(
        &after,
        &format!(
            "container_network_transmit_bytes_total{}",
            named_container_labels(&server_id, &server.name, image, &eth0)
        ),
    )
    .expect("the server's transmitted bytes");
    println!("server: transmitted {sent} bytes for a {PAYLOAD}-byte payload");
    assert!(
        sent >= PAYLOAD as f64 && sent <= 1.10 * PAYLOAD as f64,
        "sent {sent} for {PAYLOAD}"
    );
    let client_id = cgroup_of(&after, &client.id);
    let received = sample_value(
        &after,
        &format!(
            "container_network_receive_bytes_total{}",
            named_container_labels(&client_id, &client.name, image, &eth0)
        ),
    )
    .expect("the client's received bytes");
    assert!(
        received >= PAYLOAD as f64 && received <= 1.10 * PAYLOAD as f64,
        "received {received}"
    );
}
