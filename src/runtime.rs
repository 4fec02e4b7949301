//! The async runtime's threads: how many serve HTTP and run the collectors' async work.
//!
//! One by default, as node_exporter runs on one Go thread (`--runtime.gomaxprocs=1`): what
//! is heavy runs on threads of its own (reading cgroups, draining connection batches,
//! compressing large answers), so the async work is mostly waiting. A second worker only
//! woke to steal a scrape's small tasks, and the answer waited on the hand-over: over 1,000
//! real cgroups (`cargo bench --bench container`, issue 21) a warm scrape's p99 was 5.10 ms
//! with two workers, 1 ms above a server that only sends the same bytes, and 3.40-4.06 ms
//! with one, at that server's figure; side by side, one worker's p90 was 2.7-3.4 ms where
//! two's was 3.9-4.8; a cold scrape's CPU did not change.

use crate::settings::InvalidValue;

/// The `--runtime.*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Threads that serve HTTP and run the collectors' async work (0: one per CPU)
    #[arg(long = "runtime.worker-threads", value_name = "N", default_value = "1")]
    worker_threads: String,
}

/// The most workers asked for: beyond it, a typo (an extra digit) rather than a need.
const MAX_WORKERS: usize = 1024;

impl RuntimeArgs {
    pub fn resolve(&self) -> Result<RuntimeConfig, InvalidValue> {
        let invalid = |reason: String| InvalidValue {
            flag: "runtime.worker-threads",
            value: self.worker_threads.clone(),
            reason,
        };
        let workers: usize = self
            .worker_threads
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| invalid(e.to_string()))?;
        if workers > MAX_WORKERS {
            return Err(invalid(format!("at most {MAX_WORKERS}")));
        }
        Ok(RuntimeConfig {
            worker_threads: std::num::NonZeroUsize::new(workers),
        })
    }
}

/// The resolved `--runtime.*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `None`: one per CPU.
    pub worker_threads: Option<std::num::NonZeroUsize>,
}

impl RuntimeConfig {
    /// The multi-threaded runtime with these workers, timers and I/O enabled.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(workers) = self.worker_threads {
            builder.worker_threads(workers.get());
        }
        builder.enable_all().build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(value: &str) -> Result<RuntimeConfig, InvalidValue> {
        RuntimeArgs {
            worker_threads: value.to_owned(),
        }
        .resolve()
    }

    #[test]
    fn worker_threads_zero_means_one_per_cpu_and_nonsense_is_refused() {
        assert_eq!(resolve("1").expect("valid").worker_threads.map(|n| n.get()), Some(1));
        assert_eq!(resolve("4").expect("valid").worker_threads.map(|n| n.get()), Some(4));
        assert_eq!(resolve("0").expect("valid").worker_threads, None);
        for bad in ["-1", "two", "", "1025"] {
            let error = resolve(bad).expect_err(bad).to_string();
            assert!(error.contains("runtime.worker-threads"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_runtime_has_the_workers_asked_for() {
        let runtime = resolve("3").expect("valid").build().expect("a runtime");
        assert_eq!(runtime.metrics().num_workers(), 3);
        let runtime = resolve("1").expect("valid").build().expect("a runtime");
        assert_eq!(runtime.metrics().num_workers(), 1);
    }
}
