//! DeleteRecords v0–v2: advances a partition's log start offset (stored in the
//! metadata store), then deletes the segments wholly below it.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{allowed, lead_at, log_error_code, RequestContext};
use crate::partition_log::PartitionLog;
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = broker.topics.get(t.name.0.as_str());
        let denied = !allowed(
            broker,
            ctx,
            Operation::Delete,
            ResourceType::Topic,
            t.name.0.as_str(),
        );
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let base = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let r = match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                _ if denied => base.with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                None => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Some(log) => match delete_below(broker, log, p.offset).await {
                    Ok(low) => base.with_low_watermark(low),
                    Err(code) => base.with_error_code(code),
                },
            };
            partitions.push(r);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Moves the log start to `offset` (-1: the high watermark); returns the new
/// low watermark or a Kafka error code.
async fn delete_below(broker: &Broker, log: &PartitionLog, offset: i64) -> Result<i64, i16> {
    lead_at(broker, log, -1)?;
    let (log_start, hw) = log.offsets().await.map_err(|e| log_error_code(&e).0)?;
    let target = if offset == -1 { hw } else { offset };
    if target < 0 || target > hw {
        return Err(ResponseError::OffsetOutOfRange.code());
    }
    if target <= log_start {
        return Ok(log_start);
    }
    crate::retention::advance_log_start(broker, log, target, hw)
        .await
        .map_err(|_| ResponseError::RequestTimedOut.code())
}
