//! Cleaning of compacted topics, beside the data: the I/O around
//! `crate::cleaner`'s decisions. One pass of a partition:
//!
//! 1. List its segments and read their footers and headers (cached facts).
//!    A segment inside the one before it is a leftover of an interrupted
//!    pass (or merge): the pass checks that the enclosing segment holds a
//!    cleaning of it and deletes it, and does nothing else.
//! 2. Plan: the segments old enough, never the newest; those the cleaner
//!    wrote before are the clean part, the rest dirty. Nothing happens
//!    until the dirty ratio or the maximum lag says so.
//! 3. Map the latest offset of every key of the dirty segments, in order,
//!    within the key map's budget: a segment that would not fit ends the
//!    mapped range (the rest waits for the next pass, as in Kafka).
//! 4. Rewrite everything from the first segment to the end of the mapped
//!    range, group by group in offset order, each group into one cleaned
//!    segment over its first segment's key (a conditional PUT on the ETag
//!    that was listed), then delete the group's other segments.
//!
//! A pass outlives one request: every write must start before the
//! request's deadline (the leader's maintenance step, see the broker's
//! `maintenance`), so a request writes the groups that fit and answers
//! `more`; the broker asks again with a new deadline, and the pass goes on
//! from its plan and key map (`CleaningRun`) once a fresh listing shows its
//! remaining segments unchanged. A failure ends the pass; the next one
//! starts afresh.
//!
//! Why it is safe: every record a group drops has a later record of its key
//! in the mapped range, which is kept (in a group written later, or still in
//! its original segment until then); until a group's other segments are
//! deleted they hold copies, and a reader that meets them reads records at
//! their own offsets. Tombstones go only once their delete horizon, set by
//! an earlier pass that had already dropped every older record of the key
//! in the groups before theirs, has passed; and a pass first removes
//! leftovers, so no older copy of a key outlives its tombstone.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::{before_deadline, now_ms, remote, FlusherService};
use crate::batch::BatchHeader;
use crate::cleaner::{self, CleaningPolicy, KeyMap, SegmentState};
use crate::listing::SegmentRef;
use crate::protocol::{Cleaned, ErrorKind, RemoteError};
use crate::records;
use crate::segment::{self, VerifiedSegment};

/// The largest decompressed batch the cleaner reads (Kafka's clients send
/// far smaller ones; the broker refuses larger at produce).
pub(super) const MAX_BATCH_RECORDS_BYTES: usize = 128 * 1024 * 1024;

/// What a cleaning pass may do.
#[derive(Debug, Clone, Copy)]
pub(super) struct CleaningLimits {
    pub(super) policy: CleaningPolicy,
    /// `delete.retention.ms`.
    pub(super) delete_retention_ms: i64,
    /// Largest group of segments rewritten into one.
    pub(super) target_bytes: u64,
}

/// The keys of the mapped range and the last batch of each idempotent
/// producer in it (kept, emptied if need be, so that producer's sequence
/// stays known as Kafka's cleaner keeps it).
struct Mapped {
    keys: KeyMap,
    last_batch_of: HashMap<i64, i64>,
    /// How many of the dirty segments were mapped.
    segments: usize,
    bytes_read: u64,
}

/// A pass in progress, kept between requests.
pub(super) struct CleaningRun {
    topic: String,
    partition: i32,
    /// The listing the pass planned on; the segments of the groups not
    /// written yet must still be these (key and ETag).
    list: Vec<SegmentRef>,
    ends: Vec<i64>,
    cleaned: Vec<bool>,
    mapped: Arc<Mapped>,
    groups: Vec<std::ops::Range<usize>>,
    next: usize,
    /// Where a span of groups whose records all went starts: it is not
    /// written on its own (a run of emptied segments would make readers
    /// walk them one by one) but replaced together with the next group.
    carry_from: Option<usize>,
    started: std::time::Instant,
    progress: Cleaned,
}

/// The segments one rewrite replaces: a group, after the emptied groups
/// carried into it.
struct Span<'a> {
    segments: &'a [SegmentRef],
    ends: &'a [i64],
    cleaned: &'a [bool],
    /// How many of `segments` come from emptied groups before the group.
    carried: usize,
    /// The pass's last group: written even when empty.
    last: bool,
}

/// A pass not finished within this long is planned again (its map would
/// lag what was written since).
const RUN_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// What cleaning a group gave.
struct GroupOutcome {
    /// Nothing of the group (and the span carried into it) stays, and more
    /// groups follow: it is carried into the next one, not written.
    emptied: bool,
    written: bool,
    bytes_read: u64,
    bytes_written: u64,
}

fn corrupt(e: impl std::fmt::Display, key: &str) -> RemoteError {
    remote(
        ErrorKind::Corrupt,
        format!("{key}: {e}; the partition is not cleaned until an operator checks it"),
    )
}

impl FlusherService {
    pub(super) async fn clean_segments(
        &self,
        topic: &str,
        partition: i32,
        limits: CleaningLimits,
        not_after_ms: i64,
    ) -> Result<Cleaned, RemoteError> {
        // One pass at a time per flusher: the key map budget is the flusher's.
        let mut slot = self.cleaning.lock().await;
        let resumed = slot.take().filter(|run| {
            run.topic == topic && run.partition == partition && run.started.elapsed() < RUN_MAX_AGE
        });
        let mut run = match resumed {
            Some(run) => {
                self.check_unchanged(&run).await?;
                run
            }
            None => match self
                .plan_run(topic, partition, &limits, not_after_ms)
                .await?
            {
                Ok(run) => run,
                Err(answer) => return Ok(answer),
            },
        };
        while run.next < run.groups.len() {
            let group = run.groups[run.next].clone();
            let from = run.carry_from.unwrap_or(group.start);
            let span = Span {
                segments: &run.list[from..group.end],
                ends: &run.ends[from..group.end],
                cleaned: &run.cleaned[from..group.end],
                carried: group.start - from,
                last: run.next + 1 == run.groups.len(),
            };
            let outcome = self
                .clean_group(topic, partition, span, &run.mapped, &limits, not_after_ms)
                .await;
            match outcome {
                Ok(done) => {
                    run.next += 1;
                    run.carry_from = done.emptied.then_some(from);
                    run.progress.written += u32::from(done.written);
                    run.progress.bytes_read += done.bytes_read;
                    run.progress.bytes_written += done.bytes_written;
                    self.metrics.cleaner_bytes_read.inc_by(done.bytes_read);
                    self.metrics
                        .cleaner_bytes_written
                        .inc_by(done.bytes_written);
                }
                // Out of time before the group was written: the next request
                // goes on from it.
                // (A group cut short after its PUT left leftovers and a new
                // ETag, so the next request's check ends the pass.)
                Err(e) if e.kind == ErrorKind::Expired => {
                    let answer = Cleaned {
                        more: 1,
                        ..run.progress
                    };
                    *slot = Some(run);
                    return Ok(answer);
                }
                Err(e) => return Err(e),
            }
        }
        self.metrics.cleaner_passes.inc();
        tracing::info!(
            topic,
            partition,
            segments = run.progress.segments,
            written = run.progress.written,
            keys = run.progress.keys,
            bytes_read = run.progress.bytes_read,
            bytes_written = run.progress.bytes_written,
            dirty_ratio_ppm = run.progress.dirty_ratio_ppm,
            "cleaned a compacted partition"
        );
        Ok(run.progress)
    }

    /// A new pass: leftovers first (their removal is the whole answer), then
    /// the plan and the key map. `Ok(Err(answer))` when there is nothing to
    /// clean.
    async fn plan_run(
        &self,
        topic: &str,
        partition: i32,
        limits: &CleaningLimits,
        not_after_ms: i64,
    ) -> Result<Result<CleaningRun, Cleaned>, RemoteError> {
        let list = self.list_partition(topic, partition).await?;
        let Some(ends) = self
            .last_offsets_of(list.clone())
            .await?
            .into_iter()
            .collect::<Option<Vec<i64>>>()
        else {
            return Err(self.changed_during_cleaning(topic, partition));
        };
        let removed = self
            .remove_leftovers(topic, partition, &list, &ends, not_after_ms)
            .await?;
        if removed > 0 {
            return Ok(Err(Cleaned {
                removed,
                ..nothing(0)
            }));
        }
        let Some(cleaned) = self
            .cleaned_flags_of(list.clone())
            .await?
            .into_iter()
            .collect::<Option<Vec<bool>>>()
        else {
            return Err(self.changed_during_cleaning(topic, partition));
        };
        // A cleaned segment is rewritten at every pass: its header says how
        // old its data is.
        let data_times = self.data_times_of(list.clone(), &cleaned).await?;
        let states: Vec<SegmentState> = list
            .iter()
            .zip(&cleaned)
            .zip(data_times)
            .map(|((s, &cleaned), data_ms)| SegmentState {
                size: s.size,
                last_modified_ms: data_ms.unwrap_or(s.last_modified_ms),
                cleaned,
            })
            .collect();
        let plan = cleaner::plan(&states, now_ms(), &limits.policy);
        let dirty_ratio_ppm = (plan.dirty_ratio * 1_000_000.0) as u32;
        if !plan.due {
            return Ok(Err(nothing(dirty_ratio_ppm)));
        }
        let mapped = self
            .map_keys(&list[plan.dirty_from..plan.cleanable])
            .await?;
        if mapped.segments == 0 {
            return Err(remote(
                ErrorKind::Internal,
                format!(
                    "{topic}-{partition}: segment {} holds more records than the cleaner's key map takes ({} keys); raise the flusher's --cleaner-memory-bytes",
                    list[plan.dirty_from].key,
                    mapped.keys.room()
                ),
            ));
        }
        let end = plan.dirty_from + mapped.segments;
        let sizes: Vec<u64> = list[..end].iter().map(|s| s.size).collect();
        let progress = Cleaned {
            segments: end as u32,
            keys: mapped.keys.len() as u64,
            bytes_read: mapped.bytes_read,
            ..nothing(dirty_ratio_ppm)
        };
        self.metrics.cleaner_bytes_read.inc_by(mapped.bytes_read);
        Ok(Ok(CleaningRun {
            topic: topic.to_string(),
            partition,
            groups: cleaner::groups(&sizes, limits.target_bytes),
            list,
            ends,
            cleaned,
            mapped: Arc::new(mapped),
            next: 0,
            carry_from: None,
            started: std::time::Instant::now(),
            progress,
        }))
    }

    /// A resumed pass goes on only if the segments it has yet to rewrite
    /// are still the ones it planned on.
    async fn check_unchanged(&self, run: &CleaningRun) -> Result<(), RemoteError> {
        let fresh = self.list_partition(&run.topic, run.partition).await?;
        let from = run.carry_from.unwrap_or(run.groups[run.next].start);
        let to = run.groups[run.groups.len() - 1].end;
        let unchanged = run.list[from..to].iter().all(|planned| {
            fresh
                .iter()
                .any(|s| s.key == planned.key && s.etag == planned.etag && !s.etag.is_empty())
        });
        if unchanged {
            Ok(())
        } else {
            Err(self.changed_during_cleaning(&run.topic, run.partition))
        }
    }

    fn changed_during_cleaning(&self, topic: &str, partition: i32) -> RemoteError {
        self.listings.invalidate(topic, partition);
        remote(
            ErrorKind::Unavailable,
            format!("{topic}-{partition}: segments changed during a cleaning pass; the next pass lists again"),
        )
    }

    /// Deletes the segments that lie inside the one before them, once their
    /// content is checked to be in it (copied, or cleaned); the count.
    async fn remove_leftovers(
        &self,
        topic: &str,
        partition: i32,
        list: &[SegmentRef],
        ends: &[i64],
        not_after_ms: i64,
    ) -> Result<u32, RemoteError> {
        let mut leftovers: Vec<&SegmentRef> = Vec::new();
        let mut container: Option<(usize, i64)> = None;
        for (i, (seg, &end)) in list.iter().zip(ends).enumerate() {
            match container {
                Some((outer, last)) if seg.base_offset <= last => {
                    if end > last {
                        return Err(remote(
                            ErrorKind::Corrupt,
                            format!("{} overlaps {} only in part; not cleaning this partition until an operator checks them", seg.key, list[outer].key),
                        ));
                    }
                    self.check_copy(seg, &list[outer]).await?;
                    leftovers.push(seg);
                }
                _ => container = Some((i, end)),
            }
        }
        if leftovers.is_empty() {
            return Ok(0);
        }
        self.delete_segments(topic, partition, &leftovers, not_after_ms)
            .await?;
        tracing::info!(
            topic,
            partition,
            segments = leftovers.len(),
            "removed segments left over from an interrupted rewrite"
        );
        Ok(leftovers.len() as u32)
    }

    /// A whole segment for the cleaner: from the cache if there, else one
    /// GET around it (cleaning must not evict what consumers read).
    async fn load_for_cleaning(
        &self,
        seg: &SegmentRef,
    ) -> Result<Arc<VerifiedSegment>, RemoteError> {
        let whole = match self.segments.cached(seg) {
            Some(whole) => Some(whole),
            None => self.get_verified(seg).await?,
        };
        match whole {
            Some(whole) if whole.header.base_offset == seg.base_offset => Ok(whole),
            _ => Err(remote(
                ErrorKind::Unavailable,
                format!(
                    "{} changed during a cleaning pass; the next pass lists again",
                    seg.key
                ),
            )),
        }
    }

    /// Maps the keys of `dirty` in order, as far as the key map's budget
    /// goes (whole segments only).
    async fn map_keys(&self, dirty: &[SegmentRef]) -> Result<Mapped, RemoteError> {
        // Sized for what the range holds at most, so a small partition's
        // pass allocates little.
        let records: i64 = self
            .record_counts_of(dirty.to_vec())
            .await?
            .into_iter()
            .map(|n| n.unwrap_or(0).max(0))
            .sum();
        let capacity = KeyMap::capacity_for(self.settings.cleaner_memory_bytes)
            .min(usize::try_from(records).unwrap_or(usize::MAX));
        let mut mapped = Mapped {
            keys: KeyMap::new(capacity),
            last_batch_of: HashMap::new(),
            segments: 0,
            bytes_read: 0,
        };
        for seg in dirty {
            let whole = self.load_for_cleaning(seg).await?;
            if (whole.header.record_count.max(0) as usize) > mapped.keys.room() {
                break;
            }
            let key = seg.key.clone();
            mapped = tokio::task::spawn_blocking(move || {
                map_segment(&whole, &mut mapped).map(|()| mapped)
            })
            .await
            .map_err(|e| remote(ErrorKind::Internal, format!("key mapping failed: {e}")))?
            .map_err(|e| corrupt(e, &key))?;
            mapped.segments += 1;
            mapped.bytes_read += seg.size;
        }
        Ok(mapped)
    }

    /// Cleans one group of segments into one cleaned segment over the first
    /// key of its span (the group and the emptied groups carried into it),
    /// then deletes the span's other segments.
    async fn clean_group(
        &self,
        topic: &str,
        partition: i32,
        span: Span<'_>,
        mapped: &Arc<Mapped>,
        limits: &CleaningLimits,
        not_after_ms: i64,
    ) -> Result<GroupOutcome, RemoteError> {
        let group = &span.segments[span.carried..];
        let cleaned = &span.cleaned[span.carried..];
        let first = &span.segments[0];
        if first.etag.is_empty() {
            return Err(self.changed_during_cleaning(topic, partition));
        }
        let mut wholes = Vec::with_capacity(group.len());
        for seg in group {
            wholes.push(self.load_for_cleaning(seg).await?);
        }
        let bytes_read: u64 = group.iter().map(|s| s.size).sum();
        // The time of the newest data: a cleaned segment's own header says
        // it, any other segment was written when it was listed.
        let newest_data_ms = group
            .iter()
            .zip(&wholes)
            .zip(cleaned)
            .map(|((seg, whole), &cleaned)| {
                if cleaned {
                    whole.header.created_ms
                } else {
                    seg.last_modified_ms
                }
            })
            .max()
            .unwrap_or_else(now_ms);
        let (base, last) = (first.base_offset, span.ends[span.ends.len() - 1]);
        let now = now_ms();
        let horizon = now.saturating_add(limits.delete_retention_ms.max(0));
        let index_interval = self.settings.index_interval;
        let cleaning = mapped.clone();
        let key = first.key.clone();
        let (encoded, changed) = tokio::task::spawn_blocking(move || {
            let mut batches: Vec<Bytes> = Vec::new();
            let mut changed = false;
            for whole in &wholes {
                for (pos, h) in whole_batches(whole)? {
                    let original = whole.body.slice(pos..pos + h.size);
                    let outcome = cleaner::clean_batch(
                        &original,
                        &h,
                        &cleaning.keys,
                        &cleaning.last_batch_of,
                        now,
                        horizon,
                        MAX_BATCH_RECORDS_BYTES,
                    )
                    .map_err(|e| e.to_string())?;
                    match outcome {
                        cleaner::BatchOutcome::Unchanged => batches.push(original),
                        cleaner::BatchOutcome::Rewritten(b) => {
                            changed = true;
                            batches.push(b);
                        }
                        cleaner::BatchOutcome::Dropped => changed = true,
                    }
                }
            }
            segment::encode_cleaned(&batches, base, last, newest_data_ms, index_interval)
                .map(|encoded| (encoded, changed))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| remote(ErrorKind::Internal, format!("cleaning failed: {e}")))?
        .map_err(|e| corrupt(e, &key))?;
        if encoded.record_count == 0 && !span.last {
            return Ok(GroupOutcome {
                emptied: true,
                written: false,
                bytes_read,
                bytes_written: 0,
            });
        }
        if !changed && span.segments.len() == 1 && cleaned[0] {
            return Ok(GroupOutcome {
                emptied: false,
                written: false,
                bytes_read,
                bytes_written: 0,
            });
        }
        let body = encoded.kfs_bytes();
        let bytes_written = body.len() as u64;
        // The old index points into the old layout: it goes first, so a
        // range read in between scans instead of trusting it.
        before_deadline(
            not_after_ms,
            &first.index_key(),
            self.store.delete(&[first.index_key()]),
        )
        .await?;
        match before_deadline(
            not_after_ms,
            &first.key,
            self.store
                .put_replacing(&first.key, body, Some(&first.etag)),
        )
        .await
        {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::Conflict => {
                return Err(self.changed_during_cleaning(topic, partition));
            }
            Err(e) => return Err(e),
        }
        self.segments.forget_prefix(&first.key);
        self.facts.forget(&first.key);
        if let Err(e) = before_deadline(
            not_after_ms,
            &first.index_key(),
            self.store
                .put_replacing(&first.index_key(), encoded.index.clone(), None),
        )
        .await
        {
            tracing::warn!(key = %first.index_key(), error = %e, "cleaned index upload failed; range reads will scan");
        }
        let rest: Vec<&SegmentRef> = span.segments[1..].iter().collect();
        self.delete_segments(topic, partition, &rest, not_after_ms)
            .await?;
        self.listings.invalidate(topic, partition);
        Ok(GroupOutcome {
            emptied: false,
            written: true,
            bytes_read,
            bytes_written,
        })
    }
}

fn nothing(dirty_ratio_ppm: u32) -> Cleaned {
    Cleaned {
        more: 0,
        dirty_ratio_ppm,
        segments: 0,
        written: 0,
        removed: 0,
        keys: 0,
        bytes_read: 0,
        bytes_written: 0,
    }
}

/// The batches of a segment, which must fill its body exactly: a body that
/// ends in something else is reported, never cleaned away.
fn whole_batches(whole: &VerifiedSegment) -> Result<Vec<(usize, BatchHeader)>, String> {
    let batches: Vec<_> = whole.batch_headers().collect();
    let filled = batches.last().map_or(0, |(pos, h)| pos + h.size);
    if filled != whole.body.len() {
        return Err(format!(
            "the segment's batches end at byte {filled} of its {}-byte body",
            whole.body.len()
        ));
    }
    Ok(batches)
}

/// Adds one segment's keys to the map, and its idempotent producers' last
/// batches.
fn map_segment(whole: &VerifiedSegment, mapped: &mut Mapped) -> Result<(), String> {
    for (pos, h) in whole_batches(whole)? {
        if h.is_control() {
            continue;
        }
        if h.producer_id >= 0 {
            mapped.last_batch_of.insert(h.producer_id, h.base_offset);
        }
        let original = &whole.body[pos..pos + h.size];
        let plain = records::decompress(original, &h, MAX_BATCH_RECORDS_BYTES)
            .map_err(|e| e.to_string())?;
        for r in records::parse(&plain, h.records_count).map_err(|e| e.to_string())? {
            if let Some(key) = r.key {
                // The segment fit the map's room, so every new key has one.
                mapped
                    .keys
                    .insert(key, h.base_offset + i64::from(r.offset_delta));
            }
        }
    }
    Ok(())
}
