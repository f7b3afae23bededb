//! One consumer group's membership state machine (Kafka's classic protocol).
//!
//! ```text
//!            join                       all members rejoined
//!  Empty ───────────► PreparingRebalance ──────────────────► CompletingRebalance
//!    ▲                   ▲        ▲  (or rebalance timeout)          │ leader's SyncGroup
//!    │ last member       │ join / │ leave / session expiry           ▼
//!    └── leaves ─────────┴────────┴──────────────────────────────── Stable
//! ```
//!
//! Pure logic: no I/O and no clocks of its own (`now` is passed in), so every
//! transition is unit-tested. Replies to waiting JoinGroup/SyncGroup requests go
//! out through oneshot channels; persistence is the coordinator's job.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafscale_metadata::{GroupRecord, MemberRecord};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka's tools display and filter on.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// Kafka error codes the group logic answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    FencedInstanceId,
    MemberIdRequired,
    InvalidSessionTimeout,
    /// A new member would take the group past `group.max.size`.
    GroupMaxSizeReached,
    /// The group's state (members' metadata and assignments) would outgrow
    /// what one group may store (`GroupSettings::max_state_bytes`).
    GroupStateTooLarge,
    /// The groups this broker coordinates hold all the memory they may
    /// (`GroupSettings::memory_bytes`); retriable, once others shrink.
    GroupMemoryFull,
}

impl GroupError {
    pub fn code(self) -> i16 {
        use kafka_protocol::error::ResponseError as E;
        match self {
            GroupError::UnknownMemberId => E::UnknownMemberId,
            GroupError::IllegalGeneration => E::IllegalGeneration,
            GroupError::RebalanceInProgress => E::RebalanceInProgress,
            GroupError::InconsistentGroupProtocol => E::InconsistentGroupProtocol,
            GroupError::FencedInstanceId => E::FencedInstanceId,
            GroupError::MemberIdRequired => E::MemberIdRequired,
            GroupError::InvalidSessionTimeout => E::InvalidSessionTimeout,
            GroupError::GroupMaxSizeReached => E::GroupMaxSizeReached,
            // Kafka refuses a group record over the offsets topic's message
            // size; MESSAGE_TOO_LARGE says which kind of limit was hit.
            GroupError::GroupStateTooLarge => E::MessageTooLarge,
            // Retriable everywhere: the client looks the coordinator up again
            // and retries, as after a coordinator move.
            GroupError::GroupMemoryFull => E::CoordinatorNotAvailable,
        }
        .code()
    }
}

/// What a JoinGroup caller eventually receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<GroupError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub fn error(member_id: &str, error: GroupError) -> Self {
        Self {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

pub type SyncResult = Result<Bytes, GroupError>;

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat: Instant,
    joined_order: u64,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn stored_bytes(&self) -> usize {
        stored_member_bytes(
            &self.id,
            self.instance_id.as_deref(),
            &self.client_id,
            &self.client_host,
            &self.protocols,
            self.assignment.len(),
        )
    }

    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A JoinGroup request as the state machine sees it.
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new dynamic member must first ask for a member id.
    pub require_known_member_id: bool,
}

/// Settings shared by all groups.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// Like Kafka's group.initial.rebalance.delay.ms.
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// Members (joined or given an id to join with) per group, like Kafka's
    /// group.max.size.
    pub max_size: usize,
    /// Rebalance timeouts asked for are cut to this.
    pub max_rebalance_timeout: Duration,
    /// The most a group's state may take in the metadata store (estimated
    /// with [`Group::state_bytes`]); Kafka's group record has to fit one
    /// message of its offsets topic (1 MiB by default).
    pub max_state_bytes: usize,
    /// Kafka's offset.metadata.max.bytes: longer commit metadata is refused
    /// with OFFSET_METADATA_TOO_LARGE.
    pub offset_metadata_max_bytes: usize,
    /// Kafka's offsets.retention.minutes: how long committed offsets outlive
    /// an emptied group (or, for offsets-only groups, their commit).
    pub offsets_retention: Duration,
    /// Kafka's offsets.retention.check.interval.ms.
    pub offsets_retention_check_interval: Duration,
    /// What all groups of one broker may hold in memory (members' metadata
    /// and assignments, as [`Group::state_bytes`] counts them): joins and
    /// assignments that would grow past it are refused, retriably.
    pub memory_bytes: usize,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            initial_rebalance_delay: Duration::from_millis(3000),
            min_session_timeout: Duration::from_millis(6000),
            max_session_timeout: Duration::from_millis(1_800_000),
            max_size: 1000,
            max_rebalance_timeout: Duration::from_millis(1_800_000),
            max_state_bytes: 1024 * 1024,
            offset_metadata_max_bytes: 4096,
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            offsets_retention_check_interval: Duration::from_secs(600),
            memory_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The longest client id that goes into a member id (Kafka builds member ids
/// from the client id, which a header may make 32 KiB long).
const MEMBER_ID_CLIENT_ID_CHARS: usize = 128;

/// A member id for a client: its (shortened) client id and a unique suffix.
pub fn member_id_for(client_id: &str) -> String {
    let short: String = client_id.chars().take(MEMBER_ID_CLIENT_ID_CHARS).collect();
    format!("{short}-{}", uuid::Uuid::new_v4())
}

/// What one member adds to the stored group record, conservatively: bytes
/// fields are written base64 (4/3) and every member carries some framing.
fn stored_member_bytes(
    id: &str,
    instance: Option<&str>,
    client_id: &str,
    client_host: &str,
    protocols: &[(String, Bytes)],
    assignment: usize,
) -> usize {
    let protocols: usize = protocols
        .iter()
        .map(|(name, meta)| name.len() + meta.len() * 4 / 3 + 16)
        .sum();
    id.len()
        + instance.map_or(0, str::len)
        + client_id.len()
        + client_host.len()
        + protocols
        + assignment * 4 / 3
        + 192
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    /// Ids handed out with MEMBER_ID_REQUIRED, until the member joins with
    /// it or its session timeout passes (then it is forgotten, as in Kafka).
    pending_members: HashMap<String, Instant>,
    /// Since when `tick` has seen the group empty with nobody pending.
    empty_since: Option<Instant>,
    /// When (Unix ms) the group last became empty, persisted: committed
    /// offsets expire a retention period after it (Kafka's
    /// `currentStateTimestamp` of an Empty group).
    pub emptied_at_ms: Option<i64>,
    rebalance_deadline: Option<Instant>,
    /// For a group's first rebalance: wait at least until then for more members.
    initial_delay_until: Option<Instant>,
    next_join_order: u64,
    /// Set whenever something worth persisting changed.
    pub dirty: bool,
    /// How much more the group may grow in memory, broker-wide (the
    /// coordinator sets it before each change; unlimited by default).
    pub memory_room: usize,
}

impl Group {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: HashMap::new(),
            empty_since: None,
            emptied_at_ms: None,
            rebalance_deadline: None,
            initial_delay_until: None,
            next_join_order: 0,
            dirty: false,
            memory_room: usize::MAX,
        }
    }

    /// Restores a persisted group. Its members keep their assignment and may
    /// go on heartbeating; their session timers start now.
    pub fn restore(id: &str, record: &GroupRecord, now: Instant) -> Self {
        let mut g = Self::new(id);
        g.generation = record.generation;
        g.protocol_type = record.protocol_type.clone();
        g.protocol = record.protocol.clone();
        g.leader = record.leader.clone();
        g.emptied_at_ms = record.emptied_at_ms;
        for (i, m) in record.members.iter().enumerate() {
            g.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id.clone(),
                    instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                    protocol_type: record.protocol_type.clone().unwrap_or_default(),
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, b)| (n.clone(), Bytes::from(b.clone())))
                        .collect(),
                    assignment: Bytes::from(m.assignment.clone()),
                    last_heartbeat: now,
                    joined_order: i as u64,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        g.next_join_order = record.members.len() as u64;
        g.state = if g.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        g
    }

    /// What the group's `group-index/` entry says about it.
    pub fn index_entry(&self) -> kafscale_metadata::GroupIndexEntry {
        kafscale_metadata::GroupIndexEntry {
            protocol_type: self.protocol_type.clone(),
            has_members: !self.members.is_empty(),
        }
    }

    pub fn to_record(&self) -> GroupRecord {
        GroupRecord {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberRecord {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, b)| (n.clone(), b.to_vec()))
                        .collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
            emptied_at_ms: self.emptied_at_ms,
        }
    }

    /// Notes when (Unix ms) a group with a protocol became empty, and that it
    /// is worth persisting; forgets it once the group has members again. (A
    /// group used only for offsets has no such time: its offsets expire by
    /// their commit times.)
    pub fn track_emptied(&mut self, now_ms: i64) {
        let empty = self.state == GroupState::Empty && self.members.is_empty();
        if self.protocol_type.is_none() || !empty {
            self.emptied_at_ms = None;
        } else if self.emptied_at_ms.is_none() {
            self.emptied_at_ms = Some(now_ms);
            self.dirty = true;
        }
    }

    /// The topics a stable consumer group's members subscribe to, read from
    /// their metadata for the chosen protocol; none when the group is not a
    /// consumer group or a member's subscription cannot be read.
    pub fn subscribed_topics(&self) -> Option<std::collections::BTreeSet<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = std::collections::BTreeSet::new();
        for m in self.members.values() {
            let mut metadata = m.metadata_for(protocol);
            if metadata.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]);
            bytes::Buf::advance(&mut metadata, 2);
            if version < 0 {
                return None;
            }
            // Newer versions only add fields at the end: read them as the
            // newest known, as Kafka's consumer protocol does.
            let subscription =
                ConsumerProtocolSubscription::decode(&mut metadata, version.min(3)).ok()?;
            topics.extend(subscription.topics.iter().map(|t| t.to_string()));
        }
        Some(topics)
    }

    fn instance_owner(&self, instance_id: &str) -> Option<&str> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
            .map(|m| m.id.as_str())
    }

    /// Checks that `member_id` (and its static instance id, if given) is a
    /// current member.
    pub fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            match self.instance_owner(instance) {
                Some(owner) if owner != member_id => return Err(GroupError::FencedInstanceId),
                _ => {}
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(GroupError::UnknownMemberId)
        }
    }

    /// Handles a JoinGroup. The receiver resolves when the caller has its
    /// answer: at once for errors and MEMBER_ID_REQUIRED, else when the
    /// rebalance completes.
    pub fn join(
        &mut self,
        req: JoinRequest,
        new_member_id: impl FnOnce() -> String,
        settings: &GroupSettings,
        now: Instant,
    ) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let reply_now = |tx: oneshot::Sender<JoinResult>, r: JoinResult| {
            let _ = tx.send(r);
        };
        if req.session_timeout < settings.min_session_timeout
            || req.session_timeout > settings.max_session_timeout
        {
            reply_now(
                tx,
                JoinResult::error(&req.member_id, GroupError::InvalidSessionTimeout),
            );
            return rx;
        }
        let mut req = req;
        req.rebalance_timeout = req.rebalance_timeout.min(settings.max_rebalance_timeout);
        if req.protocols.is_empty()
            || (!self.members.is_empty()
                && self.protocol_type.as_deref() != Some(req.protocol_type.as_str()))
            || !self.supports_any(&req.protocols)
        {
            reply_now(
                tx,
                JoinResult::error(&req.member_id, GroupError::InconsistentGroupProtocol),
            );
            return rx;
        }

        if let Err(e) = self.admits(&req, settings) {
            reply_now(tx, JoinResult::error(&req.member_id, e));
            return rx;
        }
        let member_id = if req.member_id.is_empty() {
            match req
                .instance_id
                .as_deref()
                .and_then(|i| self.instance_owner(i))
            {
                // A restarted static member takes over its old identity's place.
                Some(old) => {
                    let old = old.to_string();
                    return self.replace_static_member(&old, req, new_member_id(), tx, rx, now);
                }
                None => {
                    let id = new_member_id();
                    if req.require_known_member_id && req.instance_id.is_none() {
                        self.pending_members
                            .insert(id.clone(), now + req.session_timeout);
                        reply_now(tx, JoinResult::error(&id, GroupError::MemberIdRequired));
                        return rx;
                    }
                    id
                }
            }
        } else {
            if let Some(instance) = req.instance_id.as_deref() {
                if let Some(owner) = self.instance_owner(instance) {
                    if owner != req.member_id {
                        reply_now(
                            tx,
                            JoinResult::error(&req.member_id, GroupError::FencedInstanceId),
                        );
                        return rx;
                    }
                }
            }
            if !self.members.contains_key(&req.member_id)
                && self.pending_members.remove(&req.member_id).is_none()
            {
                reply_now(
                    tx,
                    JoinResult::error(&req.member_id, GroupError::UnknownMemberId),
                );
                return rx;
            }
            req.member_id.clone()
        };

        let is_new = !self.members.contains_key(&member_id);
        let protocols_changed = self
            .members
            .get(&member_id)
            .is_some_and(|m| m.protocols != req.protocols);
        let order = self.next_join_order;
        self.next_join_order += 1;
        let member = self
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                id: member_id.clone(),
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocol_type: req.protocol_type.clone(),
                protocols: req.protocols.clone(),
                assignment: Bytes::new(),
                last_heartbeat: now,
                joined_order: order,
                join_waiter: None,
                sync_waiter: None,
            });
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.protocols = req.protocols;
        member.last_heartbeat = now;
        if let Some(old) = member.join_waiter.replace(tx) {
            let _ = old.send(JoinResult::error(
                &member_id,
                GroupError::RebalanceInProgress,
            ));
        }
        if self.protocol_type.is_none() {
            self.protocol_type = Some(req.protocol_type);
        }

        match self.state {
            GroupState::Empty => {
                self.initial_delay_until = Some(now + settings.initial_rebalance_delay);
                self.prepare_rebalance(now);
            }
            GroupState::PreparingRebalance => {
                if is_new {
                    if let Some(until) = self.initial_delay_until.as_mut() {
                        // A new group waits a little longer for each newcomer.
                        *until = (*until).max(now + settings.initial_rebalance_delay);
                    }
                }
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let is_leader = self.leader.as_deref() == Some(member_id.as_str());
                if is_new
                    || protocols_changed
                    || is_leader
                    || self.state == GroupState::CompletingRebalance
                {
                    self.prepare_rebalance(now);
                } else {
                    // A follower rejoining with unchanged metadata: answer with the
                    // current generation, no rebalance (as Kafka does).
                    let result = self.join_result_for(&member_id);
                    if let Some(m) = self.members.get_mut(&member_id) {
                        if let Some(w) = m.join_waiter.take() {
                            let _ = w.send(result);
                        }
                    }
                }
            }
        }
        self.try_complete_rebalance(now);
        rx
    }

    /// Whether the group has room for `req`: a member it does not know yet
    /// must fit under `group.max.size` (pending ids count, as they hold a
    /// place), and the stored state with the joiner's metadata (replacing its
    /// earlier metadata) must fit `max_state_bytes`.
    fn admits(&self, req: &JoinRequest, settings: &GroupSettings) -> Result<(), GroupError> {
        let known = !req.member_id.is_empty()
            && (self.members.contains_key(&req.member_id)
                || self.pending_members.contains_key(&req.member_id));
        let static_return = req
            .instance_id
            .as_deref()
            .is_some_and(|i| self.instance_owner(i).is_some());
        if !known
            && !static_return
            && self.members.len() + self.pending_members.len() >= settings.max_size
        {
            return Err(GroupError::GroupMaxSizeReached);
        }
        let replaced = self
            .members
            .get(&req.member_id)
            .or_else(|| {
                let i = req.instance_id.as_deref()?;
                self.members.get(self.instance_owner(i)?)
            })
            .map_or(0, Member::stored_bytes);
        let joiner = stored_member_bytes(
            // A new member's id is made here: its client id and a suffix.
            if req.member_id.is_empty() {
                &req.client_id
            } else {
                &req.member_id
            },
            req.instance_id.as_deref(),
            &req.client_id,
            &req.client_host,
            &req.protocols,
            0,
        ) + if req.member_id.is_empty() { 40 } else { 0 };
        if self.state_bytes() - replaced + joiner > settings.max_state_bytes {
            tracing::warn!(
                group = %self.id,
                members = self.members.len(),
                state_bytes = self.state_bytes(),
                joiner_bytes = joiner,
                limit = settings.max_state_bytes,
                "a member's metadata would take the group's stored state past its limit; refused with MESSAGE_TOO_LARGE"
            );
            return Err(GroupError::GroupStateTooLarge);
        }
        if joiner.saturating_sub(replaced) > self.memory_room {
            tracing::warn!(
                group = %self.id,
                joiner_bytes = joiner,
                room = self.memory_room,
                "the broker's groups hold all the memory they may (--group-memory-bytes); the member is told to retry"
            );
            return Err(GroupError::GroupMemoryFull);
        }
        Ok(())
    }

    /// What the group's record takes in the metadata store (an estimate
    /// that errs high).
    pub fn state_bytes(&self) -> usize {
        256 + self.id.len()
            + self.protocol.as_deref().map_or(0, str::len)
            + self
                .members
                .values()
                .map(Member::stored_bytes)
                .sum::<usize>()
    }

    fn replace_static_member(
        &mut self,
        old_id: &str,
        req: JoinRequest,
        new_id: String,
        tx: oneshot::Sender<JoinResult>,
        rx: oneshot::Receiver<JoinResult>,
        now: Instant,
    ) -> oneshot::Receiver<JoinResult> {
        let Some(mut member) = self.members.remove(old_id) else {
            let _ = tx.send(JoinResult::error("", GroupError::UnknownMemberId));
            return rx;
        };
        // The old identity is fenced: anything still waiting for it is told so.
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinResult::error(old_id, GroupError::FencedInstanceId));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(Err(GroupError::FencedInstanceId));
        }
        let protocols_changed = member.protocols != req.protocols;
        member.id = new_id.clone();
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.protocols = req.protocols;
        member.last_heartbeat = now;
        member.join_waiter = Some(tx);
        let was_leader = self.leader.as_deref() == Some(old_id);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        self.dirty = true;
        if self.state == GroupState::Stable && !protocols_changed && !was_leader {
            let result = self.join_result_for(&new_id);
            if let Some(w) = self
                .members
                .get_mut(&new_id)
                .and_then(|m| m.join_waiter.take())
            {
                let _ = w.send(result);
            }
        } else {
            if self.state != GroupState::PreparingRebalance {
                self.prepare_rebalance(now);
            }
            self.try_complete_rebalance(now);
        }
        rx
    }

    fn supports_any(&self, protocols: &[(String, Bytes)]) -> bool {
        self.members.is_empty()
            || protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            let protocol = self.protocol.clone().unwrap_or_default();
            let mut ordered: Vec<&Member> = self.members.values().collect();
            ordered.sort_by_key(|m| m.joined_order);
            ordered
                .into_iter()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.metadata_for(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Moves to PreparingRebalance: members must rejoin within the longest
    /// rebalance timeout; waiting SyncGroups are told to rejoin.
    pub fn prepare_rebalance(&mut self, now: Instant) {
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.rebalance_deadline = Some(now + timeout);
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(GroupError::RebalanceInProgress));
            }
        }
        self.state = GroupState::PreparingRebalance;
    }

    /// Completes the rebalance if every member rejoined (and a new group's
    /// initial delay passed), or the rebalance timeout expired.
    pub fn try_complete_rebalance(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let delayed = self.initial_delay_until.is_some_and(|until| now < until);
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        let ready = all_joined && !delayed;
        if !ready && !timed_out {
            return;
        }
        // Members that did not rejoin in time are dropped.
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.initial_delay_until = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        self.dirty = true;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.joined_order)
                .map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id);
            if let Some(w) = self.members.get_mut(&id).and_then(|m| m.join_waiter.take()) {
                let _ = w.send(result);
            }
        }
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let mut ordered: Vec<&Member> = self.members.values().collect();
        ordered.sort_by_key(|m| m.joined_order);
        let first = ordered.first()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                ordered
                    .iter()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: Vec<(&String, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in &ordered {
            // Each member votes for the first candidate in its own order.
            let choice = m
                .protocols
                .iter()
                .find_map(|(n, _)| votes.iter().position(|(c, _)| *c == n));
            if let Some(i) = choice {
                votes[i].1 += 1;
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(std::cmp::Ordering::Greater))
            .map(|(n, _)| n.clone())
    }

    /// Handles a SyncGroup. The leader's call hands every member its assignment.
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        settings: &GroupSettings,
        now: Instant,
    ) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.validate_member(member_id, instance_id) {
            let _ = tx.send(Err(e));
            return rx;
        }
        if generation != self.generation {
            let _ = tx.send(Err(GroupError::IllegalGeneration));
            return rx;
        }
        match self.state {
            GroupState::Empty => {
                let _ = tx.send(Err(GroupError::UnknownMemberId));
            }
            GroupState::PreparingRebalance => {
                let _ = tx.send(Err(GroupError::RebalanceInProgress));
            }
            GroupState::Stable => {
                let assignment = self
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                let _ = tx.send(Ok(assignment));
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_heartbeat = now;
                    m.sync_waiter = Some(tx);
                }
                if self.leader.as_deref() == Some(member_id) {
                    let current: usize = self.members.values().map(|m| m.assignment.len()).sum();
                    let assigned: usize = assignments
                        .iter()
                        .filter(|(id, _)| self.members.contains_key(id))
                        .map(|(_, a)| a.len())
                        .sum();
                    let growth = (assigned * 4 / 3).saturating_sub(current * 4 / 3);
                    let refusal = if self.state_bytes() + growth > settings.max_state_bytes {
                        tracing::warn!(
                            group = %self.id,
                            assignment_bytes = assigned,
                            limit = settings.max_state_bytes,
                            "the leader's assignments would take the group's stored state past its limit; refused with MESSAGE_TOO_LARGE"
                        );
                        Some(GroupError::GroupStateTooLarge)
                    } else if growth > self.memory_room {
                        tracing::warn!(
                            group = %self.id,
                            assignment_bytes = assigned,
                            room = self.memory_room,
                            "the broker's groups hold all the memory they may (--group-memory-bytes); the leader is told to retry"
                        );
                        Some(GroupError::GroupMemoryFull)
                    } else {
                        None
                    };
                    if let Some(error) = refusal {
                        if let Some(w) = self
                            .members
                            .get_mut(member_id)
                            .and_then(|m| m.sync_waiter.take())
                        {
                            let _ = w.send(Err(error));
                        }
                        return rx;
                    }
                    for m in self.members.values_mut() {
                        m.assignment = assignments
                            .iter()
                            .find(|(id, _)| *id == m.id)
                            .map(|(_, a)| a.clone())
                            .unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.dirty = true;
                    for m in self.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(Ok(m.assignment.clone()));
                        }
                    }
                }
            }
        }
        rx
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        self.validate_member(member_id, instance_id)?;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Empty => Err(GroupError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// Removes a member (LeaveGroup, or session expiry) and rebalances the rest.
    pub fn remove_member(&mut self, member_id: &str, now: Instant) {
        let Some(mut m) = self.members.remove(member_id) else {
            return;
        };
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::error(member_id, GroupError::UnknownMemberId));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(Err(GroupError::UnknownMemberId));
        }
        self.dirty = true;
        match self.state {
            GroupState::Empty => {}
            GroupState::PreparingRebalance => self.try_complete_rebalance(now),
            GroupState::CompletingRebalance | GroupState::Stable => {
                if self.members.is_empty() {
                    self.generation += 1;
                    self.state = GroupState::Empty;
                    self.protocol = None;
                    self.leader = None;
                } else {
                    self.prepare_rebalance(now);
                }
            }
        }
    }

    /// Leaves by member id or, for static members, by instance id. Returns the
    /// member id removed.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<String, GroupError> {
        let id = match instance_id {
            Some(instance) => {
                let owner = self
                    .instance_owner(instance)
                    .ok_or(GroupError::UnknownMemberId)?
                    .to_string();
                if !member_id.is_empty() && owner != member_id {
                    return Err(GroupError::FencedInstanceId);
                }
                owner
            }
            None => {
                self.validate_member(member_id, None)?;
                member_id.to_string()
            }
        };
        self.remove_member(&id, now);
        Ok(id)
    }

    /// Expires members whose session ran out and completes timed-out
    /// rebalances. Called periodically.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && now > m.last_heartbeat + m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(&id, now);
        }
        self.pending_members.retain(|_, deadline| now <= *deadline);
        self.try_complete_rebalance(now);
        let empty = self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty();
        self.empty_since = if empty {
            self.empty_since.or(Some(now))
        } else {
            None
        };
    }

    /// How long the group has been empty with nobody about to join. With no
    /// committed offsets either, such a group has nothing left to keep.
    pub fn empty_for(&self, now: Instant) -> Option<Duration> {
        self.empty_since.map(|t| now.saturating_duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_handed_out_for_rejoining_expire_and_an_empty_group_is_noticed() {
        let mut g = Group::new("g");
        let t0 = Instant::now();
        for i in 0..100 {
            drop(g.join(
                join_req("", None, &["range"]),
                || format!("m{i}"),
                &settings(),
                t0,
            ));
        }
        assert_eq!(g.pending_members.len(), 100);
        g.tick(t0);
        assert_eq!(g.empty_for(t0), None, "members are about to join");
        let later = t0 + Duration::from_secs(11);
        g.tick(later);
        assert!(g.pending_members.is_empty(), "never came back: forgotten");
        g.tick(later + Duration::from_secs(5));
        assert_eq!(
            g.empty_for(later + Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
    }

    fn settings() -> GroupSettings {
        GroupSettings {
            initial_rebalance_delay: Duration::from_millis(100),
            min_session_timeout: Duration::from_millis(10),
            max_session_timeout: Duration::from_secs(600),
            ..GroupSettings::default()
        }
    }

    fn join_req(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member_id: true,
        }
    }

    fn done<T>(rx: &mut oneshot::Receiver<T>) -> Option<T> {
        rx.try_recv().ok()
    }

    /// Two-step join (MEMBER_ID_REQUIRED, then join with the id).
    fn join_new(
        g: &mut Group,
        id: &str,
        protocols: &[&str],
        now: Instant,
    ) -> oneshot::Receiver<JoinResult> {
        let mut first = g.join(
            join_req("", None, protocols),
            || id.to_string(),
            &settings(),
            now,
        );
        assert_eq!(
            done(&mut first).unwrap().error,
            Some(GroupError::MemberIdRequired)
        );
        g.join(
            join_req(id, None, protocols),
            || unreachable!(),
            &settings(),
            now,
        )
    }

    #[test]
    fn first_rebalance_waits_for_the_initial_delay_then_elects_a_leader() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let mut a = join_new(&mut g, "a", &["range", "roundrobin"], t0);
        let mut b = join_new(
            &mut g,
            "b",
            &["roundrobin", "range"],
            t0 + Duration::from_millis(50),
        );
        assert!(done(&mut a).is_none(), "still inside the initial delay");
        g.tick(t0 + Duration::from_millis(200));
        let (ra, rb) = (done(&mut a).unwrap(), done(&mut b).unwrap());
        assert_eq!((ra.generation, rb.generation), (1, 1));
        assert_eq!(ra.leader, "a");
        assert_eq!(ra.members.len(), 2, "the leader sees every member");
        assert!(rb.members.is_empty());
        // One vote each: the first member's preference breaks the tie.
        assert_eq!(ra.protocol.as_deref(), Some("range"));
        assert_eq!(ra.members[1].2, Bytes::from("meta-range"));
        assert_eq!(g.state, GroupState::CompletingRebalance);

        // Followers wait for the leader's assignment; the leader's sync releases all.
        let mut sb = g.sync("b", None, 1, vec![], &settings(), t0);
        assert!(done(&mut sb).is_none());
        let mut sa = g.sync(
            "a",
            None,
            1,
            vec![
                ("a".into(), Bytes::from("A")),
                ("b".into(), Bytes::from("B")),
            ],
            &settings(),
            t0,
        );
        assert_eq!(done(&mut sa).unwrap(), Ok(Bytes::from("A")));
        assert_eq!(done(&mut sb).unwrap(), Ok(Bytes::from("B")));
        assert_eq!(g.state, GroupState::Stable);
        assert!(g.dirty);
    }

    #[test]
    fn a_join_during_stable_triggers_a_rebalance_that_waits_for_everyone() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let mut a = join_new(&mut g, "a", &["range"], t0);
        g.tick(t0 + Duration::from_secs(1));
        done(&mut a).unwrap();
        done(&mut g.sync(
            "a",
            None,
            1,
            vec![("a".into(), Bytes::from("A"))],
            &settings(),
            t0,
        ))
        .unwrap()
        .unwrap();

        let t1 = t0 + Duration::from_secs(2);
        let mut c = join_new(&mut g, "c", &["range"], t1);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat("a", None, 1, t1),
            Err(GroupError::RebalanceInProgress)
        );
        assert!(done(&mut c).is_none(), "a has not rejoined yet");
        let mut a2 = g.join(
            join_req("a", None, &["range"]),
            || unreachable!(),
            &settings(),
            t1,
        );
        let (ra, rc) = (done(&mut a2).unwrap(), done(&mut c).unwrap());
        assert_eq!((ra.generation, rc.generation), (2, 2));
        assert_eq!(ra.leader, "a", "the leader stays the leader");
        assert_eq!(
            g.heartbeat("a", None, 1, t1),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(g.heartbeat("a", None, 2, t1), Ok(()));
    }

    #[test]
    fn members_that_miss_the_rebalance_or_their_session_are_removed() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let mut a = join_new(&mut g, "a", &["range"], t0);
        let mut b = join_new(&mut g, "b", &["range"], t0);
        g.tick(t0 + Duration::from_secs(1));
        done(&mut a).unwrap();
        done(&mut b).unwrap();
        g.sync("a", None, 1, vec![], &settings(), t0);
        // b stops heartbeating: after its 10 s session it is gone and a rebalances.
        g.heartbeat("a", None, 1, t0 + Duration::from_secs(9))
            .unwrap();
        g.tick(t0 + Duration::from_secs(11));
        assert!(!g.members.contains_key("b"));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        // a never rejoins: after the 30 s rebalance timeout the group is empty.
        g.tick(t0 + Duration::from_secs(45));
        assert_eq!(g.state, GroupState::Empty);
        assert!(g.members.is_empty());
    }

    #[test]
    fn assignments_beyond_the_brokers_group_memory_are_refused_retriably() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let mut a = join_new(&mut g, "a", &["range"], t0);
        g.tick(t0 + Duration::from_secs(4));
        done(&mut a).unwrap();
        g.memory_room = 1000;
        let big = Bytes::from(vec![0u8; 1000]);
        let mut refused = g.sync(
            "a",
            None,
            1,
            vec![("a".into(), big.clone())],
            &settings(),
            t0,
        );
        assert_eq!(
            done(&mut refused).unwrap(),
            Err(GroupError::GroupMemoryFull)
        );
        assert_eq!(
            GroupError::GroupMemoryFull.code(),
            15,
            "COORDINATOR_NOT_AVAILABLE"
        );
        g.memory_room = 2000;
        let mut taken = g.sync(
            "a",
            None,
            1,
            vec![("a".into(), big.clone())],
            &settings(),
            t0,
        );
        assert_eq!(done(&mut taken).unwrap(), Ok(big));
        // A newcomer's metadata counts against the room too.
        g.memory_room = 100;
        let mut newcomer = g.join(
            join_req("", None, &["range"]),
            || "c".into(),
            &settings(),
            t0,
        );
        assert_eq!(
            done(&mut newcomer).unwrap().error,
            Some(GroupError::GroupMemoryFull)
        );
    }

    #[test]
    fn the_time_a_group_emptied_is_kept_for_offset_expiry_until_members_return() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        g.track_emptied(1_000);
        assert_eq!(g.emptied_at_ms, None, "never had a protocol: offsets only");
        let mut a = join_new(&mut g, "a", &["range"], t0);
        g.tick(t0 + Duration::from_secs(4));
        done(&mut a).unwrap();
        g.track_emptied(2_000);
        assert_eq!(g.emptied_at_ms, None);
        g.leave("a", None, t0 + Duration::from_secs(5)).unwrap();
        g.dirty = false;
        g.track_emptied(3_000);
        assert_eq!(g.emptied_at_ms, Some(3_000));
        assert!(g.dirty, "the time is persisted with the record");
        g.track_emptied(9_000);
        assert_eq!(
            g.to_record().emptied_at_ms,
            Some(3_000),
            "the first time counts"
        );
        drop(join_new(
            &mut g,
            "b",
            &["range"],
            t0 + Duration::from_secs(6),
        ));
        g.track_emptied(10_000);
        assert_eq!(g.emptied_at_ms, None);
    }

    #[test]
    fn errors_for_unknown_members_generations_and_protocols() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let mut x = g.join(
            join_req("ghost", None, &["range"]),
            || unreachable!(),
            &settings(),
            t0,
        );
        assert_eq!(
            done(&mut x).unwrap().error,
            Some(GroupError::UnknownMemberId)
        );
        let mut a = join_new(&mut g, "a", &["range"], t0);
        g.tick(t0 + Duration::from_secs(1));
        done(&mut a).unwrap();
        let mut bad = g.join(
            join_req("", None, &["sticky"]),
            || "z".into(),
            &settings(),
            t0,
        );
        assert_eq!(
            done(&mut bad).unwrap().error,
            Some(GroupError::InconsistentGroupProtocol)
        );
        assert_eq!(
            done(&mut g.sync("a", None, 7, vec![], &settings(), t0)).unwrap(),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat("nobody", None, 1, t0),
            Err(GroupError::UnknownMemberId)
        );
        let mut short = join_req("", None, &["range"]);
        short.session_timeout = Duration::from_millis(1);
        assert_eq!(
            done(&mut g.join(short, || "s".into(), &settings(), t0))
                .unwrap()
                .error,
            Some(GroupError::InvalidSessionTimeout)
        );
    }

    #[test]
    fn static_members_rejoin_without_rebalance_and_fence_their_old_id() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let mut a = g.join(
            join_req("", Some("i-a"), &["range"]),
            || "a1".into(),
            &settings(),
            t0,
        );
        let mut b = g.join(
            join_req("", Some("i-b"), &["range"]),
            || "b1".into(),
            &settings(),
            t0,
        );
        g.tick(t0 + Duration::from_secs(1));
        assert_eq!(done(&mut a).unwrap().leader, "a1");
        done(&mut b).unwrap();
        g.sync(
            "a1",
            Some("i-a"),
            1,
            vec![
                ("a1".into(), Bytes::from("A")),
                ("b1".into(), Bytes::from("B")),
            ],
            &settings(),
            t0,
        );
        assert_eq!(g.state, GroupState::Stable);

        // b restarts: same instance id, new member id, no rebalance, same assignment.
        let mut b2 = g.join(
            join_req("", Some("i-b"), &["range"]),
            || "b2".into(),
            &settings(),
            t0,
        );
        let r = done(&mut b2).unwrap();
        assert_eq!(
            (r.error, r.generation, r.member_id.as_str()),
            (None, 1, "b2")
        );
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(
            done(&mut g.sync("b2", Some("i-b"), 1, vec![], &settings(), t0)).unwrap(),
            Ok(Bytes::from("B"))
        );
        // The old incarnation is fenced.
        assert_eq!(
            g.heartbeat("b1", Some("i-b"), 1, t0),
            Err(GroupError::FencedInstanceId)
        );
        // Leaving by instance id removes the member and rebalances the rest.
        assert_eq!(g.leave("", Some("i-b"), t0), Ok("b2".to_string()));
        assert_eq!(g.state, GroupState::PreparingRebalance);
    }

    #[test]
    fn persisted_groups_restore_as_stable_with_assignments() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let mut a = join_new(&mut g, "a", &["range"], t0);
        g.tick(t0 + Duration::from_secs(1));
        done(&mut a).unwrap();
        g.sync(
            "a",
            None,
            1,
            vec![("a".into(), Bytes::from("A"))],
            &settings(),
            t0,
        );
        let restored = Group::restore("g", &g.to_record(), t0);
        assert_eq!(restored.state, GroupState::Stable);
        assert_eq!(restored.generation, 1);
        assert_eq!(restored.members["a"].assignment, Bytes::from("A"));
        assert_eq!(restored.leader.as_deref(), Some("a"));
    }
}
