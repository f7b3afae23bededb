//! Deleting a topic so that nothing of it survives: no object in the bucket,
//! no committed offset, and no late upload that a topic re-created under the
//! same name could adopt.
//!
//! A deletion is a record in the metadata store, carried out by every broker:
//!
//! 1. A request (DeleteTopics, the operator) marks the topic `deleting`,
//!    noting the brokers registered at that moment. Clients stop seeing it.
//! 2. Every broker, on seeing the mark, closes its logs of the topic, waits
//!    for its uploads in flight, sweeps the topic's objects through its own
//!    flusher (which first waits for that flusher's trailing index uploads),
//!    and confirms in the store that it will never write the topic again.
//! 3. Once every noted broker has confirmed, or is gone for longer than an
//!    upload may trail its session, one broker claims the finish in the
//!    record (compare-and-swap; it is replaced only once it is gone), sweeps
//!    a last time for whatever landed meanwhile, removes the groups' offsets
//!    of the topic, then the record.
//!
//! Only then is the name free: whatever a re-created topic finds under it was
//! written by the new topic, and nothing of the old deletion sweeps it again
//! (every sweep checks first that the record still exists, and runs within
//! its broker's session). Any broker finishes a deletion whose finisher is
//! gone, so a crash at any step only delays it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafscale_flusher_protocol::request;
use kafscale_metadata::{MetadataError, TopicRecord};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::partitions::topics::ClosedTopic;
use crate::Broker;

/// How often a pending deletion looks at the confirmations again.
const POLL: Duration = Duration::from_millis(200);
/// Pause after a failed step before trying it again.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    #[error("the topic does not exist")]
    NotFound,
    #[error("{0}")]
    Store(#[from] MetadataError),
    #[error(
        "the topic is hidden and being deleted, but brokers {waiting_for:?} have not yet confirmed that they stopped writing it; the deletion completes in the background once they do (or once they are gone for {grace:?})"
    )]
    Pending {
        waiting_for: Vec<i32>,
        grace: Duration,
    },
}

/// Which of the brokers noted at the request still keep the deletion open:
/// those that have not confirmed and are either registered or gone for less
/// than `upload_grace` (a gone broker's upload may land that long after its
/// session ended). Empty: the deletion may finish.
pub fn brokers_to_wait_for(
    noted: &[i32],
    confirmed: &HashSet<i32>,
    live: &HashSet<i32>,
    gone_for: impl Fn(i32) -> Option<Duration>,
    upload_grace: Duration,
) -> Vec<i32> {
    noted
        .iter()
        .copied()
        .filter(|b| !confirmed.contains(b))
        .filter(|b| live.contains(b) || gone_for(*b).is_none_or(|d| d <= upload_grace))
        .collect()
}

/// Marks `topic` for deletion and waits (up to `wait`) until it is complete.
pub async fn delete(
    broker: &Arc<Broker>,
    topic: &TopicRecord,
    wait: Duration,
) -> Result<(), DeletionError> {
    let marked = broker
        .metadata
        .request_topic_deletion(&topic.name, crate::now_ms())
        .await?
        .filter(|r| r.id == topic.id)
        .ok_or(DeletionError::NotFound)?;
    // Closes this broker's logs at once; the watch brings the mark to the others.
    broker.topics.upsert(marked.clone());
    let deadline = Instant::now() + wait;
    loop {
        match broker.metadata.get_topic(&topic.name).await? {
            Some((r, _)) if r.id == topic.id => {}
            _ => return Ok(()),
        }
        if Instant::now() >= deadline {
            let confirmed: HashSet<i32> = broker
                .metadata
                .topic_stopped_brokers(&marked)
                .await?
                .into_iter()
                .collect();
            let noted = marked.deletion.map(|d| d.brokers).unwrap_or_default();
            return Err(DeletionError::Pending {
                waiting_for: noted
                    .into_iter()
                    .filter(|b| !confirmed.contains(b))
                    .collect(),
                grace: broker.config.log.upload_grace,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Carries out every deletion this broker sees, one task per topic id.
pub fn spawn(broker: Arc<Broker>, mut closed: mpsc::UnboundedReceiver<ClosedTopic>) {
    let running: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
    let tasks = broker.tasks.clone();
    tasks.clone().spawn("topic deletions", async move {
        while let Some(topic) = closed.recv().await {
            let id = topic.record.id;
            if !running.lock().unwrap_or_else(|e| e.into_inner()).insert(id) {
                continue;
            }
            let broker = broker.clone();
            let running = running.clone();
            tasks.spawn("topic deletion", async move {
                carry_out(&broker, topic).await;
                running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            });
        }
    });
}

async fn carry_out(broker: &Broker, topic: ClosedTopic) {
    let record = topic.record;
    // 2. Stop writing: the logs are closed; uploads in flight end by their
    // deadline (session end plus grace) at the latest.
    while !topic.partitions.iter().all(|p| p.quiet()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while let Err(e) = sweep(broker, &record).await {
        if !still_pending(broker, &record).await {
            return;
        }
        tracing::warn!(topic = %record.name, error = %e, "deleting the topic's objects failed; retrying");
        tokio::time::sleep(RETRY).await;
    }
    while let Err(e) = broker
        .metadata
        .confirm_topic_stopped(&record, broker.config.node_id)
        .await
    {
        tracing::warn!(topic = %record.name, error = %e, "confirming that this broker stopped writing the deleted topic failed; retrying");
        tokio::time::sleep(RETRY).await;
    }
    broker.groups.forget_topic(&record.name);
    // 3. Finish once nobody can write the topic any more.
    let mut gone_since: HashMap<i32, Instant> = HashMap::new();
    while still_pending(broker, &record).await {
        match finish_if_due(broker, &record, &mut gone_since).await {
            Ok(true) => {
                tracing::info!(topic = %record.name, id = %record.id, "topic deleted");
                return;
            }
            Ok(false) => tokio::time::sleep(POLL).await,
            Err(e) => {
                tracing::warn!(topic = %record.name, error = %e, "finishing the topic's deletion failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Whether the record of this deletion is still in the store (a store that
/// cannot be read counts as pending).
async fn still_pending(broker: &Broker, record: &TopicRecord) -> bool {
    match broker.metadata.get_topic(&record.name).await {
        Ok(Some((r, _))) => r.id == record.id,
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Deletes every object under the topic's name, only while the record of
/// this deletion still exists and within this broker's session: a broker
/// that may have lost its session must not sweep a name that a re-created
/// topic may own by now.
async fn sweep(broker: &Broker, record: &TopicRecord) -> Result<(), String> {
    if !still_pending(broker, record).await {
        return Ok(());
    }
    let not_after_ms = broker
        .cluster
        .session_deadline_ms()
        .ok_or("this broker has no valid session")?;
    broker
        .object_storage
        .delete_topic(request::DeleteTopic {
            topic: record.name.clone(),
            not_after_ms,
        })
        .await
        .map(|_| ())
        .map_err(|e| e.message)
}

async fn finish_if_due(
    broker: &Broker,
    record: &TopicRecord,
    gone_since: &mut HashMap<i32, Instant>,
) -> Result<bool, String> {
    let live: HashSet<i32> = broker.cluster.live_brokers().iter().map(|b| b.id).collect();
    let noted: Vec<i32> = match &record.deletion {
        Some(d) => d.brokers.clone(),
        // Marked by an older version: whoever is registered now.
        None => live.iter().copied().collect(),
    };
    let now = Instant::now();
    for b in &noted {
        if live.contains(b) {
            gone_since.remove(b);
        } else {
            gone_since.entry(*b).or_insert(now);
        }
    }
    let confirmed: HashSet<i32> = broker
        .metadata
        .topic_stopped_brokers(record)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let waiting = brokers_to_wait_for(
        &noted,
        &confirmed,
        &live,
        |b| gone_since.get(&b).map(|t| now.duration_since(*t)),
        broker.config.log.upload_grace,
    );
    if !waiting.is_empty() {
        return Ok(false);
    }
    // One finisher: it sweeps last and removes the record; a replaced one
    // (gone from the cluster) sweeps no more.
    let me = broker.config.node_id;
    let claimed = broker
        .metadata
        .claim_topic_deletion(record, me, |b| !live.contains(&b))
        .await
        .map_err(|e| e.to_string())?;
    if !claimed {
        return Ok(false);
    }
    sweep(broker, record).await?;
    broker
        .metadata
        .delete_topic_offsets(&record.name)
        .await
        .map_err(|e| e.to_string())?;
    let removed = broker
        .metadata
        .delete_topic(record, Some(me))
        .await
        .map_err(|e| e.to_string())?;
    if !removed {
        return Ok(false); // another broker took over meanwhile
    }
    broker.groups.forget_topic(&record.name);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[i32]) -> HashSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_deletion_waits_for_every_noted_broker_that_may_still_write() {
        let grace = Duration::from_secs(30);
        let never_gone = |_| None;
        // Everyone confirmed.
        assert!(
            brokers_to_wait_for(&[1, 2], &set(&[1, 2]), &set(&[1, 2]), never_gone, grace)
                .is_empty()
        );
        // A live broker that has not confirmed keeps it open.
        assert_eq!(
            brokers_to_wait_for(&[1, 2], &set(&[1]), &set(&[1, 2]), never_gone, grace),
            vec![2]
        );
        // A broker that just left may still have an upload landing.
        let gone = |secs| move |b| (b == 2).then_some(Duration::from_secs(secs));
        assert_eq!(
            brokers_to_wait_for(&[1, 2], &set(&[1]), &set(&[1]), gone(5), grace),
            vec![2]
        );
        // Gone for longer than an upload may trail its session: no longer.
        assert!(brokers_to_wait_for(&[1, 2], &set(&[1]), &set(&[1]), gone(31), grace).is_empty());
        // A broker that joined after the request was never noted.
        assert!(brokers_to_wait_for(&[1], &set(&[1]), &set(&[1, 3]), never_gone, grace).is_empty());
        // Not live and never seen gone (state lost): waits the full grace.
        assert_eq!(
            brokers_to_wait_for(&[4], &set(&[]), &set(&[1]), never_gone, grace),
            vec![4]
        );
    }
}
