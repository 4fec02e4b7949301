//! Docker as a metadata source (bollard): a background watcher keeps a map of the running
//! containers from a listing and the engine's events; the inventory reads names, images,
//! allowlisted labels and health from it; the `docker` collector reports the engine's link.

mod client;
mod collector;
pub mod config;
pub mod labels;
mod link;
pub mod map;
mod source;
mod watcher;

use std::sync::Arc;

pub use collector::DockerCollector;
pub use source::DockerSource;

use self::config::DockerConfig;
use self::labels::Allowlists;
use self::link::Link;
use self::map::ContainerMap;
use self::watcher::Watcher;

/// Starts the watcher (call inside the Tokio runtime) and returns the source and the
/// collector that share its map.
pub fn start(config: &DockerConfig) -> (Arc<DockerSource>, Arc<DockerCollector>) {
    let map = Arc::new(ContainerMap::default());
    let link = Arc::new(Link::default());
    let watcher = Watcher {
        host: config.host.clone(),
        allow: Allowlists {
            labels: config.label_allowlist.clone(),
            env: config.env_allowlist.clone(),
        },
        map: Arc::clone(&map),
        link: Arc::clone(&link),
    };
    tokio::spawn(watcher.run());
    let source = DockerSource {
        map: Arc::clone(&map),
        link: Arc::clone(&link),
    };
    let collector = DockerCollector {
        host: config.host.clone(),
        map,
        link,
    };
    (Arc::new(source), Arc::new(collector))
}
