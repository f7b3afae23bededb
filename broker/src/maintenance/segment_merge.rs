//! Background merging of small segments. Short flush windows (what keeps
//! produce latency low) leave many small segments; each partition's leader
//! asks its flusher to fold old ones into segments of up to `segment.bytes`
//! (the flusher caps this at the size it reads whole), which cuts the GETs of
//! cold reads and the listing and scanning work of recovery.
//!
//! Two rules keep merging from ever losing or duplicating an offset (the
//! flusher's `merge_segments` documents the crash safety of each step):
//! - Only segments older than `min_age` are merged or deleted, and every
//!   upload of a broker is cancelled `upload_grace` (half of `min_age`) after
//!   its session ends: a fenced broker's late upload cannot recreate a key
//!   that a merge or retention deleted.
//! - Maintenance of a partition (merge steps, retention deletes) runs one step
//!   at a time through `Maintenance::step` (see `maintenance.rs`), so two
//!   brokers never maintain one partition at once.

use std::sync::Arc;
use std::time::Instant;

use kafscale_flusher_protocol::{request, Merged};

use crate::maintenance::quiet_partitions::QuietPartitions;
use crate::maintenance::Maintenance;
use crate::tasks::BackgroundTasks;

/// Merge steps per partition per pass, so one partition with a large backlog
/// of small segments does not hold up the others for long.
const MAX_STEPS_PER_PARTITION: usize = 64;

/// One pass over every partition this broker has led for a while. Partitions
/// not led (or gone) are forgotten, so they are checked afresh once led again.
pub async fn merge_once(maintenance: &Maintenance, progress: &mut QuietPartitions) {
    let min_age = maintenance.settings.merge.min_age;
    let min_age_ms = min_age.as_millis() as i64;
    for topic in maintenance.topics.all() {
        let target_bytes = topic.config.segment_bytes;
        // A merged segment stops growing once its oldest data is half the
        // retention time old, so time retention deletes it in time.
        let max_span_ms = topic
            .config
            .applied_retention_ms()
            .map_or(i64::MAX, |ms| ms / 2);
        for log in &topic.partitions {
            if maintenance.deadline(log).is_none() {
                continue;
            }
            let Some(high_watermark) = log.high_watermark_now() else {
                continue;
            };
            // Once a pass found nothing to merge after every segment was old
            // enough, nothing more is asked until the partition is written.
            if progress.skip(log, high_watermark, min_age, None) {
                continue;
            }
            let asked_at = Instant::now();
            for _ in 0..MAX_STEPS_PER_PARTITION {
                let step = maintenance
                    .step(log, |not_after_ms| {
                        maintenance.storage.merge_segments(request::MergeSegments {
                            topic: log.topic.clone(),
                            partition: log.partition,
                            target_bytes,
                            min_age_ms,
                            max_span_ms,
                            not_after_ms,
                        })
                    })
                    .await;
                let Some(step) = step else { break };
                match step {
                    Ok(Merged {
                        merged,
                        written,
                        removed,
                    }) if written > 0 || removed > 0 => {
                        tracing::debug!(topic = %log.topic, partition = log.partition, merged, removed, "merged segments");
                    }
                    Ok(_) => {
                        progress.found(log, true, asked_at);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %log.topic, partition = log.partition, error = %e, "segment merge step failed; will retry on the next pass");
                        break;
                    }
                }
            }
        }
    }
    progress.end_round();
}

/// Runs `merge_once` every `merge.interval` (never when it is zero).
pub fn spawn(maintenance: Arc<Maintenance>, tasks: &BackgroundTasks) {
    let interval = maintenance.settings.merge.interval;
    if interval.is_zero() {
        return;
    }
    tasks.spawn("segment merging", async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress = QuietPartitions::default();
        loop {
            tick.tick().await;
            merge_once(&maintenance, &mut progress).await;
        }
    });
}
