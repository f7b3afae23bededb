//! Metadata v0–v12: the live brokers, the controller, the requested (or all)
//! topics, their ids, partitions, leaders and leader epochs; auto-creation
//! where allowed. A partition whose leader is not alive (failover in
//! progress) has leader -1 and LEADER_NOT_AVAILABLE, so clients ask again.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::{allowed, create_topics, str_bytes, RequestContext};
use crate::partitions::topics::Topic;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::Broker;

const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let cfg = &broker.config;
    // The addresses of the listener this client came in on.
    let brokers = live_brokers(broker)
        .iter()
        .map(|b| {
            let (host, port) = b.endpoint(&ctx.listener);
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(host))
                .with_port(port)
        })
        .collect();

    let topics = match req.topics {
        // v0: an empty list means all topics; v1+: null means all.
        None => all_topics(broker, ctx),
        Some(list) if list.is_empty() && version == 0 => all_topics(broker, ctx),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            // v4+ lets the client forbid auto-creation; before v4 it was implied.
            let allow_create =
                cfg.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
            for t in list {
                out.push(match (t.name, t.topic_id) {
                    (Some(name), _) => {
                        lookup_or_create(broker, ctx, name.0.as_str(), allow_create).await
                    }
                    (None, id) => match broker.topics.get_by_id(id) {
                        // As Kafka: the name of a topic the principal may not
                        // describe is not given away by its id.
                        Some(topic) if !may_describe(broker, ctx, &topic.record.name) => {
                            // (a null name needs v12; before it, an empty one)
                            denied("")
                                .with_name((version < 12).then(|| TopicName(str_bytes(""))))
                                .with_topic_id(id)
                        }
                        Some(topic) => describe(broker, &topic),
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
        .with_controller_id(BrokerId(controller_id(broker)))
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

/// Every live broker, and this one even before its registration is seen (a
/// client must always find the broker it asked).
pub fn live_brokers(broker: &Broker) -> Vec<kafscale_metadata::BrokerRecord> {
    let mut brokers = broker.cluster.live_brokers();
    if !brokers.iter().any(|b| b.id == broker.cluster.me.id) {
        brokers.push(broker.cluster.me.clone());
        brokers.sort_by_key(|b| b.id);
    }
    brokers
}

/// The controller if it is alive, else this broker: clients send admin
/// requests to the controller, and any Kafscale broker can serve them (they
/// are compare-and-swap writes to the metadata store), so a client must never
/// be left without one.
pub fn controller_id(broker: &Broker) -> i32 {
    broker
        .cluster
        .controller()
        .filter(|c| broker.cluster.broker(*c).is_some())
        .unwrap_or(broker.cluster.me.id)
}

fn may_describe(broker: &Broker, ctx: &RequestContext, topic: &str) -> bool {
    allowed(broker, ctx, Operation::Describe, ResourceType::Topic, topic)
}

fn denied(name: &str) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(name))))
        .with_error_code(ResponseError::TopicAuthorizationFailed.code())
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

/// Every topic the principal may describe; the others are left out, as
/// Kafka leaves them out.
fn all_topics(broker: &Broker, ctx: &RequestContext) -> Vec<MetadataResponseTopic> {
    broker
        .topics
        .all()
        .iter()
        .filter(|t| may_describe(broker, ctx, &t.record.name))
        .map(|t| describe(broker, t))
        .collect()
}

async fn lookup_or_create(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    name: &str,
    allow_create: bool,
) -> MetadataResponseTopic {
    if !may_describe(broker, ctx, name) {
        return denied(name);
    }
    if let Some(topic) = broker.topics.get(name) {
        return describe(broker, &topic);
    }
    let unknown = |code: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name))))
            .with_error_code(code.code())
            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
    };
    // Auto-creation needs CREATE on the cluster or the topic, as in Kafka;
    // without it the topic is just unknown.
    let may_create = allowed(
        broker,
        ctx,
        Operation::Create,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) || allowed(broker, ctx, Operation::Create, ResourceType::Topic, name);
    if !allow_create || !may_create {
        return unknown(ResponseError::UnknownTopicOrPartition);
    }
    match create_topics::create(broker, name, -1, -1, Default::default(), false).await {
        Ok(topic) => describe(broker, &topic),
        Err(e) if e.code == ResponseError::TopicAlreadyExists.code() => {
            match broker.topics.get(name) {
                Some(topic) => describe(broker, &topic),
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

fn describe(broker: &Broker, topic: &Topic) -> MetadataResponseTopic {
    let partitions = (0..topic.record.partitions)
        .map(|p| {
            let leader = broker.partition_leader(&topic.record.name, p);
            let base = MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_epoch(leader.epoch);
            match leader.broker {
                Some(id) => base
                    .with_leader_id(BrokerId(id))
                    .with_replica_nodes(vec![BrokerId(id)])
                    .with_isr_nodes(vec![BrokerId(id)]),
                None => base
                    .with_leader_id(BrokerId(-1))
                    .with_error_code(ResponseError::LeaderNotAvailable.code()),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.record.name.clone()))))
        .with_topic_id(topic.record.id)
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
