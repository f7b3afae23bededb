//! Whole verified segments for cold reads: a byte-bounded LRU cache, one
//! shared GET per object however many readers want it, and read-ahead of
//! the segments a consumer will want next. It owns all three; the reader in
//! `service` asks it for segments and tells it which objects went away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::listing::SegmentRef;
use crate::metrics::FlusherMetrics;
use crate::object_store::{ObjectStore, StoreError};
use crate::protocol::{ErrorKind, RemoteError};
use crate::segment::VerifiedSegment;

/// How far cold reads fetch ahead of a consumer: at most this many segments
/// and this share of the cache, so that several partitions read at once do
/// not evict each other's prefetched segments before they are read.
const READ_AHEAD_SEGMENTS: usize = 8;
const READ_AHEAD_CACHE_SHARE: u64 = 16;

/// A GET of one whole segment that concurrent readers share; `None`: gone.
type SharedFetch = Shared<BoxFuture<'static, Result<Option<Arc<VerifiedSegment>>, RemoteError>>>;

/// A segment as a read finds it.
pub enum Loaded {
    Whole(Arc<VerifiedSegment>),
    /// Too large to load whole: read by range through its index.
    Large,
    /// Deleted since the listing was taken (merged into an earlier segment).
    Gone,
}

/// A byte-bounded LRU of verified segments, each with the ETag of the
/// listing that asked for it (the version it is: a GET that was asked for a
/// listed version returns that version or a newer one, never an older).
struct SegmentCache {
    max_bytes: u64,
    bytes: u64,
    entries: lru::LruCache<String, (String, Arc<VerifiedSegment>)>,
}

impl SegmentCache {
    fn get(&mut self, key: &str) -> Option<(String, Arc<VerifiedSegment>)> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: String, etag: String, seg: Arc<VerifiedSegment>) {
        let size = seg.body.len() as u64;
        if size > self.max_bytes {
            return;
        }
        if let Some((_, old)) = self.entries.put(key, (etag, seg)) {
            self.bytes -= old.body.len() as u64;
        }
        self.bytes += size;
        while self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((_, (_, old))) => self.bytes -= old.body.len() as u64,
                None => break,
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((_, old)) = self.entries.pop(key) {
            self.bytes -= old.body.len() as u64;
        }
    }

    fn remove_prefix(&mut self, prefix: &str) {
        let keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.remove(&k);
        }
    }
}

pub struct SegmentLoader {
    store: Arc<dyn ObjectStore>,
    cache_bytes: u64,
    whole_segment_bytes: u64,
    metrics: Arc<FlusherMetrics>,
    cache: Mutex<SegmentCache>,
    /// GETs in flight, by key and the listed ETag they were asked for.
    inflight: Mutex<HashMap<(String, String), SharedFetch>>,
}

impl SegmentLoader {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        cache_bytes: u64,
        whole_segment_bytes: u64,
        metrics: Arc<FlusherMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            cache_bytes,
            whole_segment_bytes,
            metrics,
            cache: Mutex::new(SegmentCache {
                max_bytes: cache_bytes,
                bytes: 0,
                entries: lru::LruCache::unbounded(),
            }),
            inflight: Mutex::new(HashMap::new()),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, SegmentCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cache_insert(&self, key: String, etag: String, seg: Arc<VerifiedSegment>) {
        let mut cache = self.cache();
        cache.insert(key, etag, seg);
        self.metrics.cache_bytes.set(cache.bytes as i64);
    }

    /// A cached segment, if the cache holds this version of the object (by
    /// its listed ETag; by its size where a listing gave none). Another
    /// version was replaced by a merge or a cleaning (which may keep the
    /// size) and is dropped.
    pub fn cached(&self, seg: &SegmentRef) -> Option<Arc<VerifiedSegment>> {
        let mut cache = self.cache();
        let (etag, hit) = cache.get(&seg.key)?;
        let same = if etag.is_empty() || seg.etag.is_empty() {
            hit.kfs_len() == seg.size
        } else {
            etag == seg.etag
        };
        if same {
            return Some(hit);
        }
        cache.remove(&seg.key);
        self.metrics.cache_bytes.set(cache.bytes as i64);
        None
    }

    /// The object was deleted or replaced.
    pub fn forget(&self, key: &str) {
        let mut cache = self.cache();
        cache.remove(key);
        self.metrics.cache_bytes.set(cache.bytes as i64);
    }

    /// Every object under `prefix` was deleted or replaced.
    pub fn forget_prefix(&self, prefix: &str) {
        let mut cache = self.cache();
        cache.remove_prefix(prefix);
        self.metrics.cache_bytes.set(cache.bytes as i64);
    }

    /// Loads a segment: from the cache, else whole from the store (verified) when
    /// small enough; large ones are read by range. Concurrent loads of one
    /// object share a single GET (read-ahead and the reader it runs ahead of).
    pub async fn load(self: &Arc<Self>, seg: &SegmentRef) -> Result<Loaded, RemoteError> {
        if let Some(s) = self.cached(seg) {
            self.metrics.cache_hits.inc();
            return Ok(Loaded::Whole(s));
        }
        self.metrics.cache_misses.inc();
        if seg.size > self.whole_segment_bytes {
            return Ok(Loaded::Large);
        }
        Ok(match self.fetch_shared(seg).await? {
            Some(s) => Loaded::Whole(s),
            None => Loaded::Gone,
        })
    }

    fn fetch_shared(self: &Arc<Self>, seg: &SegmentRef) -> SharedFetch {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        let version = (seg.key.clone(), seg.etag.clone());
        if let Some(f) = inflight.get(&version) {
            return f.clone();
        }
        let this = Arc::clone(self);
        let key = seg.key.clone();
        let etag = seg.etag.clone();
        let done = version.clone();
        // A task, so the GET completes (and leaves the map) even if every
        // waiter gives up.
        let task = tokio::spawn(async move {
            let result = match this.store.get(&key).await {
                Ok(raw) => VerifiedSegment::decode(raw)
                    .map(|v| {
                        let v = Arc::new(v);
                        this.cache_insert(key.clone(), etag, v.clone());
                        Some(v)
                    })
                    .map_err(crate::service::corrupt),
                Err(StoreError::NotFound(_)) => Ok(None),
                Err(e) => Err(e.into()),
            };
            this.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&done);
            result
        });
        let fetch = async move {
            task.await.unwrap_or_else(|e| {
                Err(RemoteError {
                    kind: ErrorKind::Internal,
                    message: e.to_string(),
                })
            })
        }
        .boxed()
        .shared();
        inflight.insert(version, fetch.clone());
        fetch
    }

    /// A consumer reading one segment will want the next ones soon: fetch
    /// some of them in the background (at least the next one).
    pub fn read_ahead(self: &Arc<Self>, next: &[SegmentRef]) {
        let mut budget =
            (self.cache_bytes / READ_AHEAD_CACHE_SHARE).max(next.first().map_or(0, |s| s.size));
        for seg in next.iter().take(READ_AHEAD_SEGMENTS) {
            if seg.size > self.whole_segment_bytes || seg.size > budget {
                break;
            }
            budget -= seg.size;
            if self.cached(seg).is_none() {
                drop(self.fetch_shared(seg));
            }
        }
    }
}
