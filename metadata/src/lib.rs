//! Kafscale cluster metadata: topics and per-partition state, kept in etcd in
//! production and in an embedded file store in dev mode.
//!
//! Key layout under `/kafscale/{cluster_id}/` (values are JSON):
//!
//! | key | value |
//! |-----|-------|
//! | `topics/{name}` | [`TopicRecord`] |
//! | `partitions/{name}/{partition}` | [`PartitionState`] |
//! | `producer-ids` | [`ProducerIdBlock`]: the next unallocated producer id |
//! | `handovers/{name}/{partition}` | [`Handover`]: the previous leader finished its last upload |
//! | `topic-deletions/{name}/{broker}` | the topic id: this broker stopped writing the topic being deleted |
//! | `group-index/{group}` | empty: the group exists |
//! | `groups/{group}/metadata` | [`GroupRecord`]: generation, protocol, members, assignments |
//! | `groups/{group}/offsets/{topic}/{partition}` | [`CommittedOffset`] |
//! | `acls/{type}/{pattern}/{name}/{principal}/{host}/{operation}/{permission}` | [`AclRecord`] |
//! | `users/scram/{user}/{mechanism}` | [`ScramCredentialRecord`]: salt, iterations, StoredKey, ServerKey |
//! | `brokers/`, `controller`, `coordinators/` | see [`cluster`] |
//!
//! Group ids may contain any character, so they are escaped in keys
//! (`%` → `%25`, `/` → `%2F`).
//!
//! Writes that can race go through compare-and-swap transactions.

pub mod acls;
pub mod cluster;
pub mod etcd;
pub mod kv;
pub mod scram;
pub mod topic_rules;
pub mod users;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::broadcast;
use uuid::Uuid;

pub use acls::AclRecord;
pub use cluster::{
    BrokerRecord, ControllerFence, ControllerRecord, CoordinatorState, Endpoint, LeadershipEntry,
    LeadershipKey,
};
pub use kv::{Compare, FileKv, HistoryCompaction, KeyValue, KvBackend, WatchEvent, Write};
pub use users::{CredentialChange, ScramCredentialRecord};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MetadataError {
    /// The store could not be reached or did not answer in time; retry later.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("metadata store error: {0}")]
    Store(String),
    /// A write conditioned on this broker's leadership found it gone.
    #[error("{0}")]
    Fenced(String),
    #[error("metadata record {key} is malformed: {reason}")]
    Corrupt { key: String, reason: String },
}

/// A topic as stored in `topics/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    /// Random at creation: a re-created topic of the same name gets a new id.
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    pub created_ms: i64,
    /// Set by a deletion request (DeleteTopics or the operator's finalizer).
    /// Clients no longer see the topic; its name stays taken until every
    /// broker has stopped writing it and its objects are gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    /// Who may still be writing the topic when its deletion was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<TopicDeletion>,
}

/// A deletion in progress (see `topic_deletion` in the broker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDeletion {
    pub requested_ms: i64,
    /// The brokers registered at that moment: each must confirm that it
    /// stopped writing the topic, or be gone long enough that none of its
    /// uploads can still land.
    pub brokers: Vec<i32>,
    /// The one broker that makes the final sweep and removes the record:
    /// a second one sweeping after the record is gone could delete the
    /// objects of a topic re-created under the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finisher: Option<i32>,
}

/// Per-partition state in `partitions/{name}/{partition}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The broker leading the partition; none until the controller assigns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub log_start_offset: i64,
    /// Who led before the last move: the new leader waits for its hand-over
    /// (`handovers/`) before reading the log end, while it is alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_leader: Option<i32>,
}

/// `handovers/{topic}/{partition}`: a leader that lost the partition has
/// finished its last upload and will not write it at `epoch` again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub broker: i32,
    pub epoch: i32,
}

/// A consumer group member as persisted after each completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// The member's metadata for each protocol it supports, in its order.
    #[serde(with = "stored_bytes::pairs")]
    pub protocols: Vec<(String, Vec<u8>)>,
    #[serde(with = "stored_bytes::one")]
    pub assignment: Vec<u8>,
}

/// Bytes in JSON records as base64 strings (a third larger than the bytes;
/// a list of numbers is about four times larger). Records written as lists
/// of numbers by earlier versions still read.
mod stored_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Numbers(Vec<u8>),
    }

    fn decode<E: serde::de::Error>(value: Either) -> Result<Vec<u8>, E> {
        match value {
            Either::Text(text) => STANDARD.decode(text).map_err(E::custom),
            Either::Numbers(bytes) => Ok(bytes),
        }
    }

    pub mod one {
        use super::*;

        pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&STANDARD.encode(bytes))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            decode(Either::deserialize(d)?)
        }
    }

    pub mod pairs {
        use super::*;
        use serde::ser::SerializeSeq;

        pub fn serialize<S: Serializer>(
            pairs: &[(String, Vec<u8>)],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(pairs.len()))?;
            for (name, bytes) in pairs {
                seq.serialize_element(&(name, STANDARD.encode(bytes)))?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
            Vec::<(String, Either)>::deserialize(d)?
                .into_iter()
                .map(|(name, value)| Ok((name, decode(value)?)))
                .collect()
        }
    }
}

/// A consumer group's state in `groups/{group}/metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberRecord>,
    /// When (Unix ms) the group last became empty, if it is: its committed
    /// offsets expire `offsets.retention.minutes` after that, as in Kafka.
    /// Records written before this field read as none (offsets then expire
    /// by their own commit times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emptied_at_ms: Option<i64>,
}

/// A committed offset in `groups/{group}/offsets/{topic}/{partition}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

/// Everything stored about one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredGroup {
    pub record: Option<GroupRecord>,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Its `group-index/` entry, if one is stored.
    pub index: Option<GroupIndexEntry>,
}

/// A group's `group-index/{group}` entry: enough for ListGroups to answer
/// without loading the group. Rewritten only when one of its fields
/// changes, never per commit. (Earlier versions stored an empty value,
/// which reads as the default.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupIndexEntry {
    #[serde(default)]
    pub protocol_type: Option<String>,
    /// Whether the stored record has members (the group loads as Stable).
    #[serde(default)]
    pub has_members: bool,
}

impl GroupIndexEntry {
    fn decode(value: &[u8]) -> Self {
        serde_json::from_slice(value).unwrap_or_default()
    }
}

/// etcd's default limit on operations in one transaction is 128.
const MAX_TXN_OPS: usize = 100;

fn escape_group(group: &str) -> String {
    group.replace('%', "%25").replace('/', "%2F")
}

fn unescape_group(key: &str) -> String {
    key.replace("%2F", "/").replace("%25", "%")
}

/// A partition's recovery-generation counter in `generations/{topic}/{p}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationCounter {
    pub last: u64,
}

/// How far a partition's intake parts are compacted, in `compacted/{topic}/{p}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactedOffset {
    pub last_offset: i64,
    /// The topic (by id) whose partition this is: a point recorded for a
    /// deleted topic never applies to a re-created one of the same name.
    /// Absent in records of older versions, which are taken as the current
    /// topic's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<Uuid>,
}

/// The producer-id counter in `producer-ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub next: i64,
}

/// Typed access to the metadata key space of one cluster.
#[derive(Clone)]
pub struct MetadataStore {
    kv: Arc<dyn KvBackend>,
    root: String,
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T, MetadataError> {
    serde_json::from_slice(&kv.value).map_err(|e| MetadataError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

/// A conditional write's outcome: refused means leadership moved.
fn fenced(applied: bool) -> Result<(), MetadataError> {
    if applied {
        Ok(())
    } else {
        Err(MetadataError::Fenced(
            "this broker no longer coordinates the group; find the coordinator again and retry"
                .into(),
        ))
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl MetadataStore {
    pub fn new(kv: Arc<dyn KvBackend>, cluster_id: &str) -> Self {
        Self {
            kv,
            root: format!("/kafscale/{cluster_id}/"),
        }
    }

    pub fn describe(&self) -> String {
        self.kv.describe()
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<i64, MetadataError> {
        self.kv.revision().await
    }

    /// Drops history before `revision` (see [`KvBackend::compact_history`]).
    pub async fn compact_history(&self, revision: i64) -> Result<HistoryCompaction, MetadataError> {
        self.kv.compact_history(revision).await
    }

    /// Whether the store refuses writes for lack of space.
    pub async fn out_of_space(&self) -> Result<bool, MetadataError> {
        self.kv.out_of_space().await
    }

    /// What the store's data and history take (see [`KvBackend::history_bytes`]).
    pub async fn history_bytes(&self) -> Result<Option<u64>, MetadataError> {
        self.kv.history_bytes().await
    }

    /// A cheap read that succeeds when the store is reachable.
    pub async fn ping(&self) -> Result<(), MetadataError> {
        self.kv
            .get_prefix(&format!("{}ping", self.root))
            .await
            .map(|_| ())
    }

    pub fn topics_prefix(&self) -> String {
        format!("{}topics/", self.root)
    }

    fn topic_key(&self, name: &str) -> String {
        format!("{}topics/{name}", self.root)
    }

    fn partitions_prefix(&self, topic: &str) -> String {
        format!("{}partitions/{topic}/", self.root)
    }

    /// Parses a `topics/` watch or read entry.
    pub fn parse_topic(&self, kv: &KeyValue) -> Result<TopicRecord, MetadataError> {
        decode(kv)
    }

    /// Topic name of a `topics/{name}` key.
    pub fn topic_name_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.topics_prefix())
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicRecord>, MetadataError> {
        self.decode_all(&self.topics_prefix()).await
    }

    /// Every value under `prefix`, decoded.
    async fn decode_all<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, MetadataError> {
        self.kv
            .get_prefix(prefix)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// The one entry stored at exactly `key`.
    async fn get_key(&self, key: &str) -> Result<Option<KeyValue>, MetadataError> {
        Ok(self
            .kv
            .get_prefix(key)
            .await?
            .into_iter()
            .find(|kv| kv.key == key))
    }

    /// Creates the topic and its partition states in one transaction that fails
    /// if the topic exists.
    pub async fn create_topic(&self, topic: &TopicRecord) -> Result<(), MetadataError> {
        let key = self.topic_key(&topic.name);
        let created = self
            .kv
            .txn(
                vec![Compare::Absent(key.clone())],
                vec![Write::Put(key, encode(topic))],
            )
            .await?;
        if !created {
            return Err(MetadataError::TopicExists(topic.name.clone()));
        }
        self.add_partition_states(&topic.name, 0, topic.partitions)
            .await
    }

    /// Writes default states for partitions `from..to`, never overwriting an
    /// existing one, in transactions small enough for etcd's operation limit.
    /// A missing state reads as the default, so a crash part-way leaves
    /// nothing wrong behind.
    async fn add_partition_states(
        &self,
        topic: &str,
        from: i32,
        to: i32,
    ) -> Result<(), MetadataError> {
        let parts = self.partitions_prefix(topic);
        let keys: Vec<String> = (from..to).map(|p| format!("{parts}{p}")).collect();
        for chunk in keys.chunks(MAX_TXN_OPS / 2) {
            let compares = chunk.iter().map(|k| Compare::Absent(k.clone())).collect();
            let writes = chunk
                .iter()
                .map(|k| Write::Put(k.clone(), encode(&PartitionState::default())))
                .collect();
            if !self.kv.txn(compares, writes).await? {
                // Some already exist: add the others one by one.
                for k in chunk {
                    self.kv
                        .txn(
                            vec![Compare::Absent(k.clone())],
                            vec![Write::Put(k.clone(), encode(&PartitionState::default()))],
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Makes `broker` the one that finishes the deletion of `topic` (by id),
    /// unless another broker holds that role and `may_take_over` says it
    /// cannot be replaced (it is alive). True when `broker` holds it.
    pub async fn claim_topic_deletion(
        &self,
        topic: &TopicRecord,
        broker: i32,
        may_take_over: impl Fn(i32) -> bool,
    ) -> Result<bool, MetadataError> {
        loop {
            let Some((mut record, revision)) = self.get_topic(&topic.name).await? else {
                return Ok(false);
            };
            if record.id != topic.id || !record.deleting {
                return Ok(false);
            }
            // Marked by an older version, without the deletion's details.
            let deletion = record.deletion.get_or_insert(TopicDeletion {
                requested_ms: 0,
                brokers: Vec::new(),
                finisher: None,
            });
            match deletion.finisher {
                Some(b) if b == broker => return Ok(true),
                Some(b) if !may_take_over(b) => return Ok(false),
                _ => deletion.finisher = Some(broker),
            }
            let partitions = record.partitions;
            if self.update_topic(&record, revision, partitions).await? {
                return Ok(true);
            }
        }
    }

    /// Deletes the topic, its partition states, its deletion confirmations
    /// and hand-overs (prefix deletes, within etcd's operation limit at any
    /// partition count); false if it did not exist (by id) or, when it is
    /// being deleted, if `finisher` is not the broker finishing it.
    pub async fn delete_topic(
        &self,
        topic: &TopicRecord,
        finisher: Option<i32>,
    ) -> Result<bool, MetadataError> {
        let key = self.topic_key(&topic.name);
        let Some(kv) = self.get_key(&key).await? else {
            return Ok(false);
        };
        let stored: TopicRecord = decode(&kv)?;
        if stored.id != topic.id {
            return Ok(false);
        }
        if let Some(d) = &stored.deletion {
            if d.finisher != finisher {
                return Ok(false);
            }
        }
        self.kv
            .txn(
                vec![Compare::ModRevision(key.clone(), kv.mod_revision)],
                vec![
                    Write::Delete(key),
                    Write::DeletePrefix(self.partitions_prefix(&topic.name)),
                    Write::DeletePrefix(self.deletions_prefix(&topic.name)),
                    Write::DeletePrefix(self.handovers_prefix(&topic.name)),
                    Write::DeletePrefix(self.generations_prefix(&topic.name)),
                    Write::DeletePrefix(self.compacted_prefix(&topic.name)),
                ],
            )
            .await
    }

    fn handovers_prefix(&self, topic: &str) -> String {
        format!("{}handovers/{topic}/", self.root)
    }

    /// Records that `broker` finished its uploads of the partition it led at
    /// `epoch` and will not write it at that epoch again.
    pub async fn record_handover(
        &self,
        topic: &str,
        partition: i32,
        handover: Handover,
    ) -> Result<(), MetadataError> {
        let key = format!("{}{partition}", self.handovers_prefix(topic));
        self.kv
            .txn(Vec::new(), vec![Write::Put(key, encode(&handover))])
            .await
            .map(|_| ())
    }

    /// The last hand-over recorded for the partition.
    pub async fn handover(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Handover>, MetadataError> {
        let key = format!("{}{partition}", self.handovers_prefix(topic));
        self.get_key(&key).await?.as_ref().map(decode).transpose()
    }

    fn deletions_prefix(&self, topic: &str) -> String {
        format!("{}topic-deletions/{topic}/", self.root)
    }

    /// Records that `broker` will never write `topic` (this incarnation of
    /// it, by id) again.
    pub async fn confirm_topic_stopped(
        &self,
        topic: &TopicRecord,
        broker: i32,
    ) -> Result<(), MetadataError> {
        let key = format!("{}{broker}", self.deletions_prefix(&topic.name));
        self.kv
            .txn(
                Vec::new(),
                vec![Write::Put(key, topic.id.to_string().into_bytes())],
            )
            .await
            .map(|_| ())
    }

    /// The brokers that confirmed they stopped writing `topic` (by id).
    pub async fn topic_stopped_brokers(
        &self,
        topic: &TopicRecord,
    ) -> Result<Vec<i32>, MetadataError> {
        let prefix = self.deletions_prefix(&topic.name);
        let id = topic.id.to_string();
        Ok(self
            .kv
            .get_prefix(&prefix)
            .await?
            .iter()
            .filter(|kv| kv.value == id.as_bytes())
            .filter_map(|kv| kv.key.strip_prefix(&prefix)?.parse().ok())
            .collect())
    }

    /// Removes every group's committed offsets of `topic`, as Kafka does when
    /// a topic is deleted.
    pub async fn delete_topic_offsets(&self, topic: &str) -> Result<(), MetadataError> {
        for group in self.list_groups().await? {
            let prefix = format!("{}offsets/{topic}/", self.group_prefix(&group));
            self.kv
                .txn(Vec::new(), vec![Write::DeletePrefix(prefix)])
                .await?;
        }
        Ok(())
    }

    /// One partition's state; the default when it has none stored.
    pub async fn partition_state(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<PartitionState, MetadataError> {
        let key = format!("{}{partition}", self.partitions_prefix(topic));
        match self.get_key(&key).await?.as_ref() {
            Some(kv) => decode(kv),
            None => Ok(PartitionState::default()),
        }
    }

    pub async fn partition_states(
        &self,
        topic: &str,
    ) -> Result<BTreeMap<i32, PartitionState>, MetadataError> {
        let prefix = self.partitions_prefix(topic);
        let mut out = BTreeMap::new();
        for kv in self.kv.get_prefix(&prefix).await? {
            if let Some(Ok(p)) = kv.key.strip_prefix(&prefix).map(str::parse::<i32>) {
                out.insert(p, decode(&kv)?);
            }
        }
        Ok(out)
    }

    /// Reads one topic with the revision a later [`MetadataStore::update_topic`]
    /// must match.
    pub async fn get_topic(&self, name: &str) -> Result<Option<(TopicRecord, i64)>, MetadataError> {
        let key = self.topic_key(name);
        match self.get_key(&key).await?.as_ref() {
            Some(kv) => Ok(Some((decode(kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Replaces a topic record if it is still at `revision`, creating partition
    /// state for partitions it gained. Returns false when someone else changed
    /// it first (the caller re-reads and retries).
    pub async fn update_topic(
        &self,
        topic: &TopicRecord,
        revision: i64,
        old_partitions: i32,
    ) -> Result<bool, MetadataError> {
        let key = self.topic_key(&topic.name);
        let updated = self
            .kv
            .txn(
                vec![Compare::ModRevision(key.clone(), revision)],
                vec![Write::Put(key, encode(topic))],
            )
            .await?;
        if updated && topic.partitions > old_partitions {
            self.add_partition_states(&topic.name, old_partitions, topic.partitions)
                .await?;
        }
        Ok(updated)
    }

    /// Marks a topic for deletion by the brokers (who hold object-storage
    /// access), noting which brokers may still be writing it. Returns the
    /// marked record, or None if the topic does not exist.
    pub async fn request_topic_deletion(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<Option<TopicRecord>, MetadataError> {
        loop {
            let Some((mut record, revision)) = self.get_topic(name).await? else {
                return Ok(None);
            };
            if record.deleting && record.deletion.is_some() {
                return Ok(Some(record));
            }
            let brokers = self.list_brokers().await?.iter().map(|b| b.id).collect();
            record.deleting = true;
            record.deletion = Some(TopicDeletion {
                requested_ms: now_ms,
                brokers,
                finisher: None,
            });
            let partitions = record.partitions;
            if self.update_topic(&record, revision, partitions).await? {
                return Ok(Some(record));
            }
        }
    }

    /// Raises a partition's log start offset (never lowers it); returns the
    /// stored value afterwards.
    pub async fn advance_log_start(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, MetadataError> {
        let key = format!("{}{partition}", self.partitions_prefix(topic));
        loop {
            let (mut state, compare) = match self.get_key(&key).await?.as_ref() {
                Some(kv) => (
                    decode::<PartitionState>(kv)?,
                    Compare::ModRevision(key.clone(), kv.mod_revision),
                ),
                None => (PartitionState::default(), Compare::Absent(key.clone())),
            };
            if state.log_start_offset >= offset {
                return Ok(state.log_start_offset);
            }
            state.log_start_offset = offset;
            if self
                .kv
                .txn(vec![compare], vec![Write::Put(key.clone(), encode(&state))])
                .await?
            {
                return Ok(offset);
            }
        }
    }

    fn generations_prefix(&self, topic: &str) -> String {
        format!("{}generations/{topic}/", self.root)
    }

    /// Takes the partition's next recovery generation: every recovery of a
    /// partition, by any broker at any epoch, gets a greater one than all
    /// before it (intake parts of a later generation override earlier ones;
    /// see docs/intake-objects.md).
    pub async fn next_generation(&self, topic: &str, partition: i32) -> Result<u64, MetadataError> {
        let key = format!("{}{partition}", self.generations_prefix(topic));
        loop {
            let (counter, compare) = match self.get_key(&key).await?.as_ref() {
                Some(kv) => (
                    decode::<GenerationCounter>(kv)?,
                    Compare::ModRevision(key.clone(), kv.mod_revision),
                ),
                None => (GenerationCounter { last: 0 }, Compare::Absent(key.clone())),
            };
            let next = GenerationCounter {
                last: counter.last.saturating_add(1),
            };
            if self
                .kv
                .txn(vec![compare], vec![Write::Put(key.clone(), encode(&next))])
                .await?
            {
                return Ok(next.last);
            }
        }
    }

    fn compacted_prefix(&self, topic: &str) -> String {
        format!("{}compacted/{topic}/", self.root)
    }

    /// Records that the partition's intake parts are compacted into
    /// segments through `last_offset`; never lowers what is recorded for
    /// the same topic. Written only while the topic `topic_id` is the live
    /// one (conditioned on its record): a late step of a deleted topic
    /// writes nothing. Returns whether the point is recorded.
    pub async fn record_compacted(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        last_offset: i64,
    ) -> Result<bool, MetadataError> {
        let key = format!("{}{partition}", self.compacted_prefix(topic));
        loop {
            let topic_key = self.topic_key(topic);
            let live = match self.get_key(&topic_key).await?.as_ref() {
                Some(kv) => {
                    let record: TopicRecord = decode(kv)?;
                    (record.id == topic_id && !record.deleting)
                        .then(|| Compare::ModRevision(topic_key.clone(), kv.mod_revision))
                }
                None => None,
            };
            let Some(live) = live else {
                return Ok(false);
            };
            let compare = match self.get_key(&key).await?.as_ref() {
                Some(kv) => {
                    let stored = decode::<CompactedOffset>(kv)?;
                    let same_topic = stored.topic_id.is_none_or(|id| id == topic_id);
                    if same_topic && stored.last_offset >= last_offset {
                        return Ok(true);
                    }
                    Compare::ModRevision(key.clone(), kv.mod_revision)
                }
                None => Compare::Absent(key.clone()),
            };
            let value = encode(&CompactedOffset {
                last_offset,
                topic_id: Some(topic_id),
            });
            if self
                .kv
                .txn(vec![live, compare], vec![Write::Put(key.clone(), value)])
                .await?
            {
                return Ok(true);
            }
        }
    }

    /// Every recorded compaction point: (topic, partition, the point).
    pub async fn compacted_offsets(
        &self,
    ) -> Result<Vec<(String, i32, CompactedOffset)>, MetadataError> {
        let prefix = format!("{}compacted/", self.root);
        let mut out = Vec::new();
        for kv in self.kv.get_prefix(&prefix).await? {
            let Some((topic, partition)) = kv
                .key
                .strip_prefix(&prefix)
                .and_then(|rest| rest.rsplit_once('/'))
            else {
                continue;
            };
            let Ok(partition) = partition.parse::<i32>() else {
                continue;
            };
            out.push((topic.to_string(), partition, decode(&kv)?));
        }
        Ok(out)
    }

    /// Reserves `count` producer ids for this broker; ids are never handed out
    /// twice, across brokers and restarts.
    pub async fn allocate_producer_ids(
        &self,
        count: i64,
    ) -> Result<std::ops::Range<i64>, MetadataError> {
        let key = format!("{}producer-ids", self.root);
        loop {
            let (block, compare) = match self.get_key(&key).await?.as_ref() {
                Some(kv) => (
                    decode::<ProducerIdBlock>(kv)?,
                    Compare::ModRevision(key.clone(), kv.mod_revision),
                ),
                None => (ProducerIdBlock { next: 0 }, Compare::Absent(key.clone())),
            };
            let next = ProducerIdBlock {
                next: block.next + count,
            };
            if self
                .kv
                .txn(vec![compare], vec![Write::Put(key.clone(), encode(&next))])
                .await?
            {
                return Ok(block.next..next.next);
            }
        }
    }

    fn group_prefix(&self, group: &str) -> String {
        format!("{}groups/{}/", self.root, escape_group(group))
    }

    fn offset_key(&self, group: &str, topic: &str, partition: i32) -> String {
        format!("{}offsets/{topic}/{partition}", self.group_prefix(group))
    }

    /// All group ids.
    pub async fn list_groups(&self) -> Result<Vec<String>, MetadataError> {
        Ok(self
            .list_group_index()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// All groups with their index entries, in one read.
    pub async fn list_group_index(&self) -> Result<Vec<(String, GroupIndexEntry)>, MetadataError> {
        let prefix = format!("{}group-index/", self.root);
        Ok(self
            .kv
            .get_prefix(&prefix)
            .await?
            .iter()
            .filter_map(|kv| {
                let id = unescape_group(kv.key.strip_prefix(&prefix)?);
                Some((id, GroupIndexEntry::decode(&kv.value)))
            })
            .collect())
    }

    fn group_index_key(&self, group: &str) -> String {
        format!("{}group-index/{}", self.root, escape_group(group))
    }

    /// A group's record and committed offsets.
    pub async fn load_group(&self, group: &str) -> Result<StoredGroup, MetadataError> {
        let prefix = self.group_prefix(group);
        let offsets_prefix = format!("{prefix}offsets/");
        let mut out = StoredGroup {
            index: self
                .get_key(&self.group_index_key(group))
                .await?
                .map(|kv| GroupIndexEntry::decode(&kv.value)),
            ..StoredGroup::default()
        };
        for kv in self.kv.get_prefix(&prefix).await? {
            if kv.key == format!("{prefix}metadata") {
                out.record = Some(decode(&kv)?);
            } else if let Some(rest) = kv.key.strip_prefix(&offsets_prefix) {
                if let Some((topic, partition)) = rest.rsplit_once('/') {
                    if let Ok(p) = partition.parse::<i32>() {
                        out.offsets.insert((topic.to_string(), p), decode(&kv)?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Stores a group's record (its coordinator is the only writer; `fence`,
    /// if given, makes the write conditional on still being it).
    pub async fn save_group(
        &self,
        group: &str,
        record: &GroupRecord,
        index: Option<&GroupIndexEntry>,
        fence: Option<&Compare>,
    ) -> Result<(), MetadataError> {
        let mut writes = vec![Write::Put(
            format!("{}metadata", self.group_prefix(group)),
            encode(record),
        )];
        if let Some(entry) = index {
            writes.push(Write::Put(self.group_index_key(group), encode(entry)));
        }
        fenced(
            self.kv
                .txn(fence.into_iter().cloned().collect(), writes)
                .await?,
        )
    }

    /// Stores committed offsets, at most `MAX_TXN_OPS` per transaction;
    /// `index`, if given, is written as the group's `group-index/` entry
    /// (needed once per group: every write of it is one more revision in
    /// etcd's history).
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[((String, i32), CommittedOffset)],
        index: Option<&GroupIndexEntry>,
        fence: Option<&Compare>,
    ) -> Result<(), MetadataError> {
        for (i, chunk) in offsets.chunks(MAX_TXN_OPS).enumerate() {
            let mut writes: Vec<Write> = chunk
                .iter()
                .map(|((t, p), o)| Write::Put(self.offset_key(group, t, *p), encode(o)))
                .collect();
            if let (0, Some(entry)) = (i, index) {
                writes.push(Write::Put(self.group_index_key(group), encode(entry)));
            }
            fenced(
                self.kv
                    .txn(fence.into_iter().cloned().collect(), writes)
                    .await?,
            )?;
        }
        Ok(())
    }

    pub async fn delete_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
        fence: Option<&Compare>,
    ) -> Result<(), MetadataError> {
        for chunk in partitions.chunks(MAX_TXN_OPS) {
            let writes = chunk
                .iter()
                .map(|(t, p)| Write::Delete(self.offset_key(group, t, *p)))
                .collect();
            fenced(
                self.kv
                    .txn(fence.into_iter().cloned().collect(), writes)
                    .await?,
            )?;
        }
        Ok(())
    }

    /// Deletes a group with its offsets.
    pub async fn delete_group(
        &self,
        group: &str,
        fence: Option<&Compare>,
    ) -> Result<(), MetadataError> {
        let writes = vec![
            Write::Delete(self.group_index_key(group)),
            Write::DeletePrefix(self.group_prefix(group)),
        ];
        fenced(
            self.kv
                .txn(fence.into_iter().cloned().collect(), writes)
                .await?,
        )
    }

    /// Changes under `topics/`, from now on. On [`WatchEvent::Resync`] re-read
    /// with [`MetadataStore::list_topics`].
    pub fn watch_topics(&self) -> broadcast::Receiver<WatchEvent> {
        self.kv.watch(&self.topics_prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, partitions: i32) -> TopicRecord {
        TopicRecord {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor: 1,
            config: BTreeMap::new(),
            created_ms: 1,
            deleting: false,
            deletion: None,
        }
    }

    #[test]
    fn group_records_store_bytes_compactly_and_read_old_records() {
        let member = MemberRecord {
            member_id: "m".into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocols: vec![("range".into(), vec![255; 3000])],
            assignment: vec![7; 3000],
        };
        let record = GroupRecord {
            generation: 1,
            members: vec![member.clone()],
            ..GroupRecord::default()
        };
        let json = serde_json::to_vec(&record).unwrap();
        // 6,000 bytes of metadata and assignment: base64, not lists of numbers.
        assert!(json.len() < 8_500, "{} bytes", json.len());
        assert_eq!(
            serde_json::from_slice::<GroupRecord>(&json).unwrap(),
            record
        );
        // As earlier versions wrote it.
        let old = r#"{"generation":2,"protocol_type":"consumer","protocol":"range","leader":"m",
            "members":[{"member_id":"m","group_instance_id":null,"client_id":"c",
            "client_host":"/h","session_timeout_ms":1,"rebalance_timeout_ms":2,
            "protocols":[["range",[1,2,3]]],"assignment":[4,5]}]}"#;
        let read: GroupRecord = serde_json::from_str(old).unwrap();
        assert_eq!(
            read.members[0].protocols,
            vec![("range".to_string(), vec![1, 2, 3])]
        );
        assert_eq!(read.members[0].assignment, vec![4, 5]);
    }

    #[tokio::test]
    async fn a_deleted_topics_compaction_point_never_reaches_its_successor() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(
            Arc::new(FileKv::open(dir.path().join("m.json")).unwrap()),
            "c",
        );
        let old = topic("orders", 1);
        store.create_topic(&old).await.unwrap();
        assert!(store
            .record_compacted("orders", old.id, 0, 10)
            .await
            .unwrap());
        assert!(store.delete_topic(&old, None).await.unwrap());
        let new = topic("orders", 1);
        store.create_topic(&new).await.unwrap();
        // A late step of the deleted topic records nothing.
        assert!(!store
            .record_compacted("orders", old.id, 0, 500)
            .await
            .unwrap());
        let points = store.compacted_offsets().await.unwrap();
        assert!(
            points
                .iter()
                .all(|(_, _, p)| p.topic_id != Some(old.id) || p.last_offset < 500),
            "{points:?}"
        );
        // The new topic's own point replaces whatever an older one left,
        // even a higher one.
        assert!(store
            .record_compacted("orders", new.id, 0, 3)
            .await
            .unwrap());
        let points = store.compacted_offsets().await.unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].2.topic_id, Some(new.id));
        assert_eq!(points[0].2.last_offset, 3);
    }

    #[tokio::test]
    async fn file_store_creates_once_watches_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        let store = MetadataStore::new(Arc::new(FileKv::open(&path).unwrap()), "c1");
        let mut events = store.watch_topics();
        let t = topic("orders", 3);
        store.create_topic(&t).await.unwrap();
        assert_eq!(
            store.create_topic(&topic("orders", 1)).await,
            Err(MetadataError::TopicExists("orders".into()))
        );
        match events.recv().await.unwrap() {
            WatchEvent::Put(kv) => assert_eq!(store.parse_topic(&kv).unwrap(), t),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(store.partition_states("orders").await.unwrap().len(), 3);

        // A new process sees the same state.
        let reopened = MetadataStore::new(Arc::new(FileKv::open(&path).unwrap()), "c1");
        assert_eq!(reopened.list_topics().await.unwrap(), vec![t.clone()]);
        // Deleting with a stale id (a re-created topic) does nothing.
        assert!(!reopened
            .delete_topic(&topic("orders", 3), None)
            .await
            .unwrap());
        assert!(reopened.delete_topic(&t, None).await.unwrap());
        assert!(reopened.list_topics().await.unwrap().is_empty());
        assert!(reopened
            .partition_states("orders")
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn updates_are_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(
            Arc::new(FileKv::open(dir.path().join("m.json")).unwrap()),
            "c",
        );
        let mut t = topic("grow", 2);
        store.create_topic(&t).await.unwrap();
        let (_, rev) = store.get_topic("grow").await.unwrap().unwrap();
        t.partitions = 4;
        assert!(store.update_topic(&t, rev, 2).await.unwrap());
        assert!(
            !store.update_topic(&t, rev, 2).await.unwrap(),
            "stale revision must lose"
        );
        assert_eq!(store.partition_states("grow").await.unwrap().len(), 4);

        assert_eq!(store.advance_log_start("grow", 1, 10).await.unwrap(), 10);
        assert_eq!(
            store.advance_log_start("grow", 1, 5).await.unwrap(),
            10,
            "never lowered"
        );
        assert_eq!(
            store.partition_states("grow").await.unwrap()[&1].log_start_offset,
            10
        );

        // More partitions than etcd allows operations in one transaction.
        let big = topic("big", 1000);
        store.create_topic(&big).await.unwrap();
        assert_eq!(store.partition_states("big").await.unwrap().len(), 1000);

        let a = store.allocate_producer_ids(100).await.unwrap();
        let b = store.allocate_producer_ids(100).await.unwrap();
        assert_eq!((a, b), (0..100, 100..200));
    }

    #[tokio::test]
    async fn leased_keys_end_with_their_lease_and_with_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let store = MetadataStore::new(Arc::new(FileKv::open(&path).unwrap()), "c");
        let lease = store
            .grant_lease(std::time::Duration::from_secs(5))
            .await
            .unwrap();
        let me = BrokerRecord {
            id: 1,
            host: "h".into(),
            port: 9092,
            draining: false,
            listeners: Default::default(),
        };
        assert!(store.register_broker(&me, lease).await.unwrap());
        assert!(
            !store.register_broker(&me, lease).await.unwrap(),
            "one live holder per broker id"
        );
        let fence = store
            .campaign(1, lease)
            .await
            .unwrap()
            .expect("first campaign wins");
        assert_eq!(store.campaign(2, lease).await.unwrap(), None);
        assert_eq!(store.controller().await.unwrap(), Some(1));

        // Leadership changes carry the controller's fence.
        let entry = LeadershipEntry {
            key: LeadershipKey::CoordinatorSlot(3),
            leader: None,
            leader_epoch: 0,
            log_start_offset: 0,
            previous_leader: None,
            revision: None,
        };
        assert_eq!(
            store
                .apply_leadership(fence, &[(entry.moved_to(1), entry.leader)])
                .await
                .unwrap(),
            1
        );
        let stored = store.coordinator_leaderships().await.unwrap();
        assert_eq!((stored[0].leader, stored[0].leader_epoch), (Some(1), 1));
        assert_eq!(
            store
                .apply_leadership(fence, &[(entry.moved_to(1), entry.leader)])
                .await
                .unwrap(),
            0,
            "a change based on a stale read is refused"
        );

        // Group writes conditioned on leading the slot fail once it moved.
        let slot = LeadershipKey::CoordinatorSlot(3);
        let current = store.leader_fence(&slot, stored[0].revision.unwrap());
        let stale = store.leader_fence(&slot, stored[0].revision.unwrap() - 1);
        let offset = CommittedOffset {
            offset: 1,
            leader_epoch: 0,
            metadata: None,
            commit_ms: 1,
        };
        let offsets = [(("t".to_string(), 0), offset)];
        store
            .commit_offsets(
                "g",
                &offsets,
                Some(&GroupIndexEntry::default()),
                Some(&current),
            )
            .await
            .unwrap();
        assert!(matches!(
            store
                .commit_offsets(
                    "g",
                    &offsets,
                    Some(&GroupIndexEntry::default()),
                    Some(&stale)
                )
                .await,
            Err(MetadataError::Fenced(_))
        ));
        assert!(matches!(
            store
                .save_group(
                    "g",
                    &GroupRecord::default(),
                    Some(&GroupIndexEntry::default()),
                    Some(&stale)
                )
                .await,
            Err(MetadataError::Fenced(_))
        ));

        // A new process starts without the old one's leased keys.
        let reopened = MetadataStore::new(Arc::new(FileKv::open(&path).unwrap()), "c");
        assert!(reopened.list_brokers().await.unwrap().is_empty());
        assert_eq!(reopened.controller().await.unwrap(), None);
        assert_eq!(reopened.coordinator_leaderships().await.unwrap().len(), 1);

        // Revoking ends the keys at once, and a revoked lease cannot be renewed.
        assert!(store.keep_alive(lease).await.unwrap());
        store.revoke_lease(lease).await.unwrap();
        assert!(!store.keep_alive(lease).await.unwrap());
        assert!(store.list_brokers().await.unwrap().is_empty());
        assert_eq!(
            store
                .apply_leadership(fence, &[(stored[0].moved_to(2), stored[0].leader)])
                .await
                .unwrap(),
            0,
            "a controller whose key is gone changes nothing"
        );
    }

    #[tokio::test]
    async fn groups_offsets_and_escaped_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(
            Arc::new(FileKv::open(dir.path().join("m.json")).unwrap()),
            "c",
        );
        let commit = |o| CommittedOffset {
            offset: o,
            leader_epoch: 0,
            metadata: None,
            commit_ms: 1,
        };
        // "a/b" must not be mistaken for a child of "a".
        store
            .commit_offsets(
                "a",
                &[(("t".into(), 0), commit(5))],
                Some(&GroupIndexEntry::default()),
                None,
            )
            .await
            .unwrap();
        store
            .commit_offsets(
                "a/b",
                &[(("t".into(), 0), commit(9))],
                Some(&GroupIndexEntry::default()),
                None,
            )
            .await
            .unwrap();
        let many: Vec<_> = (0..250)
            .map(|p| (("big".to_string(), p), commit(i64::from(p))))
            .collect();
        store
            .commit_offsets("a", &many, Some(&GroupIndexEntry::default()), None)
            .await
            .unwrap();
        let record = GroupRecord {
            generation: 3,
            ..GroupRecord::default()
        };
        let entry = GroupIndexEntry {
            protocol_type: Some("consumer".into()),
            has_members: true,
        };
        store
            .save_group("a", &record, Some(&entry), None)
            .await
            .unwrap();
        let index = store.list_group_index().await.unwrap();
        assert!(
            index.contains(&("a".to_string(), entry.clone())),
            "{index:?}"
        );
        assert_eq!(store.load_group("a").await.unwrap().index, Some(entry));
        // An entry as earlier versions stored it (empty) reads as the default.
        assert_eq!(GroupIndexEntry::decode(b""), GroupIndexEntry::default());

        let mut groups = store.list_groups().await.unwrap();
        groups.sort();
        assert_eq!(groups, vec!["a", "a/b"]);
        let a = store.load_group("a").await.unwrap();
        assert_eq!(a.record, Some(record));
        assert_eq!(a.offsets.len(), 251);
        assert_eq!(a.offsets[&("t".to_string(), 0)].offset, 5);
        assert_eq!(
            store.load_group("a/b").await.unwrap().offsets[&("t".to_string(), 0)].offset,
            9
        );

        store
            .delete_offsets("a", &[("t".into(), 0)], None)
            .await
            .unwrap();
        assert_eq!(store.load_group("a").await.unwrap().offsets.len(), 250);
        store.delete_group("a", None).await.unwrap();
        assert_eq!(store.list_groups().await.unwrap(), vec!["a/b"]);
        assert_eq!(store.load_group("a").await.unwrap(), StoredGroup::default());
    }
}
