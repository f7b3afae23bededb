//! The maintenance jobs that delete or rewrite stored data (topic deletion,
//! retention, intake compaction), against object storage that refuses them
//! or loses their answers: every acknowledged record stays readable once at
//! its offset, and the jobs finish once storage answers again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use kafscale_broker::partitions::log::WritePath;
use kafscale_broker::Broker;
use kafscale_flusher_protocol::Op;

/// The brokers' session timeout in these tests: short, because a leader
/// changes a partition's objects only once it has led it that long.
const SESSION: Duration = Duration::from_secs(2);

async fn await_maintainable() {
    tokio::time::sleep(SESSION + Duration::from_millis(300)).await;
}

async fn create_topic(broker: &Arc<Broker>, topic: &str, configs: &[(&str, &str)]) -> i16 {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(configs)]);
    let Some(ResponseKind::CreateTopics(r)) =
        call(broker, ApiKey::CreateTopics, 7, req.into()).await
    else {
        panic!("no CreateTopics response")
    };
    r.topics[0].error_code
}

/// Produces one record (acks=all); its error code and offset.
async fn produce(broker: &Arc<Broker>, topic: &str, value: &str) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(value)))])]);
    let Some(ResponseKind::Produce(r)) = call(broker, ApiKey::Produce, 9, req.into()).await else {
        panic!("no Produce response")
    };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Produces `count` records named `{prefix}-{i}`, each acknowledged; their offsets.
async fn produce_acknowledged(
    broker: &Arc<Broker>,
    topic: &str,
    prefix: &str,
    count: usize,
) -> Vec<(i64, String)> {
    let mut acknowledged = Vec::new();
    for i in 0..count {
        let value = format!("{prefix}-{i}");
        let (error, offset) = produce(broker, topic, &value).await;
        assert_eq!(error, 0, "producing {value}");
        acknowledged.push((offset, value));
    }
    acknowledged
}

/// Every record from `from` to the high watermark, as (offset, value).
async fn read_all(broker: &Arc<Broker>, topic: &str, from: i64) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let Some(ResponseKind::Fetch(r)) = call(broker, ApiKey::Fetch, 12, req.into()).await else {
            panic!("no Fetch response")
        };
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetching {topic} at {offset}");
        let mut records = p.records.clone().unwrap_or_default();
        let sets = RecordBatchDecoder::decode_all(&mut records).unwrap();
        let before = out.len();
        for record in sets.iter().flat_map(|s| s.records.iter()) {
            if record.offset >= offset {
                let value = record.value.clone().unwrap_or_default();
                out.push((record.offset, String::from_utf8_lossy(&value).into_owned()));
            }
        }
        match out.last() {
            Some((last, _)) if out.len() > before => offset = last + 1,
            _ => return out,
        }
        if offset >= p.high_watermark {
            return out;
        }
    }
}

async fn earliest_offset(broker: &Arc<Broker>, topic: &str) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2)])]);
    let Some(ResponseKind::ListOffsets(r)) = call(broker, ApiKey::ListOffsets, 7, req.into()).await
    else {
        panic!("no ListOffsets response")
    };
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

/// Files under the object directory whose path names `topic`.
fn stored_objects_of(dir: &std::path::Path, topic: &str) -> Vec<String> {
    fn walk(at: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path.to_string_lossy().into_owned());
            }
        }
    }
    let mut all = Vec::new();
    walk(&dir.join("objects"), &mut all);
    all.retain(|p| p.contains(&format!("/{topic}/")));
    all
}

/// Deleting a topic while object storage refuses the sweep: the topic is
/// hidden at once, its name stays taken, and nothing of it is lost or kept
/// for good; once storage answers, the deletion finishes and a topic created
/// under the name starts empty, never adopting the old records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_storage_refuses_finishes_once_it_answers_and_the_name_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, storage) = start_broker_behind_faults(dir.path(), |c| {
        c.log.write_path = WritePath::Segments;
        c.auto_create_topics = false;
    })
    .await;
    assert_eq!(create_topic(&broker, "orders", &[]).await, 0);
    produce_acknowledged(&broker, "orders", "old", 5).await;
    assert!(!stored_objects_of(dir.path(), "orders").is_empty());

    storage.set(Op::DeleteTopic, Some(common::Fault::Unavailable));
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(1500)
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(name("orders")))
        ]);
    let Some(ResponseKind::DeleteTopics(r)) =
        call(&broker, ApiKey::DeleteTopics, 6, req.into()).await
    else {
        panic!("no DeleteTopics response")
    };
    assert_eq!(
        r.responses[0].error_code,
        ResponseError::RequestTimedOut.code(),
        "a deletion that cannot finish in time says so: {:?}",
        r.responses[0].error_message
    );
    assert!(storage.seen(Op::DeleteTopic) > 0, "the sweep was tried");
    assert!(
        broker.topics.get("orders").is_none(),
        "the topic is hidden at once"
    );
    assert!(
        !stored_objects_of(dir.path(), "orders").is_empty(),
        "nothing was deleted while storage refused"
    );
    assert_ne!(
        create_topic(&broker, "orders", &[]).await,
        0,
        "the name stays taken until the old topic's objects are gone"
    );

    storage.set(Op::DeleteTopic, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while broker.metadata.get_topic("orders").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deletion did not finish after storage came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stored_objects_of(dir.path(), "orders"),
        Vec::<String>::new(),
        "the old topic's objects are gone"
    );

    assert_eq!(create_topic(&broker, "orders", &[]).await, 0);
    assert_eq!(produce(&broker, "orders", "new-0").await, (0, 0));
    assert_eq!(
        read_all(&broker, "orders", 0).await,
        vec![(0, "new-0".into())]
    );
}

/// Retention against storage that refuses its question, then loses the
/// answer to its delete: the log start moves only when stored, every record
/// at or above it stays readable at its offset, and a later pass finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_storage_refuses_or_forgets_never_hides_a_record_above_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, storage) = start_broker_behind_faults(dir.path(), |c| {
        c.log.write_path = WritePath::Segments;
        // Every segment may be deleted as soon as retention passes it.
        c.merge.min_age = Duration::ZERO;
        c.session_timeout = SESSION;
    })
    .await;
    // Each acknowledged produce is one segment of one record (~80 bytes);
    // keep about the newest few.
    assert_eq!(
        create_topic(&broker, "events", &[("retention.bytes", "300")]).await,
        0
    );
    let acknowledged = produce_acknowledged(&broker, "events", "e", 12).await;
    await_maintainable().await;

    storage.set(Op::RetentionPoint, Some(common::Fault::Unavailable));
    kafscale_broker::maintenance::retention::enforce_once(&broker.maintenance).await;
    assert_eq!(earliest_offset(&broker, "events").await, 0, "nothing moved");
    assert_eq!(read_all(&broker, "events", 0).await, acknowledged);

    storage.set(Op::RetentionPoint, None);
    storage.set(Op::DeleteSegmentsBelow, Some(common::Fault::DoneThenLost));
    kafscale_broker::maintenance::retention::enforce_once(&broker.maintenance).await;
    let log_start = earliest_offset(&broker, "events").await;
    assert!(
        log_start > 0 && log_start < 12,
        "retention applied the log start: {log_start}"
    );
    let kept: Vec<_> = acknowledged
        .iter()
        .filter(|(o, _)| *o >= log_start)
        .cloned()
        .collect();
    assert_eq!(read_all(&broker, "events", log_start).await, kept);

    storage.set(Op::DeleteSegmentsBelow, None);
    let deletes = storage.seen(Op::DeleteSegmentsBelow);
    kafscale_broker::maintenance::retention::enforce_once(&broker.maintenance).await;
    assert!(
        storage.seen(Op::DeleteSegmentsBelow) > deletes,
        "a later pass deletes what the lost answer left in doubt"
    );
    assert_eq!(earliest_offset(&broker, "events").await, log_start);
    assert_eq!(read_all(&broker, "events", log_start).await, kept);
}

/// Intake compaction whose answer is lost (its segments written, its point
/// not recorded) and a clean-up storage refuses: compaction is redone
/// without duplicating a record, and every acknowledged record is read from
/// object storage once, at its offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_with_lost_answers_keeps_every_record_once_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, storage) = start_broker_behind_faults(dir.path(), |c| {
        c.log.write_path = WritePath::Intake;
        // Reads come from object storage, not the in-memory tail.
        c.log.memory_budget = 0;
        c.compaction.max_delay = Duration::ZERO;
        c.session_timeout = SESSION;
    })
    .await;
    assert_eq!(create_topic(&broker, "ledger", &[]).await, 0);
    let mut acknowledged = produce_acknowledged(&broker, "ledger", "a", 10).await;
    await_maintainable().await;

    storage.set(Op::CompactIntake, Some(common::Fault::DoneThenLost));
    let mut recorded = Default::default();
    kafscale_broker::maintenance::intake_compaction::compact_once(
        &broker.maintenance,
        &mut recorded,
    )
    .await;
    assert!(storage.seen(Op::CompactIntake) > 0, "compaction was tried");
    assert!(
        broker
            .metadata
            .compacted_offsets()
            .await
            .unwrap()
            .is_empty(),
        "no compaction point is recorded for an answer that was lost"
    );
    assert_eq!(read_all(&broker, "ledger", 0).await, acknowledged);

    storage.set(Op::CompactIntake, None);
    acknowledged.extend(produce_acknowledged(&broker, "ledger", "b", 5).await);
    kafscale_broker::maintenance::intake_compaction::compact_once(
        &broker.maintenance,
        &mut recorded,
    )
    .await;
    let points = broker.metadata.compacted_offsets().await.unwrap();
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(
        points[0].2.last_offset, 14,
        "compacted up to the high watermark"
    );

    storage.set(Op::CollectIntake, Some(common::Fault::Unavailable));
    kafscale_broker::maintenance::intake_compaction::clean_up_once(&broker.maintenance).await;
    storage.set(Op::CollectIntake, None);
    kafscale_broker::maintenance::intake_compaction::clean_up_once(&broker.maintenance).await;
    assert_eq!(read_all(&broker, "ledger", 0).await, acknowledged);
}
