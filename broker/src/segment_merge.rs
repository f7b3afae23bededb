//! Background merging of small segments. Short flush windows (what keeps
//! produce latency low) leave many small segments; each partition's leader
//! asks its flusher to fold old ones into segments of up to `segment.bytes`
//! (the flusher caps this at the size it reads whole), which cuts the GETs of
//! cold reads and the listing and scanning work of recovery.
//!
//! Two rules keep merging from ever losing or duplicating an offset (the
//! flusher's `merge_segments` documents the crash safety of each step):
//! - Only segments older than `min_age` are touched, and every upload of a
//!   broker is cancelled `upload_grace` (half of `min_age`) after its session
//!   ends: a fenced broker's late upload cannot recreate a key a merge deleted.
//! - Each merge step must start before the leader's session ends, and a new
//!   leader waits one session timeout before merging: two brokers never merge
//!   the same partition at once.

use std::sync::Arc;

use kafscale_flusher::protocol::{Request, Response};
use kafscale_metadata::topic_rules::topic_config_value;

use crate::Broker;

/// Merge steps per partition per pass, so one partition with a large backlog
/// of small segments does not hold up the others for long.
const MAX_STEPS_PER_PARTITION: usize = 64;

/// One pass over every partition this broker has led for a while.
pub async fn merge_once(broker: &Broker) {
    let min_age_ms = broker.config.merge.min_age.as_millis() as i64;
    for topic in broker.topics.all() {
        let target_bytes = topic_config_value(&topic.record.config, "segment.bytes")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        for log in &topic.partitions {
            if crate::handlers::lead(broker, log).is_err()
                || log
                    .led_for()
                    .is_none_or(|d| d < broker.config.session_timeout)
            {
                continue;
            }
            for _ in 0..MAX_STEPS_PER_PARTITION {
                let _maintenance = broker.segment_maintenance.lock().await;
                let Some(not_after_ms) = broker.cluster.session_deadline_ms() else {
                    return;
                };
                let step = broker
                    .flusher
                    .call(Request::MergeSegments {
                        topic: log.topic.clone(),
                        partition: log.partition,
                        target_bytes,
                        min_age_ms,
                        not_after_ms,
                    })
                    .await;
                match step {
                    Ok(Response::Merged {
                        merged,
                        written,
                        removed,
                    }) if written > 0 || removed > 0 => {
                        tracing::debug!(topic = %log.topic, partition = log.partition, merged, removed, "merged segments");
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(topic = %log.topic, partition = log.partition, error = %e, "segment merge step failed; will retry on the next pass");
                        break;
                    }
                }
            }
        }
    }
}

/// Runs `merge_once` every `merge.interval` (never when it is zero).
pub fn spawn(broker: Arc<Broker>) {
    let interval = broker.config.merge.interval;
    if interval.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            merge_once(&broker).await;
        }
    });
}
