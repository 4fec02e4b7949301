//! The container collector against containers of a real Docker engine, run from a busybox
//! image built `FROM scratch`: a CPU burner, a memory holder and a chatty pair over the
//! Docker bridge, reported under their Docker names and images. Needs root and a Docker
//! engine (the test command starts one).

mod common;

use std::process::Command;
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

/// `(rx, tx)` bytes of `interface` in `/proc/<pid>/net/dev`: the kernel's own figures.
fn net_dev_bytes(pid: &str, interface: &str) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).expect("read net/dev");
    let fields: Vec<f64> = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{interface}:")).map(str::to_owned))
        .expect("the interface in net/dev")
        .split_whitespace()
        .map(|f| f.parse().expect("a number"))
        .collect();
    (fields[0], fields[8])
}

/// A sandbox and an app container laid out as cri-dockerd lays out a pod (the app joins the
/// sandbox's network namespace; both carry the `io.kubernetes.*` labels), and a client that
/// fetches a payload from the app: the namespace is reported once, on the sandbox, with the
/// kernel's figures, and both are named from their labels without a Kubelet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_network_namespace_is_reported_once_on_its_owner_and_pods_named_from_labels() {
    let test = "a_shared_network_namespace_is_reported_once_on_its_owner_and_pods_named_from_labels";
    if !root_or_skip(test) || !docker_or_skip(test) {
        return;
    }
    let pod = unique_name("web");
    let uid = format!("{:08x}-0000-4000-8000-000000000001", std::process::id());
    let pod_labels = |container: &str| {
        vec![
            format!("io.kubernetes.pod.name={pod}"),
            "io.kubernetes.pod.namespace=shop".to_owned(),
            format!("io.kubernetes.pod.uid={uid}"),
            format!("io.kubernetes.container.name={container}"),
        ]
    };
    let with_labels = |labels: Vec<String>, extra: &[String]| -> Vec<String> {
        labels
            .into_iter()
            .flat_map(|l| ["--label".to_owned(), l])
            .chain(extra.iter().cloned())
            .collect()
    };
    let sandbox_args = with_labels(
        pod_labels("POD"),
        &["--label".into(), "io.kubernetes.docker.type=podsandbox".into()],
    );
    let sandbox = Container::run(
        "sonde-sandbox",
        &sandbox_args.iter().map(String::as_str).collect::<Vec<_>>(),
        "echo up && sleep 3600",
    );
    sandbox.wait_for_log("up", Duration::from_secs(30));
    let app_args = with_labels(pod_labels("app"), &[format!("--network=container:{}", sandbox.id)]);
    let app = Container::run(
        "sonde-app",
        &app_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &format!(
            "mkdir -p /www && dd if=/dev/zero of=/www/payload bs=1048576 count={} 2>/dev/null && echo ready && httpd -f -p 8080 -h /www",
            PAYLOAD >> 20
        ),
    );
    app.wait_for_log("ready", Duration::from_secs(30));
    let address = sandbox.inspect("{{.NetworkSettings.IPAddress}}");
    let client = Container::run(
        "sonde-client",
        &[],
        &format!("wget -q -O /dev/null http://{address}:8080/payload && echo fetched && sleep 3600"),
    );
    client.wait_for_log("fetched", Duration::from_secs(60));

    let sonde = Sonde::start(&[
        "--no-collector.host",
        "--no-collector.connection",
        "--container.cache-validity=100ms",
        "--container.inventory-validity=100ms",
    ]);
    let text = scrape_until_named(&sonde, &[&sandbox, &app, &client]);
    let image = busybox_image();
    let sandbox_id = cgroup_of(&text, &sandbox.id);
    let app_id = cgroup_of(&text, &app.id);
    let k8s = |id: &str, name: &str, container: &str| {
        label_set(&[
            ("container", container),
            ("id", id),
            ("image", image),
            ("name", name),
            ("namespace", "shop"),
            ("pod", &pod),
        ])
    };
    // Named from the runtime's labels, as the kubelet's cAdvisor names them.
    for (c, id, container) in [(&sandbox, &sandbox_id, "POD"), (&app, &app_id, "app")] {
        let series = format!("container_last_seen{}", k8s(id, &c.name, container));
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{series} "))),
            "no {series} in:\n{text}"
        );
    }

    // Every network family: series of the shared namespace on the sandbox only, one per
    // interface (eth0; lo is not reported), none on the app that joined it.
    let families = [
        "container_network_receive_bytes_total",
        "container_network_receive_packets_total",
        "container_network_receive_packets_dropped_total",
        "container_network_receive_errors_total",
        "container_network_transmit_bytes_total",
        "container_network_transmit_packets_total",
        "container_network_transmit_packets_dropped_total",
        "container_network_transmit_errors_total",
    ];
    for family in families {
        let on_sandbox = samples_containing(&text, family, &[&sandbox.id]);
        let interfaces: Vec<&str> = on_sandbox.iter().filter_map(|s| s.label("interface")).collect();
        assert_eq!(interfaces, ["eth0"], "{family} on the sandbox");
        assert!(
            samples_containing(&text, family, &[&app.id]).is_empty(),
            "{family} on the app container, which joined the sandbox's namespace:\n{text}"
        );
    }

    // The sandbox's figures are its namespace's, as the kernel counts them (read while the
    // namespace is idle, so the scrape and the file agree exactly).
    let pid = sandbox.inspect("{{.State.Pid}}");
    let labels = label_set(&[
        ("container", "POD"),
        ("id", &sandbox_id),
        ("image", image),
        ("interface", "eth0"),
        ("name", &sandbox.name),
        ("namespace", "shop"),
        ("pod", &pod),
    ]);
    let mut agreed = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = scrape(&sonde);
        let (rx, tx) = net_dev_bytes(&pid, "eth0");
        let scraped = (
            sample_value(&text, &format!("container_network_receive_bytes_total{labels}")),
            sample_value(&text, &format!("container_network_transmit_bytes_total{labels}")),
        );
        if scraped == (Some(rx), Some(tx)) {
            agreed = Some(tx);
            break;
        }
    }
    let sent = agreed.expect("the sandbox's eth0 bytes equal its namespace's net/dev");
    println!("sandbox: transmitted {sent} bytes for a {PAYLOAD}-byte payload served by the app");
    assert!(
        sent >= PAYLOAD as f64 && sent <= 1.10 * PAYLOAD as f64,
        "sent {sent} for {PAYLOAD}"
    );

    // Without the Docker source no runtime says who joined whom: the namespace's owner is
    // the container whose process started first in it, the sandbox.
    let blind = Sonde::start(&[
        "--no-collector.host",
        "--no-collector.connection",
        "--no-docker",
        "--container.cache-validity=100ms",
    ]);
    let text = scrape_until(&blind, "both containers reported", |t| {
        common::cgroup_of(t, &sandbox.id).is_some() && common::cgroup_of(t, &app.id).is_some()
    });
    for family in families {
        let owners: Vec<String> = samples_containing(&text, family, &[])
            .iter()
            .filter_map(|s| s.label("id"))
            .filter(|id| id.contains(&sandbox.id) || id.contains(&app.id))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            owners,
            std::slice::from_ref(&sandbox_id),
            "{family} without the Docker source"
        );
    }
}

/// The kernel's counters of a disk from `/proc/diskstats` (by name, without `/dev/`).
fn diskstats_of(name: &str) -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/diskstats").expect("read /proc/diskstats");
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&name))
        .unwrap_or_else(|| panic!("{name} in /proc/diskstats"))[3..14]
        .iter()
        .map(|v| v.parse().expect("a number"))
        .collect()
}

/// A file of known size written in a container's writable layer: `container_fs_usage_bytes`
/// grows by its allocated size, and always equals a `du` of the overlay's upper directory
/// plus the container's own directory (as cAdvisor adds them), measured by the background
/// walk; `container_fs_inodes_total` is the layer's entries, `container_fs_limit_bytes` the
/// filesystem's size (statvfs), `device` the disk the layer lies on, and the filesystem's IO
/// series lie between two reads of `/proc/diskstats` around the scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writable_layer_usage_against_a_file_of_known_size() {
    use std::os::unix::fs::MetadataExt;
    let test = "writable_layer_usage_against_a_file_of_known_size";
    if !root_or_skip(test) || !docker_or_skip(test) {
        return;
    }
    const KNOWN: u64 = 5 << 20;
    let layer = Container::run("sonde-layer", &[], "echo ready && sleep 3600");
    layer.wait_for_log("ready", Duration::from_secs(30));
    assert_eq!(
        layer.inspect("{{.GraphDriver.Name}}"),
        "overlay2",
        "the test engine's storage driver"
    );
    let upper = std::path::PathBuf::from(layer.inspect("{{.GraphDriver.Data.UpperDir}}"));
    let own_dir = std::path::PathBuf::from(layer.inspect("{{.HostnamePath}}"))
        .parent()
        .expect("the container's directory")
        .to_path_buf();
    let expected = || disk_usage(&upper).0 + disk_usage(&own_dir).0;

    let sonde = Sonde::start(&[
        "--no-collector.host",
        "--no-collector.connection",
        "--container.cache-validity=100ms",
        "--container.inventory-validity=100ms",
        "--container.fs-usage-window=200ms",
    ]);
    let image = busybox_image();
    let usage_of = |text: &str| {
        let id = common::cgroup_of(text, &layer.id)?;
        parse_samples(text)
            .into_iter()
            .find(|s| {
                s.name == "container_fs_usage_bytes"
                    && s.label("id") == Some(id.as_str())
                    && s.label("name") == Some(layer.name.as_str())
            })
            .map(|s| s.value)
    };
    let before = scrape_until(&sonde, "the layer's usage equal to du", |text| {
        usage_of(text) == Some(expected() as f64)
    });
    let usage_before = usage_of(&before).expect("usage");

    let written = Command::new("docker")
        .args(["exec", &layer.id, "dd", "if=/dev/zero", "of=/known", "bs=1048576"])
        .arg(format!("count={}", KNOWN >> 20))
        .output()
        .expect("run docker exec");
    assert!(written.status.success(), "dd in the container: {written:?}");
    let file = std::fs::symlink_metadata(upper.join("known")).expect("the file in the upper directory");
    assert_eq!(file.len(), KNOWN);
    assert_eq!(file.blocks() * 512, KNOWN, "the file's allocated size");

    let after = scrape_until(&sonde, "the layer's usage grown to du", |text| {
        usage_of(text) == Some(expected() as f64) && usage_of(text) != Some(usage_before)
    });
    let usage_after = usage_of(&after).expect("usage");
    println!("writable layer: {usage_before} bytes, then {usage_after} after writing {KNOWN} bytes");
    assert_eq!(
        usage_after - usage_before,
        KNOWN as f64,
        "usage grew by the file's size"
    );

    // The other filesystem series of the container, against the kernel's own figures.
    let id = cgroup_of(&after, &layer.id);
    let device = samples_with(&after, "container_fs_usage_bytes", &[("id", &id)])[0]
        .label("device")
        .expect("device")
        .to_owned();
    let rdev = std::fs::metadata(&device).expect("the device node").rdev();
    assert_eq!(
        rdev,
        std::fs::metadata(&upper).expect("lstat").dev(),
        "{device} holds the layer"
    );
    let (size, _, _, _) = statvfs(&upper);
    let name = device.trim_start_matches("/dev/").to_owned();
    let counters_before = diskstats_of(&name);
    // Past the stats window (100 ms), so the next scrape reads diskstats after the line
    // above rather than serving a read from before it.
    std::thread::sleep(Duration::from_millis(250));
    let text = scrape_until(&sonde, "a fresh read", |text| usage_of(text).is_some());
    let counters_after = diskstats_of(&name);
    let value = |family: &str| {
        sample_value(
            &text,
            &format!(
                "{family}{}",
                named_container_labels(&id, &layer.name, image, &[("device", &device)])
            ),
        )
        .unwrap_or_else(|| panic!("{family} of the layer's filesystem"))
    };
    assert_eq!(value("container_fs_limit_bytes"), size as f64);
    assert_eq!(value("container_fs_inodes_total"), disk_usage(&upper).1 as f64);
    assert_eq!(value("container_fs_inodes_free"), 0.0, "cAdvisor sets none for a layer");
    // diskstats columns: 2 sectors read, 6 sectors written, 9 ms doing I/O, 10 weighted.
    for (family, column, scale) in [
        ("container_fs_sector_reads_total", 2, 1.0),
        ("container_fs_sector_writes_total", 6, 1.0),
        ("container_fs_io_time_seconds_total", 9, 1e9),
        ("container_fs_io_time_weighted_seconds_total", 10, 1e9),
    ] {
        let v = value(family) * scale;
        let (low, high) = (counters_before[column] as f64, counters_after[column] as f64);
        assert!(
            low <= v.round() && v.round() <= high,
            "{family}: {v} not within /proc/diskstats' {low}..{high}"
        );
    }
}
