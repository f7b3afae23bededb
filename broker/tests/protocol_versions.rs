//! Every advertised version of every API, end to end inside one process: the
//! request is encoded and decoded at that version, handled by a broker backed by
//! an in-process flusher and the embedded metadata store, and the response is
//! encoded at that version. Catches fields set outside their versions and
//! handlers that break on old or new versions.

mod common;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafscale_broker::kafka::handlers::SUPPORTED_APIS;

use common::{batch, call, name, start_broker};

#[tokio::test]
async fn every_advertised_version_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let range = |api| {
        SUPPORTED_APIS
            .iter()
            .find(|(k, _, _)| *k == api)
            .map(|(_, a, b)| *a..=*b)
            .unwrap()
    };

    for v in range(ApiKey::ApiVersions) {
        let mut req = ApiVersionsRequest::default();
        if v >= 3 {
            req = req
                .with_client_software_name(StrBytes::from_static_str("test"))
                .with_client_software_version(StrBytes::from_static_str("1"));
        }
        let Some(ResponseKind::ApiVersions(r)) =
            call(&broker, ApiKey::ApiVersions, v, req.into()).await
        else {
            panic!("no ApiVersions response")
        };
        assert_eq!(r.api_keys.len(), SUPPORTED_APIS.len());
    }

    for v in range(ApiKey::Metadata) {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("versions")))
            ]))
            .with_allow_auto_topic_creation(true);
        let Some(ResponseKind::Metadata(r)) = call(&broker, ApiKey::Metadata, v, req.into()).await
        else {
            panic!("no Metadata response")
        };
        assert_eq!(r.topics[0].error_code, 0, "v{v}");
        assert_eq!(r.topics[0].partitions.len(), 1);
    }
    let topic_id = broker.topics.get("versions").unwrap().record.id;

    let mut produced = 0i64;
    for v in range(ApiKey::Produce) {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("versions"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch(&format!("v{v}"))))])]);
        let Some(ResponseKind::Produce(r)) = call(&broker, ApiKey::Produce, v, req.into()).await
        else {
            panic!("no Produce response")
        };
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, produced), "v{v}");
        produced += 1;
    }

    for v in range(ApiKey::Fetch) {
        let mut topic = FetchTopic::default().with_partitions(vec![FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(0)
            .with_partition_max_bytes(1 << 20)]);
        topic = if v >= 13 {
            topic.with_topic_id(topic_id)
        } else {
            topic.with_topic(name("versions"))
        };
        let mut req = FetchRequest::default()
            .with_max_bytes(1 << 20)
            .with_topics(vec![topic]);
        if v < 15 {
            req = req.with_replica_id(BrokerId(-1));
        }
        let Some(ResponseKind::Fetch(r)) = call(&broker, ApiKey::Fetch, v, req.into()).await else {
            panic!("no Fetch response")
        };
        let p = &r.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, produced), "v{v}");
        let records = p.records.clone().unwrap_or_default();
        let sets =
            kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records.clone()).unwrap();
        let total: usize = sets.iter().map(|s| s.records.len()).sum();
        assert_eq!(
            total as i64, produced,
            "v{v}: every durable record is fetched"
        );
    }

    for v in range(ApiKey::ListOffsets) {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name("versions"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        let Some(ResponseKind::ListOffsets(r)) =
            call(&broker, ApiKey::ListOffsets, v, req.into()).await
        else {
            panic!("no ListOffsets response")
        };
        assert_eq!(r.topics[0].partitions[0].offset, produced, "v{v}");
    }

    for v in range(ApiKey::CreateTopics) {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(&format!("created-{v}")))
                .with_num_partitions(2)
                .with_replication_factor(1)]);
        let Some(ResponseKind::CreateTopics(r)) =
            call(&broker, ApiKey::CreateTopics, v, req.into()).await
        else {
            panic!("no CreateTopics response")
        };
        assert_eq!(r.topics[0].error_code, 0, "v{v}");
    }

    // DeleteTopics starts one version below CreateTopics: delete the next one up.
    for v in range(ApiKey::DeleteTopics) {
        let topic = format!("created-{}", v + 1);
        let req = if v >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(name(&topic)))
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name(&topic)])
        };
        let Some(ResponseKind::DeleteTopics(r)) =
            call(&broker, ApiKey::DeleteTopics, v, req.into()).await
        else {
            panic!("no DeleteTopics response")
        };
        assert_eq!(r.responses[0].error_code, 0, "v{v}");
        assert!(broker.topics.get(&topic).is_none());
    }
}

#[tokio::test]
async fn admin_apis_at_every_advertised_version() {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request as inc;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };

    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let range = |api| {
        SUPPORTED_APIS
            .iter()
            .find(|(k, _, _)| *k == api)
            .map(|(_, a, b)| *a..=*b)
            .unwrap()
    };
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("admin"))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    call(&broker, ApiKey::CreateTopics, 7, create.into()).await;
    for i in 0..3 {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("admin"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch(&format!("r{i}"))))])]);
        call(&broker, ApiKey::Produce, 9, req.into()).await;
    }

    let mut last_id = -1;
    for v in range(ApiKey::InitProducerId) {
        let Some(ResponseKind::InitProducerId(r)) = call(
            &broker,
            ApiKey::InitProducerId,
            v,
            InitProducerIdRequest::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .into(),
        )
        .await
        else {
            panic!("no InitProducerId response")
        };
        assert_eq!(r.error_code, 0, "v{v}");
        assert!(r.producer_id.0 > last_id, "ids are unique");
        last_id = r.producer_id.0;
    }

    for (i, v) in range(ApiKey::CreatePartitions).enumerate() {
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name("admin"))
                .with_count(2 + i as i32)]);
        let Some(ResponseKind::CreatePartitions(r)) =
            call(&broker, ApiKey::CreatePartitions, v, req.into()).await
        else {
            panic!("no CreatePartitions response")
        };
        assert_eq!(r.results[0].error_code, 0, "v{v}");
        assert_eq!(broker.topics.get("admin").unwrap().partitions.len(), 2 + i);
    }
    // Shrinking is refused.
    let shrink =
        CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name("admin"))
            .with_count(1)]);
    let Some(ResponseKind::CreatePartitions(r)) =
        call(&broker, ApiKey::CreatePartitions, 3, shrink.into()).await
    else {
        panic!()
    };
    assert_eq!(
        r.results[0].error_code,
        kafka_protocol::error::ResponseError::InvalidPartitions.code()
    );

    for v in range(ApiKey::AlterConfigs) {
        let req =
            AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("admin"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s(&format!("{}", 1000 + v))))])]);
        let Some(ResponseKind::AlterConfigs(r)) =
            call(&broker, ApiKey::AlterConfigs, v, req.into()).await
        else {
            panic!()
        };
        assert_eq!(r.responses[0].error_code, 0, "v{v}");
    }
    for v in range(ApiKey::IncrementalAlterConfigs) {
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            inc::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("admin"))
                .with_configs(vec![
                    inc::AlterableConfig::default()
                        .with_name(s("retention.bytes"))
                        .with_config_operation(0)
                        .with_value(Some(s("5000"))),
                    inc::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_config_operation(1),
                ]),
        ]);
        let Some(ResponseKind::IncrementalAlterConfigs(r)) =
            call(&broker, ApiKey::IncrementalAlterConfigs, v, req.into()).await
        else {
            panic!()
        };
        assert_eq!(r.responses[0].error_code, 0, "v{v}");
    }
    let bad = IncrementalAlterConfigsRequest::default().with_resources(vec![
        inc::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("admin"))
            .with_configs(vec![inc::AlterableConfig::default()
                .with_name(s("cleanup.policy"))
                .with_config_operation(0)
                .with_value(Some(s("compacted")))]),
    ]);
    let Some(ResponseKind::IncrementalAlterConfigs(r)) =
        call(&broker, ApiKey::IncrementalAlterConfigs, 1, bad.into()).await
    else {
        panic!()
    };
    assert_eq!(
        r.responses[0].error_code,
        kafka_protocol::error::ResponseError::InvalidConfig.code()
    );
    assert!(r.responses[0]
        .error_message
        .as_ref()
        .unwrap()
        .contains("use delete, compact or compact,delete"));

    for v in range(ApiKey::DescribeConfigs) {
        let req = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("admin")),
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s("0")),
            ]);
        let Some(ResponseKind::DescribeConfigs(r)) =
            call(&broker, ApiKey::DescribeConfigs, v, req.into()).await
        else {
            panic!()
        };
        let topic = &r.results[0];
        assert_eq!(topic.error_code, 0, "v{v}");
        let get = |n: &str| topic.configs.iter().find(|c| c.name.as_str() == n).unwrap();
        assert_eq!(
            get("retention.bytes").value.as_ref().map(|v| v.to_string()),
            Some("5000".to_string())
        );
        assert_eq!(get("retention.bytes").config_source, 1);
        assert_eq!(
            get("retention.ms").config_source,
            5,
            "deleted: back to the default"
        );
        assert!(r.results[1].configs.iter().all(|c| c.read_only));
    }

    for v in range(ApiKey::DescribeCluster) {
        let Some(ResponseKind::DescribeCluster(r)) = call(
            &broker,
            ApiKey::DescribeCluster,
            v,
            DescribeClusterRequest::default().into(),
        )
        .await
        else {
            panic!()
        };
        assert_eq!(r.brokers.len(), 1, "v{v}");
    }

    let epoch = broker.partition_leader("admin", 0).epoch;
    assert!(epoch > 0, "the controller assigned a leader");
    let epoch_query = |v: i16, current: i32| {
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(name("admin"))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_leader_epoch(0)
                    .with_current_leader_epoch(current)])]);
        let broker = broker.clone();
        async move {
            let Some(ResponseKind::OffsetForLeaderEpoch(r)) =
                call(&broker, ApiKey::OffsetForLeaderEpoch, v, req.into()).await
            else {
                panic!()
            };
            let p = &r.topics[0].partitions[0];
            (p.error_code, p.leader_epoch, p.end_offset)
        }
    };
    for v in range(ApiKey::OffsetForLeaderEpoch) {
        // Epoch 0 ended where the log ends now: no truncation.
        assert_eq!(epoch_query(v, epoch).await, (0, 0, 3), "v{v}");
        // A client behind the current leader epoch is fenced; one ahead waits.
        assert_eq!(
            epoch_query(v, epoch - 1).await.0,
            74,
            "v{v} FENCED_LEADER_EPOCH"
        );
        assert_eq!(
            epoch_query(v, epoch + 1).await.0,
            75,
            "v{v} UNKNOWN_LEADER_EPOCH"
        );
    }

    for (i, v) in range(ApiKey::DeleteRecords).enumerate() {
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(name("admin"))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(1 + i as i64)])]);
        let Some(ResponseKind::DeleteRecords(r)) =
            call(&broker, ApiKey::DeleteRecords, v, req.into()).await
        else {
            panic!()
        };
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.low_watermark), (0, 1 + i as i64), "v{v}");
    }
    let log = broker.topics.get("admin").unwrap().partitions[0].clone();
    assert_eq!(log.offsets().await.unwrap(), (3, 3));
    assert_eq!(
        broker
            .metadata
            .partition_state("admin", 0)
            .await
            .unwrap()
            .log_start_offset,
        3
    );
}

#[tokio::test]
async fn acks_zero_gets_no_response_but_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("fire")))
        ]))
        .with_allow_auto_topic_creation(true);
    call(&broker, ApiKey::Metadata, 9, req.into()).await;
    let produce = ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("fire"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch("x")))])]);
    assert!(call(&broker, ApiKey::Produce, 9, produce.into())
        .await
        .is_none());
    let log = broker.topics.get("fire").unwrap().partitions[0].clone();
    let mut hw = log.watch_high_watermark();
    tokio::time::timeout(Duration::from_secs(5), hw.wait_for(|v| *v == 1))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn scram_credentials_are_altered_and_described() {
    use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
    use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;

    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let upsert = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_static_str("alice"))
            .with_mechanism(2)
            .with_iterations(8192)
            .with_salt(Bytes::from_static(b"NaCl"))
            .with_salted_password(Bytes::from(vec![1u8; 64])),
    ]);
    let Some(ResponseKind::AlterUserScramCredentials(r)) =
        call(&broker, ApiKey::AlterUserScramCredentials, 0, upsert.into()).await
    else {
        panic!()
    };
    assert_eq!(r.results.len(), 1);
    assert_eq!(
        r.results[0].error_code, 0,
        "{:?}",
        r.results[0].error_message
    );

    let describe = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
        UserName::default().with_name(StrBytes::from_static_str("alice")),
        UserName::default().with_name(StrBytes::from_static_str("bob")),
    ]));
    let Some(ResponseKind::DescribeUserScramCredentials(r)) = call(
        &broker,
        ApiKey::DescribeUserScramCredentials,
        0,
        describe.into(),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(r.results[0].user.as_str(), "alice");
    assert_eq!(
        (
            r.results[0].credential_infos[0].mechanism,
            r.results[0].credential_infos[0].iterations
        ),
        (2, 8192)
    );
    assert_eq!(
        r.results[1].error_code,
        kafka_protocol::error::ResponseError::ResourceNotFound.code()
    );
}
