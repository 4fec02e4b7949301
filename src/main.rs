//! The `sonde` binary: configuration, logging, the server, and signals.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sonde::cli::{self, Config, ConfigError};
use sonde::server::Server;

fn main() -> ExitCode {
    limit_malloc_arenas();
    raise_open_file_limit();
    let config = match cli::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(ConfigError::Help(text) | ConfigError::Version(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("sonde: error: {error}");
            return ExitCode::from(2);
        }
    };
    // Before any other thread exists, so every thread has only these (see privileges.rs).
    let kept = match sonde::privileges::lower_to(&sonde::privileges::needed(&config.collectors)) {
        Ok(kept) => kept,
        Err(error) => {
            eprintln!("sonde: error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = sonde::logging::init(config.log) {
        eprintln!("sonde: error: setting up logging: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match config.runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sonde: error: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(config, kept));
    // A thread still blocked (a collector in a read that never returns) must not hold the
    // exit: the runtime is left behind instead of waiting for its blocking threads.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sonde: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard one, as Go programs (cAdvisor,
/// node_exporter) do at start: the container collector keeps each cgroup's stats files open
/// for its inventory window, within the soft limit less a reserve (see `cgroup::KeptFiles`),
/// and the usual soft limit of 1024 would keep only a few dozen containers' files.
fn raise_open_file_limit() {
    sonde::fdlimit::raise_soft_to_hard();
}

/// glibc gives every thread that allocates its own arena and keeps freed memory in each:
/// with the async workers and the cgroup-reading pool that doubled the exporter's resident
/// memory for no speed gain (see benches/container.rs). Two arenas serve the 2-core hosts
/// sonde is sized for; on larger hosts threads share them.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

async fn run(config: Config, kept: sonde::privileges::Kept) -> anyhow::Result<()> {
    let shutdown = shutdown_signal(config.web.limits.shutdown_timeout);
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let collectors = sonde::collector::enabled(&config.collectors);
    let names: Vec<&str> = collectors.iter().map(|c| c.name()).collect();
    let server = Server::bind(&config.web, &config.scrape, collectors).await?;
    let address = server.local_addr().context("reading the bound address")?;
    tracing::info!(
        version = sonde::build_info::VERSION,
        revision = sonde::build_info::REVISION,
        %address,
        telemetry_path = %config.web.telemetry_path,
        collectors = %names.join(","),
        "listening"
    );
    match hangup {
        Ok(hangup) => {
            tokio::spawn(reload_on_hangup(hangup, server.web_config()));
        }
        Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP; it would stop sonde"),
    }
    // Said once sonde is up, so a start that fails still prints one line only.
    tracing::info!(kept = %kept.names(), dropped = kept.dropped, no_new_privs = true, "capabilities lowered");
    server.run(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP re-reads the web config file (it is also re-read when it changes); other settings
/// need a restart.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    web_config: std::sync::Arc<sonde::server::live::LiveWebConfig>,
) {
    while hangup.recv().await.is_some() {
        tracing::info!(signal = "SIGHUP", "re-reading the web config file");
        let web_config = std::sync::Arc::clone(&web_config);
        let _ = tokio::task::spawn_blocking(move || web_config.reload(true)).await;
    }
}

/// Resolves on SIGTERM or SIGINT; the server then finishes in-flight scrapes and exits.
/// The handlers are installed here, before the server answers anything: installed on the
/// future's first poll instead, a SIGTERM sent as soon as `/healthz` answered could still
/// find the default action and kill the process. Once the signal came, a watchdog thread
/// ends the process a little after the shutdown deadline whatever else still runs, so no
/// stuck task or thread can keep sonde alive.
fn shutdown_signal(deadline: Duration) -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        wait_for_stop_signal(terminate, interrupt).await;
        std::thread::spawn(move || {
            std::thread::sleep(deadline + WATCHDOG_MARGIN);
            eprintln!("sonde: shutdown deadline passed with work still blocked; exiting");
            std::process::exit(1);
        });
    }
}

/// How long past `--web.shutdown-timeout` the watchdog waits for the orderly exit.
const WATCHDOG_MARGIN: Duration = Duration::from_secs(2);

async fn wait_for_stop_signal(
    terminate: std::io::Result<tokio::signal::unix::Signal>,
    interrupt: std::io::Result<tokio::signal::unix::Signal>,
) {
    match (terminate, interrupt) {
        (Ok(mut terminate), Ok(mut interrupt)) => tokio::select! {
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        },
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "cannot listen for SIGTERM and SIGINT; only SIGINT stops sonde");
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!(signal = "SIGINT", "shutting down");
        }
    }
}
