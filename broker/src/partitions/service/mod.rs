//! The partition service: what the partition APIs (Produce, Fetch,
//! ListOffsets, OffsetForLeaderEpoch, DeleteRecords) ask of the broker.
//! Handlers decode a request, call it per topic and partition, and encode
//! its answers; it resolves topics by name or id, authorizes from the API
//! table, checks leadership and leader epochs, recovers, appends, looks
//! offsets up and moves log starts. Its one error type is mapped to Kafka's
//! codes once, at the handler edge (`handlers::kafka_error`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafscale_flusher_protocol::{request, LogStorage};
use kafscale_metadata::topic_rules::TopicConfig;
use kafscale_storage_format::batch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::kafka::handlers::RequestContext;
use crate::metrics::{BrokerMetrics, ReasonLabels, TopicLabels};
use crate::partitions::log::{Appended, Durable, LogError, PartitionLog};
use crate::partitions::record_validation::RecordError;
use crate::partitions::topics::Topic;
use crate::security::acl::{Operation, ResourceType};
use crate::security::api_authorization::topic_operation;
use crate::Broker;

pub mod read;

/// Why a partition request was not served. Each says what to do; the
/// Kafka edge maps each to Kafka's code.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PartitionError {
    #[error("{principal} may not {operation:?} topic '{topic}'; grant it with kafka-acls --add --allow-principal {principal} --operation {operation:?} --topic {topic}")]
    TopicAuthorization {
        principal: String,
        operation: Operation,
        topic: String,
    },
    #[error("topic '{0}' does not exist; create it first")]
    UnknownTopic(String),
    #[error("no topic has id {0}; refresh metadata")]
    UnknownTopicId(Uuid),
    #[error("partition {partition} does not exist (topic '{topic}' has {count})")]
    UnknownPartition {
        topic: String,
        partition: i32,
        count: i32,
    },
    #[error("{0}")]
    NotLeader(String),
    #[error(
        "the client's leader epoch {client} is older than the leader's {leader}; refresh metadata"
    )]
    FencedLeaderEpoch { client: i32, leader: i32 },
    #[error(
        "the client's leader epoch {client} is newer than this broker's {leader}; retry shortly"
    )]
    UnknownLeaderEpoch { client: i32, leader: i32 },
    #[error("broker {0} is shutting down and handing its partitions to other brokers; refresh metadata and retry")]
    Draining(i32),
    #[error("object storage is {state} ({detail}); nothing was written, the client should retry")]
    StorageRefusing { state: &'static str, detail: String },
    #[error("acks={0} is invalid; use 0, 1 or -1 (all)")]
    InvalidAcks(i16),
    #[error("transactions are not supported by Kafscale; unset transactional.id")]
    TransactionsUnsupported,
    #[error("the request carried no record batch for this partition")]
    NoBatch,
    #[error("{0}")]
    CorruptBatch(String),
    #[error("a record batch of {size} bytes exceeds max.message.bytes={max}; send smaller batches or raise the topic's max.message.bytes")]
    BatchTooLarge { size: usize, max: usize },
    #[error("{0}; nothing of the batch was stored")]
    Record(RecordError),
    /// Kafka's words, then what to do.
    #[error("Compacted topic cannot accept message without key in topic partition {topic}-{partition}. Record {index} of the batch has none: give every record a key, or set cleanup.policy=delete")]
    KeylessRecord {
        topic: String,
        partition: i32,
        index: usize,
    },
    #[error("the partition could not take the batches within the request timeout ({0:?}): its log was still being read back from object storage, or its batches validated; nothing was written, the client should retry")]
    AdmissionTimeout(Duration),
    #[error("the write was not confirmed durable within {0:?}; the client should retry")]
    NotDurableInTime(Duration),
    /// Kafka's words, then what to do.
    #[error("Records of partition {topic}-{partition} can not be deleted due to the configured policy: cleanup.policy of a compacted topic lacks 'delete'; set cleanup.policy=compact,delete to delete records")]
    DeletePolicy { topic: String, partition: i32 },
    #[error(
        "the new log start could not be stored ({0}); retry when the metadata store is reachable"
    )]
    LogStartNotStored(String),
    #[error("{0}")]
    Log(#[from] LogError),
}

impl PartitionError {
    /// The index of the record a refused batch failed on, where known
    /// (ProduceResponse's record errors).
    pub fn record_index(&self) -> Option<usize> {
        match self {
            PartitionError::Record(e) => e.record_index(),
            PartitionError::KeylessRecord { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// How a request names a topic.
#[derive(Debug, Clone, Copy)]
pub enum TopicRef<'a> {
    Name(&'a str),
    Id(Uuid),
}

/// Batches taken into a partition's log, and the wait for them to be durable.
pub struct Admission {
    pub appended: Appended,
    durable: Durable,
    topic: String,
    records: u64,
    bytes: u64,
    admitted: std::time::Instant,
    metrics: Arc<BrokerMetrics>,
}

impl Admission {
    /// Waits until the batches are in object storage (or their write
    /// failed), at most until `until`.
    pub async fn durable(self, until: Instant) -> Result<Appended, PartitionError> {
        let waited = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout_at(until, self.durable).await {
            Ok(Ok(Ok(()))) => {
                let labels = TopicLabels { topic: self.topic };
                let metrics = &self.metrics;
                metrics
                    .produce_records
                    .get_or_create(&labels)
                    .inc_by(self.records);
                metrics
                    .produce_bytes
                    .get_or_create(&labels)
                    .inc_by(self.bytes);
                metrics
                    .produce_ack_duration
                    .observe(self.admitted.elapsed().as_secs_f64());
                Ok(self.appended)
            }
            Ok(Ok(Err(e))) => Err(e.into()),
            // The log was dropped with the write pending: its topic is gone.
            Ok(Err(_)) => Err(LogError::Deleted.into()),
            Err(_) => Err(PartitionError::NotDurableInTime(waited)),
        }
    }
}

/// An offset answered by ListOffsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: i64,
    pub timestamp: i64,
    pub leader_epoch: i32,
}

/// What ListOffsets asks for, decoded from Kafka's special timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    Latest,
    Earliest,
    MaxTimestamp,
    AtTime(i64),
    /// A negative timestamp Kafscale does not know: answered with -1.
    Unknown,
}

impl OffsetQuery {
    pub fn from_timestamp(timestamp: i64) -> Self {
        match timestamp {
            -1 => OffsetQuery::Latest,
            -2 => OffsetQuery::Earliest,
            -3 => OffsetQuery::MaxTimestamp,
            ts if ts >= 0 => OffsetQuery::AtTime(ts),
            _ => OffsetQuery::Unknown,
        }
    }
}

/// The partition service of one broker (see the module docs).
pub struct PartitionService<'a> {
    broker: &'a Broker,
}

impl Broker {
    pub fn partitions(&self) -> PartitionService<'_> {
        PartitionService { broker: self }
    }
}

impl PartitionService<'_> {
    /// The topic a request of `api` names, once the principal may use it
    /// there. Authorization comes before existence, as in Kafka: an
    /// unauthorized client learns nothing about which topics exist.
    pub fn topic(
        &self,
        ctx: &RequestContext,
        api: ApiKey,
        topic: TopicRef<'_>,
    ) -> Result<Arc<Topic>, PartitionError> {
        match topic {
            TopicRef::Name(name) => {
                self.authorize(ctx, api, name)?;
                (self.broker.topics.get(name))
                    .ok_or_else(|| PartitionError::UnknownTopic(name.to_string()))
            }
            TopicRef::Id(id) => {
                let found =
                    (self.broker.topics.get_by_id(id)).ok_or(PartitionError::UnknownTopicId(id))?;
                self.authorize(ctx, api, &found.record.name)?;
                Ok(found)
            }
        }
    }

    fn authorize(
        &self,
        ctx: &RequestContext,
        api: ApiKey,
        topic: &str,
    ) -> Result<(), PartitionError> {
        let Some(operation) = topic_operation(api) else {
            return Ok(());
        };
        let allowed = self.broker.authorizer.allows(
            &ctx.principal,
            ctx.host(),
            operation,
            ResourceType::Topic,
            topic,
        );
        match allowed {
            true => Ok(()),
            false => Err(PartitionError::TopicAuthorization {
                principal: ctx.principal.to_string(),
                operation,
                topic: topic.to_string(),
            }),
        }
    }

    /// The log of partition `index` of `topic`.
    pub fn log(topic: &Topic, index: i32) -> Result<Arc<PartitionLog>, PartitionError> {
        topic
            .partition(index)
            .cloned()
            .ok_or_else(|| PartitionError::UnknownPartition {
                topic: topic.record.name.clone(),
                partition: index,
                count: topic.record.partitions,
            })
    }

    /// [`Self::log`] of a topic lookup: its refusal, or the partition's log.
    pub fn log_of(
        topic: &Result<Arc<Topic>, PartitionError>,
        index: i32,
    ) -> Result<Arc<PartitionLog>, PartitionError> {
        (topic.as_ref())
            .map_err(Clone::clone)
            .and_then(|topic| Self::log(topic, index))
    }

    /// The epoch at which this broker leads `log`'s partition, checked
    /// against the leader epoch the client last saw (-1: it does not say):
    /// an older one is fenced (refresh metadata), a newer one unknown (this
    /// broker has not caught up yet; retry).
    pub fn lead(&self, log: &PartitionLog, client_epoch: i32) -> Result<i32, PartitionError> {
        let broker = self.broker;
        let Some(leader) = log.lead() else {
            let current = broker.partition_leader(&log.topic, log.partition);
            return Err(PartitionError::NotLeader(match current.broker {
                Some(b) => format!(
                    "broker {} does not lead {}-{}: broker {b} does (leader epoch {}); refresh metadata and retry there",
                    broker.config.node_id, log.topic, log.partition, current.epoch
                ),
                None => format!(
                    "{}-{} has no live leader at the moment (leadership is moving); retry shortly",
                    log.topic, log.partition
                ),
            }));
        };
        match client_epoch {
            e if e < 0 || e == leader => Ok(leader),
            client if client < leader => Err(PartitionError::FencedLeaderEpoch { client, leader }),
            client => Err(PartitionError::UnknownLeaderEpoch { client, leader }),
        }
    }

    /// Refuses a produce this broker must not take at all: an invalid acks
    /// or a transactional one.
    pub fn check_produce(acks: i16, transactional: bool) -> Result<(), PartitionError> {
        if !(-1..=1).contains(&acks) {
            return Err(PartitionError::InvalidAcks(acks));
        }
        if transactional {
            return Err(PartitionError::TransactionsUnsupported);
        }
        Ok(())
    }

    /// Recovers, all at once, the logs this broker leads but has not read
    /// back yet (after a start or a leadership change), instead of one after
    /// another during admission. Failures are left to the appends, which
    /// report them per partition.
    pub async fn recover(&self, logs: impl IntoIterator<Item = Arc<PartitionLog>>) {
        let unrecovered: Vec<_> = logs
            .into_iter()
            .filter(|log| log.high_watermark_now().is_none() && log.lead().is_some())
            .collect();
        if unrecovered.len() > 1 {
            futures::future::join_all(unrecovered.iter().map(|log| log.offsets())).await;
        }
    }

    /// Validates `records` and appends them to partition `index` of `topic`,
    /// by `deadline`. `validation_budget` bounds the decompression work of
    /// the whole request.
    pub async fn append(
        &self,
        topic: &Topic,
        index: i32,
        records: Bytes,
        deadline: Instant,
        validation_budget: &mut u64,
    ) -> Result<Admission, PartitionError> {
        let broker = self.broker;
        if broker.cluster.draining() {
            return Err(PartitionError::Draining(broker.config.node_id));
        }
        if broker.storage_health.refuses_writes() {
            broker.metrics.produce_rejected.inc();
            return Err(PartitionError::StorageRefusing {
                state: broker.storage_health.name(),
                detail: broker.storage_health.detail(),
            });
        }
        let log = Self::log(topic, index)?;
        let epoch = self.lead(&log, -1)?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        // Cancelling is safe: an append changes the log only in one
        // synchronous step, after its last await.
        let appending =
            self.validate_and_append(&log, &topic.config, records, epoch, validation_budget);
        tokio::time::timeout_at(deadline, appending)
            .await
            .map_err(|_| PartitionError::AdmissionTimeout(timeout))?
    }

    async fn validate_and_append(
        &self,
        log: &PartitionLog,
        config: &TopicConfig,
        records: Bytes,
        leader_epoch: i32,
        validation_budget: &mut u64,
    ) -> Result<Admission, PartitionError> {
        let broker = self.broker;
        let batches = batch::split_validated(&records)
            .map_err(|e| PartitionError::CorruptBatch(e.to_string()))?;
        if batches.is_empty() {
            return Err(PartitionError::NoBatch);
        }
        let max = config.max_message_bytes;
        if let Some((_, b)) = batches.iter().find(|(_, b)| b.len() > max) {
            return Err(PartitionError::BatchTooLarge { size: b.len(), max });
        }
        if let Err(e) = broker
            .record_validator
            .validate(&batches, validation_budget, config.cleanup.compact)
            .await
        {
            let reason = ReasonLabels { reason: e.reason() };
            broker.metrics.batches_refused.get_or_create(&reason).inc();
            return Err(match e {
                RecordError::KeyMissing { index } => PartitionError::KeylessRecord {
                    topic: log.topic.to_string(),
                    partition: log.partition,
                    index,
                },
                e => PartitionError::Record(e),
            });
        }
        if batches.iter().any(|(h, _)| h.is_transactional()) {
            return Err(PartitionError::TransactionsUnsupported);
        }
        let (appended, durable) = log
            .append(&batches, leader_epoch, config.log_append_time)
            .await?;
        Ok(Admission {
            appended,
            durable,
            topic: log.topic.clone(),
            records: batches
                .iter()
                .map(|(h, _)| h.records_count.max(0) as u64)
                .sum(),
            bytes: batches.iter().map(|(_, b)| b.len() as u64).sum(),
            admitted: std::time::Instant::now(),
            metrics: broker.metrics.clone(),
        })
    }

    /// ListOffsets for one partition.
    pub async fn list_offset(
        &self,
        log: &PartitionLog,
        client_epoch: i32,
        query: OffsetQuery,
    ) -> Result<ListedOffset, PartitionError> {
        let leader_epoch = self.lead(log, client_epoch)?;
        let (log_start, high_watermark) = log.offsets().await?;
        let (offset, timestamp) = match query {
            OffsetQuery::Latest => (high_watermark, -1),
            OffsetQuery::Earliest => (log_start, -1),
            OffsetQuery::MaxTimestamp => log.max_timestamp_in_memory().unwrap_or((-1, -1)),
            OffsetQuery::AtTime(ts) => {
                // Batch granularity: the first batch whose max timestamp
                // reaches `ts`. A consumer seeking there reads from at or
                // before the first such record.
                let found = LogStorage::offset_for_timestamp(
                    self.broker.object_storage.as_ref(),
                    request::OffsetForTimestamp {
                        topic: log.topic.clone(),
                        topic_id: log.topic_id,
                        partition: log.partition,
                        timestamp: ts,
                    },
                )
                .await
                .map_err(LogError::from)?;
                match found.offset {
                    o if o >= log_start && o < high_watermark => (o, found.timestamp),
                    o if o >= 0 && o < log_start => (log_start, found.timestamp),
                    _ => (-1, -1),
                }
            }
            OffsetQuery::Unknown => (-1, -1),
        };
        Ok(ListedOffset {
            offset,
            timestamp,
            leader_epoch,
        })
    }

    /// OffsetForLeaderEpoch for one partition: `(epoch, end offset)`, or
    /// `None` for an epoch the partition never had.
    ///
    /// A Kafscale log is never truncated: every leader continues from the
    /// log end in object storage. So the end of any epoch up to the current
    /// one is answered with the high watermark, which is at or past every
    /// offset a consumer can have read under that epoch; no false
    /// truncation is reported.
    pub async fn epoch_end(
        &self,
        log: &PartitionLog,
        client_epoch: i32,
        epoch: i32,
    ) -> Result<Option<(i32, i64)>, PartitionError> {
        let leader_epoch = self.lead(log, client_epoch)?;
        if epoch > leader_epoch {
            return Ok(None);
        }
        let (_, high_watermark) = log.offsets().await?;
        Ok(Some((epoch, high_watermark)))
    }

    /// DeleteRecords for one partition: moves the log start to `offset`
    /// (-1: the high watermark); returns the new low watermark.
    pub async fn delete_records(
        &self,
        topic: &Topic,
        index: i32,
        offset: i64,
    ) -> Result<i64, PartitionError> {
        let log = &Self::log(topic, index)?;
        self.lead(log, -1)?;
        if !topic.config.cleanup.delete {
            return Err(PartitionError::DeletePolicy {
                topic: log.topic.clone(),
                partition: log.partition,
            });
        }
        let (log_start, high_watermark) = log.offsets().await?;
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                high_watermark,
            }
            .into());
        }
        if target <= log_start {
            return Ok(log_start);
        }
        crate::maintenance::retention::advance_log_start(
            &self.broker.maintenance,
            log,
            target,
            high_watermark,
        )
        .await
        .map_err(|e| PartitionError::LogStartNotStored(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_queries_decode_kafkas_special_timestamps() {
        assert_eq!(OffsetQuery::from_timestamp(-1), OffsetQuery::Latest);
        assert_eq!(OffsetQuery::from_timestamp(-2), OffsetQuery::Earliest);
        assert_eq!(OffsetQuery::from_timestamp(-3), OffsetQuery::MaxTimestamp);
        assert_eq!(OffsetQuery::from_timestamp(0), OffsetQuery::AtTime(0));
        assert_eq!(OffsetQuery::from_timestamp(-5), OffsetQuery::Unknown);
    }

    #[test]
    fn produce_checks_come_before_any_partition() {
        assert_eq!(
            PartitionService::check_produce(2, false),
            Err(PartitionError::InvalidAcks(2))
        );
        assert_eq!(
            PartitionService::check_produce(-1, true),
            Err(PartitionError::TransactionsUnsupported)
        );
        assert!(PartitionService::check_produce(0, false).is_ok());
    }
}
