//! The controller: one broker at a time (whoever holds the `controller` key
//! under its session lease) assigns partition and coordinator-slot leaders.
//!
//! It re-plans whenever brokers, topics or leaders change (and every second):
//! anything whose leader is gone or draining gets the least-loaded live broker,
//! then single moves from the most to the least loaded broker even the load
//! out. Every change increments the leader epoch and is one compare-and-swap
//! conditioned on the record and on the controller's own key, so a controller
//! that lost its lease changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kafscale_metadata::{
    ControllerFence, LeadershipEntry, LeadershipKey, MetadataError, MetadataStore,
};

use crate::cluster::{ClusterView, COORDINATOR_SLOTS};

/// Runs for the life of the broker: campaigns whenever there is no
/// controller, and controls while it holds the key.
pub fn spawn(view: Arc<ClusterView>, metadata: MetadataStore) {
    tokio::spawn(async move {
        let mut changes = view.subscribe();
        let mut topic_events = metadata.watch(&metadata.topics_prefix());
        loop {
            let lease = match view.lease() {
                Some(l) if view.controller().is_none() && !view.draining() => l,
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
        // The controller key lives and dies with the lease it was won under.
        if view.lease() != Some(lease) || view.controller().is_some_and(|c| c != view.me.id) {
            return;
        }
        match reassign(metadata, fence).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(changes = n, "leaders reassigned"),
            Err(e) => tracing::warn!(error = %e, "reassigning leaders failed; retrying"),
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
    let live: BTreeSet<i32> = metadata
        .list_brokers()
        .await?
        .into_iter()
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
    let mut changes = plan(&live, &partitions);
    changes.extend(plan(&live, &slots));
    if changes.is_empty() {
        return Ok(0);
    }
    metadata.apply_leadership(fence, &changes).await
}

/// The leadership changes that give every entry a live leader and even out
/// the number each live broker leads (to within one), moving as little as
/// possible. Among a broker's entries, one of the topic it leads most of
/// moves first, so a topic's partitions spread too.
pub fn plan(live: &BTreeSet<i32>, entries: &[LeadershipEntry]) -> Vec<LeadershipEntry> {
    if live.is_empty() {
        return Vec::new();
    }
    let group = |e: &LeadershipEntry| match &e.key {
        LeadershipKey::Partition(t, _) => t.clone(),
        LeadershipKey::CoordinatorSlot(_) => String::new(),
    };
    let mut owner: Vec<Option<i32>> = entries
        .iter()
        .map(|e| e.leader.filter(|l| live.contains(l)))
        .collect();
    let mut load: BTreeMap<i32, usize> = live.iter().map(|b| (*b, 0)).collect();
    let mut per_group: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for (e, o) in entries.iter().zip(&owner) {
        if let Some(b) = o {
            *load.entry(*b).or_default() += 1;
            *per_group.entry((group(e), *b)).or_default() += 1;
        }
    }
    let least =
        |load: &BTreeMap<i32, usize>| load.iter().min_by_key(|(b, n)| (**n, **b)).map(|(b, _)| *b);
    for (i, e) in entries.iter().enumerate() {
        if owner[i].is_none() {
            // Prefer the least-loaded broker, then the one with least of this topic.
            let Some(b) = load
                .iter()
                .min_by_key(|(b, n)| {
                    (
                        **n,
                        per_group.get(&(group(e), **b)).copied().unwrap_or(0),
                        **b,
                    )
                })
                .map(|(b, _)| *b)
            else {
                break;
            };
            owner[i] = Some(b);
            *load.entry(b).or_default() += 1;
            *per_group.entry((group(e), b)).or_default() += 1;
        }
    }
    while let Some((most, most_n)) = load
        .iter()
        .max_by_key(|(b, n)| (**n, std::cmp::Reverse(**b)))
        .map(|(b, n)| (*b, *n))
    {
        let Some(fewest) = least(&load) else { break };
        if most_n <= load[&fewest] + 1 {
            break;
        }
        let count = |g: &str, b: i32| per_group.get(&(g.to_string(), b)).copied().unwrap_or(0);
        let Some(i) = (0..entries.len())
            .filter(|i| owner[*i] == Some(most))
            .max_by_key(|i| {
                let g = group(&entries[*i]);
                (
                    count(&g, most) as i64 - count(&g, fewest) as i64,
                    std::cmp::Reverse(*i),
                )
            })
        else {
            break;
        };
        let g = group(&entries[i]);
        owner[i] = Some(fewest);
        *load.entry(most).or_default() -= 1;
        *load.entry(fewest).or_default() += 1;
        *per_group.entry((g.clone(), most)).or_default() -= 1;
        *per_group.entry((g, fewest)).or_default() += 1;
    }
    entries
        .iter()
        .zip(owner)
        .filter_map(|(e, o)| match o {
            Some(b) if e.leader != Some(b) => Some(e.moved_to(b)),
            _ => None,
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
