//! The background task that keeps the container map true: list and inspect the running
//! containers, then follow the engine's events; when the engine goes away, keep the last
//! known names and reconnect with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures::StreamExt;

use super::client;
use super::labels::Allowlists;
use super::link::Link;
use super::map::{ContainerMap, Known};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Kept well below the inventory window, so names are back within one window of the
/// engine's return.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Containers inspected at once while listing.
const INSPECT_CONCURRENCY: usize = 16;

/// Everything the watcher works on.
pub struct Watcher {
    pub host: String,
    pub allow: Allowlists,
    pub map: Arc<ContainerMap>,
    pub link: Arc<Link>,
}

impl Watcher {
    /// Runs for the life of the process.
    pub async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let error = match self.session().await {
                Ok((docker, since)) => self.follow(&docker, since).await,
                Err(error) => error,
            };
            if self.link.connected() {
                backoff = FIRST_BACKOFF; // it was up: try again soon
            }
            if self.link.down(error.clone()) {
                tracing::warn!(host = %self.host, %error, "Docker engine lost; keeping the last known names");
                self.map.bump(); // health is unknown while away
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Connects, lists and inspects the running containers, and marks the link up. Returns
    /// the client and the time (seconds since the epoch) to follow events from: a moment
    /// before the listing, so no event falls between the two; replaying one is harmless
    /// (every event is applied from a fresh inspect).
    async fn session(&self) -> Result<(Docker, u64), String> {
        let docker = client::connect(&self.host).await.map_err(|e| e.to_string())?;
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().saturating_sub(1));
        let listing = self.list(&docker).await?;
        self.map.replace(listing);
        if self.link.up() {
            tracing::info!(host = %self.host, containers = self.map.len(), "Docker engine connected");
            self.map.bump();
        }
        Ok((docker, since))
    }

    async fn list(&self, docker: &Docker) -> Result<HashMap<String, Known>, String> {
        let summaries = docker
            .list_containers(Some(ListContainersOptions::default()))
            .await
            .map_err(|e| format!("listing containers: {}", chain(&e)))?;
        let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
        let found: Vec<Option<(String, Known)>> = futures::stream::iter(ids)
            .map(|id| async move { self.inspect(docker, &id).await })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .collect()
            .await;
        Ok(found.into_iter().flatten().collect())
    }

    /// `None` when the container went away (or cannot be described) meanwhile.
    async fn inspect(&self, docker: &Docker, id: &str) -> Option<(String, Known)> {
        match docker.inspect_container(id, None).await {
            Ok(inspect) => Known::from_inspect(&self.allow, &inspect),
            Err(error) => {
                tracing::debug!(id, %error, "inspecting a container");
                None
            }
        }
    }

    /// Applies container events until the stream ends; returns why it ended.
    async fn follow(&self, docker: &Docker, since: u64) -> String {
        let options = EventsOptions {
            since: Some(since.to_string()),
            filters: Some(HashMap::from([("type".to_owned(), vec!["container".to_owned()])])),
            ..EventsOptions::default()
        };
        let mut events = docker.events(Some(options));
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => return format!("following events: {}", chain(&error)),
            };
            let (Some(action), Some(id)) = (event.action.as_deref(), event.actor.and_then(|a| a.id)) else {
                continue;
            };
            self.apply(docker, action, id).await;
        }
        "the event stream ended".to_owned()
    }

    async fn apply(&self, docker: &Docker, action: &str, id: String) {
        // `health_status: healthy`: the part before the colon names the event.
        match action.split(':').next().unwrap_or(action).trim() {
            "start" | "rename" | "health_status" => match self.inspect(docker, &id).await {
                Some((id, known)) => self.map.upsert(id, known),
                None => self.map.remove(&id),
            },
            "die" => self.map.stopped(&id),
            "destroy" => self.map.remove(&id),
            _ => return,
        }
        self.link.event_applied();
    }
}

/// An error with its causes: bollard's own text for a cut answer ("error reading a body")
/// leaves out why (the size cap, in `source()`).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
