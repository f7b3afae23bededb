//! The cleaner end to end over a local directory store: keyed batches in
//! every codec, passes, reads across the gaps they leave, tombstones and
//! their horizon, and the leftovers of an interrupted pass.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{FlusherService, FlusherSettings};
use crate::batch;
use crate::compression::Codec;
use crate::object_store::{LocalDirStore, ObjectStore};
use crate::protocol::{request, Cleaned, ErrorKind, Range, Request, Response};
use crate::records::{self, test_support::client_batch};
use crate::segment;

fn service(dir: &std::path::Path) -> Arc<FlusherService> {
    FlusherService::new(
        Arc::new(LocalDirStore::new(dir).unwrap()),
        FlusherSettings {
            prefix: "ns/c1".into(),
            index_interval: 2,
            cache_bytes: 1 << 20,
            whole_segment_bytes: 1 << 20,
            intake: crate::intake_writer::IntakeSettings {
                window: Duration::from_millis(20),
                max_bytes: 1 << 20,
            },
            cleaner_memory_bytes: 1 << 20,
        },
        crate::metrics::FlusherMetrics::detached(),
        Arc::new(crate::metrics::StoreHealth::new(Default::default())),
    )
}

const CODECS: [Codec; 5] = [
    Codec::None,
    Codec::Gzip,
    Codec::Snappy { framed: true },
    Codec::Lz4,
    Codec::Zstd,
];

/// What was written: offset → (key, value).
type Log = BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>;

/// Writes one segment per entry of `segments` (records as (key, value)),
/// offsets from `from` on, cycling through the codecs.
async fn write(
    svc: &FlusherService,
    from: i64,
    segments: &[Vec<(String, Option<String>)>],
    log: &mut Log,
) -> i64 {
    let mut next = from;
    for (i, records) in segments.iter().enumerate() {
        let fields: Vec<records::test_support::TestRecord<'_>> = records
            .iter()
            .map(|(k, v)| (0, Some(k.as_bytes()), v.as_ref().map(|v| v.as_bytes())))
            .collect();
        let b = client_batch(next, CODECS[i % CODECS.len()], &fields);
        for (j, (k, v)) in records.iter().enumerate() {
            log.insert(
                next + j as i64,
                (k.clone().into_bytes(), v.clone().map(String::into_bytes)),
            );
        }
        next += records.len() as i64;
        svc.handle(Request::WriteSegment(request::WriteSegment {
            topic: "t".into(),
            partition: 0,
            not_after_ms: i64::MAX,
            batches: vec![b],
        }))
        .await
        .unwrap();
    }
    next
}

fn clean_request(delete_retention_ms: i64, not_after_ms: i64) -> Request {
    Request::CleanSegments(request::CleanSegments {
        topic: "t".into(),
        partition: 0,
        min_age_ms: 0,
        max_lag_ms: i64::MAX,
        min_dirty_ratio_ppm: 0,
        delete_retention_ms,
        target_bytes: 1 << 20,
        not_after_ms,
    })
}

async fn clean(svc: &FlusherService, delete_retention_ms: i64) -> Cleaned {
    loop {
        match svc
            .handle(clean_request(delete_retention_ms, i64::MAX))
            .await
            .unwrap()
        {
            Response::Cleaned(c) if c.more == 1 || c.removed > 0 => continue,
            Response::Cleaned(c) => return c,
            other => panic!("expected Cleaned, got {other:?}"),
        }
    }
}

/// Reads `t`/0 from offset 0 up to `end` as a consumer does: every record
/// at its offset.
async fn read_records(svc: &FlusherService, end: i64) -> Log {
    let mut out = Log::new();
    let mut offset = 0;
    while offset < end {
        let request = Request::ReadRange(request::ReadRange {
            topic: "t".into(),
            topic_id: [0; 16],
            partition: 0,
            offset,
            max_bytes: 1,
        });
        let Response::Range(Range { batches }) = svc.handle(request).await.unwrap() else {
            panic!("not a range")
        };
        let h = batch::validate(&batches).unwrap_or_else(|e| panic!("offset {offset}: {e}"));
        assert!(h.last_offset() >= offset, "a batch before {offset}");
        let plain = records::decompress(&batches, &h, 1 << 20).unwrap();
        for r in records::parse(&plain, h.records_count).unwrap() {
            let at = h.base_offset + i64::from(r.offset_delta);
            if at >= offset {
                let key = r.key.map(<[u8]>::to_vec).unwrap_or_default();
                assert!(out.insert(at, (key, r.value.map(<[u8]>::to_vec))).is_none());
            }
        }
        offset = h.last_offset() + 1;
    }
    out
}

/// Updates of `keys` keys, a tombstone for `k3` in the middle.
fn updates(round: usize, keys: usize) -> Vec<Vec<(String, Option<String>)>> {
    (0..6)
        .map(|s| {
            (0..keys)
                .map(|k| {
                    let value = (!(s == 3 && k == 3)).then(|| format!("r{round}s{s}"));
                    (format!("k{k}"), value)
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn a_pass_keeps_the_latest_record_of_every_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let mut log = Log::new();
    let end = write(&svc, 0, &updates(0, 5), &mut log).await;
    let pass = clean(&svc, 60_000).await;
    assert_eq!((pass.segments, pass.keys), (5, 5), "{pass:?}");
    let read = read_records(&svc, end).await;
    // The newest segment (offsets 25..30) is untouched; before it, each key
    // keeps its record with the highest offset (k3's tombstone at 18 was
    // superseded by its value at 23).
    let cleaned_end = 25;
    let mut expected = Log::new();
    let mut latest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for (&at, (k, _)) in log.range(..cleaned_end) {
        latest.insert(k.clone(), at);
    }
    for (&at, record) in &log {
        if at >= cleaned_end || latest.get(&record.0) == Some(&at) {
            expected.insert(at, record.clone());
        }
    }
    assert_eq!(read, expected);
    // A read inside a gap goes on at the next record.
    assert!(!read.contains_key(&3));
    // The plan found nothing left to clean.
    let again = clean(&svc, 60_000).await;
    assert_eq!(again.written, 0, "{again:?}");
}

#[tokio::test]
async fn a_tombstone_stays_until_its_horizon_then_goes_without_bringing_older_values_back() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let mut log = Log::new();
    // k0 is written, then deleted; a last segment keeps the head.
    let rounds = vec![
        vec![
            ("k0".to_string(), Some("a".to_string())),
            ("k1".into(), Some("x".into())),
        ],
        vec![("k0".to_string(), Some("b".to_string()))],
        vec![("k0".to_string(), None)],
        vec![("k1".to_string(), Some("y".to_string()))],
    ];
    let end = write(&svc, 0, &rounds, &mut log).await;
    clean(&svc, 0).await;
    let read = read_records(&svc, end).await;
    // The tombstone is kept (the pass set its horizon), the old values went.
    assert_eq!(read.get(&3), Some(&(b"k0".to_vec(), None)));
    assert!(!read.contains_key(&0) && !read.contains_key(&2));
    // A later pass, past the horizon, removes it; nothing of k0 remains.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let end = write(
        &svc,
        end,
        &[vec![("k2".into(), Some("z".into()))]],
        &mut log,
    )
    .await;
    clean(&svc, 0).await;
    let read = read_records(&svc, end).await;
    assert!(read.values().all(|(k, _)| k != b"k0"), "{read:?}");
    assert_eq!(read.get(&4), Some(&(b"k1".to_vec(), Some(b"y".to_vec()))));
    assert_eq!(read.len(), 2, "{read:?}");
}

#[tokio::test]
async fn leftovers_of_an_interrupted_pass_are_removed_once_checked() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let mut log = Log::new();
    let end = write(&svc, 0, &updates(0, 3), &mut log).await;
    let store = LocalDirStore::new(dir.path()).unwrap();
    let second = segment::segment_key("ns/c1", "t", 0, 3);
    let saved = store.get(&second).await.unwrap();
    clean(&svc, 60_000).await;
    let after = read_records(&svc, end).await;
    // A crash between the cleaned segment's PUT and the deletes leaves the
    // group's other segments: readers still see each record once at its
    // offset, and the next pass checks and removes them.
    store.put_replacing(&second, saved, None).await.unwrap();
    assert!(read_records(&service(dir.path()), end).await.len() >= after.len());
    let fresh = service(dir.path());
    let pass = fresh.handle(clean_request(60_000, i64::MAX)).await.unwrap();
    assert!(
        matches!(pass, Response::Cleaned(Cleaned { removed: 1, .. })),
        "{pass:?}"
    );
    assert_eq!(read_records(&fresh, end).await, after);
    // Other data where the cleaned segment holds a record is not a
    // leftover: the pass refuses to go on.
    let foreign = client_batch(12, Codec::None, &[(0, Some(b"k9"), Some(b"?"))]);
    let foreign = segment::encode(&[foreign], 0, 2).unwrap();
    let fifth = segment::segment_key("ns/c1", "t", 0, 12);
    store
        .put_replacing(&fifth, foreign.kfs_bytes(), None)
        .await
        .unwrap();
    let err = service(dir.path())
        .handle(clean_request(60_000, i64::MAX))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Corrupt, "{err}");
}

#[tokio::test]
async fn a_pass_out_of_time_goes_on_at_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let mut log = Log::new();
    let end = write(&svc, 0, &updates(0, 4), &mut log).await;
    let before = read_records(&svc, end).await;
    // A deadline already passed: the pass is planned, nothing is written.
    let r = svc.handle(clean_request(60_000, 1)).await.unwrap();
    assert!(
        matches!(
            r,
            Response::Cleaned(Cleaned {
                more: 1,
                written: 0,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(read_records(&svc, end).await, before);
    let done = clean(&svc, 60_000).await;
    assert_eq!(done.more, 0);
    assert!(read_records(&svc, end).await.len() < before.len());
}
