//! One module per Kafka API. `dispatch` runs a request's in-order part and
//! returns a future for its response (`None`: no response, as for acks=0).

pub mod alter_configs;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_client_quotas;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_user_scram_credentials;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod kafka_error;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod sync_group;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::partitions::topics::ModifyError;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::Broker;
use kafka_error::KafkaError;

pub type Deferred = BoxFuture<'static, Option<ResponseKind>>;

/// The APIs and versions this broker implements: what ApiVersions advertises,
/// and nothing more. CreateTopics v0–1, DeleteTopics v0, DescribeConfigs v0 and
/// OffsetForLeaderEpoch v0–1 are left out as in Kafka 4.0 (KIP-896): no
/// maintained client sends them.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    // Answered by the connection, which owns the SASL state.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// Who sent a request, and where: for handlers that record it (group
/// members), answer per listener (Metadata) or check permissions.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub client_id: String,
    /// As Kafka's tools show it: `/` followed by the peer's address.
    pub client_host: String,
    /// Holds what the response must keep reserved until it is written.
    pub hold: Arc<crate::kafka::listener_limits::ResponseHold>,
    pub principal: Arc<crate::security::Principal>,
    /// The name of the listener the request came in on.
    pub listener: Arc<str>,
}

impl Default for RequestContext {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_host: String::new(),
            hold: Arc::default(),
            principal: crate::security::Principal::anonymous(),
            listener: Arc::from("PLAINTEXT"),
        }
    }
}

impl RequestContext {
    /// The client's address as ACL bindings name hosts.
    pub fn host(&self) -> &str {
        self.client_host.trim_start_matches('/')
    }
}

/// Whether the request's principal may `operation` the resource.
pub fn allowed(
    broker: &Broker,
    ctx: &RequestContext,
    operation: Operation,
    resource: ResourceType,
    name: &str,
) -> bool {
    broker
        .authorizer
        .allows(&ctx.principal, ctx.host(), operation, resource, name)
}

/// CLUSTER_AUTHORIZATION_FAILED, with what to grant, unless the principal
/// may `operation` the cluster.
pub fn authorize_cluster(
    broker: &Broker,
    ctx: &RequestContext,
    operation: Operation,
) -> Result<(), KafkaError> {
    if allowed(broker, ctx, operation, ResourceType::Cluster, CLUSTER_NAME) {
        return Ok(());
    }
    Err(KafkaError::new(
        ResponseError::ClusterAuthorizationFailed,
        format!(
            "{} may not {operation:?} the cluster; grant it with kafka-acls --add --allow-principal {} --operation {operation:?} --cluster",
            ctx.principal, ctx.principal
        ),
    ))
}

/// For the ACL APIs: SECURITY_DISABLED without an authorizer (as Kafka),
/// else [`authorize_cluster`].
pub fn acl_admin(
    broker: &Broker,
    ctx: &RequestContext,
    operation: Operation,
) -> Result<(), KafkaError> {
    if !broker.authorizer.enabled() {
        return Err(KafkaError::new(
            ResponseError::SecurityDisabled,
            "no authorizer is configured; start the brokers with --authorizer acl",
        ));
    }
    authorize_cluster(broker, ctx, operation)
}

/// For the config APIs: the refusal when the principal may not `operation`
/// the resource (a topic, or a broker, whose configs are the cluster's).
pub fn config_denied(
    broker: &Broker,
    ctx: &RequestContext,
    operation: Operation,
    resource_type: i8,
    name: &str,
) -> Option<KafkaError> {
    match resource_type {
        describe_configs::RESOURCE_TOPIC
            if !allowed(broker, ctx, operation, ResourceType::Topic, name) =>
        {
            Some(KafkaError::new(
                ResponseError::TopicAuthorizationFailed,
                topic_denied(ctx, operation, name),
            ))
        }
        describe_configs::RESOURCE_BROKER => authorize_cluster(broker, ctx, operation).err(),
        _ => None,
    }
}

/// TOPIC_AUTHORIZATION_FAILED's message.
pub fn topic_denied(ctx: &RequestContext, operation: Operation, topic: &str) -> String {
    format!(
        "{} may not {operation:?} topic '{topic}'; grant it with kafka-acls --add --allow-principal {} --operation {operation:?} --topic {topic}",
        ctx.principal, ctx.principal
    )
}

/// GROUP_AUTHORIZATION_FAILED's message.
pub fn group_denied(ctx: &RequestContext, operation: Operation, group: &str) -> String {
    format!(
        "{} may not {operation:?} group '{group}'; grant it with kafka-acls --add --allow-principal {} --operation {operation:?} --group {group}",
        ctx.principal, ctx.principal
    )
}

pub fn supported_versions(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|(_, min, max)| (*min, *max))
}

pub(crate) fn ready(resp: impl Into<ResponseKind>) -> Deferred {
    futures::future::ready(Some(resp.into())).boxed()
}

pub async fn dispatch(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    header: &RequestHeader,
    request: RequestKind,
) -> Deferred {
    let version = header.request_api_version;
    match request {
        RequestKind::ApiVersions(_) => ready(api_versions::handle()),
        RequestKind::Metadata(r) => ready(metadata::handle(broker, ctx, r, version).await),
        RequestKind::Produce(r) => produce::handle(broker, ctx, r, version).await,
        RequestKind::Fetch(r) => fetch::handle(broker.clone(), ctx, r, version),
        RequestKind::ListOffsets(r) => ready(list_offsets::handle(broker, ctx, r, version).await),
        RequestKind::CreateTopics(r) => ready(create_topics::handle(broker, ctx, r, version).await),
        RequestKind::DeleteTopics(r) => ready(delete_topics::handle(broker, ctx, r, version).await),
        RequestKind::InitProducerId(r) => ready(init_producer_id::handle(broker, ctx, r).await),
        RequestKind::CreatePartitions(r) => ready(create_partitions::handle(broker, ctx, r).await),
        RequestKind::DescribeConfigs(r) => {
            ready(describe_configs::handle(broker, ctx, r, version).await)
        }
        RequestKind::AlterConfigs(r) => ready(alter_configs::handle(broker, ctx, r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ready(incremental_alter_configs::handle(broker, ctx, r).await)
        }
        RequestKind::DescribeCluster(r) => ready(describe_cluster::handle(broker, ctx, r, version)),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ready(offset_for_leader_epoch::handle(broker, ctx, r).await)
        }
        RequestKind::DeleteRecords(r) => ready(delete_records::handle(broker, ctx, r).await),
        RequestKind::FindCoordinator(r) => ready(find_coordinator::handle(broker, ctx, r, version)),
        RequestKind::JoinGroup(r) => join_group::handle(broker, ctx, r, version).await,
        RequestKind::SyncGroup(r) => sync_group::handle(broker, ctx, r, version).await,
        RequestKind::Heartbeat(r) => ready(heartbeat::handle(broker, ctx, r).await),
        RequestKind::LeaveGroup(r) => ready(leave_group::handle(broker, ctx, r, version).await),
        RequestKind::OffsetCommit(r) => ready(offset_commit::handle(broker, ctx, r).await),
        RequestKind::OffsetFetch(r) => ready(offset_fetch::handle(broker, ctx, r, version).await),
        RequestKind::OffsetDelete(r) => ready(offset_delete::handle(broker, ctx, r).await),
        RequestKind::DescribeGroups(r) => {
            ready(describe_groups::handle(broker, ctx, r, version).await)
        }
        RequestKind::ListGroups(r) => ready(list_groups::handle(broker, ctx, r, version).await),
        RequestKind::DeleteGroups(r) => ready(delete_groups::handle(broker, ctx, r).await),
        RequestKind::DescribeUserScramCredentials(r) => {
            ready(describe_user_scram_credentials::handle(broker, ctx, r).await)
        }
        RequestKind::AlterUserScramCredentials(r) => {
            ready(alter_user_scram_credentials::handle(broker, ctx, r).await)
        }
        RequestKind::DescribeClientQuotas(r) => {
            ready(describe_client_quotas::handle(broker, ctx, r))
        }
        RequestKind::CreateAcls(r) => ready(create_acls::handle(broker, ctx, r).await),
        RequestKind::DescribeAcls(r) => ready(describe_acls::handle(broker, ctx, r)),
        RequestKind::DeleteAcls(r) => ready(delete_acls::handle(broker, ctx, r).await),
        // `admit` refuses APIs outside SUPPORTED_APIS before decoding, so this
        // arm is reached only if the two lists disagree.
        other => {
            tracing::error!(api = ?header.request_api_key, "request for an API with no handler");
            drop(other);
            futures::future::ready(None).boxed()
        }
    }
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The code for "the group's state could not be read or written" (metadata
/// store unreachable): retriable, and clients look the coordinator up again.
pub fn group_unavailable() -> i16 {
    kafka_protocol::error::ResponseError::CoordinatorNotAvailable.code()
}

/// The Kafka error of a failed topic change.
pub fn modify_error(e: ModifyError<KafkaError>, topic: &str) -> KafkaError {
    match e {
        ModifyError::NotFound => KafkaError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{topic}' does not exist"),
        ),
        ModifyError::Rejected(refusal) => refusal,
        ModifyError::Store(err) => KafkaError::new(
            ResponseError::RequestTimedOut,
            format!("{err}; retry when the metadata store is reachable"),
        ),
    }
}
