//! The `--conntrack.*` and `--no-conntrack` flags.

use super::ConntrackConfig;
use crate::settings::{self, InvalidValue};

/// The `--conntrack.*` and `--no-conntrack` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ConntrackArgs {
    /// How long a connection's conntrack answer (translated, untranslated or not found) is cached
    #[arg(long = "conntrack.cache-ttl", value_name = "DURATION", default_value = "2m")]
    cache_ttl: String,
    /// Conntrack answers cached at most, keyed by (network namespace, protocol, source, destination)
    #[arg(long = "conntrack.cache-size", value_name = "N", default_value = "65536", value_parser = clap::value_parser!(u64).range(1..))]
    cache_size: u64,
    /// Do not look connections up in conntrack: no NAT translation and no service label
    #[arg(long = "no-conntrack")]
    no_conntrack: bool,
}

impl ConntrackArgs {
    pub fn resolve(&self) -> Result<ConntrackConfig, InvalidValue> {
        Ok(ConntrackConfig {
            enabled: !self.no_conntrack,
            cache_ttl: settings::duration("conntrack.cache-ttl", &self.cache_ttl)?,
            cache_size: self.cache_size,
        })
    }
}
