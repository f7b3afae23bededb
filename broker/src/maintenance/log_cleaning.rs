//! Cleaning of compacted topics (`cleanup.policy` with `compact`). The
//! cleaner runs beside the data, in the flusher: the leader of each
//! compacted partition asks it for cleaning passes, and the flusher reads
//! the segments, maps the latest offset of every key in bounded memory and
//! rewrites them (`sidecar-flusher/src/service/cleaning.rs`). Each request
//! is one maintenance step (`Maintenance::step`): only the leader, with its
//! session and its leadership checked, and every write of the pass before
//! the step's deadline; a pass that needs more time goes on at the next
//! step, so a broker that lost the partition cannot rewrite it any more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafscale_flusher_protocol::{request, Cleaned};
use kafscale_metadata::topic_rules::TopicConfig;

use crate::maintenance::quiet_partitions::QuietPartitions;
use crate::maintenance::Maintenance;
use crate::metrics::PartitionLabels;
use crate::partitions::log::{PartitionLog, WritePath};
use crate::tasks::BackgroundTasks;

/// Steps one partition may take in one round. A pass goes on until it is
/// done (the flusher keeps one pass at a time: one that stopped for another
/// partition would start over); the bound only keeps a fault from looping.
const MAX_STEPS_PER_PARTITION: usize = 10_000;

/// Steps in a row that may get through no group before the round moves on.
const MAX_STALLED_STEPS: usize = 3;

/// A partition found with nothing due is asked again at the latest after
/// this long even when nothing was written to it (`max.compaction.lag.ms`
/// may come due), so an idle partition costs its flusher one listing per
/// this interval, not per round.
const IDLE_RECHECK: Duration = Duration::from_secs(300);

/// One round over every compacted partition this broker maintains.
pub async fn clean_once(maintenance: &Maintenance, progress: &mut QuietPartitions) {
    for topic in maintenance.topics.all() {
        if !topic.config.cleanup.compact {
            continue;
        }
        for log in &topic.partitions {
            if maintenance.deadline(log).is_none() {
                continue;
            }
            let Some(high_watermark) = log.high_watermark_now() else {
                continue;
            };
            // Asked every round until its data has had time to become
            // cleanable (on the intake path data reaches segments only once
            // compacted), then every IDLE_RECHECK while nothing is written.
            let compaction = match maintenance.settings.write_path {
                WritePath::Intake => maintenance.settings.compaction.max_delay,
                WritePath::Segments => Duration::ZERO,
            };
            let settle = min_age(maintenance, &topic.config) + compaction;
            if progress.skip(log, high_watermark, settle, Some(IDLE_RECHECK)) {
                continue;
            }
            let asked_at = Instant::now();
            let found = clean_partition(maintenance, log, &topic.config).await;
            progress.found(log, found == Some(false), asked_at);
        }
    }
    progress.end_round();
}

/// Segments are rewritten only once older than the merge age (a fenced
/// writer's late upload must never meet a key a pass replaced) and than
/// `min.compaction.lag.ms`.
fn min_age(maintenance: &Maintenance, config: &TopicConfig) -> Duration {
    let lag = Duration::from_millis(config.min_compaction_lag_ms.max(0) as u64);
    maintenance.settings.merge.min_age.max(lag)
}

/// Runs requests until the pass is done; `Some(false)` when nothing was
/// due, `None` when a step could not run or failed.
async fn clean_partition(
    maintenance: &Maintenance,
    log: &PartitionLog,
    config: &TopicConfig,
) -> Option<bool> {
    let min_age_ms = min_age(maintenance, config).as_millis() as i64;
    let labels = PartitionLabels {
        topic: log.topic.clone(),
        partition: log.partition,
    };
    // Steps that answered `more` without getting through a group (a store
    // too slow for one group within a step's deadline) end the round for
    // this partition after a few, instead of hammering the store.
    let mut stalled = 0;
    let mut progress = None;
    for _ in 0..MAX_STEPS_PER_PARTITION {
        let step = maintenance
            .step(log, |not_after_ms| {
                maintenance.storage.clean_segments(request::CleanSegments {
                    topic: log.topic.clone(),
                    partition: log.partition,
                    min_age_ms,
                    max_lag_ms: config.max_compaction_lag_ms,
                    min_dirty_ratio_ppm: (config.min_cleanable_dirty_ratio * 1_000_000.0) as u32,
                    delete_retention_ms: config.delete_retention_ms,
                    target_bytes: config.segment_bytes,
                    not_after_ms,
                })
            })
            .await;
        let step = step?;
        let cleaned: Cleaned = match step {
            Ok(cleaned) => cleaned,
            Err(e) => {
                tracing::warn!(topic = %log.topic, partition = log.partition, error = %e, "cleaning step failed; the next round tries again");
                return None;
            }
        };
        let metrics = &maintenance.metrics;
        metrics
            .cleaner_dirty_ratio
            .get_or_create(&labels)
            .set(f64::from(cleaned.dirty_ratio_ppm) / 1_000_000.0);
        if cleaned.more == 1 {
            stalled = if progress == Some(cleaned.bytes_read) {
                stalled + 1
            } else {
                0
            };
            progress = Some(cleaned.bytes_read);
            if stalled >= MAX_STALLED_STEPS {
                tracing::warn!(topic = %log.topic, partition = log.partition, "cleaning makes no progress within a maintenance step's deadline (a slow store?); the next round tries again");
                return None;
            }
            continue;
        }
        if cleaned.removed > 0 {
            continue;
        }
        if cleaned.segments == 0 {
            return Some(false);
        }
        metrics.cleaner_bytes.inc_by(cleaned.bytes_read);
        metrics
            .cleaner_keys
            .get_or_create(&labels)
            .set(cleaned.keys as i64);
        metrics
            .cleaner_last_clean
            .get_or_create(&labels)
            .set(crate::now_ms() / 1000);
        return Some(true);
    }
    // Steps left for the next round.
    Some(true)
}

/// Runs `clean_once` every `cleaner_interval` (never when it is zero).
pub fn spawn(maintenance: Arc<Maintenance>, tasks: &BackgroundTasks) {
    let interval = maintenance.settings.cleaner_interval;
    if interval.is_zero() {
        return;
    }
    tasks.spawn("log cleaning", async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress = QuietPartitions::default();
        loop {
            tick.tick().await;
            clean_once(&maintenance, &mut progress).await;
        }
    });
}
