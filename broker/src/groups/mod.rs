//! The group coordinator: which groups this broker coordinates, their
//! membership state machines, their committed offsets, and persistence to the
//! metadata store.
//!
//! What is persisted where: committed offsets are written to the metadata store
//! before OffsetCommit is answered; a group's generation, protocol, leader,
//! members and assignments are written after each completed rebalance and each
//! membership change. Heartbeats and session timers stay in memory.

pub mod group;
pub mod offset_expiry;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafscale_metadata::{
    BrokerRecord, CommittedOffset, GroupIndexEntry, LeadershipKey, MetadataError, MetadataStore,
};

use crate::cluster::{coordinator_slot, ClusterView};
use crate::tasks::BackgroundTasks;
use kafscale_telemetry::prometheus_client::metrics::counter::Counter;

pub use group::{
    Group, GroupError, GroupSettings, GroupState, JoinRequest, JoinResult, SyncResult,
};

/// A group as ListGroups lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub id: String,
    pub protocol_type: Option<String>,
    pub state: GroupState,
}

/// A group and its committed offsets, behind their own locks.
pub struct GroupHandle {
    pub id: String,
    pub group: Mutex<Group>,
    pub offsets: Mutex<BTreeMap<(String, i32), CommittedOffset>>,
    /// Serialises every store write of this group (its record, offsets,
    /// expiry and deletion), so an older snapshot never overwrites a newer
    /// one and expiry decides on offsets no write is changing.
    writes: tokio::sync::Mutex<()>,
    /// Commits waiting for the group's next offsets write.
    commits: Mutex<CommitQueue>,
    /// The coordinator-slot epoch this state was loaded under: after the slot
    /// was away and came back, the state is stale and is loaded again.
    slot_epoch: i32,
    /// When a request last looked the group up (set under the groups map's
    /// lock, so the ticker never drops a group a request is about to use).
    last_used: Mutex<Instant>,
    /// The group's `group-index/` entry as stored (none yet): written with
    /// the group's first record or commit, and again only when it changes,
    /// never with every commit.
    indexed: Mutex<Option<GroupIndexEntry>>,
    /// Failed writes of the record back off: (next attempt, current pause).
    persist_backoff: Mutex<(Option<Instant>, Duration)>,
    /// A background write of the record is queued or running.
    persisting: std::sync::atomic::AtomicBool,
    /// The group's memory as last counted into `memory_total`, the sum over
    /// every group of the broker (given back when the handle goes).
    memory_counted: AtomicUsize,
    memory_total: Arc<AtomicUsize>,
}

impl Drop for GroupHandle {
    fn drop(&mut self) {
        self.memory_total
            .fetch_sub(*self.memory_counted.get_mut(), Ordering::Relaxed);
    }
}

impl GroupHandle {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the group's memory anew into the broker's total.
    fn count_memory(&self, group: &Group) {
        let now = group.state_bytes();
        let before = self.memory_counted.swap(now, Ordering::Relaxed);
        if now >= before {
            self.memory_total.fetch_add(now - before, Ordering::Relaxed);
        } else {
            self.memory_total.fetch_sub(before - now, Ordering::Relaxed);
        }
    }

    /// Whether a failed write of the record has waited out its pause.
    fn persist_due(&self, now: Instant) -> bool {
        let backoff = self
            .persist_backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        backoff.0.is_none_or(|at| now >= at)
    }

    /// Records a write's outcome: a failure pauses the next one, doubling.
    fn persisted(&self, ok: bool) {
        let mut backoff = self
            .persist_backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if ok {
            *backoff = (None, PERSIST_BACKOFF_MIN);
        } else {
            let pause = backoff.1;
            *backoff = (
                Some(Instant::now() + pause),
                (pause * 2).min(PERSIST_BACKOFF_MAX),
            );
        }
    }

    /// `entry` if it is not what the index holds.
    fn index_update(&self, entry: GroupIndexEntry) -> Option<GroupIndexEntry> {
        let stored = self.indexed.lock().unwrap_or_else(|e| e.into_inner());
        (stored.as_ref() != Some(&entry)).then_some(entry)
    }

    fn set_indexed(&self, entry: Option<GroupIndexEntry>) {
        if let Some(entry) = entry {
            *self.indexed.lock().unwrap_or_else(|e| e.into_inner()) = Some(entry);
        }
    }

    pub fn offsets(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), CommittedOffset>> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commits(&self) -> std::sync::MutexGuard<'_, CommitQueue> {
        self.commits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No store write of this group is queued or running.
    fn idle(&self) -> bool {
        let queue = self.commits();
        !queue.writing && self.writes.try_lock().is_ok()
    }
}

/// Offset commits of one group that arrived while an earlier write was in
/// flight: they go to the store together in the next write (a later commit
/// of a partition replaces an earlier one still waiting), so a consumer
/// committing after every record, or many members committing at once, cost
/// one write per round trip of the store, not one per commit.
#[derive(Default)]
struct CommitQueue {
    offsets: BTreeMap<(String, i32), CommittedOffset>,
    waiters: Vec<tokio::sync::oneshot::Sender<Result<(), MetadataError>>>,
    /// A writer task is draining the queue.
    writing: bool,
}

/// How long a group stays empty, with no committed offsets, nobody about to
/// join and no request looking it up, before it leaves memory.
const EMPTY_GROUP_GRACE: Duration = Duration::from_secs(30);

/// The pause after a failed write of a group's record, doubling per failure
/// up to the maximum: a record the store keeps refusing is not retried on
/// every tick.
const PERSIST_BACKOFF_MIN: Duration = Duration::from_millis(200);
const PERSIST_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Group writes (records, offsets, expiry) one broker has in flight to the
/// metadata store at once; more wait. Commits of many groups then queue and
/// coalesce here instead of crowding out the lease renewals and leadership
/// writes the same store serves.
const STORE_WRITES_IN_FLIGHT: usize = 16;

pub struct GroupCoordinator {
    metadata: MetadataStore,
    cluster: Arc<ClusterView>,
    /// Where timers, expiry and background writes run.
    tasks: BackgroundTasks,
    pub settings: GroupSettings,
    rebalances: Counter,
    groups: Mutex<HashMap<String, Arc<GroupHandle>>>,
    loading: tokio::sync::Mutex<()>,
    store_writes: tokio::sync::Semaphore,
    /// What the groups in memory hold, as [`Group::state_bytes`] counts.
    memory_total: Arc<AtomicUsize>,
}

impl GroupCoordinator {
    pub fn new(
        metadata: MetadataStore,
        settings: GroupSettings,
        rebalances: Counter,
        cluster: Arc<ClusterView>,
        tasks: BackgroundTasks,
    ) -> Arc<Self> {
        Arc::new(Self {
            metadata,
            cluster,
            tasks,
            settings,
            rebalances,
            groups: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            store_writes: tokio::sync::Semaphore::new(STORE_WRITES_IN_FLIGHT),
            memory_total: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Whether this broker coordinates `group_id`: it leads the group's
    /// coordinator slot. Requests for groups it does not own are answered
    /// NOT_COORDINATOR.
    pub fn owns(&self, group_id: &str) -> bool {
        self.slot_epoch(group_id).is_some()
    }

    /// A condition that makes a write fail once this broker stops
    /// coordinating the group (a paused coordinator cannot overwrite what its
    /// successor wrote).
    fn fence(&self, group_id: &str) -> Option<kafscale_metadata::Compare> {
        self.cluster
            .fence(&LeadershipKey::CoordinatorSlot(coordinator_slot(group_id)))
    }

    /// [`Self::fence`], or the error for a group this broker lost.
    fn required_fence(&self, group_id: &str) -> Result<kafscale_metadata::Compare, MetadataError> {
        self.fence(group_id).ok_or_else(|| {
            MetadataError::Fenced(format!(
                "broker {} no longer coordinates group '{group_id}'; find the coordinator again and retry",
                self.cluster.me.id
            ))
        })
    }

    /// The live broker coordinating `group_id`, if its slot has one.
    pub fn coordinator_of(&self, group_id: &str) -> Option<BrokerRecord> {
        let slot = LeadershipKey::CoordinatorSlot(coordinator_slot(group_id));
        self.cluster
            .leader(&slot)
            .broker
            .and_then(|id| self.cluster.broker(id))
    }

    /// Forgets the groups of slots this broker no longer leads. Their state is
    /// in the metadata store; the new coordinator loads it on first use, and
    /// members waiting here are answered so that they look it up.
    pub fn release_unowned(&self) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let before = groups.len();
        groups.retain(|id, h| self.slot_epoch(id) == Some(h.slot_epoch));
        if groups.len() != before {
            tracing::info!(
                released = before - groups.len(),
                "groups moved to other coordinators"
            );
        }
    }

    /// The epoch at which this broker leads the group's slot, if it does.
    fn slot_epoch(&self, group_id: &str) -> Option<i32> {
        self.cluster
            .my_epoch(&LeadershipKey::CoordinatorSlot(coordinator_slot(group_id)))
    }

    fn cached(&self, id: &str) -> Option<Arc<GroupHandle>> {
        let epoch = self.slot_epoch(id);
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        match groups.get(id) {
            Some(h) if Some(h.slot_epoch) == epoch => {
                *h.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                Some(h.clone())
            }
            Some(_) => {
                groups.remove(id);
                None
            }
            None => None,
        }
    }

    /// The group, loaded from the metadata store on first use; `create` makes
    /// an empty one when nothing is stored.
    pub async fn group(
        &self,
        id: &str,
        create: bool,
    ) -> Result<Option<Arc<GroupHandle>>, MetadataError> {
        if let Some(h) = self.cached(id) {
            return Ok(Some(h));
        }
        let _guard = self.loading.lock().await;
        if let Some(h) = self.cached(id) {
            return Ok(Some(h));
        }
        let slot_epoch = self.slot_epoch(id);
        let stored = self.metadata.load_group(id).await?;
        if stored.record.is_none() && stored.offsets.is_empty() && !create {
            return Ok(None);
        }
        let indexed = stored.index.clone();
        let group = match &stored.record {
            Some(r) => Group::restore(id, r, Instant::now()),
            None => Group::new(id),
        };
        let handle = Arc::new(GroupHandle {
            id: id.to_string(),
            group: Mutex::new(group),
            offsets: Mutex::new(stored.offsets),
            writes: tokio::sync::Mutex::new(()),
            commits: Mutex::new(CommitQueue::default()),
            slot_epoch: slot_epoch.unwrap_or(-1),
            last_used: Mutex::new(Instant::now()),
            indexed: Mutex::new(indexed),
            persist_backoff: Mutex::new((None, PERSIST_BACKOFF_MIN)),
            persisting: std::sync::atomic::AtomicBool::new(false),
            memory_counted: AtomicUsize::new(0),
            memory_total: self.memory_total.clone(),
        });
        handle.count_memory(&handle.lock());
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), handle.clone());
        Ok(Some(handle))
    }

    /// Writes the group's record if it changed since the last write.
    pub async fn persist(&self, handle: &GroupHandle) {
        let _guard = handle.writes.lock().await;
        let Ok(_permit) = self.store_writes.acquire().await else {
            return;
        };
        let (record, entry) = {
            let mut g = handle.lock();
            if !g.dirty {
                return;
            }
            g.dirty = false;
            (g.to_record(), g.index_entry())
        };
        let fence = self.fence(&handle.id);
        if fence.is_none() {
            return; // moved: the new coordinator owns the record now
        }
        let index = handle.index_update(entry);
        match self
            .metadata
            .save_group(&handle.id, &record, index.as_ref(), fence.as_ref())
            .await
        {
            Ok(()) => {
                handle.set_indexed(index);
                handle.persisted(true);
            }
            Err(e) => {
                tracing::warn!(group = %handle.id, error = %e, "saving group state failed; will retry");
                handle.lock().dirty = true;
                handle.persisted(false);
            }
        }
    }

    /// Persists in the background (for callers that must not wait); at most
    /// one such write per group is queued at a time.
    pub fn persist_later(self: &Arc<Self>, handle: Arc<GroupHandle>) {
        if handle.persisting.swap(true, Ordering::AcqRel) {
            return; // the queued write takes the newest state when it runs
        }
        let this = self.clone();
        self.tasks.spawn("group write", async move {
            handle.persisting.store(false, Ordering::Release);
            this.persist(&handle).await;
        });
    }

    /// Stores committed offsets and answers once they are stored: commits
    /// that arrive while the group's previous write is in flight are written
    /// together after it (see [`CommitQueue`]).
    pub async fn commit(
        self: &Arc<Self>,
        handle: &Arc<GroupHandle>,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) -> Result<(), MetadataError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start_writer = {
            let mut queue = handle.commits();
            queue.offsets.extend(offsets);
            queue.waiters.push(tx);
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            // Its own task: a committer that disconnects does not strand the
            // commits queued behind it.
            let (this, handle) = (self.clone(), handle.clone());
            (self.tasks).spawn("offset commits", async move {
                this.drain_commits(&handle).await
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(MetadataError::Unavailable(
                "the offset commit was abandoned while the broker stopped; retry".into(),
            ))
        })
    }

    /// Writes the group's queued commits, batch after batch, until none wait.
    async fn drain_commits(&self, handle: &GroupHandle) {
        loop {
            let (offsets, waiters) = {
                let mut queue = handle.commits();
                if queue.waiters.is_empty() {
                    queue.writing = false;
                    return;
                }
                (
                    std::mem::take(&mut queue.offsets),
                    std::mem::take(&mut queue.waiters),
                )
            };
            let outcome = self.write_offsets(handle, offsets).await;
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
            }
        }
    }

    async fn write_offsets(
        &self,
        handle: &GroupHandle,
        offsets: BTreeMap<(String, i32), CommittedOffset>,
    ) -> Result<(), MetadataError> {
        let _guard = handle.writes.lock().await;
        let _permit = self
            .store_writes
            .acquire()
            .await
            .map_err(|_| MetadataError::Unavailable("the broker is stopping; retry".into()))?;
        let fence = self.required_fence(&handle.id)?;
        // Only a group without an entry gets one here (a record's save keeps
        // it current).
        let index = if handle
            .indexed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            Some(handle.lock().index_entry())
        } else {
            None
        };
        let offsets: Vec<_> = offsets.into_iter().collect();
        self.metadata
            .commit_offsets(&handle.id, &offsets, index.as_ref(), Some(&fence))
            .await?;
        if !offsets.is_empty() {
            handle.set_indexed(index);
        }
        let mut cache = handle.offsets();
        for (k, v) in offsets {
            cache.insert(k, v);
        }
        Ok(())
    }

    pub async fn delete_offsets(
        &self,
        handle: &GroupHandle,
        partitions: &[(String, i32)],
    ) -> Result<(), MetadataError> {
        let _guard = handle.writes.lock().await;
        let fence = self.required_fence(&handle.id)?;
        self.metadata
            .delete_offsets(&handle.id, partitions, Some(&fence))
            .await?;
        let mut cache = handle.offsets();
        for k in partitions {
            cache.remove(k);
        }
        Ok(())
    }

    /// Runs a change on the group, with the memory the broker's groups may
    /// still take as the group's room to grow; counts a rebalance when the
    /// generation moves, and the group's memory after.
    pub fn update<R>(&self, handle: &GroupHandle, change: impl FnOnce(&mut Group) -> R) -> R {
        let mut g = handle.lock();
        g.memory_room = self
            .settings
            .memory_bytes
            .saturating_sub(self.memory_total.load(Ordering::Relaxed));
        let before = g.generation;
        let out = change(&mut g);
        if g.generation != before {
            self.rebalances.inc();
        }
        handle.count_memory(&g);
        out
    }

    /// What the groups in memory hold, in bytes (for metrics and tests).
    pub fn memory_bytes(&self) -> usize {
        self.memory_total.load(Ordering::Relaxed)
    }

    /// Drops the committed offsets of a deleted topic from the groups in
    /// memory (the store's copies are removed by the deletion itself).
    pub fn forget_topic(&self, topic: &str) {
        for h in self.loaded() {
            h.offsets().retain(|(t, _), _| t != topic);
        }
    }

    /// Groups currently loaded (no store access; for metrics).
    pub fn loaded(&self) -> Vec<Arc<GroupHandle>> {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every group this broker coordinates, stored or in memory, as
    /// ListGroups shows it: from one read of the index, loading nothing
    /// (groups in memory report their live state).
    pub async fn summaries(&self) -> Result<Vec<GroupSummary>, MetadataError> {
        let mut out = BTreeMap::new();
        for (id, entry) in self.metadata.list_group_index().await? {
            if self.owns(&id) {
                let state = if entry.has_members {
                    GroupState::Stable
                } else {
                    GroupState::Empty
                };
                out.insert(
                    id.clone(),
                    GroupSummary {
                        id,
                        protocol_type: entry.protocol_type,
                        state,
                    },
                );
            }
        }
        for h in self.loaded() {
            let g = h.lock();
            if out.contains_key(&h.id) || g.protocol_type.is_some() {
                out.insert(
                    h.id.clone(),
                    GroupSummary {
                        id: h.id.clone(),
                        protocol_type: g.protocol_type.clone(),
                        state: g.state,
                    },
                );
            }
        }
        Ok(out.into_values().collect())
    }

    /// Every group this broker knows of, stored or in memory, loaded.
    pub async fn list(&self) -> Result<Vec<Arc<GroupHandle>>, MetadataError> {
        let mut out = Vec::new();
        for id in self.metadata.list_groups().await? {
            if !self.owns(&id) {
                continue;
            }
            if let Some(h) = self.group(&id, false).await? {
                out.push(h);
            }
        }
        for h in self.loaded() {
            if !out.iter().any(|o| o.id == h.id) && h.lock().protocol_type.is_some() {
                out.push(h);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Deletes an empty group and its offsets.
    pub async fn delete(&self, handle: &GroupHandle) -> Result<(), MetadataError> {
        let _guard = handle.writes.lock().await;
        let fence = self.required_fence(&handle.id)?;
        self.metadata.delete_group(&handle.id, Some(&fence)).await?;
        self.forget_deleted(handle);
        Ok(())
    }

    /// After the store dropped the group: out of memory, and a commit still
    /// queued for it writes the index entry again.
    fn forget_deleted(&self, handle: &GroupHandle) {
        *handle.indexed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        handle.offsets().clear();
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if groups
            .get(&handle.id)
            .is_some_and(|cached| std::ptr::eq(Arc::as_ptr(cached), handle))
        {
            groups.remove(&handle.id);
        }
    }

    /// Removes the group's offsets that outlived the retention (see
    /// [`offset_expiry`]); a group left empty with no offsets is deleted, as
    /// Kafka deletes it. Returns how many offsets expired.
    pub async fn expire_offsets(
        &self,
        handle: &GroupHandle,
        now_ms: i64,
    ) -> Result<usize, MetadataError> {
        let _guard = handle.writes.lock().await;
        let retention_ms =
            i64::try_from(self.settings.offsets_retention.as_millis()).unwrap_or(i64::MAX);
        let (expired, deletes_group) = {
            let group = handle.lock();
            let offsets = handle.offsets();
            let queued = handle.commits();
            // A partition with a commit on its way keeps its offset.
            let expired: Vec<_> =
                offset_expiry::expired_offsets(&group, &offsets, now_ms, retention_ms)
                    .into_iter()
                    .filter(|k| !queued.offsets.contains_key(k))
                    .collect();
            let deletes_group = !expired.is_empty()
                && expired.len() == offsets.len()
                && group.state == GroupState::Empty
                && group.members.is_empty()
                && queued.waiters.is_empty();
            (expired, deletes_group)
        };
        if expired.is_empty() {
            return Ok(0);
        }
        let _permit = self
            .store_writes
            .acquire()
            .await
            .map_err(|_| MetadataError::Unavailable("the broker is stopping".into()))?;
        let fence = self.required_fence(&handle.id)?;
        if deletes_group {
            self.metadata.delete_group(&handle.id, Some(&fence)).await?;
            self.forget_deleted(handle);
        } else {
            self.metadata
                .delete_offsets(&handle.id, &expired, Some(&fence))
                .await?;
            let mut cache = handle.offsets();
            for k in &expired {
                cache.remove(k);
            }
        }
        tracing::info!(group = %handle.id, expired = expired.len(), group_deleted = deletes_group,
            "committed offsets expired (offsets.retention.minutes)");
        Ok(expired.len())
    }

    /// One pass of offset expiry over every group this broker coordinates,
    /// stored or in memory.
    pub async fn expire_all_offsets(&self) -> Result<usize, MetadataError> {
        let mut expired = 0;
        for (id, _) in self.metadata.list_group_index().await? {
            if !self.owns(&id) {
                continue;
            }
            if let Some(handle) = self.group(&id, false).await? {
                match self.expire_offsets(&handle, crate::now_ms()).await {
                    Ok(n) => expired += n,
                    Err(e) => {
                        tracing::warn!(group = %id, error = %e, "expiring committed offsets failed; the next pass retries")
                    }
                }
            }
        }
        Ok(expired)
    }

    /// Drops a group from memory if it is still empty, has no offsets (a
    /// group with offsets stays, so its consumer lag is reported while its
    /// consumers are down), no request looked it up within the grace and
    /// none of its writes is queued or running. Checked and removed under the
    /// map's lock, which lookups also take, so a request either finds the
    /// group before this (and keeps it) or loads it afresh after. Its record
    /// stays in the metadata store, as Kafka keeps an empty group's state.
    fn forget_if_unused(&self, h: &Arc<GroupHandle>) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let idle = h
            .last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            >= EMPTY_GROUP_GRACE;
        let still_empty = h.lock().empty_for(Instant::now()).is_some();
        if idle && still_empty && h.offsets().is_empty() && h.idle() {
            if let Some(cached) = groups.get(&h.id) {
                if Arc::ptr_eq(cached, h) {
                    groups.remove(&h.id);
                }
            }
        }
    }

    /// Expires sessions, completes timed-out rebalances and drops groups with
    /// nothing left, every 100 ms.
    pub fn spawn_ticker(self: &Arc<Self>) {
        let this = self.clone();
        self.tasks.spawn("group timers", async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                for h in this.loaded() {
                    let now = Instant::now();
                    let now_ms = crate::now_ms();
                    let (dirty, empty_for) = this.update(&h, |g| {
                        g.tick(now);
                        g.track_emptied(now_ms);
                        (g.dirty, g.empty_for(now))
                    });
                    // Off the ticker, which every group shares: one slow or
                    // refused write never delays another group's timers.
                    if dirty && h.persist_due(now) {
                        this.persist_later(h.clone());
                    }
                    if empty_for.is_some_and(|d| d >= EMPTY_GROUP_GRACE) {
                        this.forget_if_unused(&h);
                    }
                }
            }
        });
    }

    /// Expires committed offsets every `offsets.retention.check.interval.ms`.
    pub fn spawn_offset_expiry(self: &Arc<Self>) {
        let this = self.clone();
        self.tasks.spawn("offset expiry", async move {
            let mut tick = tokio::time::interval(this.settings.offsets_retention_check_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = this.expire_all_offsets().await {
                    tracing::warn!(error = %e, "listing groups for offset expiry failed; the next pass retries");
                }
            }
        });
    }
}
