//! The `kubelet` collector: refreshes `/pods` at most once per validity window (concurrent
//! scrapes wait for the one refresh in flight) and hands the pods to the metadata source. A
//! failed refresh is counted, logged and reported as
//! `sonde_collector_success{collector="kubelet"} 0`, never cached. Pod networks are not the
//! Kubelet's to report: as in cAdvisor, a network namespace is reported once, by the container
//! collector on the pod's sandbox (the container that owns it), never on pod cgroups.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::{CollectError, Collection, Collector, CollectorSettings, ScrapeContext};
use crate::cache::{self, CacheFigures, ValidityCache};
use crate::exposition::family::{self, Family, FamilyBuilder};
use crate::identity::metadata::MetadataSource;
use crate::kubelet::TlsError;
use crate::kubelet::client::{Endpoint, KubeletClient, KubeletError};
use crate::kubelet::pods::{PodIndex, PodList};
use crate::kubelet::source::KubeletSource;

/// Why a collection failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KubeletFailure {
    /// The client could not be built (a CA file that does not load, say).
    #[error(transparent)]
    NoClient(Arc<TlsError>),
    #[error(transparent)]
    Request(Arc<KubeletError>),
    #[error("no answer from the Kubelet before the scrape deadline")]
    Late,
}

/// The failures of one collection, shown together.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct KubeletFailures(pub Vec<KubeletFailure>);

pub struct KubeletCollector {
    client: Result<KubeletClient, Arc<TlsError>>,
    source: Arc<KubeletSource>,
    pods: ValidityCache<PodIndex>,
}

impl KubeletCollector {
    pub fn new(settings: &CollectorSettings, url: &str) -> Self {
        let client = KubeletClient::new(url, &settings.kubelet).map_err(Arc::new);
        if let Err(error) = &client {
            tracing::error!(%error, "the Kubelet source cannot start");
        }
        Self {
            client,
            source: Arc::new(KubeletSource::new(settings.kubelet.max_staleness)),
            pods: ValidityCache::new("kubelet_pods", settings.kubelet.cache_validity),
        }
    }

    pub fn source(&self) -> Arc<dyn MetadataSource> {
        Arc::clone(&self.source) as Arc<dyn MetadataSource>
    }

    /// Fetches the pods once, ahead of the first scrape.
    pub async fn prefetch(&self) {
        let _ = self.refresh_pods(None).await;
    }

    fn client(&self) -> Result<&KubeletClient, KubeletFailure> {
        self.client
            .as_ref()
            .map_err(|e| KubeletFailure::NoClient(Arc::clone(e)))
    }

    /// The pods, fetched at most once per window; a fresh answer goes to the metadata source.
    async fn refresh_pods(&self, deadline: Option<Instant>) -> Result<(), KubeletFailure> {
        let client = self.client()?;
        let fetch = async {
            let list: PodList = client.get(Endpoint::Pods, deadline).await.inspect_err(log)?;
            Ok::<_, KubeletError>(PodIndex::from_list(list))
        };
        let (index, fresh) = self.pods.get(fetch).await.map_err(KubeletFailure::Request)?;
        if fresh {
            self.source.update(index);
        }
        Ok(())
    }

    /// The client's request counts, the pod list in use and its cache.
    fn telemetry(&self) -> Vec<Arc<Family>> {
        let (pods, age) = self
            .source
            .current()
            .map_or((0, None), |(index, age)| (index.pods.len(), Some(age)));
        let mut families: Vec<_> = self
            .client()
            .ok()
            .and_then(KubeletClient::telemetry)
            .into_iter()
            .collect();
        families.extend(
            FamilyBuilder::gauge("sonde_kubelet_pods", "Pods in the pod list in use.")
                .with_sample(&[], pods as f64)
                .build(),
        );
        if let Some(age) = age {
            families.extend(
                FamilyBuilder::gauge(
                    "sonde_kubelet_pod_list_age_seconds",
                    "Age of the pod list in use (kept until --kubelet.max-staleness while the Kubelet fails).",
                )
                .with_sample(&[], age.as_secs_f64())
                .build(),
            );
        }
        families.extend(cache::telemetry(&[CacheFigures {
            name: self.pods.name(),
            hits: self.pods.requests().0,
            misses: self.pods.requests().1,
            entries: pods,
        }]));
        family::shared(families)
    }
}

/// `work`'s result, or [`KubeletFailure::Late`] once `deadline` passes.
async fn within<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, KubeletFailure>>,
) -> Result<T, KubeletFailure> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or(Err(KubeletFailure::Late)),
        None => work.await,
    }
}

/// Time kept before the scrape deadline to hand over what the collector has.
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

fn log(error: &KubeletError) {
    tracing::warn!(code = %error.code(), %error, "Kubelet request failed");
}

impl Collector for KubeletCollector {
    fn name(&self) -> &'static str {
        "kubelet"
    }

    fn collect(&self, ctx: ScrapeContext) -> BoxFuture<'_, Collection> {
        Box::pin(async move {
            // Give up on the Kubelet a little before the scrape's deadline, so the failure is
            // counted and reported with this collector's telemetry rather than cut off.
            let before = |margin| Some(ctx.deadline.checked_sub(margin).unwrap_or(ctx.deadline));
            let (requests_end, wait_end) = (before(2 * DEADLINE_MARGIN), before(DEADLINE_MARGIN));
            // The wait is bounded too (a little later, so a request of this scrape ends by its
            // own timeout and is counted): a caller may be waiting on another's refresh.
            let pods = within(wait_end, self.refresh_pods(requests_end)).await;
            let families = self.telemetry();
            let failures: Vec<KubeletFailure> = pods.err().into_iter().collect();
            Collection {
                families,
                failure: (!failures.is_empty()).then(|| CollectError::from(KubeletFailures(failures))),
            }
        })
    }
}
