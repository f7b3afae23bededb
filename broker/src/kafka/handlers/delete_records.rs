//! DeleteRecords v0–v2: advances a partition's log start offset (stored in the
//! metadata store), then deletes the segments wholly below it.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};

use super::kafka_error::KafkaError;
use super::RequestContext;
use crate::partitions::service::TopicRef;
use crate::Broker;

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let service = broker.partitions();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = service.topic(
            ctx,
            ApiKey::DeleteRecords,
            TopicRef::Name(t.name.0.as_str()),
        );
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let deleted = match &topic {
                Ok(topic) => {
                    service
                        .delete_records(topic, p.partition_index, p.offset)
                        .await
                }
                Err(e) => Err(e.clone()),
            };
            let r = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            partitions.push(match deleted {
                Ok(low_watermark) => r.with_low_watermark(low_watermark),
                Err(e) => r.with_error_code(KafkaError::from(e).code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
