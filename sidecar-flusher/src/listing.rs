//! The flusher's cache of partition listings (the segments of each
//! partition, in offset order), which spares reads a LIST per request.
//!
//! A LIST takes a while, and segments are written, merged and deleted
//! meanwhile, so a listing that started before a change may end after it.
//! Every change takes a ticket from one counter, and a listing is cached
//! only if no change of its partition took a later ticket than the listing
//! did when it started: a stale listing never replaces a fresher view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One `.kfs` object in a partition's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    pub base_offset: i64,
    pub key: String,
    pub size: u64,
    pub last_modified_ms: i64,
    pub etag: String,
}

impl SegmentRef {
    pub fn index_key(&self) -> String {
        self.key.replace(".kfs", ".index")
    }
}

pub type PartitionKey = (String, i32);

/// Taken before a LIST starts; see [`ListingCache::offer`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

struct Entry {
    /// The ticket of the last change (or of the listing cached).
    seq: u64,
    /// `None`: known stale, list afresh.
    segments: Option<Vec<SegmentRef>>,
}

#[derive(Default)]
pub struct ListingCache {
    seq: AtomicU64,
    entries: Mutex<HashMap<PartitionKey, Entry>>,
}

impl ListingCache {
    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<PartitionKey, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Vec<SegmentRef>> {
        self.entries()
            .get(&(topic.to_string(), partition))?
            .segments
            .clone()
    }

    /// Call before listing; pass the ticket to [`Self::offer`].
    pub fn ticket(&self) -> Ticket {
        Ticket(self.next())
    }

    /// Caches a listing that started at `ticket`, unless the partition
    /// changed after that.
    pub fn offer(&self, topic: &str, partition: i32, ticket: Ticket, segments: Vec<SegmentRef>) {
        let mut entries = self.entries();
        let key = (topic.to_string(), partition);
        if entries.get(&key).is_some_and(|e| e.seq > ticket.0) {
            return;
        }
        entries.insert(
            key,
            Entry {
                seq: ticket.0,
                segments: Some(segments),
            },
        );
    }

    /// A segment was written: a cached listing gains it; listings in flight
    /// may miss it, so none of them is cached.
    pub fn added(&self, topic: &str, partition: i32, seg: SegmentRef) {
        let seq = self.next();
        let mut entries = self.entries();
        let entry = entries
            .entry((topic.to_string(), partition))
            .or_insert(Entry {
                seq,
                segments: None,
            });
        entry.seq = seq;
        if let Some(list) = &mut entry.segments {
            let at = list.partition_point(|s| s.base_offset < seg.base_offset);
            if list.get(at).map(|s| &s.key) != Some(&seg.key) {
                list.insert(at, seg);
            }
        }
    }

    /// The partition changed in a way the cache cannot follow (merge,
    /// delete): the next read lists afresh, and no listing in flight is kept.
    pub fn invalidate(&self, topic: &str, partition: i32) {
        let seq = self.next();
        self.entries().insert(
            (topic.to_string(), partition),
            Entry {
                seq,
                segments: None,
            },
        );
    }

    /// Every partition of a deleted topic.
    pub fn invalidate_topic(&self, topic: &str) {
        let seq = self.next();
        for ((t, _), entry) in self.entries().iter_mut() {
            if t == topic {
                *entry = Entry {
                    seq,
                    segments: None,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64) -> SegmentRef {
        SegmentRef {
            base_offset: base,
            key: format!("segment-{base:020}.kfs"),
            size: 1,
            last_modified_ms: 0,
            etag: String::new(),
        }
    }

    #[test]
    fn a_listing_that_started_before_a_change_is_not_cached() {
        let cache = ListingCache::default();
        let slow = cache.ticket();
        let fast = cache.ticket();
        cache.offer("t", 0, fast, vec![seg(0), seg(10)]);
        // The slower, older listing ends last: it must not win.
        cache.offer("t", 0, slow, vec![seg(0)]);
        assert_eq!(cache.get("t", 0), Some(vec![seg(0), seg(10)]));

        // A write while a listing is in flight: the listing may miss it.
        let in_flight = cache.ticket();
        cache.added("t", 0, seg(20));
        assert_eq!(cache.get("t", 0), Some(vec![seg(0), seg(10), seg(20)]));
        cache.offer("t", 0, in_flight, vec![seg(0), seg(10)]);
        assert_eq!(cache.get("t", 0), Some(vec![seg(0), seg(10), seg(20)]));

        // After an invalidation only a listing started later is cached.
        let before = cache.ticket();
        cache.invalidate("t", 0);
        cache.offer("t", 0, before, vec![seg(0)]);
        assert_eq!(cache.get("t", 0), None);
        let after = cache.ticket();
        cache.offer("t", 0, after, vec![seg(0), seg(30)]);
        assert_eq!(cache.get("t", 0), Some(vec![seg(0), seg(30)]));

        // A write to a partition with nothing cached keeps in-flight listings out.
        let other = cache.ticket();
        cache.added("u", 1, seg(5));
        cache.offer("u", 1, other, vec![]);
        assert_eq!(cache.get("u", 1), None);
    }
}
