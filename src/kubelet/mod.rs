//! The Kubelet source: pod identity from `/pods` and pod network stats from `/stats/summary`,
//! each refreshed at most once per validity window (see DESIGN.md, "Real-time container
//! check").

pub mod client;
pub mod collector;
pub mod config;
pub mod pods;
pub mod source;
pub mod summary;
mod tls;

use std::sync::Arc;

use crate::config::Config;
use crate::sources::Sources;

/// Registers the Kubelet's metadata source and its `kubelet` collector when a Kubelet URL
/// is configured (or found from the downward API).
pub fn register(config: &Config, sources: &mut Sources) {
    let Some(url) = config.kubelet.url.as_deref() else {
        return;
    };
    let collector = Arc::new(collector::KubeletCollector::new(config, url));
    sources.metadata.push(collector.source());
    sources
        .collectors
        .push(Arc::clone(&collector) as Arc<dyn crate::collector::Collector>);
    // Ask for the pods at once, so the first inventory already has their names.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { collector.prefetch().await });
    }
}
