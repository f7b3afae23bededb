//! CreateTopics v0–v7: validated names, partitions, replication factor and
//! configs; each topic gets a random id.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafscale_metadata::{MetadataError, TopicRecord};
use uuid::Uuid;

use super::str_bytes;
use super::{allowed, topic_denied, RequestContext};
use crate::partitions::topics::Topic;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::Broker;
use kafscale_metadata::topic_rules::{validate_topic_configs, validate_topic_name, TOPIC_CONFIGS};

/// How long CreateTopics and CreatePartitions wait for the new partitions'
/// leaders before answering (success either way, as Kafka does).
pub const LEADER_ELECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most partitions one topic may have; a guard against typos, not a design limit.
pub const MAX_PARTITIONS: i32 = 10_000;

#[derive(Debug)]
pub struct CreateError {
    pub code: i16,
    pub message: String,
}

fn err(code: ResponseError, message: impl Into<String>) -> CreateError {
    CreateError {
        code: code.code(),
        message: message.into(),
    }
}

/// Validates and creates one topic (also used by Metadata auto-creation).
/// `partitions`/`replication_factor` of -1 take the broker defaults.
pub async fn create(
    broker: &Arc<Broker>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    config: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<Arc<Topic>, CreateError> {
    validate_topic_name(name).map_err(|m| err(ResponseError::InvalidTopicException, m))?;
    // Existence first, as Kafka's controller checks it: clients such as Kafka
    // Connect create their topics on every start and treat
    // TOPIC_ALREADY_EXISTS as success, whatever settings they asked for.
    if broker.topics.get(name).is_some() {
        return Err(err(
            ResponseError::TopicAlreadyExists,
            format!("topic '{name}' already exists"),
        ));
    }
    let partitions = if partitions == -1 {
        broker.config.default_partitions
    } else {
        partitions
    };
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(err(
            ResponseError::InvalidPartitions,
            format!(
                "number of partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}"
            ),
        ));
    }
    // Durability comes from object storage, so the factor is recorded but not
    // used for placement; it must still be a sensible number.
    if replication_factor != -1 && replication_factor < 1 {
        return Err(err(
            ResponseError::InvalidReplicationFactor,
            format!("replication factor must be at least 1 (or -1 for the default), got {replication_factor}"),
        ));
    }
    validate_topic_configs(&config).map_err(|m| err(ResponseError::InvalidConfig, m))?;
    let record = TopicRecord {
        name: name.to_string(),
        id: Uuid::new_v4(),
        partitions,
        replication_factor: replication_factor.max(1),
        config,
        created_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        deleting: false,
        deletion: None,
    };
    if validate_only {
        return Ok(Arc::new(Topic::new(record, Vec::new())));
    }
    match broker.metadata.create_topic(&record).await {
        Ok(()) => {
            tracing::info!(topic = name, partitions, id = %record.id, "topic created");
            broker
                .await_leaders(name, partitions, LEADER_ELECTION_WAIT)
                .await;
            broker.topics.upsert(record).ok_or_else(|| {
                err(
                    ResponseError::UnknownServerError,
                    "the topic was marked for deletion at once",
                )
            })
        }
        // Not in this broker's view: created elsewhere a moment ago, or a
        // deletion that has not finished (the name stays taken until no
        // upload of the old topic can land any more).
        Err(MetadataError::TopicExists(_)) => Err(err(
            ResponseError::TopicAlreadyExists,
            format!("topic '{name}' already exists or is still being deleted; if it was just deleted, retry in a few seconds"),
        )),
        Err(e @ MetadataError::Unavailable(_)) => Err(err(
            ResponseError::RequestTimedOut,
            format!("{e}; retry when the metadata store is reachable"),
        )),
        Err(e) => Err(err(ResponseError::UnknownServerError, e.to_string())),
    }
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let may_create_any = allowed(
        broker,
        ctx,
        Operation::Create,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        if !may_create_any && !allowed(broker, ctx, Operation::Create, ResourceType::Topic, &name) {
            result = result
                .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                .with_error_message(Some(str_bytes(topic_denied(ctx, Operation::Create, &name))));
            results.push(result);
            continue;
        }
        if !t.assignments.is_empty() {
            result = result
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes(
                    "manual replica assignments are not supported: partitions are placed by Kafscale; omit --replica-assignment",
                )));
            results.push(result);
            continue;
        }
        let config: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        match create(
            broker,
            &name,
            t.num_partitions,
            t.replication_factor,
            config,
            req.validate_only,
        )
        .await
        {
            Ok(topic) => {
                if version >= 5 {
                    result = result
                        .with_num_partitions(topic.record.partitions)
                        .with_replication_factor(topic.record.replication_factor)
                        .with_configs(Some(describe_configs(&topic.record.config)));
                }
                if version >= 7 {
                    result = result.with_topic_id(topic.record.id);
                }
            }
            Err(e) => {
                result = result.with_error_code(e.code);
                if version >= 1 {
                    result = result.with_error_message(Some(str_bytes(e.message)));
                }
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn describe_configs(set: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    const DEFAULT_CONFIG: i8 = 5;
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let (value, source) = match set.get(d.name) {
                Some(v) => (v.clone(), DYNAMIC_TOPIC_CONFIG),
                None => (d.default.to_string(), DEFAULT_CONFIG),
            };
            CreatableTopicConfigs::default()
                .with_name(str_bytes(d.name))
                .with_value(Some(str_bytes(value)))
                .with_config_source(source)
        })
        .collect()
}
