//! The `--gateway.*` and `--no-gateway` flags.

use super::GatewayConfig;
use crate::settings::{self, InvalidValue};

/// The `--gateway.*` and `--no-gateway` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// How long a connection's route (gateway, interface, subnet) is cached
    #[arg(long = "gateway.route-cache-ttl", value_name = "DURATION", default_value = "2m")]
    route_cache_ttl: String,
    /// Routes cached at most, keyed by (source, destination, network namespace)
    #[arg(long = "gateway.route-cache-size", value_name = "N", default_value = "65536", value_parser = clap::value_parser!(u64).range(1..))]
    route_cache_size: u64,
    /// Do not label connections with their gateway, interface and subnet
    #[arg(long = "no-gateway")]
    no_gateway: bool,
}

impl GatewayArgs {
    pub fn resolve(&self) -> Result<GatewayConfig, InvalidValue> {
        Ok(GatewayConfig {
            enabled: !self.no_gateway,
            route_cache_ttl: settings::duration("gateway.route-cache-ttl", &self.route_cache_ttl)?,
            route_cache_size: self.route_cache_size,
        })
    }
}
