//! sonde: a Prometheus/OpenMetrics exporter for cAdvisor-compatible container metrics and
//! per-container connection metrics. README.md is the user's manual; docs/ARCHITECTURE.md
//! is the design: the four scrape steps, the module map and its layers, the kernel/user ABI.

pub mod build_info;
pub mod cache;
pub mod cgroup;
pub mod cli;
pub mod collector;
pub mod conntrack;
pub mod disk;
pub mod docker;
pub mod ebpf;
pub mod exposition;
pub mod fdlimit;
pub mod fsread;
pub mod gateway;
pub mod identity;
pub mod kubelet;
pub mod logging;
pub mod netns;
pub mod paths;
pub mod prefetch;
pub mod privileges;
pub mod procstat;
pub mod runtime;
pub mod scrape;
pub mod self_metrics;
pub mod server;
pub mod settings;
pub mod sync;
