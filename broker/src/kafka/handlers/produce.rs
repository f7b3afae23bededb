//! Produce v3–v11. Offsets are assigned in request order during admission; the
//! response waits (acks=1/-1) until every partition's batches are durable, as
//! decided by `partition_log` (the durability rule lives there).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, ResponseKind};

use super::kafka_error::KafkaError;
use super::{str_bytes, Deferred, RequestContext};
use crate::partitions::service::{Admission, PartitionError, PartitionService, TopicRef};
use crate::Broker;

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
    let floor = if acks == 0 {
        ACKS_0_ADMISSION
    } else {
        MIN_ADMISSION
    };
    let deadline = tokio::time::Instant::now() + timeout.max(floor);
    let service = broker.partitions();
    let request_check = PartitionService::check_produce(acks, req.transactional_id.is_some());
    let resolved: Vec<_> = (req.topic_data.iter())
        .map(|t| service.topic(ctx, ApiKey::Produce, TopicRef::Name(t.name.0.as_str())))
        .collect();
    // A recovery costs etcd and object-storage requests: only for clients
    // that may write there.
    let to_recover = resolved.iter().zip(&req.topic_data).flat_map(|(topic, t)| {
        let topic = topic.as_ref().ok();
        (t.partition_data.iter()).filter_map(move |p| topic?.partition(p.index).cloned())
    });
    let _ =
        tokio::time::timeout_at(deadline, service.recover(to_recover.collect::<Vec<_>>())).await;
    // Decompression work of the whole request is bounded, not just per batch.
    let mut validation_budget = broker.config.record_limits.max_uncompressed_request_bytes;
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for (t, topic) in req.topic_data.into_iter().zip(resolved) {
        let mut parts: Vec<(i32, Result<Admission, PartitionError>)> = Vec::new();
        for p in t.partition_data {
            let records = p.records.unwrap_or_default();
            let outcome = match (&topic, &request_check) {
                (Err(e), _) | (Ok(_), Err(e)) => Err(e.clone()),
                (Ok(topic), Ok(())) => {
                    (service.append(topic, p.index, records, deadline, &mut validation_budget))
                        .await
                }
            };
            parts.push((p.index, outcome));
        }
        topics.push((t.name, parts));
    }
    if acks == 0 {
        // Kafka sends no response to acks=0; the batches still go through group commit.
        return futures::future::ready(None).boxed();
    }
    let outcome_until = deadline.max(tokio::time::Instant::now() + OUTCOME_WAIT);
    async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, parts) in topics {
            let mut partition_responses = Vec::with_capacity(parts.len());
            for (index, admission) in parts {
                let outcome = match admission {
                    Ok(admission) => admission.durable(outcome_until).await,
                    Err(e) => Err(e),
                };
                partition_responses.push(encode(index, outcome, version));
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        Some(ResponseKind::Produce(
            ProduceResponse::default().with_responses(responses),
        ))
    }
    .boxed()
}

fn encode(
    index: i32,
    outcome: Result<crate::partitions::log::Appended, PartitionError>,
    version: i16,
) -> PartitionProduceResponse {
    let r = PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    match outcome {
        Ok(appended) => r
            .with_base_offset(appended.base_offset)
            .with_log_append_time_ms(appended.log_append_time_ms)
            .with_log_start_offset(if version >= 5 { appended.log_start } else { -1 }),
        Err(e) => {
            let record = e.record_index();
            let KafkaError { error, message } = KafkaError::from(e);
            let r = r.with_error_code(error.code());
            if version < 8 {
                return r;
            }
            let r = r.with_error_message(Some(str_bytes(message.clone())));
            match record {
                Some(index) => r.with_record_errors(vec![BatchIndexAndErrorMessage::default()
                    .with_batch_index(index as i32)
                    .with_batch_index_error_message(Some(str_bytes(message)))]),
                None => r,
            }
        }
    }
}
