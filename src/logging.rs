//! Log output in the exporter convention: logfmt (default) or JSON, on standard error.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Logfmt,
    Json,
}

/// What to log and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub level: tracing::Level,
    pub format: LogFormat,
}

/// The `--log.*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Only log messages with this severity or above
    #[arg(long = "log.level", value_name = "LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug"])]
    level: String,
    /// Log line format
    #[arg(long = "log.format", value_name = "FORMAT", default_value = "logfmt", value_parser = ["logfmt", "json"])]
    format: String,
}

impl LogArgs {
    pub fn resolve(&self) -> LogConfig {
        LogConfig {
            level: match self.level.as_str() {
                "error" => tracing::Level::ERROR,
                "warn" => tracing::Level::WARN,
                "debug" => tracing::Level::DEBUG,
                _ => tracing::Level::INFO,
            },
            format: match self.format.as_str() {
                "json" => LogFormat::Json,
                _ => LogFormat::Logfmt,
            },
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, refines the level per module.
pub fn init(LogConfig { level, format }: LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::from_level(level).into())
        .from_env_lossy();
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .with_span_name(false)
                    .with_span_path(false)
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init()?,
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))
            .try_init()?,
    }
    Ok(())
}
