//! One module per Kafka API. `dispatch` runs a request's in-order part and
//! returns a future for its response (`None`: no response, as for acks=0).

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::partition_log::{LogError, PartitionLog};
use crate::producer_state::SequenceError;
use crate::topics::ModifyError;
use crate::Broker;

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
];

/// Who sent a request, for handlers that record it (group members).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub client_id: String,
    /// As Kafka's tools show it: `/` followed by the peer's address.
    pub client_host: String,
    /// Holds what the response must keep reserved until it is written.
    pub hold: Arc<crate::listener_limits::ResponseHold>,
}

pub fn supported_versions(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|(_, min, max)| (*min, *max))
}

fn ready(resp: impl Into<ResponseKind>) -> Deferred {
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
        RequestKind::Metadata(r) => ready(metadata::handle(broker, r, version).await),
        RequestKind::Produce(r) => produce::handle(broker, r, version).await,
        RequestKind::Fetch(r) => fetch::handle(broker.clone(), r, version, ctx.hold.clone()),
        RequestKind::ListOffsets(r) => ready(list_offsets::handle(broker, r, version).await),
        RequestKind::CreateTopics(r) => ready(create_topics::handle(broker, r, version).await),
        RequestKind::DeleteTopics(r) => ready(delete_topics::handle(broker, r, version).await),
        RequestKind::InitProducerId(r) => ready(init_producer_id::handle(broker, r).await),
        RequestKind::CreatePartitions(r) => ready(create_partitions::handle(broker, r).await),
        RequestKind::DescribeConfigs(r) => {
            ready(describe_configs::handle(broker, r, version).await)
        }
        RequestKind::AlterConfigs(r) => ready(alter_configs::handle(broker, r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ready(incremental_alter_configs::handle(broker, r).await)
        }
        RequestKind::DescribeCluster(r) => ready(describe_cluster::handle(broker, r, version)),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ready(offset_for_leader_epoch::handle(broker, r).await)
        }
        RequestKind::DeleteRecords(r) => ready(delete_records::handle(broker, r).await),
        RequestKind::FindCoordinator(r) => ready(find_coordinator::handle(broker, r, version)),
        RequestKind::JoinGroup(r) => join_group::handle(broker, ctx, r, version).await,
        RequestKind::SyncGroup(r) => sync_group::handle(broker, r, version).await,
        RequestKind::Heartbeat(r) => ready(heartbeat::handle(broker, r).await),
        RequestKind::LeaveGroup(r) => ready(leave_group::handle(broker, r, version).await),
        RequestKind::OffsetCommit(r) => ready(offset_commit::handle(broker, r).await),
        RequestKind::OffsetFetch(r) => ready(offset_fetch::handle(broker, r, version).await),
        RequestKind::OffsetDelete(r) => ready(offset_delete::handle(broker, r).await),
        RequestKind::DescribeGroups(r) => ready(describe_groups::handle(broker, r, version).await),
        RequestKind::ListGroups(r) => ready(list_groups::handle(broker, r, version).await),
        RequestKind::DeleteGroups(r) => ready(delete_groups::handle(broker, r).await),
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

/// Kafka error code and message for a failed topic change.
pub fn modify_error(e: ModifyError, topic: &str) -> (i16, String) {
    use kafka_protocol::error::ResponseError as E;
    match e {
        ModifyError::NotFound => (
            E::UnknownTopicOrPartition.code(),
            format!("topic '{topic}' does not exist"),
        ),
        ModifyError::Rejected(code, msg) => (code, msg),
        ModifyError::Store(err) => (
            E::RequestTimedOut.code(),
            format!("{err}; retry when the metadata store is reachable"),
        ),
    }
}

/// [`Broker::lead`], or NOT_LEADER_OR_FOLLOWER with who leads.
pub fn lead(broker: &Broker, log: &PartitionLog) -> Result<i32, (i16, String)> {
    if let Some(epoch) = broker.lead(log) {
        return Ok(epoch);
    }
    let leader = broker.partition_leader(&log.topic, log.partition);
    let message = match leader.broker {
        Some(b) => format!(
            "broker {} does not lead {}-{}: broker {b} does (leader epoch {}); refresh metadata and retry there",
            broker.config.node_id, log.topic, log.partition, leader.epoch
        ),
        None => format!(
            "{}-{} has no live leader at the moment (leadership is moving); retry shortly",
            log.topic, log.partition
        ),
    };
    Err((
        kafka_protocol::error::ResponseError::NotLeaderOrFollower.code(),
        message,
    ))
}

/// Checks the leader epoch a client last saw (-1: it does not say) against
/// the leader's: older is FENCED_LEADER_EPOCH (refresh metadata), newer is
/// UNKNOWN_LEADER_EPOCH (this broker has not caught up yet; retry).
pub fn check_leader_epoch(client_epoch: i32, leader_epoch: i32) -> Result<(), i16> {
    use kafka_protocol::error::ResponseError as E;
    match client_epoch {
        e if e < 0 || e == leader_epoch => Ok(()),
        e if e < leader_epoch => Err(E::FencedLeaderEpoch.code()),
        _ => Err(E::UnknownLeaderEpoch.code()),
    }
}

/// [`lead`] and [`check_leader_epoch`] together, as an error code.
pub fn lead_at(broker: &Broker, log: &PartitionLog, client_epoch: i32) -> Result<i32, i16> {
    let epoch = lead(broker, log).map_err(|(code, _)| code)?;
    check_leader_epoch(client_epoch, epoch)?;
    Ok(epoch)
}

/// Kafka error code and message for a log error.
pub fn log_error_code(e: &LogError) -> (i16, String) {
    use kafka_protocol::error::ResponseError as E;
    let code = match e {
        LogError::StorageUnavailable(_) => E::KafkaStorageError,
        LogError::Fenced(_) | LogError::NotLeader(_) => E::NotLeaderOrFollower,
        LogError::OffsetOutOfRange { .. } => E::OffsetOutOfRange,
        LogError::Deleted => E::UnknownTopicOrPartition,
        LogError::Sequence(SequenceError::OutOfOrder { .. }) => E::OutOfOrderSequenceNumber,
        LogError::Sequence(SequenceError::StaleEpoch { .. }) => E::InvalidProducerEpoch,
    };
    (code.code(), e.to_string())
}
