//! Background merging of small adjacent segments, and removal of the
//! leftovers of an interrupted merge.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::{before_deadline, now_ms, remote, FlusherService, PARALLEL_GETS};
use crate::listing::SegmentRef;
use crate::protocol::{ErrorKind, Merged, RemoteError};
use crate::segment::{self, VerifiedSegment};

/// What a merge step may do.
#[derive(Debug, Clone, Copy)]
pub(super) struct MergeLimits {
    /// Largest merged segment.
    pub(super) target: u64,
    /// Only segments written at least this long ago.
    pub(super) min_age_ms: i64,
    /// A segment whose oldest data was sealed longer ago is not extended.
    pub(super) max_span_ms: i64,
}

impl FlusherService {
    /// One step of background merging: finds the oldest run of small segments
    /// older than `min_age_ms` and either removes segments that an earlier,
    /// interrupted merge already copied, or merges the run into one segment of
    /// at most `target` bytes. The broker repeats while a step did something.
    ///
    /// Crash safety: the merged object replaces the run's first segment in one
    /// conditional PUT (If-Match on the ETag that was read); it begins with the
    /// same bytes at the same positions, so readers of either version and the
    /// old `.index` stay correct. Only then are the rest deleted; until they
    /// are, they are redundant copies, never the only one. The newest segment
    /// is never touched (recovery reads the log end from it).
    pub(super) async fn merge_segments(
        &self,
        topic: &str,
        partition: i32,
        limits: MergeLimits,
        not_after_ms: i64,
    ) -> Result<Merged, RemoteError> {
        let list = self.list_partition(topic, partition).await?;
        let now = now_ms();
        let cutoff = now.saturating_sub(limits.min_age_ms.max(0));
        let target = limits.target;
        let small = |s: &SegmentRef| s.size < target / 2 && s.last_modified_ms <= cutoff;
        let older = &list[..list.len().saturating_sub(1)];
        let mut i = 0;
        while i < older.len() {
            if !small(&older[i]) {
                i += 1;
                continue;
            }
            // A run never extends a segment whose oldest data is already
            // older than the span (its write time alone cannot tell: a merged
            // segment is rewritten often).
            let sealed = self.first_sealed_ms_of(&older[i]).await?;
            if sealed.is_none_or(|ms| now.saturating_sub(ms) > limits.max_span_ms) {
                i += 1;
                continue;
            }
            let mut j = i;
            let mut bytes = 0;
            while j < older.len() && small(&older[j]) && bytes + older[j].size <= target {
                bytes += older[j].size;
                j += 1;
            }
            if let Some(done) = self
                .merge_run(topic, partition, &older[..j], i, not_after_ms)
                .await?
            {
                return Ok(done);
            }
            i = j.max(i + 1);
        }
        Ok(Merged {
            merged: 0,
            written: 0,
            removed: 0,
        })
    }

    /// Segments changed under a merge step: it gives up (as an error, so the
    /// broker does not take the partition for settled) and the next lists again.
    fn listing_changed(&self, topic: &str, partition: i32) -> RemoteError {
        self.listings.invalidate(topic, partition);
        remote(
            ErrorKind::Unavailable,
            format!("{topic}-{partition}: segments changed during a merge step; the next step lists again"),
        )
    }

    /// Checks that `inner`, whose offsets lie inside `outer`, is a leftover
    /// of an interrupted rewrite: `outer` holds the very bytes `inner` holds
    /// (a merge), or, when the cleaner wrote `outer`, a cleaning of them.
    pub(super) async fn check_copy(
        &self,
        inner: &SegmentRef,
        outer: &SegmentRef,
    ) -> Result<(), RemoteError> {
        let whole = |seg: &SegmentRef| {
            let seg = seg.clone();
            async move {
                match self.segments.cached(&seg) {
                    Some(w) => Ok(Some(w)),
                    None => self.get_verified(&seg).await,
                }
            }
        };
        let (Some(inner_seg), Some(outer_seg)) = (whole(inner).await?, whole(outer).await?) else {
            return Err(remote(
                ErrorKind::Unavailable,
                format!(
                    "{} or {} disappeared during a merge step",
                    inner.key, outer.key
                ),
            ));
        };
        let same = if outer_seg.header.is_cleaned() {
            let (inner_seg, outer_seg) = (inner_seg.clone(), outer_seg.clone());
            tokio::task::spawn_blocking(move || {
                crate::cleaner::is_cleaning_of(
                    &inner_seg,
                    &outer_seg,
                    super::cleaning::MAX_BATCH_RECORDS_BYTES,
                )
            })
            .await
            .map_err(|e| {
                remote(
                    ErrorKind::Internal,
                    format!("checking a leftover failed: {e}"),
                )
            })?
            .unwrap_or(false)
        } else {
            outer_seg
                .position_of(inner.base_offset)
                .and_then(|pos| outer_seg.body.get(pos..pos + inner_seg.body.len()))
                .is_some_and(|bytes| bytes == &inner_seg.body[..])
        };
        if same {
            return Ok(());
        }
        tracing::error!(inner = %inner.key, outer = %outer.key, "two segments hold different data for the same offsets; neither is deleted or merged until an operator checks them");
        Err(remote(
            ErrorKind::Corrupt,
            format!(
                "{} and {} hold different data for the same offsets; not merging this partition",
                inner.key, outer.key
            ),
        ))
    }

    /// Merges `list[from..]` (a run of small segments) if that does anything.
    async fn merge_run(
        &self,
        topic: &str,
        partition: i32,
        list: &[SegmentRef],
        from: usize,
        not_after_ms: i64,
    ) -> Result<Option<Merged>, RemoteError> {
        let run = &list[from..];
        if run.len() < 2 && from == 0 {
            return Ok(None);
        }
        // Offsets from the listing and footers alone (cached): a segment that
        // lies inside the one before it is a leftover of an interrupted merge.
        let ends = self
            .last_offsets_of(list[from.saturating_sub(1)..].to_vec())
            .await?;
        let Some(ends) = ends.into_iter().collect::<Option<Vec<i64>>>() else {
            return Err(self.listing_changed(topic, partition));
        };
        let (mut last, run_ends) = if from == 0 {
            (None, &ends[..])
        } else {
            (Some(ends[0]), &ends[1..])
        };
        // The segment that holds the offsets up to `last`.
        let mut container = from.checked_sub(1).map(|prev| &list[prev]);
        let mut keep: Vec<(&SegmentRef, i64)> = Vec::new();
        let mut redundant: Vec<(&SegmentRef, &SegmentRef)> = Vec::new();
        for (seg, &end) in run.iter().zip(run_ends) {
            let base = seg.base_offset;
            match (last, container) {
                (Some(l), Some(outer)) if base <= l && end <= l => {
                    redundant.push((seg, outer));
                    continue;
                }
                (Some(l), _) if base <= l => {
                    return Err(remote(
                        ErrorKind::Corrupt,
                        format!("{} overlaps the segment before it only in part (offsets {base}..={end}, previous ends at {l}); not merging this partition", seg.key),
                    ));
                }
                // A gap in offsets ends the run.
                (Some(l), _) if base > l + 1 && !keep.is_empty() => break,
                _ => {}
            }
            last = Some(end);
            container = Some(seg);
            keep.push((seg, end));
        }
        if !redundant.is_empty() {
            // Redundant only if its bytes are the ones the outer segment holds
            // at those offsets: anything else (say a fenced broker's late
            // upload that met a key retention had freed) is not ours to drop.
            for (inner, outer) in &redundant {
                self.check_copy(inner, outer).await?;
            }
            let redundant: Vec<&SegmentRef> = redundant.iter().map(|(inner, _)| *inner).collect();
            self.delete_segments(topic, partition, &redundant, not_after_ms)
                .await?;
            self.metrics.merge_removed.inc_by(redundant.len() as u64);
            tracing::info!(
                topic,
                partition,
                segments = redundant.len(),
                "removed segments left over from an interrupted merge"
            );
            return Ok(Some(Merged {
                merged: 0,
                written: 0,
                removed: redundant.len() as u32,
            }));
        }
        // Cleaned and uncleaned segments never merge: the cleaner's clean
        // part is the run of cleaned segments at the start.
        let flags = self
            .cleaned_flags_of(keep.iter().map(|(s, _)| (*s).clone()).collect())
            .await?;
        let Some(cleaned) = flags[0] else {
            return Err(self.listing_changed(topic, partition));
        };
        let alike = flags.iter().take_while(|f| **f == Some(cleaned)).count();
        keep.truncate(alike);
        if keep.len() < 2 {
            return Ok(None);
        }
        let (first, _) = keep[0];
        if first.etag.is_empty() {
            return Ok(None);
        }
        // Merges read around the cache: they must not evict what consumers read.
        let segs: Vec<SegmentRef> = keep.iter().map(|(s, _)| (*s).clone()).collect();
        let loaded: Vec<Option<Arc<VerifiedSegment>>> = futures::stream::iter(segs)
            .map(|seg| async move {
                match self.segments.cached(&seg) {
                    Some(whole) => Ok(Some(whole)),
                    None => self.get_verified(&seg).await,
                }
            })
            .buffered(PARALLEL_GETS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let mut batches: Vec<Bytes> = Vec::new();
        let mut first_sealed_ms = None;
        let mut newest_data_ms = None;
        for ((seg, end), whole) in keep.iter().zip(loaded) {
            let Some(whole) = whole.filter(|w| {
                w.header.base_offset == seg.base_offset && w.footer.last_offset == *end
            }) else {
                // Gone or replaced since its footer was read.
                return Err(self.listing_changed(topic, partition));
            };
            first_sealed_ms.get_or_insert(whole.header.created_ms);
            newest_data_ms = newest_data_ms.max(Some(whole.header.created_ms));
            batches.extend(
                whole
                    .batch_headers()
                    .map(|(pos, h)| whole.body.slice(pos..pos + h.size)),
            );
        }
        // The header's time stays that of the oldest data (see `MergeLimits`);
        // a cleaned segment's is that of its newest data, and the merged
        // one covers the whole run, gaps included.
        let merged = if cleaned {
            let last = keep[keep.len() - 1].1;
            let newest = newest_data_ms.unwrap_or_else(now_ms);
            segment::encode_cleaned(
                &batches,
                first.base_offset,
                last,
                newest,
                self.settings.index_interval,
            )
        } else {
            let sealed = first_sealed_ms.unwrap_or_else(now_ms);
            segment::encode(&batches, sealed, self.settings.index_interval)
        }
        .map_err(super::corrupt)?;
        let body = merged.kfs_bytes();
        let size = body.len() as u64;
        match before_deadline(
            not_after_ms,
            &first.key,
            self.store
                .put_replacing(&first.key, body, Some(&first.etag)),
        )
        .await
        {
            Ok(()) => {}
            // Rewritten since it was listed (another merge): list again next step.
            Err(e) if e.kind == ErrorKind::Conflict => {
                return Err(self.listing_changed(topic, partition));
            }
            Err(e) => return Err(e),
        }
        // The old index is a correct prefix of the new one, so a failed index
        // write only makes range reads scan further.
        if let Err(e) = before_deadline(
            not_after_ms,
            &first.index_key(),
            self.store
                .put_replacing(&first.index_key(), merged.index.clone(), None),
        )
        .await
        {
            tracing::warn!(key = %first.index_key(), error = %e, "merged index upload failed; range reads will scan");
        }
        let rest: Vec<&SegmentRef> = keep[1..].iter().map(|(s, _)| *s).collect();
        self.segments.forget_prefix(&first.key);
        self.delete_segments(topic, partition, &rest, not_after_ms)
            .await?;
        self.metrics.merge_segments.inc_by(keep.len() as u64);
        self.metrics.merge_written.inc();
        tracing::debug!(
            topic,
            partition,
            base_offset = merged.base_offset,
            last_offset = merged.last_offset,
            segments = keep.len(),
            bytes = size,
            "merged segments"
        );
        Ok(Some(Merged {
            merged: keep.len() as u32,
            written: 1,
            removed: 0,
        }))
    }
}
