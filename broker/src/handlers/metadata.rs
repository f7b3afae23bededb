//! Metadata v0–v12: this broker, the requested (or all) topics, their ids,
//! partitions, leaders and leader epochs; auto-creation where allowed.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::{create_topics, str_bytes};
use crate::topics::Topic;
use crate::Broker;

const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(broker: &Arc<Broker>, req: MetadataRequest, version: i16) -> MetadataResponse {
    let cfg = &broker.config;
    let me = BrokerId(cfg.node_id);
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(me)
        .with_host(str_bytes(cfg.advertised_host.clone()))
        .with_port(cfg.advertised_port)];

    let topics = match req.topics {
        // v0: an empty list means all topics; v1+: null means all.
        None => all_topics(broker, me),
        Some(list) if list.is_empty() && version == 0 => all_topics(broker, me),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            // v4+ lets the client forbid auto-creation; before v4 it was implied.
            let allow_create =
                cfg.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
            for t in list {
                out.push(match (t.name, t.topic_id) {
                    (Some(name), _) => {
                        lookup_or_create(broker, me, name.0.as_str(), allow_create).await
                    }
                    (None, id) => match broker.topics.get_by_id(id) {
                        Some(topic) => describe(&topic, me),
                        None => MetadataResponseTopic::default()
                            .with_topic_id(id)
                            .with_error_code(ResponseError::UnknownTopicId.code())
                            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                    },
                });
            }
            out
        }
    };
    let mut resp = MetadataResponse::default()
        .with_brokers(brokers)
        .with_controller_id(me)
        .with_topics(topics);
    if version >= 2 {
        resp = resp.with_cluster_id(Some(str_bytes(cfg.cluster_id.clone())));
    }
    if version < 10 {
        for t in &mut resp.topics {
            t.topic_id = Uuid::nil();
        }
    }
    resp
}

fn all_topics(broker: &Broker, me: BrokerId) -> Vec<MetadataResponseTopic> {
    broker
        .topics
        .all()
        .iter()
        .map(|t| describe(t, me))
        .collect()
}

async fn lookup_or_create(
    broker: &Arc<Broker>,
    me: BrokerId,
    name: &str,
    allow_create: bool,
) -> MetadataResponseTopic {
    if let Some(topic) = broker.topics.get(name) {
        return describe(&topic, me);
    }
    let unknown = |code: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name))))
            .with_error_code(code.code())
            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
    };
    if !allow_create {
        return unknown(ResponseError::UnknownTopicOrPartition);
    }
    match create_topics::create(broker, name, -1, -1, Default::default(), false).await {
        Ok(topic) => describe(&topic, me),
        Err(e) if e.code == ResponseError::TopicAlreadyExists.code() => {
            match broker.topics.get(name) {
                Some(topic) => describe(&topic, me),
                None => unknown(ResponseError::LeaderNotAvailable),
            }
        }
        Err(e) if e.code == ResponseError::InvalidTopicException.code() => {
            unknown(ResponseError::InvalidTopicException)
        }
        Err(e) => {
            tracing::warn!(topic = name, error = %e.message, "auto-creating topic failed");
            unknown(ResponseError::LeaderNotAvailable)
        }
    }
}

fn describe(topic: &Topic, me: BrokerId) -> MetadataResponseTopic {
    let partitions = (0..topic.record.partitions)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(me)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![me])
                .with_isr_nodes(vec![me])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.record.name.clone()))))
        .with_topic_id(topic.record.id)
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
