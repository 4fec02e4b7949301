//! The exporter's own metrics that do not belong to any collector and cannot be switched
//! off, as in node_exporter: build information and the `process_*` families.

use prometheus::proto::MetricFamily;

use crate::build_info;
use crate::exposition::family::FamilyBuilder;

pub mod process;

use process::ProcessMetrics;

pub struct ExporterMetrics {
    process: ProcessMetrics,
}

impl ExporterMetrics {
    pub fn new() -> Self {
        Self {
            process: ProcessMetrics::new(),
        }
    }

    /// `sonde_build_info` and `process_*` (CPU, memory, file descriptors, threads, start time).
    pub fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.process.collect();
        families.extend(
            FamilyBuilder::gauge(
                "sonde_build_info",
                "A metric with a constant '1' value labeled by version, revision and rustc version of sonde.",
            )
            .with_sample(
                &[
                    ("version", build_info::VERSION),
                    ("revision", build_info::REVISION),
                    ("rustc", build_info::RUSTC),
                ],
                1.0,
            )
            .build(),
        );
        families
    }
}

impl Default for ExporterMetrics {
    fn default() -> Self {
        Self::new()
    }
}
