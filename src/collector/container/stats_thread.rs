//! The one thread that reads and renders the containers' stats, fed through a channel.
//!
//! A thread of its own, always the same one, so the allocator serves every read from the same
//! arena: on the blocking pool's changing threads, each kept the megabytes of an earlier
//! read, and the peak RSS rose from 32 to 43 MiB. Fed directly rather than through a
//! thread pool: a one-thread rayon pool, reached from the blocking pool, woke two threads per
//! read, and after each read its worker yielded the CPU 33 times (`sched_yield`, its spin
//! before sleeping) while the answer was being sent.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use crate::collector::CollectError;

type Job = Box<dyn FnOnce() + Send>;

pub(super) struct StatsThread {
    jobs: mpsc::Sender<Job>,
}

impl StatsThread {
    pub(super) fn start(name: &str) -> std::io::Result<StatsThread> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            for job in queue {
                job();
            }
        })?;
        Ok(StatsThread { jobs })
    }

    /// Runs `work` on the thread and waits for it without blocking the caller's async
    /// worker. The work runs to its end even if the caller stops waiting (a scrape whose
    /// client went away): its result still fills the cache.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: &'static str,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CollectError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The receiver is gone when the caller stopped waiting; the work is done anyway.
            let _ = answer.send(std::panic::catch_unwind(AssertUnwindSafe(job)));
        });
        let stopped = |reason: &str| CollectError::Thread {
            work,
            reason: reason.to_owned(),
        };
        self.jobs.send(job).map_err(|_| stopped("its thread has stopped"))?;
        match answered.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => Err(stopped(&panic_message(panic.as_ref()))),
            Err(_) => Err(stopped("its thread has stopped")),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("panicked: {message}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_named_thread_and_a_panic_costs_only_its_own() {
        let thread = StatsThread::start("sonde-test-st").expect("starts");
        let name = thread
            .run("naming", || std::thread::current().name().map(str::to_owned))
            .await
            .expect("runs");
        assert_eq!(name.as_deref(), Some("sonde-test-st"));
        let error = thread
            .run("failing", || -> u32 { panic!("boom") })
            .await
            .expect_err("the panic is an error");
        assert_eq!(error.to_string(), "failing: panicked: boom");
        assert_eq!(thread.run("after", || 7).await.expect("still serves"), 7);
    }

    #[tokio::test]
    async fn a_job_whose_caller_stopped_waiting_still_runs_to_its_end() {
        let thread = StatsThread::start("sonde-test-st").expect("starts");
        let (done, release) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (job_done, job_release) = (Arc::clone(&done), Arc::clone(&release));
        let waiting = thread.run("abandoned", move || {
            while !job_release.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            job_done.store(true, Ordering::Release);
        });
        // Sent, then abandoned before its answer.
        let abandoned = tokio::time::timeout(std::time::Duration::from_millis(20), waiting).await;
        assert!(abandoned.is_err(), "the job was held back, so no answer came");
        release.store(true, Ordering::Release);
        // Jobs run in order: once the next one answers, the abandoned one has finished.
        thread.run("next", || ()).await.expect("runs");
        assert!(done.load(Ordering::Acquire));
    }
}
