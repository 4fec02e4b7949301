//! The Kubelet source: pod identity from `/pods` and pod network stats from `/stats/summary`
//! (the `kubelet` collector, `collector::kubelet`, refreshes both at most once per validity
//! window; see docs/ARCHITECTURE.md#container-stats).

pub mod client;
pub mod pods;
pub mod settings;
pub mod source;
pub mod summary;
mod tls;

pub use self::tls::TlsError;
