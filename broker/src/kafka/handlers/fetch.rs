//! Fetch v4–v16: reads through the partition service (durable data only,
//! long-polling on high-watermark changes).
//!
//! Fetch sessions (KIP-227) are answered with session id 0, which every client
//! treats as "no session": it keeps sending full fetch requests.
//!
//! A partition named more than once is read and answered once, as Kafka keys
//! a fetch by partition. The response is capped by what the connection
//! reserved for it (at most `--fetch-max-bytes`), whatever the client asks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ResponseKind, TopicName};
use uuid::Uuid;

use super::kafka_error::KafkaError;
use super::{Deferred, RequestContext};
use crate::partitions::service::read::{PartitionRead, ReadLimits, ReadTarget};
use crate::partitions::service::{PartitionService, TopicRef};
use crate::Broker;

pub fn handle(
    broker: Arc<Broker>,
    ctx: &RequestContext,
    req: FetchRequest,
    version: i16,
) -> Deferred {
    let ctx = ctx.clone();
    async move {
        Some(ResponseKind::Fetch(
            fetch(&broker, &ctx, req, version).await,
        ))
    }
    .boxed()
}

async fn fetch(
    broker: &Broker,
    ctx: &RequestContext,
    req: FetchRequest,
    version: i16,
) -> FetchResponse {
    let service = broker.partitions();
    let mut responses: Vec<FetchableTopicResponse> = Vec::with_capacity(req.topics.len());
    let mut slot_of: HashMap<(TopicName, Uuid), usize> = HashMap::new();
    let mut seen: HashSet<(usize, i32)> = HashSet::new();
    let (mut targets, mut slots) = (Vec::new(), Vec::new());
    for t in &req.topics {
        let by = match version >= 13 {
            true => TopicRef::Id(t.topic_id),
            false => TopicRef::Name(t.topic.0.as_str()),
        };
        let topic = service.topic(ctx, ApiKey::Fetch, by);
        let slot = *slot_of
            .entry((t.topic.clone(), t.topic_id))
            .or_insert_with(|| {
                let r = FetchableTopicResponse::default();
                responses.push(match version >= 13 {
                    true => r.with_topic_id(t.topic_id),
                    false => r.with_topic(t.topic.clone()),
                });
                responses.len() - 1
            });
        for p in t
            .partitions
            .iter()
            .filter(|p| seen.insert((slot, p.partition)))
        {
            let log = PartitionService::log_of(&topic, p.partition)
                .and_then(|log| service.lead(&log, p.current_leader_epoch).map(|_| log));
            let max_bytes = p.partition_max_bytes.max(0) as usize;
            targets.push(ReadTarget {
                log,
                offset: p.fetch_offset,
                max_bytes,
            });
            slots.push((slot, p.partition));
        }
    }
    let cap = broker.config.listener.fetch_max_bytes;
    let limits = ReadLimits {
        max_wait: Duration::from_millis(req.max_wait_ms.max(0) as u64),
        min_bytes: req.min_bytes.max(0) as usize,
        max_bytes: usize::try_from(req.max_bytes)
            .ok()
            .filter(|n| *n > 0)
            .map_or(cap, |n| n.min(cap)),
    };
    let reads = service.read(&targets, limits, &ctx.hold).await;
    for ((slot, partition), read) in slots.into_iter().zip(reads) {
        responses[slot].partitions.push(encode(partition, read));
    }
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
}

fn encode(partition: i32, read: PartitionRead) -> PartitionData {
    let data = PartitionData::default()
        .with_partition_index(partition)
        .with_aborted_transactions(None);
    match read {
        PartitionRead::Refused(e) => data
            .with_error_code(KafkaError::from(e).code())
            .with_high_watermark(-1),
        PartitionRead::Data(r) => data
            .with_high_watermark(r.high_watermark)
            .with_last_stable_offset(r.high_watermark)
            .with_log_start_offset(r.log_start)
            .with_records(Some(r.records)),
        PartitionRead::Failed {
            error,
            log_start,
            high_watermark,
        } => data
            .with_error_code(KafkaError::from(&error).code())
            .with_high_watermark(high_watermark)
            .with_last_stable_offset(high_watermark)
            .with_log_start_offset(log_start),
    }
}
