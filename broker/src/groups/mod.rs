//! The group coordinator: which groups this broker coordinates, their
//! membership state machines, their committed offsets, and persistence to the
//! metadata store.
//!
//! What is persisted where: committed offsets are written to the metadata store
//! before OffsetCommit is answered; a group's generation, protocol, leader,
//! members and assignments are written after each completed rebalance and each
//! membership change. Heartbeats and session timers stay in memory.

pub mod group;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafscale_metadata::{
    BrokerRecord, CommittedOffset, LeadershipKey, MetadataError, MetadataStore,
};

use crate::cluster::{coordinator_slot, ClusterView};
use kafscale_telemetry::prometheus_client::metrics::counter::Counter;

pub use group::{
    Group, GroupError, GroupSettings, GroupState, JoinRequest, JoinResult, SyncResult,
};

/// A group and its committed offsets, behind their own locks.
pub struct GroupHandle {
    pub id: String,
    pub group: Mutex<Group>,
    pub offsets: Mutex<BTreeMap<(String, i32), CommittedOffset>>,
    /// Serialises writes of this group's record so an older snapshot never
    /// overwrites a newer one.
    persist: tokio::sync::Mutex<()>,
    /// The coordinator-slot epoch this state was loaded under: after the slot
    /// was away and came back, the state is stale and is loaded again.
    slot_epoch: i32,
    /// When a request last looked the group up (set under the groups map's
    /// lock, so the ticker never drops a group a request is about to use).
    last_used: Mutex<Instant>,
}

impl GroupHandle {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a change on the group, counting a rebalance when the generation moves.
    pub fn update<R>(&self, rebalances: &Counter, change: impl FnOnce(&mut Group) -> R) -> R {
        let mut g = self.lock();
        let before = g.generation;
        let out = change(&mut g);
        if g.generation != before {
            rebalances.inc();
        }
        out
    }

    pub fn offsets(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), CommittedOffset>> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long a group stays empty, with no committed offsets, nobody about to
/// join and no request looking it up, before it leaves memory.
const EMPTY_GROUP_GRACE: Duration = Duration::from_secs(30);

pub struct GroupCoordinator {
    metadata: MetadataStore,
    cluster: Arc<ClusterView>,
    pub settings: GroupSettings,
    rebalances: Counter,
    groups: Mutex<HashMap<String, Arc<GroupHandle>>>,
    loading: tokio::sync::Mutex<()>,
}

impl GroupCoordinator {
    pub fn new(
        metadata: MetadataStore,
        settings: GroupSettings,
        rebalances: Counter,
        cluster: Arc<ClusterView>,
    ) -> Arc<Self> {
        Arc::new(Self {
            metadata,
            cluster,
            settings,
            rebalances,
            groups: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
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
        let group = match &stored.record {
            Some(r) => Group::restore(id, r, Instant::now()),
            None => Group::new(id),
        };
        let handle = Arc::new(GroupHandle {
            id: id.to_string(),
            group: Mutex::new(group),
            offsets: Mutex::new(stored.offsets),
            persist: tokio::sync::Mutex::new(()),
            slot_epoch: slot_epoch.unwrap_or(-1),
            last_used: Mutex::new(Instant::now()),
        });
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), handle.clone());
        Ok(Some(handle))
    }

    /// Writes the group's record if it changed since the last write.
    pub async fn persist(&self, handle: &GroupHandle) {
        let _guard = handle.persist.lock().await;
        let record = {
            let mut g = handle.lock();
            if !g.dirty {
                return;
            }
            g.dirty = false;
            g.to_record()
        };
        let fence = self.fence(&handle.id);
        if fence.is_none() {
            return; // moved: the new coordinator owns the record now
        }
        if let Err(e) = self
            .metadata
            .save_group(&handle.id, &record, fence.as_ref())
            .await
        {
            tracing::warn!(group = %handle.id, error = %e, "saving group state failed; will retry");
            handle.lock().dirty = true;
        }
    }

    /// Persists in the background (for callers that must not wait).
    pub fn persist_later(self: &Arc<Self>, handle: Arc<GroupHandle>) {
        let this = self.clone();
        tokio::spawn(async move { this.persist(&handle).await });
    }

    pub async fn commit(
        &self,
        handle: &GroupHandle,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) -> Result<(), MetadataError> {
        let fence = self.required_fence(&handle.id)?;
        self.metadata
            .commit_offsets(&handle.id, &offsets, Some(&fence))
            .await?;
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

    pub fn rebalances(&self) -> &Counter {
        &self.rebalances
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

    /// Every group this broker knows of, stored or in memory.
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
        let fence = self.required_fence(&handle.id)?;
        self.metadata.delete_group(&handle.id, Some(&fence)).await?;
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&handle.id);
        Ok(())
    }

    /// Drops a group from memory if it is still empty, has no offsets and no
    /// request looked it up within the grace. Checked and removed under the
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
        if idle && still_empty && h.offsets().is_empty() {
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
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                for h in this.loaded() {
                    let now = Instant::now();
                    let (dirty, empty_for) = h.update(&this.rebalances, |g| {
                        g.tick(now);
                        (g.dirty, g.empty_for(now))
                    });
                    if dirty {
                        this.persist(&h).await;
                    }
                    if empty_for.is_some_and(|d| d >= EMPTY_GROUP_GRACE) {
                        this.forget_if_unused(&h);
                    }
                }
            }
        });
    }
}
