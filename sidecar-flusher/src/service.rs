//! What the flusher does for each request, independent of the socket: segment
//! uploads, cold reads through a bounded cache, recovery and deletes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::batch;
use crate::listing::{ListingCache, SegmentRef};
use crate::metrics::{FlusherMetrics, InstrumentedStore, StoreHealth};
use crate::object_store::{ObjectStore, StoreError};
use crate::protocol::{
    Deleted, ErrorKind, Health, Merged, OffsetForTimestamp, ProducerBatch, ProducerBatches, Range,
    Recovered, RemoteError, Request, Response, RetentionPoint, Written,
};
use crate::segment::{self, SegmentIndex, VerifiedSegment};
use crate::segment_facts::{Fact, FactMemo};
use crate::segment_loader::{Loaded, SegmentLoader};

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

/// Parallel GETs of a merge pass and of footer reads.
const MERGE_PARALLELISM: usize = 8;
/// How long deleting a topic waits for index uploads still in flight.
const INDEX_UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a merge step may do.
#[derive(Debug, Clone, Copy)]
struct MergeLimits {
    /// Largest merged segment.
    target: u64,
    /// Only segments written at least this long ago.
    min_age_ms: i64,
    /// A segment whose oldest data was sealed longer ago is not extended.
    max_span_ms: i64,
}

pub struct FlusherService {
    store: Arc<dyn ObjectStore>,
    settings: FlusherSettings,
    listings: ListingCache,
    /// Whole verified segments: the cache, shared GETs, read-ahead.
    segments: Arc<SegmentLoader>,
    facts: FactMemo,
    /// Held shared by every index upload still in flight, so that deleting a
    /// topic can wait for them and its listing sees their objects.
    index_uploads: Arc<tokio::sync::RwLock<()>>,
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
            StoreError::AlreadyExists(_) | StoreError::Changed(_) => ErrorKind::Conflict,
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

/// Runs one mutating store request only if it can start before `not_after_ms`
/// and cancels it at that moment: a broker whose session may have ended must
/// not change object storage any later (see `WriteSegment`).
async fn before_deadline<T>(
    not_after_ms: i64,
    what: &str,
    request: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, RemoteError> {
    let left = not_after_ms.saturating_sub(now_ms());
    let expired = || {
        remote(
            ErrorKind::Expired,
            format!("{what}: the broker's session deadline passed; nothing was written after it"),
        )
    };
    if left <= 0 {
        return Err(expired());
    }
    // The deadline first: a process resumed after a pause past the deadline
    // must not send anything more, not even once.
    let deadline = tokio::time::sleep(Duration::from_millis(left as u64));
    tokio::select! {
        biased;
        _ = deadline => Err(expired()),
        r = request => r.map_err(RemoteError::from),
    }
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
        let segments = SegmentLoader::new(
            store.clone(),
            settings.cache_bytes,
            settings.whole_segment_bytes,
            metrics.clone(),
        );
        Arc::new(Self {
            store,
            settings,
            listings: ListingCache::default(),
            segments,
            facts: FactMemo::default(),
            index_uploads: Arc::new(tokio::sync::RwLock::new(())),
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
                not_after_ms,
                batches,
            } => {
                self.write_segment(&topic, partition, not_after_ms, batches)
                    .await
            }
            Request::ReadRange {
                topic,
                partition,
                offset,
                max_bytes,
            } => self.read_range(&topic, partition, offset, max_bytes).await,
            Request::Recover { topic, partition } => self.recover(&topic, partition).await,
            Request::DeleteTopic {
                topic,
                not_after_ms,
            } => self.delete_topic(&topic, not_after_ms).await,
            Request::Health {} => Ok(self.health()),
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
                Ok(Response::RetentionPoint(RetentionPoint {
                    offset: retention_point(&list, now_ms(), retention_ms, retention_bytes),
                }))
            }
            Request::DeleteSegmentsBelow {
                topic,
                partition,
                offset,
                min_age_ms,
                not_after_ms,
            } => {
                self.delete_segments_below(&topic, partition, offset, min_age_ms, not_after_ms)
                    .await
            }
            Request::MergeSegments {
                topic,
                partition,
                target_bytes,
                min_age_ms,
                max_span_ms,
                not_after_ms,
            } => {
                let limits = MergeLimits {
                    target: target_bytes.min(self.settings.whole_segment_bytes),
                    min_age_ms,
                    max_span_ms,
                };
                self.merge_segments(&topic, partition, limits, not_after_ms)
                    .await
            }
        }
    }

    pub fn health(&self) -> Response {
        let (state, error_ratio, detail) = self.health.state(Instant::now());
        self.metrics.health_state.set(state as i64);
        self.metrics.health_error_rate.set(error_ratio);
        Response::Health(Health {
            state,
            detail: format!("{}: {detail}", self.store.describe()),
        })
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
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        not_after_ms: i64,
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
        let put = before_deadline(
            not_after_ms,
            &key,
            self.store.put_if_absent(&key, body.clone()),
        )
        .await;
        match put {
            Ok(()) => {}
            // A retried PUT whose first attempt landed finds its own bytes: success.
            Err(e) if e.kind == ErrorKind::Conflict && self.same_object(&key, &body).await => {}
            Err(e) => return Err(e),
        }
        self.metrics.segments_written.inc();
        self.metrics.segment_bytes.observe(size as f64);
        // The .kfs is the durability point; producers need not wait for the
        // index. It goes up after the .kfs (never before: a fenced writer's
        // index must not take the key of the winner's), and as it only speeds
        // up range reads, which fall back to scanning, a failure is logged.
        let index_key = segment::index_key(p, topic, partition, seg.base_offset);
        let this = Arc::clone(self);
        let in_flight = self.index_uploads.clone().read_owned().await;
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let put = this.store.put_if_absent(&index_key, seg.index.clone());
            if let Err(e) = before_deadline(not_after_ms, &index_key, put).await {
                tracing::warn!(key = %index_key, error = %e, "index upload failed; reads of this segment will scan");
            }
        });
        // Not cached: the broker keeps the newest data in memory and serves
        // tail reads itself; caching here too would hold it twice.
        self.listings.added(
            topic,
            partition,
            SegmentRef {
                base_offset: seg.base_offset,
                key,
                size,
                last_modified_ms: now_ms(),
                // Unknown until listed; only merges need it and they list afresh.
                etag: String::new(),
            },
        );
        Ok(Response::Written(Written {
            base_offset: seg.base_offset,
            last_offset: seg.last_offset,
            object_bytes: size,
        }))
    }

    async fn same_object(&self, key: &str, body: &Bytes) -> bool {
        match self.store.get(key).await {
            Ok(existing) => existing == *body,
            Err(_) => false,
        }
    }

    async fn list_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<SegmentRef>, RemoteError> {
        let prefix = segment::partition_prefix(&self.settings.prefix, topic, partition);
        let ticket = self.listings.ticket();
        let objects = self.store.list(&prefix).await?;
        let list: Vec<SegmentRef> = objects
            .into_iter()
            .filter_map(|o| {
                segment::base_offset_from_key(&o.key).map(|base_offset| SegmentRef {
                    base_offset,
                    key: o.key,
                    size: o.size,
                    last_modified_ms: o.last_modified_ms,
                    etag: o.etag,
                })
            })
            .collect();
        self.listings.offer(topic, partition, ticket, list.clone());
        Ok(list)
    }

    async fn recover(&self, topic: &str, partition: i32) -> Result<Response, RemoteError> {
        let list = self.list_partition(topic, partition).await?;
        let (Some(first), Some(last)) = (list.first(), list.last()) else {
            return Ok(Response::Recovered(Recovered {
                log_start_offset: 0,
                log_end_offset: 0,
                segment_count: 0,
            }));
        };
        let Some(last_offset) = self.checked_last_offset(last).await? else {
            return Err(remote(
                ErrorKind::Unavailable,
                format!("{} disappeared while the log end was read; retry", last.key),
            ));
        };
        Ok(Response::Recovered(Recovered {
            log_start_offset: first.base_offset,
            log_end_offset: last_offset + 1,
            segment_count: list.len() as u32,
        }))
    }

    /// The last offset of the newest segment, the log end's source, once its
    /// header, footer, key and index agree (`segment::check_bounds`); `None`
    /// when it is gone. Disagreement is an error: the partition stays
    /// unavailable rather than re-numbering or hiding records.
    async fn checked_last_offset(&self, seg: &SegmentRef) -> Result<Option<i64>, RemoteError> {
        let read = |range: std::ops::Range<u64>| self.store.get_range(&seg.key, range);
        let header = match read(0..segment::SEGMENT_HEADER_LEN as u64).await {
            Ok(b) => segment::decode_header(&b)?,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let footer = match read(Fact::LastOffset.range(seg.size)).await {
            Ok(b) => segment::decode_footer(&b)?,
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

    async fn read_range(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: u32,
    ) -> Result<Response, RemoteError> {
        let mut list = match self.listings.get(topic, partition) {
            Some(list) => list,
            None => self.list_partition(topic, partition).await?,
        };
        // A listing goes stale when segments are added or merged; one fresh
        // listing is always enough unless a merge lands in between.
        for _ in 0..3 {
            if let Some(batches) = self
                .read_listed(topic, partition, &list, offset, max_bytes as usize)
                .await?
            {
                return Ok(Response::Range(Range { batches }));
            }
            list = self.list_partition(topic, partition).await?;
        }
        // Not an empty range: that would tell the consumer there is nothing
        // where data exists, and it would ask again at once, for ever.
        Err(remote(
            ErrorKind::Unavailable,
            format!(
                "the segments of {topic}-{partition} kept changing while offset {offset} was read (merges or an inconsistent listing); retry"
            ),
        ))
    }

    /// Reads from the segment that holds `offset` in `list`; `None` when the
    /// listing turned out stale. Normally that is the last segment whose base
    /// is `<= offset`; after an interrupted merge a merged segment may extend
    /// past later (redundant) ones, so earlier segments are tried too.
    async fn read_listed(
        self: &Arc<Self>,
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
            let batches = match self.segments.load(seg).await? {
                Loaded::Gone => return Ok(None),
                Loaded::Whole(whole) => {
                    if whole.kfs_len() != seg.size {
                        // Replaced by a merge since this listing was taken.
                        self.listings.invalidate(topic, partition);
                    }
                    slice_batches(&whole.body, offset, max_bytes)
                }
                Loaded::Large => match self.read_by_index(seg, offset, max_bytes).await? {
                    Some(b) => b,
                    None => return Ok(None),
                },
            };
            if !batches.is_empty() {
                self.segments.read_ahead(&list[i + 1..]);
                return Ok(Some(batches));
            }
            if i + 1 == list.len() {
                // The newest listed segment ends before `offset`: newer ones exist.
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Range read of a large segment: index lookup, ranged GETs, each batch's
    /// CRC verified. `None` when the segment is gone.
    async fn read_by_index(
        &self,
        seg: &SegmentRef,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, RemoteError> {
        let mut start = match self.store.get(&seg.index_key()).await {
            Ok(raw) => SegmentIndex::decode(&raw)?
                .lookup(offset)
                .unwrap_or(segment::SEGMENT_HEADER_LEN as u32),
            Err(_) => segment::SEGMENT_HEADER_LEN as u32,
        } as u64;
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

    /// Loads a whole segment however large (recovery scans, timestamp lookups);
    /// `None` when it is gone.
    async fn load_any_size(
        self: &Arc<Self>,
        seg: &SegmentRef,
    ) -> Result<Option<Arc<VerifiedSegment>>, RemoteError> {
        match self.segments.load(seg).await? {
            Loaded::Whole(w) => Ok(Some(w)),
            Loaded::Gone => Ok(None),
            Loaded::Large => self.get_verified(seg).await,
        }
    }

    /// One GET of a whole segment, verified, not cached; `None` when it is gone.
    async fn get_verified(
        &self,
        seg: &SegmentRef,
    ) -> Result<Option<Arc<VerifiedSegment>>, RemoteError> {
        match self.store.get(&seg.key).await {
            Ok(raw) => Ok(Some(Arc::new(VerifiedSegment::decode(raw)?))),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The first batch whose max timestamp is at least `timestamp`. Each
    /// segment's greatest timestamp is remembered per object version, so a
    /// segment is read at most once for all lookups; up to
    /// `MERGE_PARALLELISM` segments are read at a time.
    async fn offset_for_timestamp(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<Response, RemoteError> {
        'listing: for _ in 0..3 {
            let list = self.list_partition(topic, partition).await?;
            let mut greatest = futures::stream::iter(list.iter().cloned())
                .map(|seg| async move {
                    let max = self.max_timestamp_of(&seg).await;
                    (seg, max)
                })
                .buffered(MERGE_PARALLELISM);
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
                    return Ok(Response::OffsetForTimestamp(OffsetForTimestamp {
                        offset: h.base_offset,
                        timestamp: h.max_timestamp,
                    }));
                }
            }
            return Ok(Response::OffsetForTimestamp(OffsetForTimestamp {
                offset: -1,
                timestamp: -1,
            }));
        }
        Err(remote(
            ErrorKind::Unavailable,
            "segments kept disappearing while searching by timestamp (merges in progress); retry",
        ))
    }

    /// The greatest batch max timestamp in a segment; `None` when it is gone.
    async fn max_timestamp_of(
        self: &Arc<Self>,
        seg: &SegmentRef,
    ) -> Result<Option<i64>, RemoteError> {
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

    async fn producer_batches(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        max_bytes: u64,
    ) -> Result<Response, RemoteError> {
        for _ in 0..3 {
            let list = self.list_partition(topic, partition).await?;
            if let Some(batches) = self.producer_batches_listed(&list, max_bytes).await? {
                return Ok(Response::ProducerBatches(ProducerBatches { batches }));
            }
        }
        Err(remote(
            ErrorKind::Unavailable,
            "segments kept disappearing while producer state was read (merges in progress); retry",
        ))
    }

    /// `None` when a listed segment is gone (merged meanwhile).
    async fn producer_batches_listed(
        self: &Arc<Self>,
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
                    .map(|(_, h)| ProducerBatch {
                        producer_id: h.producer_id,
                        producer_epoch: h.producer_epoch,
                        base_sequence: h.base_sequence,
                        last_offset_delta: h.last_offset_delta,
                        base_offset: h.base_offset,
                    }),
            );
        }
        Ok(Some(batches))
    }

    /// The last offset in a segment, from its footer; `None` when it is gone.
    async fn last_offset_of(&self, seg: &SegmentRef) -> Result<Option<i64>, RemoteError> {
        self.fact_of(seg, Fact::LastOffset).await
    }

    /// When a segment's oldest data was sealed, from its header; `None` when
    /// it is gone.
    async fn first_sealed_ms_of(&self, seg: &SegmentRef) -> Result<Option<i64>, RemoteError> {
        self.fact_of(seg, Fact::FirstSealedMs).await
    }

    async fn fact_of(&self, seg: &SegmentRef, fact: Fact) -> Result<Option<i64>, RemoteError> {
        if let Some(value) = self.facts.get(seg, fact) {
            return Ok(Some(value));
        }
        let value = match self.segments.cached(seg) {
            Some(whole) => fact.of_whole(&whole),
            None => match self.store.get_range(&seg.key, fact.range(seg.size)).await {
                Ok(bytes) => fact.decode(&bytes)?,
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        self.facts.remember(seg, fact, value);
        Ok(Some(value))
    }

    async fn delete_segments_below(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        min_age_ms: i64,
        not_after_ms: i64,
    ) -> Result<Response, RemoteError> {
        let list = self.list_partition(topic, partition).await?;
        let written_before = now_ms().saturating_sub(min_age_ms.max(0));
        // Segment i normally ends where the next one begins; the newest one is
        // never deleted because recovery reads the log end from it.
        let candidates: Vec<&SegmentRef> = list
            .windows(2)
            .filter(|w| w[1].base_offset <= offset && w[0].last_modified_ms <= written_before)
            .map(|w| &w[0])
            .collect();
        // After an interrupted merge a merged segment reaches past the next
        // listed one, so each candidate's own last offset decides.
        // (Owned items: borrowed ones trip the compiler's Send inference for
        // buffered streams inside spawned tasks.)
        let owned: Vec<SegmentRef> = candidates.iter().map(|s| (*s).clone()).collect();
        let ends: Vec<Option<i64>> = futures::stream::iter(owned)
            .map(|seg| async move { self.last_offset_of(&seg).await })
            .buffered(MERGE_PARALLELISM)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let doomed: Vec<&SegmentRef> = candidates
            .into_iter()
            .zip(ends)
            .filter(|(_, last)| last.is_some_and(|l| l < offset))
            .map(|(seg, _)| seg)
            .collect();
        self.delete_segments(topic, partition, &doomed, not_after_ms)
            .await?;
        Ok(Response::Deleted(Deleted {
            objects: doomed.len() as u32,
        }))
    }

    /// Deletes segments (`.kfs` first, then `.index`) and forgets them.
    async fn delete_segments(
        &self,
        topic: &str,
        partition: i32,
        doomed: &[&SegmentRef],
        not_after_ms: i64,
    ) -> Result<(), RemoteError> {
        if doomed.is_empty() {
            return Ok(());
        }
        let kfs: Vec<String> = doomed.iter().map(|s| s.key.clone()).collect();
        let index: Vec<String> = doomed.iter().map(|s| s.index_key()).collect();
        for keys in [kfs, index] {
            before_deadline(not_after_ms, &keys[0], self.store.delete(&keys)).await?;
        }
        for seg in doomed {
            self.segments.forget(&seg.key);
            self.facts.forget(&seg.key);
        }
        self.listings.invalidate(topic, partition);
        Ok(())
    }

    /// One step of background merging: finds the oldest run of small segments
    /// older than `min_age_ms` and either removes segments that an earlier,
    /// interrupted merge already copied, or merges the run into one segment of
    /// at most `target` bytes. The broker repeats while a step did something.
    ///
    /// Crash safety: the merged object replaces the run's first segment in one
    /// conditional PUT (If-Match on the ETag that was read); it begins with the
    /// same bytes at the same positions, so readers of either version and the
    /// old `.index` stay correct. Only then are the rest deleted; until they
    /// are, they are redundant copies, never the only one. The newest segment
    /// is never touched (recovery reads the log end from it).
    async fn merge_segments(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        limits: MergeLimits,
        not_after_ms: i64,
    ) -> Result<Response, RemoteError> {
        let list = self.list_partition(topic, partition).await?;
        let now = now_ms();
        let cutoff = now.saturating_sub(limits.min_age_ms.max(0));
        let target = limits.target;
        let small = |s: &SegmentRef| s.size < target / 2 && s.last_modified_ms <= cutoff;
        let older = &list[..list.len().saturating_sub(1)];
        let mut i = 0;
        while i < older.len() {
            if !small(&older[i]) {
                i += 1;
                continue;
            }
            // A run never extends a segment whose oldest data is already
            // older than the span (its write time alone cannot tell: a merged
            // segment is rewritten often).
            let sealed = self.first_sealed_ms_of(&older[i]).await?;
            if sealed.is_none_or(|ms| now.saturating_sub(ms) > limits.max_span_ms) {
                i += 1;
                continue;
            }
            let mut j = i;
            let mut bytes = 0;
            while j < older.len() && small(&older[j]) && bytes + older[j].size <= target {
                bytes += older[j].size;
                j += 1;
            }
            if let Some(done) = self
                .merge_run(topic, partition, &older[..j], i, not_after_ms)
                .await?
            {
                return Ok(done);
            }
            i = j.max(i + 1);
        }
        Ok(Response::Merged(Merged {
            merged: 0,
            written: 0,
            removed: 0,
        }))
    }

    /// Segments changed under a merge step: it gives up (as an error, so the
    /// broker does not take the partition for settled) and the next lists again.
    fn listing_changed(&self, topic: &str, partition: i32) -> RemoteError {
        self.listings.invalidate(topic, partition);
        remote(
            ErrorKind::Unavailable,
            format!("{topic}-{partition}: segments changed during a merge step; the next step lists again"),
        )
    }

    /// Checks that `inner`, whose offsets lie inside `outer`, holds the very
    /// bytes `outer` holds for them (a leftover of an interrupted merge).
    async fn check_copy(&self, inner: &SegmentRef, outer: &SegmentRef) -> Result<(), RemoteError> {
        let whole = |seg: &SegmentRef| {
            let seg = seg.clone();
            async move {
                match self.segments.cached(&seg) {
                    Some(w) => Ok(Some(w)),
                    None => self.get_verified(&seg).await,
                }
            }
        };
        let (Some(inner_seg), Some(outer_seg)) = (whole(inner).await?, whole(outer).await?) else {
            return Err(remote(
                ErrorKind::Unavailable,
                format!(
                    "{} or {} disappeared during a merge step",
                    inner.key, outer.key
                ),
            ));
        };
        let same = outer_seg
            .position_of(inner.base_offset)
            .and_then(|pos| outer_seg.body.get(pos..pos + inner_seg.body.len()))
            .is_some_and(|bytes| bytes == &inner_seg.body[..]);
        if same {
            return Ok(());
        }
        tracing::error!(inner = %inner.key, outer = %outer.key, "two segments hold different data for the same offsets; neither is deleted or merged until an operator checks them");
        Err(remote(
            ErrorKind::Corrupt,
            format!(
                "{} and {} hold different data for the same offsets; not merging this partition",
                inner.key, outer.key
            ),
        ))
    }

    /// Merges `list[from..]` (a run of small segments) if that does anything.
    async fn merge_run(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        list: &[SegmentRef],
        from: usize,
        not_after_ms: i64,
    ) -> Result<Option<Response>, RemoteError> {
        let run = &list[from..];
        if run.len() < 2 && from == 0 {
            return Ok(None);
        }
        // Offsets from the listing and footers alone (cached): a segment that
        // lies inside the one before it is a leftover of an interrupted merge.
        let owned: Vec<SegmentRef> = list[from.saturating_sub(1)..].to_vec();
        let ends: Vec<Option<i64>> = futures::stream::iter(owned)
            .map(|seg| async move { self.last_offset_of(&seg).await })
            .buffered(MERGE_PARALLELISM)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let Some(ends) = ends.into_iter().collect::<Option<Vec<i64>>>() else {
            return Err(self.listing_changed(topic, partition));
        };
        let (mut last, run_ends) = if from == 0 {
            (None, &ends[..])
        } else {
            (Some(ends[0]), &ends[1..])
        };
        // The segment that holds the offsets up to `last`.
        let mut container = from.checked_sub(1).map(|prev| &list[prev]);
        let mut keep: Vec<(&SegmentRef, i64)> = Vec::new();
        let mut redundant: Vec<(&SegmentRef, &SegmentRef)> = Vec::new();
        for (seg, &end) in run.iter().zip(run_ends) {
            let base = seg.base_offset;
            match (last, container) {
                (Some(l), Some(outer)) if base <= l && end <= l => {
                    redundant.push((seg, outer));
                    continue;
                }
                (Some(l), _) if base <= l => {
                    return Err(remote(
                        ErrorKind::Corrupt,
                        format!("{} overlaps the segment before it only in part (offsets {base}..={end}, previous ends at {l}); not merging this partition", seg.key),
                    ));
                }
                // A gap in offsets ends the run.
                (Some(l), _) if base > l + 1 && !keep.is_empty() => break,
                _ => {}
            }
            last = Some(end);
            container = Some(seg);
            keep.push((seg, end));
        }
        if !redundant.is_empty() {
            // Redundant only if its bytes are the ones the outer segment holds
            // at those offsets: anything else (say a fenced broker's late
            // upload that met a key retention had freed) is not ours to drop.
            for (inner, outer) in &redundant {
                self.check_copy(inner, outer).await?;
            }
            let redundant: Vec<&SegmentRef> = redundant.iter().map(|(inner, _)| *inner).collect();
            self.delete_segments(topic, partition, &redundant, not_after_ms)
                .await?;
            self.metrics.merge_removed.inc_by(redundant.len() as u64);
            tracing::info!(
                topic,
                partition,
                segments = redundant.len(),
                "removed segments left over from an interrupted merge"
            );
            return Ok(Some(Response::Merged(Merged {
                merged: 0,
                written: 0,
                removed: redundant.len() as u32,
            })));
        }
        if keep.len() < 2 {
            return Ok(None);
        }
        let (first, _) = keep[0];
        if first.etag.is_empty() {
            return Ok(None);
        }
        // Merges read around the cache: they must not evict what consumers read.
        let segs: Vec<SegmentRef> = keep.iter().map(|(s, _)| (*s).clone()).collect();
        let loaded: Vec<Option<Arc<VerifiedSegment>>> = futures::stream::iter(segs)
            .map(|seg| async move {
                match self.segments.cached(&seg) {
                    Some(whole) => Ok(Some(whole)),
                    None => self.get_verified(&seg).await,
                }
            })
            .buffered(MERGE_PARALLELISM)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let mut batches: Vec<Bytes> = Vec::new();
        let mut first_sealed_ms = None;
        for ((seg, end), whole) in keep.iter().zip(loaded) {
            let Some(whole) = whole.filter(|w| {
                w.header.base_offset == seg.base_offset && w.footer.last_offset == *end
            }) else {
                // Gone or replaced since its footer was read.
                return Err(self.listing_changed(topic, partition));
            };
            first_sealed_ms.get_or_insert(whole.header.created_ms);
            batches.extend(
                whole
                    .batch_headers()
                    .map(|(pos, h)| whole.body.slice(pos..pos + h.size)),
            );
        }
        // The header's time stays that of the oldest data (see `MergeLimits`).
        let sealed = first_sealed_ms.unwrap_or_else(now_ms);
        let merged = segment::encode(&batches, sealed, self.settings.index_interval)?;
        let body = merged.kfs_bytes();
        let size = body.len() as u64;
        match before_deadline(
            not_after_ms,
            &first.key,
            self.store
                .put_replacing(&first.key, body, Some(&first.etag)),
        )
        .await
        {
            Ok(()) => {}
            // Rewritten since it was listed (another merge): list again next step.
            Err(e) if e.kind == ErrorKind::Conflict => {
                return Err(self.listing_changed(topic, partition));
            }
            Err(e) => return Err(e),
        }
        // The old index is a correct prefix of the new one, so a failed index
        // write only makes range reads scan further.
        if let Err(e) = before_deadline(
            not_after_ms,
            &first.index_key(),
            self.store
                .put_replacing(&first.index_key(), merged.index.clone(), None),
        )
        .await
        {
            tracing::warn!(key = %first.index_key(), error = %e, "merged index upload failed; range reads will scan");
        }
        let rest: Vec<&SegmentRef> = keep[1..].iter().map(|(s, _)| *s).collect();
        self.segments.forget_prefix(&first.key);
        self.delete_segments(topic, partition, &rest, not_after_ms)
            .await?;
        self.metrics.merge_segments.inc_by(keep.len() as u64);
        self.metrics.merge_written.inc();
        tracing::debug!(
            topic,
            partition,
            base_offset = merged.base_offset,
            last_offset = merged.last_offset,
            segments = keep.len(),
            bytes = size,
            "merged segments"
        );
        Ok(Some(Response::Merged(Merged {
            merged: keep.len() as u32,
            written: 1,
            removed: 0,
        })))
    }

    async fn delete_topic(&self, topic: &str, not_after_ms: i64) -> Result<Response, RemoteError> {
        // Index uploads trail their segments; wait for those in flight (for a
        // bounded time) so that none lands after the listing below.
        let _quiet = tokio::time::timeout(INDEX_UPLOAD_WAIT, self.index_uploads.write()).await;
        let prefix = segment::topic_prefix(&self.settings.prefix, topic);
        let objects = self.store.list(&prefix).await?;
        let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
        before_deadline(not_after_ms, &prefix, self.store.delete(&keys)).await?;
        self.listings.invalidate_topic(topic);
        self.segments.forget_prefix(&prefix);
        Ok(Response::Deleted(Deleted {
            objects: keys.len() as u32,
        }))
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
        // Kafka accepts retention.ms up to i64::MAX ("keep for ever").
        let too_old =
            retention_ms >= 0 && seg.last_modified_ms.saturating_add(retention_ms) < now_ms;
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
    use crate::object_store::{LocalDirStore, ObjectInfo};

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
            etag: String::new(),
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
        // A retention near i64::MAX keeps everything instead of overflowing.
        assert_eq!(retention_point(&list, 10_000, i64::MAX, -1), -1);
        assert_eq!(retention_point(&list, 10_000, i64::MAX - 5_000, -1), -1);
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
                    not_after_ms: i64::MAX,
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
            assert_eq!(
                recover(&fresh).await,
                Response::Recovered(Recovered {
                    log_start_offset: 0,
                    log_end_offset: 10,
                    segment_count: 2
                })
            );
            for (offset, want_base) in [(0, 0), (3, 2), (6, 6), (9, 6)] {
                let batches = read_at(&fresh, offset).await;
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

    /// Writes segments of `counts[i]` records (one batch each) from `from` on.
    async fn write_segments(svc: &Arc<FlusherService>, from: i64, counts: &[i32]) -> Vec<Bytes> {
        let mut next = from;
        let mut all = Vec::new();
        for &n in counts {
            let b = batch_at(next, n);
            next += i64::from(n);
            all.push(b.clone());
            svc.handle(Request::WriteSegment {
                topic: "t".into(),
                partition: 0,
                not_after_ms: i64::MAX,
                batches: vec![b],
            })
            .await
            .unwrap();
        }
        all
    }

    async fn recover(svc: &Arc<FlusherService>) -> Response {
        let request = Request::Recover {
            topic: "t".into(),
            partition: 0,
        };
        svc.handle(request).await.unwrap()
    }

    #[tokio::test]
    async fn recovery_refuses_a_footer_that_disagrees_with_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), 1 << 20).await;
        write_segments(&svc, 0, &[3, 4]).await;
        let newest = segment_files(dir.path()).await.pop().unwrap();
        // A footer claiming ten more offsets than the segment holds, magic intact.
        let mut raw = std::fs::read(&newest).unwrap();
        let at = raw.len() - segment::SEGMENT_FOOTER_LEN + 4;
        raw[at..at + 8].copy_from_slice(&16i64.to_be_bytes());
        std::fs::write(&newest, raw).unwrap();
        let fresh = service(dir.path(), 1 << 20).await;
        let err = fresh
            .handle(Request::Recover {
                topic: "t".into(),
                partition: 0,
            })
            .await
            .expect_err("a log end was taken from a footer its header contradicts");
        assert_eq!(err.kind, ErrorKind::Corrupt, "{err}");
        assert!(err.message.contains("last offset 16"), "{err}");
    }

    /// Lists every object but the newest `.kfs`, as a listing that lags
    /// the writes would.
    struct LaggingListing(LocalDirStore);

    #[async_trait::async_trait]
    impl ObjectStore for LaggingListing {
        async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
            self.0.put_if_absent(key, body).await
        }
        async fn put_replacing(
            &self,
            key: &str,
            body: Bytes,
            expected_etag: Option<&str>,
        ) -> Result<(), StoreError> {
            self.0.put_replacing(key, body, expected_etag).await
        }
        async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
            self.0.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            range: std::ops::Range<u64>,
        ) -> Result<Bytes, StoreError> {
            self.0.get_range(key, range).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
            let mut all = self.0.list(prefix).await?;
            if let Some(newest) = all.iter().rposition(|o| o.key.ends_with(".kfs")) {
                all.remove(newest);
            }
            Ok(all)
        }
        async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
            self.0.delete(keys).await
        }
        async fn probe(&self) -> Result<(), StoreError> {
            self.0.probe().await
        }
        fn describe(&self) -> String {
            "lagging listing".into()
        }
    }

    #[tokio::test]
    async fn a_read_whose_listing_stays_stale_fails_instead_of_returning_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write_segments(&service(dir.path(), 1 << 20).await, 0, &[3, 3]).await;
        let lagging = FlusherService::new(
            Arc::new(LaggingListing(LocalDirStore::new(dir.path()).unwrap())),
            FlusherSettings {
                prefix: "ns/c1".into(),
                ..FlusherSettings::default()
            },
            crate::metrics::FlusherMetrics::detached(),
            Arc::new(crate::metrics::StoreHealth::new(Default::default())),
        );
        let read = lagging
            .handle(Request::ReadRange {
                topic: "t".into(),
                partition: 0,
                offset: 4,
                max_bytes: 1 << 20,
            })
            .await;
        let err = read.expect_err("an empty range was returned where data exists");
        assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    }

    /// What a cold read of `t`/0 at `offset` returns with the smallest max bytes.
    async fn read_at(svc: &Arc<FlusherService>, offset: i64) -> Bytes {
        let request = Request::ReadRange {
            topic: "t".into(),
            partition: 0,
            offset,
            max_bytes: 1,
        };
        match svc.handle(request).await.unwrap() {
            Response::Range(Range { batches }) => batches,
            other => panic!("expected a range, got {other:?}"),
        }
    }

    /// Reads the whole partition from `offset` 0 the way a consumer does.
    async fn read_all(svc: &Arc<FlusherService>, end: i64) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < end {
            let batches = read_at(svc, offset).await;
            let h = batch::validate(&batches).unwrap_or_else(|e| panic!("offset {offset}: {e}"));
            out.push(batches.slice(..h.size));
            offset = h.last_offset() + 1;
        }
        out
    }

    fn merge_request(not_after_ms: i64) -> Request {
        merge_request_within(not_after_ms, i64::MAX)
    }

    fn merge_request_within(not_after_ms: i64, max_span_ms: i64) -> Request {
        Request::MergeSegments {
            topic: "t".into(),
            partition: 0,
            target_bytes: 1 << 20,
            min_age_ms: 0,
            max_span_ms,
            not_after_ms,
        }
    }

    async fn segment_bases(dir: &std::path::Path) -> Vec<i64> {
        LocalDirStore::new(dir)
            .unwrap()
            .list("ns/c1/t/0/")
            .await
            .unwrap()
            .iter()
            .filter_map(|o| segment::base_offset_from_key(&o.key))
            .collect()
    }

    /// Paths of the `.kfs` files of `t`/0, in offset order.
    async fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        LocalDirStore::new(dir)
            .unwrap()
            .list("ns/c1/t/0/")
            .await
            .unwrap()
            .iter()
            .filter(|o| o.key.ends_with(".kfs"))
            .map(|o| dir.join(&o.key))
            .collect()
    }

    #[tokio::test]
    async fn merging_keeps_every_offset_once_and_never_touches_the_newest_segment() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), 1 << 20).await;
        let written = write_segments(&svc, 0, &[2, 3, 1, 4, 2, 3]).await;
        // Warm the reader's cache and listing with the small segments first.
        assert_eq!(read_all(&svc, 15).await, written);
        // Past the session deadline a merge changes nothing.
        let late = svc.handle(merge_request(1)).await.unwrap_err();
        assert_eq!(late.kind, ErrorKind::Expired);
        assert_eq!(segment_bases(dir.path()).await, vec![0, 2, 5, 6, 10, 12]);
        let r = svc.handle(merge_request(i64::MAX)).await.unwrap();
        assert_eq!(
            r,
            Response::Merged(Merged {
                merged: 5,
                written: 1,
                removed: 0
            })
        );
        assert_eq!(segment_bases(dir.path()).await, vec![0, 12]);
        // Nothing more to do: one merged segment and the newest one.
        let r = svc.handle(merge_request(i64::MAX)).await.unwrap();
        assert!(
            matches!(
                r,
                Response::Merged(Merged {
                    written: 0,
                    removed: 0,
                    ..
                })
            ),
            "{r:?}"
        );
        // The same service (stale cache) and a fresh one read every offset once.
        assert_eq!(read_all(&svc, 15).await, written);
        let fresh = service(dir.path(), 1 << 20).await;
        assert_eq!(read_all(&fresh, 15).await, written);
        assert_eq!(
            recover(&fresh).await,
            Response::Recovered(Recovered {
                log_start_offset: 0,
                log_end_offset: 15,
                segment_count: 2
            })
        );
        // Once its oldest data is older than the span, a merged segment is not
        // extended (time retention must be able to reach it); newer small
        // segments merge among themselves.
        let mut all = written;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        all.extend(write_segments(&fresh, 15, &[1, 1, 1]).await);
        let r = fresh
            .handle(merge_request_within(i64::MAX, 1500))
            .await
            .unwrap();
        assert_eq!(
            r,
            Response::Merged(Merged {
                merged: 2,
                written: 1,
                removed: 0
            })
        );
        assert_eq!(segment_bases(dir.path()).await, vec![0, 12, 15, 17]);
        assert_eq!(read_all(&fresh, 18).await, all);
    }

    #[tokio::test]
    async fn an_interrupted_merge_leaves_redundant_segments_that_reads_and_retention_handle() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), 1 << 20).await;
        let written = write_segments(&svc, 0, &[2, 3, 1, 4]).await;
        // The state a crash leaves after the merged object replaced the first
        // segment and before the others were deleted: segments 0..=5 in one
        // object at key 0, the old ones at keys 2 and 5 still there.
        let merged = segment::encode(&written[..3], 1, 2).unwrap();
        let store = LocalDirStore::new(dir.path()).unwrap();
        let key = segment::segment_key("ns/c1", "t", 0, 0);
        store
            .put_replacing(&key, merged.kfs_bytes(), None)
            .await
            .unwrap();
        assert_eq!(segment_bases(dir.path()).await, vec![0, 2, 5, 6]);
        for reader in [svc.clone(), service(dir.path(), 1 << 20).await] {
            assert_eq!(read_all(&reader, 10).await, written);
        }
        // Retention below offset 3 must not delete the merged segment (it
        // holds 3..=5) just because the next listed segment starts at 2.
        let r = svc
            .handle(Request::DeleteSegmentsBelow {
                topic: "t".into(),
                partition: 0,
                offset: 3,
                min_age_ms: 0,
                not_after_ms: i64::MAX,
            })
            .await
            .unwrap();
        assert_eq!(r, Response::Deleted(Deleted { objects: 0 }));
        // The next merge step removes the leftovers, then merges what is left.
        let r = svc.handle(merge_request(i64::MAX)).await.unwrap();
        assert_eq!(
            r,
            Response::Merged(Merged {
                merged: 0,
                written: 0,
                removed: 2
            })
        );
        assert_eq!(segment_bases(dir.path()).await, vec![0, 6]);
        assert_eq!(read_all(&svc, 10).await, written);
        // A deadline already passed: no write happens.
        let err = svc
            .handle(Request::WriteSegment {
                topic: "t".into(),
                partition: 0,
                not_after_ms: 1,
                batches: vec![batch_at(10, 1)],
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Expired);
        assert_eq!(segment_bases(dir.path()).await, vec![0, 6]);
    }
}
