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
    rebalance_deadline: Option<Instant>,
    /// For a group's first rebalance: wait at least until then for more members.
    initial_delay_until: Option<Instant>,
    next_join_order: u64,
    /// Set whenever something worth persisting changed.
    pub dirty: bool,
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
            rebalance_deadline: None,
            initial_delay_until: None,
            next_join_order: 0,
            dirty: false,
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
        }
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
        let mut sb = g.sync("b", None, 1, vec![], t0);
        assert!(done(&mut sb).is_none());
        let mut sa = g.sync(
            "a",
            None,
            1,
            vec![
                ("a".into(), Bytes::from("A")),
                ("b".into(), Bytes::from("B")),
            ],
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
        done(&mut g.sync("a", None, 1, vec![("a".into(), Bytes::from("A"))], t0))
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
        g.sync("a", None, 1, vec![], t0);
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
            done(&mut g.sync("a", None, 7, vec![], t0)).unwrap(),
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
            done(&mut g.sync("b2", Some("i-b"), 1, vec![], t0)).unwrap(),
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
        g.sync("a", None, 1, vec![("a".into(), Bytes::from("A"))], t0);
        let restored = Group::restore("g", &g.to_record(), t0);
        assert_eq!(restored.state, GroupState::Stable);
        assert_eq!(restored.generation, 1);
        assert_eq!(restored.members["a"].assignment, Bytes::from("A"));
        assert_eq!(restored.leader.as_deref(), Some("a"));
    }
}
