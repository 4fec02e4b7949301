//! The real `sonde` binary on an ephemeral port, checked by the real consumers of its
//! output: Python's strict OpenMetrics parser, `promtool check metrics`, a protobuf decoder.

mod common;

use std::io::Read;
use std::process::Command;

use common::*;
use reqwest::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};

/// The host collector alone, so the family set does not depend on the machine's containers,
/// traffic or privileges (the container and connection collectors have tests of their own).
const HOST_ONLY: &[&str] = &["--no-collector.container", "--no-collector.connection", "--no-docker"];

/// Every family `sonde` answers with when only the host collector runs: the host collector, the framework's
/// per-collector families and the exporter's own.
const DEFAULT_FAMILIES: &[&str] = &[
    "cadvisor_version_info",
    "machine_cpu_cores",
    "machine_cpu_physical_cores",
    "machine_cpu_sockets",
    "machine_memory_bytes",
    "machine_scrape_error",
    "machine_swap_bytes",
    "process_cpu_seconds_total",
    "process_max_fds",
    "process_open_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
    "process_virtual_memory_bytes",
    "sonde_build_info",
    "sonde_collector_duration_seconds",
    "sonde_collector_success",
];

/// [`DEFAULT_FAMILIES`], with `machine_dimm_*` on a host whose kernel has EDAC modules.
fn default_families() -> Vec<&'static str> {
    let mut families = DEFAULT_FAMILIES.to_vec();
    let edac = std::fs::read_dir("/sys/devices/system/edac/mc")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|mc| std::fs::read_dir(mc.path()).into_iter().flatten().flatten())
        .any(|d| d.path().join("dimm_mem_type").exists());
    if edac {
        families.extend(["machine_dimm_capacity_bytes", "machine_dimm_count"]);
        families.sort_unstable();
    }
    families
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_gzip().build().expect("http client")
}

async fn get(url: &str, accept: Option<&str>) -> reqwest::Response {
    let mut request = client().get(url);
    if let Some(accept) = accept {
        request = request.header(ACCEPT, accept);
    }
    request.send().await.expect("request")
}

fn content_type(response: &reqwest::Response) -> String {
    response.headers()[CONTENT_TYPE].to_str().expect("ascii").to_owned()
}

#[tokio::test]
async fn openmetrics_scrape_parses_strictly_and_tells_the_host_truth() {
    let sonde = Sonde::start(HOST_ONLY);
    let response = get(&sonde.url("/metrics"), Some(OPENMETRICS_ACCEPT)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        content_type(&response),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let body = response.bytes().await.expect("body");
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    assert!(text.ends_with("# EOF\n"), "{text}");

    let families = python_openmetrics_families(&body).unwrap_or_else(|e| panic!("strict parser refused:\n{e}\n{text}"));
    let expected: Vec<String> = default_families()
        .iter()
        .map(|name| match *name {
            "process_cpu_seconds_total" => "process_cpu_seconds counter 1".to_owned(),
            name => format!("{name} gauge 1"),
        })
        .collect();
    assert_eq!(families, expected);

    let (mem_total, cpus) = host_truth();
    assert_eq!(sample_value(&text, "machine_cpu_cores"), Some(cpus));
    assert_eq!(sample_value(&text, "machine_memory_bytes"), Some(mem_total));
    assert_eq!(collector_success(&text, "host"), Some(1.0));
    assert_eq!(sample_value(&text, "machine_scrape_error"), Some(0.0));
    // cAdvisor's version family with sonde in its place and this kernel's release.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let version = parse_samples(&text)
        .into_iter()
        .find(|s| s.name == "cadvisor_version_info")
        .expect("cadvisor_version_info");
    assert_eq!(version.label("kernelVersion"), Some(kernel.trim()));
    assert_eq!(version.label("cadvisorVersion"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(version.label("dockerVersion"), Some(""));
    assert_eq!(version.value, 1.0);

    // cAdvisor's counts: distinct `core id` and `physical id` values of /proc/cpuinfo
    // (this test machine's x86 cpuinfo has both), swap from SwapTotal.
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("cpuinfo");
    let distinct = |key: &str| {
        let values: std::collections::BTreeSet<&str> = cpuinfo
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim())
            .collect();
        values.len() as f64
    };
    assert_eq!(
        sample_value(&text, "machine_cpu_physical_cores"),
        Some(distinct("core id"))
    );
    assert_eq!(
        sample_value(&text, "machine_cpu_sockets"),
        Some(distinct("physical id"))
    );
    let swap_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .expect("meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("SwapTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("SwapTotal");
    assert_eq!(sample_value(&text, "machine_swap_bytes"), Some(swap_kib * 1024.0));
}

#[tokio::test]
async fn default_text_format_passes_promtool_without_complaint() {
    let sonde = Sonde::start(HOST_ONLY);
    let response = get(&sonde.url("/metrics"), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "text/plain; version=0.0.4; charset=utf-8");
    let body = response.bytes().await.expect("body");
    let (ok, complaints) = promtool_check_metrics(&body);
    assert!(ok && complaints.trim().is_empty(), "promtool: {complaints}");
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    assert_eq!(family_names(&text), default_families());
    let build_info = format!(
        "sonde_build_info{{version=\"{}\",revision=\"{}\",rustc=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        sonde::build_info::REVISION,
        sonde::build_info::RUSTC
    );
    assert_eq!(sample_value(&text, &build_info), Some(1.0), "{text}");
    let (mem_total, cpus) = host_truth();
    assert_eq!(sample_value(&text, "machine_cpu_cores"), Some(cpus));
    assert_eq!(sample_value(&text, "machine_memory_bytes"), Some(mem_total));
}

#[tokio::test]
async fn garbage_accept_headers_get_text() {
    let sonde = Sonde::start(HOST_ONLY);
    for accept in [
        "garbage",
        ";;;,,q=x",
        "application/json",
        "application/openmetrics-text;version=7",
    ] {
        let response = get(&sonde.url("/metrics"), Some(accept)).await;
        assert_eq!(response.status(), 200, "{accept}");
        assert_eq!(
            content_type(&response),
            "text/plain; version=0.0.4; charset=utf-8",
            "{accept}"
        );
        let (ok, complaints) = promtool_check_metrics(&response.bytes().await.expect("body"));
        assert!(ok, "{accept}: {complaints}");
    }
}

#[tokio::test]
async fn protobuf_when_preferred() {
    let sonde = Sonde::start(HOST_ONLY);
    let response = get(&sonde.url("/metrics"), Some(PROTOBUF_ACCEPT)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        content_type(&response),
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
    let body = response.bytes().await.expect("body");
    let mut names = Vec::new();
    for family in decode_protobuf(&body) {
        if family.name() == "machine_memory_bytes" {
            assert_eq!(family.get_metric()[0].get_gauge().value(), host_truth().0);
        }
        names.push(family.name().to_owned());
    }
    assert_eq!(names, default_families());
}

#[tokio::test]
async fn gzip_when_the_client_asks() {
    let sonde = Sonde::start(HOST_ONLY);
    let response = client()
        .get(sonde.url("/metrics"))
        .header(ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
    let compressed = response.bytes().await.expect("body");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .expect("valid gzip");
    assert_eq!(family_names(&text), default_families());
    let plain = get(&sonde.url("/metrics"), None).await;
    assert!(!plain.headers().contains_key(CONTENT_ENCODING));

    // OpenMetrics, gzipped from per-family segments, still ends with its EOF marker; an
    // encoding refused with q=0 is not used.
    for (accept_encoding, gzipped) in [("deflate, gzip;q=0.5", true), ("gzip;q=0", false)] {
        let response = client()
            .get(sonde.url("/metrics"))
            .header(ACCEPT_ENCODING, accept_encoding)
            .header("accept", "application/openmetrics-text;version=1.0.0")
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.headers().contains_key(CONTENT_ENCODING),
            gzipped,
            "{accept_encoding}"
        );
        let body = response.bytes().await.expect("body");
        let mut text = String::new();
        if gzipped {
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut text)
                .expect("valid gzip");
        } else {
            text = String::from_utf8(body.to_vec()).expect("utf-8");
        }
        assert!(text.ends_with("# EOF\n"), "{accept_encoding}: {text}");
        // OpenMetrics names counter families without `_total`.
        let expected: Vec<&str> = default_families()
            .iter()
            .map(|f| f.trim_end_matches("_total"))
            .collect();
        assert_eq!(family_names(&text), expected, "{accept_encoding}");
    }
}

#[tokio::test]
async fn flags_beat_environment_beats_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sonde.yml");
    std::fs::write(&file, "web.telemetry-path: /from-file\nlog.format: json\n").expect("write config");
    let file = file.to_str().expect("utf-8 path");

    let sonde = Sonde::start_with_env(&["--config.file", file, "--log.format=logfmt"], &[]);
    assert_eq!(get(&sonde.url("/from-file"), None).await.status(), 200);
    assert_eq!(get(&sonde.url("/metrics"), None).await.status(), 404);
    drop(sonde);

    let env = [("SONDE_WEB_TELEMETRY_PATH", "/from-env")];
    let sonde = Sonde::start_with_env(&["--config.file", file, "--log.format=logfmt"], &env);
    assert_eq!(get(&sonde.url("/from-env"), None).await.status(), 200);
    assert_eq!(get(&sonde.url("/from-file"), None).await.status(), 404);
    drop(sonde);

    let sonde = Sonde::start_with_env(&["--web.telemetry-path=/from-flag", "--log.format=logfmt"], &env);
    assert_eq!(get(&sonde.url("/from-flag"), None).await.status(), 200);
    assert_eq!(get(&sonde.url("/from-env"), None).await.status(), 404);
}

#[tokio::test]
async fn a_disabled_collector_is_neither_read_nor_exported() {
    for (args, env) in [
        (vec!["--no-collector.host"], vec![]),
        (vec![], vec![("SONDE_COLLECTOR_HOST", "false")]),
    ] {
        let sonde = Sonde::start_with_env(&args, &env);
        let text = get(&sonde.url("/metrics"), None).await.text().await.expect("body");
        let names = family_names(&text);
        assert!(
            !names.iter().any(|n| n.starts_with("machine_")),
            "{args:?} {env:?}: {names:?}"
        );
        assert!(!text.contains("collector=\"host\""), "{text}");
        assert!(names.contains(&"sonde_build_info".to_owned()));
    }
}

#[test]
fn bad_input_exits_non_zero_with_one_clear_line() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = format!("--web.listen-address={}", occupied.local_addr().expect("addr"));
    let cases: &[(&[&str], &str)] = &[
        (&["--no-such-flag"], "unexpected argument '--no-such-flag'"),
        (&["--web.listen-address=nonsense"], "--web.listen-address"),
        (&["--web.listen-address=127.0.0.1:http"], "port must be a number"),
        (&["--log.level=verbose"], "invalid value 'verbose' for '--log.level"),
        (&["--log.format=xml"], "invalid value 'xml' for '--log.format"),
        (&["--scrape.timeout=soon"], "--scrape.timeout"),
        (
            &["--config.file=/nonexistent/sonde.yml"],
            "reading config file /nonexistent/sonde.yml",
        ),
        (&[taken.as_str()], "Address already in use"),
    ];
    for (args, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_sonde"))
            .args(*args)
            .output()
            .expect("run sonde");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.lines().count(), 1, "{args:?} printed:\n{stderr}");
        assert!(stderr.starts_with("sonde: error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: expected {expected:?} in {stderr}");
    }
}

#[test]
fn help_and_version_go_to_stdout_and_succeed() {
    let help = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .arg("--help")
        .output()
        .expect("run sonde");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--config.file",
        "--web.listen-address",
        "--web.telemetry-path",
        "--web.max-requests",
        "--web.request-timeout",
        "--scrape.timeout",
        "--scrape.timeout-offset",
        "--log.level",
        "--log.format",
        "--path.procfs",
        "--path.sysfs",
        "--path.rootfs",
        "--collector.host",
        "--no-collector.host",
        "SONDE_WEB_LISTEN_ADDRESS",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    let version = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .arg("--version")
        .output()
        .expect("run sonde");
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let mut sonde = Sonde::start(HOST_ONLY);
    assert_eq!(get(&sonde.url("/healthz"), None).await.status(), 200);
    let status = sonde.terminate();
    assert!(status.success(), "exit status {status:?}");
    let log: Vec<String> = sonde.log.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("shutting down") && l.contains("SIGTERM")),
        "{log:?}"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_scrapes_all_succeed() {
    let sonde = Sonde::start(&["--web.max-requests=200"]);
    let url = sonde.url("/metrics");
    let client = client();
    let scrapes = (0..200).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let text = response.text().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, text))
        })
    });
    let results = futures::future::join_all(scrapes).await;
    for result in results {
        let (status, text) = result.expect("task").expect("scrape");
        assert_eq!(status, 200);
        assert_eq!(collector_success(&text, "host"), Some(1.0));
    }
}
