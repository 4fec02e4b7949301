//! The Kubelet source: pod identity from `/pods` (the `kubelet` collector,
//! `collector::kubelet`, refreshes it at most once per validity window; see
//! docs/ARCHITECTURE.md#container-stats).

pub mod client;
pub mod pods;
pub mod settings;
pub mod source;
mod tls;

pub use self::tls::TlsError;
