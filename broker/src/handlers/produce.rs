//! Produce v3–v11. Offsets are assigned in request order during admission; the
//! response waits (acks=1/-1) until every partition's batches are durable, as
//! decided by `partition_log` (the durability rule lives there).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafscale_storage_format::batch;
use tokio::sync::oneshot;

use super::{allowed, lead, log_error_code, str_bytes, topic_denied, Deferred, RequestContext};
use crate::metrics::TopicLabels;
use crate::partition_log::LogError;
use crate::record_validation::RecordError;
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

/// A partition's answer, either final now or waiting for durability.
enum Outcome {
    Failed(i16, String),
    /// A batch failed validation; `record` is the index of the offending
    /// record within it, where there is one (ProduceResponse record_errors).
    Refused {
        code: i16,
        message: String,
        record: Option<usize>,
    },
    Appended {
        base_offset: i64,
        log_start: i64,
        log_append_time: i64,
        records: u64,
        bytes: u64,
        durable: oneshot::Receiver<Result<(), LogError>>,
    },
}

const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// How long an acks=0 request's appends may wait for recoveries.
const ACKS_0_ADMISSION: Duration = Duration::from_secs(30);

/// The least time admission gets, whatever the request's timeout: Kafka
/// applies `timeout_ms` only to the wait for replicas, so a client may send
/// 0 and still expect its batches to be taken.
const MIN_ADMISSION: Duration = Duration::from_secs(1);

/// Once its batches are admitted, a request is answered with their outcome
/// even after its own `timeout_ms`: the write is under way either way, and a
/// REQUEST_TIMED_OUT for a write that then lands makes a retrying client
/// store it twice (Kafka with one replica answers acks=-1 with timeout 0
/// with success). The outcome always arrives (every upload has the flusher
/// client's deadline); this only bounds how long a response can be held.
const OUTCOME_WAIT: Duration = Duration::from_secs(120);

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ProduceRequest,
    version: i16,
) -> Deferred {
    let acks = req.acks;
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    // One deadline for the whole request, recoveries included: its partitions
    // wait together, and one whose log must first be read back from a slow
    // store does not hold the answer past the client's timeout. (acks=0 has
    // no answer to hold; its appends get the usual client timeout.)
    let deadline = tokio::time::Instant::now()
        + if acks == 0 {
            timeout.max(ACKS_0_ADMISSION)
        } else {
            timeout.max(MIN_ADMISSION)
        };
    let transactional = req.transactional_id.is_some();
    let mut topics: Vec<(kafka_protocol::messages::TopicName, Vec<(i32, Outcome)>)> = Vec::new();
    // Decompression work of the whole request is bounded, not just per batch.
    let mut validation_budget = broker.config.record_limits.max_uncompressed_request_bytes;
    let _ = tokio::time::timeout_at(deadline, recover_in_parallel(broker, ctx, &req)).await;
    for t in req.topic_data {
        let topic = broker.topics.get(t.name.0.as_str());
        // Checked before existence, as Kafka does: an unauthorized client
        // learns nothing about which topics exist.
        let denied = !allowed(
            broker,
            ctx,
            Operation::Write,
            ResourceType::Topic,
            t.name.0.as_str(),
        );
        let mut parts = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let outcome = match &topic {
                _ if denied => Outcome::Failed(
                    ResponseError::TopicAuthorizationFailed.code(),
                    topic_denied(ctx, Operation::Write, t.name.0.as_str()),
                ),
                None => Outcome::Failed(
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!(
                        "topic '{}' does not exist; create it first",
                        t.name.0.as_str()
                    ),
                ),
                Some(_) if !(-1..=1).contains(&acks) => Outcome::Failed(
                    ResponseError::InvalidRequiredAcks.code(),
                    format!("acks={acks} is invalid; use 0, 1 or -1 (all)"),
                ),
                Some(_) if transactional => Outcome::Failed(
                    ResponseError::InvalidRecord.code(),
                    "transactions are not supported by Kafscale; unset transactional.id".into(),
                ),
                Some(_) if broker.cluster.draining() => Outcome::Failed(
                    ResponseError::NotLeaderOrFollower.code(),
                    format!(
                        "broker {} is shutting down and handing its partitions to other brokers; refresh metadata and retry",
                        broker.config.node_id
                    ),
                ),
                Some(_) if broker.storage_health.refuses_writes() => {
                    broker.metrics.produce_rejected.inc();
                    Outcome::Failed(
                        ResponseError::KafkaStorageError.code(),
                        format!(
                            "object storage is {} ({}); nothing was written, the client should retry",
                            broker.storage_health.name(),
                            broker.storage_health.detail()
                        ),
                    )
                }
                Some(topic) => match topic.partition(p.index) {
                    None => Outcome::Failed(
                        ResponseError::UnknownTopicOrPartition.code(),
                        format!(
                            "partition {} does not exist (topic has {})",
                            p.index, topic.record.partitions
                        ),
                    ),
                    Some(log) => match lead(broker, log) {
                        Err((code, msg)) => Outcome::Failed(code, msg),
                        Ok(epoch) => {
                        let max_bytes = topic
                            .config("max.message.bytes")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
                        let log_append =
                            topic.config("message.timestamp.type") == Some("LogAppendTime");
                        let appending = append(broker, log, p.records.unwrap_or_default(), max_bytes, log_append, epoch, &mut validation_budget);
                        // Cancelling is safe: an append changes the log only
                        // in one synchronous step, after its last await.
                        match tokio::time::timeout_at(deadline, appending).await {
                            Ok(outcome) => outcome,
                            Err(_) => Outcome::Failed(
                                ResponseError::RequestTimedOut.code(),
                                format!("the partition could not take the batches within the request timeout ({timeout:?}): its log was still being read back from object storage, or its batches validated; nothing was written, the client should retry"),
                            ),
                        }
                    }
                    },
                },
            };
            parts.push((p.index, outcome));
        }
        topics.push((t.name, parts));
    }

    if acks == 0 {
        // Kafka sends no response to acks=0; the batches still go through group commit.
        return futures::future::ready(None).boxed();
    }
    let metrics = broker.metrics.clone();
    let admitted = std::time::Instant::now();
    let admission_end = tokio::time::Instant::now();
    async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, parts) in topics {
            let mut partition_responses = Vec::with_capacity(parts.len());
            for (index, outcome) in parts {
                let mut r = PartitionProduceResponse::default()
                    .with_index(index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let failure = match outcome {
                    Outcome::Failed(code, msg) => Some((code, msg)),
                    Outcome::Refused {
                        code,
                        message,
                        record,
                    } => {
                        if let (Some(index), true) = (record, version >= 8) {
                            r = r.with_record_errors(vec![BatchIndexAndErrorMessage::default()
                                .with_batch_index(index as i32)
                                .with_batch_index_error_message(Some(str_bytes(message.clone())))]);
                        }
                        Some((code, message))
                    }
                    Outcome::Appended {
                        base_offset,
                        log_start,
                        log_append_time,
                        records,
                        bytes,
                        durable,
                    } => match tokio::time::timeout_at(
                        deadline.max(admission_end + OUTCOME_WAIT),
                        durable,
                    )
                    .await
                    {
                        Ok(Ok(Ok(()))) => {
                            let topic = TopicLabels {
                                topic: name.0.to_string(),
                            };
                            metrics.produce_records.get_or_create(&topic).inc_by(records);
                            metrics.produce_bytes.get_or_create(&topic).inc_by(bytes);
                            metrics.produce_ack_duration.observe(admitted.elapsed().as_secs_f64());
                            r = r
                                .with_base_offset(base_offset)
                                .with_log_append_time_ms(log_append_time);
                            if version >= 5 {
                                r = r.with_log_start_offset(log_start);
                            }
                            None
                        }
                        Ok(Ok(Err(e))) => Some(log_error_code(&e)),
                        Ok(Err(_)) => Some(log_error_code(&LogError::Deleted)),
                        Err(_) => Some((
                            ResponseError::RequestTimedOut.code(),
                            format!("the write was not confirmed durable within {:?}; the client should retry", deadline.max(admission_end + OUTCOME_WAIT) - admission_end),
                        )),
                    },
                };
                if let Some((code, msg)) = failure {
                    r = r.with_error_code(code);
                    if version >= 8 {
                        r = r.with_error_message(Some(str_bytes(msg)));
                    }
                }
                partition_responses.push(r);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        Some(ResponseKind::Produce(ProduceResponse::default().with_responses(responses)))
    }
    .boxed()
}

/// Recovers, all at once, the partitions of the request that this broker
/// leads but has not recovered yet (after a start or a leadership change),
/// instead of one after another during admission. Failures are left to the
/// append, which reports them per partition.
async fn recover_in_parallel(broker: &Broker, ctx: &RequestContext, req: &ProduceRequest) {
    let mut logs = Vec::new();
    for t in &req.topic_data {
        // A recovery costs etcd and object-storage requests: only for
        // clients that may write there.
        if !allowed(
            broker,
            ctx,
            Operation::Write,
            ResourceType::Topic,
            t.name.0.as_str(),
        ) {
            continue;
        }
        let Some(topic) = broker.topics.get(t.name.0.as_str()) else {
            continue;
        };
        for p in &t.partition_data {
            if let Some(log) = topic.partition(p.index) {
                if log.high_watermark_now().is_none() && lead(broker, log).is_ok() {
                    logs.push(log.clone());
                }
            }
        }
    }
    if logs.len() > 1 {
        futures::future::join_all(logs.iter().map(|log| log.offsets())).await;
    }
}

async fn append(
    broker: &Broker,
    log: &crate::partition_log::PartitionLog,
    records: bytes::Bytes,
    max_message_bytes: usize,
    log_append_time: bool,
    leader_epoch: i32,
    validation_budget: &mut u64,
) -> Outcome {
    let batches = match batch::split_validated(&records) {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => {
            return Outcome::Failed(
                ResponseError::CorruptMessage.code(),
                "the request carried no record batch for this partition".into(),
            )
        }
        Err(e) => {
            return Outcome::Failed(ResponseError::CorruptMessage.code(), e.to_string());
        }
    };
    if let Some((_, b)) = batches.iter().find(|(_, b)| b.len() > max_message_bytes) {
        return Outcome::Failed(
            ResponseError::MessageTooLarge.code(),
            format!(
                "a record batch of {} bytes exceeds max.message.bytes={max_message_bytes}; send smaller batches or raise the topic's max.message.bytes",
                b.len()
            ),
        );
    }
    if let Err(e) = broker
        .record_validator
        .validate(&batches, validation_budget)
        .await
    {
        broker
            .metrics
            .batches_refused
            .get_or_create(&crate::metrics::ReasonLabels { reason: e.reason() })
            .inc();
        return refused(&e);
    }
    if batches.iter().any(|(h, _)| h.is_transactional()) {
        return Outcome::Failed(
            ResponseError::InvalidRecord.code(),
            "transactional batches are not supported by Kafscale; unset transactional.id".into(),
        );
    }
    match log.append(&batches, leader_epoch, log_append_time).await {
        Ok((appended, durable)) => Outcome::Appended {
            base_offset: appended.base_offset,
            log_start: appended.log_start,
            log_append_time: appended.log_append_time_ms,
            records: batches
                .iter()
                .map(|(h, _)| h.records_count.max(0) as u64)
                .sum(),
            bytes: batches.iter().map(|(_, b)| b.len() as u64).sum(),
            durable,
        },
        Err(e) => {
            let (code, msg) = log_error_code(&e);
            Outcome::Failed(code, msg)
        }
    }
}

/// A batch that failed validation, as Kafka answers it: INVALID_RECORD for
/// broken contents (non-retriable, so the producer fails fast instead of
/// resending the same bytes), MESSAGE_TOO_LARGE past the decompression
/// limit (Java producers then split the batch and retry).
fn refused(e: &RecordError) -> Outcome {
    let code = match e {
        RecordError::TooLarge { .. } => ResponseError::MessageTooLarge,
        _ => ResponseError::InvalidRecord,
    };
    Outcome::Refused {
        code: code.code(),
        message: format!("{e}; nothing of the batch was stored"),
        record: e.record_index(),
    }
}
