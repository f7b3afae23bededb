//! CreatePartitions v0–v3: partitions may only grow.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::create_topics::{LEADER_ELECTION_WAIT, MAX_PARTITIONS};
use super::kafka_error::KafkaError;
use super::{allowed, modify_error, str_bytes, topic_denied, RequestContext};
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let outcome = if !allowed(
            broker,
            ctx,
            Operation::Alter,
            ResourceType::Topic,
            t.name.0.as_str(),
        ) {
            Err(KafkaError::new(
                ResponseError::TopicAuthorizationFailed,
                topic_denied(ctx, Operation::Alter, t.name.0.as_str()),
            ))
        } else if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            Err(KafkaError::new(
                ResponseError::InvalidReplicaAssignment,
                "manual replica assignments are not supported: omit --replica-assignment",
            ))
        } else {
            let count = t.count;
            let outcome = broker
                .topics
                .modify(t.name.0.as_str(), req.validate_only, |record| {
                    if count <= record.partitions {
                        return Err(KafkaError::new(
                            ResponseError::InvalidPartitions,
                            format!(
                                "topic has {} partitions; the count can only be increased, to more than that",
                                record.partitions
                            ),
                        ));
                    }
                    if count > MAX_PARTITIONS {
                        return Err(KafkaError::new(
                            ResponseError::InvalidPartitions,
                            format!("at most {MAX_PARTITIONS} partitions per topic"),
                        ));
                    }
                    record.partitions = count;
                    Ok(())
                })
                .await
                .map_err(|e| modify_error(e, t.name.0.as_str()));
            if let (Ok(topic), false) = (&outcome, req.validate_only) {
                broker
                    .await_leaders(
                        t.name.0.as_str(),
                        topic.record.partitions,
                        LEADER_ELECTION_WAIT,
                    )
                    .await;
            }
            outcome.map(|_| ())
        };
        if let Err(KafkaError { error, message }) = outcome {
            result = result
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(message)));
        }
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}
