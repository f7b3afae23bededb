//! Cold reads: range reads from intake parts, whole cached segments or a
//! large segment's index, and lookups by timestamp.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{remote, FlusherService, PARALLEL_GETS};
use crate::batch;
use crate::intake_cache::PartRead;
use crate::listing::SegmentRef;
use crate::object_store::StoreError;
use crate::protocol::{ErrorKind, OffsetForTimestamp, Range, RemoteError};
use crate::segment::{self, SegmentIndex};
use crate::segment_loader::Loaded;

/// Intake parts of a partition whose objects a reader fetches ahead.
const READ_AHEAD_PARTS: usize = 8;
/// Intake parts one read returns at most: tiny parts (one small record
/// per window) must not turn one fetch into thousands of GETs.
const MAX_PARTS_PER_READ: usize = 64;

impl FlusherService {
    pub(super) async fn read_range(
        &self,
        topic: &str,
        topic_id: [u8; 16],
        partition: i32,
        offset: i64,
        max_bytes: u32,
    ) -> Result<Range, RemoteError> {
        let max_bytes = max_bytes as usize;
        let mut list = match self.listings.get(topic, partition) {
            Some(list) => list,
            None => self.list_partition(topic, partition).await?,
        };
        // The segment listing and the intake view go stale as data is
        // written, merged and compacted; fresh ones are enough unless a merge
        // or a compaction lands in between.
        for attempt in 0..3 {
            let fresh = attempt > 0;
            let found = match self.segments_end(&list).await {
                Err(e) if e.kind == ErrorKind::Unavailable && !fresh => None,
                Err(e) => return Err(e),
                // Newer than every segment: an intake part holds it.
                Ok(end) if end.is_none_or(|end| offset > end) => {
                    self.read_intake(topic, topic_id, partition, end, offset, max_bytes, fresh)
                        .await?
                }
                Ok(_) => {
                    self.read_listed(topic, partition, &list, offset, max_bytes)
                        .await?
                }
            };
            if let Some(batches) = found {
                return Ok(Range { batches });
            }
            // Intake first, then segments (see `recover`).
            self.intake.refresh().await?;
            list = self.list_partition(topic, partition).await?;
        }
        // Not an empty range: that would tell the consumer there is nothing
        // where data exists, and it would ask again at once, for ever.
        Err(remote(
            ErrorKind::Unavailable,
            format!(
                "the segments of {topic}-{partition} kept changing while offset {offset} was read (merges, compaction or an inconsistent listing); retry"
            ),
        ))
    }

    /// Reads from the intake part that holds `offset` (or the first one,
    /// when `offset` is below them all) and the whole parts after it while
    /// they fit in `max_bytes`; `None` when the view lacks it or its object
    /// is gone. From views that may be stale (`fresh` false) a
    /// contradiction is taken for staleness, not reported.
    #[allow(clippy::too_many_arguments)]
    async fn read_intake(
        &self,
        topic: &str,
        topic_id: [u8; 16],
        partition: i32,
        segments_end: Option<i64>,
        offset: i64,
        max_bytes: usize,
        fresh: bool,
    ) -> Result<Option<Bytes>, RemoteError> {
        let claims = match self.valid_claims(topic, topic_id, partition, segments_end) {
            Ok(claims) => claims,
            Err(_) if !fresh => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(first) = claims.iter().position(|c| c.last_offset >= offset) else {
            return Ok(None);
        };
        // The holder and the whole parts after it that fit in `max_bytes`.
        let mut room = max_bytes;
        let wanted: Vec<_> = claims[first..]
            .iter()
            .take(MAX_PARTS_PER_READ)
            .enumerate()
            .take_while(|(i, c)| {
                let length = c.source.entry().length as usize;
                let fits = *i == 0 || length <= room;
                room = room.saturating_sub(length);
                fits
            })
            .map(|(_, c)| c.source.clone())
            .collect();
        let parts: Vec<Option<Bytes>> = futures::stream::iter(wanted.iter().cloned())
            .map(|at| async move { self.intake.read_part(&at, PartRead::WithNeighbours).await })
            .buffered(PARALLEL_GETS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let ahead: Vec<_> = claims[first + wanted.len()..]
            .iter()
            .take(READ_AHEAD_PARTS)
            .map(|c| c.source.clone())
            .collect();
        self.intake.read_ahead(&ahead);
        let mut out = BytesMut::new();
        for (at, part) in wanted.iter().zip(parts) {
            let Some(part) = part else {
                // Its object is gone (compacted): what came before stands.
                break;
            };
            if out.is_empty() {
                let sliced = slice_batches(&part, offset, max_bytes);
                out.extend_from_slice(&sliced);
                let last = batch::iter_headers(&sliced)
                    .last()
                    .map(|(_, h)| h.last_offset());
                if last != Some(at.entry().last_offset) {
                    break; // cut short by max_bytes: the next part would leave a gap
                }
            } else if out.len() + part.len() <= max_bytes {
                out.extend_from_slice(&part);
            } else {
                break;
            }
        }
        Ok((!out.is_empty()).then(|| out.freeze()))
    }

    /// Reads from the segment that holds `offset` in `list`; `None` when the
    /// listing turned out stale. Normally that is the last segment whose base
    /// is `<= offset`; after an interrupted merge a merged segment may extend
    /// past later (redundant) ones, so earlier segments are tried too.
    async fn read_listed(
        &self,
        topic: &str,
        partition: i32,
        list: &[SegmentRef],
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, RemoteError> {
        // Below the first segment (retention moved the start): serve from the first.
        let at = list.partition_point(|s| s.base_offset <= offset).max(1);
        // Leftovers of an interrupted merge are few; a bound keeps a damaged
        // listing from turning one read into many.
        for i in (0..at).rev().take(64) {
            let Some(seg) = list.get(i) else {
                return Ok(None);
            };
            let Some(batches) = self
                .read_segment(topic, partition, seg, offset, max_bytes)
                .await?
            else {
                return Ok(None);
            };
            if !batches.is_empty() {
                self.segments.read_ahead(&list[i + 1..]);
                return Ok(Some(batches));
            }
            if i + 1 == list.len() {
                // The newest listed segment ends before `offset`: newer ones exist.
                return Ok(None);
            }
            if self
                .last_offset_of(seg)
                .await?
                .is_some_and(|end| end >= offset)
            {
                // It covers `offset` but holds nothing from there: the
                // cleaner removed those records. Reading goes on at the
                // next record, in the segments after it.
                return self
                    .read_after_gap(topic, partition, &list[i + 1..], offset, max_bytes)
                    .await;
            }
        }
        Ok(None)
    }

    /// The first batches after a gap a cleaned segment left at `offset`,
    /// from `after` (the segments that follow it).
    async fn read_after_gap(
        &self,
        topic: &str,
        partition: i32,
        after: &[SegmentRef],
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, RemoteError> {
        // A bound keeps a run of emptied segments from turning one read into
        // many; the client asks again from where this one ends.
        for seg in after.iter().take(64) {
            let Some(batches) = self
                .read_segment(topic, partition, seg, offset, max_bytes)
                .await?
            else {
                return Ok(None);
            };
            if !batches.is_empty() {
                return Ok(Some(batches));
            }
        }
        Ok(None)
    }

    /// The batches of `seg` from the one that holds `offset` (or the first
    /// after it); `None` when it is gone.
    async fn read_segment(
        &self,
        topic: &str,
        partition: i32,
        seg: &SegmentRef,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, RemoteError> {
        Ok(Some(match self.segments.load(seg).await? {
            Loaded::Gone => return Ok(None),
            Loaded::Whole(whole) => {
                if whole.kfs_len() != seg.size {
                    // Replaced by a merge or a cleaning since this listing was taken.
                    self.listings.invalidate(topic, partition);
                }
                slice_batches(&whole.body, offset, max_bytes)
            }
            Loaded::Large => match self.read_by_index(seg, offset, max_bytes).await? {
                Some(b) => b,
                None => return Ok(None),
            },
        }))
    }

    /// Range read of a large segment: index lookup, ranged GETs, each batch's
    /// CRC verified. `None` when the segment is gone.
    async fn read_by_index(
        &self,
        seg: &SegmentRef,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, RemoteError> {
        let header_end = segment::SEGMENT_HEADER_LEN as u64;
        let mut start = match self.store.get(&seg.index_key()).await {
            Ok(raw) => SegmentIndex::decode(&raw)
                .map_err(super::corrupt)?
                .lookup(offset)
                .unwrap_or(segment::SEGMENT_HEADER_LEN as u32),
            Err(_) => segment::SEGMENT_HEADER_LEN as u32,
        } as u64;
        // An index read before the cleaner replaced the segment points into
        // the old layout: once, the read scans from the start instead.
        let mut trust_index = true;
        let body_end = seg.size.saturating_sub(segment::SEGMENT_FOOTER_LEN as u64);
        let window = (max_bytes as u64).max(1024 * 1024);
        let mut want = window;
        'windows: loop {
            let end = (start + want).min(body_end);
            let raw = match self.store.get_range(&seg.key, start..end).await {
                Ok(raw) => raw,
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let mut pos = 0;
            let mut out = BytesMut::new();
            while pos < raw.len() {
                match batch::validate(&raw[pos..]) {
                    Ok(h) => {
                        let fits = out.len() + h.size <= max_bytes || out.is_empty();
                        if h.last_offset() >= offset && fits {
                            out.extend_from_slice(&raw[pos..pos + h.size]);
                        } else if !fits {
                            break;
                        }
                        pos += h.size;
                    }
                    Err(batch::BatchError::LengthMismatch { declared, .. })
                        if out.is_empty() && end < body_end =>
                    {
                        // The batch at `pos` runs past the window: read on from it.
                        start += pos as u64;
                        want = (declared as u64).max(window);
                        continue 'windows;
                    }
                    Err(batch::BatchError::LengthMismatch { .. }) => break,
                    Err(_) if trust_index && start > header_end && out.is_empty() => {
                        trust_index = false;
                        start = header_end;
                        want = window;
                        continue 'windows;
                    }
                    Err(e) => return Err(remote(ErrorKind::Corrupt, format!("{}: {e}", seg.key))),
                }
            }
            if !out.is_empty() || end >= body_end {
                return Ok(Some(out.freeze()));
            }
            // Every batch of the window precedes `offset`: move past them.
            start += pos as u64;
            want = window;
        }
    }

    /// The first batch whose max timestamp is at least `timestamp`. Each
    /// segment's greatest timestamp is remembered per object version, so a
    /// segment is read at most once for all lookups; up to
    /// `PARALLEL_GETS` segments are read at a time.
    pub(super) async fn offset_for_timestamp(
        &self,
        topic: &str,
        topic_id: [u8; 16],
        partition: i32,
        timestamp: i64,
    ) -> Result<OffsetForTimestamp, RemoteError> {
        'listing: for _ in 0..3 {
            // Intake first, then segments (see `recover`).
            self.intake.refresh().await?;
            let list = self.list_partition(topic, partition).await?;
            let mut greatest = futures::stream::iter(list.iter().cloned())
                .map(|seg| async move {
                    let max = self.max_timestamp_of(&seg).await;
                    (seg, max)
                })
                .buffered(PARALLEL_GETS);
            while let Some((seg, max)) = greatest.next().await {
                match max? {
                    None => continue 'listing,
                    Some(max) if max < timestamp => continue,
                    Some(_) => {}
                }
                let Some(whole) = self.load_any_size(&seg).await? else {
                    continue 'listing;
                };
                let found = whole
                    .batch_headers()
                    .find(|(_, h)| h.max_timestamp >= timestamp)
                    .map(|(_, h)| h);
                if let Some(h) = found {
                    return Ok(OffsetForTimestamp {
                        offset: h.base_offset,
                        timestamp: h.max_timestamp,
                    });
                }
            }
            // Then the intake parts after the segments, each skipped by the
            // greatest timestamp its directory entry records.
            drop(greatest);
            let segments_end = self.segments_end(&list).await?;
            let claims = self.valid_claims(topic, topic_id, partition, segments_end)?;
            for c in claims
                .iter()
                .filter(|c| c.source.entry().max_timestamp >= timestamp)
            {
                let Some(part) = self.intake.read_part(&c.source, PartRead::Alone).await? else {
                    continue 'listing;
                };
                let found = batch::iter_headers(&part)
                    .map(|(_, h)| h)
                    .find(|h| h.max_timestamp >= timestamp);
                if let Some(h) = found {
                    return Ok(OffsetForTimestamp {
                        offset: h.base_offset,
                        timestamp: h.max_timestamp,
                    });
                }
            }
            return Ok(OffsetForTimestamp {
                offset: -1,
                timestamp: -1,
            });
        }
        Err(remote(
            ErrorKind::Unavailable,
            "segments kept disappearing while searching by timestamp (merges in progress); retry",
        ))
    }

    /// The greatest batch max timestamp in a segment; `None` when it is gone.
    async fn max_timestamp_of(&self, seg: &SegmentRef) -> Result<Option<i64>, RemoteError> {
        if let Some(max) = self.facts.max_timestamp(seg) {
            return Ok(Some(max));
        }
        let Some(whole) = self.load_any_size(seg).await? else {
            return Ok(None);
        };
        let max = whole
            .batch_headers()
            .map(|(_, h)| h.max_timestamp)
            .max()
            .unwrap_or(i64::MIN);
        self.facts.remember_max_timestamp(seg, max);
        Ok(Some(max))
    }
}

/// Batches of a verified body from the one holding `offset`: at most
/// `max_bytes`, but at least one whole batch.
fn slice_batches(body: &Bytes, offset: i64, max_bytes: usize) -> Bytes {
    let mut start = None;
    let mut end = 0;
    for (pos, h) in batch::iter_headers(body) {
        match start {
            None if h.last_offset() >= offset => {
                start = Some(pos);
                end = pos + h.size;
            }
            Some(s) if pos + h.size - s <= max_bytes => end = pos + h.size,
            Some(_) => break,
            None => {}
        }
    }
    match start {
        Some(s) => body.slice(s..end),
        None => Bytes::new(),
    }
}
