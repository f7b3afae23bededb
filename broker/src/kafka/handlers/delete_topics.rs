//! DeleteTopics v0–v6: marks the topic for deletion and waits (up to the
//! request's timeout) until `topic_deletion` has removed its objects, offsets
//! and record, so a topic re-created under the same name starts empty.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use std::time::Duration;
use uuid::Uuid;

use super::kafka_error::KafkaError;
use super::str_bytes;
use super::{allowed, topic_denied, RequestContext};
use crate::maintenance::topic_deletion::{self, DeletionError};
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // v0–v5 name topics in `topic_names`; v6 in `topics` by name or id.
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let topic = match &name {
            Some(n) => broker.topics.get(n),
            None => broker.topics.get_by_id(id),
        };
        let mut result = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(str_bytes(n))));
        if version >= 6 {
            result = result.with_topic_id(topic.as_ref().map(|t| t.record.id).unwrap_or(id));
        }
        let shown = topic
            .as_ref()
            .map(|t| t.record.name.clone())
            .or_else(|| name.clone())
            .unwrap_or_default();
        let may_delete = allowed(broker, ctx, Operation::Delete, ResourceType::Topic, &shown);
        let outcome = match topic {
            _ if !may_delete => Err(KafkaError::new(
                ResponseError::TopicAuthorizationFailed,
                topic_denied(ctx, Operation::Delete, &shown),
            )),
            None if name.is_none() => Err(KafkaError::new(
                ResponseError::UnknownTopicId,
                "no topic has this id",
            )),
            None => Err(KafkaError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{}' does not exist", name.unwrap_or_default()),
            )),
            Some(topic) => delete(broker, &topic, req.timeout_ms).await,
        };
        if let Err(KafkaError {
            error: code,
            message,
        }) = outcome
        {
            result = result.with_error_code(code.code());
            if version >= 5 {
                result = result.with_error_message(Some(str_bytes(message)));
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Longest a DeleteTopics request waits for its deletion to complete.
const MAX_DELETE_WAIT: Duration = Duration::from_secs(60);

async fn delete(
    broker: &Arc<Broker>,
    topic: &crate::partitions::topics::Topic,
    timeout_ms: i32,
) -> Result<(), KafkaError> {
    let wait = Duration::from_millis(timeout_ms.max(0) as u64).min(MAX_DELETE_WAIT);
    match topic_deletion::delete(broker, &topic.record, wait).await {
        Ok(()) => Ok(()),
        // As Kafka answers a request that asks not to wait: accepted.
        Err(DeletionError::Pending { .. }) if wait.is_zero() => Ok(()),
        Err(DeletionError::NotFound) => Err(KafkaError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{}' does not exist", topic.record.name),
        )),
        Err(e @ DeletionError::Pending { .. }) => Err(KafkaError::new(
            ResponseError::RequestTimedOut,
            e.to_string(),
        )),
        Err(DeletionError::Store(e)) => Err(KafkaError::new(
            ResponseError::RequestTimedOut,
            format!("{e}; retry the delete when the metadata store is reachable"),
        )),
    }
}
