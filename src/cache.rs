//! A value refreshed at most once per validity window, with single-flight refreshes:
//! concurrent callers during a refresh wait for that one refresh, and nobody refreshes while
//! the last value is still valid. Failed refreshes are not cached. Built on moka.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::proto::MetricFamily;

use crate::exposition::family::FamilyBuilder;

pub struct ValidityCache<V> {
    name: &'static str,
    cache: moka::future::Cache<(), Arc<V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<V: Send + Sync + 'static> ValidityCache<V> {
    /// `name` labels the cache's telemetry (`sonde_cache_*{cache}`).
    pub fn new(name: &'static str, validity: Duration) -> Self {
        Self {
            name,
            cache: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(validity)
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The valid value, or the result of one `refresh` shared by every concurrent caller.
    /// Returns whether this call ran the refresh.
    pub async fn get<E, F>(&self, refresh: F) -> Result<(Arc<V>, bool), Arc<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let entry = self
            .cache
            .entry(())
            .or_try_insert_with(async { refresh.await.map(Arc::new) })
            .await?;
        let fresh = entry.is_fresh();
        if fresh {
            // moka frees a replaced value only when it applies its pending writes, which it
            // does in batches: without this, several windows' values (megabytes each for
            // the container stats) would stay resident at once.
            self.cache.run_pending_tasks().await;
        }
        let counter = if fresh { &self.misses } else { &self.hits };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok((entry.into_value(), fresh))
    }

    /// Drops the value so the next caller refreshes, for sources that know it changed.
    pub async fn invalidate(&self) {
        self.cache.invalidate(&()).await;
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// (hits, misses) since start.
    pub fn requests(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

/// One cache's figures for [`telemetry`].
pub struct CacheFigures {
    pub name: &'static str,
    pub hits: u64,
    pub misses: u64,
    /// Items held (for example containers), not moka entries.
    pub entries: usize,
}

/// `sonde_cache_requests_total{cache,result}` and `sonde_cache_entries{cache}`.
pub fn telemetry(caches: &[CacheFigures]) -> Vec<MetricFamily> {
    let mut requests = FamilyBuilder::counter("sonde_cache_requests_total", "Cache lookups by cache and result.");
    let mut entries = FamilyBuilder::gauge("sonde_cache_entries", "Items held by each cache.");
    for c in caches {
        requests.sample(&[("cache", c.name), ("result", "hit")], c.hits as f64);
        requests.sample(&[("cache", c.name), ("result", "miss")], c.misses as f64);
        entries.sample(&[("cache", c.name)], c.entries as f64);
    }
    [requests.build(), entries.build()].into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_refresh_and_errors_are_not_cached() {
        let cache = Arc::new(ValidityCache::<u64>::new("test", Duration::from_secs(60)));
        let refreshes = Arc::new(AtomicU64::new(0));
        let callers = (0..50).map(|_| {
            let (cache, refreshes) = (Arc::clone(&cache), Arc::clone(&refreshes));
            tokio::spawn(async move {
                cache
                    .get(async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, String>(refreshes.fetch_add(1, Ordering::SeqCst) + 100)
                    })
                    .await
                    .map(|(v, _)| *v)
            })
        });
        for value in futures::future::join_all(callers).await {
            assert_eq!(value.expect("task").expect("value"), 100);
        }
        assert_eq!(refreshes.load(Ordering::SeqCst), 1);
        assert_eq!(cache.requests(), (49, 1));

        cache.invalidate().await;
        let failed = cache.get(async { Err::<u64, _>("source down".to_owned()) }).await;
        assert_eq!(
            failed.map(|(v, _)| *v).map_err(|e| (*e).clone()),
            Err("source down".to_owned())
        );
        let (value, fresh) = cache.get(async { Ok::<_, String>(7) }).await.expect("refreshes again");
        assert_eq!((*value, fresh), (7, true));
    }

    /// A value replaced after its window is freed when the new one is in: the container
    /// stats are megabytes, and moka alone keeps replaced values until it next tidies up.
    #[tokio::test]
    async fn a_replaced_value_is_freed_at_once() {
        let cache = ValidityCache::<Arc<()>>::new("test", Duration::from_millis(20));
        let tracked = Arc::new(());
        let held = Arc::clone(&tracked);
        cache.get(async { Ok::<_, String>(held) }).await.expect("value");
        assert_eq!(Arc::strong_count(&tracked), 2, "the cache holds the value");
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let (_, fresh) = cache.get(async { Ok::<_, String>(Arc::new(())) }).await.expect("value");
            assert!(fresh);
        }
        assert_eq!(Arc::strong_count(&tracked), 1, "replaced values are dropped, not kept");
    }

    #[tokio::test]
    async fn a_value_expires_after_its_window() {
        let cache = ValidityCache::<u64>::new("test", Duration::from_millis(50));
        let (_, fresh) = cache.get(async { Ok::<_, String>(1) }).await.expect("value");
        assert!(fresh);
        let (_, fresh) = cache.get(async { Ok::<_, String>(2) }).await.expect("value");
        assert!(!fresh);
        tokio::time::sleep(Duration::from_millis(120)).await;
        let (value, fresh) = cache.get(async { Ok::<_, String>(3) }).await.expect("value");
        assert_eq!((*value, fresh), (3, true));
    }
}
