//! The `--gateway.*` and `--no-gateway` flags.

use super::GatewayConfig;
use crate::settings::{self, InvalidValue};

/// The `--gateway.*` and `--no-gateway` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    #[arg(
        id = "gateway.route-cache-ttl",
        long = "gateway.route-cache-ttl",
        value_name = "DURATION",
        default_value = "2m",
        help = "How long a connection's route (gateway, interface, subnet) is cached"
    )]
    route_cache_ttl: String,
    #[arg(
        id = "gateway.route-cache-size",
        long = "gateway.route-cache-size",
        value_name = "N",
        default_value = "65536",
        value_parser = clap::value_parser!(u64).range(1..),
        help = "Routes cached at most, keyed by (source, destination, network namespace)"
    )]
    route_cache_size: u64,
    #[arg(
        id = "no-gateway",
        long = "no-gateway",
        help = "Do not label connections with their gateway, interface and subnet"
    )]
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
