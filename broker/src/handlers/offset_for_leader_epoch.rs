//! OffsetForLeaderEpoch v2–v4: the end offset of a leader epoch, which clients
//! use after a leader change to detect log truncation.
//!
//! A Kafscale log is never truncated: every leader continues from the log end
//! in object storage. So the end of any epoch up to the current one is
//! answered with the high watermark, which is at or past every offset a
//! consumer can have read under that epoch; no false truncation is reported.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{allowed, lead_at, log_error_code, RequestContext};
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = broker.topics.get(t.topic.0.as_str());
        let denied = !allowed(
            broker,
            ctx,
            Operation::Describe,
            ResourceType::Topic,
            t.topic.0.as_str(),
        );
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let base = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let r = match topic.as_ref().and_then(|t| t.partition(p.partition)) {
                _ if denied => base.with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                None => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Some(log) => match lead_at(broker, log, p.current_leader_epoch) {
                    Err(code) => base.with_error_code(code),
                    // An epoch this partition never had: undefined, as Kafka answers.
                    Ok(epoch) if p.leader_epoch > epoch => base,
                    Ok(_) => match log.offsets().await {
                        Ok((_, hw)) => base.with_leader_epoch(p.leader_epoch).with_end_offset(hw),
                        Err(e) => base.with_error_code(log_error_code(&e).0),
                    },
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
