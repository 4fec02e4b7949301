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

/// The `--runtime.*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Threads that serve HTTP and run the collectors' async work (0: one per CPU)
    #[arg(
        long = "runtime.worker-threads",
        value_name = "N",
        default_value_t = 1,
        // Beyond it, a typo (an extra digit) rather than a need.
        value_parser = clap::value_parser!(u16).range(0..=1024)
    )]
    worker_threads: u16,
}

impl RuntimeArgs {
    pub fn resolve(&self) -> RuntimeConfig {
        RuntimeConfig {
            worker_threads: std::num::NonZeroUsize::new(usize::from(self.worker_threads)),
        }
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

    #[test]
    fn the_runtime_has_the_workers_asked_for_and_zero_is_one_per_cpu() {
        let config = |worker_threads| RuntimeArgs { worker_threads }.resolve();
        assert_eq!(config(0).worker_threads, None);
        let runtime = config(3).build().expect("a runtime");
        assert_eq!(runtime.metrics().num_workers(), 3);
        let runtime = config(1).build().expect("a runtime");
        assert_eq!(runtime.metrics().num_workers(), 1);
    }
}
