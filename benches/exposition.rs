//! Encodes 100,000 series in each exposition format and prints bytes, the median time and
//! its spread, and series per second. Run: `cargo bench --bench exposition`.
//! `SONDE_BENCH_ITERATIONS` (default 21) sets how many timed runs each format gets. Run by
//! `cargo test` (no `--bench` argument) it does one run per format, as a smoke test.

use std::time::{Duration, Instant};

use prometheus::proto::MetricFamily;
use sonde::exposition::Format;
use sonde::exposition::family::FamilyBuilder;

const FAMILIES: usize = 50;
const SERIES_PER_FAMILY: usize = 2_000;

/// cAdvisor-shaped data: 50 families of 2,000 containers, each with the usual label set.
fn families() -> Vec<MetricFamily> {
    (0..FAMILIES)
        .map(|f| {
            let name = format!("container_bench_metric_{f:02}_total");
            let mut family = if f % 2 == 0 {
                FamilyBuilder::counter(&name, "A counter shaped like cAdvisor's container families.")
            } else {
                FamilyBuilder::gauge(&name.replace("_total", "_bytes"), "A gauge shaped like cAdvisor's.")
            };
            for s in 0..SERIES_PER_FAMILY {
                let id = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{s:08x}.slice/cri-containerd-{s:064x}.scope");
                let name = format!("k8s_app-{s}_pod-{s}_namespace-{}_0", s % 40);
                let image = format!("registry.example/team-{}/app:{}.{}.{}", s % 40, s % 7, s % 13, s % 3);
                let namespace = format!("namespace-{}", s % 40);
                let pod = format!("app-{s}-7d9f8b6c5-x{:04}", s % 9973);
                let labels = [
                    ("container", "app"),
                    ("id", id.as_str()),
                    ("image", image.as_str()),
                    ("name", name.as_str()),
                    ("namespace", namespace.as_str()),
                    ("pod", pod.as_str()),
                ];
                family.sample(&labels, (s * 7919 + f) as f64 * 1.25);
            }
            family.build().expect("samples were added")
        })
        .collect()
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let iterations: usize = std::env::var("SONDE_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(if benchmarking { 21 } else { 1 });
    let families = families();
    let series = FAMILIES * SERIES_PER_FAMILY;
    println!("encoding {series} series in {FAMILIES} families, {iterations} timed runs per format (after one warm-up)");
    println!(
        "{:<12} {:>12} {:>11} {:>11} {:>11} {:>14}",
        "format", "bytes", "median ms", "min ms", "max ms", "series/s"
    );
    for (label, format) in [
        ("text-0.0.4", Format::Text),
        ("openmetrics", Format::OpenMetrics),
        ("protobuf", Format::Protobuf),
    ] {
        let mut out = Vec::new();
        format.encode(&families, &mut out).expect("encodes");
        let bytes = out.len();
        let mut times: Vec<Duration> = (0..iterations)
            .map(|_| {
                out.clear();
                let start = Instant::now();
                format.encode(&families, &mut out).expect("encodes");
                let elapsed = start.elapsed();
                assert_eq!(out.len(), bytes, "encoding is deterministic");
                elapsed
            })
            .collect();
        times.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = times[times.len() / 2];
        println!(
            "{:<12} {:>12} {:>11.1} {:>11.1} {:>11.1} {:>14.0}",
            label,
            bytes,
            ms(median),
            ms(times[0]),
            ms(times[times.len() - 1]),
            series as f64 / median.as_secs_f64()
        );
    }
}
