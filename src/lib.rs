//! sonde: a Prometheus/OpenMetrics exporter for cAdvisor-compatible container metrics and
//! per-container connection metrics. See README.md and DESIGN.md for the architecture.

pub mod build_info;
pub mod cache;
pub mod cgroup;
pub mod collector;
pub mod config;
pub mod container;
pub mod docker;
pub mod ebpf;
pub mod exposition;
pub mod family;
pub mod gateway;
pub mod kubelet;
pub mod logging;
pub mod scrape;
pub mod self_metrics;
pub mod server;
pub mod sources;
