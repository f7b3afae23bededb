//! Maintenance: retention and the log-start moves of DeleteRecords, segment
//! merging, the cleaning of compacted topics, intake compaction and its
//! clean-up, topic deletion and the etcd history's compaction.
//!
//! The partition jobs work through [`Maintenance`]: the topics, the cluster
//! view, the metadata store and the maintenance side of object storage,
//! instead of the whole broker.
//!
//! Maintenance of a partition runs one step at a time through
//! [`Maintenance::step`]: only on the leader, only after it has led for one
//! session timeout, and each step ends within half a session timeout. A
//! broker that loses the partition finishes its last step before the new
//! leader starts, so two brokers never maintain one partition at once.

pub mod history_compaction;
pub mod intake_compaction;
pub mod log_cleaning;
pub mod quiet_partitions;
pub mod retention;
pub mod segment_merge;
pub mod topic_deletion;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafscale_flusher_protocol::{MaintenanceStorage, RemoteError};
use kafscale_metadata::MetadataStore;

use crate::cluster::ClusterView;
use crate::config::MergeSettings;
use crate::maintenance::intake_compaction::CompactionSettings;
use crate::metrics::BrokerMetrics;
use crate::partitions::log::{PartitionLog, WritePath};
use crate::partitions::topics::TopicRegistry;
use crate::tasks::BackgroundTasks;

/// What the jobs need of the broker's configuration.
#[derive(Debug, Clone)]
pub struct MaintenanceSettings {
    pub session_timeout: Duration,
    pub merge: MergeSettings,
    pub compaction: CompactionSettings,
    pub write_path: WritePath,
    pub retention_check_interval: Duration,
    /// How often compacted partitions are checked for cleaning (0: never).
    pub cleaner_interval: Duration,
}

pub struct Maintenance {
    pub topics: Arc<TopicRegistry>,
    pub cluster: Arc<ClusterView>,
    pub metadata: MetadataStore,
    pub storage: Arc<dyn MaintenanceStorage>,
    pub settings: MaintenanceSettings,
    pub metrics: Arc<BrokerMetrics>,
    /// Serialises this broker's segment deletes (retention, DeleteRecords)
    /// and merge steps, so neither acts on a listing the other has changed.
    segment_lock: tokio::sync::Mutex<()>,
}

impl Maintenance {
    pub fn new(
        topics: Arc<TopicRegistry>,
        cluster: Arc<ClusterView>,
        metadata: MetadataStore,
        storage: Arc<dyn MaintenanceStorage>,
        settings: MaintenanceSettings,
        metrics: Arc<BrokerMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            topics,
            cluster,
            metadata,
            storage,
            settings,
            metrics,
            segment_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The deadline (Unix ms) for one maintenance step of `log`, or `None`
    /// when this broker must not change the partition's objects now: it does
    /// not lead it, has led it for less than a session timeout, or has no
    /// valid session. Checked afresh before every step, with the lock held.
    pub fn deadline(&self, log: &PartitionLog) -> Option<i64> {
        log.lead()?;
        crate::cluster::fencing::maintenance_deadline(
            &self.cluster,
            self.settings.session_timeout,
            log.led_for(),
        )
    }

    /// Runs one maintenance step of `log` under the maintenance lock: `step`
    /// is given the step's deadline. `None` when this broker may not change
    /// the partition's objects now (see [`Self::deadline`]).
    pub async fn step<T, F>(
        &self,
        log: &PartitionLog,
        step: impl FnOnce(i64) -> F,
    ) -> Option<Result<T, RemoteError>>
    where
        F: Future<Output = Result<T, RemoteError>>,
    {
        let _maintenance = self.segment_lock.lock().await;
        let not_after_ms = self.deadline(log)?;
        Some(step(not_after_ms).await)
    }

    /// Starts retention, merging, cleaning and (on the intake path) intake
    /// compaction and its clean-up.
    pub fn spawn_jobs(self: &Arc<Self>, tasks: &BackgroundTasks) {
        crate::maintenance::retention::spawn(self.clone(), tasks);
        crate::maintenance::segment_merge::spawn(self.clone(), tasks);
        crate::maintenance::log_cleaning::spawn(self.clone(), tasks);
        crate::maintenance::intake_compaction::spawn(self.clone(), tasks);
    }
}
