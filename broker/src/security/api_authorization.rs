//! Which permission each Kafka API needs: one table, as Kafka's authorizer
//! documents it per API. Handlers and the partition service ask it instead
//! of naming operations themselves, and the authorization test drives every
//! API the broker serves through it.

use kafka_protocol::messages::ApiKey;

use super::acl::{Operation, ResourceType};

/// One permission an API checks. `alternative` marks a permission that is
/// enough on its own in place of the ones before it (Kafka's "CREATE on the
/// cluster, or CREATE on the topic").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub operation: Operation,
    pub resource: ResourceType,
    pub alternative: bool,
}

const fn on(operation: Operation, resource: ResourceType) -> Permission {
    Permission {
        operation,
        resource,
        alternative: false,
    }
}

const fn or(operation: Operation, resource: ResourceType) -> Permission {
    Permission {
        operation,
        resource,
        alternative: true,
    }
}

use Operation as O;
use ResourceType as R;

/// Every API the broker serves and what it checks (none: anyone who has
/// authenticated may call it, as in Kafka). Each permission applies to the
/// resource the request names (for the cluster: the one cluster resource).
pub const API_PERMISSIONS: &[(ApiKey, &[Permission])] = &[
    (ApiKey::Produce, &[on(O::Write, R::Topic)]),
    (ApiKey::Fetch, &[on(O::Read, R::Topic)]),
    (ApiKey::ListOffsets, &[on(O::Describe, R::Topic)]),
    // Auto-creation additionally needs CREATE (cluster or topic).
    (ApiKey::Metadata, &[on(O::Describe, R::Topic)]),
    (ApiKey::ApiVersions, &[]),
    (
        ApiKey::CreateTopics,
        &[on(O::Create, R::Cluster), or(O::Create, R::Topic)],
    ),
    (ApiKey::DeleteTopics, &[on(O::Delete, R::Topic)]),
    (
        ApiKey::InitProducerId,
        &[on(O::IdempotentWrite, R::Cluster), or(O::Write, R::Topic)],
    ),
    (ApiKey::CreatePartitions, &[on(O::Alter, R::Topic)]),
    (
        ApiKey::DescribeConfigs,
        &[
            on(O::DescribeConfigs, R::Topic),
            on(O::DescribeConfigs, R::Cluster),
        ],
    ),
    (
        ApiKey::AlterConfigs,
        &[
            on(O::AlterConfigs, R::Topic),
            on(O::AlterConfigs, R::Cluster),
        ],
    ),
    (
        ApiKey::IncrementalAlterConfigs,
        &[
            on(O::AlterConfigs, R::Topic),
            on(O::AlterConfigs, R::Cluster),
        ],
    ),
    (ApiKey::DescribeCluster, &[]),
    (ApiKey::OffsetForLeaderEpoch, &[on(O::Describe, R::Topic)]),
    (ApiKey::DeleteRecords, &[on(O::Delete, R::Topic)]),
    (ApiKey::FindCoordinator, &[on(O::Describe, R::Group)]),
    (ApiKey::JoinGroup, &[on(O::Read, R::Group)]),
    (ApiKey::SyncGroup, &[on(O::Read, R::Group)]),
    (ApiKey::Heartbeat, &[on(O::Read, R::Group)]),
    (ApiKey::LeaveGroup, &[on(O::Read, R::Group)]),
    (
        ApiKey::OffsetCommit,
        &[on(O::Read, R::Group), on(O::Read, R::Topic)],
    ),
    (
        ApiKey::OffsetFetch,
        &[on(O::Describe, R::Group), on(O::Describe, R::Topic)],
    ),
    (
        ApiKey::OffsetDelete,
        &[on(O::Delete, R::Group), on(O::Read, R::Topic)],
    ),
    (ApiKey::DescribeGroups, &[on(O::Describe, R::Group)]),
    (
        ApiKey::ListGroups,
        &[on(O::Describe, R::Cluster), or(O::Describe, R::Group)],
    ),
    (ApiKey::DeleteGroups, &[on(O::Delete, R::Group)]),
    (ApiKey::SaslHandshake, &[]),
    (ApiKey::SaslAuthenticate, &[]),
    (
        ApiKey::DescribeUserScramCredentials,
        &[on(O::Describe, R::Cluster)],
    ),
    (
        ApiKey::AlterUserScramCredentials,
        &[on(O::Alter, R::Cluster)],
    ),
    (
        ApiKey::DescribeClientQuotas,
        &[on(O::DescribeConfigs, R::Cluster)],
    ),
    (ApiKey::CreateAcls, &[on(O::Alter, R::Cluster)]),
    (ApiKey::DescribeAcls, &[on(O::Describe, R::Cluster)]),
    (ApiKey::DeleteAcls, &[on(O::Alter, R::Cluster)]),
];

/// What `api` checks; empty for an API that checks nothing (or one the
/// broker does not serve).
pub fn permissions(api: ApiKey) -> &'static [Permission] {
    API_PERMISSIONS
        .iter()
        .find(|(key, _)| *key == api)
        .map_or(&[], |(_, permissions)| permissions)
}

/// The operation `api` needs on the topics it names, if it names topics.
pub fn topic_operation(api: ApiKey) -> Option<Operation> {
    permissions(api)
        .iter()
        .find(|p| p.resource == ResourceType::Topic && !p.alternative)
        .map(|p| p.operation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::handlers::SUPPORTED_APIS;

    #[test]
    fn every_served_api_has_one_row() {
        for (api, _, _) in SUPPORTED_APIS {
            let rows = API_PERMISSIONS.iter().filter(|(k, _)| k == api).count();
            assert_eq!(rows, 1, "{api:?} has {rows} rows in the table");
        }
        assert_eq!(API_PERMISSIONS.len(), SUPPORTED_APIS.len());
    }

    #[test]
    fn partition_apis_name_their_topic_operation() {
        assert_eq!(topic_operation(ApiKey::Produce), Some(Operation::Write));
        assert_eq!(topic_operation(ApiKey::Fetch), Some(Operation::Read));
        assert_eq!(
            topic_operation(ApiKey::DeleteRecords),
            Some(Operation::Delete)
        );
        assert_eq!(topic_operation(ApiKey::ApiVersions), None);
    }
}
