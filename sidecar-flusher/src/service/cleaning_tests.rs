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
    clean_request_into(delete_retention_ms, not_after_ms, 1 << 20)
}

fn clean_request_into(delete_retention_ms: i64, not_after_ms: i64, target_bytes: u64) -> Request {
    Request::CleanSegments(request::CleanSegments {
        topic: "t".into(),
        partition: 0,
        min_age_ms: 0,
        max_lag_ms: i64::MAX,
        min_dirty_ratio_ppm: 0,
        delete_retention_ms,
        target_bytes,
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

/// A store that dies after `left` more writes or deletes (each key of a
/// multi-key delete counts): from then on it refuses everything, as the
/// flusher's process would be gone.
struct Dying {
    inner: LocalDirStore,
    left: std::sync::atomic::AtomicI64,
}

impl Dying {
    fn step(&self) -> Result<(), crate::object_store::StoreError> {
        use std::sync::atomic::Ordering;
        if self.left.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(crate::object_store::StoreError::Unavailable("died".into()));
        }
        Ok(())
    }

    fn dead(&self) -> bool {
        self.left.load(std::sync::atomic::Ordering::SeqCst) < 0
    }
}

#[async_trait::async_trait]
impl ObjectStore for Dying {
    async fn put_if_absent(
        &self,
        key: &str,
        body: bytes::Bytes,
    ) -> Result<(), crate::object_store::StoreError> {
        self.step()?;
        self.inner.put_if_absent(key, body).await
    }
    async fn put_replacing(
        &self,
        key: &str,
        body: bytes::Bytes,
        expected_etag: Option<&str>,
    ) -> Result<(), crate::object_store::StoreError> {
        self.step()?;
        self.inner.put_replacing(key, body, expected_etag).await
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, crate::object_store::StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, crate::object_store::StoreError> {
        self.inner.get_range(key, range).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<crate::object_store::ObjectInfo>, crate::object_store::StoreError> {
        if self.dead() {
            return Err(crate::object_store::StoreError::Unavailable("died".into()));
        }
        self.inner.list(prefix).await
    }
    async fn delete(&self, keys: &[String]) -> Result<(), crate::object_store::StoreError> {
        for key in keys {
            self.step()?;
            self.inner.delete(std::slice::from_ref(key)).await?;
        }
        Ok(())
    }
    async fn probe(&self) -> Result<(), crate::object_store::StoreError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "dying".into()
    }
}

/// Every key's latest value is readable (or, for a key whose latest record
/// is a tombstone, the tombstone or nothing of the key at all), and every
/// record read is the one written at its offset.
fn check_latest(read: &Log, log: &Log, when: &str) {
    let mut latest: BTreeMap<&[u8], (i64, &Option<Vec<u8>>)> = BTreeMap::new();
    for (&at, (k, v)) in log {
        latest.insert(k, (at, v));
    }
    for (at, record) in read {
        assert_eq!(
            log.get(at),
            Some(record),
            "{when}: offset {at} holds another record"
        );
    }
    for (key, (at, value)) in latest {
        match value {
            Some(_) => assert!(
                read.contains_key(&at),
                "{when}: the latest value of {key:?} (offset {at}) is gone"
            ),
            None => assert!(
                read.contains_key(&at) || read.values().all(|(k, _)| k.as_slice() != key),
                "{when}: an older value of {key:?} came back without its tombstone"
            ),
        }
    }
}

#[tokio::test]
async fn a_crash_at_every_step_of_a_pass_keeps_every_latest_value() {
    for crash_after in 0.. {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let mut log = Log::new();
        // A first pass sets the horizon of k9's tombstone (delete.retention.ms
        // 0), with k9's value before it gone; the pass that dies removes it.
        let end = write(&svc, 0, &updates(0, 4), &mut log).await;
        let k9 = |v: Option<&str>| vec![("k9".to_string(), v.map(str::to_string))];
        let end = write(
            &svc,
            end,
            &[
                k9(Some("v")),
                k9(None),
                vec![("k8".into(), Some("w".into()))],
            ],
            &mut log,
        )
        .await;
        clean(&svc, 0).await;
        assert!(!read_records(&svc, end)
            .await
            .values()
            .any(|(k, v)| k == b"k9" && v.is_some()));
        let end = write(&svc, end, &updates(1, 4), &mut log).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        let dying = FlusherService::new(
            Arc::new(Dying {
                inner: LocalDirStore::new(dir.path()).unwrap(),
                left: std::sync::atomic::AtomicI64::new(crash_after),
            }),
            FlusherSettings {
                prefix: "ns/c1".into(),
                index_interval: 2,
                whole_segment_bytes: 1 << 20,
                cleaner_memory_bytes: 1 << 20,
                ..FlusherSettings::default()
            },
            crate::metrics::FlusherMetrics::detached(),
            Arc::new(crate::metrics::StoreHealth::new(Default::default())),
        );
        let mut finished = false;
        for _ in 0..50 {
            match dying.handle(clean_request(0, i64::MAX)).await {
                Ok(Response::Cleaned(c)) if c.more == 0 && c.removed == 0 && c.segments == 0 => {
                    finished = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // What a restarted flusher finds, and what it makes of it.
        let restarted = service(dir.path());
        check_latest(
            &read_records(&restarted, end).await,
            &log,
            &format!("crash after {crash_after} writes"),
        );
        clean(&restarted, 0).await;
        let settled = read_records(&restarted, end).await;
        check_latest(
            &settled,
            &log,
            &format!("the pass after a crash after {crash_after} writes"),
        );
        if finished {
            // Leftovers, groups and their deletes: many steps to crash in.
            assert!(crash_after > 10, "only {crash_after} writes to crash in");
            assert!(
                settled.values().all(|(k, _)| k != b"k9"),
                "the tombstone outlived its horizon"
            );
            break;
        }
    }
}

#[tokio::test]
async fn groups_whose_records_all_went_join_the_next_instead_of_leaving_empty_segments() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let mut log = Log::new();
    // Six segments updating k0..k2; groups of one segment each. Only the
    // fifth keeps records (the latest of each key); the four before it
    // empty and are replaced together with it.
    let end = write(&svc, 0, &updates(0, 3), &mut log).await;
    loop {
        match svc
            .handle(clean_request_into(60_000, i64::MAX, 1))
            .await
            .unwrap()
        {
            Response::Cleaned(c) if c.more == 1 => continue,
            Response::Cleaned(_) => break,
            other => panic!("{other:?}"),
        }
    }
    let kfs: Vec<String> = LocalDirStore::new(dir.path())
        .unwrap()
        .list("ns/c1/t/0/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".kfs"))
        .collect();
    assert_eq!(
        kfs,
        vec![
            segment::segment_key("ns/c1", "t", 0, 0),
            segment::segment_key("ns/c1", "t", 0, 15)
        ]
    );
    let read = read_records(&svc, end).await;
    assert_eq!(
        read.keys().copied().collect::<Vec<_>>(),
        vec![12, 13, 14, 15, 16, 17]
    );
}
