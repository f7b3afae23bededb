//! ListOffsets v1–v8: earliest (-2), latest (-1), max timestamp (-3) and
//! lookup by timestamp.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::kafka_error::KafkaError;
use super::RequestContext;
use crate::partitions::service::{OffsetQuery, PartitionService, TopicRef};
use crate::Broker;

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let service = broker.partitions();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = service.topic(ctx, ApiKey::ListOffsets, TopicRef::Name(t.name.0.as_str()));
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let query = OffsetQuery::from_timestamp(p.timestamp);
            let listed = match PartitionService::log_of(&topic, p.partition_index) {
                Ok(log) => (service.list_offset(&log, p.current_leader_epoch, query)).await,
                Err(e) => Err(e),
            };
            let r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            partitions.push(match listed {
                Ok(listed) => {
                    let r = r
                        .with_offset(listed.offset)
                        .with_timestamp(listed.timestamp);
                    match version >= 4 {
                        true => r.with_leader_epoch(listed.leader_epoch),
                        false => r,
                    }
                }
                Err(e) => r.with_error_code(KafkaError::from(e).code()),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
