//! Settings of the Docker source and the engine address they name.

use clap::ArgAction;
use clap::builder::BoolishValueParser;
use regex::Regex;

use crate::settings::{self, InvalidValue};

/// The engine sonde asks when `--docker.host` and `DOCKER_HOST` are both unset.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Settings of the Docker metadata source.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Off with `--no-docker`: no engine is asked and no `docker` collector runs.
    pub enabled: bool,
    /// `unix:///path` or `tcp://host:port` / `http://host:port`.
    pub host: String,
    /// Container labels whose keys match become `container_label_<key>` labels.
    pub label_allowlist: Option<Regex>,
    /// Environment variables whose names match become `container_env_<name>` labels.
    pub env_allowlist: Option<Regex>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            host: default_host(),
            label_allowlist: None,
            env_allowlist: None,
        }
    }
}

/// `--docker`, `--no-docker` and the `--docker.*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DockerArgs {
    /// Ask the Docker engine for container names, images and labels
    #[arg(long = "docker", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set, value_parser = BoolishValueParser::new(), overrides_with = "no_docker")]
    docker: bool,
    /// Do not ask the Docker engine
    #[arg(long = "no-docker", overrides_with = "docker")]
    no_docker: bool,
    /// Docker engine address (unix:///path, tcp://host:port); default: DOCKER_HOST or unix:///var/run/docker.sock
    #[arg(long = "docker.host", value_name = "URL", default_value_t = default_host())]
    host: String,
    /// Container labels whose keys match become container_label_<key> labels (default: none)
    #[arg(long = "docker.label-allowlist", value_name = "REGEX")]
    label_allowlist: Option<String>,
    /// Container environment variables whose names match become container_env_<name> labels (default: none)
    #[arg(long = "docker.env-allowlist", value_name = "REGEX")]
    env_allowlist: Option<String>,
}

impl DockerArgs {
    pub fn resolve(&self) -> Result<DockerConfig, InvalidValue> {
        let enabled = !self.no_docker && self.docker;
        // An address sonde cannot use matters only when it would use it.
        if enabled {
            validate_host(&self.host).map_err(|reason| InvalidValue::new("docker.host", &self.host, reason))?;
        }
        Ok(DockerConfig {
            enabled,
            host: self.host.clone(),
            label_allowlist: settings::regex("docker.label-allowlist", self.label_allowlist.as_deref())?,
            env_allowlist: settings::regex("docker.env-allowlist", self.env_allowlist.as_deref())?,
        })
    }
}

/// `DOCKER_HOST` when set (as the docker CLI reads it), else the standard socket.
pub fn default_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_owned())
}

/// Checks the scheme now, so a typo stops sonde at start rather than failing every scrape.
pub fn validate_host(host: &str) -> Result<(), String> {
    let supported = ["unix://", "tcp://", "http://"];
    match supported.iter().find(|s| host.starts_with(*s)) {
        Some(scheme) if host.len() > scheme.len() => Ok(()),
        Some(_) => Err("the address after the scheme is empty".into()),
        None => Err("expected unix:///path/to/docker.sock, tcp://host:port or http://host:port".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked() {
        for good in [
            "unix:///var/run/docker.sock",
            "tcp://127.0.0.1:2375",
            "http://[::1]:2375",
        ] {
            assert_eq!(validate_host(good), Ok(()), "{good}");
        }
        for bad in ["/var/run/docker.sock", "unix://", "ssh://host", "https://host:2376"] {
            assert!(validate_host(bad).is_err(), "{bad}");
        }
    }
}
