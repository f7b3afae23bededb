//! On the intake write path (docs/intake-objects.md): every leader has its
//! flusher copy its partitions' intake parts into per-partition segments,
//! and the controller has intake objects deleted once nothing in them is
//! needed.
//!
//! Compaction is partition maintenance (`Maintenance::step`):
//! only the leader, only below its high watermark, one step at a time within
//! the maintenance lease. After each step the leader records in the metadata
//! store how far the partition is compacted; the clean-up deletes an object
//! only when every part in it is at or below that point, or of a topic that
//! no longer exists.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafscale_flusher_protocol::{request, CompactedTo, LiveTopic};
use kafscale_telemetry::crash_points;

use crate::maintenance::Maintenance;
use crate::partitions::log::WritePath;
use crate::tasks::BackgroundTasks;

/// Compaction steps per partition per pass.
const STEPS_PER_PARTITION: usize = 8;
/// How often intake objects are cleaned up (by the controller).
const CLEAN_UP_INTERVAL: Duration = Duration::from_secs(15);
/// Intake objects younger than this are never deleted.
const CLEAN_UP_MIN_AGE: Duration = Duration::from_secs(30);
/// How far the clocks of the flushers that name intake objects (by their
/// creation time) may disagree with this broker's.
const CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(10);

/// The minimum age the flusher is asked to respect, counted from when it
/// gets the request: the clean-up's own minimum, plus the time since the
/// live topics were read (an object of a topic created after that read is
/// younger than the read), plus the clock-skew margin.
fn clean_up_min_age(since_topics_read: Duration) -> Duration {
    CLEAN_UP_MIN_AGE + since_topics_read + CLOCK_SKEW_MARGIN
}

/// When compaction runs and what it writes.
#[derive(Debug, Clone, Copy)]
pub struct CompactionSettings {
    /// How often each led partition is offered a compaction step.
    pub interval: Duration,
    /// Parts gather toward `segment.bytes` (capped by the flusher) for at
    /// most this long after their upload.
    pub max_delay: Duration,
}

impl Default for CompactionSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
        }
    }
}

/// The pause after a compaction step that wrote a segment: as long as the
/// step took, so compaction keeps at most half of the object store's time.
fn pause_after_step(step: Duration) -> Duration {
    step.min(MAX_PAUSE)
}

/// A step that took long (a store in trouble) does not stop compaction for
/// longer than this.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// One compaction pass over every partition this broker may maintain.
/// `recorded` remembers the compaction point last written per partition (of
/// a topic by id: a re-created topic starts afresh), so the metadata store
/// is written only when it moves.
pub async fn compact_once(maintenance: &Maintenance, recorded: &mut HashMap<([u8; 16], i32), i64>) {
    let max_delay_ms = maintenance.settings.compaction.max_delay.as_millis() as i64;
    for topic in maintenance.topics.all() {
        let target_bytes = topic.config.segment_bytes;
        for log in &topic.partitions {
            let Some(high_watermark) = log.high_watermark_now() else {
                continue;
            };
            let id = log.id();
            for _ in 0..STEPS_PER_PARTITION {
                // A deleted topic's logs are closed: its parts are not
                // compacted any more (the deletion sweeps them).
                if log.is_closed() {
                    break;
                }
                let started = std::time::Instant::now();
                let step = maintenance
                    .step(log, |not_after_ms| {
                        maintenance.storage.compact_intake(request::CompactIntake {
                            topic: id.topic.clone(),
                            topic_id: id.topic_id,
                            partition: id.partition,
                            up_to: high_watermark,
                            target_bytes,
                            max_delay_ms,
                            not_after_ms,
                        })
                    })
                    .await;
                let Some(step) = step else { break };
                let done = match step {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(topic = %log.topic, partition = log.partition, error = %e, "intake compaction step failed; will retry on the next pass");
                        break;
                    }
                };
                crash_points::reached("broker:compaction:stepped");
                let key = (log.topic_id, log.partition);
                if done.last_offset >= 0 && recorded.get(&key) < Some(&done.last_offset) {
                    match maintenance
                        .metadata
                        .record_compacted(
                            &log.topic,
                            uuid::Uuid::from_bytes(log.topic_id),
                            log.partition,
                            done.last_offset,
                        )
                        .await
                    {
                        Ok(true) => {
                            recorded.insert(key, done.last_offset);
                        }
                        Ok(false) => {
                            tracing::info!(topic = %log.topic, partition = log.partition, "the topic was deleted during compaction; its compaction point is not recorded");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(topic = %log.topic, partition = log.partition, error = %e, "recording the compaction point failed; intake objects stay until it is recorded")
                        }
                    }
                }
                if done.written == 0 {
                    break;
                }
                // Compaction reads and writes as many bytes as producers
                // upload: paced to at most half of the time, it leaves the
                // object store to the uploads that acknowledgements wait for.
                tokio::time::sleep(pause_after_step(started.elapsed())).await;
            }
        }
    }
}

/// Deletes intake objects nothing needs, when this broker is the controller.
pub async fn clean_up_once(maintenance: &Maintenance) {
    let cluster = &maintenance.cluster;
    if cluster.controller() != Some(cluster.me.id) {
        return;
    }
    let Some(not_after_ms) = cluster.session_deadline_ms() else {
        return;
    };
    // Fresh reads, after which only newer objects can hold other topics.
    let topics_read = std::time::Instant::now();
    let topics = match maintenance.metadata.list_topics().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "listing topics for the intake clean-up failed; will retry");
            return;
        }
    };
    let compacted = match maintenance.metadata.compacted_offsets().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "reading compaction points failed; will retry");
            return;
        }
    };
    let ids: HashMap<&str, [u8; 16]> = topics
        .iter()
        .map(|t| (t.name.as_str(), *t.id.as_bytes()))
        .collect();
    let compacted: Vec<CompactedTo> = compacted
        .into_iter()
        .filter_map(|(topic, partition, point)| {
            let topic_id = *ids.get(topic.as_str())?;
            // A point recorded for an earlier topic of this name is not the
            // live topic's.
            if point.topic_id.is_some_and(|id| *id.as_bytes() != topic_id) {
                return None;
            }
            Some(CompactedTo {
                topic,
                topic_id,
                partition,
                last_offset: point.last_offset,
            })
        })
        .collect();
    let live: Vec<LiveTopic> = topics
        .iter()
        .map(|t| LiveTopic {
            name: t.name.clone(),
            topic_id: *t.id.as_bytes(),
        })
        .collect();
    let min_age_ms = clean_up_min_age(topics_read.elapsed()).as_millis() as i64;
    match maintenance
        .storage
        .collect_intake(request::CollectIntake {
            live,
            compacted,
            min_age_ms,
            not_after_ms,
        })
        .await
        .map(|d| d.objects)
    {
        Ok(0) => {}
        Ok(n) => tracing::debug!(objects = n, "deleted intake objects nothing needs"),
        Err(e) => tracing::warn!(error = %e, "intake clean-up failed; will retry"),
    }
}

/// Runs compaction and the clean-up, on the intake write path only.
pub fn spawn(maintenance: Arc<Maintenance>, tasks: &BackgroundTasks) {
    if maintenance.settings.write_path != WritePath::Intake {
        return;
    }
    let compaction = maintenance.clone();
    tasks.spawn("intake compaction", async move {
        let mut tick = tokio::time::interval(compaction.settings.compaction.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recorded = HashMap::new();
        loop {
            tick.tick().await;
            compact_once(&compaction, &mut recorded).await;
        }
    });
    tasks.spawn("intake clean-up", async move {
        let mut tick = tokio::time::interval(CLEAN_UP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            clean_up_once(&maintenance).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_pauses_as_long_as_its_last_step_took_within_a_bound() {
        assert_eq!(
            pause_after_step(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        assert_eq!(pause_after_step(Duration::from_secs(60)), MAX_PAUSE);
    }

    #[test]
    fn the_clean_up_spares_objects_written_since_the_topics_were_read() {
        // A slow read of the compaction points must not shrink the window
        // in which a just-created topic's objects are spared.
        let slow_reads = Duration::from_secs(25);
        assert!(clean_up_min_age(slow_reads) >= CLEAN_UP_MIN_AGE + slow_reads + CLOCK_SKEW_MARGIN);
        assert!(clean_up_min_age(Duration::ZERO) > CLEAN_UP_MIN_AGE);
    }
}
