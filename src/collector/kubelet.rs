//! The `kubelet` collector: refreshes `/pods` and `/stats/summary` at most once per validity
//! window (concurrent scrapes wait for the one refresh in flight), hands the pods to the
//! metadata source, and renders pod network stats as cAdvisor's `container_network_*`
//! families on the pod-level series. A failed refresh is counted, logged and reported as
//! `sonde_collector_success{collector="kubelet"} 0`, never cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::{CollectError, Collection, Collector, CollectorSettings, ScrapeContext};
use crate::cache::{self, CacheFigures, ValidityCache};
use crate::cgroup::Layout;
use crate::exposition::family::{self, Family, FamilyBuilder};
use crate::identity;
use crate::identity::discovery::{self, Discovered, Kind};
use crate::identity::filter::Filters;
use crate::identity::metadata::MetadataSource;
use crate::kubelet::TlsError;
use crate::kubelet::client::{Endpoint, KubeletClient, KubeletError};
use crate::kubelet::pods::{PodIndex, PodList};
use crate::kubelet::source::KubeletSource;
use crate::kubelet::summary::{self, PodInterface, Summary};

/// Why one part of a collection (the pods, the summary) failed.
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
    summary: ValidityCache<PodNetworks>,
    /// Where pod cgroups are found; `None` without a cgroup hierarchy (then no network series).
    layout: Option<Layout>,
    filters: Filters,
}

/// One `/stats/summary` read: each pod's interfaces and the pod cgroups they belong to.
struct PodNetworks {
    by_pod: HashMap<String, Vec<PodInterface>>,
    /// Pod UID → its pod-level cgroups (their path is the `id` label).
    cgroups: HashMap<String, Vec<Discovered>>,
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
            summary: ValidityCache::new("kubelet_summary", settings.kubelet.cache_validity),
            layout: Layout::detect(&settings.paths.sysfs).ok(),
            filters: settings.container.filters.clone(),
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

    /// The pod networks, fetched at most once per window.
    async fn refresh_summary(&self, deadline: Option<Instant>) -> Result<Arc<PodNetworks>, KubeletFailure> {
        let client = self.client()?;
        let layout = self.layout.clone();
        let fetch = async {
            let summary: Summary = client.get(Endpoint::StatsSummary, deadline).await.inspect_err(log)?;
            let by_pod = summary::network_by_pod(summary);
            // The pod cgroups as the container collector finds them, off the async workers.
            let cgroups = tokio::task::spawn_blocking(move || pod_cgroups(layout.as_ref()))
                .await
                .unwrap_or_default();
            Ok::<_, KubeletError>(PodNetworks { by_pod, cgroups })
        };
        self.summary
            .get(fetch)
            .await
            .map(|(v, _)| v)
            .map_err(KubeletFailure::Request)
    }

    /// `container_network_*_total{interface}` on each pod's pod-level series, with the label
    /// set the container collector gives that series. Host-network pods are left out: their
    /// figures are the node's, not theirs.
    fn render(&self, networks: &PodNetworks) -> Vec<Arc<Family>> {
        let Some((index, _)) = self.source.current() else {
            return Vec::new(); // no identity: no pod to attach the figures to
        };
        let mut families: Vec<FamilyBuilder> = NETWORK_FAMILIES
            .iter()
            .map(|(name, help, _)| FamilyBuilder::counter(name, help))
            .collect();
        let sources = [self.source()];
        let mut pods: Vec<(&String, &Vec<PodInterface>)> = networks.by_pod.iter().collect();
        pods.sort_unstable_by_key(|(uid, _)| *uid);
        for (uid, interfaces) in pods {
            let Some(pod) = index.pods.get(uid) else { continue };
            if pod.host_network {
                continue;
            }
            for cgroup in networks.cgroups.get(uid).into_iter().flatten() {
                // The pod as the container collector names and filters its series.
                if identity::describe(cgroup, &sources, &self.filters).excluded {
                    continue;
                }
                for interface in interfaces {
                    let labels = [
                        ("container", ""),
                        ("id", cgroup.id.as_str()),
                        ("image", ""),
                        ("interface", interface.name.as_str()),
                        ("name", ""),
                        ("namespace", pod.namespace.as_str()),
                        ("pod", pod.name.as_str()),
                    ];
                    for (family, (_, _, value)) in families.iter_mut().zip(NETWORK_FAMILIES) {
                        if let Some(value) = value(&interface.stats) {
                            family.sample(&labels, value as f64);
                        }
                    }
                }
            }
        }
        family::shared(families.into_iter().filter_map(FamilyBuilder::build))
    }

    /// The client's request counts, the pod list in use, and both caches (`networks`: pods
    /// with network figures in the summary this scrape used).
    fn telemetry(&self, networks: usize) -> Vec<Arc<Family>> {
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
        families.extend(cache::telemetry(&[
            CacheFigures {
                name: self.pods.name(),
                hits: self.pods.requests().0,
                misses: self.pods.requests().1,
                entries: pods,
            },
            CacheFigures {
                name: self.summary.name(),
                hits: self.summary.requests().0,
                misses: self.summary.requests().1,
                entries: networks,
            },
        ]));
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

/// `(name, help, value)` of the network families the summary can fill: it has bytes and
/// errors per interface (no packet or drop counts). Help texts as the container collector's.
type NetworkFamily = (&'static str, &'static str, fn(&summary::InterfaceStats) -> Option<u64>);
const NETWORK_FAMILIES: [NetworkFamily; 4] = [
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        |s| s.rx_bytes,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        |s| s.rx_errors,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        |s| s.tx_bytes,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        |s| s.tx_errors,
    ),
];

/// Pod UID → pod-level cgroups under the hierarchy.
fn pod_cgroups(layout: Option<&Layout>) -> HashMap<String, Vec<Discovered>> {
    let mut cgroups: HashMap<String, Vec<Discovered>> = HashMap::new();
    let Some(layout) = layout else { return cgroups };
    for found in discovery::discover(layout.discovery_root(), &[]) {
        if let (Kind::Pod, Some(uid)) = (found.kind, found.pod_uid.clone()) {
            cgroups.entry(uid).or_default().push(found);
        }
    }
    cgroups
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
            let (pods, networks) = tokio::join!(
                within(wait_end, self.refresh_pods(requests_end)),
                within(wait_end, self.refresh_summary(requests_end))
            );
            let mut families = match &networks {
                Ok(networks) => self.render(networks),
                Err(_) => Vec::new(),
            };
            let with_network = networks.as_ref().map_or(0, |n| n.by_pod.len());
            families.extend(self.telemetry(with_network));
            let failures: Vec<KubeletFailure> = [pods.err(), networks.err()].into_iter().flatten().collect();
            Collection {
                families,
                failure: (!failures.is_empty()).then(|| CollectError::from(KubeletFailures(failures))),
            }
        })
    }
}
