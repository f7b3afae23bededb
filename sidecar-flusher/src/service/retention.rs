//! Deletes: retention's start point, segments below an offset, a whole topic.

use std::collections::HashMap;

use super::{before_deadline, now_ms, FlusherService};
use crate::claims::Claim;
use crate::intake_index::PartLocation;
use crate::listing::SegmentRef;
use crate::protocol::{Deleted, RemoteError, RetentionPoint};
use crate::segment;

/// How long deleting a topic waits for index uploads still in flight.
const INDEX_UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl FlusherService {
    /// Retention counts the partition's segments and, after them, its
    /// intake parts not compacted yet: data is due by its age and size
    /// wherever it is. The intake view is read before the segment listing,
    /// as recovery reads them, so a part compacted in between is counted
    /// once, in its segment.
    pub(super) async fn retention_point(
        &self,
        topic: &str,
        topic_id: [u8; 16],
        partition: i32,
        retention_ms: i64,
        retention_bytes: i64,
        compacted: bool,
    ) -> Result<RetentionPoint, RemoteError> {
        self.intake.ensure_listed().await?;
        let list = self.list_partition(topic, partition).await?;
        let segments_end = self.segments_end(&list).await?;
        let claims = self.valid_claims(topic, topic_id, partition, segments_end)?;
        let rewritten: Vec<SegmentRef> = rewritten_after_the_next(&list)
            .map(|i| list[i].clone())
            .collect();
        let ends = self.last_offsets_of(rewritten.clone()).await?;
        let merged_ends: HashMap<String, i64> = rewritten
            .into_iter()
            .zip(ends)
            .filter_map(|(seg, end)| Some((seg.key, end?)))
            .collect();
        let segments = without_merge_copies(&list, &merged_ends);
        // A cleaned segment is rewritten at every pass: its header, not its
        // write time, says how old its data is.
        let mut data_ms = HashMap::new();
        if compacted {
            let owned: Vec<SegmentRef> = segments.iter().map(|s| (*s).clone()).collect();
            let flags = self.cleaned_flags_of(owned.clone()).await?;
            for (seg, cleaned) in owned.into_iter().zip(flags) {
                if cleaned == Some(true) {
                    if let Some(ms) = self.first_sealed_ms_of(&seg).await? {
                        data_ms.insert(seg.key, ms);
                    }
                }
            }
        }
        let stored = stored_data(&segments, &claims, &data_ms);
        Ok(RetentionPoint {
            offset: retention_point(&stored, now_ms(), retention_ms, retention_bytes),
        })
    }

    pub(super) async fn delete_segments_below(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        min_age_ms: i64,
        not_after_ms: i64,
    ) -> Result<Deleted, RemoteError> {
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
        Ok(Deleted {
            objects: doomed.len() as u32,
        })
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
    ) -> Result<Deleted, RemoteError> {
        // Index uploads trail their segments; wait for those in flight (for a
        // bounded time) so that none lands after the listing below.
        let _quiet = tokio::time::timeout(INDEX_UPLOAD_WAIT, self.index_uploads.write()).await;
        let prefix = segment::topic_prefix(&self.settings.prefix, topic);
        let objects = self.store.list(&prefix).await?;
        let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
        before_deadline(not_after_ms, &prefix, self.store.delete(&keys)).await?;
        self.listings.invalidate_topic(topic);
        self.segments.forget_prefix(&prefix);
        Ok(Deleted {
            objects: keys.len() as u32,
        })
    }
}

/// A stretch of a partition's log as retention sees it: a segment or an
/// intake part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredData {
    pub base_offset: i64,
    pub size: u64,
    pub written_ms: i64,
}

/// The listed segments that a merge may have rewritten to hold the ones
/// after them: written (merged) no earlier than the next one. In a log only
/// appended to, each segment is older than the next, so these are few and
/// only their footers need reading.
fn rewritten_after_the_next(list: &[SegmentRef]) -> impl Iterator<Item = usize> + '_ {
    list.windows(2)
        .enumerate()
        .filter(|(_, w)| w[0].last_modified_ms >= w[1].last_modified_ms)
        .map(|(i, _)| i)
}

/// The segments without those a merge under way already copied into the
/// segment before them (`merged_ends`: the last offset of each rewritten
/// segment, by key): until the merge deletes them they are listed twice
/// over, and counting them would make retention drop more than it should.
fn without_merge_copies<'a>(
    list: &'a [SegmentRef],
    merged_ends: &HashMap<String, i64>,
) -> Vec<&'a SegmentRef> {
    let mut kept: Vec<&SegmentRef> = Vec::with_capacity(list.len());
    for seg in list {
        let inside_previous = kept
            .last()
            .and_then(|prev| merged_ends.get(&prev.key))
            .is_some_and(|&end| seg.base_offset <= end);
        if !inside_previous {
            kept.push(seg);
        }
    }
    kept
}

/// The partition's segments, then its claimed intake parts, in offset
/// order; `data_ms` has the data's time of segments whose write time is
/// not (cleaned ones).
fn stored_data(
    segments: &[&SegmentRef],
    claims: &[Claim<PartLocation>],
    data_ms: &HashMap<String, i64>,
) -> Vec<StoredData> {
    let segments = segments.iter().map(|s| StoredData {
        base_offset: s.base_offset,
        size: s.size,
        written_ms: data_ms.get(&s.key).copied().unwrap_or(s.last_modified_ms),
    });
    let parts = claims.iter().map(|c| StoredData {
        base_offset: c.base_offset,
        size: u64::from(c.source.entry().length),
        written_ms: c.source.object.created_ms,
    });
    segments.chain(parts).collect()
}

/// The base offset of the oldest stretch that retention keeps, or -1 when
/// nothing is due. Time: data written more than `retention_ms` ago goes.
/// Size: the oldest data goes while the rest still exceeds `retention_bytes`.
/// The newest stretch always stays.
pub(super) fn retention_point(
    list: &[StoredData],
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
        let data = &list[keep_from];
        // Kafka accepts retention.ms up to i64::MAX ("keep for ever").
        let too_old = retention_ms >= 0 && data.written_ms.saturating_add(retention_ms) < now_ms;
        let too_big = retention_bytes >= 0 && remaining > retention_bytes as u64;
        if !(too_old || too_big) {
            break;
        }
        remaining -= data.size;
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
    fn retention_keeps_the_newest_data_and_drops_by_age_and_size() {
        let seg = |base, size, at| StoredData {
            base_offset: base,
            size,
            written_ms: at,
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

    fn listed(base_offset: i64, size: u64, written_ms: i64) -> SegmentRef {
        SegmentRef {
            base_offset,
            key: format!("{base_offset}.kfs"),
            size,
            last_modified_ms: written_ms,
            etag: String::new(),
        }
    }

    #[test]
    fn segments_a_merge_already_copied_are_counted_once() {
        // Segment 7 was rewritten to hold 7..=9 (at 5_000); 8 and 9 are not
        // deleted yet; 10 came after the merge.
        let list = vec![
            listed(0, 300, 1_000),
            listed(7, 900, 5_000),
            listed(8, 300, 2_000),
            listed(9, 300, 3_000),
            listed(10, 300, 6_000),
        ];
        let rewritten: Vec<usize> = rewritten_after_the_next(&list).collect();
        assert_eq!(
            rewritten,
            vec![1],
            "only a segment newer than the next needs its footer"
        );
        let ends = HashMap::from([("7.kfs".to_string(), 9)]);
        let kept: Vec<i64> = without_merge_copies(&list, &ends)
            .iter()
            .map(|s| s.base_offset)
            .collect();
        assert_eq!(kept, vec![0, 7, 10]);
        // 1_500 bytes are really stored: a limit of 1_200 drops only the
        // oldest segment, not the merged one with it.
        let stored = stored_data(&without_merge_copies(&list, &ends), &[], &HashMap::new());
        assert_eq!(retention_point(&stored, 10_000, -1, 1_200), 7);
        // Without a merge nothing is left out.
        let appended = vec![listed(0, 300, 1_000), listed(1, 300, 2_000)];
        assert!(rewritten_after_the_next(&appended).next().is_none());
        assert_eq!(without_merge_copies(&appended, &HashMap::new()).len(), 2);
    }
}
