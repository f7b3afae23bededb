//! The Kafscale broker: the Kafka wire protocol served from stateless,
//! in-memory partition logs whose durable copy lives in object storage behind
//! the sidecar flusher.

pub mod cluster;
pub mod config;
pub mod groups;
pub mod kafka;
pub mod maintenance;
pub mod metrics;
pub mod object_storage;
pub mod ops_api;
pub mod partitions;
pub mod security;
pub mod storage_health;
pub mod tasks;

use std::sync::Arc;

use kafscale_flusher_protocol::ObjectStorage;
use kafscale_metadata::{LeadershipKey, MetadataStore};

pub use config::BrokerConfig;
use partitions::topics::TopicRegistry;

/// The wall clock in Unix milliseconds (0 before 1970), for timestamps that
/// leave the process (LogAppendTime, etcd records).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long shutdown waits for background tasks to end once they are told
/// to: each ends at its next await point, so this is rarely reached.
const BACKGROUND_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Everything a request handler can reach.
pub struct Broker {
    pub config: BrokerConfig,
    pub metadata: MetadataStore,
    /// Object storage, through the flusher: the one door every partition
    /// log and maintenance job asks through.
    pub object_storage: Arc<dyn ObjectStorage>,
    pub topics: Arc<TopicRegistry>,
    pub producer_ids: partitions::producer_ids::ProducerIdAllocator,
    pub groups: Arc<groups::GroupCoordinator>,
    pub metrics: Arc<metrics::BrokerMetrics>,
    pub storage_health: Arc<storage_health::StorageHealth>,
    pub cluster: Arc<cluster::ClusterView>,
    pub record_validator: partitions::record_validation::RecordValidator,
    /// Open Kafka connections, by client address.
    pub connections: Arc<kafka::listener_limits::ConnectionCounter>,
    /// Bytes of requests read and not yet answered (all connections).
    pub request_memory: kafka::listener_limits::BytePool,
    /// The same, for frames of clients not authenticated yet: kept apart,
    /// so they never hold what authenticated clients need.
    pub unauthenticated_request_memory: kafka::listener_limits::BytePool,
    /// Bytes of fetch responses read and not yet written (all connections).
    pub fetch_memory: kafka::listener_limits::BytePool,
    /// ACL decisions (everything allowed without an authorizer).
    pub authorizer: Arc<security::authorizer::Authorizer>,
    /// What retention, DeleteRecords, merging and intake compaction work
    /// through.
    pub maintenance: Arc<maintenance::Maintenance>,
    /// Every background task of the broker, stopped by [`Broker::shutdown`].
    pub tasks: tasks::BackgroundTasks,
}

impl Broker {
    /// Assembles the broker from its services, each started in order: the
    /// cluster view and session, the topic cache (following its watch), the
    /// group coordinator, storage health, the controller, etcd history
    /// compaction, the authorizer, then leadership sync and topic deletions.
    /// The program then starts the maintenance jobs and the listeners;
    /// [`Broker::shutdown`] undoes it in reverse.
    pub async fn start(
        config: BrokerConfig,
        metadata: MetadataStore,
        storage: object_storage::StorageAccess,
        metrics: Arc<metrics::BrokerMetrics>,
    ) -> Result<Arc<Self>, kafscale_metadata::MetadataError> {
        let me = kafscale_metadata::BrokerRecord {
            id: config.node_id,
            host: config.advertised_host.clone(),
            port: config.advertised_port,
            draining: false,
            listeners: config.advertised_listeners.clone(),
        };
        let tasks = tasks::BackgroundTasks::new();
        let cluster =
            cluster::ClusterView::start(metadata.clone(), me, config.session_timeout, &tasks)
                .await?;
        let (topics, closed_topics) = TopicRegistry::new(
            metadata.clone(),
            storage.requests.clone(),
            config.log.clone(),
            metrics.clone(),
            cluster.clone(),
            tasks.clone(),
        );
        topics.spawn_watch(&tasks);
        topics.resync().await?;
        let groups = groups::GroupCoordinator::new(
            metadata.clone(),
            config.groups.clone(),
            metrics.rebalances.clone(),
            cluster.clone(),
            tasks.clone(),
        );
        let storage_health = storage_health::StorageHealth::spawn(
            storage.health_polls,
            storage.location,
            metrics.clone(),
            &tasks,
        );
        groups.spawn_ticker();
        groups.spawn_offset_expiry();
        cluster::controller::spawn(&tasks, cluster.clone(), metadata.clone());
        maintenance::history_compaction::spawn(
            &tasks,
            cluster.clone(),
            metadata.clone(),
            config.metadata_history,
            metrics.metadata_space_alarms_cleared.clone(),
        );
        let maintenance = maintenance::Maintenance::new(
            topics.clone(),
            cluster.clone(),
            metadata.clone(),
            storage.requests.clone(),
            maintenance::MaintenanceSettings {
                session_timeout: config.session_timeout,
                merge: config.merge.clone(),
                compaction: config.compaction,
                write_path: config.log.write_path,
                retention_check_interval: config.retention_check_interval,
                cleaner_interval: config.cleaner_interval,
            },
            metrics.clone(),
        );
        let record_validator =
            partitions::record_validation::RecordValidator::new(config.record_limits);
        let listener = &config.listener;
        let connections = kafka::listener_limits::ConnectionCounter::new(
            listener.max_connections,
            listener.max_connections_per_ip,
        );
        // The pool must hold the largest request beside the small frames'
        // share, or that request would wait forever.
        let small_reserve =
            kafka::listener_limits::small_frame_reserve(listener.queued_max_request_bytes);
        let request_memory = kafka::listener_limits::BytePool::with_small_reserve(
            listener
                .queued_max_request_bytes
                .max(config.max_request_bytes.saturating_add(small_reserve)),
            small_reserve,
        );
        let unauthenticated_request_memory = kafka::listener_limits::BytePool::new(
            kafka::listener_limits::UNAUTHENTICATED_POOL_BYTES,
        );
        let fetch_memory = kafka::listener_limits::BytePool::new(listener.fetch_memory_bytes);
        let authorizer = Arc::new(security::authorizer::Authorizer::new(
            config.authorizer.clone(),
        ));
        if authorizer.enabled() {
            // Watch first, then read: no binding stored in between is missed.
            authorizer.clone().spawn_sync(metadata.clone(), &tasks);
            let count = authorizer.reload(&metadata).await?;
            tracing::info!(bindings = count, "ACL authorizer on");
        }
        let broker = Arc::new(Self {
            config,
            groups,
            metrics,
            storage_health,
            cluster,
            producer_ids: partitions::producer_ids::ProducerIdAllocator::new(metadata.clone()),
            metadata,
            object_storage: storage.requests,
            topics,
            record_validator,
            connections,
            request_memory,
            unauthenticated_request_memory,
            fetch_memory,
            authorizer,
            maintenance,
            tasks,
        });
        broker.clone().spawn_leadership_sync();
        maintenance::topic_deletion::spawn(broker.clone(), closed_topics);
        Ok(broker)
    }

    /// The leadership of `topic`-`partition` as this broker sees it.
    pub fn partition_leader(&self, topic: &str, partition: i32) -> cluster::Leader {
        self.cluster
            .leader(&LeadershipKey::Partition(topic.to_string(), partition))
    }

    /// Waits (up to `timeout`) until the controller has given every partition
    /// of `topic` below `partitions` a live leader, so that clients that act on
    /// a CreateTopics or CreatePartitions answer find leaders at once.
    pub async fn await_leaders(&self, topic: &str, partitions: i32, timeout: std::time::Duration) {
        let mut changes = self.cluster.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        while (0..partitions).any(|p| self.partition_leader(topic, p).broker.is_none()) {
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                tracing::warn!(
                    topic,
                    "partitions still have no leader; is a controller running?"
                );
                return;
            }
        }
    }

    /// The epoch at which this broker leads the partition, if it does.
    pub fn leads(&self, topic: &str, partition: i32) -> Option<i32> {
        self.cluster
            .my_epoch(&LeadershipKey::Partition(topic.to_string(), partition))
    }

    /// Applies every change of leadership to the partition logs and groups
    /// (requests also check on use; this releases what is no longer ours
    /// promptly, failing waiting producers and members with retriable errors).
    fn spawn_leadership_sync(self: Arc<Self>) {
        let mut changes = self.cluster.subscribe();
        let tasks = self.tasks.clone();
        tasks.spawn("leadership sync", async move {
            loop {
                for topic in self.topics.all() {
                    for log in &topic.partitions {
                        let now = self.leads(&log.topic, log.partition);
                        if let (Some(given_up), None) = (log.sync_leadership(now), now) {
                            (self.tasks).spawn("hand-over", log.clone().hand_over(given_up));
                        }
                    }
                }
                self.groups.release_unowned();
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
            }
        });
    }

    /// Graceful shutdown, in the reverse order of start-up (the listeners
    /// have stopped accepting already): stop taking writes, make everything
    /// pending durable, hand leadership to other brokers, end the session
    /// (its leases go with it), then stop every background task and wait
    /// for them.
    pub async fn shutdown(&self) {
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + self.config.session_timeout * 2;
        self.cluster.stop_writes();
        let all_logs = || {
            self.topics
                .all()
                .iter()
                .flat_map(|t| t.partitions.clone())
                .collect::<Vec<_>>()
        };
        while !all_logs().iter().all(|l| l.quiet()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if let Err(e) = self.cluster.start_draining().await {
            tracing::warn!(error = %e, "announcing the shutdown failed; leadership moves when the session ends");
        }
        let others = self
            .cluster
            .live_brokers()
            .iter()
            .any(|b| b.id != self.cluster.me.id && !b.draining);
        if others {
            while self.cluster.leads_anything() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        self.cluster.end_session().await;
        tracing::info!(
            handed_over = !self.cluster.leads_anything(),
            "leadership handed over; session ended"
        );
        let still_running = self.tasks.stop(BACKGROUND_STOP_WAIT).await;
        if still_running > 0 {
            tracing::warn!(
                still_running,
                "background tasks did not stop within {BACKGROUND_STOP_WAIT:?}"
            );
        }
        tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            "background tasks stopped"
        );
    }
}
