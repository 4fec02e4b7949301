//! What this binary is: version, git revision, compiler.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("SONDE_GIT_REVISION");
pub const RUSTC: &str = env!("SONDE_RUSTC_VERSION");

/// `--version` text: `0.1.0 (revision abc123, rustc 1.95.0)`.
pub fn long_version() -> String {
    format!("{VERSION} (revision {REVISION}, rustc {RUSTC})")
}
