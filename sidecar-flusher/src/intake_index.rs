//! The flusher's view of the cluster's intake objects: their keys from a
//! listing of `{prefix}/!intake/`, and each one's directory, read once (an
//! object never changes) with a ranged GET of its tail.
//!
//! A recovery needs a view that includes every object that had landed when
//! it began: [`IntakeIndex::refresh`] waits for a listing that started after
//! its call, and callers that arrive together share one. An object this
//! flusher wrote is known at once ([`IntakeIndex::added`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use thiserror::Error;

use crate::claims::Claim;
use crate::intake::{self, IntakeError, PartEntry};
use crate::intake_cache::{IntakeCache, PartRead};
use crate::intake_summary;
use crate::object_store::{ObjectStore, StoreError};

/// The first GET of an object's tail: enough for the directory of a few
/// hundred parts; a longer directory costs a second GET.
const TAIL_GUESS: u64 = 64 * 1024;
/// Directories read at once while refreshing.
const PARALLEL_TAILS: usize = 8;
/// A listing that finds at least this many unknown objects (a flusher that
/// starts, or one that has not listed for long) looks for directory
/// summaries first: one GET per summary instead of one per object.
const SUMMARIES_FROM: usize = 16;

#[derive(Debug, Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("intake object {key}: {error}; every partition waits until it is repaired or removed")]
    Unreadable { key: String, error: IntakeError },
}

/// One intake object as this flusher knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeObject {
    pub key: String,
    pub size: u64,
    pub created_ms: i64,
    pub entries: Vec<PartEntry>,
}

/// Where a claim's bytes are: an object and one of its directory entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartLocation {
    pub object: Arc<IntakeObject>,
    pub entry: usize,
}

impl PartLocation {
    pub fn entry(&self) -> &PartEntry {
        &self.object.entries[self.entry]
    }
}

/// A partition of one topic incarnation.
type PartitionKey = (String, [u8; 16], i32);

#[derive(Default)]
struct Known {
    /// By key (so oldest first), with the number of the listing that was
    /// the latest to start when the object became known.
    objects: BTreeMap<String, (u64, Arc<IntakeObject>)>,
    /// Where each partition's parts are (object key, entry): a lookup costs
    /// the partition's parts, not every part of every object.
    parts: HashMap<PartitionKey, Vec<(String, usize)>>,
    /// Listings started so far, and the number of the last one applied.
    listings_started: u64,
    last_applied: u64,
}

impl Known {
    fn insert(&mut self, known_at: u64, object: Arc<IntakeObject>) {
        self.remove(&object.key);
        for (i, e) in object.entries.iter().enumerate() {
            self.parts
                .entry((e.topic.clone(), e.topic_id, e.partition))
                .or_default()
                .push((object.key.clone(), i));
        }
        self.objects.insert(object.key.clone(), (known_at, object));
    }

    fn remove(&mut self, key: &str) {
        let Some((_, object)) = self.objects.remove(key) else {
            return;
        };
        for e in &object.entries {
            let partition = (e.topic.clone(), e.topic_id, e.partition);
            if let Some(parts) = self.parts.get_mut(&partition) {
                parts.retain(|(k, _)| k != key);
                if parts.is_empty() {
                    self.parts.remove(&partition);
                }
            }
        }
    }
}

pub struct IntakeIndex {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Where the directory summaries are.
    summaries: String,
    /// Part bytes for cold reads.
    parts: Arc<IntakeCache>,
    known: Mutex<Known>,
    /// One listing at a time; waiters share the next one.
    listing: tokio::sync::Mutex<()>,
}

impl IntakeIndex {
    /// `prefix` is the cluster's key prefix; `cache_bytes` bounds the
    /// whole objects kept for cold reads.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, cache_bytes: u64) -> Self {
        Self {
            parts: IntakeCache::new(store.clone(), cache_bytes),
            store,
            prefix: intake::intake_prefix(prefix),
            summaries: intake_summary::summary_prefix(prefix),
            known: Mutex::new(Known::default()),
            listing: tokio::sync::Mutex::new(()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the view up to a listing that started after this call.
    pub async fn refresh(&self) -> Result<(), IndexError> {
        let asked_at = self.known().listings_started;
        let _one_at_a_time = self.listing.lock().await;
        let number = {
            let mut k = self.known();
            if k.last_applied > asked_at {
                return Ok(()); // someone else's listing started after we asked
            }
            k.listings_started += 1;
            k.listings_started
        };
        let listed = self.store.list(&self.prefix).await?;
        let unknown: Vec<_> = {
            let k = self.known();
            listed
                .iter()
                .filter(|o| !k.objects.contains_key(&o.key))
                .filter_map(|o| {
                    intake::created_ms_from_key(&o.key).map(|ms| (o.key.clone(), o.size, ms))
                })
                .collect()
        };
        let mut summarized = if unknown.len() >= SUMMARIES_FROM {
            self.read_summaries(&unknown).await
        } else {
            HashMap::new()
        };
        let read: Vec<Option<IntakeObject>> = futures::stream::iter(unknown)
            .map(|(key, size, created_ms)| {
                let known = summarized.remove(&key).filter(|o| o.size == size);
                async move {
                    match known {
                        Some(object) => Ok(Some(IntakeObject {
                            created_ms,
                            ..object
                        })),
                        None => self.read_directory(key, size, created_ms).await,
                    }
                }
            })
            .buffered(PARALLEL_TAILS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let mut k = self.known();
        let listed_keys: std::collections::HashSet<&str> =
            listed.iter().map(|o| o.key.as_str()).collect();
        // Missing from the listing: deleted (compacted), unless it became
        // known while this listing ran (this flusher stored it meanwhile).
        let gone: Vec<String> = k
            .objects
            .iter()
            .filter(|(key, (known_at, _))| {
                *known_at < number && !listed_keys.contains(key.as_str())
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            k.remove(key);
        }
        self.parts.forget(&gone);
        for o in read.into_iter().flatten() {
            k.insert(number, Arc::new(o));
        }
        k.last_applied = number;
        Ok(())
    }

    /// Lists once if this view never was (a flusher that just started).
    pub async fn ensure_listed(&self) -> Result<(), IndexError> {
        if self.known().last_applied == 0 {
            self.refresh().await?;
        }
        Ok(())
    }

    /// The directories the stored summaries hold of these objects, by key.
    /// Only a way to save GETs: whatever goes wrong here leaves the objects
    /// to be read one by one, so it is logged and otherwise ignored.
    async fn read_summaries(
        &self,
        unknown: &[(String, u64, i64)],
    ) -> HashMap<String, IntakeObject> {
        let wanted: std::collections::HashSet<(u64, u64)> = unknown
            .iter()
            .filter_map(|(key, _, _)| intake::writer_and_seq_from_key(key))
            .collect();
        let useful: Vec<String> = self
            .listed_summaries()
            .await
            .into_iter()
            .filter(|s| s.size <= intake_summary::MAX_READ_BYTES)
            .filter(|s| {
                intake_summary::range_from_key(&s.key).is_some_and(|range| {
                    wanted
                        .iter()
                        .any(|&(writer, seq)| range.covers(writer, seq))
                })
            })
            .map(|s| s.key)
            .collect();
        let bodies: Vec<(String, Result<Bytes, StoreError>)> = futures::stream::iter(useful)
            .map(|key| async move {
                let body = self.store.get(&key).await;
                (key, body)
            })
            .buffer_unordered(PARALLEL_TAILS)
            .collect()
            .await;
        let mut out = HashMap::new();
        for (key, body) in bodies {
            let decoded = match body {
                Ok(body) => intake_summary::decode(&body).map_err(|e| e.to_string()),
                Err(StoreError::NotFound(_)) => continue, // cleaned up meanwhile
                Err(e) => Err(e.to_string()),
            };
            match decoded {
                Ok(objects) => {
                    for (o, entries) in objects {
                        out.insert(
                            o.key.clone(),
                            IntakeObject {
                                key: o.key,
                                size: o.size,
                                created_ms: o.created_ms,
                                entries,
                            },
                        );
                    }
                }
                Err(error) => tracing::warn!(
                    %key, %error,
                    "skipping an unreadable intake directory summary; reading its objects' directories instead"
                ),
            }
        }
        out
    }

    /// The keys of the stored directory summaries.
    pub async fn list_summaries(&self) -> Vec<String> {
        self.listed_summaries()
            .await
            .into_iter()
            .map(|s| s.key)
            .collect()
    }

    /// The stored directory summaries; none when they cannot be listed
    /// (they are only a cache: readers then read each object's directory,
    /// and the next clean-up tries again).
    async fn listed_summaries(&self) -> Vec<crate::object_store::ObjectInfo> {
        self.store
            .list(&self.summaries)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "could not list the intake directory summaries");
                Vec::new()
            })
    }

    /// Of these summaries, listed before this view's last listing began,
    /// those none of whose objects is left. A summary is stored after all its
    /// objects, so each of them either was in that listing or was deleted
    /// before it; keys never repeat, so none comes back.
    pub fn summaries_without_objects(&self, summaries: &[String]) -> Vec<String> {
        let k = self.known();
        let alive: std::collections::HashSet<(u64, u64)> = k
            .objects
            .keys()
            .filter_map(|key| intake::writer_and_seq_from_key(key))
            .collect();
        summaries
            .iter()
            .filter(|key| {
                intake_summary::range_from_key(key).is_some_and(|range| {
                    !alive.iter().any(|&(writer, seq)| range.covers(writer, seq))
                })
            })
            .cloned()
            .collect()
    }

    /// The directory of one object; `None` when it was deleted meanwhile.
    async fn read_directory(
        &self,
        key: String,
        size: u64,
        created_ms: i64,
    ) -> Result<Option<IntakeObject>, IndexError> {
        let unreadable = |error| IndexError::Unreadable {
            key: key.clone(),
            error,
        };
        let guess = size.min(TAIL_GUESS);
        let mut tail = match self.store.get_range(&key, size - guess..size).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let footer = intake::decode_footer(&tail).map_err(unreadable)?;
        if footer.tail_len() > tail.len() as u64 {
            let from = size
                .checked_sub(footer.tail_len())
                .ok_or_else(|| unreadable(IntakeError::TooShort(size)))?;
            tail = match self.store.get_range(&key, from..size).await {
                Ok(b) => b,
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
        }
        let entries = intake::decode_directory(&tail, size).map_err(unreadable)?;
        Ok(Some(IntakeObject {
            key,
            size,
            created_ms,
            entries,
        }))
    }

    /// An object this flusher just stored.
    pub fn added(&self, object: IntakeObject) {
        let mut k = self.known();
        let now = k.listings_started;
        k.insert(now, Arc::new(object));
    }

    /// Objects deleted by this flusher.
    pub fn removed(&self, keys: &[String]) {
        let mut k = self.known();
        for key in keys {
            k.remove(key);
        }
        self.parts.forget(keys);
    }

    /// Every known part of one partition of the topic with this id, as claims.
    pub fn claims(
        &self,
        topic: &str,
        topic_id: [u8; 16],
        partition: i32,
    ) -> Vec<Claim<PartLocation>> {
        let k = self.known();
        let Some(parts) = k.parts.get(&(topic.to_string(), topic_id, partition)) else {
            return Vec::new();
        };
        parts
            .iter()
            .filter_map(|(key, i)| {
                let (_, object) = k.objects.get(key)?;
                let e = object.entries.get(*i)?;
                Some(Claim {
                    generation: e.generation,
                    base_offset: e.base_offset,
                    last_offset: e.last_offset,
                    source: PartLocation {
                        object: object.clone(),
                        entry: *i,
                    },
                })
            })
            .collect()
    }

    /// Every known object, oldest first (for clean-up).
    pub fn objects(&self) -> Vec<Arc<IntakeObject>> {
        self.known()
            .objects
            .values()
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Reads and verifies one part's bytes; `None` when its object is gone.
    pub async fn read_part(
        &self,
        at: &PartLocation,
        read: PartRead,
    ) -> Result<Option<Bytes>, IndexError> {
        self.parts.read_part(at, read).await
    }

    /// A reader will want these parts next (in this order).
    pub fn read_ahead(&self, next: &[PartLocation]) {
        self.parts.read_ahead(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::test_support::make_batch;
    use crate::intake::PartInput;
    use crate::object_store::LocalDirStore;

    fn object(key: &str, parts: &[(i32, i64)]) -> IntakeObject {
        let parts: Vec<PartInput> = parts
            .iter()
            .map(|&(partition, base)| PartInput {
                topic: "t".into(),
                topic_id: [3; 16],
                partition,
                leader_epoch: 1,
                generation: 1,
                batches: vec![make_batch(base, 2, b"xy")],
            })
            .collect();
        let encoded = intake::encode(&parts, 1).unwrap();
        IntakeObject {
            key: key.into(),
            size: encoded.body.len() as u64,
            created_ms: 1,
            entries: encoded.entries,
        }
    }

    #[test]
    fn a_partitions_claims_come_from_its_own_parts_and_leave_with_their_object() {
        let dir = tempfile::tempdir().unwrap();
        let index = IntakeIndex::new(
            Arc::new(LocalDirStore::new(dir.path()).unwrap()),
            "p",
            1 << 20,
        );
        index.added(object("a", &[(0, 0), (1, 0)]));
        index.added(object("b", &[(0, 2)]));
        let bases = |partition| {
            let mut b: Vec<i64> = index
                .claims("t", [3; 16], partition)
                .iter()
                .map(|c| c.base_offset)
                .collect();
            b.sort();
            b
        };
        assert_eq!(bases(0), [0, 2]);
        assert_eq!(bases(1), [0]);
        assert!(index.claims("t", [4; 16], 0).is_empty(), "another topic id");
        index.removed(&["a".to_string()]);
        assert_eq!(bases(0), [2]);
        assert!(bases(1).is_empty());
    }
}
