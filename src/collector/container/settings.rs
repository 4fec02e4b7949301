//! The `container` collector's settings and their flags (`--container.*`).

use std::time::Duration;

use crate::identity::filter::{FilterArgs, Filters};
use crate::settings::{self, InvalidValue};

/// Settings of the `container` collector.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// Stats are read at most once per window; scrapes inside it share one read.
    pub cache_validity: Duration,
    /// The list of containers, their limits and names are rebuilt at most once per window.
    pub inventory_validity: Duration,
    /// cgroups at or below these paths are reported even without a runtime layout.
    pub raw_cgroup_prefixes: Vec<String>,
    /// Which containers are reported (by every collector that names containers).
    pub filters: Filters,
    /// Each writable layer's disk usage is measured again at most once per window, by a
    /// background walk off the scrape path.
    pub fs_usage_window: Duration,
    /// The background walk counts at most this many directory entries per second.
    pub fs_usage_files_per_second: u64,
}

/// The `--container.*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ContainerArgs {
    /// Container stats are read at most once per this window; scrapes inside it share one read
    #[arg(long = "container.cache-validity", value_name = "DURATION", default_value = "2s")]
    cache_validity: String,
    /// The container list, limits and names are rebuilt at most once per this window
    #[arg(long = "container.inventory-validity", value_name = "DURATION", default_value = "10s")]
    inventory_validity: String,
    /// Report cgroups at or below this path too (repeatable; comma-separated in the environment)
    #[arg(long = "container.raw-cgroup-prefix", value_name = "PATH", value_delimiter = ',')]
    raw_cgroup_prefix: Vec<String>,
    /// Writable layers' disk usage (container_fs_usage_bytes) is measured again at most once per this window, in the background
    #[arg(long = "container.fs-usage-window", value_name = "DURATION", default_value = "1m")]
    fs_usage_window: String,
    /// The background measure of writable layers reads at most this many directory entries per second (0 turns it off)
    #[arg(long = "container.fs-usage-files-per-second", value_name = "N", default_value_t = 20_000)]
    fs_usage_files_per_second: u64,
    #[command(flatten)]
    filters: FilterArgs,
}

impl ContainerArgs {
    pub fn resolve(&self) -> Result<ContainerConfig, InvalidValue> {
        Ok(ContainerConfig {
            raw_cgroup_prefixes: self
                .raw_cgroup_prefix
                .iter()
                .filter(|v| !v.is_empty())
                .cloned()
                .collect(),
            cache_validity: settings::duration("container.cache-validity", &self.cache_validity)?,
            inventory_validity: settings::duration("container.inventory-validity", &self.inventory_validity)?,
            filters: self.filters.resolve()?,
            fs_usage_window: settings::duration("container.fs-usage-window", &self.fs_usage_window)?,
            fs_usage_files_per_second: self.fs_usage_files_per_second,
        })
    }
}
