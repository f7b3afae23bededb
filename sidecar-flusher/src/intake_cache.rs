//! Intake parts for cold reads: an object whose parts are few and large is
//! fetched whole once, kept in a byte-bounded LRU, and every partition's
//! part is sliced from it; concurrent readers of one object share a single
//! GET; a reader's next parts are fetched ahead. A part that is a small
//! share of its object (many partitions per object) is read by range, so a
//! reader of one partition never pulls the others' bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};

use crate::intake_index::{IndexError, PartLocation};
use crate::object_store::{ObjectStore, StoreError};

/// Largest object fetched whole.
const WHOLE_OBJECT_MAX: u64 = 16 * 1024 * 1024;
/// A partition with at least this share of an object (1/n) has the object
/// fetched whole: it holds few partitions, which readers take together.
const WHOLE_OBJECT_SHARE: u64 = 16;
/// Objects fetched ahead of one reader, and the share of the cache they
/// may take.
const READ_AHEAD_OBJECTS: usize = 4;
const READ_AHEAD_CACHE_SHARE: u64 = 4;

/// A GET of one whole object that concurrent readers share; `None`: gone.
type SharedFetch = Shared<BoxFuture<'static, Result<Option<Bytes>, StoreError>>>;

struct ObjectCache {
    max_bytes: u64,
    bytes: u64,
    entries: lru::LruCache<String, Bytes>,
}

impl ObjectCache {
    fn insert(&mut self, key: String, body: Bytes) {
        let size = body.len() as u64;
        if size > self.max_bytes {
            return;
        }
        if let Some(old) = self.entries.put(key, body) {
            self.bytes -= old.len() as u64;
        }
        self.bytes += size;
        while self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((_, old)) => self.bytes -= old.len() as u64,
                None => break,
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.pop(key) {
            self.bytes -= old.len() as u64;
        }
    }
}

pub struct IntakeCache {
    store: Arc<dyn ObjectStore>,
    cache: Mutex<ObjectCache>,
    inflight: Mutex<HashMap<String, SharedFetch>>,
}

/// Who reads a part, which decides whether its whole object is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartRead {
    /// Consumers and recoveries, which read a topic's partitions together:
    /// the object's other parts are wanted soon.
    WithNeighbours,
    /// One partition's parts across many objects (compaction): by range,
    /// unless the object is at hand anyway.
    Alone,
}

/// Whether a part's object is worth fetching whole: its partition's parts
/// in it (with several uploads in flight, one object holds several) are a
/// large enough share of it.
fn fetch_whole(at: &PartLocation) -> bool {
    let size = at.object.size;
    if size > WHOLE_OBJECT_MAX {
        return false;
    }
    let e = at.entry();
    let partitions: u64 = at
        .object
        .entries
        .iter()
        .filter(|x| x.partition == e.partition && x.topic_id == e.topic_id && x.topic == e.topic)
        .map(|x| u64::from(x.length))
        .sum();
    partitions * WHOLE_OBJECT_SHARE >= size
}

impl IntakeCache {
    pub fn new(store: Arc<dyn ObjectStore>, max_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            store,
            cache: Mutex::new(ObjectCache {
                max_bytes,
                bytes: 0,
                entries: lru::LruCache::unbounded(),
            }),
            inflight: Mutex::new(HashMap::new()),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ObjectCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, key: &str) -> Option<Bytes> {
        self.cache().entries.get(key).cloned()
    }

    /// One part's bytes, verified; `None` when its object is gone.
    pub async fn read_part(
        self: &Arc<Self>,
        at: &PartLocation,
        read: PartRead,
    ) -> Result<Option<Bytes>, IndexError> {
        let e = at.entry();
        let key = &at.object.key;
        let whole_wanted = read == PartRead::WithNeighbours && fetch_whole(at);
        let whole = match self.cached(key) {
            Some(body) => Some(body),
            None if whole_wanted || self.in_flight(key) => match self.fetch_shared(key).await {
                Ok(Some(body)) => Some(body),
                Ok(None) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let bytes = match whole {
            Some(body) => {
                let range = e.range();
                if range.end > body.len() as u64 {
                    return Err(IndexError::Unreadable {
                        key: key.clone(),
                        error: crate::intake::IntakeError::TooShort(body.len() as u64),
                    });
                }
                body.slice(range.start as usize..range.end as usize)
            }
            None => match self.store.get_range(key, e.range()).await {
                Ok(bytes) => bytes,
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        e.verify(&bytes).map_err(|error| IndexError::Unreadable {
            key: key.clone(),
            error,
        })?;
        Ok(Some(bytes))
    }

    /// A reader of these parts' partition will want them soon: fetch the
    /// objects of the first few in the background, where worth it.
    pub fn read_ahead(self: &Arc<Self>, next: &[PartLocation]) {
        let mut budget = self.cache().max_bytes / READ_AHEAD_CACHE_SHARE;
        let mut last_key: Option<&str> = None;
        for at in next.iter().take(READ_AHEAD_OBJECTS) {
            let key = at.object.key.as_str();
            if last_key == Some(key) {
                continue;
            }
            last_key = Some(key);
            if !fetch_whole(at) || at.object.size > budget {
                break;
            }
            budget -= at.object.size;
            if self.cached(key).is_none() {
                drop(self.fetch_shared(key));
            }
        }
    }

    /// The objects were deleted.
    pub fn forget(&self, keys: &[String]) {
        let mut cache = self.cache();
        for key in keys {
            cache.remove(key);
        }
    }

    fn in_flight(&self, key: &str) -> bool {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    fn fetch_shared(self: &Arc<Self>, key: &str) -> SharedFetch {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = inflight.get(key) {
            return f.clone();
        }
        let this = Arc::clone(self);
        let owned = key.to_string();
        // A task, so the GET completes (and leaves the map) even if every
        // waiter gives up.
        let task = tokio::spawn(async move {
            let result = match this.store.get(&owned).await {
                Ok(body) => {
                    this.cache().insert(owned.clone(), body.clone());
                    Ok(Some(body))
                }
                Err(StoreError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            };
            this.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&owned);
            result
        });
        let fetch = async move {
            task.await.unwrap_or_else(|e| {
                Err(StoreError::Other(format!(
                    "fetching an intake object failed: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        inflight.insert(key.to_string(), fetch.clone());
        fetch
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::batch::test_support::make_batch;
    use crate::intake::{self, PartInput};
    use crate::intake_index::IntakeObject;
    use crate::object_store::tests::{counting, Counting};

    /// Stores an object with one part per partition, each `payload` long.
    async fn stored(
        store: &Counting,
        key: &str,
        partitions: i32,
        payload: &[u8],
    ) -> Arc<IntakeObject> {
        let parts: Vec<PartInput> = (0..partitions)
            .map(|partition| PartInput {
                topic: "t".into(),
                topic_id: [1; 16],
                partition,
                leader_epoch: 1,
                generation: 1,
                batches: vec![make_batch(0, 1, payload)],
            })
            .collect();
        let encoded = intake::encode(&parts, 1).unwrap();
        store
            .put_if_absent(key, encoded.body.clone())
            .await
            .unwrap();
        Arc::new(IntakeObject {
            key: key.into(),
            size: encoded.body.len() as u64,
            created_ms: 1,
            entries: encoded.entries,
        })
    }

    #[tokio::test]
    async fn an_object_of_few_partitions_is_fetched_once_for_all_of_them() {
        let (_dir, store) = counting();
        let object = stored(&store, "o1", 4, &[7; 1000]).await;
        let cache = IntakeCache::new(store.clone(), 1 << 20);
        for entry in 0..4 {
            let at = PartLocation {
                object: object.clone(),
                entry,
            };
            let part = cache
                .read_part(&at, PartRead::WithNeighbours)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(part.len(), at.entry().length as usize);
        }
        assert_eq!(store.whole.load(Ordering::SeqCst), 1);
        assert_eq!(store.ranged.load(Ordering::SeqCst), 0);
        // Deleted: forgotten, and then it reads as gone.
        store.delete(&["o1".to_string()]).await.unwrap();
        cache.forget(&["o1".to_string()]);
        let at = PartLocation { object, entry: 0 };
        assert!(cache
            .read_part(&at, PartRead::WithNeighbours)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_small_share_of_a_large_object_is_read_by_range() {
        let (_dir, store) = counting();
        let object = stored(&store, "o2", 40, &[7; 100]).await;
        let cache = IntakeCache::new(store.clone(), 1 << 20);
        let at = PartLocation { object, entry: 3 };
        assert!(cache
            .read_part(&at, PartRead::WithNeighbours)
            .await
            .unwrap()
            .is_some());
        assert_eq!(store.whole.load(Ordering::SeqCst), 0);
        assert_eq!(store.ranged.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn compaction_reads_its_part_by_range_unless_the_object_is_at_hand() {
        let (_dir, store) = counting();
        let object = stored(&store, "o5", 2, &[7; 1000]).await;
        let cache = IntakeCache::new(store.clone(), 1 << 20);
        let at = |entry| PartLocation {
            object: object.clone(),
            entry,
        };
        cache
            .read_part(&at(0), PartRead::Alone)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.whole.load(Ordering::SeqCst), 0);
        assert_eq!(store.ranged.load(Ordering::SeqCst), 1);
        cache
            .read_part(&at(0), PartRead::WithNeighbours)
            .await
            .unwrap()
            .unwrap();
        cache
            .read_part(&at(1), PartRead::Alone)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.whole.load(Ordering::SeqCst), 1);
        assert_eq!(
            store.ranged.load(Ordering::SeqCst),
            1,
            "served from the cached object"
        );
    }

    #[tokio::test]
    async fn read_ahead_fetches_the_next_objects_so_reading_them_costs_no_get() {
        let (_dir, store) = counting();
        let first = stored(&store, "o3", 2, &[1; 500]).await;
        let second = stored(&store, "o4", 2, &[2; 500]).await;
        let cache = IntakeCache::new(store.clone(), 1 << 20);
        let at = |object: &Arc<IntakeObject>| PartLocation {
            object: object.clone(),
            entry: 1,
        };
        cache
            .read_part(&at(&first), PartRead::WithNeighbours)
            .await
            .unwrap()
            .unwrap();
        cache.read_ahead(&[at(&second)]);
        for _ in 0..100 {
            if cache.cached("o4").is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Served from what was read ahead, though the store lost it since.
        store.delete(&["o4".to_string()]).await.unwrap();
        let part = cache
            .read_part(&at(&second), PartRead::WithNeighbours)
            .await
            .unwrap();
        assert!(part.is_some(), "the next object was not read ahead");
        assert_eq!(store.whole.load(Ordering::SeqCst), 2, "one GET per object");
        assert_eq!(store.ranged.load(Ordering::SeqCst), 0);
    }
}
