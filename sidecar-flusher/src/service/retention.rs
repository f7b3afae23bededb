//! Deletes: retention's start point, segments below an offset, a whole topic.

use super::{before_deadline, now_ms, FlusherService};
use crate::listing::SegmentRef;
use crate::protocol::{Deleted, RemoteError, Response, RetentionPoint};
use crate::segment;

/// How long deleting a topic waits for index uploads still in flight.
const INDEX_UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl FlusherService {
    pub(super) async fn retention_point(
        &self,
        topic: &str,
        partition: i32,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> Result<Response, RemoteError> {
        let list = self.list_partition(topic, partition).await?;
        Ok(Response::RetentionPoint(RetentionPoint {
            offset: retention_point(&list, now_ms(), retention_ms, retention_bytes),
        }))
    }

    pub(super) async fn delete_segments_below(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        min_age_ms: i64,
        not_after_ms: i64,
    ) -> Result<Response, RemoteError> {
        let list = self.list_partition(topic, partition).await?;
        let written_before = now_ms().saturating_sub(min_age_ms.max(0));
        // Segment i normally ends where the next one begins; the newest one is
        // never deleted because recovery reads the log end from it.
        let candidates: Vec<&SegmentRef> = list
            .windows(2)
            .filter(|w| w[1].base_offset <= offset && w[0].last_modified_ms <= written_before)
            .map(|w| &w[0])
            .collect();
        // After an interrupted merge a merged segment reaches past the next
        // listed one, so each candidate's own last offset decides.
        let ends = self
            .last_offsets_of(candidates.iter().map(|s| (*s).clone()).collect())
            .await?;
        let doomed: Vec<&SegmentRef> = candidates
            .into_iter()
            .zip(ends)
            .filter(|(_, last)| last.is_some_and(|l| l < offset))
            .map(|(seg, _)| seg)
            .collect();
        self.delete_segments(topic, partition, &doomed, not_after_ms)
            .await?;
        Ok(Response::Deleted(Deleted {
            objects: doomed.len() as u32,
        }))
    }

    /// Deletes segments (`.kfs` first, then `.index`) and forgets them.
    pub(super) async fn delete_segments(
        &self,
        topic: &str,
        partition: i32,
        doomed: &[&SegmentRef],
        not_after_ms: i64,
    ) -> Result<(), RemoteError> {
        if doomed.is_empty() {
            return Ok(());
        }
        let kfs: Vec<String> = doomed.iter().map(|s| s.key.clone()).collect();
        let index: Vec<String> = doomed.iter().map(|s| s.index_key()).collect();
        for keys in [kfs, index] {
            before_deadline(not_after_ms, &keys[0], self.store.delete(&keys)).await?;
        }
        for seg in doomed {
            self.segments.forget(&seg.key);
            self.facts.forget(&seg.key);
        }
        self.listings.invalidate(topic, partition);
        Ok(())
    }

    pub(super) async fn delete_topic(
        &self,
        topic: &str,
        not_after_ms: i64,
    ) -> Result<Response, RemoteError> {
        // Index uploads trail their segments; wait for those in flight (for a
        // bounded time) so that none lands after the listing below.
        let _quiet = tokio::time::timeout(INDEX_UPLOAD_WAIT, self.index_uploads.write()).await;
        let prefix = segment::topic_prefix(&self.settings.prefix, topic);
        let objects = self.store.list(&prefix).await?;
        let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
        before_deadline(not_after_ms, &prefix, self.store.delete(&keys)).await?;
        self.listings.invalidate_topic(topic);
        self.segments.forget_prefix(&prefix);
        Ok(Response::Deleted(Deleted {
            objects: keys.len() as u32,
        }))
    }
}

/// The base offset of the oldest segment that retention keeps, or -1 when
/// nothing is due. Time: segments written more than `retention_ms` ago go.
/// Size: the oldest segments go while the rest still exceed `retention_bytes`.
/// The newest segment always stays.
pub(super) fn retention_point(
    list: &[SegmentRef],
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
) -> i64 {
    let Some(last) = list.len().checked_sub(1) else {
        return -1;
    };
    let mut remaining: u64 = list.iter().map(|s| s.size).sum();
    let mut keep_from = 0;
    while keep_from < last {
        let seg = &list[keep_from];
        // Kafka accepts retention.ms up to i64::MAX ("keep for ever").
        let too_old =
            retention_ms >= 0 && seg.last_modified_ms.saturating_add(retention_ms) < now_ms;
        let too_big = retention_bytes >= 0 && remaining > retention_bytes as u64;
        if !(too_old || too_big) {
            break;
        }
        remaining -= seg.size;
        keep_from += 1;
    }
    if keep_from == 0 {
        -1
    } else {
        list[keep_from].base_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_the_newest_segment_and_drops_by_age_and_size() {
        let seg = |base, size, at| SegmentRef {
            base_offset: base,
            key: format!("s{base}"),
            size,
            last_modified_ms: at,
            etag: String::new(),
        };
        let list = vec![seg(0, 100, 1_000), seg(10, 100, 2_000), seg(20, 100, 3_000)];
        assert_eq!(retention_point(&list, 10_000, -1, -1), -1);
        assert_eq!(
            retention_point(&list, 10_000, 7_500, -1),
            20,
            "age: only the newest survives"
        );
        assert_eq!(retention_point(&list, 10_000, 8_500, -1), 10);
        assert_eq!(
            retention_point(&list, 10_000, -1, 150),
            20,
            "size: drop while over"
        );
        assert_eq!(retention_point(&list, 10_000, -1, 200), 10);
        assert_eq!(
            retention_point(&list, 10_000, 0, 0),
            20,
            "never the last segment"
        );
        assert_eq!(retention_point(&list[..1], 10_000, 0, 0), -1);
        // A retention near i64::MAX keeps everything instead of overflowing.
        assert_eq!(retention_point(&list, 10_000, i64::MAX, -1), -1);
        assert_eq!(retention_point(&list, 10_000, i64::MAX - 5_000, -1), -1);
    }
}
