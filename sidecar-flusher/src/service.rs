//! What the flusher does for each request, independent of the socket: segment
//! uploads, cold reads through a bounded cache, recovery and deletes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::batch;
use crate::metrics::{FlusherMetrics, InstrumentedStore, StoreHealth};
use crate::object_store::{ObjectStore, StoreError};
use crate::protocol::{ErrorKind, ProducerBatch, RemoteError, Request, Response};
use crate::segment::{self, SegmentIndex, VerifiedSegment};

/// Producer-state rebuilds read at most this many of the newest segments.
/// The batches a producer may retry after a failover are the ones whose
/// acknowledgement was lost: they are in the old leader's last uploads, one
/// segment per flush, so the newest segments hold them; many small segments
/// must not make recovery (and so failover) slow.
const PRODUCER_SCAN_MAX_SEGMENTS: usize = 128;
/// Segments fetched at once while rebuilding producer state.
const PRODUCER_SCAN_PARALLELISM: usize = 16;

#[derive(Debug, Clone)]
pub struct FlusherSettings {
    /// Key prefix that identifies this cluster, `{namespace}/{cluster}` in Kubernetes.
    pub prefix: String,
    /// Records between `.index` entries.
    pub index_interval: u32,
    /// Bytes of verified segments kept in memory for cold reads.
    pub cache_bytes: u64,
    /// Segments up to this size are fetched whole (one GET, verified as a whole)
    /// and cached; larger ones are read by range through their index.
    pub whole_segment_bytes: u64,
}

impl Default for FlusherSettings {
    fn default() -> Self {
        Self {
            prefix: "kafscale".into(),
            index_interval: 4096,
            cache_bytes: 256 * 1024 * 1024,
            whole_segment_bytes: 16 * 1024 * 1024,
        }
    }
}

/// One `.kfs` object in a partition's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SegmentRef {
    base_offset: i64,
    key: String,
    size: u64,
    last_modified_ms: i64,
}

type PartitionKey = (String, i32);

/// A byte-bounded LRU of verified segments.
struct SegmentCache {
    max_bytes: u64,
    bytes: u64,
    entries: lru::LruCache<String, Arc<VerifiedSegment>>,
}

impl SegmentCache {
    fn get(&mut self, key: &str) -> Option<Arc<VerifiedSegment>> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: String, seg: Arc<VerifiedSegment>) {
        let size = seg.body.len() as u64;
        if size > self.max_bytes {
            return;
        }
        if let Some(old) = self.entries.put(key, seg) {
            self.bytes -= old.body.len() as u64;
        }
        self.bytes += size;
        while self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((_, old)) => self.bytes -= old.body.len() as u64,
                None => break,
            }
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
            if let Some(old) = self.entries.pop(&k) {
                self.bytes -= old.body.len() as u64;
            }
        }
    }
}

pub struct FlusherService {
    store: Arc<dyn ObjectStore>,
    settings: FlusherSettings,
    listings: Mutex<HashMap<PartitionKey, Vec<SegmentRef>>>,
    cache: Mutex<SegmentCache>,
    metrics: Arc<FlusherMetrics>,
    health: Arc<StoreHealth>,
}

fn remote(kind: ErrorKind, message: impl Into<String>) -> RemoteError {
    RemoteError {
        kind,
        message: message.into(),
    }
}

impl From<StoreError> for RemoteError {
    fn from(e: StoreError) -> Self {
        let kind = match &e {
            StoreError::AlreadyExists(_) => ErrorKind::Conflict,
            StoreError::Unavailable(_) => ErrorKind::Unavailable,
            StoreError::NotFound(_) | StoreError::Other(_) => ErrorKind::Internal,
        };
        remote(kind, e.to_string())
    }
}

impl From<segment::SegmentError> for RemoteError {
    fn from(e: segment::SegmentError) -> Self {
        remote(ErrorKind::Corrupt, e.to_string())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl FlusherService {
    /// Wraps `store` so every request is measured (`metrics`) and feeds the
    /// health window (`health`).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        settings: FlusherSettings,
        metrics: Arc<FlusherMetrics>,
        health: Arc<StoreHealth>,
    ) -> Arc<Self> {
        let store: Arc<dyn ObjectStore> = Arc::new(InstrumentedStore::new(
            store,
            metrics.clone(),
            health.clone(),
        ));
        let cache = SegmentCache {
            max_bytes: settings.cache_bytes,
            bytes: 0,
            entries: lru::LruCache::unbounded(),
        };
        Arc::new(Self {
            store,
            settings,
            listings: Mutex::new(HashMap::new()),
            cache: Mutex::new(cache),
            metrics,
            health,
        })
    }

    pub fn store_description(&self) -> String {
        self.store.describe()
    }

    pub async fn handle(self: &Arc<Self>, req: Request) -> Result<Response, RemoteError> {
        match req {
            Request::WriteSegment {
                topic,
                partition,
                batches,
            } => self.write_segment(&topic, partition, batches).await,
            Request::ReadRange {
                topic,
                partition,
                offset,
                max_bytes,
            } => self.read_range(&topic, partition, offset, max_bytes).await,
            Request::Recover { topic, partition } => self.recover(&topic, partition).await,
            Request::DeleteTopic { topic } => self.delete_topic(&topic).await,
            Request::Health => Ok(self.health()),
            Request::OffsetForTimestamp {
                topic,
                partition,
                timestamp,
            } => {
                self.offset_for_timestamp(&topic, partition, timestamp)
                    .await
            }
            Request::ProducerBatches {
                topic,
                partition,
                max_bytes,
            } => self.producer_batches(&topic, partition, max_bytes).await,
            Request::RetentionPoint {
                topic,
                partition,
                retention_ms,
                retention_bytes,
            } => {
                let list = self.list_partition(&topic, partition).await?;
                Ok(Response::RetentionPoint {
                    offset: retention_point(&list, now_ms(), retention_ms, retention_bytes),
                })
            }
            Request::DeleteSegmentsBelow {
                topic,
                partition,
                offset,
            } => self.delete_segments_below(&topic, partition, offset).await,
        }
    }

    pub fn health(&self) -> Response {
        let (state, error_ratio, detail) = self.health.state(Instant::now());
        self.metrics.health_state.set(state as i64);
        self.metrics.health_error_rate.set(error_ratio);
        Response::Health {
            state,
            detail: format!("{}: {detail}", self.store.describe()),
        }
    }

    /// Keeps the health state current when traffic is idle: probes the store
    /// whenever nothing succeeded for a while (and so lets an unavailable store
    /// be seen coming back).
    pub fn spawn_health_probe(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(svc) = this.upgrade() else { return };
                let quiet = svc
                    .health
                    .since_last_success(Instant::now())
                    .is_none_or(|d| d > Duration::from_secs(3));
                if quiet {
                    let _ = svc.store.probe().await;
                }
                svc.health();
            }
        });
    }

    async fn write_segment(
        &self,
        topic: &str,
        partition: i32,
        batches: Vec<Bytes>,
    ) -> Result<Response, RemoteError> {
        for b in &batches {
            batch::validate(b).map_err(|e| remote(ErrorKind::BadRequest, e.to_string()))?;
        }
        let seg = segment::encode(&batches, now_ms(), self.settings.index_interval)?;
        let p = &self.settings.prefix;
        let key = segment::segment_key(p, topic, partition, seg.base_offset);
        let body = seg.kfs_bytes();
        let size = body.len() as u64;
        let put = self.store.put_if_absent(&key, body.clone()).await;
        match put {
            Ok(()) => {}
            // A retried PUT whose first attempt landed finds its own bytes: success.
            Err(StoreError::AlreadyExists(_)) if self.same_object(&key, &body).await => {}
            Err(e) => return Err(e.into()),
        }
        self.metrics.segments_written.inc();
        self.metrics.segment_bytes.observe(size as f64);
        // The .kfs is the durability point. The index only speeds up range reads,
        // and readers fall back to scanning, so its failure is logged, not returned.
        let index_key = segment::index_key(p, topic, partition, seg.base_offset);
        match self
            .store
            .put_if_absent(&index_key, seg.index.clone())
            .await
        {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(key = %index_key, error = %e, "index upload failed; reads of this segment will scan")
            }
        }
        let verified = VerifiedSegment::decode(body)?;
        self.cache_insert(key.clone(), Arc::new(verified));
        let mut listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = listings.get_mut(&(topic.to_string(), partition)) {
            let r = SegmentRef {
                base_offset: seg.base_offset,
                key,
                size,
                last_modified_ms: now_ms(),
            };
            let at = list.partition_point(|s| s.base_offset < seg.base_offset);
            if list.get(at) != Some(&r) {
                list.insert(at, r);
            }
        }
        Ok(Response::Written {
            base_offset: seg.base_offset,
            last_offset: seg.last_offset,
            object_bytes: size,
        })
    }

    async fn same_object(&self, key: &str, body: &Bytes) -> bool {
        match self.store.get(key).await {
            Ok(existing) => existing == *body,
            Err(_) => false,
        }
    }

    fn cache_insert(&self, key: String, seg: Arc<VerifiedSegment>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(key, seg);
        self.metrics.cache_bytes.set(cache.bytes as i64);
    }

    async fn list_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<SegmentRef>, RemoteError> {
        let prefix = segment::partition_prefix(&self.settings.prefix, topic, partition);
        let objects = self.store.list(&prefix).await?;
        let list: Vec<SegmentRef> = objects
            .into_iter()
            .filter_map(|o| {
                segment::base_offset_from_key(&o.key).map(|base_offset| SegmentRef {
                    base_offset,
                    key: o.key,
                    size: o.size,
                    last_modified_ms: o.last_modified_ms,
                })
            })
            .collect();
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((topic.to_string(), partition), list.clone());
        Ok(list)
    }

    fn cached_listing(&self, topic: &str, partition: i32) -> Option<Vec<SegmentRef>> {
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    async fn recover(&self, topic: &str, partition: i32) -> Result<Response, RemoteError> {
        let list = self.list_partition(topic, partition).await?;
        let (Some(first), Some(last)) = (list.first(), list.last()) else {
            return Ok(Response::Recovered {
                log_start_offset: 0,
                log_end_offset: 0,
                segment_count: 0,
            });
        };
        let tail_start = last.size.saturating_sub(segment::SEGMENT_FOOTER_LEN as u64);
        let tail = self
            .store
            .get_range(&last.key, tail_start..last.size)
            .await?;
        let footer = segment::decode_footer(&tail)?;
        Ok(Response::Recovered {
            log_start_offset: first.base_offset,
            log_end_offset: footer.last_offset + 1,
            segment_count: list.len() as u32,
        })
    }

    /// Loads a segment: from the cache, else whole from the store (verified) when
    /// small enough. Returns `None` for large segments, which are read by range.
    async fn load_whole(
        &self,
        seg: &SegmentRef,
    ) -> Result<Option<Arc<VerifiedSegment>>, RemoteError> {
        if let Some(s) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&seg.key)
        {
            self.metrics.cache_hits.inc();
            return Ok(Some(s));
        }
        self.metrics.cache_misses.inc();
        if seg.size > self.settings.whole_segment_bytes {
            return Ok(None);
        }
        let raw = self.store.get(&seg.key).await?;
        let verified = Arc::new(VerifiedSegment::decode(raw)?);
        self.cache_insert(seg.key.clone(), verified.clone());
        Ok(Some(verified))
    }

    /// Finds the segment holding `offset` (the last one whose base is `<= offset`),
    /// re-listing once if the cached listing may be stale.
    async fn locate(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<(SegmentRef, Option<SegmentRef>)>, RemoteError> {
        let pick = |list: &[SegmentRef]| {
            let idx = list.partition_point(|s| s.base_offset <= offset);
            if idx == 0 {
                // Below the first segment (retention moved the start): serve from the first.
                list.first().map(|s| (s.clone(), list.get(1).cloned()))
            } else {
                Some((list[idx - 1].clone(), list.get(idx).cloned()))
            }
        };
        if let Some(list) = self.cached_listing(topic, partition) {
            // The cached listing is good when a later segment exists (so the target
            // is closed) ; otherwise new segments may have appeared.
            if let Some((seg, Some(next))) = pick(&list) {
                return Ok(Some((seg, Some(next))));
            }
        }
        let list = self.list_partition(topic, partition).await?;
        Ok(pick(&list))
    }

    async fn read_range(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: u32,
    ) -> Result<Response, RemoteError> {
        let Some((seg, next)) = self.locate(topic, partition, offset).await? else {
            return Ok(Response::Range {
                batches: Bytes::new(),
            });
        };
        let batches = match self.load_whole(&seg).await? {
            Some(whole) => slice_batches(&whole.body, offset, max_bytes as usize),
            None => self.read_by_index(&seg, offset, max_bytes as usize).await?,
        };
        // Read-ahead: a consumer reading this segment will want the next one soon.
        if let Some(next) = next {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let _ = this.load_whole(&next).await;
            });
        }
        Ok(Response::Range { batches })
    }

    /// Range read of a large segment: index lookup, one ranged GET, each batch's
    /// CRC verified.
    async fn read_by_index(
        &self,
        seg: &SegmentRef,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, RemoteError> {
        let index_key = seg.key.replace(".kfs", ".index");
        let start = match self.store.get(&index_key).await {
            Ok(raw) => SegmentIndex::decode(&raw)?
                .lookup(offset)
                .unwrap_or(segment::SEGMENT_HEADER_LEN as u32),
            Err(_) => segment::SEGMENT_HEADER_LEN as u32,
        } as u64;
        let body_end = seg.size.saturating_sub(segment::SEGMENT_FOOTER_LEN as u64);
        let mut want = (max_bytes as u64).max(1024 * 1024);
        loop {
            let end = (start + want).min(body_end);
            let raw = self.store.get_range(&seg.key, start..end).await?;
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
                        // The first wanted batch is larger than the window: widen it.
                        want = (pos + declared) as u64;
                        break;
                    }
                    Err(batch::BatchError::LengthMismatch { .. }) => break,
                    Err(e) => return Err(remote(ErrorKind::Corrupt, format!("{}: {e}", seg.key))),
                }
            }
            if !out.is_empty() || end >= body_end {
                return Ok(out.freeze());
            }
        }
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<Response, RemoteError> {
        let list = self.list_partition(topic, partition).await?;
        for seg in &list {
            let whole = match self.load_whole(seg).await? {
                Some(w) => w,
                None => {
                    let raw = self.store.get(&seg.key).await?;
                    Arc::new(VerifiedSegment::decode(raw)?)
                }
            };
            let found = whole
                .batch_headers()
                .find(|(_, h)| h.max_timestamp >= timestamp)
                .map(|(_, h)| h);
            if let Some(h) = found {
                return Ok(Response::OffsetForTimestamp {
                    offset: h.base_offset,
                    timestamp: h.max_timestamp,
                });
            }
        }
        Ok(Response::OffsetForTimestamp {
            offset: -1,
            timestamp: -1,
        })
    }

    async fn producer_batches(
        &self,
        topic: &str,
        partition: i32,
        max_bytes: u64,
    ) -> Result<Response, RemoteError> {
        let list = self.list_partition(topic, partition).await?;
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
            .map(|seg| async move {
                match self.load_whole(&seg).await? {
                    Some(w) => Ok::<_, RemoteError>(w),
                    None => {
                        let raw = self.store.get(&seg.key).await?;
                        Ok(Arc::new(VerifiedSegment::decode(raw)?))
                    }
                }
            })
            .buffered(PRODUCER_SCAN_PARALLELISM);
        let mut batches = Vec::new();
        while let Some(whole) = segments.next().await {
            let whole = whole?;
            batches.extend(
                whole
                    .batch_headers()
                    .filter(|(_, h)| h.producer_id >= 0)
                    .map(|(_, h)| ProducerBatch {
                        producer_id: h.producer_id,
                        producer_epoch: h.producer_epoch,
                        base_sequence: h.base_sequence,
                        last_offset_delta: h.last_offset_delta,
                        base_offset: h.base_offset,
                    }),
            );
        }
        Ok(Response::ProducerBatches { batches })
    }

    async fn delete_segments_below(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Response, RemoteError> {
        let list = self.list_partition(topic, partition).await?;
        // Segment i holds offsets up to the next segment's base - 1; the newest
        // one is never deleted because recovery reads the log end from it.
        let doomed: Vec<&SegmentRef> = list
            .windows(2)
            .filter(|w| w[1].base_offset <= offset)
            .map(|w| &w[0])
            .collect();
        let mut keys = Vec::with_capacity(doomed.len() * 2);
        for seg in &doomed {
            keys.push(seg.key.clone());
            keys.push(seg.key.replace(".kfs", ".index"));
        }
        self.store.delete(&keys).await?;
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            for seg in &doomed {
                cache.remove_prefix(&seg.key);
            }
        }
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(topic.to_string(), partition));
        Ok(Response::Deleted {
            objects: doomed.len() as u32,
        })
    }

    async fn delete_topic(&self, topic: &str) -> Result<Response, RemoteError> {
        let prefix = segment::topic_prefix(&self.settings.prefix, topic);
        let objects = self.store.list(&prefix).await?;
        let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
        self.store.delete(&keys).await?;
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, _), _| t != topic);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove_prefix(&prefix);
        Ok(Response::Deleted {
            objects: keys.len() as u32,
        })
    }
}

/// The base offset of the oldest segment that retention keeps, or -1 when
/// nothing is due. Time: segments written more than `retention_ms` ago go.
/// Size: the oldest segments go while the rest still exceed `retention_bytes`.
/// The newest segment always stays.
fn retention_point(
    list: &[SegmentRef],
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
) -> i64 {
    let Some(last) = list.len().checked_sub(1) else {
        return -1;
    };
    let mut remaining: u64 = list.iter().map(|s| s.size).sum();
    let mut keep_from = 0;
    while keep_from < last {
        let seg = &list[keep_from];
        let too_old = retention_ms >= 0 && seg.last_modified_ms + retention_ms < now_ms;
        let too_big = retention_bytes >= 0 && remaining > retention_bytes as u64;
        if !(too_old || too_big) {
            break;
        }
        remaining -= seg.size;
        keep_from += 1;
    }
    if keep_from == 0 {
        -1
    } else {
        list[keep_from].base_offset
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::make_batch;
    use crate::batch::{rewrite, BatchRewrite};
    use crate::object_store::LocalDirStore;

    fn batch_at(base: i64, n: i32) -> Bytes {
        rewrite(
            &make_batch(0, n, &[1u8; 100]),
            BatchRewrite {
                base_offset: base,
                partition_leader_epoch: 0,
                log_append_time_ms: None,
            },
        )
    }

    async fn service(dir: &std::path::Path, whole: u64) -> Arc<FlusherService> {
        let store = Arc::new(LocalDirStore::new(dir).unwrap());
        FlusherService::new(
            store,
            FlusherSettings {
                prefix: "ns/c1".into(),
                index_interval: 2,
                cache_bytes: 1 << 20,
                whole_segment_bytes: whole,
            },
            crate::metrics::FlusherMetrics::detached(),
            Arc::new(crate::metrics::StoreHealth::new(Default::default())),
        )
    }

    #[test]
    fn retention_keeps_the_newest_segment_and_drops_by_age_and_size() {
        let seg = |base, size, at| SegmentRef {
            base_offset: base,
            key: format!("s{base}"),
            size,
            last_modified_ms: at,
        };
        let list = vec![seg(0, 100, 1_000), seg(10, 100, 2_000), seg(20, 100, 3_000)];
        assert_eq!(retention_point(&list, 10_000, -1, -1), -1);
        assert_eq!(
            retention_point(&list, 10_000, 7_500, -1),
            20,
            "age: only the newest survives"
        );
        assert_eq!(retention_point(&list, 10_000, 8_500, -1), 10);
        assert_eq!(
            retention_point(&list, 10_000, -1, 150),
            20,
            "size: drop while over"
        );
        assert_eq!(retention_point(&list, 10_000, -1, 200), 10);
        assert_eq!(
            retention_point(&list, 10_000, 0, 0),
            20,
            "never the last segment"
        );
        assert_eq!(retention_point(&list[..1], 10_000, 0, 0), -1);
    }

    #[tokio::test]
    async fn write_recover_read_and_fence() {
        let dir = tempfile::tempdir().unwrap();
        for whole in [1 << 20, 0] {
            let svc = service(dir.path(), whole).await;
            let write = |base: i64, sizes: &[i32]| {
                let mut next = base;
                let batches = sizes
                    .iter()
                    .map(|&n| {
                        let b = batch_at(next, n);
                        next += i64::from(n);
                        b
                    })
                    .collect();
                Request::WriteSegment {
                    topic: "t".into(),
                    partition: 0,
                    batches,
                }
            };
            if whole > 0 {
                svc.handle(write(0, &[2, 3])).await.unwrap();
                svc.handle(write(5, &[1, 4])).await.unwrap();
                // A second writer for an existing key with different bytes is fenced.
                let err = svc.handle(write(5, &[2])).await.unwrap_err();
                assert_eq!(err.kind, ErrorKind::Conflict);
            }
            // A fresh service (a restarted flusher) recovers from the listing and footer.
            let fresh = service(dir.path(), whole).await;
            let r = fresh
                .handle(Request::Recover {
                    topic: "t".into(),
                    partition: 0,
                })
                .await
                .unwrap();
            assert_eq!(
                r,
                Response::Recovered {
                    log_start_offset: 0,
                    log_end_offset: 10,
                    segment_count: 2
                }
            );
            for (offset, want_base) in [(0, 0), (3, 2), (6, 6), (9, 6)] {
                let Response::Range { batches } = fresh
                    .handle(Request::ReadRange {
                        topic: "t".into(),
                        partition: 0,
                        offset,
                        max_bytes: 1,
                    })
                    .await
                    .unwrap()
                else {
                    panic!("expected a range")
                };
                let h = batch::validate(&batches).unwrap();
                assert_eq!(h.base_offset, want_base, "offset {offset} whole={whole}");
                assert_eq!(
                    batches.len(),
                    h.size,
                    "max_bytes 1 still gives one whole batch"
                );
            }
        }
    }
}
