//! This broker's place in the cluster: its session (registration under an
//! etcd lease), and a cache of the live brokers, the controller and every
//! partition's and coordinator slot's leader and epoch, kept current by
//! watches.
//!
//! A broker leads something only while the cache names it leader *and* its
//! session is valid. Validity is judged locally and conservatively: a lease
//! renewal sent at time `t` keeps the session valid until `t + ttl`, never
//! longer, so a broker that was paused or cut off from etcd stops acting as
//! leader no later than etcd ends its lease.

pub mod controller;
pub mod fencing;
pub mod leadership_check;

use crate::tasks::BackgroundTasks;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kafscale_metadata::{BrokerRecord, LeadershipKey, MetadataError, MetadataStore, WatchEvent};
use tokio::sync::{broadcast, watch};

/// Number of group-coordinator slots; a group belongs to slot
/// `crc32c(group id) % COORDINATOR_SLOTS` and is coordinated by its leader.
pub const COORDINATOR_SLOTS: i32 = 50;

pub fn coordinator_slot(group_id: &str) -> i32 {
    (crc32c::crc32c(group_id.as_bytes()) % COORDINATOR_SLOTS as u32) as i32
}

/// A leader as this broker last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leader {
    /// `None`: no leader assigned, or the assigned one is not alive.
    pub broker: Option<i32>,
    pub epoch: i32,
    /// Who led before the last move, if it is alive (partitions only).
    pub previous: Option<i32>,
}

/// A leadership record as this broker keeps it.
#[derive(Debug, Clone, Copy)]
struct Held {
    leader: Option<i32>,
    epoch: i32,
    previous: Option<i32>,
    revision: i64,
}

impl Held {
    fn of(e: &kafscale_metadata::LeadershipEntry) -> Self {
        Self {
            leader: e.leader,
            epoch: e.leader_epoch,
            previous: e.previous_leader,
            revision: e.revision.unwrap_or(0),
        }
    }
}

/// Keeps the newer of two versions of a record: a re-read and the watch may
/// deliver them in either order.
fn apply_newer(leaders: &mut HashMap<LeadershipKey, Held>, key: LeadershipKey, held: Held) {
    match leaders.get(&key) {
        Some(known) if known.revision > held.revision => {}
        _ => {
            leaders.insert(key, held);
        }
    }
}

#[derive(Default)]
struct ViewState {
    brokers: BTreeMap<i32, BrokerRecord>,
    controller: Option<i32>,
    leaders: HashMap<LeadershipKey, Held>,
}

/// The session lease and how long it is known to be valid.
struct Session {
    lease: AtomicI64,
    valid_until: Mutex<Option<Instant>>,
}

pub struct ClusterView {
    pub me: BrokerRecord,
    metadata: MetadataStore,
    ttl: Duration,
    state: RwLock<ViewState>,
    session: Session,
    draining: AtomicBool,
    changed: watch::Sender<u64>,
}

impl ClusterView {
    /// Reads the current state, starts the watches and the session. Returns
    /// once the first reads are done (registration goes on in the background).
    pub async fn start(
        metadata: MetadataStore,
        me: BrokerRecord,
        session_timeout: Duration,
        tasks: &BackgroundTasks,
    ) -> Result<Arc<Self>, MetadataError> {
        let view = Arc::new(Self {
            me,
            metadata: metadata.clone(),
            ttl: session_timeout,
            state: RwLock::default(),
            session: Session {
                lease: AtomicI64::new(0),
                valid_until: Mutex::new(None),
            },
            draining: AtomicBool::new(false),
            changed: watch::channel(0).0,
        });
        for prefix in [
            metadata.brokers_prefix(),
            metadata.controller_key(),
            metadata.all_partitions_prefix(),
            metadata.coordinators_prefix(),
        ] {
            let events = metadata.watch(&prefix);
            view.reload(&prefix).await?;
            view.clone().spawn_follow(tasks, prefix, events);
        }
        view.clone().spawn_session(tasks);
        Ok(view)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ViewState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ViewState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Wakes on every change of the view or the session.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether this broker's lease is known to be alive right now.
    pub fn session_valid(&self) -> bool {
        let until = *self
            .session
            .valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|u| Instant::now() < u)
    }

    /// Until when (Unix millis) this broker's lease is known to be alive; None
    /// while it is not. The flusher refuses writes for us past this moment.
    pub fn session_deadline_ms(&self) -> Option<i64> {
        let until = (*self
            .session
            .valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()))?;
        let left = until.checked_duration_since(Instant::now())?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_millis();
        i64::try_from(now_ms + left.as_millis()).ok()
    }

    /// The current lease id (0: none), valid or not.
    pub fn lease_id(&self) -> i64 {
        self.session.lease.load(Ordering::Relaxed)
    }

    pub fn lease(&self) -> Option<i64> {
        let lease = self.session.lease.load(Ordering::Relaxed);
        (lease != 0 && self.session_valid()).then_some(lease)
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The leader of `key`, if it is a live broker, and the current epoch.
    pub fn leader(&self, key: &LeadershipKey) -> Leader {
        let s = self.read();
        match s.leaders.get(key) {
            Some(held) => Leader {
                broker: held.leader.filter(|b| s.brokers.contains_key(b)),
                epoch: held.epoch,
                previous: held.previous.filter(|b| s.brokers.contains_key(b)),
            },
            None => Leader {
                broker: None,
                epoch: 0,
                previous: None,
            },
        }
    }

    /// The epoch at which this broker leads `key`, if it does.
    pub fn my_epoch(&self, key: &LeadershipKey) -> Option<i32> {
        self.my_leadership(key).map(|(epoch, _)| epoch)
    }

    /// The epoch and record revision at which this broker leads `key`.
    fn my_leadership(&self, key: &LeadershipKey) -> Option<(i32, i64)> {
        let mine = match self.read().leaders.get(key) {
            Some(held) if held.leader == Some(self.me.id) => Some((held.epoch, held.revision)),
            _ => None,
        };
        mine.filter(|_| self.session_valid())
    }

    /// A metadata-store condition that holds only while this broker still
    /// leads `key` as it does now; `None` if it does not lead it.
    pub fn fence(&self, key: &LeadershipKey) -> Option<kafscale_metadata::Compare> {
        self.my_leadership(key)
            .map(|(_, revision)| self.metadata.leader_fence(key, revision))
    }

    /// Whether anything is still led by this broker.
    pub fn leads_anything(&self) -> bool {
        self.read()
            .leaders
            .values()
            .any(|held| held.leader == Some(self.me.id))
    }

    pub fn broker(&self, id: i32) -> Option<BrokerRecord> {
        self.read().brokers.get(&id).cloned()
    }

    pub fn live_brokers(&self) -> Vec<BrokerRecord> {
        self.read().brokers.values().cloned().collect()
    }

    pub fn controller(&self) -> Option<i32> {
        self.read().controller
    }

    /// Re-reads every partition leadership record now: afterwards the view
    /// holds every change written before this call.
    pub async fn refresh_partitions(&self) -> Result<(), MetadataError> {
        self.reload(&self.metadata.all_partitions_prefix()).await
    }

    /// Re-reads one watched prefix completely.
    async fn reload(&self, prefix: &str) -> Result<(), MetadataError> {
        let md = &self.metadata;
        if prefix == md.brokers_prefix() {
            let brokers = md.list_brokers().await?;
            self.write().brokers = brokers.into_iter().map(|b| (b.id, b)).collect();
        } else if prefix == md.controller_key() {
            let controller = md.controller().await?;
            self.write().controller = controller;
        } else {
            let entries = if prefix == md.all_partitions_prefix() {
                md.partition_leaderships().await?
            } else {
                md.coordinator_leaderships().await?
            };
            let mut s = self.write();
            let partitions = prefix == md.all_partitions_prefix();
            let read: HashMap<LeadershipKey, Held> = entries
                .iter()
                .map(|e| (e.key.clone(), Held::of(e)))
                .collect();
            // Keys gone from the store go; a record the watch applied while
            // the read was under way is newer than the read's and stays.
            s.leaders.retain(|k, _| {
                matches!(k, LeadershipKey::Partition(..)) != partitions || read.contains_key(k)
            });
            for (key, held) in read {
                apply_newer(&mut s.leaders, key, held);
            }
        }
        self.notify();
        Ok(())
    }

    fn apply(&self, event: &WatchEvent) {
        let md = &self.metadata;
        match event {
            WatchEvent::Put(kv) => {
                if kv.key == md.controller_key() {
                    match md.parse_controller(kv) {
                        Ok(c) => self.write().controller = Some(c.broker_id),
                        Err(e) => {
                            tracing::error!(error = %e, "ignoring malformed controller record")
                        }
                    }
                } else if md.broker_id_of(&kv.key).is_some() {
                    match md.parse_broker(kv) {
                        Ok(b) => {
                            self.write().brokers.insert(b.id, b);
                        }
                        Err(e) => tracing::error!(error = %e, "ignoring malformed broker record"),
                    }
                } else {
                    match md.parse_leadership(kv) {
                        Ok(Some(e)) => {
                            let held = Held::of(&e);
                            apply_newer(&mut self.write().leaders, e.key, held);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "ignoring malformed leadership record")
                        }
                    }
                }
            }
            WatchEvent::Delete(key) => {
                if *key == md.controller_key() {
                    self.write().controller = None;
                } else if let Some(id) = md.broker_id_of(key) {
                    self.write().brokers.remove(&id);
                } else if let Some(k) = md.leadership_key_of(key) {
                    self.write().leaders.remove(&k);
                }
            }
            WatchEvent::Resync => {}
        }
        self.notify();
    }

    fn spawn_follow(
        self: Arc<Self>,
        tasks: &BackgroundTasks,
        prefix: String,
        mut events: broadcast::Receiver<WatchEvent>,
    ) {
        tasks.spawn("cluster view", async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(_)) => WatchEvent::Resync,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if event == WatchEvent::Resync {
                    while let Err(e) = self.reload(&prefix).await {
                        tracing::warn!(prefix, error = %e, "re-reading cluster state failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                } else {
                    self.apply(&event);
                }
            }
        });
    }

    fn set_valid_until(&self, until: Option<Instant>) {
        *self
            .session
            .valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = until;
        self.notify();
    }

    /// Registers, then renews the lease every third of its time to live. A
    /// lost lease ends leadership at once; the broker then registers again.
    fn spawn_session(self: Arc<Self>, tasks: &BackgroundTasks) {
        tasks.spawn("session", async move {
            loop {
                match self.register().await {
                    Ok(()) => {
                        self.renew_until_lost().await;
                        // Lost only in our eyes (etcd unreachable for a while)? End
                        // it for etcd too, so registering again need not wait for
                        // our own old key to expire.
                        let old = self.session.lease.swap(0, Ordering::Relaxed);
                        if old != 0 {
                            let _ = self.metadata.revoke_lease(old).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "broker registration failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                if self.draining() {
                    return;
                }
            }
        });
    }

    async fn register(&self) -> Result<(), MetadataError> {
        let granted_at = Instant::now();
        let lease = self.metadata.grant_lease(self.ttl).await?;
        let mut warned = false;
        loop {
            let record = BrokerRecord {
                draining: self.draining(),
                ..self.me.clone()
            };
            if self.metadata.register_broker(&record, lease).await? {
                break;
            }
            if !warned {
                tracing::warn!(
                    broker_id = self.me.id,
                    "another live broker holds this broker id; waiting for its session to end (give every broker a distinct --node-id)"
                );
                warned = true;
            }
            // Keep our own lease alive while we wait.
            self.metadata.keep_alive(lease).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.session.lease.store(lease, Ordering::Relaxed);
        // Valid from when the lease was asked for, not from when it was granted.
        self.set_valid_until(Some(granted_at + self.ttl));
        tracing::info!(broker_id = self.me.id, lease, "registered in the cluster");
        Ok(())
    }

    async fn renew_until_lost(&self) {
        let lease = self.session.lease.load(Ordering::Relaxed);
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.session.lease.load(Ordering::Relaxed) != lease {
                return; // revoked on shutdown
            }
            let sent = Instant::now();
            match tokio::time::timeout(self.ttl / 3, self.metadata.keep_alive(lease)).await {
                Ok(Ok(true)) => self.set_valid_until(Some(sent + self.ttl)),
                Ok(Ok(false)) => {
                    tracing::warn!(
                        broker_id = self.me.id,
                        "the session lease ended (this broker was paused or cut off from etcd); giving up leadership and registering again"
                    );
                    self.set_valid_until(None);
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "renewing the session lease failed; retrying")
                }
                Err(_) => tracing::warn!("renewing the session lease timed out; retrying"),
            }
            if !self.session_valid() {
                // Unreachable for longer than the lease lives: the lease has
                // ended (or will before we could renew it); start over.
                tracing::warn!(
                    broker_id = self.me.id,
                    "the session lease ended while etcd could not be reached; giving up leadership and registering again"
                );
                self.set_valid_until(None);
                return;
            }
        }
    }

    /// Shutdown, step one: refuse new writes (producers get a retriable
    /// error) so that what is pending can be made durable before leadership moves.
    pub fn stop_writes(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.notify();
    }

    /// Shutdown, step two: tell the controller to move everything away.
    pub async fn start_draining(&self) -> Result<(), MetadataError> {
        match self.lease() {
            Some(lease) => {
                let record = BrokerRecord {
                    draining: true,
                    ..self.me.clone()
                };
                self.metadata.update_broker(&record, lease).await
            }
            None => Ok(()),
        }
    }

    /// Shutdown, last step: end the session (the broker's key and, if it is
    /// the controller, the controller key go with it).
    pub async fn end_session(&self) {
        let lease = self.session.lease.swap(0, Ordering::Relaxed);
        self.set_valid_until(None);
        if lease != 0 {
            if let Err(e) = self.metadata.revoke_lease(lease).await {
                tracing::warn!(error = %e, "revoking the session lease failed; it ends by itself");
            }
        }
    }
}
