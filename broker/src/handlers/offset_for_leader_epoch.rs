//! OffsetForLeaderEpoch v2–v4: the end offset of a leader epoch, which clients
//! use to detect log truncation after a leader change.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::log_error_code;
use crate::Broker;

/// Every partition is written under leader epoch 0 by a single leader today.
pub const CURRENT_EPOCH: i32 = 0;

pub async fn handle(
    broker: &Broker,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = broker.topics.get(t.topic.0.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let base = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let log = topic.as_ref().and_then(|t| t.partition(p.partition));
            let r = match log {
                None => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Some(_) if p.current_leader_epoch > CURRENT_EPOCH => {
                    base.with_error_code(ResponseError::UnknownLeaderEpoch.code())
                }
                // An epoch this leader never had: undefined, as Kafka answers.
                Some(_) if p.leader_epoch > CURRENT_EPOCH => base,
                Some(log) => match log.offsets().await {
                    Ok((_, hw)) => base.with_leader_epoch(CURRENT_EPOCH).with_end_offset(hw),
                    Err(e) => base.with_error_code(log_error_code(&e).0),
                },
            };
            partitions.push(r);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
