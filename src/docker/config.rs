//! Settings of the Docker source and the engine address they name.

use regex::Regex;

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
