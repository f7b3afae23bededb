//! CPU cost of produce-path record validation, per GiB of batches, for each
//! codec, with batches shaped like ProducerPerformance's (1 KiB records,
//! 16 KiB and 1 MiB batches). Prints numbers; asserts nothing.
//!
//!     cargo run --release -p kafscale-broker --example validation_cost

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafscale_broker::partitions::record_validation::{validate, RecordLimits};
use kafscale_flusher::batch;

fn batch_of(records: usize, record_bytes: usize, codec: Compression) -> Bytes {
    // Text-like values, so that compression has something to do.
    let value: Vec<u8> = (0..record_bytes).map(|i| b"kafscale "[i % 9]).collect();
    let recs: Vec<Record> = (0..records as i64)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 1,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i,
            key: None,
            value: Some(Bytes::from(value.clone())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .expect("encodes");
    buf.freeze()
}

fn main() {
    let limits = RecordLimits::default();
    println!(
        "| codec | batch | uncompressed MiB/s validated | CPU s per GiB produced (wire bytes) |"
    );
    println!("|---|---|---|---|");
    for (name, codec) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        for records in [16usize, 1024] {
            let b = batch_of(records, 1024, codec);
            let h = batch::validate(&b).expect("valid");
            let uncompressed = (records * 1024) as f64;
            // Enough rounds for about 512 MiB of uncompressed records.
            let rounds = ((512.0 * 1048576.0) / uncompressed).ceil() as usize;
            let started = Instant::now();
            for _ in 0..rounds {
                validate(&h, &b, &limits, false).expect("valid batch");
            }
            let secs = started.elapsed().as_secs_f64();
            let wire_gib = (b.len() * rounds) as f64 / (1u64 << 30) as f64;
            println!(
                "| {name} | {records} × 1 KiB ({} B on the wire) | {:.0} | {:.3} |",
                b.len(),
                uncompressed * rounds as f64 / 1048576.0 / secs,
                secs / wire_gib
            );
        }
    }
}
