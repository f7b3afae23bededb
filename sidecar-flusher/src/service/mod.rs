//! What the flusher does for each request, independent of the socket. This
//! module holds the service's state, the dispatch and what every concern
//! shares (listing a partition, loading segments, segment facts, deadlines);
//! each concern has its own module: `writes`, `reads`, `recovery`,
//! `retention` (and topic deletion) and `merging`. Data lives in two kinds
//! of object: intake objects (the parts of many partitions from one flush
//! window, `docs/intake-objects.md`) and per-partition segments.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::claims::{self, Claim};
use crate::intake::PartInput;
use crate::intake_index::{IndexError, IntakeIndex, PartLocation};
use crate::intake_writer::{IntakeSettings, IntakeWriter};
use crate::listing::{ListingCache, SegmentRef};
use crate::metrics::{FlusherMetrics, InstrumentedStore, StoreHealth};
use crate::object_store::{ObjectStore, StoreError};
use crate::protocol::{
    self, request, Cleaned, Compacted, Deleted, ErrorKind, Health, LogStorage, MaintenanceStorage,
    Merged, OffsetForTimestamp, ProducerBatches, Range, Recovered, RemoteError, Request, Response,
    RetentionPoint, Written,
};
use crate::segment::{self, VerifiedSegment};
use crate::segment_facts::{Fact, FactMemo, HEADER_FACTS};
use crate::segment_loader::{Loaded, SegmentLoader};
use cleaning::CleaningLimits;
use compaction::CompactionLimits;
use merging::MergeLimits;

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
    /// When an intake object is sealed: the cost/latency dial.
    pub intake: IntakeSettings,
    /// The cleaner's key map (compacted topics): one pass at a time holds
    /// at most this much; a partition with more distinct keys than fit is
    /// cleaned over several passes.
    pub cleaner_memory_bytes: u64,
}

impl Default for FlusherSettings {
    fn default() -> Self {
        Self {
            prefix: "kafscale".into(),
            index_interval: 4096,
            cache_bytes: 256 * 1024 * 1024,
            whole_segment_bytes: 16 * 1024 * 1024,
            intake: IntakeSettings::default(),
            cleaner_memory_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Segment GETs (whole segments or footers) one request runs at once.
const PARALLEL_GETS: usize = 8;

pub struct FlusherService {
    store: Arc<dyn ObjectStore>,
    settings: FlusherSettings,
    listings: ListingCache,
    /// Whole verified segments: the cache, shared GETs, read-ahead.
    segments: Arc<SegmentLoader>,
    facts: FactMemo,
    /// The cluster's intake objects and their directories.
    intake: Arc<IntakeIndex>,
    /// Gathers this flusher's parts into intake objects.
    intake_writer: Arc<IntakeWriter>,
    /// Held shared by every index upload still in flight, so that deleting a
    /// topic can wait for them and its listing sees their objects.
    index_uploads: Arc<tokio::sync::RwLock<()>>,
    metrics: Arc<FlusherMetrics>,
    health: Arc<StoreHealth>,
    /// The cleaning pass in progress: one at a time
    /// (`FlusherSettings::cleaner_memory_bytes`), kept between requests.
    cleaning: tokio::sync::Mutex<Option<cleaning::CleaningRun>>,
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

impl From<IndexError> for RemoteError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Store(e) => e.into(),
            unreadable @ IndexError::Unreadable { .. } => {
                remote(ErrorKind::Corrupt, unreadable.to_string())
            }
        }
    }
}

/// Stored data that failed verification.
pub(crate) fn corrupt(e: segment::SegmentError) -> RemoteError {
    remote(ErrorKind::Corrupt, e.to_string())
}

use crate::deadline::{before_deadline, now_ms};

mod cleaning;
mod compaction;
mod merging;
mod reads;
mod recovery;
mod retention;

/// The log side of the protocol, served from object storage.
#[async_trait::async_trait]
impl LogStorage for FlusherService {
    async fn write_segment(&self, r: request::WriteSegment) -> Result<Written, RemoteError> {
        FlusherService::write_segment(self, &r.topic, r.partition, r.not_after_ms, r.batches).await
    }

    async fn append_intake(&self, r: request::AppendIntake) -> Result<Written, RemoteError> {
        let part = PartInput {
            topic: r.topic,
            topic_id: r.topic_id,
            partition: r.partition,
            leader_epoch: r.leader_epoch,
            generation: r.generation,
            batches: r.batches,
        };
        self.intake_writer.write(part, r.not_after_ms).await
    }

    async fn read_range(&self, r: request::ReadRange) -> Result<Range, RemoteError> {
        FlusherService::read_range(
            self,
            &r.topic,
            r.topic_id,
            r.partition,
            r.offset,
            r.max_bytes,
        )
        .await
    }

    async fn recover(&self, r: request::Recover) -> Result<Recovered, RemoteError> {
        FlusherService::recover(self, &r.topic, r.topic_id, r.partition, r.generation).await
    }

    async fn producer_batches(
        &self,
        r: request::ProducerBatches,
    ) -> Result<ProducerBatches, RemoteError> {
        FlusherService::producer_batches(self, &r.topic, r.topic_id, r.partition, r.max_bytes).await
    }

    async fn offset_for_timestamp(
        &self,
        r: request::OffsetForTimestamp,
    ) -> Result<OffsetForTimestamp, RemoteError> {
        FlusherService::offset_for_timestamp(self, &r.topic, r.topic_id, r.partition, r.timestamp)
            .await
    }
}

/// The maintenance side of the protocol.
#[async_trait::async_trait]
impl MaintenanceStorage for FlusherService {
    async fn retention_point(
        &self,
        r: request::RetentionPoint,
    ) -> Result<RetentionPoint, RemoteError> {
        FlusherService::retention_point(
            self,
            &r.topic,
            r.topic_id,
            r.partition,
            r.retention_ms,
            r.retention_bytes,
            r.compacted != 0,
        )
        .await
    }

    async fn delete_segments_below(
        &self,
        r: request::DeleteSegmentsBelow,
    ) -> Result<Deleted, RemoteError> {
        FlusherService::delete_segments_below(
            self,
            &r.topic,
            r.partition,
            r.offset,
            r.min_age_ms,
            r.not_after_ms,
        )
        .await
    }

    async fn merge_segments(&self, r: request::MergeSegments) -> Result<Merged, RemoteError> {
        let limits = MergeLimits {
            target: r.target_bytes.min(self.settings.whole_segment_bytes),
            min_age_ms: r.min_age_ms,
            max_span_ms: r.max_span_ms,
        };
        FlusherService::merge_segments(self, &r.topic, r.partition, limits, r.not_after_ms).await
    }

    async fn clean_segments(&self, r: request::CleanSegments) -> Result<Cleaned, RemoteError> {
        let limits = CleaningLimits {
            policy: crate::cleaner::CleaningPolicy {
                min_age_ms: r.min_age_ms,
                max_lag_ms: r.max_lag_ms,
                min_dirty_ratio: f64::from(r.min_dirty_ratio_ppm) / 1_000_000.0,
            },
            delete_retention_ms: r.delete_retention_ms,
            target_bytes: r.target_bytes.min(self.settings.whole_segment_bytes),
        };
        FlusherService::clean_segments(self, &r.topic, r.partition, limits, r.not_after_ms).await
    }

    async fn compact_intake(&self, r: request::CompactIntake) -> Result<Compacted, RemoteError> {
        let limits = CompactionLimits {
            up_to: r.up_to,
            target_bytes: r.target_bytes,
            max_delay_ms: r.max_delay_ms,
        };
        FlusherService::compact_intake(
            self,
            &r.topic,
            r.topic_id,
            r.partition,
            limits,
            r.not_after_ms,
        )
        .await
    }

    async fn collect_intake(&self, r: request::CollectIntake) -> Result<Deleted, RemoteError> {
        FlusherService::collect_intake(self, &r.live, &r.compacted, r.min_age_ms, r.not_after_ms)
            .await
    }

    async fn delete_topic(&self, r: request::DeleteTopic) -> Result<Deleted, RemoteError> {
        FlusherService::delete_topic(self, &r.topic, r.not_after_ms).await
    }

    async fn health(&self, _: request::Health) -> Result<Health, RemoteError> {
        Ok(self.health_report())
    }
}

#[cfg(test)]
mod cleaning_tests;
#[cfg(test)]
mod tests;
mod writes;

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
        // Whole intake objects for cold reads take a quarter of the cache
        // budget on top of the segments' (recent data is read from intake
        // until it is compacted).
        let intake = Arc::new(IntakeIndex::new(
            store.clone(),
            &settings.prefix,
            settings.cache_bytes / 2,
        ));
        let intake_writer = IntakeWriter::new(
            store.clone(),
            &settings.prefix,
            settings.intake,
            intake.clone(),
            metrics.clone(),
        );
        Arc::new(Self {
            store,
            settings,
            listings: ListingCache::default(),
            segments,
            facts: FactMemo::default(),
            intake,
            intake_writer,
            index_uploads: Arc::new(tokio::sync::RwLock::new(())),
            metrics,
            health,
            cleaning: tokio::sync::Mutex::new(None),
        })
    }

    pub fn store_description(&self) -> String {
        self.store.describe()
    }

    /// Serves one request (the socket server's and the tests' entry).
    pub async fn handle(&self, req: Request) -> Result<Response, RemoteError> {
        protocol::dispatch(self, req).await
    }

    pub fn health_report(&self) -> Health {
        let (state, error_ratio, detail) = self.health.state(Instant::now());
        self.metrics.health_state.set(state as i64);
        self.metrics.health_error_rate.set(error_ratio);
        Health {
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
                svc.health_report();
            }
        });
    }

    pub(super) async fn list_partition(
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

    /// The intake parts that hold the partition's offsets after its
    /// segments (`claims::resolve`), in offset order, from the intake view
    /// as it is (callers refresh it when they need a fresh one).
    pub(super) fn valid_claims(
        &self,
        topic: &str,
        topic_id: [u8; 16],
        partition: i32,
        segments_end: Option<i64>,
    ) -> Result<Vec<Claim<PartLocation>>, RemoteError> {
        let claims = self.intake.claims(topic, topic_id, partition);
        claims::resolve(segments_end, claims).map_err(|e| {
            remote(
                ErrorKind::Corrupt,
                format!("{topic}-{partition}: {e}; the partition is not served until an operator checks its intake objects"),
            )
        })
    }

    /// The last offset in the newest listed segment; `None` without
    /// segments. An error when it is gone (the listing is stale; retry).
    pub(super) async fn segments_end(
        &self,
        list: &[SegmentRef],
    ) -> Result<Option<i64>, RemoteError> {
        let Some(last) = list.last() else {
            return Ok(None);
        };
        match self.last_offset_of(last).await? {
            Some(end) => Ok(Some(end)),
            None => Err(remote(
                ErrorKind::Unavailable,
                format!(
                    "{} disappeared while the partition was read; retry",
                    last.key
                ),
            )),
        }
    }

    /// Loads a whole segment however large (recovery scans, timestamp lookups);
    /// `None` when it is gone.
    pub(super) async fn load_any_size(
        &self,
        seg: &SegmentRef,
    ) -> Result<Option<Arc<VerifiedSegment>>, RemoteError> {
        match self.segments.load(seg).await? {
            Loaded::Whole(w) => Ok(Some(w)),
            Loaded::Gone => Ok(None),
            Loaded::Large => self.get_verified(seg).await,
        }
    }

    /// One GET of a whole segment, verified, not cached; `None` when it is gone.
    pub(super) async fn get_verified(
        &self,
        seg: &SegmentRef,
    ) -> Result<Option<Arc<VerifiedSegment>>, RemoteError> {
        match self.store.get(&seg.key).await {
            Ok(raw) => Ok(Some(Arc::new(
                VerifiedSegment::decode(raw).map_err(corrupt)?,
            ))),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The last offset in a segment, from its footer; `None` when it is gone.
    pub(super) async fn last_offset_of(
        &self,
        seg: &SegmentRef,
    ) -> Result<Option<i64>, RemoteError> {
        self.fact_of(seg, Fact::LastOffset).await
    }

    /// The last offsets of `segs`, read a few at a time; `None` for one
    /// that is gone. (Owned items: borrowed ones trip the compiler's Send
    /// inference for buffered streams inside spawned tasks.)
    pub(super) async fn last_offsets_of(
        &self,
        segs: Vec<SegmentRef>,
    ) -> Result<Vec<Option<i64>>, RemoteError> {
        self.facts_of(segs, Fact::LastOffset).await
    }

    /// One fact of each of `segs`, read a few at a time.
    async fn facts_of(
        &self,
        segs: Vec<SegmentRef>,
        fact: Fact,
    ) -> Result<Vec<Option<i64>>, RemoteError> {
        futures::stream::iter(segs)
            .map(|seg| async move { self.fact_of(&seg, fact).await })
            .buffered(PARALLEL_GETS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// A segment this flusher just stored joins the cached listing. (Not its
    /// bytes: the broker serves the newest data from memory.)
    pub(super) fn remember_written(
        &self,
        topic: &str,
        partition: i32,
        seg: &segment::EncodedSegment,
        key: String,
        size: u64,
    ) {
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
    }

    /// When a segment's oldest data was sealed, from its header; `None` when
    /// it is gone.
    pub(super) async fn first_sealed_ms_of(
        &self,
        seg: &SegmentRef,
    ) -> Result<Option<i64>, RemoteError> {
        self.fact_of(seg, Fact::FirstSealedMs).await
    }

    /// The record counts of `segs`, from their headers; `None` for one that
    /// is gone.
    pub(super) async fn record_counts_of(
        &self,
        segs: Vec<SegmentRef>,
    ) -> Result<Vec<Option<i64>>, RemoteError> {
        self.facts_of(segs, Fact::RecordCount).await
    }

    /// When the newest data of each of `segs` was written, for the ones the
    /// cleaner wrote (their headers say it); `None` for the others.
    pub(super) async fn data_times_of(
        &self,
        segs: Vec<SegmentRef>,
        cleaned: &[bool],
    ) -> Result<Vec<Option<i64>>, RemoteError> {
        let times = self.facts_of(segs, Fact::FirstSealedMs).await?;
        Ok(times
            .into_iter()
            .zip(cleaned)
            .map(|(t, &c)| t.filter(|_| c))
            .collect())
    }

    /// Which of `segs` the cleaner wrote (`FLAG_CLEANED`, from their
    /// headers), read a few at a time; `None` for one that is gone.
    pub(super) async fn cleaned_flags_of(
        &self,
        segs: Vec<SegmentRef>,
    ) -> Result<Vec<Option<bool>>, RemoteError> {
        let flags = self.facts_of(segs, Fact::Flags).await?;
        Ok(flags
            .into_iter()
            .map(|f| f.map(|f| f as u16 & segment::FLAG_CLEANED != 0))
            .collect())
    }

    async fn fact_of(&self, seg: &SegmentRef, fact: Fact) -> Result<Option<i64>, RemoteError> {
        if let Some(value) = self.facts.get(seg, fact) {
            return Ok(Some(value));
        }
        // One read of the header gives all of its facts.
        let together: &[Fact] = if HEADER_FACTS.iter().any(|f| *f as usize == fact as usize) {
            &HEADER_FACTS
        } else {
            std::slice::from_ref(&fact)
        };
        let mut value = None;
        match self.segments.cached(seg) {
            Some(whole) => {
                for f in together {
                    self.facts.remember(seg, *f, f.of_whole(&whole));
                }
                value = Some(fact.of_whole(&whole));
            }
            None => match self.store.get_range(&seg.key, fact.range(seg.size)).await {
                Ok(bytes) => {
                    for f in together {
                        let v = f.decode(&bytes).map_err(corrupt)?;
                        self.facts.remember(seg, *f, v);
                        if *f as usize == fact as usize {
                            value = Some(v);
                        }
                    }
                }
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        }
        Ok(value)
    }
}
