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

use kafscale_flusher_protocol::{request, Cleaned};
use kafscale_metadata::topic_rules::TopicConfig;

use crate::maintenance::Maintenance;
use crate::metrics::PartitionLabels;
use crate::partitions::log::PartitionLog;
use crate::tasks::BackgroundTasks;

/// Steps one partition may take in one round, so that a long pass does not
/// hold up the other partitions for long (it goes on in the next round).
const MAX_STEPS_PER_PARTITION: usize = 32;

/// One round over every compacted partition this broker maintains.
pub async fn clean_once(maintenance: &Maintenance) {
    for topic in maintenance.topics.all() {
        if !topic.config.cleanup.compact {
            continue;
        }
        for log in &topic.partitions {
            if maintenance.deadline(log).is_some() {
                clean_partition(maintenance, log, &topic.config).await;
            }
        }
    }
}

async fn clean_partition(maintenance: &Maintenance, log: &PartitionLog, config: &TopicConfig) {
    // Segments are rewritten only once older than the merge age: a fenced
    // writer's late upload must never meet a key a pass replaced.
    let min_age_ms =
        (maintenance.settings.merge.min_age.as_millis() as i64).max(config.min_compaction_lag_ms);
    let labels = PartitionLabels {
        topic: log.topic.clone(),
        partition: log.partition,
    };
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
        let Some(step) = step else { return };
        let cleaned: Cleaned = match step {
            Ok(cleaned) => cleaned,
            Err(e) => {
                tracing::warn!(topic = %log.topic, partition = log.partition, error = %e, "cleaning step failed; the next round tries again");
                return;
            }
        };
        let metrics = &maintenance.metrics;
        metrics
            .cleaner_dirty_ratio
            .get_or_create(&labels)
            .set(f64::from(cleaned.dirty_ratio_ppm) / 1_000_000.0);
        if cleaned.more == 1 || cleaned.removed > 0 {
            continue;
        }
        if cleaned.segments > 0 {
            metrics.cleaner_bytes.inc_by(cleaned.bytes_read);
            metrics
                .cleaner_keys
                .get_or_create(&labels)
                .set(cleaned.keys as i64);
            metrics
                .cleaner_last_clean
                .get_or_create(&labels)
                .set(crate::now_ms() / 1000);
        }
        return;
    }
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
        loop {
            tick.tick().await;
            clean_once(&maintenance).await;
        }
    });
}
