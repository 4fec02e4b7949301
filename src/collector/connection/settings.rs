//! The `connection` collector's settings and their flags (`--connection.*`).

use std::ops::RangeInclusive;
use std::time::Duration;

use super::series::{RemoteMode, parse_port_range};
use crate::settings::{self, InvalidValue};

/// The collector's settings (`--connection.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    pub max_live: u32,
    pub ephemeral_ports: RangeInclusive<u16>,
    pub remote: RemoteMode,
    pub max_series: usize,
    /// A UDP socket idle this long leaves the live table as if closed (UDP has no close
    /// event); its slot is freed, and a later datagram on it starts a new entry.
    pub udp_idle: Duration,
    /// Whether UDP is counted: its hooks run at every send and receive (from Linux 6.3
    /// tracepoints that TCP calls enter too).
    pub udp: bool,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_live: 65_536,
            ephemeral_ports: 32768..=60999,
            remote: RemoteMode::Ip,
            max_series: 10_000,
            udp_idle: Duration::from_secs(120),
            udp: true,
        }
    }
}

/// The `--connection.*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Size of the eBPF live-connection table (connections tracked at once)
    #[arg(long = "connection.max-live", value_name = "N", default_value = "65536", value_parser = clap::value_parser!(u32).range(1..))]
    max_live: u32,
    /// A UDP socket idle this long leaves the live table as if closed (UDP has no close event)
    #[arg(long = "connection.udp-idle", value_name = "DURATION", default_value = "2m")]
    udp_idle: String,
    /// Count no UDP: no probe runs at any send or receive (TCP is counted from its sockets)
    #[arg(long = "no-connection.udp")]
    no_udp: bool,
    /// Client-side ports, which never become a port label
    #[arg(long = "connection.ephemeral-port-range", value_name = "LOW-HIGH", default_value = "32768-60999")]
    ephemeral_port_range: String,
    /// The remote label: ip, prefix:<N> (the address's /N network) or none
    #[arg(long = "connection.remote-address", value_name = "MODE", default_value = "ip")]
    remote_address: String,
    /// Connection series beyond this fold into one remote="overflow" series
    #[arg(long = "connection.max-series", value_name = "N", default_value = "10000")]
    max_series: usize,
}

impl ConnectionArgs {
    pub fn resolve(&self) -> Result<ConnectionConfig, InvalidValue> {
        Ok(ConnectionConfig {
            max_live: self.max_live,
            udp_idle: settings::duration("connection.udp-idle", &self.udp_idle)?,
            ephemeral_ports: parse_port_range(&self.ephemeral_port_range).map_err(|reason| {
                InvalidValue::new("connection.ephemeral-port-range", &self.ephemeral_port_range, reason)
            })?,
            remote: self
                .remote_address
                .parse::<RemoteMode>()
                .map_err(|reason| InvalidValue::new("connection.remote-address", &self.remote_address, reason))?,
            max_series: self.max_series,
            udp: !self.no_udp,
        })
    }
}
