//! Writes the seed corpus under `fuzz/corpus/<target>/`: real requests for
//! every served API at its lowest and highest version, flusher frames of
//! every operation, record batches in every codec, a segment with its index
//! and an intake object. Run after a format change: `cargo run --bin
//! make-seeds`.

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafscale_broker::handlers::SUPPORTED_APIS;
use kafscale_flusher::protocol::{encode_request, Request};

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), data).expect("seed file");
}

/// A default request of every served API and version, in the fuzz target's
/// input form: API index, version offset, then the header from the
/// correlation id on and the body.
fn kafka_requests(dir: &Path) {
    for (i, (api, min, max)) in SUPPORTED_APIS.iter().enumerate() {
        for version in [*min, *max] {
            let Some(body) = default_request(*api, version) else {
                continue;
            };
            let mut header = BytesMut::new();
            RequestHeader::default()
                .with_request_api_key(*api as i16)
                .with_request_api_version(version)
                .with_correlation_id(1)
                .with_client_id(Some(StrBytes::from_static_str("seed")))
                .encode(&mut header, api.request_header_version(version))
                .expect("header");
            let mut input = vec![i as u8, (version - min) as u8];
            input.extend_from_slice(&header[4..]);
            input.extend_from_slice(&body);
            write(dir, &format!("{api:?}-v{version}"), &input);
        }
    }
}

fn default_request(api: ApiKey, version: i16) -> Option<Bytes> {
    use kafka_protocol::messages::*;
    let mut buf = BytesMut::new();
    let encoded = match api {
        ApiKey::Produce => ProduceRequest::default().encode(&mut buf, version),
        ApiKey::Fetch => FetchRequest::default().encode(&mut buf, version),
        ApiKey::ListOffsets => ListOffsetsRequest::default().encode(&mut buf, version),
        ApiKey::Metadata => MetadataRequest::default().encode(&mut buf, version),
        ApiKey::ApiVersions => ApiVersionsRequest::default().encode(&mut buf, version),
        ApiKey::CreateTopics => CreateTopicsRequest::default().encode(&mut buf, version),
        ApiKey::DeleteTopics => DeleteTopicsRequest::default().encode(&mut buf, version),
        ApiKey::InitProducerId => InitProducerIdRequest::default().encode(&mut buf, version),
        ApiKey::CreatePartitions => CreatePartitionsRequest::default().encode(&mut buf, version),
        ApiKey::DescribeConfigs => DescribeConfigsRequest::default().encode(&mut buf, version),
        ApiKey::AlterConfigs => AlterConfigsRequest::default().encode(&mut buf, version),
        ApiKey::IncrementalAlterConfigs => {
            IncrementalAlterConfigsRequest::default().encode(&mut buf, version)
        }
        ApiKey::DescribeCluster => DescribeClusterRequest::default().encode(&mut buf, version),
        ApiKey::OffsetForLeaderEpoch => {
            OffsetForLeaderEpochRequest::default().encode(&mut buf, version)
        }
        ApiKey::DeleteRecords => DeleteRecordsRequest::default().encode(&mut buf, version),
        ApiKey::FindCoordinator => FindCoordinatorRequest::default().encode(&mut buf, version),
        ApiKey::JoinGroup => JoinGroupRequest::default().encode(&mut buf, version),
        ApiKey::SyncGroup => SyncGroupRequest::default().encode(&mut buf, version),
        ApiKey::Heartbeat => HeartbeatRequest::default().encode(&mut buf, version),
        ApiKey::LeaveGroup => LeaveGroupRequest::default().encode(&mut buf, version),
        ApiKey::OffsetCommit => OffsetCommitRequest::default().encode(&mut buf, version),
        ApiKey::OffsetFetch => OffsetFetchRequest::default().encode(&mut buf, version),
        ApiKey::OffsetDelete => OffsetDeleteRequest::default().encode(&mut buf, version),
        ApiKey::DescribeGroups => DescribeGroupsRequest::default().encode(&mut buf, version),
        ApiKey::ListGroups => ListGroupsRequest::default().encode(&mut buf, version),
        ApiKey::DeleteGroups => DeleteGroupsRequest::default().encode(&mut buf, version),
        _ => return None,
    };
    // Some defaults are not encodable at some versions (fields that must be
    // set); the fuzzer reaches those from the others.
    encoded.ok().map(|_| buf.freeze())
}

fn records(n: i64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: 1_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'v'; 40 + i as usize])),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"x")),
            )]
            .into_iter()
            .collect(),
        })
        .collect()
}

fn batch(codec: Compression, n: i64) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records(n),
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .expect("batch");
    buf.freeze()
}

fn record_batches(dir: &Path) {
    for (name, codec) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        write(dir, name, &batch(codec, 5));
    }
}

fn flusher_frames(dir: &Path) {
    let topic = "seed".to_string();
    let requests = [
        Request::WriteSegment {
            topic: topic.clone(),
            partition: 0,
            not_after_ms: 1,
            batches: vec![batch(Compression::None, 2)],
        },
        Request::ReadRange {
            topic: topic.clone(),
            topic_id: [7; 16],
            partition: 0,
            offset: 0,
            max_bytes: 1024,
        },
        Request::Recover {
            topic: topic.clone(),
            topic_id: [7; 16],
            partition: 1,
            generation: 2,
        },
        Request::DeleteTopic {
            topic: topic.clone(),
            not_after_ms: 1_000,
        },
        Request::AppendIntake {
            topic: topic.clone(),
            topic_id: [7; 16],
            partition: 2,
            leader_epoch: 3,
            generation: 4,
            not_after_ms: 1_000,
            batches: vec![batch(Compression::None, 2)],
        },
        Request::Health {},
        Request::OffsetForTimestamp {
            topic: topic.clone(),
            topic_id: [7; 16],
            partition: 0,
            timestamp: 5,
        },
        Request::ProducerBatches {
            topic: topic.clone(),
            topic_id: [7; 16],
            partition: 0,
            max_bytes: 1 << 20,
        },
        Request::RetentionPoint {
            topic: topic.clone(),
            topic_id: [7; 16],
            partition: 0,
            retention_ms: 1000,
            retention_bytes: -1,
            compacted: 0,
        },
        Request::DeleteSegmentsBelow {
            topic: topic.clone(),
            partition: 0,
            offset: 10,
            min_age_ms: 0,
            not_after_ms: 1,
        },
        Request::MergeSegments {
            topic,
            partition: 0,
            target_bytes: 1 << 20,
            min_age_ms: 0,
            max_span_ms: 1000,
            not_after_ms: 1,
        },
    ];
    for (i, r) in requests.iter().enumerate() {
        write(dir, &format!("request-{i}"), &encode_request(i as u64, r));
    }
}

fn segments(dir: &Path) {
    let batches = vec![batch(Compression::None, 3), batch(Compression::Gzip, 2)];
    // Offsets as the log assigns them.
    let mut next = 0;
    let batches: Vec<Bytes> = batches
        .into_iter()
        .map(|b| {
            let mut m = BytesMut::from(&b[..]);
            m[..8].copy_from_slice(&(next as i64).to_be_bytes());
            let h = kafscale_flusher::batch::parse_header(&m).expect("header");
            next += h.offset_count();
            m.freeze()
        })
        .collect();
    let seg = kafscale_flusher::segment::encode(&batches, 1_000, 1).expect("segment");
    write(dir, "segment.kfs", &seg.kfs_bytes());
    write(dir, "segment.index", &seg.index);
    let mut short = BytesMut::new();
    short.put_slice(&seg.kfs_bytes()[..40]);
    write(dir, "truncated.kfs", &short);
    let parts = [0, 1].map(|partition| kafscale_flusher::intake::PartInput {
        topic: "seed".into(),
        topic_id: [7; 16],
        partition,
        leader_epoch: 1,
        generation: 2,
        batches: batches.clone(),
    });
    let intake = kafscale_flusher::intake::encode(&parts, 1_000).expect("intake object");
    write(dir, "intake.kfi", &intake.body);
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    kafka_requests(&root.join("kafka_request"));
    flusher_frames(&root.join("flusher_protocol"));
    record_batches(&root.join("record_batch"));
    segments(&root.join("segment"));
    println!("seeds written under {}", root.display());
}
