//! The broker's background tasks: every loop and job the broker starts is
//! spawned here, so shutdown can stop them all and wait until they have.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A handle to the broker's background tasks; clones share them.
#[derive(Clone, Default)]
pub struct BackgroundTasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl BackgroundTasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `job` until it ends or the tasks are stopped. Stopping drops the
    /// job at an await point: jobs are written to be safe there (every step
    /// against etcd or object storage survives a crash at any point, so it
    /// survives being dropped).
    pub fn spawn<F>(&self, name: &'static str, job: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => tracing::debug!(task = name, "background task stopped"),
                _ = job => {}
            }
        });
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Whether [`stop`](Self::stop) has been called.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Stops every task and waits (up to `timeout`) until each has ended;
    /// returns how many had not. Tasks spawned afterwards stop at once.
    pub async fn stop(&self, timeout: Duration) -> usize {
        self.stop.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(timeout, self.tracker.wait()).await;
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_loops_and_waits_for_them() {
        let tasks = BackgroundTasks::new();
        let (ended_tx, mut ended) = tokio::sync::mpsc::channel::<()>(1);
        tasks.spawn("forever", async move {
            let _held = ended_tx;
            std::future::pending::<()>().await
        });
        tasks.spawn("short", async {});
        tokio::task::yield_now().await;
        assert_eq!(tasks.stop(Duration::from_secs(1)).await, 0);
        // The loop's state was dropped with it.
        assert!(ended.recv().await.is_none());
        tasks.spawn("late", std::future::pending());
        tokio::task::yield_now().await;
        assert_eq!(tasks.stop(Duration::from_secs(1)).await, 0);
    }
}
