//! The web configuration in force, and its reloads. The file and every file it names are
//! read again every [`CHECK_INTERVAL`] and on SIGHUP; when any byte changed, the whole
//! configuration is rebuilt and swapped in for the next connection and request (a renewed
//! certificate or a changed password applies without a restart). A new file that does not
//! parse, or names a certificate that does not load, leaves the last good configuration in
//! force and says so in the log.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_rustls::TlsAcceptor;

use super::auth::RateLimiter;
use super::tls::{TlsPems, server_config};
use super::webconfig::{self, Pem, WebConfigError, WebSettings};

/// How often the files are compared with what is in force.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Files larger than this are refused: a configuration or PEM file is a few kilobytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// One loaded configuration.
pub struct Active {
    pub settings: WebSettings,
    pub tls: Option<TlsAcceptor>,
    pub rate_limiter: Option<RateLimiter>,
}

impl Active {
    /// No file: plain HTTP, no authentication.
    pub fn plain() -> Self {
        Self {
            settings: WebSettings::default(),
            tls: None,
            rate_limiter: None,
        }
    }
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Applied,
    /// The reason the new files were refused (the last good configuration stays).
    Refused(String),
}

pub struct LiveWebConfig {
    path: Option<PathBuf>,
    current: RwLock<Arc<Active>>,
    state: Mutex<ReloadState>,
}

#[derive(Default)]
struct ReloadState {
    /// The bytes of the file and every file it named, as last loaded.
    loaded: Vec<u8>,
    /// Why the files on disk were last refused, while they still are.
    refused: Option<String>,
}

impl LiveWebConfig {
    /// Loads `path` (none: plain HTTP for ever); an error here stops sonde at start.
    pub fn load(path: Option<&Path>) -> Result<Self, WebConfigError> {
        let Some(path) = path else {
            return Ok(Self {
                path: None,
                current: RwLock::new(Arc::new(Active::plain())),
                state: Mutex::default(),
            });
        };
        let (active, bytes) = build(path)?;
        log_loaded(path, &active);
        Ok(Self {
            path: Some(path.to_owned()),
            current: RwLock::new(Arc::new(active)),
            state: Mutex::new(ReloadState {
                loaded: bytes,
                refused: None,
            }),
        })
    }

    /// Whether a file is in use (else there is nothing to re-read).
    pub fn has_file(&self) -> bool {
        self.path.is_some()
    }

    pub fn current(&self) -> Arc<Active> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the files; swaps in a new configuration when any byte changed (or always,
    /// when `forced`, as SIGHUP asks). Blocking file reads: call off the async workers.
    pub fn reload(&self, forced: bool) -> Reload {
        let Some(path) = &self.path else {
            return Reload::Unchanged;
        };
        let Ok(mut state) = self.state.lock() else {
            return Reload::Unchanged;
        };
        let outcome = match build(path) {
            Ok((_, bytes)) if bytes == state.loaded && !forced => {
                state.refused = None;
                return Reload::Unchanged;
            }
            Ok((active, _)) if self.current().tls.is_some() != active.tls.is_some() => {
                Reload::Refused("TLS cannot be switched on or off without a restart".into())
            }
            Ok((active, bytes)) => {
                log_loaded(path, &active);
                match self.current.write() {
                    Ok(mut current) => *current = Arc::new(active),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(active),
                }
                state.loaded = bytes;
                state.refused = None;
                return Reload::Applied;
            }
            Err(error) => Reload::Refused(error.to_string()),
        };
        // A broken file is reported once, not at every check, until it changes again.
        if let Reload::Refused(reason) = &outcome {
            if !forced && state.refused.as_ref() == Some(reason) {
                return Reload::Unchanged;
            }
            state.refused = Some(reason.clone());
        }
        if let Reload::Refused(reason) = &outcome {
            tracing::error!(
                file = %path.display(),
                %reason,
                "web config not reloaded; the last good one stays in force"
            );
        }
        outcome
    }
}

fn log_loaded(path: &Path, active: &Active) {
    for warning in &active.settings.warnings {
        tracing::warn!(file = %path.display(), %warning, "web config");
    }
    // User names only: hashes and passwords never reach the log.
    tracing::info!(
        file = %path.display(),
        tls = active.tls.is_some(),
        basic_auth_users = active.settings.users.len(),
        headers = active.settings.headers.len(),
        rate_limit = active.rate_limiter.is_some(),
        "web config loaded"
    );
}

/// Reads and checks `path` and the files it names; returns the configuration and every byte
/// it was built from.
fn build(path: &Path) -> Result<(Active, Vec<u8>), WebConfigError> {
    let text = read_bounded(path).map_err(|reason| WebConfigError::Read {
        what: "web config file",
        path: path.to_owned(),
        reason,
    })?;
    let mut bytes = text.clone();
    let text = String::from_utf8(text).map_err(|_| WebConfigError::Yaml("the file is not UTF-8".into()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let settings = webconfig::parse(&text)?.relative_to(dir);
    let tls = match &settings.tls {
        None => None,
        Some(tls) => {
            let mut read = |pem: &Pem, what: &'static str| -> Result<Vec<u8>, WebConfigError> {
                let content = match pem {
                    Pem::Inline(text) => text.as_bytes().to_vec(),
                    Pem::File(file) => read_bounded(file).map_err(|reason| WebConfigError::Read {
                        what,
                        path: file.clone(),
                        reason,
                    })?,
                };
                // A separator, so moving bytes between files still counts as a change.
                bytes.extend_from_slice(&(content.len() as u64).to_le_bytes());
                bytes.extend_from_slice(&content);
                Ok(content)
            };
            let cert = read(&tls.cert, "cert_file")?;
            let key = read(&tls.key, "key_file")?;
            let client_ca = tls
                .client_ca
                .as_ref()
                .map(|ca| read(ca, "client_ca_file"))
                .transpose()?;
            let pems = TlsPems {
                cert: &cert,
                key: &key,
                client_ca: client_ca.as_deref(),
            };
            Some(TlsAcceptor::from(Arc::new(server_config(tls, &pems)?)))
        }
    };
    let rate_limiter = settings.rate_limit.map(RateLimiter::new);
    Ok((
        Active {
            settings,
            tls,
            rate_limiter,
        },
        bytes,
    ))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(bytes)
}
