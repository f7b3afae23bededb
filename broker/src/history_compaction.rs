//! Keeps the metadata store's history bounded. Every offset commit, group
//! change and log-start move adds a revision to etcd; etcd keeps every old
//! version until it is compacted, and once its database reaches its quota it
//! refuses every write in the cluster. The controller (one broker at a time)
//! compacts, each interval, to the revision it saw one interval earlier, so
//! at least one interval of history stays for watches to resume from (a
//! watch that falls further behind re-reads everything, as after any gap),
//! and defragments a member whose file is mostly free space.

use std::sync::Arc;
use std::time::Duration;

use kafscale_metadata::MetadataStore;

use crate::cluster::ClusterView;

/// Runs for the life of the broker; does nothing with a zero interval.
pub fn spawn(view: Arc<ClusterView>, metadata: MetadataStore, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The revision seen one tick ago: history before it goes next tick.
        let mut previous: Option<i64> = None;
        loop {
            tick.tick().await;
            if view.controller() != Some(view.me.id) {
                previous = None;
                continue;
            }
            if let Some(revision) = previous {
                match metadata.compact_history(revision).await {
                    Ok(report) => {
                        tracing::debug!(revision, defragmented = ?report.defragmented, "metadata history compacted")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, revision, "compacting the metadata store's history failed; will retry")
                    }
                }
            }
            previous = metadata.revision().await.ok();
        }
    });
}
