//! What a new leader reads: the log bounds (checked against header, footer,
//! key and index) and the producer state of the newest segments.

use bytes::Bytes;
use futures::StreamExt;

use super::{remote, FlusherService};
use crate::batch::{self, BatchHeader};
use crate::intake_cache::PartRead;
use crate::listing::SegmentRef;
use crate::object_store::StoreError;
use crate::protocol::{ErrorKind, ProducerBatch, ProducerBatches, Recovered, RemoteError};
use crate::segment::{self, SegmentIndex};
use crate::segment_facts::Fact;

/// Producer-state rebuilds read at most this many of the newest segments.
/// The batches a producer may retry after a failover are the ones whose
/// acknowledgement was lost: they are in the old leader's last uploads, one
/// segment per flush, so the newest segments hold them; many small segments
/// must not make recovery (and so failover) slow.
const PRODUCER_SCAN_MAX_SEGMENTS: usize = 128;
/// The generation of a partition's first intake writer (etcd's counter
/// starts at 1; 0 is the segment path's).
const FIRST_GENERATION: u64 = 1;
/// Segments fetched at once while rebuilding producer state.
const PRODUCER_SCAN_PARALLELISM: usize = 16;

impl FlusherService {
    /// The log bounds from the intake parts and the segments, once this
    /// flusher holds no part of the partition that could still land. The intake
    /// view is refreshed first and the segments listed after it: compaction
    /// stores a segment before it deletes the intake parts it copied, so
    /// whatever the intake view misses, the later segment listing has. The
    /// first generation of a partition skips the refresh: parts are written
    /// only under a generation taken before, so none of it can exist (a new
    /// topic's thousand partitions then cost no thousand listings).
    pub(super) async fn recover(
        &self,
        topic: &str,
        topic_id: [u8; 16],
        partition: i32,
        generation: u64,
    ) -> Result<Recovered, RemoteError> {
        // This flusher's own parts of the partition that may still land
        // (queued or uploading, from before a failed upload the broker gave
        // up on) settle first, each by its deadline: a part of an older
        // generation landing after the log end is read could leave a gap
        // that no later generation covers.
        self.intake_writer.settled(topic, topic_id, partition).await;
        if generation != FIRST_GENERATION {
            self.intake.refresh().await?;
        }
        let list = self.list_partition(topic, partition).await?;
        let segments_end = match list.last() {
            None => None,
            Some(last) => match self.checked_last_offset(last).await? {
                Some(end) => Some(end),
                None => {
                    return Err(remote(
                        ErrorKind::Unavailable,
                        format!("{} disappeared while the log end was read; retry", last.key),
                    ))
                }
            },
        };
        let claims = self.valid_claims(topic, topic_id, partition, segments_end)?;
        let log_start_offset = list
            .first()
            .map(|s| s.base_offset)
            .or(claims.first().map(|c| c.base_offset))
            .unwrap_or(0);
        let log_end_offset = claims
            .last()
            .map(|c| c.last_offset)
            .or(segments_end)
            .map_or(0, |last| last + 1);
        Ok(Recovered {
            log_start_offset,
            log_end_offset,
            segment_count: (list.len() + claims.len()) as u32,
        })
    }

    /// The last offset of the newest segment, the log end's source, once its
    /// header, footer, key and index agree (`segment::check_bounds`); `None`
    /// when it is gone. Disagreement is an error: the partition stays
    /// unavailable rather than re-numbering or hiding records.
    async fn checked_last_offset(&self, seg: &SegmentRef) -> Result<Option<i64>, RemoteError> {
        let read = |range: std::ops::Range<u64>| self.store.get_range(&seg.key, range);
        let header = match read(0..segment::SEGMENT_HEADER_LEN as u64).await {
            Ok(b) => segment::decode_header(&b).map_err(super::corrupt)?,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let footer = match read(Fact::LastOffset.range(seg.size)).await {
            Ok(b) => segment::decode_footer(&b).map_err(super::corrupt)?,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // The index trails its segment and may be missing; one that cannot be
        // read only costs range reads a scan, so only a readable one is held
        // against the footer.
        let index = match self.store.get(&seg.index_key()).await {
            Ok(raw) => SegmentIndex::decode(&raw).ok(),
            Err(_) => None,
        };
        segment::check_bounds(seg.base_offset, &header, &footer, index.as_ref()).map_err(|e| {
            remote(
                ErrorKind::Corrupt,
                format!(
                    "{}: {e}; the partition is not served until the segment is repaired or removed",
                    seg.key
                ),
            )
        })?;
        self.facts
            .remember(seg, Fact::LastOffset, footer.last_offset);
        self.facts
            .remember(seg, Fact::FirstSealedMs, header.created_ms);
        Ok(Some(footer.last_offset))
    }

    /// Producer fields of the newest idempotent batches: of the partition's
    /// intake parts (newest first, within `max_bytes`), then of its newest
    /// segments with what budget is left. Runs right after `Recover`, whose
    /// intake view it uses.
    pub(super) async fn producer_batches(
        &self,
        topic: &str,
        topic_id: [u8; 16],
        partition: i32,
        max_bytes: u64,
    ) -> Result<ProducerBatches, RemoteError> {
        for _ in 0..3 {
            let list = self.list_partition(topic, partition).await?;
            let segments_end = self.segments_end(&list).await?;
            let claims = self.valid_claims(topic, topic_id, partition, segments_end)?;
            let mut budget = max_bytes;
            let mut newest_first = Vec::new();
            for c in claims.iter().rev().take(PRODUCER_SCAN_MAX_SEGMENTS) {
                let len = u64::from(c.source.entry().length);
                if !newest_first.is_empty() && len > budget {
                    break;
                }
                budget = budget.saturating_sub(len);
                newest_first.push(c.source.clone());
            }
            let reached_segments = newest_first.len() == claims.len() && budget > 0;
            let parts: Vec<Option<Bytes>> = futures::stream::iter(newest_first.into_iter().rev())
                .map(|at| async move { self.intake.read_part(&at, PartRead::WithNeighbours).await })
                .buffered(PRODUCER_SCAN_PARALLELISM)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
            let Some(parts) = parts.into_iter().collect::<Option<Vec<Bytes>>>() else {
                continue; // compacted meanwhile: list again
            };
            let mut batches = if reached_segments && !list.is_empty() {
                match self.producer_batches_listed(&list, budget).await? {
                    Some(b) => b,
                    None => continue,
                }
            } else {
                Vec::new()
            };
            for part in &parts {
                let after = batches.last().map_or(i64::MIN, |b| b.base_offset);
                batches.extend(
                    batch::iter_headers(part)
                        .map(|(_, h)| h)
                        .filter(|h| h.producer_id >= 0 && h.base_offset > after)
                        .map(|h| producer_batch(&h)),
                );
            }
            return Ok(ProducerBatches { batches });
        }
        Err(remote(
            ErrorKind::Unavailable,
            "segments kept disappearing while producer state was read (merges or compaction in progress); retry",
        ))
    }

    /// `None` when a listed segment is gone (merged meanwhile).
    async fn producer_batches_listed(
        &self,
        list: &[SegmentRef],
        max_bytes: u64,
    ) -> Result<Option<Vec<ProducerBatch>>, RemoteError> {
        let mut budget = max_bytes;
        let mut newest_first = Vec::new();
        for seg in list.iter().rev().take(PRODUCER_SCAN_MAX_SEGMENTS) {
            if !newest_first.is_empty() && seg.size > budget {
                break;
            }
            budget = budget.saturating_sub(seg.size);
            newest_first.push(seg.clone());
        }
        // Recovery (and so failover) waits for this: fetch in parallel, in order.
        let mut segments = futures::stream::iter(newest_first.into_iter().rev())
            .map(|seg| async move { self.load_any_size(&seg).await })
            .buffered(PRODUCER_SCAN_PARALLELISM);
        let mut batches: Vec<ProducerBatch> = Vec::new();
        while let Some(whole) = segments.next().await {
            let Some(whole) = whole? else {
                return Ok(None);
            };
            // A segment left over from an interrupted merge repeats batches
            // of the merged one before it: keep offsets increasing.
            let after = batches.last().map_or(i64::MIN, |b| b.base_offset);
            batches.extend(
                whole
                    .batch_headers()
                    .filter(|(_, h)| h.producer_id >= 0 && h.base_offset > after)
                    .map(|(_, h)| producer_batch(&h)),
            );
        }
        Ok(Some(batches))
    }
}

fn producer_batch(h: &BatchHeader) -> ProducerBatch {
    ProducerBatch {
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
        last_offset_delta: h.last_offset_delta,
        base_offset: h.base_offset,
    }
}
