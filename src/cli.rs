//! The command line: composes each part's flags (a `clap::Args` struct beside its code) into
//! one command, gives every flag its `SONDE_*` environment variable, layers the optional
//! YAML config file under them, and resolves the result into one [`Config`]. Nothing below
//! imports this module: each part gets only its own resolved settings.
//!
//! Precedence, highest first: a flag on the command line, its environment variable, its key
//! in `--config.file`, the built-in default. Config-file keys are the flag names without the
//! leading dashes (`web.listen-address: 127.0.0.1:9977`, `collector.host: false`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::collector::connection::ConnectionArgs;
use crate::collector::container::ContainerArgs;
use crate::collector::{CollectorSettings, CollectorSwitches};
use crate::conntrack::ConntrackArgs;
use crate::docker::settings::DockerArgs;
use crate::gateway::GatewayArgs;
use crate::kubelet::settings::KubeletArgs;
use crate::logging::{LogArgs, LogConfig};
use crate::paths::PathArgs;
use crate::runtime::{RuntimeArgs, RuntimeConfig};
use crate::scrape::{ScrapeArgs, ScrapeConfig};
use crate::server::{WebArgs, WebConfig};
use crate::settings::InvalidValue;

/// Everything the exporter needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub web: WebConfig,
    pub scrape: ScrapeConfig,
    pub log: LogConfig,
    pub runtime: RuntimeConfig,
    /// What the collectors and their metadata sources are built from.
    pub collectors: CollectorSettings,
}

impl Config {
    /// The configuration with every flag at its default (no environment, no config file).
    pub fn defaults() -> Self {
        let cmd = command().mut_args(|arg| arg.env(None));
        let matches = cmd.get_matches_from(["sonde"]);
        resolve(&matches).unwrap_or_else(|e| unreachable!("built-in defaults are valid: {e}"))
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
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
}

// The flags in `--help` order; each group belongs to the part named by its type, whose doc
// comments are the flags' help. No doc comment on this struct: clap would make it the
// command's description.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "sonde",
    version = crate::build_info::VERSION,
    long_version = crate::build_info::long_version(),
    about = "Prometheus/OpenMetrics exporter for container and connection metrics"
)]
struct Cli {
    /// YAML file whose keys are flag names without dashes
    #[arg(long = "config.file", value_name = "FILE")]
    config_file: Option<String>,
    #[command(flatten)]
    web: WebArgs,
    #[command(flatten)]
    scrape: ScrapeArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    paths: PathArgs,
    #[command(flatten)]
    container: ContainerArgs,
    #[command(flatten)]
    connection: ConnectionArgs,
    #[command(flatten)]
    docker: DockerArgs,
    #[command(flatten)]
    kubelet: KubeletArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    conntrack: ConntrackArgs,
    #[command(flatten)]
    collectors: CollectorSwitches,
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

/// The command line: every flag, its environment variable and its default.
pub fn command() -> Command {
    with_environment(Cli::command())
}

/// Gives every flag its environment variable, except a `--no-<flag>` that only negates
/// another flag (the variable of `<flag>` says both).
fn with_environment(cmd: Command) -> Command {
    let flags: HashSet<String> = cmd
        .get_arguments()
        .filter_map(Arg::get_long)
        .map(str::to_owned)
        .collect();
    cmd.mut_args(|arg| {
        let Some(flag) = arg.get_long() else { return arg };
        let negates_another = flag.strip_prefix("no-").is_some_and(|negated| flags.contains(negated));
        if negates_another {
            arg
        } else {
            let name = env_name(flag);
            arg.env(name)
        }
    })
}

/// The id clap knows a flag by (the field it fills), from the flag's name.
fn id_of(cmd: &Command, flag: &str) -> Option<String> {
    cmd.get_arguments()
        .find(|arg| arg.get_long() == Some(flag))
        .map(|arg| arg.get_id().to_string())
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
    let config_file = id_of(&cmd, "config.file").and_then(|id| first.get_one::<String>(&id).cloned());
    if let Some(path) = config_file {
        for (id, values) in read_config_file(Path::new(&path), &cmd)? {
            cmd = cmd.mut_arg(id, |arg| arg.default_values(values));
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

/// Reads the YAML config file into (flag id, values) pairs, rejecting keys that are not
/// flag names. A list gives a repeatable flag several values.
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
        let id = match id_of(cmd, &key) {
            Some(id) if key != "config.file" => id,
            _ => return Err(bad(format!("unknown key {key:?}"))),
        };
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
        pairs.push((id, values));
    }
    Ok(pairs)
}

/// Each part resolves its own flags, in `--help` order (the first invalid value is reported).
fn resolve(m: &ArgMatches) -> Result<Config, ConfigError> {
    let cli = Cli::from_arg_matches(m).map_err(|e| ConfigError::Usage(e.to_string()))?;
    let web = cli.web.resolve()?;
    let scrape = cli.scrape.resolve()?;
    let log = cli.log.resolve();
    let runtime = cli.runtime.resolve();
    let paths = cli.paths.resolve();
    Ok(Config {
        web,
        scrape,
        log,
        runtime,
        collectors: CollectorSettings {
            paths,
            switches: cli.collectors,
            container: cli.container.resolve()?,
            connection: cli.connection.resolve()?,
            docker: cli.docker.resolve()?,
            kubelet: cli.kubelet.resolve()?,
            gateway: cli.gateway.resolve()?,
            conntrack: cli.conntrack.resolve()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::collector::connection::ConnectionConfig;
    use crate::collector::connection::series::RemoteMode;
    use crate::gateway::GatewayConfig;

    fn args(extra: &[&str]) -> Vec<String> {
        std::iter::once("sonde")
            .chain(extra.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn defaults_follow_the_exporter_convention() {
        let c = Config::defaults();
        assert_eq!(c.web.listen_address, ":9977");
        assert_eq!(c.web.telemetry_path, "/metrics");
        assert_eq!(c.web.max_requests, 40);
        assert_eq!(c.scrape.timeout, Duration::from_secs(10));
        assert_eq!(c.scrape.timeout_offset, Duration::from_millis(500));
        assert_eq!(c.collectors.paths, crate::paths::Paths::default());
        assert!(c.collectors.collector_enabled("host"));
        // One async worker, as node_exporter's one Go thread (runtime.rs says why).
        assert_eq!(c.runtime.worker_threads.map(|n| n.get()), Some(1));
    }

    #[test]
    fn web_hardening_flags() {
        let c = Config::defaults();
        assert_eq!(c.web.config_file, None);
        assert_eq!(c.web.limits.read_header_timeout, Duration::from_secs(10));
        assert_eq!(c.web.limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.web.limits.shutdown_timeout, Duration::from_secs(15));
        assert!((1..=2048).contains(&c.web.limits.max_connections));
        assert_eq!(crate::server::default_max_connections(1024), 256);
        assert_eq!(crate::server::default_max_connections(20_000), 2048);
        assert_eq!(crate::server::default_max_connections(1 << 20), 2048);
        assert_eq!(crate::server::default_max_connections(8), 2);
        let c = from_args(args(&[
            "--web.config.file=/etc/sonde/web.yml",
            "--web.read-header-timeout=3s",
            "--web.idle-timeout=30s",
            "--web.max-connections=100",
            "--web.shutdown-timeout=1s",
        ]))
        .expect("parses");
        assert_eq!(c.web.config_file, Some(PathBuf::from("/etc/sonde/web.yml")));
        assert_eq!(
            c.web.limits,
            crate::server::Limits {
                read_header_timeout: Duration::from_secs(3),
                idle_timeout: Duration::from_secs(30),
                max_connections: 100,
                shutdown_timeout: Duration::from_secs(1),
                write_stall_timeout: Duration::from_secs(60),
            }
        );
        for bad in [
            "--web.max-connections=0",
            "--web.read-header-timeout=0s",
            "--web.shutdown-timeout=x",
        ] {
            let err = from_args(args(&[bad])).expect_err(bad);
            assert!(err.to_string().contains("--web."), "{bad}: {err}");
        }
    }

    #[test]
    fn collector_flags_switch_and_the_last_one_wins() {
        let off = from_args(args(&["--no-collector.host"])).expect("parses");
        assert!(!off.collectors.collector_enabled("host"));
        let off = from_args(args(&["--collector.host=false"])).expect("parses");
        assert!(!off.collectors.collector_enabled("host"));
        let on = from_args(args(&["--no-collector.host", "--collector.host"])).expect("parses");
        assert!(on.collectors.collector_enabled("host"));
        let off = from_args(args(&["--collector.host", "--no-collector.host"])).expect("parses");
        assert!(!off.collectors.collector_enabled("host"));
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        let c = from_args(args(&["--scrape.timeout=2m", "--scrape.timeout-offset=0.25"])).expect("parses");
        assert_eq!(c.scrape.timeout, Duration::from_secs(120));
        assert_eq!(c.scrape.timeout_offset, Duration::from_millis(250));
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
        assert_eq!(c.web.listen_address, "127.0.0.1:1234");
        assert_eq!(c.web.max_requests, 7);
        assert!(!c.collectors.collector_enabled("host"));
        assert_eq!(c.log.level, tracing::Level::DEBUG);
        // A flag beats the file.
        let c = from_args(args(&["--config.file", f, "--web.max-requests=9", "--collector.host"])).expect("parses");
        assert_eq!(c.web.max_requests, 9);
        assert!(c.collectors.collector_enabled("host"));
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
        assert_eq!(c.collectors.container.cache_validity, Duration::from_secs(2));
        assert_eq!(c.collectors.container.inventory_validity, Duration::from_secs(10));
        assert!(c.collectors.container.raw_cgroup_prefixes.is_empty());
        let c = from_args(args(&[
            "--container.raw-cgroup-prefix=/a,/b",
            "--container.raw-cgroup-prefix",
            "/c",
            "--container.exclude-image=pause",
        ]))
        .expect("parses");
        assert_eq!(c.collectors.container.raw_cgroup_prefixes, ["/a", "/b", "/c"]);
        assert!(
            c.collectors
                .container
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
        assert_eq!(c.collectors.container.raw_cgroup_prefixes, ["/x", "/y"]);
    }

    #[test]
    fn connection_flags() {
        assert_eq!(Config::defaults().collectors.connection, ConnectionConfig::default());
        let c = from_args(args(&[
            "--connection.remote-address=prefix:24",
            "--connection.ephemeral-port-range=49152-65535",
            "--connection.max-series=5",
            "--connection.max-live=1024",
            "--connection.udp-idle=30s",
            "--no-connection.udp",
        ]))
        .expect("parses");
        assert_eq!(c.collectors.connection.udp_idle, Duration::from_secs(30));
        assert!(!c.collectors.connection.udp);
        assert_eq!(c.collectors.connection.remote, RemoteMode::Prefix(24));
        assert_eq!(c.collectors.connection.ephemeral_ports, 49152..=65535);
        assert_eq!(
            (c.collectors.connection.max_series, c.collectors.connection.max_live),
            (5, 1024)
        );
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
        assert!(c.collectors.docker.enabled);
        assert!(c.collectors.docker.label_allowlist.is_none() && c.collectors.docker.env_allowlist.is_none());
        let c = from_args(args(&[
            "--no-docker",
            "--docker.host=unix:///run/other.sock",
            "--docker.label-allowlist=^com\\.example\\.",
            "--docker.env-allowlist=^APP_",
        ]))
        .expect("parses");
        assert!(!c.collectors.docker.enabled);
        assert_eq!(c.collectors.docker.host, "unix:///run/other.sock");
        assert!(
            c.collectors
                .docker
                .label_allowlist
                .is_some_and(|re| re.is_match("com.example.team"))
        );
        assert!(
            c.collectors
                .docker
                .env_allowlist
                .is_some_and(|re| re.is_match("APP_MODE"))
        );
        assert!(
            from_args(args(&["--no-docker", "--docker"]))
                .expect("parses")
                .collectors
                .docker
                .enabled
        );
        for bad in ["--docker.host=/var/run/docker.sock", "--docker.label-allowlist=("] {
            let err = from_args(args(&[bad])).expect_err(bad);
            assert!(err.to_string().contains("--docker."), "{err}");
        }
        let off = from_args(args(&["--no-docker", "--docker.host=ssh://host"])).expect("unused when off");
        assert!(!off.collectors.docker.enabled);
    }

    #[test]
    fn kubelet_flags() {
        let c = from_args(args(&["--kubelet.url="])).expect("parses");
        assert_eq!(c.collectors.kubelet.url, None, "empty: off");
        let d = crate::kubelet::settings::KubeletConfig::default();
        assert_eq!(
            (
                c.collectors.kubelet.timeout,
                c.collectors.kubelet.cache_validity,
                c.collectors.kubelet.max_staleness
            ),
            (d.timeout, d.cache_validity, d.max_staleness)
        );
        assert_eq!(
            (
                &c.collectors.kubelet.token_file,
                &c.collectors.kubelet.ca_file,
                c.collectors.kubelet.max_body_bytes
            ),
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
        assert_eq!(c.collectors.kubelet.url.as_deref(), Some("https://127.0.0.1:10250"));
        assert!(c.collectors.kubelet.insecure_skip_verify);
        assert_eq!(c.collectors.kubelet.timeout, Duration::from_secs(2));
        assert_eq!(c.collectors.kubelet.max_body_bytes, 1 << 20);
        assert_eq!(c.collectors.kubelet.token_file, PathBuf::from("/t"));
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
        assert_eq!(Config::defaults().collectors.gateway, GatewayConfig::default());
        assert_eq!(
            Config::defaults().collectors.gateway.route_cache_ttl,
            Duration::from_secs(120)
        );
        let c = from_args(args(&[
            "--gateway.route-cache-ttl=5s",
            "--gateway.route-cache-size=10",
            "--no-gateway",
        ]))
        .expect("parses");
        assert_eq!(
            c.collectors.gateway,
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
        assert!(!c.collectors.gateway.enabled);
        assert_eq!(c.collectors.gateway.route_cache_ttl, Duration::from_secs(30));
    }

    #[test]
    fn conntrack_flags() {
        use crate::conntrack::ConntrackConfig;
        assert_eq!(Config::defaults().collectors.conntrack, ConntrackConfig::default());
        let c = from_args(args(&[
            "--conntrack.cache-ttl=30s",
            "--conntrack.cache-size=10",
            "--no-conntrack",
        ]))
        .expect("parses");
        assert_eq!(
            c.collectors.conntrack,
            ConntrackConfig {
                enabled: false,
                cache_ttl: Duration::from_secs(30),
                cache_size: 10,
            }
        );
        for bad in ["--conntrack.cache-ttl=0s", "--conntrack.cache-size=0"] {
            assert!(from_args(args(&[bad])).is_err(), "{bad}");
        }
    }

    #[test]
    fn runtime_worker_threads_zero_is_one_per_cpu_and_nonsense_is_refused() {
        let workers = |flag: &str| from_args(args(&[flag])).map(|c| c.runtime.worker_threads.map(|n| n.get()));
        assert_eq!(workers("--runtime.worker-threads=4").expect("parses"), Some(4));
        assert_eq!(workers("--runtime.worker-threads=1024").expect("parses"), Some(1024));
        assert_eq!(workers("--runtime.worker-threads=0").expect("parses"), None);
        for bad in ["-1", "two", "", "1025"] {
            let flag = format!("--runtime.worker-threads={bad}");
            let error = workers(&flag).expect_err(&flag).to_string();
            assert!(error.contains("runtime.worker-threads"), "{bad}: {error}");
        }
    }

    #[test]
    fn environment_names_follow_the_flags() {
        assert_eq!(env_name("web.listen-address"), "SONDE_WEB_LISTEN_ADDRESS");
        assert_eq!(env_name("collector.host"), "SONDE_COLLECTOR_HOST");
    }
}
