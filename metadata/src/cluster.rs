//! Cluster membership and leadership records:
//!
//! | key | value |
//! |-----|-------|
//! | `brokers/{id}` | [`BrokerRecord`], bound to the broker's session lease |
//! | `controller` | [`ControllerRecord`], bound to the controller's session lease |
//! | `partitions/{topic}/{p}` | [`crate::PartitionState`]: leader, leader epoch, log start |
//! | `coordinators/{slot}` | [`CoordinatorState`]: leader and epoch of a group-coordinator slot |
//!
//! Only the controller changes leaders, in transactions conditioned on its own
//! `controller` key: a controller that lost its lease cannot move anything.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{decode, encode, Compare, KeyValue, MetadataError, MetadataStore, PartitionState};
use crate::{WatchEvent, Write, MAX_TXN_OPS};

/// A live broker. The key vanishes when the broker's lease ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: i32,
    /// The first listener's advertised address (what brokers without
    /// `listeners` registered, and what a listener missing there falls back to).
    pub host: String,
    pub port: i32,
    /// Shutting down: the controller moves its partitions and groups away.
    #[serde(default)]
    pub draining: bool,
    /// Advertised address per listener name: a client is told the addresses
    /// of the listener it connected to.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub listeners: std::collections::BTreeMap<String, Endpoint>,
}

/// Where clients reach a broker on one listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: i32,
}

impl BrokerRecord {
    /// The address to give a client that came in on `listener`. All brokers
    /// of a cluster are expected to have the same listener names; one that
    /// lacks the name (an older broker in a rolling upgrade) answers with
    /// its first listener's address, as before listeners were named.
    pub fn endpoint(&self, listener: &str) -> (&str, i32) {
        match self.listeners.get(listener) {
            Some(e) => (&e.host, e.port),
            None => (&self.host, self.port),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRecord {
    pub broker_id: i32,
}

/// Leader of one group-coordinator slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorState {
    pub leader: Option<i32>,
    pub leader_epoch: i32,
}

/// Something with exactly one leader at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeadershipKey {
    Partition(String, i32),
    CoordinatorSlot(i32),
}

/// A leadership record as read, with what a compare-and-swap needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadershipEntry {
    pub key: LeadershipKey,
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    /// Partitions only: kept unchanged by a leader change.
    pub log_start_offset: i64,
    /// Partitions only: who led before the last change.
    pub previous_leader: Option<i32>,
    /// `None`: the key does not exist yet.
    pub revision: Option<i64>,
}

impl LeadershipEntry {
    /// The same record led by `leader`, one epoch later.
    pub fn moved_to(&self, leader: i32) -> LeadershipEntry {
        LeadershipEntry {
            leader: Some(leader),
            // Saturating: the epoch is read from the store.
            leader_epoch: self.leader_epoch.saturating_add(1),
            previous_leader: self.leader,
            ..self.clone()
        }
    }
}

/// Proof of being the controller: the revision of its `controller` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerFence(pub i64);

impl MetadataStore {
    pub fn brokers_prefix(&self) -> String {
        format!("{}brokers/", self.root)
    }

    pub fn controller_key(&self) -> String {
        format!("{}controller", self.root)
    }

    pub fn all_partitions_prefix(&self) -> String {
        format!("{}partitions/", self.root)
    }

    pub fn coordinators_prefix(&self) -> String {
        format!("{}coordinators/", self.root)
    }

    /// A transaction condition that holds while `key`'s leadership record is
    /// still at `revision` (nobody has moved it since).
    pub fn leader_fence(&self, key: &LeadershipKey, revision: i64) -> Compare {
        Compare::ModRevision(self.leadership_key(key), revision)
    }

    fn leadership_key(&self, key: &LeadershipKey) -> String {
        match key {
            LeadershipKey::Partition(t, p) => format!("{}{t}/{p}", self.all_partitions_prefix()),
            LeadershipKey::CoordinatorSlot(s) => format!("{}{s}", self.coordinators_prefix()),
        }
    }

    /// Changes under a prefix, from now on ([`WatchEvent::Resync`]: re-read).
    pub fn watch(&self, prefix: &str) -> broadcast::Receiver<WatchEvent> {
        self.kv.watch(prefix)
    }

    pub async fn grant_lease(&self, ttl: Duration) -> Result<i64, MetadataError> {
        self.kv.grant_lease(ttl).await
    }

    pub async fn keep_alive(&self, lease: i64) -> Result<bool, MetadataError> {
        self.kv.keep_alive(lease).await
    }

    pub async fn revoke_lease(&self, lease: i64) -> Result<(), MetadataError> {
        self.kv.revoke_lease(lease).await
    }

    /// Registers a broker under `lease`. False when another live broker holds
    /// the id (its lease has not ended).
    pub async fn register_broker(
        &self,
        record: &BrokerRecord,
        lease: i64,
    ) -> Result<bool, MetadataError> {
        let key = format!("{}{}", self.brokers_prefix(), record.id);
        self.kv
            .txn(
                vec![Compare::Absent(key.clone())],
                vec![Write::PutLeased(key, encode(record), lease)],
            )
            .await
    }

    /// Rewrites this broker's own record (e.g. to mark it draining).
    pub async fn update_broker(
        &self,
        record: &BrokerRecord,
        lease: i64,
    ) -> Result<(), MetadataError> {
        let key = format!("{}{}", self.brokers_prefix(), record.id);
        self.kv
            .txn(
                Vec::new(),
                vec![Write::PutLeased(key, encode(record), lease)],
            )
            .await
            .map(|_| ())
    }

    pub async fn list_brokers(&self) -> Result<Vec<BrokerRecord>, MetadataError> {
        self.decode_all(&self.brokers_prefix()).await
    }

    pub fn parse_broker(&self, kv: &KeyValue) -> Result<BrokerRecord, MetadataError> {
        decode(kv)
    }

    /// The broker id of a `brokers/{id}` key.
    pub fn broker_id_of(&self, key: &str) -> Option<i32> {
        key.strip_prefix(&self.brokers_prefix())?.parse().ok()
    }

    /// Becomes the controller if there is none (or confirms that this broker
    /// already is). Returns the fence that its leadership changes carry, or
    /// `None` when another broker is controller.
    pub async fn campaign(
        &self,
        broker_id: i32,
        lease: i64,
    ) -> Result<Option<ControllerFence>, MetadataError> {
        let key = self.controller_key();
        // Won or not, the key then says who the controller is.
        self.kv
            .txn(
                vec![Compare::Absent(key.clone())],
                vec![Write::PutLeased(
                    key.clone(),
                    encode(&ControllerRecord { broker_id }),
                    lease,
                )],
            )
            .await?;
        match self.get_key(&key).await?.as_ref() {
            Some(kv) if decode::<ControllerRecord>(kv)?.broker_id == broker_id => {
                Ok(Some(ControllerFence(kv.mod_revision)))
            }
            _ => Ok(None),
        }
    }

    /// The current controller's broker id.
    pub async fn controller(&self) -> Result<Option<i32>, MetadataError> {
        let key = self.controller_key();
        match self.get_key(&key).await?.as_ref() {
            Some(kv) => Ok(Some(decode::<ControllerRecord>(kv)?.broker_id)),
            None => Ok(None),
        }
    }

    pub fn parse_controller(&self, kv: &KeyValue) -> Result<ControllerRecord, MetadataError> {
        decode(kv)
    }

    /// Every partition's leadership record.
    pub async fn partition_leaderships(&self) -> Result<Vec<LeadershipEntry>, MetadataError> {
        self.leaderships_under(&self.all_partitions_prefix()).await
    }

    /// Every coordinator slot's leadership record.
    pub async fn coordinator_leaderships(&self) -> Result<Vec<LeadershipEntry>, MetadataError> {
        self.leaderships_under(&self.coordinators_prefix()).await
    }

    async fn leaderships_under(&self, prefix: &str) -> Result<Vec<LeadershipEntry>, MetadataError> {
        let mut out = Vec::new();
        for kv in self.kv.get_prefix(prefix).await? {
            if let Some(entry) = self.parse_leadership(&kv)? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// A `partitions/` or `coordinators/` entry; `None` for other keys.
    pub fn parse_leadership(
        &self,
        kv: &KeyValue,
    ) -> Result<Option<LeadershipEntry>, MetadataError> {
        Ok(match self.leadership_key_of(&kv.key) {
            Some(key @ LeadershipKey::Partition(..)) => {
                let s: PartitionState = decode(kv)?;
                Some(LeadershipEntry {
                    key,
                    leader: s.leader,
                    leader_epoch: s.leader_epoch,
                    log_start_offset: s.log_start_offset,
                    previous_leader: s.previous_leader,
                    revision: Some(kv.mod_revision),
                })
            }
            Some(key @ LeadershipKey::CoordinatorSlot(_)) => {
                let s: CoordinatorState = decode(kv)?;
                Some(LeadershipEntry {
                    key,
                    leader: s.leader,
                    leader_epoch: s.leader_epoch,
                    log_start_offset: 0,
                    previous_leader: None,
                    revision: Some(kv.mod_revision),
                })
            }
            None => None,
        })
    }

    /// What a `partitions/` or `coordinators/` key names.
    pub fn leadership_key_of(&self, key: &str) -> Option<LeadershipKey> {
        if let Some(rest) = key.strip_prefix(&self.all_partitions_prefix()) {
            let (topic, p) = rest.rsplit_once('/')?;
            return Some(LeadershipKey::Partition(topic.to_string(), p.parse().ok()?));
        }
        let slot = key.strip_prefix(&self.coordinators_prefix())?;
        Some(LeadershipKey::CoordinatorSlot(slot.parse().ok()?))
    }

    fn partitions_taken_key(&self, broker: i32) -> String {
        format!("{}leaderships/{broker}", self.root)
    }

    /// The revision of the last leadership change that took a partition away
    /// from `broker` (0: none yet), read linearizably. A broker that has
    /// applied every leadership record up to it knows which partitions it
    /// still leads (the intake acknowledgement check, docs/intake-objects.md).
    pub async fn partitions_taken_revision(&self, broker: i32) -> Result<i64, MetadataError> {
        let key = self.partitions_taken_key(broker);
        Ok(self
            .kv
            .get_prefix(&key)
            .await?
            .into_iter()
            .find(|kv| kv.key == key)
            .map_or(0, |kv| kv.mod_revision))
    }

    /// Writes leadership changes, each conditioned on the record being
    /// unchanged since it was read (its `revision`) and on `fence` still being
    /// the controller. Each change names the broker that led before (`from`);
    /// the same transaction marks that a partition was taken from it.
    /// Returns how many were applied; a chunk that lost a race is skipped (the
    /// controller re-reads and plans again).
    pub async fn apply_leadership(
        &self,
        fence: ControllerFence,
        changes: &[(LeadershipEntry, Option<i32>)],
    ) -> Result<usize, MetadataError> {
        let controller = Compare::ModRevision(self.controller_key(), fence.0);
        let mut applied = 0;
        // Each chunk writes its records and at most as many markers.
        for chunk in changes.chunks(MAX_TXN_OPS / 2) {
            let mut compares = vec![controller.clone()];
            let mut writes = Vec::with_capacity(chunk.len());
            let mut taken_from = std::collections::BTreeSet::new();
            for (entry, from) in chunk {
                if let (LeadershipKey::Partition(..), Some(b)) = (&entry.key, from) {
                    if entry.leader != Some(*b) {
                        taken_from.insert(*b);
                    }
                }
                let key = self.leadership_key(&entry.key);
                compares.push(match entry.revision {
                    Some(r) => Compare::ModRevision(key.clone(), r),
                    None => Compare::Absent(key.clone()),
                });
                let value = match entry.key {
                    LeadershipKey::Partition(..) => encode(&PartitionState {
                        leader: entry.leader,
                        leader_epoch: entry.leader_epoch,
                        log_start_offset: entry.log_start_offset,
                        previous_leader: entry.previous_leader,
                    }),
                    LeadershipKey::CoordinatorSlot(_) => encode(&CoordinatorState {
                        leader: entry.leader,
                        leader_epoch: entry.leader_epoch,
                    }),
                };
                writes.push(Write::Put(key, value));
            }
            for b in taken_from {
                writes.push(Write::Put(self.partitions_taken_key(b), Vec::new()));
            }
            if self.kv.txn(compares, writes).await? {
                applied += chunk.len();
            }
        }
        Ok(applied)
    }
}
