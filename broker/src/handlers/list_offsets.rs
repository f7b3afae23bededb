//! ListOffsets v1–v8: earliest (-2), latest (-1), max timestamp (-3) and
//! lookup by timestamp.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use kafscale_flusher_protocol::{request, LogStorage};

use super::{allowed, lead_at, log_error_code, RequestContext};
use crate::partition_log::{LogError, PartitionLog};
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = broker.topics.get(t.name.0.as_str());
        let denied = !allowed(
            broker,
            ctx,
            Operation::Describe,
            ResourceType::Topic,
            t.name.0.as_str(),
        );
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let base = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let log = topic.as_ref().and_then(|t| t.partition(p.partition_index));
            let r = match log {
                _ if denied => base.with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                None => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Some(log) => match lead_at(broker, log, p.current_leader_epoch) {
                    Err(code) => base.with_error_code(code),
                    Ok(epoch) => match lookup(broker, log, p.timestamp).await {
                        Ok((offset, timestamp)) => {
                            let r = base.with_offset(offset).with_timestamp(timestamp);
                            if version >= 4 {
                                r.with_leader_epoch(epoch)
                            } else {
                                r
                            }
                        }
                        Err(e) => base.with_error_code(log_error_code(&e).0),
                    },
                },
            };
            partitions.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp) for one partition's query.
async fn lookup(broker: &Broker, log: &PartitionLog, query: i64) -> Result<(i64, i64), LogError> {
    let (log_start, hw) = log.offsets().await?;
    match query {
        LATEST => Ok((hw, -1)),
        EARLIEST => Ok((log_start, -1)),
        MAX_TIMESTAMP => Ok(log.max_timestamp_in_memory().unwrap_or((-1, -1))),
        ts if ts >= 0 => {
            // Batch granularity: the first batch whose max timestamp reaches `ts`.
            // A consumer seeking there reads from at or before the first such record.
            let found = LogStorage::offset_for_timestamp(
                broker.object_storage.as_ref(),
                request::OffsetForTimestamp {
                    topic: log.topic.clone(),
                    topic_id: log.topic_id,
                    partition: log.partition,
                    timestamp: ts,
                },
            )
            .await?;
            let (offset, timestamp) = (found.offset, found.timestamp);
            if offset >= log_start && offset < hw {
                Ok((offset, timestamp))
            } else if offset >= 0 && offset < log_start {
                Ok((log_start, timestamp))
            } else {
                Ok((-1, -1))
            }
        }
        _ => Ok((-1, -1)),
    }
}
