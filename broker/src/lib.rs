//! The Kafscale broker: the Kafka wire protocol served from stateless,
//! in-memory partition logs whose durable copy lives in object storage behind
//! the sidecar flusher.

pub mod config;
pub mod connection;
pub mod groups;
pub mod handlers;
pub mod metrics;
pub mod ops_api;
pub mod partition_log;
pub mod producer_ids;
pub mod producer_state;
pub mod retention;
pub mod server;
pub mod storage_health;
pub mod topics;

use std::sync::Arc;

use kafscale_flusher::FlusherClient;
use kafscale_metadata::MetadataStore;

pub use config::BrokerConfig;
use topics::TopicRegistry;

/// Everything a request handler can reach.
pub struct Broker {
    pub config: BrokerConfig,
    pub metadata: MetadataStore,
    pub flusher: Arc<FlusherClient>,
    pub topics: Arc<TopicRegistry>,
    pub producer_ids: producer_ids::ProducerIdAllocator,
    pub groups: Arc<groups::GroupCoordinator>,
    pub metrics: Arc<metrics::BrokerMetrics>,
    pub storage: Arc<storage_health::StorageHealth>,
}

impl Broker {
    /// Loads topics from the metadata store and starts following its watch.
    pub async fn start(
        config: BrokerConfig,
        metadata: MetadataStore,
        flusher: Arc<FlusherClient>,
        metrics: Arc<metrics::BrokerMetrics>,
    ) -> Result<Arc<Self>, kafscale_metadata::MetadataError> {
        let topics = TopicRegistry::new(
            metadata.clone(),
            flusher.clone(),
            config.log.clone(),
            metrics.clone(),
        );
        topics.spawn_watch();
        topics.resync().await?;
        let groups = groups::GroupCoordinator::new(
            metadata.clone(),
            config.groups.clone(),
            metrics.rebalances.clone(),
        );
        let storage = storage_health::StorageHealth::spawn(flusher.clone(), metrics.clone());
        groups.spawn_ticker();
        Ok(Arc::new(Self {
            config,
            groups,
            metrics,
            storage,
            producer_ids: producer_ids::ProducerIdAllocator::new(metadata.clone()),
            metadata,
            flusher,
            topics,
        }))
    }
}
