//! Writable layers' disk usage, measured off the scrape path. cAdvisor runs a `du` per
//! container every minute (its most reported CPU cost); here one background thread, owned
//! by the collector, walks the layers the inventory names, each at most once per window,
//! reading at most a set number of directory entries per second however many layers there
//! are. A scrape only looks up the last figure. A layer that cannot be walked keeps its
//! last figure and is counted as failed; nothing else is affected.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::disk::under_root;
use crate::disk::walk::{Usage, Walk};
use crate::exposition::family::FamilyBuilder;
use crate::identity::metadata::WritableLayer;
use crate::sync;

/// How often the thread wakes to spend its share of the entries per second.
const TICK: Duration = Duration::from_millis(100);

/// A layer's last measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// The upper directory's and the container directory's bytes, as cAdvisor adds them.
    pub bytes: u64,
    /// Entries of the upper directory (cAdvisor's `container_fs_inodes_total`).
    pub inodes: u64,
    /// `major:minor` of the upper directory's filesystem.
    pub device: (u64, u64),
}

pub struct LayerUsage {
    shared: Arc<Shared>,
}

struct Shared {
    window: Duration,
    files_per_second: u64,
    rootfs: PathBuf,
    state: Mutex<State>,
    done: AtomicU64,
    failed: AtomicU64,
    entries: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The layers of the last inventory.
    wanted: Vec<Arc<WritableLayer>>,
    measured: HashMap<Arc<WritableLayer>, (Measured, Instant)>,
    /// When a walk of the layer last failed: it is tried again after a window.
    failed_at: HashMap<Arc<WritableLayer>, Instant>,
    thread_started: bool,
}

/// A layer being measured: its upper directory, then its container directory.
struct LayerWalk {
    layer: Arc<WritableLayer>,
    walk: Walk,
    upper: Option<(Usage, (u64, u64))>,
}

impl LayerUsage {
    pub fn new(window: Duration, files_per_second: u64, rootfs: PathBuf) -> Self {
        Self {
            shared: Arc::new(Shared {
                window,
                files_per_second,
                rootfs,
                state: Mutex::default(),
                done: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                entries: AtomicU64::new(0),
            }),
        }
    }

    /// The layers to measure from now on (the inventory's); others are forgotten.
    pub fn set_wanted(&self, layers: Vec<Arc<WritableLayer>>) {
        let mut state = sync::lock(&self.shared.state);
        state.measured.retain(|l, _| layers.contains(l));
        state.failed_at.retain(|l, _| layers.contains(l));
        state.wanted = layers;
        if !state.wanted.is_empty() && !state.thread_started && self.shared.files_per_second > 0 {
            let weak = Arc::downgrade(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("sonde-fs-usage".into())
                .spawn(move || run(weak));
            match spawned {
                Ok(_) => state.thread_started = true,
                Err(error) => tracing::warn!(%error, "starting the writable-layer usage thread"),
            }
        }
    }

    /// The layer's last measure; `None` before its first walk ended.
    pub fn get(&self, layer: &WritableLayer) -> Option<Measured> {
        sync::lock(&self.shared.state).measured.get(layer).map(|(m, _)| *m)
    }

    /// The thread's own telemetry.
    pub fn families(&self) -> impl Iterator<Item = prometheus::proto::MetricFamily> {
        let s = &self.shared;
        let walks = FamilyBuilder::counter(
            "sonde_container_fs_usage_walks_total",
            "Background walks of containers' writable layers (container_fs_usage_bytes), by outcome.",
        )
        .with_sample(&[("outcome", "done")], s.done.load(Ordering::Relaxed) as f64)
        .with_sample(&[("outcome", "failed")], s.failed.load(Ordering::Relaxed) as f64);
        let entries = FamilyBuilder::counter(
            "sonde_container_fs_usage_entries_total",
            "Directory entries the background walks of writable layers have read.",
        )
        .with_sample(&[], s.entries.load(Ordering::Relaxed) as f64);
        [walks.build(), entries.build()].into_iter().flatten()
    }
}

/// The thread: every tick, spend a tick's share of the entry budget on the current walk,
/// starting the next due layer's when none is under way. Ends with the collector.
fn run(shared: Weak<Shared>) {
    let mut current: Option<LayerWalk> = None;
    loop {
        std::thread::sleep(TICK);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut budget = (shared.files_per_second / (1000 / TICK.as_millis() as u64)).max(1);
        while budget > 0 {
            let Some(walk) = current.take().or_else(|| shared.next_due()) else {
                break;
            };
            let before = budget;
            current = shared.advance(walk, &mut budget);
            shared.entries.fetch_add(before - budget, Ordering::Relaxed);
        }
    }
}

impl Shared {
    /// The wanted layer measured longest ago (or never), when its window has passed.
    fn next_due(&self) -> Option<LayerWalk> {
        let now = Instant::now();
        let layer = {
            let state = sync::lock(&self.state);
            let due = |l: &Arc<WritableLayer>| {
                let last = state
                    .measured
                    .get(l)
                    .map(|(_, at)| *at)
                    .into_iter()
                    .chain(state.failed_at.get(l).copied())
                    .max();
                last.is_none_or(|at| now.duration_since(at) >= self.window)
            };
            state
                .wanted
                .iter()
                .filter(|l| due(l))
                .min_by_key(|l| state.measured.get(*l).map(|(_, at)| *at))
                .cloned()?
        };
        match Walk::start(&under_root(&self.rootfs, &layer.upper_dir)) {
            Ok(walk) => Some(LayerWalk {
                layer,
                walk,
                upper: None,
            }),
            Err(error) => {
                self.fail(&layer, &error);
                None
            }
        }
    }

    /// Walks on; the walk when it is not finished.
    fn advance(&self, mut lw: LayerWalk, budget: &mut u64) -> Option<LayerWalk> {
        let usage = match lw.walk.step(budget) {
            Ok(Some(usage)) => usage,
            Ok(None) => return Some(lw),
            Err(error) => {
                self.fail(&lw.layer, &error);
                return None;
            }
        };
        let (upper, device) = match lw.upper {
            Some(upper) => upper,
            None => {
                let upper = (usage, lw.walk.device());
                // Then the container's own directory (logs, hostname), which cAdvisor adds.
                if let Some(dir) = &lw.layer.container_dir {
                    match Walk::start(&under_root(&self.rootfs, dir)) {
                        Ok(walk) => {
                            return Some(LayerWalk {
                                layer: lw.layer,
                                walk,
                                upper: Some(upper),
                            });
                        }
                        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                        Err(error) => self.fail(&lw.layer, &error),
                    }
                }
                self.publish(&lw.layer, upper.0, Usage::default(), upper.1);
                return None;
            }
        };
        self.publish(&lw.layer, upper, usage, device);
        None
    }

    fn publish(&self, layer: &Arc<WritableLayer>, upper: Usage, other: Usage, device: (u64, u64)) {
        self.done.fetch_add(1, Ordering::Relaxed);
        let mut state = sync::lock(&self.state);
        if state.wanted.contains(layer) {
            let measured = Measured {
                bytes: upper.bytes.saturating_add(other.bytes),
                inodes: upper.inodes,
                device,
            };
            state.measured.insert(Arc::clone(layer), (measured, Instant::now()));
        }
    }

    fn fail(&self, layer: &Arc<WritableLayer>, error: &std::io::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(layer = %layer.upper_dir.display(), %error, "measuring a writable layer");
        let mut state = sync::lock(&self.state);
        if state.wanted.contains(layer) {
            state.failed_at.insert(Arc::clone(layer), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_measured_in_the_background_and_forgotten_when_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let upper = dir.path().join("diff");
        let own = dir.path().join("own");
        std::fs::create_dir_all(upper.join("etc")).expect("mkdir");
        std::fs::create_dir_all(&own).expect("mkdir");
        std::fs::write(upper.join("etc/file"), vec![7u8; 1 << 20]).expect("write");
        std::fs::write(own.join("log"), vec![7u8; 10_000]).expect("write");
        let du = |p: &std::path::Path| {
            let mut budget = u64::MAX;
            Walk::start(p)
                .expect("start")
                .step(&mut budget)
                .expect("walk")
                .expect("done")
        };
        let layer = Arc::new(WritableLayer {
            upper_dir: upper.clone(),
            container_dir: Some(own.clone()),
        });
        let usage = LayerUsage::new(Duration::from_secs(60), 50, "/".into());
        assert_eq!(usage.get(&layer), None, "nothing before the first walk");
        usage.set_wanted(vec![Arc::clone(&layer)]);
        let start = Instant::now();
        let measured = loop {
            if let Some(m) = usage.get(&layer) {
                break m;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "never measured");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(measured.bytes, du(&upper).bytes + du(&own).bytes);
        assert_eq!(measured.inodes, 3);
        assert_eq!(measured.device, crate::disk::device_of(&upper).expect("stat"));
        assert!(measured.bytes >= (1 << 20) + 10_000);

        usage.set_wanted(Vec::new());
        assert_eq!(usage.get(&layer), None);

        // A layer that cannot be walked counts as failed and has no figure.
        let gone = Arc::new(WritableLayer {
            upper_dir: dir.path().join("absent"),
            container_dir: None,
        });
        usage.set_wanted(vec![Arc::clone(&gone)]);
        let start = Instant::now();
        while usage.shared.failed.load(Ordering::Relaxed) == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "never failed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(usage.get(&gone), None);
    }
}
