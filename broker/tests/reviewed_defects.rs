//! Defects found by reviewing the group, producer and authorization paths,
//! each driven through the real handlers of an in-process broker: what a
//! client would have seen before its fix.

mod common;

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafscale_broker::kafka::handlers::RequestContext;
use kafscale_broker::security::acl::AuthorizerSettings;
use kafscale_broker::security::Principal;
use kafscale_broker::Broker;

use common::{call, call_as, idempotent_batch, name, start_broker, start_broker_with};

fn code(e: ResponseError) -> i16 {
    e.code()
}

async fn create_topic(broker: &Arc<Broker>, topic: &str) {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic)))
        ]))
        .with_allow_auto_topic_creation(true);
    let Some(ResponseKind::Metadata(r)) = call(broker, ApiKey::Metadata, 12, req.into()).await
    else {
        panic!("no Metadata response")
    };
    assert_eq!(r.topics[0].error_code, 0);
}

async fn init_producer_id(broker: &Arc<Broker>, id: i64, epoch: i16) -> (i16, i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch);
    let Some(ResponseKind::InitProducerId(r)) =
        call(broker, ApiKey::InitProducerId, 4, req.into()).await
    else {
        panic!("no InitProducerId response")
    };
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

async fn produce(
    broker: &Arc<Broker>,
    topic: &str,
    records: bytes::Bytes,
    timeout_ms: i32,
) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let Some(ResponseKind::Produce(r)) = call(broker, ApiKey::Produce, 9, req.into()).await else {
        panic!("no Produce response")
    };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Issue item 3: asking for a bumped epoch of an id names that id, which any
/// writer can guess (ids are sequential). Taking it over made the victim's
/// retries look like duplicates: acknowledged, never stored.
#[tokio::test]
async fn init_producer_id_never_hands_out_a_named_id() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    create_topic(&broker, "orders").await;
    let (err, victim, epoch) = init_producer_id(&broker, -1, -1).await;
    assert_eq!((err, epoch), (0, 0));
    assert_eq!(
        produce(
            &broker,
            "orders",
            idempotent_batch("v0", victim, 0, 0),
            10_000
        )
        .await,
        (0, 0)
    );

    // Another client names the victim's id and epoch.
    let (err, taken, epoch) = init_producer_id(&broker, victim, 0).await;
    assert_eq!((err, epoch), (0, 0));
    assert_ne!(taken, victim, "a caller-named id was handed out again");
    assert_eq!(
        produce(
            &broker,
            "orders",
            idempotent_batch("a0", taken, 0, 0),
            10_000
        )
        .await,
        (0, 1)
    );
    // The victim's next record is stored, at the next offset.
    assert_eq!(
        produce(
            &broker,
            "orders",
            idempotent_batch("v1", victim, 0, 1),
            10_000
        )
        .await,
        (0, 2)
    );
}

/// Issue item 13: acks=-1 with timeout 0 was answered REQUEST_TIMED_OUT for
/// a write that was then stored, so a retrying client stored it twice.
#[tokio::test]
async fn acks_all_with_a_zero_timeout_is_answered_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    create_topic(&broker, "zero").await;
    for expected in 0..3 {
        assert_eq!(
            produce(&broker, "zero", common::batch("x"), 0).await,
            (0, expected)
        );
    }
}

async fn commit(
    broker: &Arc<Broker>,
    group: &str,
    topic: &str,
    metadata: &[(i32, usize)],
) -> Vec<(i32, i16)> {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name(topic))
            .with_partitions(
                metadata
                    .iter()
                    .map(|&(partition, len)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(1)
                            .with_committed_metadata(Some(StrBytes::from_string("m".repeat(len))))
                    })
                    .collect(),
            )]);
    let Some(ResponseKind::OffsetCommit(r)) =
        call(broker, ApiKey::OffsetCommit, 8, req.into()).await
    else {
        panic!("no OffsetCommit response")
    };
    r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code))
        .collect()
}

/// Issue item 5: commit metadata had no cap, so a consumer could fill etcd
/// with megabytes per commit.
#[tokio::test]
async fn commit_metadata_is_capped_as_kafka_caps_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let req = CreateTopicsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(name("commits"))
            .with_num_partitions(2)
            .with_replication_factor(1),
    ]);
    call(&broker, ApiKey::CreateTopics, 5, req.into()).await;
    assert_eq!(
        commit(&broker, "g", "commits", &[(0, 4096), (1, 1024 * 1024)]).await,
        vec![(0, 0), (1, code(ResponseError::OffsetMetadataTooLarge))]
    );
    let stored = broker.metadata.load_group("g").await.unwrap();
    assert_eq!(stored.offsets.len(), 1, "only the partition within the cap");
    assert_eq!(
        stored.offsets[&("commits".to_string(), 0)]
            .metadata
            .as_ref()
            .map(String::len),
        Some(4096)
    );
}

/// Waits until the controller has given this broker the group's slot.
async fn await_coordinator(broker: &Arc<Broker>, group: &str) {
    for _ in 0..200 {
        if broker.groups.owns(group) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no coordinator for {group}");
}

async fn join(broker: &Arc<Broker>, group: &str, metadata_bytes: usize) -> i16 {
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(bytes::Bytes::from(vec![1u8; metadata_bytes]))]);
    let Some(ResponseKind::JoinGroup(r)) = call(broker, ApiKey::JoinGroup, 9, req.into()).await
    else {
        panic!("no JoinGroup response")
    };
    r.error_code
}

/// Issue item 6: members per group, and what their metadata may take, were
/// unbounded.
#[tokio::test]
async fn groups_are_bounded_in_members_and_in_stored_state() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(dir.path(), |c| {
        c.groups.max_size = 3;
        c.groups.max_state_bytes = 64 * 1024;
    })
    .await;
    for group in ["crowded", "heavy"] {
        await_coordinator(&broker, group).await;
    }
    // Pending member ids hold a place, as in Kafka.
    for _ in 0..3 {
        assert_eq!(
            join(&broker, "crowded", 64).await,
            code(ResponseError::MemberIdRequired)
        );
    }
    assert_eq!(
        join(&broker, "crowded", 64).await,
        code(ResponseError::GroupMaxSizeReached)
    );
    // A member whose metadata alone outgrows what the group may store.
    assert_eq!(
        join(&broker, "heavy", 100 * 1024).await,
        code(ResponseError::MessageTooLarge)
    );
    assert_eq!(
        join(&broker, "heavy", 1024).await,
        code(ResponseError::MemberIdRequired)
    );
}

/// Issue item 4: Metadata by topic id told a client without DESCRIBE the
/// topic's name.
#[tokio::test]
async fn metadata_by_id_does_not_name_a_hidden_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(dir.path(), |c| {
        c.authorizer = Some(AuthorizerSettings {
            super_users: vec!["User:admin".into()],
            allow_everyone_if_no_acl_found: false,
        });
    })
    .await;
    let admin = RequestContext {
        principal: Principal::user("admin"),
        ..RequestContext::default()
    };
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("secret-plans")))
        ]))
        .with_allow_auto_topic_creation(true);
    call_as(&broker, &admin, ApiKey::Metadata, 12, req.into()).await;
    let id = broker.topics.get("secret-plans").unwrap().record.id;

    let by_id = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(None)
        .with_topic_id(id)]));
    let stranger = RequestContext {
        principal: Principal::user("stranger"),
        ..RequestContext::default()
    };
    let Some(ResponseKind::Metadata(r)) =
        call_as(&broker, &stranger, ApiKey::Metadata, 12, by_id.into()).await
    else {
        panic!("no Metadata response")
    };
    assert_eq!(
        r.topics[0].error_code,
        code(ResponseError::TopicAuthorizationFailed)
    );
    assert_eq!(r.topics[0].name, None);
}

/// Issue item 12: the log start was stored as retention computed it, even
/// above the high watermark, where it hides acknowledged records from every
/// later leader.
#[tokio::test]
async fn the_stored_log_start_never_passes_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    create_topic(&broker, "kept").await;
    for _ in 0..3 {
        assert_eq!(
            produce(&broker, "kept", common::batch("x"), 10_000).await.0,
            0
        );
    }
    let topic = broker.topics.get("kept").unwrap();
    let log = topic.partition(0).unwrap();
    let (_, high_watermark) = log.offsets().await.unwrap();
    assert_eq!(high_watermark, 3);
    let stored = kafscale_broker::maintenance::retention::advance_log_start(
        &broker.maintenance,
        log,
        100,
        high_watermark,
    )
    .await
    .unwrap();
    assert_eq!(stored, 3);
    let state = broker.metadata.partition_state("kept", 0).await.unwrap();
    assert_eq!(state.log_start_offset, 3);
}

/// Issue item 8: ListGroups loaded every stored group, one at a time under
/// the coordinator's loading lock, and kept them all in memory.
#[tokio::test]
async fn list_groups_answers_from_the_index_without_loading_groups() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    create_topic(&broker, "listed").await;
    let offset = kafscale_metadata::CommittedOffset {
        offset: 1,
        leader_epoch: -1,
        metadata: None,
        commit_ms: 1,
    };
    // Groups another coordinator stored: in the store, not in memory.
    for i in 0..30 {
        let group = format!("stored-{i}");
        await_coordinator(&broker, &group).await;
        broker
            .metadata
            .commit_offsets(
                &group,
                &[(("listed".to_string(), 0), offset.clone())],
                Some(&kafscale_metadata::GroupIndexEntry::default()),
                None,
            )
            .await
            .unwrap();
    }
    let Some(ResponseKind::ListGroups(r)) = call(
        &broker,
        ApiKey::ListGroups,
        4,
        ListGroupsRequest::default().into(),
    )
    .await
    else {
        panic!("no ListGroups response")
    };
    assert_eq!(r.error_code, 0);
    assert_eq!(r.groups.len(), 30);
    assert!(r.groups.iter().all(|g| g.group_state.as_str() == "Empty"));
    assert!(
        broker.groups.loaded().is_empty(),
        "listing loaded {} groups",
        broker.groups.loaded().len()
    );
}

async fn fetch_offsets(broker: &Arc<Broker>, group: &str) -> Vec<(String, i32, i64)> {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_topics(None);
    let Some(ResponseKind::OffsetFetch(r)) = call(broker, ApiKey::OffsetFetch, 7, req.into()).await
    else {
        panic!("no OffsetFetch response")
    };
    assert_eq!(r.error_code, 0);
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index, p.committed_offset))
        })
        .collect()
}

async fn listed_groups(broker: &Arc<Broker>) -> Vec<String> {
    let Some(ResponseKind::ListGroups(r)) = call(
        broker,
        ApiKey::ListGroups,
        4,
        ListGroupsRequest::default().into(),
    )
    .await
    else {
        panic!("no ListGroups response")
    };
    r.groups.iter().map(|g| g.group_id.0.to_string()).collect()
}

/// Issue item 8: committed offsets never expired (Kafka's
/// offsets.retention.minutes), so abandoned groups stayed in the metadata
/// store for ever.
#[tokio::test]
async fn committed_offsets_expire_after_the_retention_and_take_an_emptied_group_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(dir.path(), |c| {
        c.groups.offsets_retention = std::time::Duration::from_secs(3600);
        c.groups.offsets_retention_check_interval = std::time::Duration::from_millis(200);
    })
    .await;
    create_topic(&broker, "kept").await;
    let at = |commit_ms: i64| kafscale_metadata::CommittedOffset {
        offset: 5,
        leader_epoch: -1,
        metadata: None,
        commit_ms,
    };
    let two_hours_ago = kafscale_broker::now_ms() - 2 * 3600 * 1000;
    // Stored by an earlier coordinator: one group wholly stale, one half.
    for group in ["abandoned", "half", "live"] {
        await_coordinator(&broker, group).await;
    }
    let index = kafscale_metadata::GroupIndexEntry::default();
    broker
        .metadata
        .commit_offsets(
            "abandoned",
            &[(("kept".to_string(), 0), at(two_hours_ago))],
            Some(&index),
            None,
        )
        .await
        .unwrap();
    broker
        .metadata
        .commit_offsets(
            "half",
            &[
                (("kept".to_string(), 0), at(two_hours_ago)),
                (("kept".to_string(), 1), at(kafscale_broker::now_ms())),
            ],
            Some(&index),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        commit(&broker, "live", "kept", &[(0, 1)]).await,
        vec![(0, 0)]
    );
    assert_eq!(listed_groups(&broker).await.len(), 3);

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while listed_groups(&broker)
        .await
        .contains(&"abandoned".to_string())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stale group was never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(listed_groups(&broker).await, vec!["half", "live"]);
    assert!(fetch_offsets(&broker, "abandoned")
        .await
        .iter()
        .all(|o| o.2 == -1));
    let stored = broker.metadata.load_group("abandoned").await.unwrap();
    assert!(stored.offsets.is_empty() && stored.index.is_none());
    assert_eq!(
        fetch_offsets(&broker, "half").await,
        vec![("kept".into(), 1, 5)]
    );
    assert_eq!(
        fetch_offsets(&broker, "live").await,
        vec![("kept".into(), 0, 1)]
    );
}

/// Issue item 5: every OffsetCommit was its own metadata-store write, so a
/// group's consumers committing at once (or one committing per record)
/// loaded the store that leases depend on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_arriving_together_share_metadata_store_writes() {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(kafscale_metadata::FileKv::open(dir.path().join("meta.json")).unwrap());
    let broker = common::start_broker_on(dir.path(), kv.clone(), |_| {}).await;
    create_topic(&broker, "busy").await;
    await_coordinator(&broker, "storm").await;
    // The group's first commit (and its index entry) on its own.
    assert_eq!(
        commit(&broker, "storm", "busy", &[(0, 1)]).await,
        vec![(0, 0)]
    );
    let revision = || async {
        use kafscale_metadata::KvBackend;
        kv.get_prefix("")
            .await
            .unwrap()
            .iter()
            .map(|e| e.mod_revision)
            .max()
            .unwrap_or(0)
    };
    let before = revision().await;
    const COMMITS: usize = 200;
    let storms: Vec<_> = (0..COMMITS)
        .map(|_| {
            let broker = broker.clone();
            tokio::spawn(async move { commit(&broker, "storm", "busy", &[(0, 1)]).await })
        })
        .collect();
    for s in storms {
        assert_eq!(s.await.unwrap(), vec![(0, 0)]);
    }
    let writes = revision().await - before;
    assert!(
        writes > 0 && (writes as usize) < COMMITS / 4,
        "{COMMITS} concurrent commits took {writes} store writes"
    );
    assert_eq!(
        fetch_offsets(&broker, "storm").await,
        vec![("busy".into(), 0, 1)]
    );
}

/// Joins `group` as a new member with `metadata_bytes` of metadata (asking
/// for a member id first, as clients do): the final error code and the id.
async fn join_member(broker: &Arc<Broker>, group: &str, metadata_bytes: usize) -> (i16, String) {
    let mut member_id = String::new();
    loop {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(bytes::Bytes::from(vec![1u8; metadata_bytes]))]);
        let Some(ResponseKind::JoinGroup(r)) = call(broker, ApiKey::JoinGroup, 9, req.into()).await
        else {
            panic!("no JoinGroup response")
        };
        if r.error_code != code(ResponseError::MemberIdRequired) || !member_id.is_empty() {
            return (r.error_code, r.member_id.to_string());
        }
        member_id = r.member_id.to_string();
    }
}

/// Issue item 6, broker-wide: each group's state was capped, but not what
/// all groups together hold, so enough groups exhausted the broker.
#[tokio::test]
async fn what_all_groups_hold_is_bounded_and_refused_retriably() {
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(dir.path(), |c| {
        c.groups.memory_bytes = 1024 * 1024;
        c.groups.initial_rebalance_delay = std::time::Duration::ZERO;
    })
    .await;
    for group in ["first", "second", "third"] {
        await_coordinator(&broker, group).await;
    }
    let (joined, first_member) = join_member(&broker, "first", 300 * 1024).await;
    assert_eq!(joined, 0);
    assert_eq!(join_member(&broker, "second", 300 * 1024).await.0, 0);
    assert_eq!(
        join_member(&broker, "third", 300 * 1024).await.0,
        code(ResponseError::CoordinatorNotAvailable),
        "a retriable refusal, not a broker that keeps growing"
    );
    assert!(broker.groups.memory_bytes() <= 1024 * 1024);

    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("first")))
        .with_members(vec![
            MemberIdentity::default().with_member_id(StrBytes::from_string(first_member))
        ]);
    let Some(ResponseKind::LeaveGroup(r)) =
        call(&broker, ApiKey::LeaveGroup, 5, leave.into()).await
    else {
        panic!("no LeaveGroup response")
    };
    assert_eq!(r.error_code, 0);
    assert_eq!(
        join_member(&broker, "third", 300 * 1024).await.0,
        0,
        "room again once a member left"
    );
}

/// Issue item 8, broker-wide: producer state was forgotten only after a day,
/// so one-shot idempotent producers grew the broker without bound in that
/// day.
#[tokio::test]
async fn idempotent_producers_remembered_are_bounded_and_the_known_keep_writing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(dir.path(), |c| c.log.max_producer_states = 3).await;
    create_topic(&broker, "busy").await;
    for producer in 1..=3 {
        let (err, _) = produce(
            &broker,
            "busy",
            idempotent_batch("a", producer, 0, 0),
            10_000,
        )
        .await;
        assert_eq!(err, 0);
    }
    assert_eq!(broker.topics.producer_states(), 3);
    let (err, _) = produce(&broker, "busy", idempotent_batch("new", 4, 0, 0), 10_000).await;
    assert_eq!(err, code(ResponseError::KafkaStorageError), "retriable");
    // The producers it knows go on, with their sequences checked as before.
    let (err, offset) = produce(&broker, "busy", idempotent_batch("b", 2, 0, 1), 10_000).await;
    assert_eq!((err, offset), (0, 3));
    let (err, offset) = produce(&broker, "busy", idempotent_batch("b", 2, 0, 1), 10_000).await;
    assert_eq!((err, offset), (0, 3), "a retry is still recognised");
    assert_eq!(broker.topics.producer_states(), 3);
}

/// Issue item 4: a produce recovered every partition it named, even those
/// the client may not write to, so any client could make the broker read
/// partitions back from object storage at will.
#[tokio::test]
async fn a_produce_recovers_only_partitions_the_client_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(dir.path(), |c| {
        c.authorizer = Some(AuthorizerSettings {
            super_users: vec!["User:admin".into()],
            allow_everyone_if_no_acl_found: false,
        });
    })
    .await;
    let admin = RequestContext {
        principal: Principal::user("admin"),
        ..RequestContext::default()
    };
    for topic in ["writable", "forbidden"] {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic)))
            ]))
            .with_allow_auto_topic_creation(true);
        call_as(&broker, &admin, ApiKey::Metadata, 12, req.into()).await;
    }
    use kafscale_metadata::acls::{
        AclRecord, Operation as Op, PatternType, Permission, ResourceType as Rt,
    };
    broker
        .metadata
        .create_acls(&[AclRecord {
            resource_type: Rt::Topic.code(),
            resource_name: "writable".into(),
            pattern_type: PatternType::Literal.code(),
            principal: "User:writer".into(),
            host: "*".into(),
            operation: Op::Write.code(),
            permission: Permission::Allow.code(),
        }])
        .await
        .unwrap();
    broker.authorizer.reload(&broker.metadata).await.unwrap();
    let log = |topic: &str| {
        broker
            .topics
            .get(topic)
            .unwrap()
            .partition(0)
            .unwrap()
            .clone()
    };
    assert_eq!(
        log("forbidden").high_watermark_now(),
        None,
        "not recovered yet"
    );

    let writer = RequestContext {
        principal: Principal::user("writer"),
        ..RequestContext::default()
    };
    let topic_data = |topic: &str| {
        TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(common::batch("x")))])
    };
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![topic_data("writable"), topic_data("forbidden")]);
    let Some(ResponseKind::Produce(r)) =
        call_as(&broker, &writer, ApiKey::Produce, 9, req.into()).await
    else {
        panic!("no Produce response")
    };
    let codes: Vec<i16> = r
        .responses
        .iter()
        .map(|t| t.partition_responses[0].error_code)
        .collect();
    assert_eq!(
        codes,
        vec![0, code(ResponseError::TopicAuthorizationFailed)]
    );
    assert_eq!(log("writable").high_watermark_now(), Some(1));
    assert_eq!(
        log("forbidden").high_watermark_now(),
        None,
        "the forbidden partition was read back from object storage for this client"
    );
}
