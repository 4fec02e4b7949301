//! One scrape: every enabled collector runs concurrently under the scrape deadline; each
//! outcome is recorded as `sonde_collector_duration_seconds` and `sonde_collector_success`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use tokio::time::Instant;

use crate::collector::{CollectError, Collection, Collector, ScrapeContext};
use crate::exposition::family::{self, Family, FamilyBuilder};
use crate::self_metrics::ExporterMetrics;
use crate::settings::{self, InvalidValue};
use crate::sync;

/// The scrape deadline's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrapeConfig {
    /// Scrape deadline when the scraper sends no `X-Prometheus-Scrape-Timeout-Seconds`.
    pub timeout: Duration,
    /// Taken off the scraper's own timeout so the answer arrives before it gives up.
    pub timeout_offset: Duration,
}

/// The `--scrape.*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ScrapeArgs {
    /// Scrape deadline when the scraper sends no X-Prometheus-Scrape-Timeout-Seconds
    #[arg(long = "scrape.timeout", value_name = "DURATION", default_value = "10s")]
    scrape_timeout: String,
    /// Taken off the scraper's X-Prometheus-Scrape-Timeout-Seconds
    #[arg(long = "scrape.timeout-offset", value_name = "DURATION", default_value = "500ms")]
    scrape_timeout_offset: String,
}

impl ScrapeArgs {
    pub fn resolve(&self) -> Result<ScrapeConfig, InvalidValue> {
        Ok(ScrapeConfig {
            timeout: settings::duration("scrape.timeout", &self.scrape_timeout)?,
            timeout_offset: settings::duration("scrape.timeout-offset", &self.scrape_timeout_offset)?,
        })
    }
}

/// What the last collection of one collector came to; shown on the landing page.
#[derive(Debug, Clone, Default)]
pub struct CollectorStatus {
    /// Collections finished (successful or not) since start.
    pub collections: u64,
    pub success: bool,
    pub duration: Duration,
    pub error: Option<String>,
    pub finished_at: Option<SystemTime>,
}

struct CollectorEntry {
    collector: Arc<dyn Collector>,
    status: Mutex<CollectorStatus>,
}

/// Runs the enabled collectors and assembles the families of a scrape.
pub struct Scraper {
    entries: Vec<CollectorEntry>,
    exporter: ExporterMetrics,
}

impl Scraper {
    pub fn new(collectors: Vec<Arc<dyn Collector>>) -> Self {
        Self {
            entries: collectors
                .into_iter()
                .map(|collector| CollectorEntry {
                    collector,
                    status: Mutex::default(),
                })
                .collect(),
            exporter: ExporterMetrics::new(),
        }
    }

    /// Collects everything within `timeout`. Never fails: a collector that errors, panics or
    /// misses the deadline contributes only `sonde_collector_success{collector} 0`.
    pub async fn scrape(&self, timeout: Duration) -> Vec<Arc<Family>> {
        let ctx = ScrapeContext::with_timeout(timeout);
        // Each status is recorded as soon as its collector finishes, not after the slowest.
        let outcomes = join_all(self.entries.iter().map(|entry| async move {
            let (elapsed, collection) = run(Arc::clone(&entry.collector), ctx).await;
            let error = collection.failure.as_ref().map(ToString::to_string);
            record(entry.collector.name(), &entry.status, elapsed, error.as_ref());
            (elapsed, collection)
        }))
        .await;

        let mut duration = FamilyBuilder::gauge(
            "sonde_collector_duration_seconds",
            "Duration of a collector's collection in this scrape.",
        );
        let mut success = FamilyBuilder::gauge(
            "sonde_collector_success",
            "Whether a collector succeeded in this scrape (1) or failed, panicked or missed the deadline (0).",
        );
        let mut merged = FamiliesByName::default();
        for (entry, (elapsed, collection)) in self.entries.iter().zip(outcomes) {
            let name = entry.collector.name();
            duration.sample(&[("collector", name)], elapsed.as_secs_f64());
            let succeeded = collection.failure.is_none();
            success.sample(&[("collector", name)], if succeeded { 1.0 } else { 0.0 });
            merged.extend(collection.families);
        }
        merged.extend(family::shared(duration.build().into_iter().chain(success.build())));
        merged.extend(family::shared(self.exporter.collect()));
        merged.into_sorted()
    }

    /// The last status of every enabled collector, in configuration order.
    pub fn statuses(&self) -> Vec<(&'static str, CollectorStatus)> {
        self.entries
            .iter()
            .map(|e| (e.collector.name(), sync::lock(&e.status).clone()))
            .collect()
    }

    /// The enabled collectors that have not finished a first collection yet.
    pub fn pending(&self) -> Vec<&'static str> {
        self.entries
            .iter()
            .filter(|e| sync::lock(&e.status).collections == 0)
            .map(|e| e.collector.name())
            .collect()
    }
}

/// Why the scrape stopped waiting for a collector.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("cancelled")]
    Cancelled,
    #[error("missed the scrape deadline of {0:.3}s")]
    MissedDeadline(f64),
}

/// Runs one collector on its own task, so that a panic is caught and a missed deadline
/// cancels it; returns how long it took and what it came to.
async fn run(collector: Arc<dyn Collector>, ctx: ScrapeContext) -> (Duration, Collection) {
    let start = Instant::now();
    let mut task = tokio::spawn(async move { collector.collect(ctx).await });
    let interrupted = match tokio::time::timeout_at(ctx.deadline, &mut task).await {
        Ok(Ok(collection)) => return (start.elapsed(), collection),
        Ok(Err(join)) if join.is_panic() => Interrupted::Panicked(panic_message(join.into_panic())),
        Ok(Err(_)) => Interrupted::Cancelled,
        Err(_) => {
            task.abort();
            Interrupted::MissedDeadline(ctx.deadline.saturating_duration_since(start).as_secs_f64())
        }
    };
    (start.elapsed(), Collection::failed(CollectError::other(interrupted)))
}

/// Updates a collector's status and logs only when its success changes (or it fails first).
fn record(name: &str, status: &Mutex<CollectorStatus>, elapsed: Duration, error: Option<&String>) {
    let mut status = sync::lock(status);
    let was_ok = status.collections == 0 || status.success;
    match (was_ok, error) {
        (true, Some(error)) => tracing::warn!(collector = name, %error, "collector failed"),
        (false, None) => tracing::info!(collector = name, "collector recovered"),
        _ => {}
    }
    status.collections += 1;
    status.success = error.is_none();
    status.duration = elapsed;
    status.error = error.cloned();
    status.finished_at = Some(SystemTime::now());
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".to_owned())
}

/// FamiliesByName keyed by name, so two sources of one family become one family in the output.
#[derive(Default)]
struct FamiliesByName(BTreeMap<String, Vec<Arc<Family>>>);

impl FamiliesByName {
    fn extend(&mut self, families: impl IntoIterator<Item = Arc<Family>>) {
        for family in families {
            self.0.entry(family.name().to_owned()).or_default().push(family);
        }
    }

    fn into_sorted(self) -> Vec<Arc<Family>> {
        self.0
            .into_values()
            .filter_map(|mut parts| {
                if parts.len() == 1 {
                    return parts.pop();
                }
                // Several sources of one name: a new family with all their samples.
                let mut merged = parts[0].model().clone();
                for part in &parts[1..] {
                    if part.model().get_field_type() == merged.get_field_type() {
                        merged.mut_metric().extend_from_slice(part.model().get_metric());
                    } else {
                        tracing::debug!(family = part.name(), "dropping a family redefined with another type");
                    }
                }
                Some(Family::new(merged))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::future::BoxFuture;

    use super::*;

    /// Fails while `failing` is set.
    struct Flaky {
        failing: Arc<AtomicBool>,
    }

    impl Collector for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn collect(&self, _: ScrapeContext) -> BoxFuture<'_, Collection> {
            let failing = self.failing.load(Ordering::SeqCst);
            Box::pin(async move {
                if failing {
                    Collection::failed(CollectError::other("source unavailable"))
                } else {
                    Collection::ok(Vec::new())
                }
            })
        }
    }

    /// Collects log output in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            sync::lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn failures_are_logged_when_the_state_changes_not_on_every_scrape() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let failing = Arc::new(AtomicBool::new(true));
        let scraper = Scraper::new(vec![Arc::new(Flaky {
            failing: Arc::clone(&failing),
        })]);
        for phase in [true, true, true, false, false, true, true] {
            failing.store(phase, Ordering::SeqCst);
            scraper.scrape(Duration::from_secs(5)).await;
        }
        let log = String::from_utf8(sync::lock(&captured.0).clone()).expect("utf-8");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        assert!(
            lines[0].contains("WARN") && lines[0].contains("collector failed"),
            "{log}"
        );
        assert!(lines[0].contains("source unavailable"), "{log}");
        assert!(
            lines[1].contains("INFO") && lines[1].contains("collector recovered"),
            "{log}"
        );
        assert!(
            lines[2].contains("WARN") && lines[2].contains("collector failed"),
            "{log}"
        );
        let (name, status) = &scraper.statuses()[0];
        assert_eq!((*name, status.collections, status.success), ("flaky", 7, false));
    }

    #[tokio::test]
    async fn a_partial_failure_serves_its_families_and_reports_failure() {
        struct Degraded;
        impl Collector for Degraded {
            fn name(&self) -> &'static str {
                "degraded"
            }
            fn collect(&self, _: ScrapeContext) -> BoxFuture<'_, Collection> {
                let telemetry = FamilyBuilder::counter("zz_requests_total", "h")
                    .with_sample(&[("code", "500")], 1.0)
                    .build();
                Box::pin(async move {
                    Collection {
                        families: family::shared(telemetry),
                        failure: Some(CollectError::other("source answered 500")),
                    }
                })
            }
        }
        let scraper = Scraper::new(vec![Arc::new(Degraded)]);
        let families = scraper.scrape(Duration::from_secs(5)).await;
        assert!(families.iter().any(|f| f.name() == "zz_requests_total"));
        let success = families
            .iter()
            .find(|f| f.name() == "sonde_collector_success")
            .expect("success family");
        assert_eq!(success.model().get_metric()[0].get_gauge().value(), 0.0);
        let (_, status) = &scraper.statuses()[0];
        assert_eq!(status.error.as_deref(), Some("source answered 500"));
    }

    #[tokio::test]
    async fn families_of_one_name_are_merged_and_sorted() {
        struct Two;
        impl Collector for Two {
            fn name(&self) -> &'static str {
                "two"
            }
            fn collect(&self, _: ScrapeContext) -> BoxFuture<'_, Collection> {
                let a = FamilyBuilder::gauge("zz_shared", "h")
                    .with_sample(&[("part", "a")], 1.0)
                    .build();
                let b = FamilyBuilder::gauge("zz_shared", "h")
                    .with_sample(&[("part", "b")], 2.0)
                    .build();
                let c = FamilyBuilder::counter("aa_first_total", "h")
                    .with_sample(&[], 3.0)
                    .build();
                Box::pin(async move { Collection::ok(family::shared(a.into_iter().chain(b).chain(c))) })
            }
        }
        let families = Scraper::new(vec![Arc::new(Two)]).scrape(Duration::from_secs(5)).await;
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        let shared = families
            .iter()
            .find(|f| f.name() == "zz_shared")
            .expect("merged family");
        assert_eq!(shared.model().get_metric().len(), 2);
        assert_eq!(names.iter().filter(|n| **n == "zz_shared").count(), 1);
    }
}
