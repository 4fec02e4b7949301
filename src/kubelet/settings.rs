//! The Kubelet source's settings, and where its address comes from when none is given.

use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;
use clap::builder::BoolishValueParser;

use crate::settings::{self, InvalidValue};

/// Where the service account's token and CA are mounted in a pod.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const SERVICE_ACCOUNT_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// The Kubelet's authenticated port.
const KUBELET_PORT: u16 = 10250;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletConfig {
    /// The Kubelet's base URL; `None`: the source is off.
    pub url: Option<String>,
    /// Re-read for every request: the Kubelet's token is rotated.
    pub token_file: PathBuf,
    /// The CA that signed the Kubelet's serving certificate; `None` with `insecure_skip_verify`.
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// Limit on one request, from connecting to the last byte of the answer.
    pub timeout: Duration,
    /// `/pods` is fetched at most once per window.
    pub cache_validity: Duration,
    /// How long the last good pod identity stays in use while the Kubelet fails.
    pub max_staleness: Duration,
    /// Answers larger than this are refused (a broken or hostile endpoint cannot exhaust memory).
    pub max_body_bytes: u64,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        Self {
            url: None,
            token_file: SERVICE_ACCOUNT_TOKEN.into(),
            ca_file: Some(SERVICE_ACCOUNT_CA.into()),
            insecure_skip_verify: false,
            timeout: Duration::from_secs(10),
            cache_validity: Duration::from_secs(10),
            max_staleness: Duration::from_secs(300),
            max_body_bytes: 16 << 20,
        }
    }
}

/// The `--kubelet.*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeletArgs {
    /// The Kubelet's base URL (default in a pod: https://$NODE_IP:10250 with NODE_IP from the downward API; otherwise,
    /// or empty: the Kubelet source is off)
    #[arg(long = "kubelet.url", value_name = "URL")]
    url: Option<String>,
    /// Bearer token for the Kubelet, re-read for every request (it is rotated)
    #[arg(long = "kubelet.token-file", value_name = "FILE", default_value = SERVICE_ACCOUNT_TOKEN)]
    token_file: String,
    /// CA certificates (PEM) that signed the Kubelet's serving certificate
    #[arg(long = "kubelet.ca-file", value_name = "FILE", default_value = SERVICE_ACCOUNT_CA)]
    ca_file: String,
    /// Do not check the Kubelet's certificate (only when asked: anyone on the path can read the token)
    #[arg(long = "kubelet.insecure-skip-verify", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    insecure_skip_verify: bool,
    /// Limit on one request to the Kubelet
    #[arg(long = "kubelet.timeout", value_name = "DURATION", default_value = "10s")]
    kubelet_timeout: String,
    /// /pods is fetched at most once per this window; scrapes inside it share one fetch
    #[arg(long = "kubelet.cache-validity", value_name = "DURATION", default_value = "10s")]
    kubelet_cache_validity: String,
    /// The last good pod list stays in use this long while the Kubelet fails
    #[arg(long = "kubelet.max-staleness", value_name = "DURATION", default_value = "5m")]
    max_staleness: String,
    /// Kubelet answers larger than this are refused (B, KiB, MiB, GiB)
    #[arg(long = "kubelet.max-body-size", value_name = "SIZE", default_value = "16MiB")]
    max_body_size: String,
}

impl KubeletArgs {
    pub fn resolve(&self) -> Result<KubeletConfig, InvalidValue> {
        let url = match &self.url {
            Some(value) => parse_url(value).map_err(|reason| InvalidValue::new("kubelet.url", value, reason))?,
            None => default_url(
                std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
                std::env::var("NODE_IP").ok().as_deref(),
            ),
        };
        Ok(KubeletConfig {
            url,
            token_file: self.token_file.clone().into(),
            ca_file: Some(self.ca_file.clone()).filter(|f| !f.is_empty()).map(Into::into),
            insecure_skip_verify: self.insecure_skip_verify,
            timeout: settings::duration("kubelet.timeout", &self.kubelet_timeout)?,
            cache_validity: settings::duration("kubelet.cache-validity", &self.kubelet_cache_validity)?,
            max_staleness: settings::duration("kubelet.max-staleness", &self.max_staleness)?,
            max_body_bytes: parse_size(&self.max_body_size)
                .map_err(|reason| InvalidValue::new("kubelet.max-body-size", &self.max_body_size, reason))?,
        })
    }
}

/// The URL when `--kubelet.url` is not given: in a pod (`KUBERNETES_SERVICE_HOST` is set)
/// with the node's address from the downward API (`NODE_IP`), the Kubelet on that node;
/// otherwise none, and the source is off.
pub fn default_url(kubernetes_service_host: Option<&str>, node_ip: Option<&str>) -> Option<String> {
    kubernetes_service_host.filter(|h| !h.is_empty())?;
    let ip = node_ip.map(str::trim).filter(|ip| !ip.is_empty())?;
    let host = if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    Some(format!("https://{host}:{KUBELET_PORT}"))
}

/// Checks a `--kubelet.url`: an http(s) URL with a host; the empty string switches the source
/// off. Returns the URL without a trailing slash.
pub fn parse_url(value: &str) -> Result<Option<String>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let url: http::Uri = value.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    if !matches!(url.scheme_str(), Some("https" | "http")) {
        return Err("the scheme must be https (or http)".into());
    }
    if url.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(Some(value.trim_end_matches('/').to_owned()))
}

/// A size in bytes: a bare number, or with a `KiB`, `MiB` or `GiB` suffix.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let (digits, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, ""),
    };
    let number: u64 = digits.parse().map_err(|_| "expected a number of bytes, e.g. 16MiB")?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use B, KiB, MiB or GiB")),
    };
    match number.checked_mul(scale) {
        Some(0) => Err("must be greater than zero".into()),
        Some(bytes) => Ok(bytes),
        None => Err("too large".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_needs_a_pod_and_a_node_ip() {
        assert_eq!(
            default_url(Some("10.96.0.1"), Some("192.0.2.7")).as_deref(),
            Some("https://192.0.2.7:10250")
        );
        assert_eq!(
            default_url(Some("10.96.0.1"), Some("2001:db8::7")).as_deref(),
            Some("https://[2001:db8::7]:10250")
        );
        assert_eq!(default_url(None, Some("192.0.2.7")), None, "not in a pod");
        assert_eq!(default_url(Some("10.96.0.1"), None), None, "no downward API");
        assert_eq!(default_url(Some("10.96.0.1"), Some(" ")), None);
    }

    #[test]
    fn urls_and_sizes_are_checked() {
        assert_eq!(
            parse_url("https://127.0.0.1:10250/").expect("valid").as_deref(),
            Some("https://127.0.0.1:10250")
        );
        assert_eq!(parse_url("").expect("off"), None);
        for bad in ["127.0.0.1:10250", "ftp://host/", "https://"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        for bad in ["", "0", "12MB", "MiB", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
