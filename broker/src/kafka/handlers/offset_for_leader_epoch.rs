//! OffsetForLeaderEpoch v2–v4: the end offset of a leader epoch, which clients
//! use after a leader change to detect log truncation (see
//! `PartitionService::epoch_end` for why Kafscale reports none).

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::kafka_error::KafkaError;
use super::RequestContext;
use crate::partitions::service::{PartitionService, TopicRef};
use crate::Broker;

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let service = broker.partitions();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let api = ApiKey::OffsetForLeaderEpoch;
        let topic = service.topic(ctx, api, TopicRef::Name(t.topic.0.as_str()));
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let end = match PartitionService::log_of(&topic, p.partition) {
                Ok(log) => {
                    let client_epoch = p.current_leader_epoch;
                    service.epoch_end(&log, client_epoch, p.leader_epoch).await
                }
                Err(e) => Err(e),
            };
            let r = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            partitions.push(match end {
                Ok(Some((epoch, end_offset))) => {
                    r.with_leader_epoch(epoch).with_end_offset(end_offset)
                }
                // An epoch this partition never had: undefined, as Kafka answers.
                Ok(None) => r,
                Err(e) => r.with_error_code(KafkaError::from(e).code()),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
