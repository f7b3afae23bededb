//! DeleteTopics v0–v6: removes the topic's objects, then its metadata, so a
//! topic re-created under the same name starts empty with a new id.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafscale_flusher::protocol::Request;
use uuid::Uuid;

use super::str_bytes;
use crate::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
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
        let outcome = match topic {
            None if name.is_none() => Err((
                ResponseError::UnknownTopicId,
                "no topic has this id".to_string(),
            )),
            None => Err((
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{}' does not exist", name.unwrap_or_default()),
            )),
            Some(topic) => delete(broker, &topic).await,
        };
        if let Err((code, message)) = outcome {
            result = result.with_error_code(code.code());
            if version >= 5 {
                result = result.with_error_message(Some(str_bytes(message)));
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

async fn delete(
    broker: &Arc<Broker>,
    topic: &crate::topics::Topic,
) -> Result<(), (ResponseError, String)> {
    let name = topic.record.name.clone();
    // Stop producing first, so no new segment appears while objects are deleted.
    topic.partitions.iter().for_each(|p| p.close());
    broker
        .flusher
        .call(Request::DeleteTopic {
            topic: name.clone(),
        })
        .await
        .map_err(|e| {
            (
                ResponseError::KafkaStorageError,
                format!(
                    "deleting the topic's objects failed ({}); retry the delete",
                    e.message
                ),
            )
        })?;
    match broker.metadata.delete_topic(&topic.record).await {
        Ok(_) => {
            broker.topics.remove(&name);
            tracing::info!(topic = %name, id = %topic.record.id, "topic deleted");
            Ok(())
        }
        Err(e) => Err((
            ResponseError::RequestTimedOut,
            format!("{e}; the topic's data is gone, retry the delete to remove its metadata"),
        )),
    }
}
