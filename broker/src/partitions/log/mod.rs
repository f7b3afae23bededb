//! One partition's log on this broker: the driver of its durability rule.
//!
//! # The durability rule
//!
//! Every decision of when a record counts as written lives in [`durability`], a
//! synchronous state machine with no I/O and no clock (unit-tested there).
//! This module carries its answers out:
//!
//! * `append` recovers the log first if needed, then lets the core number the
//!   batches and queue them as *pending* (never served to consumers).
//! * A per-partition group-commit loop waits one flush window, takes every
//!   pending batch from the core and sends them to the flusher as one segment
//!   with the broker's write deadline (`fencing`). The core moves the high
//!   watermark only for a stored segment taken at the epoch still led, with
//!   a valid session; then the batches join the readable in-memory tail here.
//! * Anything else fails what was not yet durable, and the log end is read
//!   again from object storage (`Recover`) before the next append: an upload
//!   that failed on our side may still have landed, and the recovered log end
//!   adopts it, so no offset is ever handed out twice.
//! * Each change of leadership re-reads the log end; after a controlled move
//!   only once the old leader handed over. Conditional segment keys make a
//!   writer with a stale view fail instead of overwriting (see
//!   docs/architecture.md).
//! * With the intake write path (`WritePath::Intake`) the batches go to the
//!   flusher as one part of the intake object it gathers from all partitions
//!   instead, tagged with the partition's recovery generation (taken from the
//!   metadata store at every recovery), and a stored part counts only after
//!   the shared leadership check (`leadership_check`) found this broker still
//!   leading the partition at the upload's epoch (docs/intake-objects.md).

#[cfg(test)]
mod driver_tests;
pub mod durability;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafscale_flusher_protocol::{ErrorKind, RemoteError};
use kafscale_metadata::MetadataStore;
use kafscale_storage_format::batch::{self, BatchHeader};

use crate::cluster::ClusterView;
use crate::metrics::BrokerMetrics;
use crate::tasks::BackgroundTasks;
use thiserror::Error;

use crate::partitions::producer_state::{ProducerStateTable, SequenceError};
use durability::Chunk;
use durability::{AfterUpload, Limits, LogCore, Refusal, UploadResult};
pub use durability::{Appended, Durable};
use kafscale_flusher_protocol::PartitionId;
use kafscale_flusher_protocol::{request, LogStorage, Recovered};

use crate::cluster::leadership_check::LeadershipCheck;
use kafscale_telemetry::crash_points;

/// How uploads reach object storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WritePath {
    /// One create-once segment per partition per flush window.
    Segments,
    /// One part of the flusher's intake object (all partitions of a window
    /// in one PUT).
    Intake,
}

/// Uploads of one partition in flight at once on the intake path. One: the
/// flusher must receive a partition's parts in offset order, and neither
/// the client's frames nor the flusher's request tasks keep the order of
/// parts sent at once; a later part stored in an earlier object than its
/// predecessor leaves a gap when the predecessor's object fails (the fault
/// campaign found partitions wedged that way). Pipelining needs the
/// flusher to order parts by offset first.
const INTAKE_UPLOADS_IN_FLIGHT: usize = 1;

/// Bytes of the newest segments read back to rebuild producer state on recovery.
const PRODUCER_STATE_SCAN_BYTES: u64 = 16 * 1024 * 1024;
use tokio::sync::{watch, Notify};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LogError {
    /// Object storage (or the flusher) failed; nothing was acknowledged.
    #[error("{0}")]
    StorageUnavailable(String),
    /// The segment's key was taken by another writer: this broker is fenced.
    #[error("{0}")]
    Fenced(String),
    /// This broker does not (or no longer) lead the partition.
    #[error("{0}")]
    NotLeader(String),
    #[error("offset {offset} is out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        high_watermark: i64,
    },
    #[error("the partition was deleted")]
    Deleted,
    #[error("{0}")]
    Sequence(#[from] SequenceError),
}

impl From<RemoteError> for LogError {
    fn from(e: RemoteError) -> Self {
        match e.kind {
            ErrorKind::Conflict => LogError::Fenced(format!(
                "another writer already stored this offset range ({}); refresh metadata and retry",
                e.message
            )),
            ErrorKind::Expired => LogError::NotLeader(format!(
                "this broker's session ended before the upload could finish ({}); refresh metadata and retry",
                e.message
            )),
            _ => LogError::StorageUnavailable(format!(
                "object storage did not confirm the write ({}); the client should retry",
                e.message
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// How long the group commit waits for more batches before uploading.
    pub flush_window: Duration,
    /// Upload as soon as this many bytes are pending, without waiting out the window.
    pub flush_bytes: usize,
    /// Broker-wide budget for the readable in-memory tail of all partitions.
    pub memory_budget: usize,
    /// Per partition: produces are refused (retriable) while this much is
    /// waiting for object storage (pending or uploading, until
    /// acknowledged), instead of queueing without bound.
    pub max_pending_bytes: usize,
    /// The same across all partitions of the broker.
    pub max_unacknowledged_bytes: usize,
    /// How long past the end of this broker's session an upload may still
    /// land. Segment merging waits longer than this before it touches a
    /// segment, so a fenced broker's late upload can never recreate a key a
    /// merge deleted (see docs/architecture.md).
    pub upload_grace: Duration,
    /// How long a new leader waits for a live previous leader's hand-over
    /// before reading the log end without it.
    pub handover_wait: Duration,
    pub write_path: WritePath,
    /// Idempotent producers idle this long are forgotten (Kafka's
    /// producer.id.expiration.ms).
    pub producer_id_expiration: Duration,
    /// Idempotent producers remembered across all partitions (one per
    /// producer and partition): beyond it a producer new to a partition is
    /// refused, retriably, and idle producers are forgotten after
    /// [`PRESSURED_PRODUCER_EXPIRATION`] instead of the expiration.
    pub max_producer_states: usize,
    /// How long the broker waits for an upload's answer (the flusher
    /// client's timeout). An upload's deadline ends before it, so an upload
    /// the broker gave up on cannot land afterwards.
    pub upload_timeout: Duration,
}

/// How long idle idempotent producers are remembered while the broker is
/// near its producer limit: longer than any client's delivery timeout by
/// default (Kafka's is 2 minutes), so no retry of theirs is still coming.
pub const PRESSURED_PRODUCER_EXPIRATION: Duration = Duration::from_secs(15 * 60);

/// Moves a broker-wide count by what one partition's share changed.
fn recount(total: &AtomicUsize, counted: &mut usize, now: usize) {
    if now >= *counted {
        total.fetch_add(now - *counted, Ordering::Relaxed);
    } else {
        total.fetch_sub(*counted - now, Ordering::Relaxed);
    }
    *counted = now;
}

/// What every partition log of a broker shares.
pub struct LogContext {
    pub settings: LogSettings,
    /// Object storage, through the flusher (or a test's stand-in).
    pub storage: Arc<dyn LogStorage>,
    pub metadata: MetadataStore,
    pub metrics: Arc<BrokerMetrics>,
    pub cluster: Arc<ClusterView>,
    /// Confirms leadership before intake parts are acknowledged.
    pub leadership: LeadershipCheck,
    /// Bytes of in-memory tail across the broker, for the budget.
    pub memory_used: AtomicUsize,
    /// Bytes assigned offsets but not yet acknowledged, across the broker.
    pub unacknowledged: AtomicUsize,
    /// Idempotent producers remembered, summed over every partition.
    pub producer_states: AtomicUsize,
    /// Every partition log of the broker, for eviction across partitions.
    logs: Mutex<Vec<Weak<PartitionLog>>>,
    /// Orders chunks by when they became durable (their age in the tail).
    durable_seq: AtomicU64,
    /// Where the logs' group commits and uploads run.
    tasks: BackgroundTasks,
}

impl LogContext {
    pub fn new(
        settings: LogSettings,
        storage: Arc<dyn LogStorage>,
        metadata: MetadataStore,
        metrics: Arc<BrokerMetrics>,
        cluster: Arc<ClusterView>,
        tasks: BackgroundTasks,
    ) -> Self {
        Self {
            tasks,
            leadership: LeadershipCheck::new(cluster.clone(), metadata.clone()),
            settings,
            storage,
            metadata,
            metrics,
            cluster,
            memory_used: AtomicUsize::new(0),
            unacknowledged: AtomicUsize::new(0),
            producer_states: AtomicUsize::new(0),
            logs: Mutex::new(Vec::new()),
            durable_seq: AtomicU64::new(0),
        }
    }

    /// Drops the coldest in-memory chunks of any partition until the tail is
    /// a sixteenth under its budget (so that not every upload triggers this);
    /// they stay readable from object storage. Locks one partition at a time.
    fn evict_over_budget(&self) {
        let budget = self.settings.memory_budget;
        if self.memory_used.load(Ordering::Relaxed) <= budget {
            return;
        }
        let target = budget - budget / 16;
        let logs: Vec<Arc<PartitionLog>> = {
            let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
            logs.retain(|l| l.strong_count() > 0);
            logs.iter().filter_map(Weak::upgrade).collect()
        };
        // Oldest chunk first: a min-heap on each partition's oldest chunk.
        let mut heads: BinaryHeap<Reverse<(u64, usize)>> = logs
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some(Reverse((l.lock().memory.front()?.durable_seq, i))))
            .collect();
        while self.memory_used.load(Ordering::Relaxed) > target {
            let Some(Reverse((_, i))) = heads.pop() else {
                return;
            };
            let mut s = logs[i].lock();
            if let Some(c) = s.memory.pop_front() {
                s.memory_bytes -= c.bytes.len();
                self.memory_used.fetch_sub(c.bytes.len(), Ordering::Relaxed);
            }
            if let Some(next) = s.memory.front() {
                heads.push(Reverse((next.durable_seq, i)));
            }
        }
    }
}

struct LogState {
    /// Every durability decision (see `durability`).
    core: LogCore,
    /// Durable chunks in memory, contiguous, ending at the high watermark.
    memory: VecDeque<Chunk>,
    memory_bytes: usize,
    /// The core's unacknowledged bytes as last added to the broker-wide count.
    counted_unacknowledged: usize,
    /// The core's idempotent producers as last added to the broker-wide count.
    counted_producers: usize,
    /// When this broker last became leader (or changed epoch).
    led_since: Option<std::time::Instant>,
    /// The epoch whose hand-over was awaited (once per epoch, not on every
    /// re-recovery).
    handed_over: Option<i32>,
    /// The recovery generation the log numbers under (intake parts carry it).
    generation: u64,
}

/// What a read from the log returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start: i64,
}

pub struct PartitionLog {
    pub topic: String,
    pub partition: i32,
    /// The topic's id (a re-created topic has another).
    pub topic_id: [u8; 16],
    ctx: Arc<LogContext>,
    state: Mutex<LogState>,
    recovery: tokio::sync::Mutex<()>,
    hw_tx: watch::Sender<i64>,
    wake_flush: Notify,
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        let s = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        self.ctx
            .producer_states
            .fetch_sub(s.counted_producers, Ordering::Relaxed);
        self.ctx
            .unacknowledged
            .fetch_sub(s.counted_unacknowledged, Ordering::Relaxed);
    }
}

impl PartitionLog {
    pub fn new(
        topic: String,
        topic_id: [u8; 16],
        partition: i32,
        ctx: Arc<LogContext>,
    ) -> Arc<Self> {
        let (hw_tx, _) = watch::channel(0);
        let not_leader = not_leader(ctx.cluster.me.id, &topic, partition);
        let log = Arc::new(Self {
            topic,
            partition,
            topic_id,
            ctx,
            state: Mutex::new(LogState {
                core: LogCore::new(not_leader),
                memory: VecDeque::new(),
                memory_bytes: 0,
                counted_unacknowledged: 0,
                counted_producers: 0,
                led_since: None,
                handed_over: None,
                generation: 0,
            }),
            recovery: tokio::sync::Mutex::new(()),
            hw_tx,
            wake_flush: Notify::new(),
        });
        log.ctx
            .logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&log));
        (log.ctx.tasks).spawn("group commit", group_commit_loop(log.clone()));
        log
    }

    /// The partition as the flusher names it.
    pub fn id(&self) -> PartitionId {
        PartitionId {
            topic: self.topic.clone(),
            topic_id: self.topic_id,
            partition: self.partition,
        }
    }

    /// Brings the broker-wide count of unacknowledged bytes in line with this
    /// partition's; called after every change of what is pending or uploading.
    fn count_unacknowledged(&self, s: &mut LogState) {
        let now = s.core.unacknowledged_bytes();
        recount(&self.ctx.unacknowledged, &mut s.counted_unacknowledged, now);
    }

    /// The same for the broker-wide count of idempotent producers; called
    /// after every change of the partition's producer table.
    fn count_producers(&self, s: &mut LogState) {
        let now = s.core.producer_count();
        recount(&self.ctx.producer_states, &mut s.counted_producers, now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_memory(&self, s: &mut LogState) {
        let freed = s.memory_bytes;
        s.memory.clear();
        s.memory_bytes = 0;
        self.ctx.memory_used.fetch_sub(freed, Ordering::Relaxed);
    }

    /// The high watermark if the log is recovered (for metrics; never waits).
    pub fn high_watermark_now(&self) -> Option<i64> {
        let s = self.lock();
        (!s.core.needs_recovery()).then_some(s.core.high_watermark())
    }

    /// Subscribes to high-watermark changes (for long-polling fetches).
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.hw_tx.subscribe()
    }

    /// Log start, high watermark, after recovering if needed. Only the
    /// leader knows them: elsewhere they would go stale.
    pub async fn offsets(&self) -> Result<(i64, i64), LogError> {
        if self.lock().core.leader_epoch().is_none() {
            return Err(self.not_leader());
        }
        self.ensure_recovered().await?;
        let s = self.lock();
        Ok((s.core.log_start(), s.core.high_watermark()))
    }

    /// Recovers the log end from object storage: after start, and after any
    /// failed upload or change of leadership (see the module docs).
    async fn ensure_recovered(&self) -> Result<(), LogError> {
        if self.lock().core.begin_recovery()?.is_none() {
            return Ok(());
        }
        let _guard = self.recovery.lock().await;
        let Some(ticket) = self.lock().core.begin_recovery()? else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let epoch = self.lock().core.leader_epoch();
        if let Some(epoch) = epoch.filter(|e| self.lock().handed_over != Some(*e)) {
            self.await_handover(epoch).await;
            self.lock().handed_over = Some(epoch);
        }
        // Let an upload that is still in flight finish first, so the listing sees it.
        while self.lock().core.uploading() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Before the log end is read: whatever this recovery's numbering
        // writes then overrides any earlier writer's part that lands late.
        let generation = match self.ctx.settings.write_path {
            // Segments are fenced by their create-once keys instead.
            WritePath::Segments => 0,
            WritePath::Intake => self
                .ctx
                .metadata
                .next_generation(&self.topic, self.partition)
                .await
                .map_err(|e| LogError::StorageUnavailable(format!("{e}; retry")))?,
        };
        let Recovered {
            log_start_offset,
            log_end_offset,
            ..
        } = self
            .ctx
            .storage
            .recover(request::Recover {
                topic: self.topic.clone(),
                topic_id: self.topic_id,
                partition: self.partition,
                generation,
            })
            .await?;
        // Idempotent producers' recent batches, so that a retry of a batch stored
        // just before a crash is still recognised.
        let producers = if log_end_offset > log_start_offset {
            let batches = self
                .ctx
                .storage
                .producer_batches(request::ProducerBatches {
                    topic: self.topic.clone(),
                    topic_id: self.topic_id,
                    partition: self.partition,
                    max_bytes: PRODUCER_STATE_SCAN_BYTES,
                })
                .await?
                .batches;
            ProducerStateTable::rebuild(&batches)
        } else {
            ProducerStateTable::default()
        };
        // DeleteRecords and retention may have moved the start past the first
        // segment's base; the metadata store has the authoritative value.
        let stored_start = self
            .ctx
            .metadata
            .partition_state(&self.topic, self.partition)
            .await
            .map_err(|e| LogError::StorageUnavailable(format!("{e}; retry")))?
            .log_start_offset;
        let mut s = self.lock();
        if s.core
            .recovered(
                ticket,
                log_start_offset,
                log_end_offset,
                stored_start,
                producers,
            )
            .is_err()
        {
            // Read before leadership changed: another leader may have written since.
            return Err(self.not_leader());
        }
        s.generation = generation;
        self.count_producers(&mut s);
        self.drop_memory(&mut s);
        tracing::info!(topic = %self.topic, partition = self.partition, log_start = s.core.log_start(), log_end = log_end_offset, took_ms = started.elapsed().as_millis() as u64, "partition recovered from object storage");
        drop(s);
        self.hw_tx.send_replace(log_end_offset);
        Ok(())
    }

    /// The epoch at which this broker leads the partition, applied to the
    /// log first (so it follows a change it has not seen yet); `None` when
    /// it does not lead it.
    pub fn lead(&self) -> Option<i32> {
        let key = kafscale_metadata::LeadershipKey::Partition(self.topic.clone(), self.partition);
        let epoch = self.ctx.cluster.my_epoch(&key)?;
        if let Some(given_up) = self.sync_leadership(Some(epoch)) {
            // A new epoch of this broker's own leadership: nobody waits for it.
            tracing::debug!(topic = %self.topic, partition = self.partition, given_up, epoch, "leader epoch raised");
        }
        Some(epoch)
    }

    /// Follows this broker's leadership of the partition (see
    /// `LogCore::follow_leadership`). Returns the epoch given up, if any: the
    /// caller records the hand-over once this log is quiet ([`Self::hand_over`]).
    pub fn sync_leadership(&self, epoch: Option<i32>) -> Option<i32> {
        let mut s = self.lock();
        let given_up = s.core.follow_leadership(epoch)?;
        tracing::info!(topic = %self.topic, partition = self.partition, from = ?given_up, to = ?epoch, "partition leadership changed");
        s.led_since = epoch.map(|_| std::time::Instant::now());
        self.count_unacknowledged(&mut s);
        if epoch.is_none() {
            self.drop_memory(&mut s);
        }
        given_up
    }

    /// Records, once the upload in flight (if any) has ended, that this
    /// broker will not write the partition at `epoch` again. The next leader
    /// reads the log end only after that (`await_handover`), so what this
    /// broker acknowledged before it saw the move is in the listing the new
    /// leader reads.
    pub async fn hand_over(self: Arc<Self>, epoch: i32) {
        while self.lock().core.uploading() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let handover = kafscale_metadata::Handover {
            broker: self.ctx.cluster.me.id,
            epoch,
        };
        for attempt in 1..=3 {
            match self
                .ctx
                .metadata
                .record_handover(&self.topic, self.partition, handover)
                .await
            {
                Ok(()) => return,
                Err(e) if attempt == 3 => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "recording the hand-over failed; the new leader waits for it up to its hand-over wait")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Before a new leader reads the log end: when the partition moved away
    /// from a broker that is still alive, wait (up to `handover_wait`) until
    /// that broker has recorded that its last upload ended. A dead previous
    /// leader acknowledges nothing more (its session is over), so there is
    /// nothing to wait for.
    async fn await_handover(&self, epoch: i32) {
        let key = kafscale_metadata::LeadershipKey::Partition(self.topic.clone(), self.partition);
        let me = self.ctx.cluster.me.id;
        let deadline = tokio::time::Instant::now() + self.ctx.settings.handover_wait;
        loop {
            let leader = self.ctx.cluster.leader(&key);
            let Some(previous) = leader.previous.filter(|b| *b != me) else {
                return;
            };
            if leader.epoch != epoch {
                return; // moved again; the recovery is discarded anyway
            }
            match self
                .ctx
                .metadata
                .handover(&self.topic, self.partition)
                .await
            {
                Ok(Some(h)) if h.broker == previous && h.epoch >= epoch.saturating_sub(1) => return,
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(topic = %self.topic, partition = self.partition, previous, "the previous leader did not hand the partition over in time; reading the log end without it");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How long this broker has led the partition at its current epoch.
    pub fn led_for(&self) -> Option<Duration> {
        self.lock().led_since.map(|t| t.elapsed())
    }

    fn not_leader(&self) -> LogError {
        not_leader(self.ctx.cluster.me.id, &self.topic, self.partition)
    }

    /// Whether nothing waits for upload (for shutdown and topic deletion).
    pub fn quiet(&self) -> bool {
        self.lock().core.quiet()
    }

    /// Raises the log start offset (retention, DeleteRecords, metadata).
    pub fn advance_log_start(&self, offset: i64) {
        self.lock().core.advance_log_start(offset);
    }

    /// Assigns offsets to validated batches and queues them for the next upload.
    /// The returned receiver resolves once they are durable (or failed).
    pub async fn append(
        &self,
        batches: &[(BatchHeader, Bytes)],
        leader_epoch: i32,
        log_append_time: bool,
    ) -> Result<(Appended, Durable), LogError> {
        self.ensure_recovered().await?;
        let append_time = log_append_time.then(crate::now_ms);
        let mut s = self.lock();
        let limits = Limits {
            partition_bytes: self.ctx.settings.max_pending_bytes,
            broker_bytes: self.ctx.unacknowledged.load(Ordering::Relaxed),
            broker_limit: self.ctx.settings.max_unacknowledged_bytes,
            producers: self.ctx.producer_states.load(Ordering::Relaxed),
            producer_limit: self.ctx.settings.max_producer_states,
        };
        let mut expiration = self.ctx.settings.producer_id_expiration;
        if limits.producers >= limits.producer_limit / 10 * 9 {
            expiration = expiration.min(PRESSURED_PRODUCER_EXPIRATION);
        }
        s.core
            .tick_producers(crate::now_ms(), expiration.as_millis() as i64);
        self.count_producers(&mut s);
        let appended = match s.core.append(batches, leader_epoch, append_time, limits) {
            Ok(a) => a,
            Err(Refusal::Log(e)) => return Err(e),
            Err(Refusal::Producers { remembered }) => {
                self.ctx.metrics.produce_rejected.inc();
                return Err(LogError::StorageUnavailable(format!(
                    "this broker remembers {remembered} idempotent producers (--max-idempotent-producers); a new producer is taken once idle ones are forgotten; retry"
                )));
            }
            Err(Refusal::Backlog { waiting, scope }) => {
                self.ctx.metrics.produce_rejected.inc();
                return Err(LogError::StorageUnavailable(match scope {
                    "partition" => format!("{waiting} bytes are already waiting for object storage on this partition; retry shortly"),
                    _ => format!("{waiting} bytes are waiting for object storage on this broker (--max-unacknowledged-bytes); retry shortly"),
                }));
            }
        };
        self.count_producers(&mut s);
        self.count_unacknowledged(&mut s);
        drop(s);
        self.wake_flush.notify_one();
        Ok(appended)
    }

    /// Reads durable batches from `offset`: from memory when the tail holds
    /// them, else from object storage through the flusher.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.ensure_recovered().await?;
        let (hw, log_start, from_memory) = {
            let s = self.lock();
            if s.core.leader_epoch().is_none() {
                return Err(self.not_leader());
            }
            let (log_start, hw) = s.core.readable(offset)?;
            let mem_start = s.memory.front().map(|c| c.base_offset).unwrap_or(hw);
            // Slices only (reference counts) under the lock; any copy happens after.
            let from_memory = if offset >= mem_start {
                Some(read_chunks(&s.memory, offset, max_bytes))
            } else {
                None
            };
            (hw, log_start, from_memory)
        };
        if offset == hw {
            return Ok(ReadResult {
                records: Bytes::new(),
                high_watermark: hw,
                log_start,
            });
        }
        let records = match from_memory {
            Some(parts) => concat(parts),
            None => {
                let batches = self
                    .ctx
                    .storage
                    .read_range(request::ReadRange {
                        topic: self.topic.clone(),
                        topic_id: self.topic_id,
                        partition: self.partition,
                        offset,
                        max_bytes: max_bytes.min(u32::MAX as usize) as u32,
                    })
                    .await?
                    .batches;
                trim_to(batches, hw)
            }
        };
        Ok(ReadResult {
            records,
            high_watermark: hw,
            log_start,
        })
    }

    /// Offset and timestamp of the batch with the greatest max timestamp in the
    /// in-memory tail (ListOffsets -3).
    pub fn max_timestamp_in_memory(&self) -> Option<(i64, i64)> {
        let s = self.lock();
        let chunk = s.memory.iter().max_by_key(|c| c.max_timestamp)?;
        batch::iter_headers(&chunk.bytes)
            .map(|(_, h)| h)
            .max_by_key(|h| h.max_timestamp)
            .map(|h| (h.last_offset(), h.max_timestamp))
    }

    /// Whether the log was closed (its topic deleted).
    pub fn is_closed(&self) -> bool {
        self.lock().core.deleted()
    }

    /// Marks the log deleted: pending appends fail, the group-commit loop ends.
    pub fn close(&self) {
        let mut s = self.lock();
        s.core.close();
        self.count_unacknowledged(&mut s);
        self.drop_memory(&mut s);
        drop(s);
        self.wake_flush.notify_one();
    }

    /// Whether this broker still leads the partition at `epoch` as of a
    /// leadership check that began after the upload returned. When etcd
    /// cannot be read, the view decides and the caller's session check
    /// bounds it: a partition taken from a live broker is read by its new
    /// leader only after the hand-over wait, which outlasts a session
    /// (`fencing::check_timing`), and nothing is acknowledged after the
    /// session ends. So an etcd outage does not stop produces before the
    /// session does.
    async fn confirm_leading(&self, epoch: i32) -> bool {
        if let Err(e) = self.ctx.leadership.confirm().await {
            tracing::debug!(topic = %self.topic, partition = self.partition, error = %e, "leadership check failed; acknowledging within the session only");
        }
        let key = kafscale_metadata::LeadershipKey::Partition(self.topic.clone(), self.partition);
        self.ctx.cluster.my_epoch(&key) == Some(epoch)
    }

    /// Uploads a partition may have in flight at once.
    fn max_in_flight(&self) -> usize {
        match self.ctx.settings.write_path {
            // A later segment landing after a failed one would leave a gap
            // the listing cannot tell from data.
            WritePath::Segments => 1,
            // The flusher stores a partition's parts in order and fails the
            // ones behind a failed part (`intake_writer`).
            WritePath::Intake => INTAKE_UPLOADS_IN_FLIGHT,
        }
    }

    /// Takes everything pending for one upload, if one may start now.
    fn take_upload(&self) -> Option<PreparedUpload> {
        let mut s = self.lock();
        if !s.core.has_pending() {
            return None;
        }
        let deadline = crate::cluster::fencing::write_deadline(
            &self.ctx.cluster,
            self.ctx.settings.upload_grace,
        )
        .map(|d| {
            d.min(crate::cluster::fencing::wait_deadline(
                crate::now_ms(),
                self.ctx.settings.upload_timeout,
            ))
        });
        let upload = s.core.take_upload(deadline, self.max_in_flight());
        self.count_unacknowledged(&mut s);
        // None: nothing to take (recovering, not leading, enough in flight),
        // or the session ended and what was pending failed.
        let (upload, not_after_ms) = (upload?, deadline?);
        Some(PreparedUpload {
            id: upload.id,
            leader_epoch: upload.epoch,
            generation: s.generation,
            not_after_ms,
            batches: upload.batches,
        })
    }

    /// Carries one upload out and applies its outcome.
    async fn upload(&self, upload: PreparedUpload) {
        let PreparedUpload {
            id: upload_id,
            leader_epoch: epoch,
            generation,
            not_after_ms,
            batches,
        } = upload;
        let path = self.ctx.settings.write_path;
        let result = match path {
            WritePath::Segments => {
                self.ctx
                    .storage
                    .write_segment(request::WriteSegment {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        not_after_ms,
                        batches,
                    })
                    .await
            }
            WritePath::Intake => {
                self.ctx
                    .storage
                    .append_intake(request::AppendIntake {
                        topic: self.topic.clone(),
                        topic_id: self.topic_id,
                        partition: self.partition,
                        leader_epoch: epoch,
                        generation,
                        not_after_ms,
                        batches,
                    })
                    .await
            }
        };
        let failed = result.is_err();
        if !failed {
            crash_points::reached("broker:upload:stored");
        }
        // A stored intake part has a key of its own: only the leadership
        // check tells that no new leader can have read the log end before it.
        let still_leading = match (&result, path) {
            (Ok(_), WritePath::Intake) => self.confirm_leading(epoch).await,
            _ => true,
        };
        let result = match result {
            Ok(_) => UploadResult::Stored,
            Err(e) => UploadResult::Failed(LogError::from(e)),
        };
        let mut s = self.lock();
        let after = s.core.upload_finished(
            upload_id,
            result,
            still_leading && self.ctx.cluster.session_valid(),
        );
        self.count_unacknowledged(&mut s);
        let abandoned = match after {
            AfterUpload::Durable {
                chunks,
                high_watermark,
                then_abandoned,
            } => {
                let bytes: usize = chunks.iter().map(|c| c.bytes.len()).sum();
                let records = chunks.last().map(|c| c.end_offset).unwrap_or(0)
                    - chunks.first().map(|c| c.base_offset).unwrap_or(0);
                self.ctx.metrics.flush_bytes.observe(bytes as f64);
                self.ctx.metrics.flush_records.observe(records as f64);
                let durable_seq = self.ctx.durable_seq.fetch_add(1, Ordering::Relaxed) + 1;
                for mut c in chunks {
                    c.durable_seq = durable_seq;
                    s.memory_bytes += c.bytes.len();
                    self.ctx
                        .memory_used
                        .fetch_add(c.bytes.len(), Ordering::Relaxed);
                    s.memory.push_back(c);
                }
                drop(s);
                self.ctx.evict_over_budget();
                self.hw_tx.send_replace(high_watermark);
                then_abandoned
            }
            AfterUpload::Abandoned(err) => Some(err),
            AfterUpload::Waiting | AfterUpload::Closed => None,
        };
        match abandoned {
            Some(err) if failed => {
                self.ctx.metrics.flush_failures.inc();
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %err, "upload failed; failing pending produces");
            }
            Some(_) => {
                tracing::info!(topic = %self.topic, partition = self.partition, "leadership moved (or the session ended, or an earlier upload failed) while an upload was in flight; its producers retry");
            }
            None => {}
        }
    }
}

/// One upload taken from the core, ready to send.
struct PreparedUpload {
    id: u64,
    leader_epoch: i32,
    /// The recovery generation the leader numbers under.
    generation: u64,
    /// No write lands after this (Unix ms): the broker's session end plus grace.
    not_after_ms: i64,
    batches: Vec<Bytes>,
}

fn not_leader(broker: i32, topic: &str, partition: i32) -> LogError {
    LogError::NotLeader(format!(
        "broker {broker} is not the leader of {topic}-{partition} (leadership moved or its session ended); refresh metadata and retry"
    ))
}

/// The group-commit loop: one upload per flush window per partition, never one
/// per request. It ends when the log is closed.
async fn group_commit_loop(log: Arc<PartitionLog>) {
    loop {
        let (deleted, idle) = {
            let s = log.lock();
            (s.core.deleted(), !s.core.has_pending())
        };
        if deleted {
            return;
        }
        if idle {
            // `notify_one` leaves a permit when nobody waits, so no wake-up is lost.
            log.wake_flush.notified().await;
            continue;
        }
        // Gather for one window, unless enough bytes are already pending. On
        // the intake path the flusher gathers all partitions for its window.
        let window = match log.ctx.settings.write_path {
            WritePath::Segments => log.ctx.settings.flush_window,
            WritePath::Intake => Duration::ZERO,
        };
        let deadline = tokio::time::Instant::now() + window;
        while log.lock().core.pending_bytes() < log.ctx.settings.flush_bytes
            && tokio::time::Instant::now() < deadline
        {
            let _ = tokio::time::timeout_at(deadline, log.wake_flush.notified()).await;
        }
        let Some(upload) = log.take_upload() else {
            // Enough in flight (or nothing to take): an ending upload wakes us.
            log.wake_flush.notified().await;
            continue;
        };
        match log.ctx.settings.write_path {
            WritePath::Segments => log.upload(upload).await,
            WritePath::Intake => {
                let task = log.clone();
                log.ctx.tasks.spawn("upload", async move {
                    task.upload(upload).await;
                    task.wake_flush.notify_one();
                });
            }
        }
    }
}

/// Slices of the batches from the chunk that holds `offset` on, at most
/// `max_bytes` but at least one whole batch.
fn read_chunks(memory: &VecDeque<Chunk>, offset: i64, max_bytes: usize) -> Vec<Bytes> {
    let first = memory.partition_point(|c| c.end_offset <= offset);
    let mut parts: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    'chunks: for chunk in memory.iter().skip(first) {
        let mut start = None;
        let mut end = 0;
        for (pos, h) in batch::iter_headers(&chunk.bytes) {
            if h.last_offset() < offset {
                continue;
            }
            if total + (pos + h.size - start.unwrap_or(pos)) > max_bytes
                && (total > 0 || start.is_some())
            {
                if let Some(s) = start {
                    parts.push(chunk.bytes.slice(s..end));
                }
                break 'chunks;
            }
            start.get_or_insert(pos);
            end = pos + h.size;
        }
        if let Some(s) = start {
            total += end - s;
            parts.push(chunk.bytes.slice(s..end));
        }
    }
    parts
}

/// One buffer of `parts`; a single part is passed on without copying.
fn concat(mut parts: Vec<Bytes>) -> Bytes {
    match parts.len() {
        0 => Bytes::new(),
        1 => parts.swap_remove(0),
        _ => {
            let mut out = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for p in parts {
                out.extend_from_slice(&p);
            }
            out.freeze()
        }
    }
}

/// Cuts a cold read at the high watermark: data in object storage beyond it
/// belongs to an upload this broker never confirmed.
fn trim_to(batches: Bytes, high_watermark: i64) -> Bytes {
    let end = batch::iter_headers(&batches)
        .take_while(|(_, h)| h.last_offset() < high_watermark)
        .last()
        .map(|(pos, h)| pos + h.size)
        .unwrap_or(0);
    batches.slice(..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(base: i64, count: i32) -> Bytes {
        // A valid v2 batch with an opaque body; the log never looks inside records.
        let mut b = vec![0u8; 61];
        b.extend_from_slice(&[9u8; 20]);
        let len = (b.len() - 12) as i32;
        b[0..8].copy_from_slice(&base.to_be_bytes());
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    fn chunk(base: i64, counts: &[i32]) -> Chunk {
        let mut out = BytesMut::new();
        let mut next = base;
        for &n in counts {
            out.extend_from_slice(&make(next, n));
            next += i64::from(n);
        }
        Chunk {
            durable_seq: 0,
            base_offset: base,
            end_offset: next,
            max_timestamp: 0,
            bytes: out.freeze(),
        }
    }

    fn offsets(b: &Bytes) -> Vec<i64> {
        batch::iter_headers(b).map(|(_, h)| h.base_offset).collect()
    }

    #[test]
    fn reads_start_at_the_batch_holding_the_offset_and_respect_max_bytes() {
        let mem: VecDeque<Chunk> = vec![chunk(0, &[2, 3]), chunk(5, &[1, 4])].into();
        assert_eq!(
            offsets(&concat(read_chunks(&mem, 0, 1 << 20))),
            vec![0, 2, 5, 6]
        );
        assert_eq!(
            offsets(&concat(read_chunks(&mem, 3, 1 << 20))),
            vec![2, 5, 6]
        );
        assert_eq!(offsets(&concat(read_chunks(&mem, 9, 1 << 20))), vec![6]);
        // max_bytes smaller than one batch still returns one whole batch.
        assert_eq!(offsets(&concat(read_chunks(&mem, 1, 1))), vec![0]);
        // Two batches' worth.
        assert_eq!(offsets(&concat(read_chunks(&mem, 2, 81 * 2))), vec![2, 5]);
        assert!(read_chunks(&mem, 10, 100).is_empty());
    }

    #[test]
    fn cold_reads_are_trimmed_to_the_high_watermark() {
        let c = chunk(0, &[2, 3, 4]);
        assert_eq!(offsets(&trim_to(c.bytes.clone(), 5)), vec![0, 2]);
        assert_eq!(offsets(&trim_to(c.bytes.clone(), 4)), vec![0]);
        assert!(trim_to(c.bytes, 1).is_empty());
    }
}
