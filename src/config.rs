//! Command-line flags, `SONDE_*` environment variables and the optional YAML config file,
//! resolved into one [`Config`].
//!
//! Precedence, highest first: a flag on the command line, its environment variable, its key
//! in `--config.file`, the built-in default. Config-file keys are the flag names without the
//! leading dashes (`web.listen-address: 127.0.0.1:9977`, `collector.host: false`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::collector;
use crate::collector::connection::ConnectionConfig;
use crate::collector::connection::series::{RemoteMode, parse_port_range};
use crate::container::filter::Filters;
use crate::docker::config::{DockerConfig, default_host, validate_host};
use crate::gateway::GatewayConfig;
use crate::kubelet::config::KubeletConfig;

/// Where the exporter reads the host's pseudo-filesystems, so it can run in a container
/// that mounts the host's at another place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            procfs: "/proc".into(),
            sysfs: "/sys".into(),
            rootfs: "/".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Logfmt,
    Json,
}

/// Everything the exporter needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` as given (`:9977` means every address); resolved when binding.
    pub listen_address: String,
    pub telemetry_path: String,
    /// Concurrent `/metrics` requests served; 0 means no limit.
    pub max_requests: usize,
    /// Hard limit on any one HTTP request, a safety net behind the scrape deadline.
    pub request_timeout: Duration,
    /// Scrape deadline when the scraper sends no `X-Prometheus-Scrape-Timeout-Seconds`.
    pub scrape_timeout: Duration,
    /// Taken off the scraper's own timeout so the answer arrives before it gives up.
    pub scrape_timeout_offset: Duration,
    pub log_level: tracing::Level,
    pub log_format: LogFormat,
    pub paths: Paths,
    /// Collector name → enabled, for every built-in collector.
    pub collectors: BTreeMap<String, bool>,
    pub container: ContainerConfig,
    /// Settings of the `connection` collector.
    pub connection: ConnectionConfig,
    /// Settings of the Docker metadata source.
    pub docker: DockerConfig,
    /// The Kubelet source (pod identity, pod network stats).
    pub kubelet: KubeletConfig,
    /// Gateway enrichment of connections (`--gateway.*`, `--no-gateway`).
    pub gateway: GatewayConfig,
}

/// Settings of the `container` collector.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// Stats are read at most once per window; scrapes inside it share one read.
    pub cache_validity: Duration,
    /// The list of containers, their limits and names are rebuilt at most once per window.
    pub inventory_validity: Duration,
    /// cgroups at or below these paths are reported even without a runtime layout.
    pub raw_cgroup_prefixes: Vec<String>,
    pub filters: Filters,
}

impl Config {
    /// The configuration with every flag at its default (no environment, no config file).
    pub fn defaults() -> Self {
        let cmd = command().mut_args(|arg| arg.env(None));
        let matches = cmd.get_matches_from(["sonde"]);
        resolve(&matches).unwrap_or_else(|e| unreachable!("built-in defaults are valid: {e}"))
    }

    pub fn collector_enabled(&self, name: &str) -> bool {
        self.collectors.get(name).copied().unwrap_or(false)
    }
}

/// Why the configuration could not be resolved. `Help` and `Version` are not failures:
/// their text is meant for standard output.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Help(String),
    #[error("{0}")]
    Version(String),
    #[error("{0}")]
    Usage(String),
    #[error("reading config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {reason}")]
    FileContent { path: PathBuf, reason: String },
    #[error("invalid value {value:?} for --{flag}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// The environment variable that sets a flag: `web.listen-address` → `SONDE_WEB_LISTEN_ADDRESS`.
pub fn env_name(flag: &str) -> String {
    let mut name = String::from("SONDE_");
    name.extend(flag.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name
}

fn flag(name: &'static str, value_name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .value_name(value_name)
        .env(env_name(name))
        .help(help)
        .action(ArgAction::Set)
}

/// The command line: every flag, its environment variable and its default.
pub fn command() -> Command {
    let mut cmd = Command::new("sonde")
        .version(crate::build_info::VERSION)
        .long_version(crate::build_info::long_version())
        .about("Prometheus/OpenMetrics exporter for container and connection metrics")
        .arg(flag(
            "config.file",
            "FILE",
            "YAML file whose keys are flag names without dashes",
        ))
        .arg(flag("web.listen-address", "ADDRESS", "Address to listen on ([host]:port)").default_value(":9977"))
        .arg(flag("web.telemetry-path", "PATH", "Path under which to expose metrics").default_value("/metrics"))
        .arg(
            flag(
                "web.max-requests",
                "N",
                "Concurrent scrapes served; more get 503 at once (0: no limit)",
            )
            .default_value("40")
            .value_parser(clap::value_parser!(usize)),
        )
        .arg(flag("web.request-timeout", "DURATION", "Hard limit on any one HTTP request").default_value("60s"))
        .arg(
            flag(
                "scrape.timeout",
                "DURATION",
                "Scrape deadline when the scraper sends no X-Prometheus-Scrape-Timeout-Seconds",
            )
            .default_value("10s"),
        )
        .arg(
            flag(
                "scrape.timeout-offset",
                "DURATION",
                "Taken off the scraper's X-Prometheus-Scrape-Timeout-Seconds",
            )
            .default_value("500ms"),
        )
        .arg(
            flag("log.level", "LEVEL", "Only log messages with this severity or above")
                .default_value("info")
                .value_parser(PossibleValuesParser::new(["error", "warn", "info", "debug"])),
        )
        .arg(
            flag("log.format", "FORMAT", "Log line format")
                .default_value("logfmt")
                .value_parser(PossibleValuesParser::new(["logfmt", "json"])),
        )
        .arg(flag("path.procfs", "DIR", "procfs mountpoint").default_value("/proc"))
        .arg(flag("path.sysfs", "DIR", "sysfs mountpoint").default_value("/sys"))
        .arg(flag("path.rootfs", "DIR", "Root of the host filesystem").default_value("/"))
        .arg(
            flag(
                "container.cache-validity",
                "DURATION",
                "Container stats are read at most once per this window; scrapes inside it share one read",
            )
            .default_value("2s"),
        )
        .arg(
            flag(
                "container.inventory-validity",
                "DURATION",
                "The container list, limits and names are rebuilt at most once per this window",
            )
            .default_value("10s"),
        )
        .arg(
            flag(
                "container.raw-cgroup-prefix",
                "PATH",
                "Report cgroups at or below this path too (repeatable; comma-separated in the environment)",
            )
            .action(ArgAction::Append)
            .value_delimiter(','),
        );
    for (flag_name, help) in [
        (
            "container.include-name",
            "Report only containers whose name matches this regex",
        ),
        (
            "container.exclude-name",
            "Do not report containers whose name matches this regex",
        ),
        (
            "container.include-image",
            "Report only containers whose image matches this regex",
        ),
        (
            "container.exclude-image",
            "Do not report containers whose image matches this regex",
        ),
        (
            "container.include-namespace",
            "Report only containers whose namespace matches this regex",
        ),
        (
            "container.exclude-namespace",
            "Do not report containers whose namespace matches this regex",
        ),
    ] {
        cmd = cmd.arg(flag(flag_name, "REGEX", help));
    }
    cmd = cmd
        .arg(
            flag(
                "connection.max-live",
                "N",
                "Size of the eBPF live-connection table (connections tracked at once)",
            )
            .default_value("65536")
            .value_parser(clap::value_parser!(u32).range(1..)),
        )
        .arg(
            flag(
                "connection.udp-idle",
                "DURATION",
                "A UDP socket idle this long leaves the live table as if closed (UDP has no close event)",
            )
            .default_value("2m"),
        )
        .arg(
            flag(
                "connection.ephemeral-port-range",
                "LOW-HIGH",
                "Client-side ports, which never become a port label",
            )
            .default_value("32768-60999"),
        )
        .arg(
            flag(
                "connection.remote-address",
                "MODE",
                "The remote label: ip, prefix:<N> (the address's /N network) or none",
            )
            .default_value("ip"),
        )
        .arg(
            flag(
                "connection.max-series",
                "N",
                "Connection series beyond this fold into one remote=\"overflow\" series",
            )
            .default_value("10000")
            .value_parser(clap::value_parser!(usize)),
        );
    cmd = cmd
        .arg(
            Arg::new("docker")
                .long("docker")
                .env(env_name("docker"))
                .help("Ask the Docker engine for container names, images and labels")
                .value_name("BOOL")
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .default_value("true")
                .value_parser(clap::builder::BoolishValueParser::new())
                .overrides_with("no-docker"),
        )
        .arg(
            Arg::new("no-docker")
                .long("no-docker")
                .help("Do not ask the Docker engine")
                .action(ArgAction::SetTrue)
                .overrides_with("docker"),
        )
        .arg(
            flag(
                "docker.host",
                "URL",
                "Docker engine address (unix:///path, tcp://host:port); default: DOCKER_HOST or unix:///var/run/docker.sock",
            )
            .default_value(default_host()),
        )
        .arg(flag(
            "docker.label-allowlist",
            "REGEX",
            "Container labels whose keys match become container_label_<key> labels (default: none)",
        ))
        .arg(flag(
            "docker.env-allowlist",
            "REGEX",
            "Container environment variables whose names match become container_env_<name> labels (default: none)",
        ));
    cmd = kubelet_flags(cmd);
    cmd = cmd
        .arg(
            flag(
                "gateway.route-cache-ttl",
                "DURATION",
                "How long a connection's route (gateway, interface, subnet) is cached",
            )
            .default_value("2m"),
        )
        .arg(
            flag(
                "gateway.route-cache-size",
                "N",
                "Routes cached at most, keyed by (source, destination, network namespace)",
            )
            .default_value("65536")
            .value_parser(clap::value_parser!(u64).range(1..)),
        )
        .arg(
            Arg::new("no-gateway")
                .long("no-gateway")
                .env(env_name("no-gateway"))
                .help("Do not label connections with their gateway, interface and subnet")
                .action(ArgAction::SetTrue),
        );
    for spec in collector::builtin() {
        let on = format!("collector.{}", spec.name);
        let off = format!("no-collector.{}", spec.name);
        cmd = cmd
            .arg(
                Arg::new(on.clone())
                    .long(on.clone())
                    .env(env_name(&on))
                    .help(format!("Enable the {} collector: {}", spec.name, spec.help))
                    .value_name("BOOL")
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .default_value(if spec.enabled_by_default { "true" } else { "false" })
                    .value_parser(clap::builder::BoolishValueParser::new())
                    .overrides_with(off.clone()),
            )
            .arg(
                Arg::new(off.clone())
                    .long(off)
                    .help(format!("Disable the {} collector", spec.name))
                    .action(ArgAction::SetTrue)
                    .overrides_with(on),
            );
    }
    cmd
}

/// Resolves the configuration from process arguments (the first one is the program name).
pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = command();
    let first = parse(cmd.clone(), &args)?;
    if let Some(path) = first.get_one::<String>("config.file") {
        for (key, values) in read_config_file(Path::new(path), &cmd)? {
            cmd = cmd.mut_arg(key, |arg| arg.default_values(values));
        }
    }
    let matches = parse(cmd, &args)?;
    resolve(&matches)
}

fn parse(cmd: Command, args: &[OsString]) -> Result<ArgMatches, ConfigError> {
    cmd.try_get_matches_from(args).map_err(|err| {
        use clap::error::ErrorKind;
        match err.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                ConfigError::Help(err.render().to_string())
            }
            ErrorKind::DisplayVersion => ConfigError::Version(err.render().to_string()),
            // clap's message is several lines (tip, usage); keep the one that names the problem.
            _ => {
                let text = err.render().to_string();
                let first = text.lines().next().unwrap_or("invalid arguments");
                ConfigError::Usage(format!("{} (see --help)", first.trim_start_matches("error: ")))
            }
        }
    })
}

/// Reads the YAML config file into (flag name, values) pairs, rejecting keys that are not
/// flags. A list gives a repeatable flag several values.
fn read_config_file(path: &Path, cmd: &Command) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| ConfigError::FileContent {
        path: path.to_owned(),
        reason,
    };
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = match doc {
        serde_yaml_ng::Value::Null => return Ok(Vec::new()),
        serde_yaml_ng::Value::Mapping(map) => map,
        _ => return Err(bad("expected a mapping of flag names to values".into())),
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (key, value) in map {
        let key = match key {
            serde_yaml_ng::Value::String(key) => key,
            other => return Err(bad(format!("key {other:?} is not a string"))),
        };
        if key == "config.file" || !cmd.get_arguments().any(|arg| arg.get_id() == key.as_str()) {
            return Err(bad(format!("unknown key {key:?}")));
        }
        let scalar = |value: serde_yaml_ng::Value| match value {
            serde_yaml_ng::Value::String(s) => Ok(s),
            serde_yaml_ng::Value::Bool(b) => Ok(b.to_string()),
            serde_yaml_ng::Value::Number(n) => Ok(n.to_string()),
            other => Err(bad(format!(
                "value of {key:?} must be a scalar or a list of scalars, not {other:?}"
            ))),
        };
        let values = match value {
            serde_yaml_ng::Value::Sequence(items) => items.into_iter().map(scalar).collect::<Result<_, _>>()?,
            value => vec![scalar(value)?],
        };
        pairs.push((key, values));
    }
    Ok(pairs)
}

fn resolve(m: &ArgMatches) -> Result<Config, ConfigError> {
    let text = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
    let listen_address = text("web.listen-address");
    validate_listen_address(&listen_address)?;
    let telemetry_path = text("web.telemetry-path");
    if !telemetry_path.starts_with('/') || telemetry_path.len() < 2 {
        return Err(ConfigError::Invalid {
            flag: "web.telemetry-path",
            value: telemetry_path,
            reason: "must start with '/' and name a path other than '/'".into(),
        });
    }
    let collectors = collector::builtin()
        .iter()
        .map(|spec| {
            let disabled = m.get_flag(&format!("no-collector.{}", spec.name));
            let enabled = m.get_one::<bool>(&format!("collector.{}", spec.name)).copied();
            (
                spec.name.to_owned(),
                !disabled && enabled.unwrap_or(spec.enabled_by_default),
            )
        })
        .collect();
    Ok(Config {
        listen_address,
        telemetry_path,
        max_requests: m.get_one::<usize>("web.max-requests").copied().unwrap_or_default(),
        request_timeout: duration(m, "web.request-timeout")?,
        scrape_timeout: duration(m, "scrape.timeout")?,
        scrape_timeout_offset: duration(m, "scrape.timeout-offset")?,
        log_level: match text("log.level").as_str() {
            "error" => tracing::Level::ERROR,
            "warn" => tracing::Level::WARN,
            "debug" => tracing::Level::DEBUG,
            _ => tracing::Level::INFO,
        },
        log_format: match text("log.format").as_str() {
            "json" => LogFormat::Json,
            _ => LogFormat::Logfmt,
        },
        paths: Paths {
            procfs: text("path.procfs").into(),
            sysfs: text("path.sysfs").into(),
            rootfs: text("path.rootfs").into(),
        },
        collectors,
        container: ContainerConfig {
            cache_validity: duration(m, "container.cache-validity")?,
            inventory_validity: duration(m, "container.inventory-validity")?,
            raw_cgroup_prefixes: m
                .get_many::<String>("container.raw-cgroup-prefix")
                .map(|values| values.filter(|v| !v.is_empty()).cloned().collect())
                .unwrap_or_default(),
            filters: Filters {
                include_name: regex(m, "container.include-name")?,
                exclude_name: regex(m, "container.exclude-name")?,
                include_image: regex(m, "container.include-image")?,
                exclude_image: regex(m, "container.exclude-image")?,
                include_namespace: regex(m, "container.include-namespace")?,
                exclude_namespace: regex(m, "container.exclude-namespace")?,
            },
        },
        connection: ConnectionConfig {
            max_live: m.get_one::<u32>("connection.max-live").copied().unwrap_or(65_536),
            udp_idle: duration(m, "connection.udp-idle")?,
            ephemeral_ports: parse_port_range(&text("connection.ephemeral-port-range")).map_err(|reason| {
                ConfigError::Invalid {
                    flag: "connection.ephemeral-port-range",
                    value: text("connection.ephemeral-port-range"),
                    reason,
                }
            })?,
            remote: text("connection.remote-address")
                .parse::<RemoteMode>()
                .map_err(|reason| ConfigError::Invalid {
                    flag: "connection.remote-address",
                    value: text("connection.remote-address"),
                    reason,
                })?,
            max_series: m.get_one::<usize>("connection.max-series").copied().unwrap_or(10_000),
        },
        docker: docker_config(m)?,
        kubelet: resolve_kubelet(m)?,
        gateway: GatewayConfig {
            enabled: !m.get_flag("no-gateway"),
            route_cache_ttl: duration(m, "gateway.route-cache-ttl")?,
            route_cache_size: m.get_one::<u64>("gateway.route-cache-size").copied().unwrap_or(65_536),
        },
    })
}

fn docker_config(m: &ArgMatches) -> Result<DockerConfig, ConfigError> {
    let host = m.get_one::<String>("docker.host").cloned().unwrap_or_else(default_host);
    let enabled = !m.get_flag("no-docker") && m.get_one::<bool>("docker").copied().unwrap_or(true);
    // An address sonde cannot use matters only when it would use it.
    if enabled {
        validate_host(&host).map_err(|reason| ConfigError::Invalid {
            flag: "docker.host",
            value: host.clone(),
            reason,
        })?;
    }
    Ok(DockerConfig {
        enabled,
        host,
        label_allowlist: regex(m, "docker.label-allowlist")?,
        env_allowlist: regex(m, "docker.env-allowlist")?,
    })
}

/// The Kubelet source's flags.
fn kubelet_flags(cmd: Command) -> Command {
    use crate::kubelet::config::{SERVICE_ACCOUNT_CA, SERVICE_ACCOUNT_TOKEN};
    cmd.arg(flag(
        "kubelet.url",
        "URL",
        "The Kubelet's base URL (default in a pod: https://$NODE_IP:10250 with NODE_IP from the downward API; otherwise, or empty: the Kubelet source is off)",
    ))
    .arg(
        flag(
            "kubelet.token-file",
            "FILE",
            "Bearer token for the Kubelet, re-read for every request (it is rotated)",
        )
        .default_value(SERVICE_ACCOUNT_TOKEN),
    )
    .arg(
        flag(
            "kubelet.ca-file",
            "FILE",
            "CA certificates (PEM) that signed the Kubelet's serving certificate",
        )
        .default_value(SERVICE_ACCOUNT_CA),
    )
    .arg(
        Arg::new("kubelet.insecure-skip-verify")
            .long("kubelet.insecure-skip-verify")
            .env(env_name("kubelet.insecure-skip-verify"))
            .help("Do not check the Kubelet's certificate (only when asked: anyone on the path can read the token)")
            .value_name("BOOL")
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .default_value("false")
            .value_parser(clap::builder::BoolishValueParser::new()),
    )
    .arg(flag("kubelet.timeout", "DURATION", "Limit on one request to the Kubelet").default_value("10s"))
    .arg(
        flag(
            "kubelet.cache-validity",
            "DURATION",
            "/pods and /stats/summary are fetched at most once per this window; scrapes inside it share one fetch",
        )
        .default_value("10s"),
    )
    .arg(
        flag(
            "kubelet.max-staleness",
            "DURATION",
            "The last good pod list stays in use this long while the Kubelet fails",
        )
        .default_value("5m"),
    )
    .arg(
        flag(
            "kubelet.max-body-size",
            "SIZE",
            "Kubelet answers larger than this are refused (B, KiB, MiB, GiB)",
        )
        .default_value("16MiB"),
    )
}

fn resolve_kubelet(m: &ArgMatches) -> Result<KubeletConfig, ConfigError> {
    use crate::kubelet::config::{default_url, parse_size, parse_url};
    let text = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
    let url = match m.get_one::<String>("kubelet.url") {
        Some(value) => parse_url(value).map_err(|reason| ConfigError::Invalid {
            flag: "kubelet.url",
            value: value.clone(),
            reason,
        })?,
        None => default_url(
            std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
            std::env::var("NODE_IP").ok().as_deref(),
        ),
    };
    let insecure_skip_verify = m
        .get_one::<bool>("kubelet.insecure-skip-verify")
        .copied()
        .unwrap_or(false);
    let ca_file = Some(text("kubelet.ca-file")).filter(|f| !f.is_empty()).map(Into::into);
    Ok(KubeletConfig {
        url,
        token_file: text("kubelet.token-file").into(),
        ca_file,
        insecure_skip_verify,
        timeout: duration(m, "kubelet.timeout")?,
        cache_validity: duration(m, "kubelet.cache-validity")?,
        max_staleness: duration(m, "kubelet.max-staleness")?,
        max_body_bytes: parse_size(&text("kubelet.max-body-size")).map_err(|reason| ConfigError::Invalid {
            flag: "kubelet.max-body-size",
            value: text("kubelet.max-body-size"),
            reason,
        })?,
    })
}

fn regex(m: &ArgMatches, flag: &'static str) -> Result<Option<regex::Regex>, ConfigError> {
    m.get_one::<String>(flag)
        .map(|pattern| {
            regex::Regex::new(pattern).map_err(|e| ConfigError::Invalid {
                flag,
                value: pattern.clone(),
                reason: e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("invalid regex")
                    .trim()
                    .to_owned(),
            })
        })
        .transpose()
}

/// A Prometheus-style duration (`10s`, `500ms`, `2m`); a bare number is seconds.
fn duration(m: &ArgMatches, flag: &'static str) -> Result<Duration, ConfigError> {
    let value = m.get_one::<String>(flag).cloned().unwrap_or_default();
    let parsed = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
        Ok(_) => Err("must be a non-negative duration".to_owned()),
        Err(_) => humantime::parse_duration(&value).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(d) if d.is_zero() => Err(ConfigError::Invalid {
            flag,
            value,
            reason: "must be greater than zero".into(),
        }),
        Ok(d) => Ok(d),
        Err(reason) => Err(ConfigError::Invalid { flag, value, reason }),
    }
}

/// Checks the shape of `[host]:port` now, so a typo fails at start with a clear message.
fn validate_listen_address(address: &str) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        flag: "web.listen-address",
        value: address.to_owned(),
        reason: reason.to_owned(),
    };
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected [host]:port, e.g. :9977 or 127.0.0.1:9977"))?;
    port.parse::<u16>()
        .map_err(|_| invalid("the port must be a number from 0 to 65535"))?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if !bracketed && host.contains(':') {
        return Err(invalid("IPv6 hosts must be in brackets, e.g. [::1]:9977"));
    }
    if host.chars().any(char::is_whitespace) {
        return Err(invalid("the host contains white space"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Vec<String> {
        std::iter::once("sonde")
            .chain(extra.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn defaults_follow_the_exporter_convention() {
        let c = Config::defaults();
        assert_eq!(c.listen_address, ":9977");
        assert_eq!(c.telemetry_path, "/metrics");
        assert_eq!(c.max_requests, 40);
        assert_eq!(c.scrape_timeout, Duration::from_secs(10));
        assert_eq!(c.scrape_timeout_offset, Duration::from_millis(500));
        assert_eq!(c.paths, Paths::default());
        assert!(c.collector_enabled("host"));
    }

    #[test]
    fn collector_flags_switch_and_the_last_one_wins() {
        let off = from_args(args(&["--no-collector.host"])).expect("parses");
        assert!(!off.collector_enabled("host"));
        let off = from_args(args(&["--collector.host=false"])).expect("parses");
        assert!(!off.collector_enabled("host"));
        let on = from_args(args(&["--no-collector.host", "--collector.host"])).expect("parses");
        assert!(on.collector_enabled("host"));
        let off = from_args(args(&["--collector.host", "--no-collector.host"])).expect("parses");
        assert!(!off.collector_enabled("host"));
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        let c = from_args(args(&["--scrape.timeout=2m", "--scrape.timeout-offset=0.25"])).expect("parses");
        assert_eq!(c.scrape_timeout, Duration::from_secs(120));
        assert_eq!(c.scrape_timeout_offset, Duration::from_millis(250));
        let err = from_args(args(&["--scrape.timeout=soon"])).expect_err("rejects");
        assert!(err.to_string().contains("--scrape.timeout"), "{err}");
        let err = from_args(args(&["--scrape.timeout=0s"])).expect_err("rejects zero");
        assert!(err.to_string().contains("greater than zero"), "{err}");
    }

    #[test]
    fn listen_addresses_are_checked() {
        for good in [":9977", "127.0.0.1:0", "[::1]:9977", "localhost:80"] {
            from_args(args(&["--web.listen-address", good])).expect(good);
        }
        for bad in ["9977", "127.0.0.1", "::1:9977", "127.0.0.1:99999", "host:port"] {
            let err = from_args(args(&["--web.listen-address", bad])).expect_err(bad);
            assert!(err.to_string().contains("--web.listen-address"), "{bad}: {err}");
        }
    }

    #[test]
    fn usage_errors_are_one_line() {
        for bad in [
            &["--no-such-flag"][..],
            &["--log.level=verbose"],
            &["--web.max-requests=-1"],
        ] {
            let err = from_args(args(bad)).expect_err("rejects");
            assert!(matches!(err, ConfigError::Usage(_)), "{err:?}");
            assert_eq!(err.to_string().lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn config_file_sits_between_environment_and_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sonde.yml");
        std::fs::write(
            &file,
            "web.listen-address: 127.0.0.1:1234\nweb.max-requests: 7\ncollector.host: false\nlog.level: debug\n",
        )
        .expect("write");
        let f = file.to_str().expect("utf-8 path");
        let c = from_args(args(&["--config.file", f])).expect("parses");
        assert_eq!(c.listen_address, "127.0.0.1:1234");
        assert_eq!(c.max_requests, 7);
        assert!(!c.collector_enabled("host"));
        assert_eq!(c.log_level, tracing::Level::DEBUG);
        // A flag beats the file.
        let c = from_args(args(&["--config.file", f, "--web.max-requests=9", "--collector.host"])).expect("parses");
        assert_eq!(c.max_requests, 9);
        assert!(c.collector_enabled("host"));
    }

    #[test]
    fn config_file_errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.yml");
        let err = from_args(args(&["--config.file", missing.to_str().expect("utf-8")])).expect_err("missing");
        assert!(err.to_string().starts_with("reading config file"), "{err}");
        for (body, expect) in [
            ("no.such.flag: 1\n", "unknown key"),
            ("- a\n- b\n", "expected a mapping"),
            ("web.listen-address: {a: 1}\n", "must be a scalar"),
            ("log.level: loud\n", "invalid value"),
        ] {
            let file = dir.path().join("bad.yml");
            std::fs::write(&file, body).expect("write");
            let err = from_args(args(&["--config.file", file.to_str().expect("utf-8")])).expect_err(body);
            assert!(err.to_string().contains(expect), "{body:?}: {err}");
        }
    }

    #[test]
    fn container_settings() {
        let c = Config::defaults();
        assert_eq!(c.container.cache_validity, Duration::from_secs(2));
        assert_eq!(c.container.inventory_validity, Duration::from_secs(10));
        assert!(c.container.raw_cgroup_prefixes.is_empty());
        let c = from_args(args(&[
            "--container.raw-cgroup-prefix=/a,/b",
            "--container.raw-cgroup-prefix",
            "/c",
            "--container.exclude-image=pause",
        ]))
        .expect("parses");
        assert_eq!(c.container.raw_cgroup_prefixes, ["/a", "/b", "/c"]);
        assert!(
            c.container
                .filters
                .exclude_image
                .is_some_and(|re| re.is_match("k8s/pause:3"))
        );
        let err = from_args(args(&["--container.include-name=("])).expect_err("bad regex");
        assert!(
            err.to_string()
                .starts_with("invalid value \"(\" for --container.include-name"),
            "{err}"
        );
        assert_eq!(err.to_string().lines().count(), 1, "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sonde.yml");
        std::fs::write(&file, "container.raw-cgroup-prefix: [/x, /y]\n").expect("write");
        let c = from_args(args(&["--config.file", file.to_str().expect("utf-8")])).expect("parses");
        assert_eq!(c.container.raw_cgroup_prefixes, ["/x", "/y"]);
    }

    #[test]
    fn connection_flags() {
        assert_eq!(Config::defaults().connection, ConnectionConfig::default());
        let c = from_args(args(&[
            "--connection.remote-address=prefix:24",
            "--connection.ephemeral-port-range=49152-65535",
            "--connection.max-series=5",
            "--connection.max-live=1024",
            "--connection.udp-idle=30s",
        ]))
        .expect("parses");
        assert_eq!(c.connection.udp_idle, Duration::from_secs(30));
        assert_eq!(c.connection.remote, RemoteMode::Prefix(24));
        assert_eq!(c.connection.ephemeral_ports, 49152..=65535);
        assert_eq!((c.connection.max_series, c.connection.max_live), (5, 1024));
        for bad in [
            "--connection.remote-address=cidr",
            "--connection.ephemeral-port-range=9-1",
        ] {
            let err = from_args(args(&[bad])).expect_err(bad);
            assert!(err.to_string().contains("--connection."), "{err}");
        }
    }

    #[test]
    fn docker_flags() {
        let c = Config::defaults();
        assert!(c.docker.enabled);
        assert!(c.docker.label_allowlist.is_none() && c.docker.env_allowlist.is_none());
        let c = from_args(args(&[
            "--no-docker",
            "--docker.host=unix:///run/other.sock",
            "--docker.label-allowlist=^com\\.example\\.",
            "--docker.env-allowlist=^APP_",
        ]))
        .expect("parses");
        assert!(!c.docker.enabled);
        assert_eq!(c.docker.host, "unix:///run/other.sock");
        assert!(
            c.docker
                .label_allowlist
                .is_some_and(|re| re.is_match("com.example.team"))
        );
        assert!(c.docker.env_allowlist.is_some_and(|re| re.is_match("APP_MODE")));
        assert!(
            from_args(args(&["--no-docker", "--docker"]))
                .expect("parses")
                .docker
                .enabled
        );
        for bad in ["--docker.host=/var/run/docker.sock", "--docker.label-allowlist=("] {
            let err = from_args(args(&[bad])).expect_err(bad);
            assert!(err.to_string().contains("--docker."), "{err}");
        }
        let off = from_args(args(&["--no-docker", "--docker.host=ssh://host"])).expect("unused when off");
        assert!(!off.docker.enabled);
    }

    #[test]
    fn kubelet_flags() {
        let c = from_args(args(&["--kubelet.url="])).expect("parses");
        assert_eq!(c.kubelet.url, None, "empty: off");
        let d = crate::kubelet::config::KubeletConfig::default();
        assert_eq!(
            (c.kubelet.timeout, c.kubelet.cache_validity, c.kubelet.max_staleness),
            (d.timeout, d.cache_validity, d.max_staleness)
        );
        assert_eq!(
            (&c.kubelet.token_file, &c.kubelet.ca_file, c.kubelet.max_body_bytes),
            (&d.token_file, &d.ca_file, d.max_body_bytes)
        );
        let c = from_args(args(&[
            "--kubelet.url=https://127.0.0.1:10250/",
            "--kubelet.insecure-skip-verify",
            "--kubelet.timeout=2s",
            "--kubelet.max-body-size=1MiB",
            "--kubelet.token-file=/t",
        ]))
        .expect("parses");
        assert_eq!(c.kubelet.url.as_deref(), Some("https://127.0.0.1:10250"));
        assert!(c.kubelet.insecure_skip_verify);
        assert_eq!(c.kubelet.timeout, Duration::from_secs(2));
        assert_eq!(c.kubelet.max_body_bytes, 1 << 20);
        assert_eq!(c.kubelet.token_file, PathBuf::from("/t"));
        for bad in [
            "--kubelet.url=10.0.0.1:10250",
            "--kubelet.max-body-size=lots",
            "--kubelet.timeout=0",
        ] {
            let err = from_args(args(&[bad])).expect_err(bad);
            assert!(err.to_string().contains("--kubelet."), "{err}");
        }
    }

    #[test]
    fn gateway_flags() {
        assert_eq!(Config::defaults().gateway, GatewayConfig::default());
        assert_eq!(Config::defaults().gateway.route_cache_ttl, Duration::from_secs(120));
        let c = from_args(args(&[
            "--gateway.route-cache-ttl=5s",
            "--gateway.route-cache-size=10",
            "--no-gateway",
        ]))
        .expect("parses");
        assert_eq!(
            c.gateway,
            GatewayConfig {
                enabled: false,
                route_cache_ttl: Duration::from_secs(5),
                route_cache_size: 10,
            }
        );
        for bad in ["--gateway.route-cache-ttl=0s", "--gateway.route-cache-size=0"] {
            assert!(from_args(args(&[bad])).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sonde.yml");
        std::fs::write(&file, "no-gateway: true\ngateway.route-cache-ttl: 30s\n").expect("write");
        let c = from_args(args(&["--config.file", file.to_str().expect("utf-8")])).expect("parses");
        assert!(!c.gateway.enabled);
        assert_eq!(c.gateway.route_cache_ttl, Duration::from_secs(30));
    }

    #[test]
    fn environment_names_follow_the_flags() {
        assert_eq!(env_name("web.listen-address"), "SONDE_WEB_LISTEN_ADDRESS");
        assert_eq!(env_name("collector.host"), "SONDE_COLLECTOR_HOST");
    }
}
