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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use kafscale_flusher_protocol::{request, Merged};

use crate::maintenance::Maintenance;
use crate::tasks::BackgroundTasks;

/// Merge steps per partition per pass, so one partition with a large backlog
/// of small segments does not hold up the others for long.
const MAX_STEPS_PER_PARTITION: usize = 64;

/// What earlier passes learnt, so that a partition whose small segments are
/// all merged costs nothing (not even a listing) until it is written again.
#[derive(Default)]
pub struct MergeProgress {
    partitions: HashMap<(String, i32), Watermark>,
}

struct Watermark {
    high_watermark: i64,
    /// When a pass first saw this high watermark: every segment is older.
    seen_at: Instant,
    /// A pass found nothing to merge after every segment was old enough.
    settled: bool,
}

/// One pass over every partition this broker has led for a while. Partitions
/// not led (or gone) are forgotten, so they are checked afresh once led again.
pub async fn merge_once(maintenance: &Maintenance, progress: &mut MergeProgress) {
    let min_age = maintenance.settings.merge.min_age;
    let min_age_ms = min_age.as_millis() as i64;
    let mut seen = std::collections::HashSet::new();
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
            let key = (log.topic.clone(), log.partition);
            seen.insert(key.clone());
            let now = Instant::now();
            let mark = progress.partitions.entry(key).or_insert(Watermark {
                high_watermark,
                seen_at: now,
                settled: false,
            });
            if mark.high_watermark != high_watermark {
                *mark = Watermark {
                    high_watermark,
                    seen_at: now,
                    settled: false,
                };
            }
            if mark.settled {
                continue;
            }
            let all_old_enough = now.duration_since(mark.seen_at) > min_age;
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
                        mark.settled = all_old_enough;
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
    progress.partitions.retain(|key, _| seen.contains(key));
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
        let mut progress = MergeProgress::default();
        loop {
            tick.tick().await;
            merge_once(&maintenance, &mut progress).await;
        }
    });
}
