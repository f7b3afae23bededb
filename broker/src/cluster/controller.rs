//! The controller: one broker at a time (whoever holds the `controller` key
//! under its session lease) assigns partition and coordinator-slot leaders.
//!
//! It re-plans whenever brokers, topics or leaders change (and every second):
//! anything whose leader is gone or draining gets the least-loaded live broker,
//! then single moves from the most to the least loaded broker even the load
//! out. Every change increments the leader epoch and is one compare-and-swap
//! conditioned on the record and on the controller's own key, so a controller
//! that lost its lease changes nothing.

use crate::tasks::BackgroundTasks;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafscale_metadata::{
    ControllerFence, LeadershipEntry, LeadershipKey, MetadataError, MetadataStore,
};

use crate::cluster::{ClusterView, COORDINATOR_SLOTS};

/// Runs for the life of the broker: campaigns whenever there is no
/// controller, and controls while it holds the key.
pub fn spawn(tasks: &BackgroundTasks, view: Arc<ClusterView>, metadata: MetadataStore) {
    tasks.spawn("controller", async move {
        let mut changes = view.subscribe();
        let mut topic_events = metadata.watch(&metadata.topics_prefix());
        loop {
            // Campaign when there is no controller, or when the key names this
            // broker but nothing here controls (e.g. an answer was lost).
            let uncontrolled = view.controller().is_none_or(|c| c == view.me.id);
            let lease = match view.lease() {
                Some(l) if uncontrolled && !view.draining() => l,
                _ => {
                    wait_for_change(&mut changes, &mut topic_events).await;
                    continue;
                }
            };
            match metadata.campaign(view.me.id, lease).await {
                Ok(Some(fence)) => {
                    tracing::info!(broker_id = view.me.id, "this broker is now the controller");
                    control(
                        &view,
                        &metadata,
                        lease,
                        fence,
                        &mut changes,
                        &mut topic_events,
                    )
                    .await;
                    tracing::info!(
                        broker_id = view.me.id,
                        "this broker is no longer the controller"
                    );
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "controller election failed; retrying"),
            }
            wait_for_change(&mut changes, &mut topic_events).await;
        }
    });
}

/// Waits for a change of the cluster view or of the topics, or one second.
async fn wait_for_change(
    changes: &mut tokio::sync::watch::Receiver<u64>,
    topics: &mut tokio::sync::broadcast::Receiver<kafscale_metadata::WatchEvent>,
) {
    tokio::select! {
        _ = changes.changed() => {}
        _ = topics.recv() => {}
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    // Let a burst of changes (a broker's partitions, a new topic) settle.
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn control(
    view: &ClusterView,
    metadata: &MetadataStore,
    lease: i64,
    fence: ControllerFence,
    changes: &mut tokio::sync::watch::Receiver<u64>,
    topics: &mut tokio::sync::broadcast::Receiver<kafscale_metadata::WatchEvent>,
) {
    loop {
        // The controller key lives and dies with the lease it was won under; a
        // session that is only briefly unconfirmed skips a pass.
        if view.lease_id() != lease || view.controller().is_some_and(|c| c != view.me.id) {
            return;
        }
        if view.session_valid() {
            match reassign(metadata, fence).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(changes = n, "leaders reassigned"),
                Err(e) => tracing::warn!(error = %e, "reassigning leaders failed; retrying"),
            }
        }
        wait_for_change(changes, topics).await;
    }
}

/// One planning pass from a fresh read of the store. Returns the number of
/// leadership changes written.
async fn reassign(
    metadata: &MetadataStore,
    fence: ControllerFence,
) -> Result<usize, MetadataError> {
    let registered = metadata.list_brokers().await?;
    let live: BTreeSet<i32> = registered
        .iter()
        .filter(|b| !b.draining)
        .map(|b| b.id)
        .collect();
    if live.is_empty() {
        return Ok(0);
    }
    let topics = metadata.list_topics().await?;
    let mut stored: BTreeMap<LeadershipKey, LeadershipEntry> = metadata
        .partition_leaderships()
        .await?
        .into_iter()
        .chain(metadata.coordinator_leaderships().await?)
        .map(|e| (e.key.clone(), e))
        .collect();
    let mut take = |key: LeadershipKey| {
        stored.remove(&key).unwrap_or(LeadershipEntry {
            key,
            leader: None,
            leader_epoch: 0,
            log_start_offset: 0,
            previous_leader: None,
            revision: None,
        })
    };
    let partitions: Vec<LeadershipEntry> = topics
        .iter()
        .filter(|t| !t.deleting)
        .flat_map(|t| (0..t.partitions).map(move |p| LeadershipKey::Partition(t.name.clone(), p)))
        .map(&mut take)
        .collect();
    let slots: Vec<LeadershipEntry> = (0..COORDINATOR_SLOTS)
        .map(|s| take(LeadershipKey::CoordinatorSlot(s)))
        .collect();
    // Each change with the broker it takes the entry from.
    let mut changes: Vec<(LeadershipEntry, Option<i32>)> = plan(&live, &partitions)
        .into_iter()
        .map(|c| {
            let from = c.previous_leader;
            (c, from)
        })
        .collect();
    // A controlled move (the leader is alive, draining or not) is handed
    // over; after a failure there is nobody to wait for.
    for (change, _) in &mut changes {
        if change
            .previous_leader
            .is_some_and(|b| !registered.iter().any(|r| r.id == b))
        {
            change.previous_leader = None;
        }
    }
    changes.extend(plan(&live, &slots).into_iter().map(|c| {
        let from = c.previous_leader;
        (c, from)
    }));
    if changes.is_empty() {
        return Ok(0);
    }
    metadata.apply_leadership(fence, &changes).await
}

/// The leadership changes that give every entry a live leader and even out
/// the number each live broker leads (to within one), moving as little as
/// possible. Among a broker's entries, one of the topic it leads most of
/// moves first, so a topic's partitions spread too. Integer bookkeeping only:
/// this runs on the runtime, for every partition of the cluster.
pub fn plan(live: &BTreeSet<i32>, entries: &[LeadershipEntry]) -> Vec<LeadershipEntry> {
    if live.is_empty() {
        return Vec::new();
    }
    // Group (topic) of each entry as a small integer; coordinator slots form one group.
    let mut group_ids: HashMap<&str, usize> = HashMap::new();
    let group: Vec<usize> = entries
        .iter()
        .map(|e| {
            let name = match &e.key {
                LeadershipKey::Partition(t, _) => t.as_str(),
                LeadershipKey::CoordinatorSlot(_) => "",
            };
            let next = group_ids.len();
            *group_ids.entry(name).or_insert(next)
        })
        .collect();
    let brokers: Vec<i32> = live.iter().copied().collect();
    let index: HashMap<i32, usize> = brokers.iter().enumerate().map(|(i, b)| (*b, i)).collect();
    // owner[i]: index into `brokers`.
    let mut owner: Vec<Option<usize>> = entries
        .iter()
        .map(|e| e.leader.and_then(|l| index.get(&l).copied()))
        .collect();
    let mut load = vec![0usize; brokers.len()];
    let mut per_group = vec![vec![0usize; brokers.len()]; group_ids.len()];
    for (i, o) in owner.iter().enumerate() {
        if let Some(b) = o {
            load[*b] += 1;
            per_group[group[i]][*b] += 1;
        }
    }
    for i in 0..entries.len() {
        if owner[i].is_none() {
            // The least-loaded broker, then the one with least of this topic.
            let b = (0..brokers.len())
                .min_by_key(|b| (load[*b], per_group[group[i]][*b], *b))
                .unwrap_or(0);
            owner[i] = Some(b);
            load[b] += 1;
            per_group[group[i]][b] += 1;
        }
    }
    loop {
        let most = (0..brokers.len())
            .max_by_key(|b| (load[*b], std::cmp::Reverse(*b)))
            .unwrap_or(0);
        let fewest = (0..brokers.len())
            .min_by_key(|b| (load[*b], *b))
            .unwrap_or(0);
        if load[most] <= load[fewest] + 1 {
            break;
        }
        let Some(i) = (0..entries.len())
            .filter(|i| owner[*i] == Some(most))
            .max_by_key(|i| {
                let g = &per_group[group[*i]];
                (g[most] as i64 - g[fewest] as i64, std::cmp::Reverse(*i))
            })
        else {
            break;
        };
        owner[i] = Some(fewest);
        load[most] -= 1;
        load[fewest] += 1;
        per_group[group[i]][most] -= 1;
        per_group[group[i]][fewest] += 1;
    }
    entries
        .iter()
        .zip(owner)
        .filter_map(|(e, o)| {
            let b = brokers[o?];
            (e.leader != Some(b)).then(|| e.moved_to(b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(topic: &str, leaders: &[Option<i32>]) -> Vec<LeadershipEntry> {
        leaders
            .iter()
            .enumerate()
            .map(|(p, l)| LeadershipEntry {
                key: LeadershipKey::Partition(topic.into(), p as i32),
                leader: *l,
                leader_epoch: 3,
                log_start_offset: 7,
                previous_leader: None,
                revision: Some(1),
            })
            .collect()
    }

    fn apply(mut e: Vec<LeadershipEntry>, changes: &[LeadershipEntry]) -> Vec<LeadershipEntry> {
        for c in changes {
            let i = e.iter().position(|x| x.key == c.key).unwrap();
            e[i] = c.clone();
        }
        e
    }

    fn loads(e: &[LeadershipEntry]) -> BTreeMap<i32, usize> {
        let mut m = BTreeMap::new();
        for x in e {
            *m.entry(x.leader.unwrap()).or_default() += 1;
        }
        m
    }

    #[test]
    fn unassigned_partitions_spread_evenly_with_epochs_bumped() {
        let live = BTreeSet::from([0, 1, 2]);
        let e = entries("t", &[None; 6]);
        let changes = plan(&live, &e);
        assert_eq!(changes.len(), 6);
        assert!(changes
            .iter()
            .all(|c| c.leader_epoch == 4 && c.log_start_offset == 7));
        assert_eq!(loads(&changes), BTreeMap::from([(0, 2), (1, 2), (2, 2)]));
    }

    #[test]
    fn a_dead_brokers_partitions_move_and_nothing_else_does() {
        let live = BTreeSet::from([0, 2]);
        let e = entries("t", &[Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]);
        let changes = plan(&live, &e);
        let moved: BTreeSet<_> = changes.iter().map(|c| c.key.clone()).collect();
        assert_eq!(
            moved,
            BTreeSet::from([
                LeadershipKey::Partition("t".into(), 1),
                LeadershipKey::Partition("t".into(), 4)
            ])
        );
        assert_eq!(loads(&apply(e, &changes)), BTreeMap::from([(0, 3), (2, 3)]));
    }

    #[test]
    fn scale_out_takes_load_and_scale_in_drains() {
        let e = entries("t", &[Some(0); 6]);
        let out = plan(&BTreeSet::from([0, 1, 2]), &e);
        assert_eq!(out.len(), 4, "only what must move moves");
        let e = apply(e, &out);
        assert_eq!(loads(&e), BTreeMap::from([(0, 2), (1, 2), (2, 2)]));
        assert!(plan(&BTreeSet::from([0, 1, 2]), &e).is_empty(), "stable");
        let back = apply(e.clone(), &plan(&BTreeSet::from([0]), &e));
        assert_eq!(loads(&back), BTreeMap::from([(0, 6)]));
    }

    #[test]
    fn topics_spread_individually() {
        let live = BTreeSet::from([0, 1]);
        let mut e = entries("a", &[Some(0), Some(0)]);
        e.extend(entries("b", &[Some(1), Some(1)]));
        // Balanced overall already: nothing moves.
        assert!(plan(&live, &e).is_empty());
        let mut e = entries("a", &[Some(0), Some(0)]);
        e.extend(entries("b", &[Some(0), Some(0)]));
        let e = apply(e.clone(), &plan(&live, &e));
        for t in ["a", "b"] {
            let owners: BTreeSet<_> = e
                .iter()
                .filter(|x| matches!(&x.key, LeadershipKey::Partition(n, _) if n == t))
                .map(|x| x.leader)
                .collect();
            assert_eq!(owners.len(), 2, "topic {t} on both brokers");
        }
    }
}
