//! The collector framework inside a real HTTP server: collectors that sleep past the
//! deadline, fail or panic cost only their own families; excess scrapes are shed at once;
//! readiness waits for first collections; shutdown lets in-flight scrapes finish.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{collector_success, family_names, promtool_check_metrics, python_openmetrics_families, sample_value};
use futures::future::BoxFuture;
use sonde::cli::{self, Config};
use sonde::collector::{CollectError, Collection, Collector, ScrapeContext};
use sonde::exposition::family::{self, FamilyBuilder};
use sonde::server::Server;
use tokio::sync::{Notify, Semaphore, oneshot};

/// Sleeps far past any deadline of these tests.
struct Sleeper;
/// Always fails.
struct Failer;
/// Always panics.
struct Panicker;

impl Collector for Sleeper {
    fn name(&self) -> &'static str {
        "sleeper"
    }
    fn collect(&self, _: ScrapeContext) -> BoxFuture<'_, Collection> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Collection::ok(family::shared(
                FamilyBuilder::gauge("sleeper_value", "never seen")
                    .with_sample(&[], 1.0)
                    .build(),
            ))
        })
    }
}

impl Collector for Failer {
    fn name(&self) -> &'static str {
        "failer"
    }
    fn collect(&self, _: ScrapeContext) -> BoxFuture<'_, Collection> {
        Box::pin(async { Collection::failed(CollectError::other("failing on purpose")) })
    }
}

impl Collector for Panicker {
    fn name(&self) -> &'static str {
        "panicker"
    }
    fn collect(&self, _: ScrapeContext) -> BoxFuture<'_, Collection> {
        Box::pin(async { panic!("panicking on purpose") })
    }
}

/// Holds every collection until released, counting how many are waiting.
struct Gate {
    entered: AtomicUsize,
    arrivals: Notify,
    release: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            entered: AtomicUsize::new(0),
            arrivals: Notify::new(),
            release: Semaphore::new(0),
        }
    }
}

impl Gate {
    async fn wait_for(&self, count: usize) {
        loop {
            let notified = self.arrivals.notified();
            if self.entered.load(Ordering::SeqCst) >= count {
                return;
            }
            notified.await;
        }
    }

    fn open(&self) {
        self.release.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

struct Gated(Arc<Gate>);

impl Collector for Gated {
    fn name(&self) -> &'static str {
        "gated"
    }
    fn collect(&self, _: ScrapeContext) -> BoxFuture<'_, Collection> {
        Box::pin(async move {
            self.0.entered.fetch_add(1, Ordering::SeqCst);
            self.0.arrivals.notify_waiters();
            let Ok(_permit) = self.0.release.acquire().await else {
                return Collection::failed(CollectError::other("the gate closed"));
            };
            Collection::ok(family::shared(
                FamilyBuilder::gauge("gated_value", "Released.")
                    .with_sample(&[], 1.0)
                    .build(),
            ))
        })
    }
}

fn config(extra: &[&str]) -> Config {
    let args = ["sonde", "--web.listen-address=127.0.0.1:0"].iter().chain(extra);
    cli::from_args(args).expect("valid test configuration")
}

/// Starts a server with the given collectors; returns its base URL and a shutdown trigger.
async fn serve(
    config: &Config,
    collectors: Vec<Arc<dyn Collector>>,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let server = Server::bind(&config.web, &config.scrape, collectors)
        .await
        .expect("bind");
    let base = format!("http://{}", server.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        server.run(async { drop(stopped.await) }).await.expect("serve");
    });
    (base, stop, handle)
}

fn host(config: &Config) -> Arc<dyn Collector> {
    Arc::new(sonde::collector::host::HostCollector::new(&config.collectors.paths))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_collectors_cost_only_their_own_families() {
    let config = config(&["--scrape.timeout=10s"]);
    let collectors = vec![host(&config), Arc::new(Sleeper), Arc::new(Failer), Arc::new(Panicker)];
    let (base, _stop, _server) = serve(&config, collectors).await;
    let client = reqwest::Client::new();

    // The scraper's own timeout (1.5 s less the 0.5 s offset) is the deadline, not the 10 s default.
    let response = client
        .get(format!("{base}/metrics"))
        .header("X-Prometheus-Scrape-Timeout-Seconds", "1.5")
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    for (collector, success) in [("host", 1.0), ("sleeper", 0.0), ("failer", 0.0), ("panicker", 0.0)] {
        assert_eq!(
            collector_success(&text, collector),
            Some(success),
            "{collector}:\n{text}"
        );
    }
    let names = family_names(&text);
    assert!(names.contains(&"machine_cpu_cores".to_owned()) && names.contains(&"machine_memory_bytes".to_owned()));
    assert!(!names.contains(&"sleeper_value".to_owned()));
    let slept = sample_value(&text, "sonde_collector_duration_seconds{collector=\"sleeper\"}").expect("duration");
    assert!(
        (1.0..10.0).contains(&slept),
        "the sleeper ran {slept}s; the deadline was 1s"
    );

    // The same scrape in both text formats passes the strict checkers.
    let (ok, complaints) = promtool_check_metrics(text.as_bytes());
    assert!(ok && complaints.trim().is_empty(), "{complaints}");
    let openmetrics = client
        .get(format!("{base}/metrics"))
        .header("Accept", common::OPENMETRICS_ACCEPT)
        .header("X-Prometheus-Scrape-Timeout-Seconds", "1.5")
        .send()
        .await
        .expect("scrape")
        .bytes()
        .await
        .expect("body");
    python_openmetrics_families(&openmetrics).expect("strict OpenMetrics");

    // The landing page shows each collector's last outcome.
    let page = client
        .get(&base)
        .send()
        .await
        .expect("landing page")
        .text()
        .await
        .expect("body");
    for expected in [
        "<td>host</td><td>ok</td>",
        "<td>failer</td><td>failed: failing on purpose</td>",
        "<td>panicker</td><td>failed: panicked: panicking on purpose</td>",
        "<td>sleeper</td><td>failed: missed the scrape deadline of 1.000s</td>",
        env!("CARGO_PKG_VERSION"),
    ] {
        assert!(page.contains(expected), "landing page lacks {expected:?}:\n{page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_over_the_limit_get_503_at_once() {
    let config = config(&["--web.max-requests=2", "--scrape.timeout=60s"]);
    let gate = Arc::new(Gate::default());
    let (base, _stop, _server) = serve(&config, vec![Arc::new(Gated(Arc::clone(&gate)))]).await;
    let client = reqwest::Client::new();
    let url = format!("{base}/metrics");

    // The warm-up collection plus two scrapes are now held inside the collector.
    let held: Vec<_> = (0..2).map(|_| tokio::spawn(client.get(&url).send())).collect();
    gate.wait_for(3).await;

    let started = Instant::now();
    let refused = client.get(&url).send().await.expect("third scrape");
    let latency = started.elapsed();
    assert_eq!(refused.status(), 503);
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "the refusal did not wait for a slot"
    );
    println!(
        "503 for a scrape over --web.max-requests after {:.2} ms",
        latency.as_secs_f64() * 1e3
    );

    // Health checks are not scrapes: they are never shed.
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );

    gate.open();
    for scrape in held {
        let response = scrape.await.expect("task").expect("held scrape");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("body");
        assert_eq!(sample_value(&text, "gated_value"), Some(1.0));
    }
    // With the slots free again, scrapes are served.
    assert_eq!(client.get(&url).send().await.expect("scrape").status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_every_collector_finished_a_first_collection() {
    let config = config(&["--scrape.timeout=60s"]);
    let gate = Arc::new(Gate::default());
    let collectors: Vec<Arc<dyn Collector>> = vec![host(&config), Arc::new(Gated(Arc::clone(&gate)))];
    let (base, _stop, _server) = serve(&config, collectors).await;
    let client = reqwest::Client::new();

    gate.wait_for(1).await;
    // The host collector's first collection runs beside the gated one and may still be under
    // way (on a busy machine): until it ends both are named, then only the gated one.
    let mut body = String::new();
    for _ in 0..500 {
        let not_ready = client.get(format!("{base}/readyz")).send().await.expect("readyz");
        assert_eq!(not_ready.status(), 503);
        body = not_ready.text().await.expect("body");
        if body != "not ready: first collection pending for host, gated\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(body, "not ready: first collection pending for gated\n");
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );

    gate.open();
    let mut status = 0;
    for _ in 0..500 {
        status = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 200, "never became ready after the first collection finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_scrapes_finish() {
    let config = config(&["--scrape.timeout=60s"]);
    let gate = Arc::new(Gate::default());
    let (base, stop, server) = serve(&config, vec![Arc::new(Gated(Arc::clone(&gate)))]).await;
    let client = reqwest::Client::new();

    let in_flight = tokio::spawn(client.get(format!("{base}/metrics")).send());
    gate.wait_for(2).await; // the warm-up and the scrape
    stop.send(()).expect("server is running");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!server.is_finished(), "the server stopped with a scrape in flight");

    gate.open();
    let response = in_flight.await.expect("task").expect("in-flight scrape");
    assert_eq!(response.status(), 200);
    assert_eq!(
        sample_value(&response.text().await.expect("body"), "gated_value"),
        Some(1.0)
    );
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server stops")
        .expect("server task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_request_timeout_gets_503() {
    let config = config(&["--web.request-timeout=1s", "--scrape.timeout=60s"]);
    let gate = Arc::new(Gate::default());
    let (base, _stop, _server) = serve(&config, vec![Arc::new(Gated(Arc::clone(&gate)))]).await;
    let response = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 503);
    assert!(
        gate.entered.load(Ordering::SeqCst) >= 2,
        "the scrape reached the collector"
    );
    gate.open();
}
