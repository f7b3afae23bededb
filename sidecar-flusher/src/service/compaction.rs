//! Compaction: a partition's intake parts, in offset order from the end of
//! its segments, copied into one segment of the storage contract; and the
//! clean-up of intake objects whose every part is compacted, overridden or
//! of a topic that is gone (docs/intake-objects.md).
//!
//! Crash safety: the segment is written with a create-once PUT at the first
//! part's base offset, which is where the segments end, before any intake
//! object is deleted; until an object is deleted its parts are redundant
//! copies (claims at or below the end of the segments are ignored by
//! `claims::resolve`), never the only one.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::StreamExt;

use super::{before_deadline, now_ms, remote, FlusherService, PARALLEL_GETS};
use crate::batch;
use crate::intake_cache::PartRead;
use crate::protocol::{Compacted, CompactedTo, Deleted, ErrorKind, LiveTopic, RemoteError};
use crate::segment;

/// What one compaction step may do.
#[derive(Debug, Clone, Copy)]
pub(super) struct CompactionLimits {
    /// Only offsets below this (the leader's high watermark): a part above it
    /// may still be overridden by the leader's own next write.
    pub(super) up_to: i64,
    /// Largest segment written.
    pub(super) target_bytes: u64,
    /// Parts wait for `target_bytes` to gather, but no longer than this.
    pub(super) max_delay_ms: i64,
}

impl FlusherService {
    pub(super) async fn compact_intake(
        &self,
        topic: &str,
        topic_id: [u8; 16],
        partition: i32,
        limits: CompactionLimits,
        not_after_ms: i64,
    ) -> Result<Compacted, RemoteError> {
        // The view as it is: below the high watermark it holds every part
        // that counts, because this flusher wrote them or the leader's
        // recovery refreshed it (a part missing from it is compacted later).
        self.intake.ensure_listed().await?;
        let list = match self.listings.get(topic, partition) {
            Some(list) => list,
            None => self.list_partition(topic, partition).await?,
        };
        let segments_end = self.segments_end(&list).await?;
        let nothing = Compacted {
            parts: 0,
            written: 0,
            last_offset: segments_end.unwrap_or(-1),
        };
        let claims = self.valid_claims(topic, topic_id, partition, segments_end)?;
        let eligible: Vec<_> = claims
            .iter()
            .take_while(|c| c.last_offset < limits.up_to)
            .collect();
        let Some(oldest_ms) = eligible.first().map(|c| c.source.object.created_ms) else {
            return Ok(nothing);
        };
        let target = limits.target_bytes.min(self.settings.whole_segment_bytes);
        let gathered: u64 = eligible
            .iter()
            .map(|c| u64::from(c.source.entry().length))
            .sum();
        let waited = now_ms().saturating_sub(oldest_ms);
        if gathered < target && waited < limits.max_delay_ms {
            return Ok(nothing);
        }
        let mut bytes = 0u64;
        let taken: Vec<_> = eligible
            .into_iter()
            .enumerate()
            .take_while(|(i, c)| {
                bytes += u64::from(c.source.entry().length);
                *i == 0 || bytes <= target
            })
            .map(|(_, c)| c.source.clone())
            .collect();
        let parts: Vec<Option<Bytes>> = futures::stream::iter(taken.iter().cloned())
            .map(|at| async move { self.intake.read_part(&at, PartRead::Alone).await })
            .buffered(PARALLEL_GETS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let Some(parts) = parts.into_iter().collect::<Option<Vec<Bytes>>>() else {
            return Err(remote(
                ErrorKind::Unavailable,
                format!("{topic}-{partition}: an intake object disappeared during compaction; the next step looks again"),
            ));
        };
        let batches: Vec<Bytes> = parts
            .iter()
            .flat_map(|part| {
                batch::iter_headers(part)
                    .map(|(pos, h)| part.slice(pos..pos + h.size))
                    .collect::<Vec<_>>()
            })
            .collect();
        // The header's time is that of the oldest data (see merging).
        let seg = segment::encode(&batches, oldest_ms, self.settings.index_interval)
            .map_err(super::corrupt)?;
        let p = &self.settings.prefix;
        let key = segment::segment_key(p, topic, partition, seg.base_offset);
        let body = seg.kfs_bytes();
        let size = body.len() as u64;
        match before_deadline(
            not_after_ms,
            &key,
            self.store.put_if_absent(&key, body.clone()),
        )
        .await
        {
            Ok(()) => {}
            // An earlier, interrupted step of the same compaction got this far.
            Err(e) if e.kind == ErrorKind::Conflict && self.same_object(&key, &body).await => {}
            Err(e) if e.kind == ErrorKind::Conflict => {
                // The cached listing missed a segment: list afresh next step.
                self.listings.invalidate(topic, partition);
                return Err(remote(
                    ErrorKind::Unavailable,
                    format!("{key} exists with other data than these intake parts (the listing was stale, or another writer); the next step lists again"),
                ));
            }
            Err(e) => return Err(e),
        }
        let index_key = segment::index_key(p, topic, partition, seg.base_offset);
        if let Err(e) = before_deadline(
            not_after_ms,
            &index_key,
            self.store
                .put_replacing(&index_key, seg.index.clone(), None),
        )
        .await
        {
            tracing::warn!(key = %index_key, error = %e, "index upload failed; reads of this segment will scan");
        }
        self.remember_written(topic, partition, &seg, key, size);
        self.metrics.compacted_parts.inc_by(taken.len() as u64);
        self.metrics.segments_written.inc();
        self.metrics.segment_bytes.observe(size as f64);
        tracing::debug!(
            topic,
            partition,
            base_offset = seg.base_offset,
            last_offset = seg.last_offset,
            parts = taken.len(),
            bytes = size,
            "compacted intake parts into a segment"
        );
        Ok(Compacted {
            parts: taken.len() as u32,
            written: 1,
            last_offset: seg.last_offset,
        })
    }

    /// Deletes the intake objects written at least `min_age_ms` ago whose
    /// every part is compacted (its base at or below `compacted` of its
    /// partition, which the leaders record after each step) or of a topic
    /// not in `live`. Both come from the metadata store, read just before:
    /// a part is written only once its topic exists, so an object older than
    /// that read holds no part of a topic the read missed.
    pub(super) async fn collect_intake(
        &self,
        live: &[LiveTopic],
        compacted: &[CompactedTo],
        min_age_ms: i64,
        not_after_ms: i64,
    ) -> Result<Deleted, RemoteError> {
        // The age cutoff is taken first: the live topics were read before
        // this request, and an object written after that read (possibly of
        // a topic created since) must be younger than the cutoff however
        // long the listing below takes.
        let written_before = now_ms().saturating_sub(min_age_ms.max(0));
        // Listed before the objects, so that each summary's objects were
        // all stored before the listing that tells which are left.
        let summaries = self.intake.list_summaries().await;
        self.intake.refresh().await?;
        let live: HashSet<(&str, [u8; 16])> =
            live.iter().map(|t| (t.name.as_str(), t.topic_id)).collect();
        let compacted: HashMap<(&str, [u8; 16], i32), i64> = compacted
            .iter()
            .map(|c| ((c.topic.as_str(), c.topic_id, c.partition), c.last_offset))
            .collect();
        let doomed: Vec<String> = self
            .intake
            .objects()
            .into_iter()
            .filter(|o| o.created_ms <= written_before)
            .filter(|o| {
                o.entries.iter().all(|e| {
                    !live.contains(&(e.topic.as_str(), e.topic_id))
                        || compacted
                            .get(&(e.topic.as_str(), e.topic_id, e.partition))
                            .is_some_and(|&last| e.base_offset <= last)
                })
            })
            .map(|o| o.key.clone())
            .collect();
        if !doomed.is_empty() {
            before_deadline(not_after_ms, &doomed[0], self.store.delete(&doomed)).await?;
            self.intake.removed(&doomed);
            self.metrics
                .intake_objects_deleted
                .inc_by(doomed.len() as u64);
        }
        let stale = self.intake.summaries_without_objects(&summaries);
        if !stale.is_empty() {
            if let Err(error) =
                before_deadline(not_after_ms, &stale[0], self.store.delete(&stale)).await
            {
                tracing::warn!(%error, "could not delete directory summaries whose objects are gone; the next clean-up tries again");
            }
        }
        Ok(Deleted {
            objects: doomed.len() as u32,
        })
    }
}
