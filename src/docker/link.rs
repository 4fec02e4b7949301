//! Whether the engine answers now, and why not when it does not.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::sync;
use tokio::sync::watch;

/// The state of the link to the engine, written by the watcher.
#[derive(Debug)]
pub struct Link {
    connected: AtomicBool,
    last_error: Mutex<String>,
    /// Events applied to the container map since start.
    events: AtomicU64,
    /// Becomes true once the first attempt to reach the engine has ended either way.
    attempted: watch::Sender<bool>,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            connected: AtomicBool::new(false),
            last_error: Mutex::new("not connected yet".to_owned()),
            events: AtomicU64::new(0),
            attempted: watch::Sender::new(false),
        }
    }
}

impl Link {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The engine listed its containers and its event stream is open. Returns whether this
    /// is a change.
    pub fn up(&self) -> bool {
        let changed = !self.connected.swap(true, Ordering::Relaxed);
        self.attempted.send_replace(true);
        changed
    }

    /// The engine could not be reached or went away. Returns whether this is a change.
    pub fn down(&self, error: String) -> bool {
        *sync::lock(&self.last_error) = error;
        let changed = self.connected.swap(false, Ordering::Relaxed);
        self.attempted.send_replace(true);
        changed
    }

    pub fn last_error(&self) -> String {
        sync::lock(&self.last_error).clone()
    }

    pub fn event_applied(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Waits until the first attempt to reach the engine has ended.
    pub async fn first_attempt(&self) {
        let mut rx = self.attempted.subscribe();
        let _ = rx.wait_for(|attempted| *attempted).await;
    }
}
