//! Numbers a segment's header and footer hold (and its greatest timestamp,
//! once read whole), remembered per object version: merge passes, retention
//! and timestamp lookups ask about the same segments again and again, and a
//! small ranged GET per question would add up.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::listing::SegmentRef;
use crate::segment::{self, VerifiedSegment};

/// A number a segment's header or footer holds, read with a small ranged GET.
#[derive(Debug, Clone, Copy)]
pub enum Fact {
    /// The footer's last offset.
    LastOffset = 0,
    /// The header's `created_ms`: when the segment's oldest data was sealed
    /// (a merged segment keeps the first merged segment's).
    FirstSealedMs = 1,
    /// The header's flags (`segment::FLAG_CLEANED`).
    Flags = 2,
    /// The header's record count.
    RecordCount = 3,
}

/// The facts one read of the header gives.
pub const HEADER_FACTS: [Fact; 3] = [Fact::FirstSealedMs, Fact::Flags, Fact::RecordCount];

/// Where the greatest batch max timestamp is kept (known only once a
/// segment was read whole, so it is no `Fact`).
const MAX_TIMESTAMP: usize = 4;

impl Fact {
    /// The bytes of the object that hold it.
    pub fn range(self, size: u64) -> std::ops::Range<u64> {
        match self {
            Fact::LastOffset => size.saturating_sub(segment::SEGMENT_FOOTER_LEN as u64)..size,
            Fact::FirstSealedMs | Fact::Flags | Fact::RecordCount => {
                0..segment::SEGMENT_HEADER_LEN as u64
            }
        }
    }

    /// Reads it from the bytes of [`Self::range`].
    pub fn decode(self, bytes: &[u8]) -> Result<i64, segment::SegmentError> {
        Ok(match self {
            Fact::LastOffset => segment::decode_footer(bytes)?.last_offset,
            Fact::FirstSealedMs => segment::decode_header(bytes)?.created_ms,
            Fact::Flags => i64::from(segment::decode_header(bytes)?.flags),
            Fact::RecordCount => i64::from(segment::decode_header(bytes)?.record_count),
        })
    }

    /// Reads it from a whole verified segment.
    pub fn of_whole(self, whole: &VerifiedSegment) -> i64 {
        match self {
            Fact::LastOffset => whole.footer.last_offset,
            Fact::FirstSealedMs => whole.header.created_ms,
            Fact::Flags => i64::from(whole.header.flags),
            Fact::RecordCount => i64::from(whole.header.record_count),
        }
    }
}

type Facts = [Option<i64>; 5];

/// What is known of each object, by key and the ETag it was read at: a
/// rewritten object (a merge) starts afresh.
#[derive(Default)]
pub struct FactMemo {
    entries: Mutex<HashMap<String, (String, Facts)>>,
}

impl FactMemo {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Facts)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fact of this version of the object (none without an ETag).
    pub fn get(&self, seg: &SegmentRef, fact: Fact) -> Option<i64> {
        self.slot(seg, fact as usize)
    }

    pub fn remember(&self, seg: &SegmentRef, fact: Fact, value: i64) {
        self.set(seg, fact as usize, value)
    }

    /// The greatest batch max timestamp of this version of the object.
    pub fn max_timestamp(&self, seg: &SegmentRef) -> Option<i64> {
        self.slot(seg, MAX_TIMESTAMP)
    }

    pub fn remember_max_timestamp(&self, seg: &SegmentRef, value: i64) {
        self.set(seg, MAX_TIMESTAMP, value)
    }

    fn slot(&self, seg: &SegmentRef, slot: usize) -> Option<i64> {
        match self.entries().get(&seg.key) {
            Some((etag, facts)) if !seg.etag.is_empty() && *etag == seg.etag => facts[slot],
            _ => None,
        }
    }

    fn set(&self, seg: &SegmentRef, slot: usize, value: i64) {
        if seg.etag.is_empty() {
            return;
        }
        let mut entries = self.entries();
        let entry = entries
            .entry(seg.key.clone())
            .or_insert_with(|| (seg.etag.clone(), Facts::default()));
        if entry.0 != seg.etag {
            *entry = (seg.etag.clone(), Facts::default());
        }
        entry.1[slot] = Some(value);
    }

    /// The object was deleted.
    pub fn forget(&self, key: &str) {
        self.entries().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(etag: &str) -> SegmentRef {
        SegmentRef {
            base_offset: 0,
            key: "k".into(),
            size: 100,
            last_modified_ms: 0,
            etag: etag.into(),
        }
    }

    #[test]
    fn facts_belong_to_one_version_of_an_object() {
        let memo = FactMemo::default();
        memo.remember(&seg("v1"), Fact::LastOffset, 9);
        assert_eq!(memo.get(&seg("v1"), Fact::LastOffset), Some(9));
        assert_eq!(memo.get(&seg("v1"), Fact::FirstSealedMs), None);
        assert_eq!(memo.get(&seg("v2"), Fact::LastOffset), None, "rewritten");
        memo.remember(&seg("v2"), Fact::FirstSealedMs, 5);
        memo.remember_max_timestamp(&seg("v2"), 77);
        assert_eq!(
            memo.get(&seg("v2"), Fact::LastOffset),
            None,
            "old facts dropped"
        );
        assert_eq!(memo.max_timestamp(&seg("v2")), Some(77));
        // Without an ETag (a just-written segment) nothing is remembered.
        memo.remember(&seg(""), Fact::LastOffset, 3);
        assert_eq!(memo.get(&seg(""), Fact::LastOffset), None);
        memo.forget("k");
        assert_eq!(memo.get(&seg("v2"), Fact::FirstSealedMs), None);
    }
}
