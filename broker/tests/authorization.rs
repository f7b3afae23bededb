//! Every API the broker serves, driven through its row of the authorization
//! table (`security::api_authorization`), as Kafka's authorizer integration
//! test does: a principal without ACLs is refused with the error Kafka gives
//! (or sees nothing, where Kafka hides what it may not describe), and the
//! same request passes authorization once exactly the table's permissions
//! are granted.

mod common;

use std::sync::Arc;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafscale_broker::kafka::handlers::RequestContext;
use kafscale_broker::security::acl::AuthorizerSettings;
use kafscale_broker::security::api_authorization::API_PERMISSIONS;
use kafscale_broker::security::Principal;
use kafscale_broker::Broker;
use kafscale_metadata::acls::{AclRecord, PatternType, Permission, ResourceType, CLUSTER_NAME};

use common::{batch, call_as, name, start_broker_with};

const TOPIC: &str = "guarded";
const GROUP: &str = "guarded-group";
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// What a principal without ACLs gets from `api`.
enum Refusal {
    /// This error code, somewhere in the response.
    Code(i16),
    /// No error: what it may not describe is left out of the answer.
    Hidden,
    /// Nothing: the API checks no permission.
    None,
}

fn refusal(api: ApiKey) -> Refusal {
    use ApiKey::*;
    match api {
        ApiVersions | DescribeCluster => Refusal::None,
        ListGroups => Refusal::Hidden,
        Produce
        | Fetch
        | ListOffsets
        | Metadata
        | CreateTopics
        | DeleteTopics
        | CreatePartitions
        | DescribeConfigs
        | AlterConfigs
        | IncrementalAlterConfigs
        | OffsetForLeaderEpoch
        | DeleteRecords => Refusal::Code(TOPIC_AUTHORIZATION_FAILED),
        FindCoordinator | JoinGroup | SyncGroup | Heartbeat | LeaveGroup | OffsetCommit
        | OffsetFetch | OffsetDelete | DescribeGroups | DeleteGroups => {
            Refusal::Code(GROUP_AUTHORIZATION_FAILED)
        }
        _ => Refusal::Code(CLUSTER_AUTHORIZATION_FAILED),
    }
}

/// A request of `api` at `version` naming the test's topic and group.
fn request(api: ApiKey, topic_id: uuid::Uuid) -> RequestKind {
    use kafka_protocol::messages::*;
    match api {
        ApiKey::Produce => ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(name(TOPIC))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch("x"))),
                ])])
            .into(),
        ApiKey::Fetch => FetchRequest::default()
            .with_max_wait_ms(0)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_partition_max_bytes(1 << 20)])])
            .into(),
        ApiKey::ListOffsets => ListOffsetsRequest::default()
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ])])
            .into(),
        ApiKey::Metadata => MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(name(TOPIC)))]))
            .into(),
        ApiKey::ApiVersions => ApiVersionsRequest::default()
            .with_client_software_name(s("test"))
            .with_client_software_version(s("1"))
            .into(),
        ApiKey::CreateTopics => CreateTopicsRequest::default()
            .with_validate_only(true)
            .with_timeout_ms(10_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(name("another"))
                .with_num_partitions(1)
                .with_replication_factor(-1)])
            .into(),
        ApiKey::DeleteTopics => DeleteTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                delete_topics_request::DeleteTopicState::default().with_name(Some(name("doomed")))
            ])
            .into(),
        ApiKey::InitProducerId => InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .into(),
        ApiKey::CreatePartitions => CreatePartitionsRequest::default()
            .with_validate_only(true)
            .with_timeout_ms(10_000)
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(name(TOPIC))
                    .with_count(2),
            ])
            .into(),
        ApiKey::DescribeConfigs => DescribeConfigsRequest::default()
            .with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(TOPIC)),
            ])
            .into(),
        ApiKey::AlterConfigs => AlterConfigsRequest::default()
            .with_validate_only(true)
            .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s(TOPIC))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("1000")))])])
            .into(),
        ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::default()
            .with_validate_only(true)
            .with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(TOPIC))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_value(Some(s("1000"))),
                    ]),
            ])
            .into(),
        ApiKey::DescribeCluster => DescribeClusterRequest::default().into(),
        ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::default()
            .with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(name(TOPIC))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1)
                            .with_leader_epoch(0),
                    ]),
            ])
            .into(),
        ApiKey::DeleteRecords => DeleteRecordsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(0),
                ])])
            .into(),
        ApiKey::FindCoordinator => FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![s(GROUP)])
            .into(),
        ApiKey::JoinGroup => JoinGroupRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(s("range"))])
            .into(),
        ApiKey::SyncGroup => SyncGroupRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_generation_id(1)
            .with_member_id(s("someone"))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .into(),
        ApiKey::Heartbeat => HeartbeatRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_generation_id(1)
            .with_member_id(s("someone"))
            .into(),
        ApiKey::LeaveGroup => LeaveGroupRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_members(vec![
                leave_group_request::MemberIdentity::default().with_member_id(s("someone"))
            ])
            .into(),
        ApiKey::OffsetCommit => offset_commit(GROUP),
        ApiKey::OffsetFetch => OffsetFetchRequest::default()
            .with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(GROUP)))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(name(TOPIC))
                            .with_partition_indexes(vec![0]),
                    ])),
            ])
            .into(),
        ApiKey::OffsetDelete => OffsetDeleteRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(name(TOPIC))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(0),
                    ]),
            ])
            .into(),
        ApiKey::DescribeGroups => DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(s(GROUP))])
            .into(),
        ApiKey::ListGroups => ListGroupsRequest::default().into(),
        ApiKey::DeleteGroups => DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(s("doomed-group"))])
            .into(),
        ApiKey::DescribeUserScramCredentials => DescribeUserScramCredentialsRequest::default()
            .with_users(None)
            .into(),
        ApiKey::AlterUserScramCredentials => AlterUserScramCredentialsRequest::default()
            .with_deletions(vec![
                alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                    .with_name(s("nobody"))
                    .with_mechanism(1),
            ])
            .into(),
        ApiKey::DescribeClientQuotas => DescribeClientQuotasRequest::default().into(),
        ApiKey::CreateAcls => CreateAclsRequest::default()
            .with_creations(vec![create_acls_request::AclCreation::default()
                .with_resource_type(ResourceType::Topic.code())
                .with_resource_name(s("nothing"))
                .with_resource_pattern_type(PatternType::Literal.code())
                .with_principal(s("User:nobody"))
                .with_host(s("*"))
                .with_operation(3)
                .with_permission_type(3)])
            .into(),
        ApiKey::DescribeAcls => DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1)
            .into(),
        ApiKey::DeleteAcls => DeleteAclsRequest::default()
            .with_filters(vec![delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(ResourceType::Topic.code())
                .with_resource_name_filter(Some(s("nothing")))
                .with_pattern_type_filter(PatternType::Literal.code())
                .with_principal_filter(Some(s("User:nobody")))
                .with_operation(1)
                .with_permission_type(1)])
            .into(),
        other => panic!("no request written for {other:?}: add one"),
    }
}

fn offset_commit(group: &str) -> RequestKind {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(0),
                ]),
        ])
        .into()
}

/// The authorization error codes anywhere in a response.
fn authorization_errors(response: &Option<ResponseKind>) -> Vec<i16> {
    let text = format!("{response:?}");
    [
        TOPIC_AUTHORIZATION_FAILED,
        GROUP_AUTHORIZATION_FAILED,
        CLUSTER_AUTHORIZATION_FAILED,
    ]
    .into_iter()
    .filter(|code| text.contains(&format!("error_code: {code},")))
    .collect()
}

fn as_user(user: &str) -> RequestContext {
    RequestContext {
        principal: Principal::user(user),
        ..RequestContext::default()
    }
}

async fn grant(broker: &Broker, user: &str, api: ApiKey) {
    let (_, permissions) = API_PERMISSIONS.iter().find(|(k, _)| *k == api).unwrap();
    let acls: Vec<AclRecord> = permissions
        .iter()
        .filter(|p| !p.alternative)
        .map(|p| AclRecord {
            resource_type: p.resource.code(),
            resource_name: match p.resource {
                ResourceType::Cluster => CLUSTER_NAME.into(),
                _ => "*".into(),
            },
            pattern_type: PatternType::Literal.code(),
            principal: format!("User:{user}"),
            host: "*".into(),
            operation: p.operation.code(),
            permission: Permission::Allow.code(),
        })
        .collect();
    if !acls.is_empty() {
        broker.metadata.create_acls(&acls).await.unwrap();
        broker.authorizer.reload(&broker.metadata).await.unwrap();
    }
}

#[tokio::test]
async fn every_api_is_refused_without_its_permissions_and_served_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker: Arc<Broker> = start_broker_with(dir.path(), |c| {
        c.authorizer = Some(AuthorizerSettings {
            super_users: vec!["User:admin".into()],
            allow_everyone_if_no_acl_found: false,
        });
    })
    .await;
    let admin = as_user("admin");
    for topic in [TOPIC, "doomed"] {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(name(topic)))]))
            .with_allow_auto_topic_creation(true);
        call_as(&broker, &admin, ApiKey::Metadata, 12, req.into()).await;
    }
    let topic_id = broker.topics.get(TOPIC).unwrap().record.id;
    // Groups to list, describe and delete.
    for group in [GROUP, "doomed-group"] {
        call_as(
            &broker,
            &admin,
            ApiKey::OffsetCommit,
            9,
            offset_commit(group),
        )
        .await;
    }

    // Listing every topic leaves out those the principal may not describe.
    let all_topics = MetadataRequest::default().with_topics(None);
    let stranger = as_user("stranger");
    let Some(ResponseKind::Metadata(listed)) =
        call_as(&broker, &stranger, ApiKey::Metadata, 12, all_topics.into()).await
    else {
        panic!("no Metadata response")
    };
    assert!(listed.topics.is_empty(), "{listed:?}");

    let mut checked = 0;
    for (api, _) in API_PERMISSIONS {
        // Answered by the connection, which owns the SASL exchange (tested
        // end to end with real clients).
        if matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
            continue;
        }
        let version = kafscale_broker::kafka::handlers::supported_versions(*api)
            .unwrap()
            .1;
        let user = format!("user-of-{api:?}");
        let ctx = as_user(&user);
        let refused = call_as(&broker, &ctx, *api, version, request(*api, topic_id)).await;
        match refusal(*api) {
            Refusal::Code(code) => assert_eq!(
                authorization_errors(&refused),
                vec![code],
                "{api:?} without permissions: {refused:?}"
            ),
            Refusal::Hidden | Refusal::None => assert_eq!(
                authorization_errors(&refused),
                Vec::<i16>::new(),
                "{api:?} without permissions: {refused:?}"
            ),
        }
        if let (Refusal::Hidden, Some(ResponseKind::ListGroups(r))) = (refusal(*api), &refused) {
            assert!(r.groups.is_empty(), "{r:?}");
        }

        grant(&broker, &user, *api).await;
        let served = call_as(&broker, &ctx, *api, version, request(*api, topic_id)).await;
        assert_eq!(
            authorization_errors(&served),
            Vec::<i16>::new(),
            "{api:?} with {user}'s permissions: {served:?}"
        );
        if let Some(ResponseKind::ListGroups(r)) = &served {
            assert!(
                r.groups.iter().any(|g| g.group_id.0.as_str() == GROUP),
                "{r:?}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, API_PERMISSIONS.len() - 2);
}
