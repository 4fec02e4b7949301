//! The `docker` collector: whether the engine answers (`sonde_collector_success`), and what
//! the source holds.

use futures::future::BoxFuture;
use tokio::time::{Duration, Instant};

use super::{CollectError, Collection, Collector, ScrapeContext};
use crate::docker::Watched;
use crate::exposition::family::{Family, FamilyBuilder};

/// How long a scrape right after start waits for the first answer from the engine.
const FIRST_ATTEMPT_PATIENCE: Duration = Duration::from_secs(1);

pub struct DockerCollector {
    watched: Watched,
}

impl DockerCollector {
    pub fn new(watched: Watched) -> Self {
        Self { watched }
    }
}

impl Collector for DockerCollector {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn collect(&self, ctx: ScrapeContext) -> BoxFuture<'_, Collection> {
        Box::pin(async move {
            // Right after start, answer with the first attempt's outcome rather than "not
            // yet", but never hold a scrape long for an engine that hangs.
            let patience = ctx.deadline.min(Instant::now() + FIRST_ATTEMPT_PATIENCE);
            let _ = tokio::time::timeout_at(patience, self.watched.link.first_attempt()).await;
            if !self.watched.link.connected() {
                return Collection::failed(CollectError::DockerEngine {
                    host: self.watched.host.clone(),
                    reason: self.watched.link.last_error(),
                });
            }
            let families = [
                FamilyBuilder::gauge(
                    "sonde_docker_containers",
                    "Running containers the Docker engine described.",
                )
                .with_sample(&[], self.watched.map.len() as f64),
                FamilyBuilder::counter(
                    "sonde_docker_events_total",
                    "Docker container events applied (start, die, destroy, rename, health_status).",
                )
                .with_sample(&[], self.watched.link.events() as f64),
            ];
            Collection::ok(
                families
                    .into_iter()
                    .filter_map(FamilyBuilder::build)
                    .map(Family::new)
                    .collect(),
            )
        })
    }
}
