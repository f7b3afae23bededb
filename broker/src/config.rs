//! Broker settings, independent of how they were given (flags, env, dev mode).

use std::time::Duration;

use crate::groups::GroupSettings;
use crate::partitions::log::{LogSettings, WritePath};

/// Background merging of small segments (`segment_merge`).
#[derive(Debug, Clone)]
pub struct MergeSettings {
    /// How often the leader looks for segments to merge; zero turns merging off.
    pub interval: Duration,
    /// Only segments written at least this long ago are merged.
    pub min_age: Duration,
}

impl MergeSettings {
    /// How long after its session ends a broker's upload may still land: half
    /// the merge age, so merges never race a fenced broker's late upload.
    pub fn upload_grace(&self) -> Duration {
        self.min_age / 2
    }
}

impl Default for MergeSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            min_age: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub cluster_id: String,
    /// Host and port clients are told to connect to (Metadata): the first
    /// listener's, for brokers that do not know listener names.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Advertised address per listener name (see `listeners`).
    pub advertised_listeners: std::collections::BTreeMap<String, kafscale_metadata::Endpoint>,
    /// ACL authorization; `None` allows everything (no authorizer).
    pub authorizer: Option<crate::security::acl::AuthorizerSettings>,
    /// SASL mechanisms and their settings, for SASL listeners.
    pub sasl: std::sync::Arc<crate::security::sasl::SaslSettings>,
    /// Create unknown topics when a client's Metadata request allows it.
    pub auto_create_topics: bool,
    /// Partitions of topics created without an explicit count.
    pub default_partitions: i32,
    /// Largest request frame accepted; larger ones close the connection.
    pub max_request_bytes: usize,
    /// Requests of one connection processed concurrently (responses stay in order).
    pub max_in_flight_per_connection: usize,
    /// How often retention looks for segments to delete.
    pub retention_check_interval: Duration,
    /// How often the leaders of compacted partitions ask for cleaning
    /// (Kafka's `log.cleaner.backoff.ms`); zero turns cleaning off.
    pub cleaner_interval: Duration,
    /// Time to live of the broker's session lease: how long after a broker
    /// stops renewing (crash, pause, partition from etcd) its partitions and
    /// groups move to other brokers.
    pub session_timeout: Duration,
    /// When the controller compacts the metadata store's history
    /// (`history_compaction`).
    pub metadata_history: crate::maintenance::history_compaction::HistorySettings,
    pub merge: MergeSettings,
    /// Intake write path only: compaction of intake parts into segments.
    pub compaction: crate::maintenance::intake_compaction::CompactionSettings,
    pub listener: crate::kafka::listener_limits::ListenerSettings,
    pub record_limits: crate::partitions::record_validation::RecordLimits,
    pub log: LogSettings,
    pub groups: GroupSettings,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            cluster_id: "kafscale".into(),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            advertised_listeners: Default::default(),
            sasl: Default::default(),
            authorizer: None,
            auto_create_topics: false,
            default_partitions: 1,
            max_request_bytes: 100 * 1024 * 1024,
            max_in_flight_per_connection: 16,
            retention_check_interval: Duration::from_secs(60),
            cleaner_interval: Duration::from_secs(15),
            session_timeout: Duration::from_secs(6),
            metadata_history: crate::maintenance::history_compaction::HistorySettings {
                interval: Duration::from_secs(300),
                max_history_bytes: 512 * 1024 * 1024,
            },
            merge: MergeSettings::default(),
            compaction: Default::default(),
            listener: Default::default(),
            record_limits: Default::default(),
            log: LogSettings {
                flush_window: Duration::from_millis(5),
                flush_bytes: 8 * 1024 * 1024,
                memory_budget: 256 * 1024 * 1024,
                max_pending_bytes: 64 * 1024 * 1024,
                max_unacknowledged_bytes: 256 * 1024 * 1024,
                upload_grace: MergeSettings::default().upload_grace(),
                handover_wait: Duration::from_secs(30),
                write_path: WritePath::Intake,
                producer_id_expiration: Duration::from_millis(86_400_000),
                max_producer_states: 250_000,
                upload_timeout: Duration::from_secs(30),
            },
            groups: GroupSettings::default(),
        }
    }
}
