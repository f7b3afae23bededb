//! The decisions of the cleaner of compacted topics, without I/O: which
//! segments a pass cleans, the map of each key's latest offset in bounded
//! memory, and which records stay. `service/cleaning.rs` drives it.
//!
//! Kafka's semantics: every key keeps at least its record with the highest
//! offset; offsets never change; a tombstone (null value) stays until its
//! batch's delete horizon (set when the cleaner first reaches it, plus
//! `delete.retention.ms`) has passed; records without a key are dropped.

use std::collections::HashMap;
use std::hash::Hasher;

use bytes::Bytes;

use crate::batch::BatchHeader;
use crate::records::{self, RecordsError};
use crate::segment::VerifiedSegment;

/// What a key map entry costs: a 128-bit key hash and an offset (32 bytes
/// with the hash's alignment), and the hash table's control byte.
pub const KEY_MAP_ENTRY_BYTES: u64 = std::mem::size_of::<(u128, i64)>() as u64 + 1;

/// The latest offset of every key in the part of a partition a pass maps,
/// by a keyed 128-bit hash of the key (a new random hash key every pass, so
/// no producer can make two keys collide on purpose). Its table is sized
/// once and never grows: memory stays within the budget it was sized for.
pub struct KeyMap {
    offsets: HashMap<u128, i64>,
    capacity: usize,
    hash_key: (u64, u64),
}

impl KeyMap {
    /// The most keys a map may hold within `budget_bytes`: the hash table's
    /// buckets are a power of two and at most 7/8 full.
    pub fn capacity_for(budget_bytes: u64) -> usize {
        let buckets = budget_bytes / KEY_MAP_ENTRY_BYTES;
        if buckets < 8 {
            return 0;
        }
        let buckets = 1u64 << (63 - buckets.leading_zeros());
        (buckets / 8 * 7) as usize
    }

    /// A map for at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            offsets: HashMap::with_capacity(capacity),
            capacity,
            hash_key: (rand::random(), rand::random()),
        }
    }

    fn hash(&self, key: &[u8]) -> u128 {
        let mut h = siphasher::sip128::SipHasher13::new_with_keys(self.hash_key.0, self.hash_key.1);
        h.write(key);
        siphasher::sip128::Hasher128::finish128(&h).as_u128()
    }

    /// Keys that can still be added.
    pub fn room(&self) -> usize {
        self.capacity - self.offsets.len()
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Records `key` at `offset` (offsets arrive in increasing order). A
    /// map that is full takes no new key: callers check `room` first.
    pub fn insert(&mut self, key: &[u8], offset: i64) -> bool {
        let hash = self.hash(key);
        if let Some(latest) = self.offsets.get_mut(&hash) {
            *latest = (*latest).max(offset);
            return true;
        }
        if self.offsets.len() >= self.capacity {
            return false;
        }
        self.offsets.insert(hash, offset);
        true
    }

    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.offsets.get(&self.hash(key)).copied()
    }
}

/// What a pass knows of one segment before reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentState {
    pub size: u64,
    pub last_modified_ms: i64,
    /// Written by the cleaner (`FLAG_CLEANED`).
    pub cleaned: bool,
}

/// A topic's compaction settings, as a pass applies them.
#[derive(Debug, Clone, Copy)]
pub struct CleaningPolicy {
    /// Segments younger than this are not rewritten: the merge age (a fenced
    /// writer's late upload must not meet a rewritten key) or
    /// `min.compaction.lag.ms`, whichever is longer.
    pub min_age_ms: i64,
    /// `max.compaction.lag.ms`: dirty data this old is cleaned whatever the
    /// dirty ratio.
    pub max_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_dirty_ratio: f64,
}

/// What a pass will do: the segments `..cleanable` of the listing may be
/// rewritten; `..dirty_from` of them were cleaned before (the clean part),
/// the rest are dirty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub cleanable: usize,
    pub dirty_from: usize,
    pub dirty_ratio: f64,
    /// Whether the pass runs: the dirty ratio reached the minimum, or the
    /// oldest dirty data is past the maximum lag.
    pub due: bool,
}

/// The plan for a partition's segments (in offset order, leftovers of
/// interrupted rewrites already removed). The newest segment is never
/// cleaned: recovery reads the log end from it, and it is the head that
/// writes still reach. Only a prefix of segments old enough is cleanable.
pub fn plan(segments: &[SegmentState], now_ms: i64, policy: &CleaningPolicy) -> Plan {
    let older = &segments[..segments.len().saturating_sub(1)];
    let cutoff = now_ms.saturating_sub(policy.min_age_ms.max(0));
    let cleanable = older
        .iter()
        .position(|s| s.last_modified_ms > cutoff)
        .unwrap_or(older.len());
    let dirty_from = older[..cleanable]
        .iter()
        .position(|s| !s.cleaned)
        .unwrap_or(cleanable);
    let total: u64 = older[..cleanable].iter().map(|s| s.size).sum();
    let dirty: u64 = older[dirty_from..cleanable].iter().map(|s| s.size).sum();
    let dirty_ratio = if total == 0 {
        0.0
    } else {
        dirty as f64 / total as f64
    };
    let overdue = older[dirty_from..cleanable]
        .first()
        .is_some_and(|s| now_ms.saturating_sub(s.last_modified_ms) >= policy.max_lag_ms);
    Plan {
        cleanable,
        dirty_from,
        dirty_ratio,
        due: dirty_from < cleanable && (dirty_ratio >= policy.min_dirty_ratio || overdue),
    }
}

/// Consecutive segments, by their sizes, gathered into groups of at most
/// `target` bytes (at least one segment each): each group becomes one
/// cleaned segment over its first segment's key.
pub fn groups(sizes: &[u64], target: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && bytes + size > target {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// Whether the record at `offset` stays. `horizon_ms` is its batch's
/// delete horizon, if the cleaner set one before.
pub fn keep_record(
    key: Option<&[u8]>,
    is_tombstone: bool,
    offset: i64,
    map: &KeyMap,
    horizon_ms: Option<i64>,
    now_ms: i64,
) -> bool {
    let Some(key) = key else {
        // A compacted topic refuses records without a key; one written
        // before the topic became compacted has no latest value to keep.
        return false;
    };
    if map.latest(key).is_some_and(|latest| latest > offset) {
        return false;
    }
    !(is_tombstone && horizon_ms.is_some_and(|h| h <= now_ms))
}

/// What becomes of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every record stays: the stored bytes are kept as they are.
    Unchanged,
    /// Written again with the records that stay (possibly none: the last
    /// batch of an idempotent producer stays, empty, as in Kafka).
    Rewritten(Bytes),
    Dropped,
}

/// Cleans one stored batch against the key map. `last_batch_of` names each
/// idempotent producer's last batch in the mapped range; `horizon_ms` is
/// the delete horizon a batch gets when a tombstone in it is reached for
/// the first time; `limit` bounds its decompressed records.
pub fn clean_batch(
    stored: &Bytes,
    h: &BatchHeader,
    map: &KeyMap,
    last_batch_of: &HashMap<i64, i64>,
    now_ms: i64,
    horizon_ms: i64,
    limit: usize,
) -> Result<BatchOutcome, RecordsError> {
    if h.is_control() {
        return Ok(BatchOutcome::Unchanged);
    }
    let plain = records::decompress(stored, h, limit)?;
    let all = records::parse(&plain, h.records_count)?;
    let horizon = records::delete_horizon_ms(h);
    let kept: Vec<_> = all
        .iter()
        .filter(|r| {
            let offset = h.base_offset + i64::from(r.offset_delta);
            keep_record(r.key, r.value.is_none(), offset, map, horizon, now_ms)
        })
        .copied()
        .collect();
    let needs_horizon = horizon.is_none() && kept.iter().any(|r| r.value.is_none());
    if kept.is_empty() {
        let last_of_its_producer =
            h.producer_id >= 0 && last_batch_of.get(&h.producer_id) == Some(&h.base_offset);
        return Ok(match (last_of_its_producer, all.is_empty()) {
            (false, _) => BatchOutcome::Dropped,
            (true, true) => BatchOutcome::Unchanged,
            (true, false) => BatchOutcome::Rewritten(records::rebuild(stored, h, &[], horizon)?),
        });
    }
    if kept.len() == all.len() && !needs_horizon {
        return Ok(BatchOutcome::Unchanged);
    }
    let horizon = if needs_horizon {
        Some(horizon_ms)
    } else {
        horizon
    };
    Ok(BatchOutcome::Rewritten(records::rebuild(
        stored, h, &kept, horizon,
    )?))
}

/// Whether `outer`, a cleaned segment, holds a cleaning of `inner`: every
/// record `outer` has at `inner`'s offsets is the one `inner` has there
/// (same key, value and headers). A segment left over from an interrupted
/// pass passes; any other data at those offsets does not.
pub fn is_cleaning_of(
    inner: &VerifiedSegment,
    outer: &VerifiedSegment,
    limit: usize,
) -> Result<bool, RecordsError> {
    let first = inner.header.base_offset;
    let last = inner.footer.last_offset;
    let plain_of = |seg: &VerifiedSegment| -> Result<Vec<(BatchHeader, Vec<u8>)>, RecordsError> {
        seg.batch_headers()
            .filter(|(_, h)| h.last_offset() >= first && h.base_offset <= last && !h.is_control())
            .map(|(pos, h)| {
                let plain = records::decompress(&seg.body[pos..pos + h.size], &h, limit)?;
                Ok((h, plain))
            })
            .collect()
    };
    let inner_plain = plain_of(inner)?;
    let mut inner_records = HashMap::new();
    for (h, plain) in &inner_plain {
        for r in records::parse(plain, h.records_count)? {
            inner_records.insert(h.base_offset + i64::from(r.offset_delta), r);
        }
    }
    for (h, plain) in &plain_of(outer)? {
        for r in records::parse(plain, h.records_count)? {
            let offset = h.base_offset + i64::from(r.offset_delta);
            if !(first..=last).contains(&offset) {
                continue;
            }
            match inner_records.get(&offset) {
                Some(original) if original.same_content(&r) => {}
                _ => return Ok(false),
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(size: u64, age_ms: i64, cleaned: bool) -> SegmentState {
        SegmentState {
            size,
            last_modified_ms: 1_000_000 - age_ms,
            cleaned,
        }
    }

    const POLICY: CleaningPolicy = CleaningPolicy {
        min_age_ms: 60_000,
        max_lag_ms: i64::MAX,
        min_dirty_ratio: 0.5,
    };

    #[test]
    fn a_pass_cleans_old_segments_but_never_the_newest() {
        let now = 1_000_000;
        let segs = [
            seg(100, 900_000, true),
            seg(100, 800_000, false),
            seg(100, 700_000, false),
            seg(100, 10_000, false),
            seg(100, 500_000, false), // old, but after a young one
            seg(100, 400_000, false), // newest
        ];
        let p = plan(&segs, now, &POLICY);
        assert_eq!((p.cleanable, p.dirty_from), (3, 1));
        assert!((p.dirty_ratio - 2.0 / 3.0).abs() < 1e-9);
        assert!(p.due);
        // Below the ratio it waits, unless the dirty data is past the lag.
        let segs = [
            seg(300, 900_000, true),
            seg(100, 800_000, false),
            seg(1, 0, false),
        ];
        let p = plan(&segs, now, &POLICY);
        assert!(!p.due, "{p:?}");
        let lagging = CleaningPolicy {
            max_lag_ms: 700_000,
            ..POLICY
        };
        assert!(plan(&segs, now, &lagging).due);
        // Everything clean, or only the newest: nothing to do.
        let segs = [seg(100, 900_000, true), seg(100, 900_000, false)];
        assert!(!plan(&segs, now, &POLICY).due);
        assert!(!plan(&[seg(100, 900_000, false)], now, &POLICY).due);
        assert!(!plan(&[], now, &POLICY).due);
    }

    #[test]
    fn groups_follow_the_target_and_keep_order() {
        assert_eq!(groups(&[4, 4, 4, 9, 1], 8), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(groups(&[20], 8), vec![0..1]);
        assert_eq!(groups(&[], 8), Vec::<std::ops::Range<usize>>::new());
    }

    #[test]
    fn the_key_map_holds_latest_offsets_within_its_capacity() {
        let capacity = KeyMap::capacity_for(1 << 20);
        assert_eq!(capacity, 16_384 / 8 * 7);
        assert!(capacity as u64 * KEY_MAP_ENTRY_BYTES <= 1 << 20);
        let mut map = KeyMap::new(2);
        assert!(map.insert(b"a", 1));
        assert!(map.insert(b"a", 5));
        assert!(map.insert(b"b", 2));
        assert_eq!(map.room(), 0);
        assert!(!map.insert(b"c", 3), "full");
        assert!(map.insert(b"b", 9), "a known key still moves");
        assert_eq!(
            (map.latest(b"a"), map.latest(b"b"), map.latest(b"c")),
            (Some(5), Some(9), None)
        );
    }

    #[test]
    fn records_stay_by_kafkas_rules() {
        let mut map = KeyMap::new(8);
        map.insert(b"k", 10);
        let now = 1_000;
        // Superseded: gone; the latest: kept.
        assert!(!keep_record(Some(b"k"), false, 3, &map, None, now));
        assert!(keep_record(Some(b"k"), false, 10, &map, None, now));
        // A key the map does not know (the clean part): kept.
        assert!(keep_record(Some(b"other"), false, 1, &map, None, now));
        // A tombstone until its horizon has passed.
        assert!(keep_record(Some(b"k"), true, 10, &map, None, now));
        assert!(keep_record(Some(b"k"), true, 10, &map, Some(now + 1), now));
        assert!(!keep_record(Some(b"k"), true, 10, &map, Some(now), now));
        // No key: nothing to keep it for.
        assert!(!keep_record(None, false, 11, &map, None, now));
    }
}
