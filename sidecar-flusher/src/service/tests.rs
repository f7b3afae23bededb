//! The service end to end over a local directory store: writes, reads,
//! recovery, retention and merging together.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{FlusherService, FlusherSettings};
use crate::batch::test_support::make_batch;
use crate::batch::{rewrite, BatchRewrite};
use crate::object_store::{LocalDirStore, ObjectInfo};
use crate::object_store::{ObjectStore, StoreError};
use crate::protocol::{
    request, Deleted, ErrorKind, Merged, Range, Recovered, Request, Response, RetentionPoint,
};
use crate::{batch, segment};

fn batch_at(base: i64, n: i32) -> Bytes {
    rewrite(
        &make_batch(0, n, &[1u8; 100]),
        BatchRewrite {
            base_offset: base,
            partition_leader_epoch: 0,
            log_append_time_ms: None,
        },
    )
}

/// One batch of `counts[i]` records each, offsets from `from` on.
fn batches_from(from: i64, counts: &[i32]) -> Vec<Bytes> {
    let mut next = from;
    counts
        .iter()
        .map(|&n| {
            let b = batch_at(next, n);
            next += i64::from(n);
            b
        })
        .collect()
}

async fn service(dir: &std::path::Path, whole: u64) -> Arc<FlusherService> {
    service_on(Arc::new(LocalDirStore::new(dir).unwrap()), whole)
}

fn service_on(store: Arc<dyn ObjectStore>, whole: u64) -> Arc<FlusherService> {
    FlusherService::new(
        store,
        FlusherSettings {
            prefix: "ns/c1".into(),
            index_interval: 2,
            cache_bytes: 1 << 20,
            whole_segment_bytes: whole,
            intake: crate::intake_writer::IntakeSettings {
                window: Duration::from_millis(20),
                max_bytes: 1 << 20,
            },
            ..FlusherSettings::default()
        },
        crate::metrics::FlusherMetrics::detached(),
        Arc::new(crate::metrics::StoreHealth::new(Default::default())),
    )
}

#[tokio::test]
async fn write_recover_read_and_fence() {
    let dir = tempfile::tempdir().unwrap();
    for whole in [1 << 20, 0] {
        let svc = service(dir.path(), whole).await;
        let write = |base: i64, sizes: &[i32]| {
            let batches = batches_from(base, sizes);
            Request::WriteSegment(request::WriteSegment {
                topic: "t".into(),
                partition: 0,
                not_after_ms: i64::MAX,
                batches,
            })
        };
        if whole > 0 {
            svc.handle(write(0, &[2, 3])).await.unwrap();
            svc.handle(write(5, &[1, 4])).await.unwrap();
            // A second writer for an existing key with different bytes is fenced.
            let err = svc.handle(write(5, &[2])).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::Conflict);
        }
        // A fresh service (a restarted flusher) recovers from the listing and footer.
        let fresh = service(dir.path(), whole).await;
        assert_eq!(
            recover(&fresh).await,
            Response::Recovered(Recovered {
                log_start_offset: 0,
                log_end_offset: 10,
                segment_count: 2
            })
        );
        for (offset, want_base) in [(0, 0), (3, 2), (6, 6), (9, 6)] {
            let batches = read_at(&fresh, offset).await;
            let h = batch::validate(&batches).unwrap();
            assert_eq!(h.base_offset, want_base, "offset {offset} whole={whole}");
            assert_eq!(
                batches.len(),
                h.size,
                "max_bytes 1 still gives one whole batch"
            );
        }
    }
}

/// Writes segments of `counts[i]` records (one batch each) from `from` on.
async fn write_segments(svc: &Arc<FlusherService>, from: i64, counts: &[i32]) -> Vec<Bytes> {
    let mut next = from;
    let mut all = Vec::new();
    for &n in counts {
        let b = batch_at(next, n);
        next += i64::from(n);
        all.push(b.clone());
        svc.handle(Request::WriteSegment(request::WriteSegment {
            topic: "t".into(),
            partition: 0,
            not_after_ms: i64::MAX,
            batches: vec![b],
        }))
        .await
        .unwrap();
    }
    all
}

async fn recover(svc: &Arc<FlusherService>) -> Response {
    let request = Request::Recover(request::Recover {
        topic: "t".into(),
        topic_id: [0; 16],
        partition: 0,
        generation: 2,
    });
    svc.handle(request).await.unwrap()
}

#[tokio::test]
async fn recovery_refuses_a_footer_that_disagrees_with_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 1 << 20).await;
    write_segments(&svc, 0, &[3, 4]).await;
    let newest = segment_files(dir.path()).await.pop().unwrap();
    // A footer claiming ten more offsets than the segment holds, magic intact.
    let mut raw = std::fs::read(&newest).unwrap();
    let at = raw.len() - segment::SEGMENT_FOOTER_LEN + 4;
    raw[at..at + 8].copy_from_slice(&16i64.to_be_bytes());
    std::fs::write(&newest, raw).unwrap();
    let fresh = service(dir.path(), 1 << 20).await;
    let err = fresh
        .handle(Request::Recover(request::Recover {
            topic: "t".into(),
            topic_id: [0; 16],
            partition: 0,
            generation: 2,
        }))
        .await
        .expect_err("a log end was taken from a footer its header contradicts");
    assert_eq!(err.kind, ErrorKind::Corrupt, "{err}");
    assert!(err.message.contains("last offset 16"), "{err}");
}

/// Lists every object but the newest `.kfs`, as a listing that lags
/// the writes would.
struct LaggingListing(LocalDirStore);

#[async_trait::async_trait]
impl ObjectStore for LaggingListing {
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.0.put_if_absent(key, body).await
    }
    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        expected_etag: Option<&str>,
    ) -> Result<(), StoreError> {
        self.0.put_replacing(key, body, expected_etag).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.0.get(key).await
    }
    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes, StoreError> {
        self.0.get_range(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut all = self.0.list(prefix).await?;
        if let Some(newest) = all.iter().rposition(|o| o.key.ends_with(".kfs")) {
            all.remove(newest);
        }
        Ok(all)
    }
    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        self.0.delete(keys).await
    }
    async fn probe(&self) -> Result<(), StoreError> {
        self.0.probe().await
    }
    fn describe(&self) -> String {
        "lagging listing".into()
    }
}

#[tokio::test]
async fn a_read_whose_listing_stays_stale_fails_instead_of_returning_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_segments(&service(dir.path(), 1 << 20).await, 0, &[3, 3]).await;
    let lagging = FlusherService::new(
        Arc::new(LaggingListing(LocalDirStore::new(dir.path()).unwrap())),
        FlusherSettings {
            prefix: "ns/c1".into(),
            ..FlusherSettings::default()
        },
        crate::metrics::FlusherMetrics::detached(),
        Arc::new(crate::metrics::StoreHealth::new(Default::default())),
    );
    let read = lagging
        .handle(Request::ReadRange(request::ReadRange {
            topic: "t".into(),
            topic_id: [0; 16],
            partition: 0,
            offset: 4,
            max_bytes: 1 << 20,
        }))
        .await;
    let err = read.expect_err("an empty range was returned where data exists");
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
}

/// What a cold read of `t`/0 at `offset` returns with the smallest max bytes.
async fn read_at(svc: &Arc<FlusherService>, offset: i64) -> Bytes {
    let request = Request::ReadRange(request::ReadRange {
        topic: "t".into(),
        topic_id: [0; 16],
        partition: 0,
        offset,
        max_bytes: 1,
    });
    match svc.handle(request).await.unwrap() {
        Response::Range(Range { batches }) => batches,
        other => panic!("expected a range, got {other:?}"),
    }
}

/// Reads the whole partition from `offset` 0 the way a consumer does.
async fn read_all(svc: &Arc<FlusherService>, end: i64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < end {
        let batches = read_at(svc, offset).await;
        let h = batch::validate(&batches).unwrap_or_else(|e| panic!("offset {offset}: {e}"));
        out.push(batches.slice(..h.size));
        offset = h.last_offset() + 1;
    }
    out
}

fn merge_request(not_after_ms: i64) -> Request {
    merge_request_within(not_after_ms, i64::MAX)
}

fn merge_request_within(not_after_ms: i64, max_span_ms: i64) -> Request {
    Request::MergeSegments(request::MergeSegments {
        topic: "t".into(),
        partition: 0,
        target_bytes: 1 << 20,
        min_age_ms: 0,
        max_span_ms,
        not_after_ms,
    })
}

async fn segment_bases(dir: &std::path::Path) -> Vec<i64> {
    LocalDirStore::new(dir)
        .unwrap()
        .list("ns/c1/t/0/")
        .await
        .unwrap()
        .iter()
        .filter_map(|o| segment::base_offset_from_key(&o.key))
        .collect()
}

/// Paths of the `.kfs` files of `t`/0, in offset order.
async fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    LocalDirStore::new(dir)
        .unwrap()
        .list("ns/c1/t/0/")
        .await
        .unwrap()
        .iter()
        .filter(|o| o.key.ends_with(".kfs"))
        .map(|o| dir.join(&o.key))
        .collect()
}

#[tokio::test]
async fn merging_keeps_every_offset_once_and_never_touches_the_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 1 << 20).await;
    let written = write_segments(&svc, 0, &[2, 3, 1, 4, 2, 3]).await;
    // Warm the reader's cache and listing with the small segments first.
    assert_eq!(read_all(&svc, 15).await, written);
    // Past the session deadline a merge changes nothing.
    let late = svc.handle(merge_request(1)).await.unwrap_err();
    assert_eq!(late.kind, ErrorKind::Expired);
    assert_eq!(segment_bases(dir.path()).await, vec![0, 2, 5, 6, 10, 12]);
    let r = svc.handle(merge_request(i64::MAX)).await.unwrap();
    assert_eq!(
        r,
        Response::Merged(Merged {
            merged: 5,
            written: 1,
            removed: 0
        })
    );
    assert_eq!(segment_bases(dir.path()).await, vec![0, 12]);
    // Nothing more to do: one merged segment and the newest one.
    let r = svc.handle(merge_request(i64::MAX)).await.unwrap();
    assert!(
        matches!(
            r,
            Response::Merged(Merged {
                written: 0,
                removed: 0,
                ..
            })
        ),
        "{r:?}"
    );
    // The same service (stale cache) and a fresh one read every offset once.
    assert_eq!(read_all(&svc, 15).await, written);
    let fresh = service(dir.path(), 1 << 20).await;
    assert_eq!(read_all(&fresh, 15).await, written);
    assert_eq!(
        recover(&fresh).await,
        Response::Recovered(Recovered {
            log_start_offset: 0,
            log_end_offset: 15,
            segment_count: 2
        })
    );
    // Once its oldest data is older than the span, a merged segment is not
    // extended (time retention must be able to reach it); newer small
    // segments merge among themselves.
    let mut all = written;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    all.extend(write_segments(&fresh, 15, &[1, 1, 1]).await);
    let r = fresh
        .handle(merge_request_within(i64::MAX, 1500))
        .await
        .unwrap();
    assert_eq!(
        r,
        Response::Merged(Merged {
            merged: 2,
            written: 1,
            removed: 0
        })
    );
    assert_eq!(segment_bases(dir.path()).await, vec![0, 12, 15, 17]);
    assert_eq!(read_all(&fresh, 18).await, all);
}

#[tokio::test]
async fn an_interrupted_merge_leaves_redundant_segments_that_reads_and_retention_handle() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 1 << 20).await;
    let written = write_segments(&svc, 0, &[2, 3, 1, 4]).await;
    // The state a crash leaves after the merged object replaced the first
    // segment and before the others were deleted: segments 0..=5 in one
    // object at key 0, the old ones at keys 2 and 5 still there.
    let merged = segment::encode(&written[..3], 1, 2).unwrap();
    let store = LocalDirStore::new(dir.path()).unwrap();
    let key = segment::segment_key("ns/c1", "t", 0, 0);
    store
        .put_replacing(&key, merged.kfs_bytes(), None)
        .await
        .unwrap();
    assert_eq!(segment_bases(dir.path()).await, vec![0, 2, 5, 6]);
    for reader in [svc.clone(), service(dir.path(), 1 << 20).await] {
        assert_eq!(read_all(&reader, 10).await, written);
    }
    // Retention by size counts the copies once: the merged segment and the
    // newest one are all the data there is, so a limit of their sizes
    // leaves the log start where it is.
    let store_objects = store.list("ns/c1/t/0/").await.unwrap();
    let size_of = |base: i64| {
        store_objects
            .iter()
            .find(|o| segment::base_offset_from_key(&o.key) == Some(base))
            .map(|o| o.size as i64)
            .unwrap()
    };
    let r = svc
        .handle(Request::RetentionPoint(request::RetentionPoint {
            topic: "t".into(),
            topic_id: [0; 16],
            partition: 0,
            retention_ms: -1,
            retention_bytes: size_of(0) + size_of(6),
            compacted: 0,
        }))
        .await
        .unwrap();
    assert_eq!(r, Response::RetentionPoint(RetentionPoint { offset: -1 }));
    // Retention below offset 3 must not delete the merged segment (it
    // holds 3..=5) just because the next listed segment starts at 2.
    let r = svc
        .handle(Request::DeleteSegmentsBelow(request::DeleteSegmentsBelow {
            topic: "t".into(),
            partition: 0,
            offset: 3,
            min_age_ms: 0,
            not_after_ms: i64::MAX,
        }))
        .await
        .unwrap();
    assert_eq!(r, Response::Deleted(Deleted { objects: 0 }));
    // The next merge step removes the leftovers, then merges what is left.
    let r = svc.handle(merge_request(i64::MAX)).await.unwrap();
    assert_eq!(
        r,
        Response::Merged(Merged {
            merged: 0,
            written: 0,
            removed: 2
        })
    );
    assert_eq!(segment_bases(dir.path()).await, vec![0, 6]);
    assert_eq!(read_all(&svc, 10).await, written);
    // A deadline already passed: no write happens.
    let err = svc
        .handle(Request::WriteSegment(request::WriteSegment {
            topic: "t".into(),
            partition: 0,
            not_after_ms: 1,
            batches: vec![batch_at(10, 1)],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Expired);
    assert_eq!(segment_bases(dir.path()).await, vec![0, 6]);
}

fn intake_part(
    partition: i32,
    topic_id: u8,
    generation: u64,
    from: i64,
    counts: &[i32],
) -> Request {
    let mut next = from;
    let batches = counts
        .iter()
        .map(|&n| {
            let b = batch_at(next, n);
            next += i64::from(n);
            b
        })
        .collect();
    Request::AppendIntake(request::AppendIntake {
        topic: "t".into(),
        topic_id: [topic_id; 16],
        partition,
        leader_epoch: 1,
        generation,
        not_after_ms: i64::MAX,
        batches,
    })
}

async fn recover_id(svc: &Arc<FlusherService>, partition: i32, topic_id: u8) -> (i64, i64) {
    let request = Request::Recover(request::Recover {
        topic: "t".into(),
        topic_id: [topic_id; 16],
        partition,
        generation: 2,
    });
    match svc.handle(request).await.unwrap() {
        Response::Recovered(r) => (r.log_start_offset, r.log_end_offset),
        other => panic!("{other:?}"),
    }
}

async fn read_id(svc: &Arc<FlusherService>, partition: i32, offset: i64) -> Bytes {
    let request = Request::ReadRange(request::ReadRange {
        topic: "t".into(),
        topic_id: [0; 16],
        partition,
        offset,
        max_bytes: 1,
    });
    match svc.handle(request).await.unwrap() {
        Response::Range(Range { batches }) => batches,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn intake_parts_after_segments_are_recovered_and_read_by_a_restarted_flusher() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 1 << 20).await;
    write_segments(&svc, 0, &[2, 3]).await;
    let (a, b) = tokio::join!(
        svc.handle(intake_part(0, 0, 1, 5, &[1, 2])),
        svc.handle(intake_part(1, 0, 1, 0, &[4]))
    );
    a.unwrap();
    b.unwrap();
    let objects = svc
        .store
        .list(&crate::intake::intake_prefix("ns/c1"))
        .await
        .unwrap();
    assert_eq!(objects.len(), 1, "two partitions in one window, one object");
    let fresh = service(dir.path(), 1 << 20).await;
    assert_eq!(recover_id(&fresh, 0, 0).await, (0, 8));
    assert_eq!(recover_id(&fresh, 1, 0).await, (0, 4));
    for (offset, want_base) in [(1, 0), (4, 2), (5, 5), (7, 6)] {
        let h = batch::validate(&read_id(&fresh, 0, offset).await).unwrap();
        assert_eq!(h.base_offset, want_base, "offset {offset}");
    }
    assert_eq!(
        recover_id(&fresh, 1, 9).await,
        (0, 0),
        "a re-created topic (another id) sees none of the old parts"
    );
}

#[tokio::test]
async fn a_late_part_of_an_earlier_generation_never_hides_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 1 << 20).await;
    svc.handle(intake_part(0, 0, 1, 0, &[3])).await.unwrap();
    // Generation 2 recovered the log end (3) and wrote 3..=4; generation
    // 1's upload of 3..=9 landed after that.
    svc.handle(intake_part(0, 0, 2, 3, &[2])).await.unwrap();
    svc.handle(intake_part(0, 0, 1, 3, &[7])).await.unwrap();
    let fresh = service(dir.path(), 1 << 20).await;
    assert_eq!(recover_id(&fresh, 0, 0).await, (0, 5));
    let h = batch::validate(&read_id(&fresh, 0, 3).await).unwrap();
    assert_eq!(
        (h.base_offset, h.records_count),
        (3, 2),
        "generation 2's batch, not the late one"
    );
}

#[tokio::test]
async fn compaction_moves_parts_into_a_segment_and_the_clean_up_deletes_only_what_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 1 << 20).await;
    for (p, from) in [(0, 0), (0, 3), (1, 0)] {
        svc.handle(intake_part(p, 0, 1, from, &[3])).await.unwrap();
    }
    let compact = |partition: i32, up_to: i64| {
        Request::CompactIntake(request::CompactIntake {
            topic: "t".into(),
            topic_id: [0; 16],
            partition,
            up_to,
            target_bytes: 1 << 20,
            max_delay_ms: 0,
            not_after_ms: i64::MAX,
        })
    };
    // Only below the high watermark: the part at 3..=5 stays in intake.
    match svc.handle(compact(0, 3)).await.unwrap() {
        Response::Compacted(c) => assert_eq!((c.parts, c.written, c.last_offset), (1, 1, 2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(segment_bases(dir.path()).await, vec![0]);
    let live = vec![crate::protocol::LiveTopic {
        name: "t".into(),
        topic_id: [0; 16],
    }];
    let collect = |compacted: Vec<(i32, i64)>| {
        Request::CollectIntake(request::CollectIntake {
            live: live.clone(),
            compacted: compacted
                .into_iter()
                .map(|(partition, last_offset)| crate::protocol::CompactedTo {
                    topic: "t".into(),
                    topic_id: [0; 16],
                    partition,
                    last_offset,
                })
                .collect(),
            min_age_ms: 0,
            not_after_ms: i64::MAX,
        })
    };
    let intake_objects = || async {
        svc.store
            .list(&crate::intake::intake_prefix("ns/c1"))
            .await
            .unwrap()
            .len()
    };
    let before = intake_objects().await;
    assert_eq!(before, 3, "three windows, three objects");
    // Partition 0 compacted through 2: only its first object is all compacted.
    let deleted = svc.handle(collect(vec![(0, 2)])).await.unwrap();
    assert_eq!(deleted, Response::Deleted(Deleted { objects: 1 }));
    // Everything stays readable and recoverable, from segment and intake.
    let fresh = service(dir.path(), 1 << 20).await;
    assert_eq!(recover_id(&fresh, 0, 0).await, (0, 6));
    assert_eq!(recover_id(&fresh, 1, 0).await, (0, 3));
    for offset in [0, 2, 3, 5] {
        let h = batch::validate(&read_id(&fresh, 0, offset).await).unwrap();
        assert!(
            h.base_offset <= offset && offset <= h.last_offset(),
            "offset {offset}"
        );
    }
    // Once partition 0 is compacted to its end and partition 1's topic is
    // gone (re-created under a new id), nothing is kept.
    fresh.handle(compact(0, 6)).await.unwrap();
    let deleted = fresh
        .handle(Request::CollectIntake(request::CollectIntake {
            live: vec![crate::protocol::LiveTopic {
                name: "t".into(),
                topic_id: [5; 16],
            }],
            compacted: Vec::new(),
            min_age_ms: 0,
            not_after_ms: i64::MAX,
        }))
        .await
        .unwrap();
    assert_eq!(deleted, Response::Deleted(Deleted { objects: 2 }));
    assert_eq!(intake_objects().await, 0);
}

/// Issue: a part the broker gave up on could still be queued or uploading in
/// the flusher when the broker recovered the partition under a new
/// generation; landing after that recovery read the log end, it could leave
/// a gap in the claims. Recovery now waits until the partition's parts here
/// have settled.
#[tokio::test]
async fn recovery_waits_for_the_partitions_parts_still_uploading() {
    let dir = tempfile::tempdir().unwrap();
    let slow_puts = crate::fault_store::PutDelay::parse("700").unwrap();
    let store = Arc::new(crate::fault_store::FaultStore::new(
        Arc::new(LocalDirStore::new(dir.path()).unwrap()),
        Some(slow_puts),
    ));
    let svc = service_on(store, 1 << 20);
    let writing = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.handle(intake_part(0, 0, 2, 0, &[3, 2])).await })
    };
    // The broker stopped waiting for that part and recovers meanwhile.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let request = Request::Recover(request::Recover {
        topic: "t".into(),
        topic_id: [0; 16],
        partition: 0,
        generation: 3,
    });
    let recovered = match svc.handle(request).await.unwrap() {
        Response::Recovered(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "recovery read the log end while a part was still uploading"
    );
    // The part landed before the log end was read, so the log end covers it.
    assert_eq!(recovered.log_end_offset, 5);
    assert!(writing.await.unwrap().is_ok());
}
