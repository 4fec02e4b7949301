//! Docker as a metadata source (bollard): a background watcher keeps a map of the running
//! containers from a listing and the engine's events; the inventory reads names, images,
//! allowlisted labels and health from it; the `docker` collector (`collector::docker`)
//! reports the engine's link.

mod capped;
mod client;
pub mod labels;
pub mod link;
pub mod map;
pub mod settings;
mod source;
mod watcher;

use std::sync::Arc;

pub use source::DockerSource;

use self::labels::Allowlists;
use self::link::Link;
use self::map::ContainerMap;
use self::settings::DockerConfig;
use self::watcher::Watcher;

/// What the watcher keeps up to date, for the `docker` collector to report.
pub struct Watched {
    /// The engine's address, as configured.
    pub host: String,
    pub map: Arc<ContainerMap>,
    pub link: Arc<Link>,
}

/// Starts the watcher (call inside the Tokio runtime) and returns the source and what the
/// watcher keeps, which share its map.
pub fn start(config: &DockerConfig) -> (Arc<DockerSource>, Watched) {
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
    let watched = Watched {
        host: config.host.clone(),
        map,
        link,
    };
    (Arc::new(source), watched)
}
