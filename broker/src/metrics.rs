//! The broker's Prometheus metrics. Names follow Prometheus conventions:
//! `kafscale_broker_` prefix, base units, `_total` on counters (added by the
//! client library), `_seconds` and `_bytes` units. `docs/metrics.md` lists them.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use kafka_protocol::messages::ResponseKind;
use kafscale_metadata::{Compare, KeyValue, KvBackend, MetadataError, WatchEvent, Write};
use kafscale_telemetry::prometheus_client::encoding::EncodeLabelSet;
use kafscale_telemetry::prometheus_client::metrics::counter::Counter;
use kafscale_telemetry::prometheus_client::metrics::family::Family;
use kafscale_telemetry::prometheus_client::metrics::gauge::Gauge;
use kafscale_telemetry::prometheus_client::metrics::histogram::Histogram;
use kafscale_telemetry::prometheus_client::registry::{Registry, Unit};
use kafscale_telemetry::{latency_buckets, size_buckets};
use tokio::sync::broadcast;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabels {
    pub api: String,
    /// Kafka error code; 0 for success.
    pub error: i16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

pub struct BrokerMetrics {
    pub requests: Family<ApiErrorLabels, Counter>,
    pub request_duration: Family<ApiLabels, Histogram>,
    pub produce_records: Family<TopicLabels, Counter>,
    pub produce_bytes: Family<TopicLabels, Counter>,
    pub fetch_records: Family<TopicLabels, Counter>,
    pub fetch_bytes: Family<TopicLabels, Counter>,
    pub produce_ack_duration: Histogram,
    pub flush_bytes: Histogram,
    pub flush_records: Histogram,
    pub flush_failures: Counter,
    pub produce_rejected: Counter,
    /// etcd NOSPACE alarms the controller cleared.
    pub metadata_space_alarms_cleared: Counter,
    pub memory_log_bytes: Gauge,
    pub partitions_led: Gauge,
    pub groups: Gauge,
    pub group_memory_bytes: Gauge,
    pub idempotent_producers: Gauge,
    pub rebalances: Counter,
    pub consumer_lag: Family<LagLabels, Gauge>,
    pub connections: Gauge,
    pub connections_refused: Family<ReasonLabels, Counter>,
    pub connections_closed: Family<ReasonLabels, Counter>,
    pub queued_request_bytes: Gauge,
    pub fetch_reserved_bytes: Gauge,
    pub batches_refused: Family<ReasonLabels, Counter>,
    pub metadata_duration: Family<OpLabels, Histogram>,
    pub metadata_errors: Family<OpLabels, Counter>,
    pub storage_state: Gauge,
    /// Compacted partitions this broker leads: the share of their cleanable
    /// bytes not cleaned yet, as the last pass found it.
    pub cleaner_dirty_ratio: Family<PartitionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Distinct keys the last cleaning pass mapped.
    pub cleaner_keys: Family<PartitionLabels, Gauge>,
    /// When the last cleaning pass finished (Unix seconds).
    pub cleaner_last_clean: Family<PartitionLabels, Gauge>,
    /// Bytes of segments cleaning passes read.
    pub cleaner_bytes: Counter,
}

impl BrokerMetrics {
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            produce_records: Family::default(),
            produce_bytes: Family::default(),
            fetch_records: Family::default(),
            fetch_bytes: Family::default(),
            produce_ack_duration: Histogram::new(latency_buckets()),
            flush_bytes: Histogram::new(size_buckets()),
            flush_records: Histogram::new(prometheus_buckets_records()),
            flush_failures: Counter::default(),
            produce_rejected: Counter::default(),
            metadata_space_alarms_cleared: Counter::default(),
            memory_log_bytes: Gauge::default(),
            partitions_led: Gauge::default(),
            groups: Gauge::default(),
            group_memory_bytes: Gauge::default(),
            idempotent_producers: Gauge::default(),
            rebalances: Counter::default(),
            consumer_lag: Family::default(),
            connections: Gauge::default(),
            connections_refused: Family::default(),
            connections_closed: Family::default(),
            queued_request_bytes: Gauge::default(),
            fetch_reserved_bytes: Gauge::default(),
            batches_refused: Family::default(),
            metadata_duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            metadata_errors: Family::default(),
            storage_state: Gauge::default(),
            cleaner_dirty_ratio: Family::default(),
            cleaner_keys: Family::default(),
            cleaner_last_clean: Family::default(),
            cleaner_bytes: Counter::default(),
        });
        let r = registry.sub_registry_with_prefix("kafscale_broker");
        r.register(
            "requests",
            "Kafka requests by API and response error code (0: none)",
            m.requests.clone(),
        );
        r.register(
            "cleaner_dirty_ratio",
            "Compacted partitions led here: share of cleanable bytes not cleaned yet",
            m.cleaner_dirty_ratio.clone(),
        );
        r.register(
            "cleaner_keys",
            "Distinct keys the last cleaning pass of a compacted partition mapped",
            m.cleaner_keys.clone(),
        );
        r.register_with_unit(
            "cleaner_last_clean",
            "When the last cleaning pass of a compacted partition finished (Unix time)",
            Unit::Seconds,
            m.cleaner_last_clean.clone(),
        );
        r.register_with_unit(
            "cleaner_read",
            "Bytes of segments cleaning passes read",
            Unit::Bytes,
            m.cleaner_bytes.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from request admission to response, by API",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register(
            "produce_records",
            "Records acknowledged, by topic",
            m.produce_records.clone(),
        );
        r.register_with_unit(
            "produce",
            "Record-batch bytes acknowledged, by topic",
            Unit::Bytes,
            m.produce_bytes.clone(),
        );
        r.register(
            "fetch_records",
            "Records returned to consumers, by topic",
            m.fetch_records.clone(),
        );
        r.register_with_unit(
            "fetch",
            "Record-batch bytes returned to consumers, by topic",
            Unit::Bytes,
            m.fetch_bytes.clone(),
        );
        r.register_with_unit(
            "produce_ack_duration",
            "Time from offset assignment to durable acknowledgement (acks=1/-1)",
            Unit::Seconds,
            m.produce_ack_duration.clone(),
        );
        r.register_with_unit(
            "flush_size",
            "Bytes per group-commit upload (one segment)",
            Unit::Bytes,
            m.flush_bytes.clone(),
        );
        r.register(
            "flush_records",
            "Records per group-commit upload",
            m.flush_records.clone(),
        );
        r.register(
            "flush_failures",
            "Group-commit uploads that failed",
            m.flush_failures.clone(),
        );
        r.register(
            "metadata_space_alarms_cleared",
            "Times the metadata store (etcd) ran out of space and the controller compacted, defragmented and cleared its NOSPACE alarm",
            m.metadata_space_alarms_cleared.clone(),
        );
        r.register(
            "produce_rejected",
            "Partition produces refused at once because object storage is unavailable or too much is pending",
            m.produce_rejected.clone(),
        );
        r.register_with_unit(
            "memory_log",
            "Durable record bytes held in memory for tail reads",
            Unit::Bytes,
            m.memory_log_bytes.clone(),
        );
        r.register(
            "partitions_led",
            "Partitions this broker leads",
            m.partitions_led.clone(),
        );
        r.register(
            "groups",
            "Consumer groups this broker coordinates (loaded)",
            m.groups.clone(),
        );
        r.register(
            "group_memory_bytes",
            "Memory the loaded groups' members' metadata and assignments take (bounded by --group-memory-bytes)",
            m.group_memory_bytes.clone(),
        );
        r.register(
            "idempotent_producers",
            "Idempotent producers remembered, once per partition each writes to (bounded by --max-idempotent-producers)",
            m.idempotent_producers.clone(),
        );
        r.register(
            "group_rebalances",
            "Completed consumer-group rebalances",
            m.rebalances.clone(),
        );
        r.register(
            "consumer_lag",
            "High watermark minus committed offset, by group and partition",
            m.consumer_lag.clone(),
        );
        r.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed at once because of --max-connections or --max-connections-per-ip, by limit",
            m.connections_refused.clone(),
        );
        r.register(
            "connections_closed",
            "Connections ended, by reason: client, idle, stalled_request, request_too_large, malformed, read_error, not_reading",
            m.connections_closed.clone(),
        );
        r.register_with_unit(
            "queued_request",
            "Bytes of requests read and not yet answered (limit: --queued-max-request-bytes)",
            Unit::Bytes,
            m.queued_request_bytes.clone(),
        );
        r.register_with_unit(
            "fetch_reserved",
            "Bytes reserved for fetch responses not yet written (limit: --fetch-memory-bytes)",
            Unit::Bytes,
            m.fetch_reserved_bytes.clone(),
        );
        r.register(
            "batches_refused",
            "Produced record batches refused by validation, by reason",
            m.batches_refused.clone(),
        );
        r.register_with_unit(
            "metadata_request_duration",
            "Metadata-store (etcd) request latency by operation",
            Unit::Seconds,
            m.metadata_duration.clone(),
        );
        r.register(
            "metadata_request_errors",
            "Failed metadata-store requests by operation",
            m.metadata_errors.clone(),
        );
        r.register(
            "object_store_state",
            "Object-store health as the flusher reports it: 0 healthy, 1 degraded, 2 unavailable, 3 flusher unreachable",
            m.storage_state.clone(),
        );
        m
    }

    /// Metrics registered nowhere.
    pub fn detached() -> Arc<Self> {
        Self::new(&mut Registry::default())
    }

    pub fn observe_request(&self, api: &str, started: Instant, response: Option<&ResponseKind>) {
        self.request_duration
            .get_or_create(&ApiLabels {
                api: api.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
        let codes = response.map(error_codes).unwrap_or_default();
        if codes.is_empty() {
            self.requests
                .get_or_create(&ApiErrorLabels {
                    api: api.to_string(),
                    error: 0,
                })
                .inc();
        }
        for error in codes {
            self.requests
                .get_or_create(&ApiErrorLabels {
                    api: api.to_string(),
                    error,
                })
                .inc();
        }
    }
}

fn prometheus_buckets_records() -> impl Iterator<Item = f64> {
    kafscale_telemetry::prometheus_client::metrics::histogram::exponential_buckets(1.0, 4.0, 12)
}

/// The distinct error codes in a response (top level and per partition or
/// resource); empty for APIs without any.
fn error_codes(r: &ResponseKind) -> Vec<i16> {
    let mut codes: Vec<i16> = match r {
        ResponseKind::Produce(x) => x
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::Fetch(x) => std::iter::once(x.error_code)
            .chain(
                x.responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            )
            .collect(),
        ResponseKind::ListOffsets(x) => x
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::Metadata(x) => x.topics.iter().map(|t| t.error_code).collect(),
        ResponseKind::CreateTopics(x) => x.topics.iter().map(|t| t.error_code).collect(),
        ResponseKind::DeleteTopics(x) => x.responses.iter().map(|t| t.error_code).collect(),
        ResponseKind::InitProducerId(x) => vec![x.error_code],
        ResponseKind::FindCoordinator(x) => std::iter::once(x.error_code)
            .chain(x.coordinators.iter().map(|c| c.error_code))
            .collect(),
        ResponseKind::JoinGroup(x) => vec![x.error_code],
        ResponseKind::SyncGroup(x) => vec![x.error_code],
        ResponseKind::Heartbeat(x) => vec![x.error_code],
        ResponseKind::LeaveGroup(x) => std::iter::once(x.error_code)
            .chain(x.members.iter().map(|m| m.error_code))
            .collect(),
        ResponseKind::OffsetCommit(x) => x
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::OffsetFetch(x) => std::iter::once(x.error_code)
            .chain(x.groups.iter().map(|g| g.error_code))
            .collect(),
        ResponseKind::DescribeGroups(x) => x.groups.iter().map(|g| g.error_code).collect(),
        ResponseKind::ListGroups(x) => vec![x.error_code],
        ResponseKind::DeleteGroups(x) => x.results.iter().map(|g| g.error_code).collect(),
        ResponseKind::CreatePartitions(x) => x.results.iter().map(|t| t.error_code).collect(),
        ResponseKind::DescribeConfigs(x) => x.results.iter().map(|t| t.error_code).collect(),
        ResponseKind::AlterConfigs(x) => x.responses.iter().map(|t| t.error_code).collect(),
        ResponseKind::IncrementalAlterConfigs(x) => {
            x.responses.iter().map(|t| t.error_code).collect()
        }
        ResponseKind::DeleteRecords(x) => x
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::ApiVersions(x) => vec![x.error_code],
        _ => Vec::new(),
    };
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// A metadata-store backend that times every request and counts failures.
pub struct InstrumentedKv {
    inner: Arc<dyn KvBackend>,
    metrics: Arc<BrokerMetrics>,
}

impl InstrumentedKv {
    pub fn new(inner: Arc<dyn KvBackend>, metrics: Arc<BrokerMetrics>) -> Self {
        Self { inner, metrics }
    }

    fn observe<T>(&self, op: &'static str, started: Instant, r: &Result<T, MetadataError>) {
        let labels = OpLabels { op };
        self.metrics
            .metadata_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if r.is_err() {
            self.metrics.metadata_errors.get_or_create(&labels).inc();
        }
    }
}

#[async_trait]
impl KvBackend for InstrumentedKv {
    async fn get_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, MetadataError> {
        let started = Instant::now();
        let r = self.inner.get_prefix(prefix).await;
        self.observe("get", started, &r);
        r
    }

    async fn txn(&self, compares: Vec<Compare>, writes: Vec<Write>) -> Result<bool, MetadataError> {
        let started = Instant::now();
        let r = self.inner.txn(compares, writes).await;
        self.observe("txn", started, &r);
        r
    }

    fn watch(&self, prefix: &str) -> broadcast::Receiver<WatchEvent> {
        self.inner.watch(prefix)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn grant_lease(&self, ttl: std::time::Duration) -> Result<i64, MetadataError> {
        let started = Instant::now();
        let r = self.inner.grant_lease(ttl).await;
        self.observe("lease_grant", started, &r);
        r
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, MetadataError> {
        let started = Instant::now();
        let r = self.inner.keep_alive(lease).await;
        self.observe("lease_keep_alive", started, &r);
        r
    }

    async fn revoke_lease(&self, lease: i64) -> Result<(), MetadataError> {
        let started = Instant::now();
        let r = self.inner.revoke_lease(lease).await;
        self.observe("lease_revoke", started, &r);
        r
    }

    async fn revision(&self) -> Result<i64, MetadataError> {
        let started = Instant::now();
        let r = self.inner.revision().await;
        self.observe("revision", started, &r);
        r
    }

    async fn compact_history(
        &self,
        revision: i64,
    ) -> Result<kafscale_metadata::HistoryCompaction, MetadataError> {
        let started = Instant::now();
        let r = self.inner.compact_history(revision).await;
        self.observe("compact", started, &r);
        r
    }

    async fn history_bytes(&self) -> Result<Option<u64>, MetadataError> {
        let started = Instant::now();
        let r = self.inner.history_bytes().await;
        self.observe("status", started, &r);
        r
    }

    async fn out_of_space(&self) -> Result<bool, MetadataError> {
        let started = Instant::now();
        let r = self.inner.out_of_space().await;
        self.observe("alarm", started, &r);
        r
    }
}
